//! The Order API against the real single-broker cluster and a real engine
//! running the whole flow: orders created over REST reach their outcome
//! (filled, rejected for funds, rejected for stock and refunded) and read
//! back over REST and gRPC; a repeated create is one order; and every
//! validation rule is refused with its code while nothing reaches Kafka.
//!
//! The flow's topic names are fixed, so every test of this file shares one
//! engine and one API (started once), uses accounts and instruments no
//! other test or run uses, and the engine starts from the topics' current
//! end (its offsets are committed there before it starts) instead of
//! replaying whatever earlier runs left on the broker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codecs::{decode, AccountId, ClientOrderId, Event, EventKind, Sku};
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{Guarantee, KafkaSettings, Ownership};
use engine::partitioner::partition_for;
use engine::runtime::{Engine, ShardPlan};
use engine::{PartitionId, ShardId, Stage};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use services::api::proto::order_api_client::OrderApiClient;
use services::api::proto::{CreateOrderRequest, GetOrderRequest};
use services::api::{self, ApiConfig, ApiHandle, StateSource};
use services::flow::{ServiceSet, TradeFlow};
use services::ids::order_id_for;
use services::topics::{
    account_key, sku_key, ACCOUNT_FUNDED, ORDER_CREATED, ORDER_UPDATED, STOCK_REPLENISHED,
};
use tradeflow_tests::{unique_topic, KafkaCluster, ADMIN_TIMEOUT_S};

/// Partitions of the flow's topics when this test creates them (as
/// `tuning/one-core.toml`); an existing topic's count is used as it is.
const DEFAULT_PARTITIONS: i32 = 4;
/// How long an outcome may take to become visible.
const WAIT: Duration = Duration::from_secs(90);
/// Bytes a test reads from one HTTP response at most.
const RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// The engine and the API every test here shares.
struct Fixture {
    cluster: KafkaCluster,
    partitions: i32,
    // Held so the engine runs for the whole test process.
    _engine: Arc<Engine>,
    api: ApiHandle,
}

static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

fn fixture() -> anyhow::Result<&'static Fixture> {
    FIXTURE
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("starting the engine and the API: {e}"))
}

fn start() -> anyhow::Result<Fixture> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let existing = cluster
        .partition_leaders(ORDER_CREATED)
        .map(|leaders| leaders.len())
        .unwrap_or_default();
    let partitions = if existing > 0 {
        i32::try_from(existing)?
    } else {
        DEFAULT_PARTITIONS
    };
    let application_id = unique_topic("order-api-app");
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let flow = TradeFlow::new(ServiceSet::ALL);
    let inputs = flow.input_topics().to_vec();
    prepare_topics(
        &settings,
        &FlowTopics {
            inputs: inputs.clone(),
            outputs: flow.output_topics(),
            stores: flow.store_names(),
            changelog_layout: Default::default(),
        },
        partitions,
        1,
    )?;
    cluster.start_group_at_end(&application_id, &inputs, partitions)?;
    let knobs = tradeflow_tests::TestKnobs::default().validated()?;
    let plan = ShardPlan {
        shard: ShardId(0),
        core: None,
        ownership: Ownership::Static((0..partitions).map(PartitionId).collect()),
        transactional_id: format!("{application_id}-node-0"),
    };
    let engine = Arc::new(Engine::start(
        settings,
        vec![plan],
        knobs,
        partitions,
        |_| TradeFlow::new(ServiceSet::ALL),
    )?);
    anyhow::ensure!(engine.wait_running(WAIT), "the engine did not start");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut config = ApiConfig::new(any, any, cluster.bootstrap(), partitions);
    config.client_properties = vec![("broker.address.family".into(), "v4".into())];
    let source: Arc<dyn StateSource> = engine.clone();
    let api = api::spawn(config, source)?;
    Ok(Fixture {
        cluster,
        partitions,
        _engine: engine,
        api,
    })
}

/// An account id and an instrument no other test or run uses.
fn unique() -> (u64, String) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default() as u64;
    let n = (micros % (1 << 40)) * 1024 + SEQ.fetch_add(1, Ordering::Relaxed) % 1024;
    (n, format!("T{n:X}"))
}

/// One HTTP/1.1 request on a fresh connection; the status and the body as
/// JSON (or as a JSON string when it is not JSON).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) before reading a large body and close.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, json))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).unwrap_or_default());
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

fn get(path: &str) -> anyhow::Result<(u16, Value)> {
    http(fixture()?.api.rest_addr(), "GET", path, None, b"")
}

fn post(path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    http(
        fixture()?.api.rest_addr(),
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// Retries `check` until it yields a value or `WAIT` passes.
fn eventually<T>(
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < WAIT {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("timed out after {WAIT:?} waiting for {what} (last error: {last:?})")
}

fn accepted(answer: (u16, Value)) -> anyhow::Result<Value> {
    anyhow::ensure!(answer.0 == 202, "expected 202, got {answer:?}");
    Ok(answer.1)
}

/// Funds `account` and stocks `sku` over REST, and waits until the engine
/// shows both.
fn fund_and_stock(account: u64, balance: i64, sku: &str, on_hand: i64) -> anyhow::Result<()> {
    accepted(post(
        &format!("/v1/accounts/{account}/fundings"),
        json!({ "amount": balance }),
    )?)?;
    accepted(post(
        &format!("/v1/instruments/{sku}/replenishments"),
        json!({ "quantity": on_hand }),
    )?)?;
    wait_balance(account, balance)?;
    eventually(&format!("{sku} on hand"), || {
        let (status, body) = get(&format!("/v1/instruments/{sku}"))?;
        Ok((status == 200 && body["on_hand"] == json!(on_hand)).then_some(()))
    })
}

fn wait_balance(account: u64, balance: i64) -> anyhow::Result<()> {
    eventually(&format!("account {account} at {balance}"), || {
        let (status, body) = get(&format!("/v1/accounts/{account}"))?;
        Ok((status == 200 && body["balance"] == json!(balance)).then_some(()))
    })
}

fn order_id(account: u64, client: &str) -> anyhow::Result<u64> {
    Ok(order_id_for(AccountId(account), &ClientOrderId::new(client)?).0)
}

/// Waits until the order has a terminal status; returns its REST view.
fn wait_outcome(account: u64, order: u64) -> anyhow::Result<Value> {
    eventually(&format!("order {order}'s outcome"), || {
        let (status, body) = get(&format!("/v1/accounts/{account}/orders/{order}"))?;
        let done = status == 200
            && !["accepted", "not_yet_accepted"]
                .contains(&body["status"].as_str().unwrap_or("accepted"));
        Ok(done.then_some(body))
    })
}

fn milestones(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["milestone"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn grpc<T>(
    call: impl AsyncFnOnce(OrderApiClient<tonic::transport::Channel>) -> Result<T, tonic::Status>,
) -> anyhow::Result<Result<T, tonic::Status>> {
    let addr = fixture()?.api.grpc_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = OrderApiClient::connect(format!("http://{addr}")).await?;
        Ok(call(client).await)
    })
}

#[test]
fn an_order_is_filled_and_reads_back_over_rest_and_grpc() -> anyhow::Result<()> {
    let (account, sku) = unique();
    fund_and_stock(account, 10_000, &sku, 10)?;
    let body = accepted(post(
        "/v1/orders",
        json!({"account": account, "sku": sku, "quantity": 4, "limit_price": 250, "client_order_id": "fill-1"}),
    )?)?;
    let order = order_id(account, "fill-1")?;
    assert_eq!(body["order_id"], json!(order.to_string()));
    assert_eq!(body["duplicate"], json!(false));

    let view = wait_outcome(account, order)?;
    assert_eq!(view["status"], json!("filled"), "{view}");
    assert_eq!(view["sku"], json!(sku));
    assert_eq!(view["quantity"], json!(4));
    assert_eq!(view["limit_price"], json!(250));
    assert_eq!(view["client_order_id"], json!("fill-1"));
    assert_eq!(view["reject_reason"], Value::Null);
    assert_eq!(milestones(&view), ["accepted", "filled"]);

    let message = grpc(async |mut client| {
        client
            .get_order(GetOrderRequest {
                account: Some(account),
                order_id: Some(order),
            })
            .await
            .map(tonic::Response::into_inner)
    })??;
    assert_eq!(message.status, "filled");
    assert_eq!(message.order_id, order);
    assert_eq!(message.sku, sku);
    assert_eq!(message.client_order_id, "fill-1");
    assert_eq!(
        message
            .history
            .iter()
            .map(|h| h.milestone.as_str())
            .collect::<Vec<_>>(),
        ["accepted", "filled"]
    );

    wait_balance(account, 10_000 - 4 * 250)?;
    let (status, stock) = get(&format!("/v1/instruments/{sku}"))?;
    assert_eq!((status, stock["on_hand"].clone()), (200, json!(6)));
    let (status, _) = get("/health/live")?;
    assert_eq!(status, 200);
    let (status, document) = get("/openapi.yaml")?;
    assert_eq!(status, 200);
    assert!(document.as_str().is_some_and(|d| d.contains("/v1/orders")));
    Ok(())
}

#[test]
fn an_order_without_funds_is_rejected() -> anyhow::Result<()> {
    let (account, sku) = unique();
    fund_and_stock(account, 100, &sku, 10)?;
    accepted(post(
        "/v1/orders",
        json!({"account": account, "sku": sku, "quantity": 4, "limit_price": 250, "client_order_id": "poor-1"}),
    )?)?;
    let view = wait_outcome(account, order_id(account, "poor-1")?)?;
    assert_eq!(view["status"], json!("rejected_funds"), "{view}");
    assert_eq!(view["reject_reason"], json!("insufficient_funds"));
    assert_eq!(milestones(&view), ["accepted", "rejected_funds"]);

    // An account that was never funded.
    let (stranger, _) = unique();
    accepted(post(
        "/v1/orders",
        json!({"account": stranger, "sku": sku, "quantity": 1, "limit_price": 1, "client_order_id": "who-1"}),
    )?)?;
    let view = wait_outcome(stranger, order_id(stranger, "who-1")?)?;
    assert_eq!(view["status"], json!("rejected_funds"), "{view}");
    assert_eq!(view["reject_reason"], json!("unknown_account"));

    // Nothing was debited, nothing taken.
    wait_balance(account, 100)?;
    let (_, stock) = get(&format!("/v1/instruments/{sku}"))?;
    assert_eq!(stock["on_hand"], json!(10));
    Ok(())
}

#[test]
fn an_order_with_funds_but_no_stock_is_rejected_and_refunded() -> anyhow::Result<()> {
    let (account, sku) = unique();
    fund_and_stock(account, 10_000, &sku, 1)?;
    accepted(post(
        "/v1/orders",
        json!({"account": account, "sku": sku, "quantity": 5, "limit_price": 100, "client_order_id": "short-1"}),
    )?)?;
    let view = wait_outcome(account, order_id(account, "short-1")?)?;
    assert_eq!(view["status"], json!("rejected_stock_refunded"), "{view}");
    assert_eq!(milestones(&view), ["accepted", "rejected_stock_refunded"]);
    // The debit came back.
    wait_balance(account, 10_000)?;
    let (_, stock) = get(&format!("/v1/instruments/{sku}"))?;
    assert_eq!(stock["on_hand"], json!(1));
    Ok(())
}

#[test]
fn creates_with_one_client_order_id_make_one_order() -> anyhow::Result<()> {
    let (account, sku) = unique();
    fund_and_stock(account, 1_000, &sku, 100)?;
    let order = json!({"account": account, "sku": sku, "quantity": 2, "limit_price": 100, "client_order_id": "twice"});
    let expected = order_id(account, "twice")?.to_string();
    // Back to back: the second usually arrives before the engine has the
    // first, so both are published and the flow must absorb the repeat.
    let first = post("/v1/orders", order.clone())?;
    let second = post("/v1/orders", order.clone())?;
    for (status, body) in [&first, &second] {
        assert!([200, 202].contains(status), "{status}: {body}");
        assert_eq!(body["order_id"], json!(expected));
    }
    let view = wait_outcome(account, order_id(account, "twice")?)?;
    assert_eq!(view["status"], json!("filled"), "{view}");
    // Once the node holds it, a repeat publishes nothing.
    let (status, body) = post("/v1/orders", order.clone())?;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(true)));
    let created = grpc(async |mut client| {
        client
            .create_order(CreateOrderRequest {
                account: Some(account),
                sku: Some(sku.clone()),
                quantity: Some(2),
                limit_price: Some(100),
                client_order_id: Some("twice".into()),
            })
            .await
            .map(tonic::Response::into_inner)
    })??;
    assert!(created.duplicate);
    assert_eq!(created.order_id.to_string(), expected);
    // The same client order id for different content is refused.
    let mut other = order.clone();
    other["quantity"] = json!(3);
    let (status, body) = post("/v1/orders", other)?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], json!("client_order_id_conflict"));

    // A later order of the account is a barrier: it shares the repeats'
    // partition of order.created, so once it is decided every repeat was
    // processed. One order: one debit, one fill, one accepted milestone.
    accepted(post(
        "/v1/orders",
        json!({"account": account, "sku": sku, "quantity": 1, "limit_price": 1, "client_order_id": "barrier"}),
    )?)?;
    let barrier = wait_outcome(account, order_id(account, "barrier")?)?;
    assert_eq!(barrier["status"], json!("filled"), "{barrier}");
    let (_, view) = get(&format!("/v1/accounts/{account}/orders/{expected}"))?;
    assert_eq!(milestones(&view), ["accepted", "filled"]);
    wait_balance(account, 1_000 - 2 * 100 - 1)?;
    let (_, stock) = get(&format!("/v1/instruments/{sku}"))?;
    assert_eq!(stock["on_hand"], json!(100 - 2 - 1));
    Ok(())
}

/// Every record of `topic` in `key`'s partition, up to its current end.
fn records_with_key(topic: &str, key: &[u8]) -> anyhow::Result<Vec<Event>> {
    let fixture = fixture()?;
    let partition = partition_for(key, fixture.partitions).0;
    let consumer: BaseConsumer = fixture
        .cluster
        .client_config()
        .set("group.id", unique_topic("order-api-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(ADMIN_TIMEOUT_S);
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&list)?;
    let mut found = Vec::new();
    let mut next = low;
    let started = Instant::now();
    while next < high {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "reading {topic} [{partition}] stalled at {next} of {high}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                next = message.offset() + 1;
                if message.key() == Some(key) {
                    let payload = message.payload().unwrap_or_default();
                    found.push(decode(payload)?.to_event());
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(found)
}

/// Method, path, content type, body; the status and code expected.
type Case<'a> = (&'a str, String, Option<&'a str>, String, u16, &'a str);

#[test]
fn every_validation_rule_is_refused_with_its_code_and_nothing_is_published() -> anyhow::Result<()> {
    let fixture = fixture()?;
    let (account, unknown_sku) = unique();
    let (_, known_sku) = unique();
    // A stocked instrument for the valid requests; `unknown_sku` stays
    // unknown until its sentinel replenishment at the end.
    accepted(post(
        &format!("/v1/instruments/{known_sku}/replenishments"),
        json!({"quantity": 5}),
    )?)?;
    eventually("the known instrument", || {
        Ok((get(&format!("/v1/instruments/{known_sku}"))?.0 == 200).then_some(()))
    })?;

    let order = |patch: Value| {
        let mut body = json!({"account": account, "sku": known_sku, "quantity": 2, "limit_price": 100, "client_order_id": "bad"});
        if let (Some(body), Some(patch)) = (body.as_object_mut(), patch.as_object()) {
            for (field, value) in patch {
                if value.is_null() {
                    body.remove(field);
                } else {
                    body.insert(field.clone(), value.clone());
                }
            }
        }
        body.to_string()
    };
    let json_type = Some("application/json");
    let fundings = format!("/v1/accounts/{account}/fundings");
    let replenish = format!("/v1/instruments/{unknown_sku}/replenishments");
    let missing_order = format!("/v1/accounts/{account}/orders/12345");
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            "{\"account\":".into(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            "[1]".into(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"side": "buy"})),
            400,
            "unknown_field",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"sku": null})),
            400,
            "missing_field",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"quantity": "2"})),
            400,
            "invalid_value",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"sku": "lower"})),
            400,
            "malformed_sku",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"sku": "SEVENTEEN.LETTERS"})),
            400,
            "malformed_sku",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"client_order_id": "with space"})),
            400,
            "malformed_client_order_id",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"quantity": 0})),
            422,
            "non_positive_quantity",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"quantity": -2})),
            422,
            "non_positive_quantity",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"limit_price": -100})),
            422,
            "non_positive_price",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"quantity": 3_037_000_500_i64, "limit_price": 3_037_000_500_i64})),
            422,
            "amount_overflow",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            order(json!({"sku": unknown_sku})),
            422,
            "unknown_instrument",
        ),
        (
            "POST",
            "/v1/orders".into(),
            None,
            order(json!({})),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/orders".into(),
            json_type,
            format!("{{\"pad\":\"{}\"}}", "x".repeat(20_000)),
            413,
            "body_too_large",
        ),
        (
            "POST",
            fundings.clone(),
            json_type,
            json!({"amount": 0}).to_string(),
            422,
            "non_positive_amount",
        ),
        (
            "POST",
            fundings.clone(),
            json_type,
            json!({"amount": 10, "idempotency_key": "has space"}).to_string(),
            400,
            "malformed_idempotency_key",
        ),
        (
            "POST",
            fundings.clone(),
            json_type,
            json!({"amount": 10, "currency": "USD"}).to_string(),
            400,
            "unknown_field",
        ),
        (
            "POST",
            replenish.clone(),
            json_type,
            json!({"quantity": 0}).to_string(),
            422,
            "non_positive_quantity",
        ),
        (
            "POST",
            replenish.clone(),
            json_type,
            json!({}).to_string(),
            400,
            "missing_field",
        ),
        (
            "POST",
            format!("{missing_order}/amend"),
            json_type,
            json!({"quantity": 1, "limit_price": 0}).to_string(),
            422,
            "non_positive_price",
        ),
        (
            "POST",
            format!("{missing_order}/amend"),
            json_type,
            json!({"quantity": 1, "limit_price": 1}).to_string(),
            404,
            "order_not_found",
        ),
        (
            "POST",
            format!("{missing_order}/cancel"),
            None,
            String::new(),
            404,
            "order_not_found",
        ),
    ];
    for (method, path, content_type, body, status, code) in &cases {
        let (got, answer) = http(
            fixture.api.rest_addr(),
            method,
            path,
            *content_type,
            body.as_bytes(),
        )?;
        let shown = format!("{method} {path} {}", &body[..body.len().min(100)]);
        assert_eq!(got, *status, "{shown}: {answer}");
        assert_eq!(answer["error"]["code"], json!(code), "{shown}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{shown}");
    }
    let refused = grpc(async |mut client| {
        client
            .create_order(CreateOrderRequest {
                account: Some(account),
                sku: Some(known_sku.clone()),
                quantity: Some(0),
                limit_price: Some(100),
                client_order_id: Some("bad".into()),
            })
            .await
    })?
    .expect_err("quantity 0 is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused
            .metadata()
            .get(api::ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("non_positive_quantity")
    );

    // Sentinels: one valid event per topic a refused request could have
    // reached, published after all of them by the same producer. Reading
    // each key's partition up to its end must find the sentinel alone.
    accepted(post(
        "/v1/orders",
        json!({"account": account, "sku": known_sku, "quantity": 1, "limit_price": 1, "client_order_id": "sentinel"}),
    )?)?;
    let sentinel = order_id(account, "sentinel")?;
    eventually("the sentinel order", || {
        Ok((get(&format!("/v1/accounts/{account}/orders/{sentinel}"))?.0 == 200).then_some(()))
    })?;
    accepted(post(
        &format!("/v1/accounts/{account}/orders/{sentinel}/cancel"),
        json!({}),
    )?)?;
    accepted(post(&fundings, json!({"amount": 1}))?)?;
    accepted(post(&replenish, json!({"quantity": 1}))?)?;
    let account_key = account_key(AccountId(account)).to_vec();
    let unknown = Sku::new(&unknown_sku)?;
    for (topic, key, kind) in [
        (ORDER_CREATED, account_key.clone(), EventKind::OrderCreated),
        (
            ORDER_UPDATED,
            account_key.clone(),
            EventKind::OrderCancelled,
        ),
        (
            ACCOUNT_FUNDED,
            account_key.clone(),
            EventKind::AccountFunded,
        ),
        (
            STOCK_REPLENISHED,
            sku_key(&unknown).to_vec(),
            EventKind::StockReplenished,
        ),
    ] {
        let events = records_with_key(topic, &key)?;
        let kinds: Vec<EventKind> = events.iter().map(Event::kind).collect();
        assert_eq!(kinds, [kind], "{topic}: {events:?}");
    }
    Ok(())
}
