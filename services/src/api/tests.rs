//! Unit tests of the Order API over a fake state source and a recording
//! publisher: every validation rule gets its code and publishes nothing,
//! events land on the right topic, key and partition, ownership errors name
//! the partition, and gRPC maps the same rejections to its status codes.
//!
//! Owns: nothing the running API uses. The real broker and engine are
//! exercised in `tests/tests/order_api.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use codecs::{
    decode, AccountId, ClientOrderId, Event, EventId, Money, OrderId, Quantity, Sku, TimestampNs,
};
use engine::partitioner::partition_for;
use engine::PartitionId;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::grpc::GrpcApi;
use super::ops::OrderApi;
use super::proto::order_api_server::OrderApi as _;
use super::proto::{CreateOrderRequest, GetOrderRequest};
use super::publish::{OutgoingRecord, PublishError, PublishFuture, Publisher};
use super::source::{Owned, StateSource};
use super::{rest, ApiConfig, InstrumentPolicy, REQUEST_BODY_BYTES_MAX};
use crate::ids::order_id_for;
use crate::order::{History, OrderOutcome, OrderRecord};
use crate::topics::{
    account_key, sku_key, ACCOUNT_FUNDED, ORDER_CREATED, ORDER_UPDATED, STOCK_REPLENISHED,
};

mod openapi;
mod security;

const PARTITIONS: i32 = 4;

/// Which answer the fake gives for partitions it does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holding {
    All,
    None { moving: bool },
}

struct FakeState {
    holding: Mutex<Holding>,
    orders: Mutex<HashMap<OrderId, OrderRecord>>,
    balances: Mutex<HashMap<AccountId, Money>>,
    stock: Mutex<HashMap<Sku, Quantity>>,
}

impl FakeState {
    fn new() -> Arc<Self> {
        Arc::new(FakeState {
            holding: Mutex::new(Holding::All),
            orders: Mutex::default(),
            balances: Mutex::default(),
            stock: Mutex::default(),
        })
    }

    fn answer<T>(&self, read: impl FnOnce() -> T) -> Owned<T> {
        match *self.holding.lock().expect("holding") {
            Holding::All => Owned::Here(read()),
            Holding::None { moving: false } => Owned::OtherNode,
            Holding::None { moving: true } => Owned::Moving,
        }
    }
}

impl StateSource for FakeState {
    fn order(&self, _: PartitionId, order: OrderId) -> Owned<Option<OrderRecord>> {
        self.answer(|| self.orders.lock().expect("orders").get(&order).copied())
    }
    fn balance(&self, _: PartitionId, account: AccountId) -> Owned<Option<Money>> {
        self.answer(|| {
            self.balances
                .lock()
                .expect("balances")
                .get(&account)
                .copied()
        })
    }
    fn on_hand(&self, _: PartitionId, sku: Sku) -> Owned<Option<Quantity>> {
        self.answer(|| self.stock.lock().expect("stock").get(&sku).copied())
    }
}

#[derive(Default)]
struct Recorder {
    records: Mutex<Vec<OutgoingRecord>>,
    fail: AtomicBool,
}

impl Recorder {
    fn taken(&self) -> Vec<OutgoingRecord> {
        std::mem::take(&mut *self.records.lock().expect("records"))
    }
}

impl Publisher for Recorder {
    fn publish(&self, record: OutgoingRecord) -> PublishFuture<'_> {
        Box::pin(async move {
            if self.fail.load(Ordering::Relaxed) {
                return Err(PublishError::NotAcknowledged("broker down".into()));
            }
            self.records.lock().expect("records").push(record);
            Ok(())
        })
    }
}

struct Fixture {
    state: Arc<FakeState>,
    recorder: Arc<Recorder>,
    api: Arc<OrderApi>,
}

fn sku(text: &str) -> Sku {
    Sku::new(text).expect("test sku")
}

fn config(instruments: InstrumentPolicy) -> ApiConfig {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    ApiConfig {
        instruments,
        ..ApiConfig::new(any, any, "unused:9092", PARTITIONS)
    }
}

fn fixture_with(instruments: InstrumentPolicy) -> Fixture {
    let state = FakeState::new();
    state
        .stock
        .lock()
        .expect("stock")
        .insert(sku("AAPL"), Quantity(10));
    let recorder = Arc::new(Recorder::default());
    let api = Arc::new(OrderApi::new(
        &config(instruments),
        Arc::clone(&state) as Arc<dyn StateSource>,
        Arc::clone(&recorder) as Arc<dyn Publisher>,
    ));
    Fixture {
        state,
        recorder,
        api,
    }
}

fn fixture() -> Fixture {
    fixture_with(InstrumentPolicy::Inventory)
}

/// One request through the router: status, headers, JSON (or text) body.
async fn call(
    fixture: &Fixture,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(body.into()).expect("request");
    let response = rest::router(Arc::clone(&fixture.api), None)
        .oneshot(request)
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

async fn post(fixture: &Fixture, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = call(
        fixture,
        "POST",
        uri,
        Some("application/json"),
        body.to_string(),
    )
    .await;
    (status, body)
}

fn order_json() -> Value {
    json!({"account": 7, "sku": "AAPL", "quantity": 3, "limit_price": 1500, "client_order_id": "c-1"})
}

fn created_record(account: u64, client: &str, quantity: i64, price: i64) -> OrderRecord {
    OrderRecord {
        account: AccountId(account),
        sku: sku("AAPL"),
        quantity: Quantity(quantity),
        limit_price: Money(price),
        client_order_id: Some(ClientOrderId::new(client).expect("client id")),
        created_by: EventId(99),
        outcome: None,
        outcome_event: EventId::NONE,
        request: None,
        history: History::default(),
    }
}

fn error_of(body: &Value) -> (String, Option<String>) {
    let error = &body["error"];
    (
        error["code"].as_str().unwrap_or_default().to_string(),
        error["field"].as_str().map(str::to_string),
    )
}

fn decoded(record: &OutgoingRecord) -> Event {
    decode(&record.payload).expect("valid frame").to_event()
}

#[tokio::test]
async fn a_valid_create_publishes_order_created_keyed_by_account() {
    let f = fixture();
    let (status, headers, body) = call(
        &f,
        "POST",
        "/v1/orders",
        Some("application/json; charset=utf-8"),
        order_json().to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id = order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"));
    assert_eq!(body["order_id"], json!(order_id.0.to_string()));
    assert_eq!(body["duplicate"], json!(false));
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/accounts/7/orders/{}", order_id.0).as_str())
    );
    let records = f.recorder.taken();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.topic, ORDER_CREATED);
    assert_eq!(record.key, account_key(AccountId(7)).to_vec());
    assert_eq!(
        record.partition,
        partition_for(&account_key(AccountId(7)), PARTITIONS)
    );
    let Event::OrderCreated(created) = decoded(record) else {
        panic!("not an order.created");
    };
    assert_eq!(created.header.order_id, order_id);
    assert!(!created.header.event_id.is_none());
    assert!(created.header.created_at_ns > TimestampNs(0));
    assert_eq!(created.account, AccountId(7));
    assert_eq!(created.sku, sku("AAPL"));
    assert_eq!(created.quantity, Quantity(3));
    assert_eq!(created.limit_price, Money(1500));
    assert_eq!(created.client_order_id.as_str(), "c-1");
}

/// Method, path, content type, body; expected status, code and field.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    String,
    u16,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn every_rule_answers_its_4xx_code_and_publishes_nothing() {
    let f = fixture();
    let with = |field: &str, value: Value| {
        let mut body = order_json();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = order_json();
        if let Some(object) = body.as_object_mut() {
            object.remove(field);
        }
        body.to_string()
    };
    let json_type = Some("application/json");
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/v1/orders",
            json_type,
            "{".into(),
            400,
            "malformed_json",
            None,
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            "[]".into(),
            400,
            "malformed_json",
            None,
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("extra", json!(1)),
            400,
            "unknown_field",
            Some("extra"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            without("sku"),
            400,
            "missing_field",
            Some("sku"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            without("client_order_id"),
            400,
            "missing_field",
            Some("client_order_id"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("account", json!("7")),
            400,
            "invalid_value",
            Some("account"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("quantity", json!(2.5)),
            400,
            "invalid_value",
            Some("quantity"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("sku", json!("aapl")),
            400,
            "malformed_sku",
            Some("sku"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("client_order_id", json!("a b")),
            400,
            "malformed_client_order_id",
            Some("client_order_id"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("quantity", json!(0)),
            422,
            "non_positive_quantity",
            Some("quantity"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("quantity", json!(-3)),
            422,
            "non_positive_quantity",
            Some("quantity"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("limit_price", json!(0)),
            422,
            "non_positive_price",
            Some("limit_price"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("limit_price", json!(i64::MAX)),
            422,
            "amount_overflow",
            Some("quantity"),
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            with("sku", json!("NEVER.STOCKED")),
            422,
            "unknown_instrument",
            Some("sku"),
        ),
        (
            "POST",
            "/v1/orders",
            None,
            order_json().to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "POST",
            "/v1/orders",
            Some("text/plain"),
            order_json().to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "POST",
            "/v1/orders",
            json_type,
            " ".repeat(REQUEST_BODY_BYTES_MAX + 1),
            413,
            "body_too_large",
            None,
        ),
        (
            "POST",
            "/v1/accounts/x/fundings",
            json_type,
            json!({"amount": 5}).to_string(),
            400,
            "invalid_value",
            Some("account"),
        ),
        (
            "POST",
            "/v1/accounts/7/fundings",
            json_type,
            json!({"amount": 0}).to_string(),
            422,
            "non_positive_amount",
            Some("amount"),
        ),
        (
            "POST",
            "/v1/accounts/7/fundings",
            json_type,
            json!({"amount": 5, "idempotency_key": ""}).to_string(),
            400,
            "malformed_idempotency_key",
            Some("idempotency_key"),
        ),
        (
            "POST",
            "/v1/accounts/7/fundings",
            json_type,
            json!({}).to_string(),
            400,
            "missing_field",
            Some("amount"),
        ),
        (
            "POST",
            "/v1/instruments/aapl/replenishments",
            json_type,
            json!({"quantity": 5}).to_string(),
            400,
            "malformed_sku",
            Some("sku"),
        ),
        (
            "POST",
            "/v1/instruments/AAPL/replenishments",
            json_type,
            json!({"quantity": -1}).to_string(),
            422,
            "non_positive_quantity",
            Some("quantity"),
        ),
        (
            "POST",
            "/v1/instruments/AAPL/replenishments",
            json_type,
            json!({"quantity": 1, "amount": 1}).to_string(),
            400,
            "unknown_field",
            Some("amount"),
        ),
        (
            "POST",
            "/v1/accounts/7/orders/0/amend",
            json_type,
            json!({"quantity": 1, "limit_price": 1}).to_string(),
            400,
            "invalid_value",
            Some("order_id"),
        ),
        (
            "POST",
            "/v1/accounts/7/orders/5/amend",
            json_type,
            json!({"quantity": 1, "limit_price": 0}).to_string(),
            422,
            "non_positive_price",
            Some("limit_price"),
        ),
        (
            "POST",
            "/v1/accounts/7/orders/5/amend",
            json_type,
            json!({"quantity": 1, "limit_price": 1}).to_string(),
            404,
            "order_not_found",
            Some("order_id"),
        ),
        (
            "POST",
            "/v1/accounts/7/orders/5/cancel",
            json_type,
            json!({"why": "x"}).to_string(),
            400,
            "unknown_field",
            Some("why"),
        ),
        (
            "POST",
            "/v1/accounts/7/orders/5/cancel",
            None,
            String::new(),
            404,
            "order_not_found",
            Some("order_id"),
        ),
        (
            "GET",
            "/v1/accounts/7/orders/5",
            None,
            String::new(),
            404,
            "order_not_found",
            Some("order_id"),
        ),
        (
            "GET",
            "/v1/accounts/7/orders/x",
            None,
            String::new(),
            400,
            "invalid_value",
            Some("order_id"),
        ),
        (
            "GET",
            "/v1/accounts/7",
            None,
            String::new(),
            404,
            "account_not_found",
            Some("account"),
        ),
        (
            "GET",
            "/v1/instruments/MSFT",
            None,
            String::new(),
            404,
            "instrument_not_found",
            Some("sku"),
        ),
        (
            "GET",
            "/v1/nothing",
            None,
            String::new(),
            404,
            "not_found",
            None,
        ),
        (
            "DELETE",
            "/v1/orders",
            None,
            String::new(),
            405,
            "method_not_allowed",
            None,
        ),
    ];
    for (method, uri, content_type, body, status, code, field) in cases {
        let shown = format!("{method} {uri} {}", &body[..body.len().min(120)]);
        let (got, _, answer) = call(&f, method, uri, content_type, body).await;
        assert_eq!(got.as_u16(), status, "{shown}: {answer}");
        assert_eq!(
            error_of(&answer),
            (code.to_string(), field.map(str::to_string)),
            "{shown}"
        );
        assert_eq!(answer["error"]["retryable"], json!(false), "{shown}");
        assert!(answer["error"]["message"].is_string(), "{shown}");
        assert!(f.recorder.taken().is_empty(), "{shown} published");
    }
}

#[tokio::test]
async fn instrument_policies() {
    let listed = fixture_with(InstrumentPolicy::Listed(vec![sku("MSFT")]));
    let (status, body) = post(&listed, "/v1/orders", order_json()).await;
    assert_eq!(status.as_u16(), 422, "{body}");
    assert_eq!(error_of(&body).0, "unknown_instrument");
    let (status, _) = post(
        &listed,
        "/v1/instruments/AAPL/replenishments",
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(status.as_u16(), 422);
    assert!(listed.recorder.taken().is_empty());
    let mut msft = order_json();
    msft["sku"] = json!("MSFT");
    assert_eq!(post(&listed, "/v1/orders", msft).await.0.as_u16(), 202);

    let any = fixture_with(InstrumentPolicy::AnyWellFormed);
    let mut new = order_json();
    new["sku"] = json!("NEW");
    assert_eq!(post(&any, "/v1/orders", new.clone()).await.0.as_u16(), 202);

    // Inventory policy on a node that does not hold the sku's partition:
    // it cannot tell, so it accepts (Inventory rejects and Payment refunds).
    let elsewhere = fixture();
    *elsewhere.state.holding.lock().expect("holding") = Holding::None { moving: false };
    assert_eq!(post(&elsewhere, "/v1/orders", new).await.0.as_u16(), 202);
    assert_eq!(elsewhere.recorder.taken().len(), 1);
}

#[tokio::test]
async fn repeats_of_a_held_order_publish_nothing_and_conflicts_are_409() {
    let f = fixture();
    let order_id = order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"));
    f.state
        .orders
        .lock()
        .expect("orders")
        .insert(order_id, created_record(7, "c-1", 3, 1500));
    let (status, body) = post(&f, "/v1/orders", order_json()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], json!(true));
    assert_eq!(body["order_id"], json!(order_id.0.to_string()));
    let mut other = order_json();
    other["quantity"] = json!(4);
    let (status, body) = post(&f, "/v1/orders", other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        error_of(&body),
        (
            "client_order_id_conflict".into(),
            Some("client_order_id".into())
        )
    );
    assert!(f.recorder.taken().is_empty());
}

#[tokio::test]
async fn reads_name_the_partition_when_another_node_or_nobody_holds_it() {
    let f = fixture();
    let partition = partition_for(&account_key(AccountId(7)), PARTITIONS);
    for (moving, status, code, retryable) in [
        (false, 421, "partition_elsewhere", false),
        (true, 503, "partition_unavailable", true),
    ] {
        *f.state.holding.lock().expect("holding") = Holding::None { moving };
        for uri in ["/v1/accounts/7/orders/5", "/v1/accounts/7"] {
            let (got, headers, body) = call(&f, "GET", uri, None, "").await;
            assert_eq!(got.as_u16(), status, "{uri}: {body}");
            assert_eq!(body["error"]["code"], json!(code));
            assert_eq!(body["error"]["partition"], json!(partition.0));
            assert_eq!(body["error"]["retryable"], json!(retryable));
            assert_eq!(headers.contains_key("retry-after"), retryable);
        }
        let (got, body) = post(
            &f,
            "/v1/accounts/7/orders/5/amend",
            json!({"quantity": 1, "limit_price": 1}),
        )
        .await;
        assert_eq!(got.as_u16(), status, "{body}");
    }
    assert!(f.recorder.taken().is_empty());
}

#[tokio::test]
async fn status_reads_show_the_order_as_the_order_stage_recorded_it() {
    let f = fixture();
    let order_id = order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"));
    let mut record = created_record(7, "c-1", 3, 1500);
    record.outcome = Some(OrderOutcome::RejectedFunds(
        codecs::PaymentFailReason::InsufficientFunds,
    ));
    f.state
        .orders
        .lock()
        .expect("orders")
        .insert(order_id, record);
    f.state
        .balances
        .lock()
        .expect("balances")
        .insert(AccountId(7), Money(250));
    let (status, _, body) = call(
        &f,
        "GET",
        &format!("/v1/accounts/7/orders/{}", order_id.0),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["order_id"], json!(order_id.0.to_string()));
    assert_eq!(body["status"], json!("rejected_funds"));
    assert_eq!(body["reject_reason"], json!("insufficient_funds"));
    assert_eq!(body["client_order_id"], json!("c-1"));
    assert_eq!(body["sku"], json!("AAPL"));
    // Another account asking for this order id: not its order.
    let (status, _, _) = call(
        &f,
        "GET",
        &format!("/v1/accounts/8/orders/{}", order_id.0),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = call(&f, "GET", "/v1/accounts/7", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"account": 7, "balance": 250}));
    let (status, _, body) = call(&f, "GET", "/v1/instruments/AAPL", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"sku": "AAPL", "on_hand": 10}));
}

#[tokio::test]
async fn amend_cancel_fund_and_replenish_publish_their_events() {
    let f = fixture();
    let order_id = order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"));
    f.state
        .orders
        .lock()
        .expect("orders")
        .insert(order_id, created_record(7, "c-1", 3, 1500));
    let uri = format!("/v1/accounts/7/orders/{}", order_id.0);
    let (status, body) = post(
        &f,
        &format!("{uri}/amend"),
        json!({"quantity": 2, "limit_price": 1400}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["request"], json!("amend"));
    let (status, _, body) = call(&f, "POST", &format!("{uri}/cancel"), None, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let records = f.recorder.taken();
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r.topic == ORDER_UPDATED && r.key == account_key(AccountId(7)).to_vec()));
    match (decoded(&records[0]), decoded(&records[1])) {
        (Event::OrderAmended(amended), Event::OrderCancelled(cancelled)) => {
            assert_eq!(amended.header.order_id, order_id);
            assert_eq!(amended.sku, sku("AAPL"));
            assert_eq!(
                (amended.quantity, amended.limit_price),
                (Quantity(2), Money(1400))
            );
            assert_eq!(cancelled.header.order_id, order_id);
        }
        other => panic!("unexpected events {other:?}"),
    }

    let keyed = json!({"amount": 500, "idempotency_key": "deposit-1"});
    let (_, first) = post(&f, "/v1/accounts/7/fundings", keyed.clone()).await;
    let (_, again) = post(&f, "/v1/accounts/7/fundings", keyed).await;
    let (status, fresh) = post(&f, "/v1/accounts/7/fundings", json!({"amount": 500})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["event_id"], again["event_id"]);
    assert_ne!(first["event_id"], fresh["event_id"]);
    let records = f.recorder.taken();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.topic == ACCOUNT_FUNDED));
    let Event::AccountFunded(funded) = decoded(&records[0]) else {
        panic!("not a funding");
    };
    assert_eq!(
        Some(funded.header.event_id.to_string()),
        first["event_id"].as_str().map(str::to_string)
    );
    assert_eq!((funded.account, funded.amount), (AccountId(7), Money(500)));
    assert!(funded.header.order_id.is_none());

    let (status, body) = post(
        &f,
        "/v1/instruments/NEW.SKU/replenishments",
        json!({"quantity": 40}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let records = f.recorder.taken();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, STOCK_REPLENISHED);
    assert_eq!(records[0].key, sku_key(&sku("NEW.SKU")).to_vec());
    assert_eq!(
        records[0].partition,
        partition_for(sku_key(&sku("NEW.SKU")), PARTITIONS)
    );
}

#[tokio::test]
async fn topics_the_core_map_sets_to_avro_are_published_in_confluents_avro_form() {
    use codecs::avro::{latest_value_schema, unframe, PreparedSchema};
    use engine::wire::{AvroWriter, WireFormats};
    let prepared = |topic: &str| {
        Arc::new(
            PreparedSchema::new(latest_value_schema(topic).expect("a flow topic"))
                .expect("schemas parse"),
        )
    };
    let (created_schema, funded_schema) = (prepared(ORDER_CREATED), prepared(ACCOUNT_FUNDED));
    let wire = WireFormats::default()
        .write_avro(
            ORDER_CREATED,
            AvroWriter {
                registry_id: 41,
                schema: created_schema.clone(),
            },
        )
        .write_avro(
            ACCOUNT_FUNDED,
            AvroWriter {
                registry_id: 43,
                schema: funded_schema.clone(),
            },
        );
    let state = FakeState::new();
    state
        .stock
        .lock()
        .expect("stock")
        .insert(sku("AAPL"), Quantity(10));
    let recorder = Arc::new(Recorder::default());
    let f = Fixture {
        api: Arc::new(OrderApi::new(
            &ApiConfig {
                wire,
                ..config(InstrumentPolicy::Inventory)
            },
            Arc::clone(&state) as Arc<dyn StateSource>,
            Arc::clone(&recorder) as Arc<dyn Publisher>,
        )),
        state,
        recorder,
    };
    let (status, body) = post(&f, "/v1/orders", order_json()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = post(&f, "/v1/accounts/7/fundings", json!({"amount": 500})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = post(
        &f,
        "/v1/instruments/AAPL/replenishments",
        json!({"quantity": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let records = f.recorder.taken();
    assert_eq!(records.len(), 3);

    let (id, datum) = unframe(&records[0].payload).expect("Confluent frame");
    assert_eq!((records[0].topic, id), (ORDER_CREATED, 41));
    let Event::OrderCreated(created) = created_schema.decode(datum).expect("Avro datum") else {
        panic!("not an order.created");
    };
    let order_id = order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"));
    assert_eq!(body["order_id"], json!(order_id.0.to_string()));
    assert_eq!(created.header.order_id, order_id);
    assert_eq!(
        (created.quantity, created.limit_price),
        (Quantity(3), Money(1500))
    );
    assert!(
        decode(&records[0].payload).is_err(),
        "not an rkyv frame as well"
    );

    let (id, datum) = unframe(&records[1].payload).expect("Confluent frame");
    assert_eq!((records[1].topic, id), (ACCOUNT_FUNDED, 43));
    let Event::AccountFunded(funded) = funded_schema.decode(datum).expect("Avro datum") else {
        panic!("not a funding");
    };
    assert_eq!((funded.account, funded.amount), (AccountId(7), Money(500)));

    // Not set to Avro: rkyv, as before.
    assert_eq!(records[2].topic, STOCK_REPLENISHED);
    assert!(matches!(decoded(&records[2]), Event::StockReplenished(_)));
}

#[tokio::test]
async fn an_unacknowledged_publish_is_a_retryable_503() {
    let f = fixture();
    f.recorder.fail.store(true, Ordering::Relaxed);
    let (status, headers, body) = call(
        &f,
        "POST",
        "/v1/orders",
        Some("application/json"),
        order_json().to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], json!("publish_failed"));
    assert_eq!(body["error"]["retryable"], json!(true));
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn openapi_and_liveness_are_served() {
    let f = fixture();
    let (status, headers, body) = call(&f, "GET", "/openapi.yaml", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/yaml")
    );
    assert!(body.as_str().is_some_and(|t| t.starts_with("openapi: 3")));
    let (status, _, _) = call(&f, "GET", "/health/live", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn grpc_maps_the_same_rejections_to_status_codes_and_metadata() {
    let f = fixture();
    let grpc = GrpcApi::new(Arc::clone(&f.api));
    let missing = grpc
        .create_order(tonic::Request::new(CreateOrderRequest {
            account: Some(7),
            sku: Some("AAPL".into()),
            quantity: Some(3),
            limit_price: None,
            client_order_id: Some("c-1".into()),
        }))
        .await
        .expect_err("refused");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert!(missing.message().starts_with("missing_field: "));
    let meta = |status: &tonic::Status, key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        meta(&missing, super::ERROR_CODE_KEY).as_deref(),
        Some("missing_field")
    );
    assert_eq!(
        meta(&missing, super::ERROR_FIELD_KEY).as_deref(),
        Some("limit_price")
    );
    let negative = grpc
        .create_order(tonic::Request::new(CreateOrderRequest {
            account: Some(7),
            sku: Some("AAPL".into()),
            quantity: Some(-1),
            limit_price: Some(5),
            client_order_id: Some("c-1".into()),
        }))
        .await
        .expect_err("refused");
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        meta(&negative, super::ERROR_CODE_KEY).as_deref(),
        Some("non_positive_quantity")
    );
    assert!(f.recorder.taken().is_empty());

    let created = grpc
        .create_order(tonic::Request::new(CreateOrderRequest {
            account: Some(7),
            sku: Some("AAPL".into()),
            quantity: Some(3),
            limit_price: Some(5),
            client_order_id: Some("c-1".into()),
        }))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(
        OrderId(created.order_id),
        order_id_for(AccountId(7), &ClientOrderId::new("c-1").expect("id"))
    );
    assert_eq!(f.recorder.taken().len(), 1);

    *f.state.holding.lock().expect("holding") = Holding::None { moving: false };
    let elsewhere = grpc
        .get_order(tonic::Request::new(GetOrderRequest {
            account: Some(7),
            order_id: Some(created.order_id),
        }))
        .await
        .expect_err("not here");
    assert_eq!(elsewhere.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        meta(&elsewhere, super::PARTITION_KEY),
        Some(
            partition_for(&account_key(AccountId(7)), PARTITIONS)
                .0
                .to_string()
        )
    );
}

#[test]
fn a_spawned_api_answers_on_its_ports_and_stops() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    let f = fixture();
    let handle = super::spawn_with(
        config(InstrumentPolicy::Inventory),
        Arc::clone(&f.state) as Arc<dyn StateSource>,
        Arc::clone(&f.recorder) as Arc<dyn Publisher>,
    )?;
    assert_ne!(handle.rest_addr().port(), 0);
    assert_ne!(handle.grpc_addr().port(), 0);
    let mut stream = std::net::TcpStream::connect(handle.rest_addr())?;
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(handle.is_running());
    handle.stop()?;
    Ok(())
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_on_both_servers() {
    let f = fixture();
    let observability = crate::observe::Observability::new(None).expect("registry");
    let router = rest::router(Arc::clone(&f.api), Some(&observability));
    for uri in [
        "/v1/accounts/7",
        "/v1/accounts/8",
        "/no/such/route",
        "/health/ready",
    ] {
        let request = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible router");
    }
    let grpc = GrpcApi::new(Arc::clone(&f.api)).with_observability(Some(observability.clone()));
    let _ = grpc
        .create_order(tonic::Request::new(CreateOrderRequest {
            account: Some(7),
            sku: Some("AAPL".into()),
            quantity: Some(3),
            limit_price: None,
            client_order_id: Some("c-1".into()),
        }))
        .await;
    let text = observability.render().expect("render");
    let count = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with("tradeflow_api_requests_total{") && l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    // Two accounts, one route template: one series, no account ids.
    assert_eq!(count("route=\"/v1/accounts/{account}\""), Some(2), "{text}");
    assert_eq!(count("route=\"unmatched\""), Some(1), "{text}");
    assert_eq!(
        count("route=\"/health/ready\",status=\"200\""),
        Some(1),
        "{text}"
    );
    assert_eq!(
        count("method=\"gRPC\",route=\"/tradeflow.order.v1.OrderApi/CreateOrder\",status=\"invalid_argument\""),
        Some(1),
        "{text}"
    );
    assert!(text.contains("tradeflow_api_request_duration_seconds_bucket"));
}
