//! The Avro wire format on the real broker, with `tradeflow registry`'s
//! server in process: orders produced in Confluent's Avro form (magic 0, the
//! registry's id, an Avro datum) are filled by an engine whose core map sets
//! `order.created`, `payment.completed` and `stock.updated` to Avro; the
//! engine's `payment.completed` and `stock.updated` records are Avro under
//! the ids the registry gave their schemas (and Inventory reads Payment's
//! Avro on the internal hop); funding and stock stay rkyv on the same
//! inputs; an order placed through the REST API, whose core map says
//! `order.created` is Avro, is published in Confluent's Avro form under the
//! registry's id and filled; and an order with a schema id the registry does
//! not know lands in the dead-letter topic with that cause. Then `loadgen`
//! drives a synthetic scenario into the same flow with its seed topics in
//! Avro, and its outcome reader and audit read every Avro topic.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codecs::avro::{frame, latest_value_schema, unframe, value_subject, PreparedSchema};
use codecs::topics::{
    account_key, sku_key, TopicNamespace, ACCOUNT_FUNDED, ORDER_CREATED, ORDER_UPDATED,
    PAYMENT_COMPLETED, STOCK_REPLENISHED, STOCK_UPDATED,
};
use codecs::{
    encode_to_vec, AccountFunded, AccountId, ClientOrderId, Event, EventHeader, EventId, Money,
    OrderCreated, OrderId, Quantity, Sku, StockReplenished, Tag, TimeInForce, TimestampNs,
};
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{publish_and_wait, read_to_end, Guarantee, KafkaSettings, Ownership};
use engine::partitioner::partition_for;
use engine::runtime::{Engine, NodeKnobs, ShardPlan};
use engine::{OutRecord, PartitionId, ShardId};
use loadgen::drive::{DriveConfig, DriveOptions};
use loadgen::session::{RunLabel, SessionConfig};
use loadgen::synth::SynthConfig;
use registry::values::ValueFormats;
use services::api::{ApiConfig, PUBLISHED_TOPICS};
use services::flow::{ServiceSet, TradeFlow, TradeFlowState};
use tradeflow_tests::{unique_topic, KafkaCluster};
use tuning::WireSettings;

const WAIT: Duration = Duration::from_secs(60);
const ORDERS: u64 = 5;
const UNKNOWN_ID: u32 = 999_999;

/// Order `n` of `account` (its id a hash: half of them are above
/// `i64::MAX` and ride in the Avro `long` as their 64 bits).
fn order(run: u64, n: u64, account: AccountId, sku: Sku) -> anyhow::Result<Event> {
    let client = ClientOrderId::new(&format!("avro-{run}-{n}"))?;
    let order_id = codecs::ids::order_id_for(account, &client);
    Ok(Event::OrderCreated(OrderCreated {
        header: EventHeader {
            event_id: EventId((u128::from(run) << 64) | u128::from(1_000 + n)),
            order_id,
            causation_id: EventId::NONE,
            created_at_ns: TimestampNs(1),
        },
        account,
        sku,
        quantity: Quantity(2),
        limit_price: Money(100),
        client_order_id: client,
        time_in_force: TimeInForce::Gtc,
        tag: Tag::EMPTY,
    }))
}

/// One plain HTTP/1.1 request; the answer's status line, headers and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn avro_orders_are_filled_and_the_outcomes_are_avro_under_the_registry_ids() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let props = vec![("broker.address.family".to_string(), "v4".to_string())];
    let partitions = 2;
    let namespace = TopicNamespace::new(&unique_topic("avro"))?;
    let physical = |topic: &str| namespace.physical(topic);

    // The registry, serving on loopback from a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = runtime.block_on(registry::bind(
        &registry::StoreConfig {
            bootstrap: cluster.bootstrap().to_owned(),
            topic: unique_topic("_schemas-avro-wire"),
            replication: -1,
            properties: props.clone(),
        },
        "127.0.0.1:0".parse()?,
        async {
            let _ = stopped.await;
        },
    ))?;
    let server = runtime.spawn(server);
    let url = format!("http://{addr}");

    let flow = TradeFlow::new(ServiceSet::ALL);
    let inputs = engine::Stage::input_topics(&flow).to_vec();
    let outputs = flow.output_topics();
    // What `tradeflow run` with the API registers: outputs and what the API publishes.
    let mut written = outputs.clone();
    written.extend(PUBLISHED_TOPICS);
    let registered = registry::client::register_value_schemas(&url, &namespace, &written)?;
    let id_of = |topic: &str| -> anyhow::Result<u32> {
        let subject = value_subject(&physical(topic));
        registered
            .iter()
            .find(|r| r.subject == subject)
            .map(|r| r.id)
            .ok_or_else(|| anyhow::anyhow!("{subject} not registered"))
    };
    let settings = WireSettings::from_toml_str(
        "[wire.value_format]\n\
         \"order-service.order.created\" = \"avro\"\n\
         \"payment-service.payment.completed\" = \"avro\"\n\
         \"inventory-service.stock.updated\" = \"avro\"\n",
        &codecs::topics::ALL,
    )?;
    let formats =
        services::wire::wire_formats(&settings, Some(&url), &namespace, &outputs, &registered)?;
    let api_formats = services::wire::wire_formats(
        &settings,
        Some(&url),
        &namespace,
        &PUBLISHED_TOPICS,
        &registered,
    )?;

    let application_id = unique_topic("avro-app");
    let kafka = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: props.clone(),
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: namespace.clone(),
    };
    prepare_topics(
        &kafka,
        &FlowTopics {
            inputs,
            outputs: outputs.clone(),
            stores: flow.store_names(),
            changelog_layout: Default::default(),
        },
        partitions,
        1,
    )?;
    let engine = Engine::start(
        kafka,
        vec![ShardPlan {
            shard: ShardId(0),
            core: None,
            ownership: Ownership::Static((0..partitions).map(PartitionId).collect()),
            transactional_id: format!("{application_id}-0"),
        }],
        NodeKnobs::default(),
        partitions,
        move |_| TradeFlow::new(ServiceSet::ALL).with_wire_formats(formats.clone()),
    )?;
    anyhow::ensure!(engine.wait_running(WAIT), "engine did not start");
    let engine = Arc::new(engine);
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut api_config = ApiConfig::new(any, any, cluster.bootstrap(), partitions);
    api_config.client_properties = props.clone();
    api_config.namespace = namespace.clone();
    api_config.wire = api_formats;
    let api = services::api::spawn(api_config, engine.clone())?;
    let rest = api.rest_addr().to_string();

    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let account = AccountId(run >> 8 | 1);
    let sku = Sku::new(&format!("V{:X}", run % 0xFFFF_FFFF))?;
    let home = partition_for(&account_key(account), partitions);
    let sku_home = partition_for(sku_key(&sku), partitions);

    // Funding and stock as rkyv, then the orders as Avro, on the same inputs.
    let funded = encode_to_vec(&Event::AccountFunded(AccountFunded {
        header: EventHeader {
            event_id: EventId((u128::from(run) << 64) | 1),
            ..EventHeader::default()
        },
        account,
        amount: Money(1_000_000),
    }))?;
    let stocked = encode_to_vec(&Event::StockReplenished(StockReplenished {
        header: EventHeader {
            event_id: EventId((u128::from(run) << 64) | 2),
            ..EventHeader::default()
        },
        sku,
        quantity: Quantity(1_000),
    }))?;
    let (funded_topic, stocked_topic) = (physical(ACCOUNT_FUNDED), physical(STOCK_REPLENISHED));
    publish_and_wait(
        cluster.bootstrap(),
        &props,
        &[
            OutRecord {
                topic: &funded_topic,
                partition: home,
                key: Some(&account_key(account)),
                payload: Some(&funded),
                headers: &[],
            },
            OutRecord {
                topic: &stocked_topic,
                partition: sku_home,
                key: Some(sku_key(&sku)),
                payload: Some(&stocked),
                headers: &[],
            },
        ],
    )?;
    let started = Instant::now();
    while engine
        .query(
            home,
            move |s: &TradeFlowState| s.accounts.balance(account),
            Duration::from_secs(5),
        )?
        .flatten()
        .is_none()
        || engine
            .query(
                sku_home,
                move |s: &TradeFlowState| s.stock.on_hand(&sku),
                Duration::from_secs(5),
            )?
            .flatten()
            .is_none()
    {
        anyhow::ensure!(started.elapsed() < WAIT, "funding and stock not applied");
        std::thread::sleep(Duration::from_millis(50));
    }

    let order_schema = PreparedSchema::new(
        latest_value_schema(ORDER_CREATED).ok_or_else(|| anyhow::anyhow!("no schema"))?,
    )?;
    let order_id = id_of(ORDER_CREATED)?;
    let mut orders = BTreeSet::new();
    let mut payloads = Vec::new();
    for n in 0..ORDERS {
        let event = order(run, n, account, sku)?;
        orders.insert(event.header().order_id);
        payloads.push(frame(order_id, &order_schema.encode(&event)?));
    }
    let stranger = order(run, 99, account, sku)?;
    payloads.push(frame(UNKNOWN_ID, &order_schema.encode(&stranger)?));
    let orders_topic = physical(ORDER_CREATED);
    let key = account_key(account);
    let records: Vec<OutRecord<'_>> = payloads
        .iter()
        .map(|payload| OutRecord {
            topic: &orders_topic,
            partition: home,
            key: Some(&key),
            payload: Some(payload),
            headers: &[],
        })
        .collect();
    publish_and_wait(cluster.bootstrap(), &props, &records)?;

    // An order through the REST API: order.created is Avro in the core map.
    let answer = http(
        &rest,
        "POST",
        "/v1/orders",
        &serde_json::json!({
            "account": account.0, "sku": sku.as_str(), "quantity": 1,
            "limit_price": 100, "client_order_id": format!("rest-{run}"),
        })
        .to_string(),
    )?;
    anyhow::ensure!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let rest_order = OrderId(
        serde_json::from_str::<serde_json::Value>(body)?["order_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no order id in {body}"))?,
    );
    orders.insert(rest_order);
    let mut from_rest = Vec::new();
    read_to_end(cluster.bootstrap(), &props, &[&orders_topic], &mut |r| {
        let Some(payload) = r.payload else { return };
        if let Ok((id, datum)) = unframe(payload) {
            if let Ok(event) = order_schema.decode(datum) {
                if event.header().order_id == rest_order {
                    from_rest.push((id, event));
                }
            }
        }
    })?;
    let [(rest_id, Event::OrderCreated(created))] = from_rest.as_slice() else {
        anyhow::bail!("the API's order is not one Avro order.created: {from_rest:?}");
    };
    assert_eq!(*rest_id, order_id, "the API writes under the registry's id");
    assert_eq!(
        (created.account, created.sku, created.quantity),
        (account, sku, Quantity(1))
    );

    let outcome = |id: OrderId| {
        engine
            .query(
                home,
                move |s: &TradeFlowState| {
                    s.orders
                        .order(id)
                        .and_then(|o| o.outcome)
                        .map(|o| format!("{o:?}"))
                },
                Duration::from_secs(5),
            )
            .ok()
            .flatten()
            .flatten()
    };
    let started = Instant::now();
    while orders.iter().any(|id| outcome(*id).is_none()) {
        anyhow::ensure!(started.elapsed() < WAIT, "Avro orders were not filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &orders {
        assert_eq!(outcome(*id).as_deref(), Some("Filled"), "order {id:?}");
    }

    // The outcomes are Avro under the ids the registry gave their schemas.
    for topic in [PAYMENT_COMPLETED, STOCK_UPDATED] {
        let id = id_of(topic)?;
        let schema = PreparedSchema::new(
            latest_value_schema(topic).ok_or_else(|| anyhow::anyhow!("no schema"))?,
        )?;
        let mut seen = BTreeSet::new();
        let mut problems = Vec::new();
        read_to_end(cluster.bootstrap(), &props, &[&physical(topic)], &mut |r| {
            let Some(payload) = r.payload else { return };
            match unframe(payload) {
                Ok((found, datum)) if found == id => match schema.decode(datum) {
                    Ok(event) => {
                        seen.insert(event.header().order_id);
                    }
                    Err(e) => problems.push(e.to_string()),
                },
                Ok((found, _)) => problems.push(format!("schema id {found}, expected {id}")),
                Err(e) => problems.push(e.to_string()),
            }
        })?;
        assert!(problems.is_empty(), "{topic}: {problems:?}");
        assert_eq!(seen, orders, "{topic} carries one Avro record per order");
    }

    // The order with an id the registry does not know is dead-lettered with it.
    let started = Instant::now();
    let letter = loop {
        let letters = services::dlq::list(cluster.bootstrap(), &props, &orders_topic)?;
        if let Some(letter) = letters.into_iter().next() {
            break letter;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "no dead letter for the unknown id"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("dead letter: {} / {}", letter.class, letter.reason);
    assert_eq!(letter.class, "user-data");
    assert!(
        letter
            .reason
            .contains(&format!("unknown schema id {UNKNOWN_ID}")),
        "{}",
        letter.reason
    );
    assert_eq!(
        letter.payload.as_deref(),
        payloads.last().map(Vec::as_slice)
    );

    // loadgen drives the same flow with its seed topics in Avro (ids from
    // the same registry), and its outcome reader and audit read the Avro
    // outcomes; the audit finds the one dead-lettered record and nothing else
    // it cannot read.
    let seeds = [
        ACCOUNT_FUNDED,
        STOCK_REPLENISHED,
        ORDER_CREATED,
        ORDER_UPDATED,
    ];
    let values = ValueFormats::new(Some(&url), &namespace, &seeds)?;
    for (topic, id) in values.avro_topics() {
        assert_eq!(
            id,
            id_of(topic)?,
            "loadgen found the id the node registered"
        );
    }
    let scenario = SynthConfig {
        accounts: 20,
        instruments: 5,
        orders: 300,
        rate_per_s: 1_000,
        // Event ids apart from the ones above (`run` << 64 | n).
        run_id: Some(run ^ 1 << 63),
        ..SynthConfig::default()
    };
    // The order flow a second after the set-up: the engine does not order
    // records across co-partitioned topics by timestamp, so an order ms
    // behind its account's funding may be read first (docs/ARCHITECTURE.md).
    let (_, schedule) = loadgen::session::synth_schedule(&scenario)?;
    let schedule = schedule.map(|record| {
        record.map(|mut r| {
            if ![ACCOUNT_FUNDED, STOCK_REPLENISHED].contains(&r.topic) {
                r.at_ns += 1_000_000_000;
            }
            r
        })
    });
    let out_dir = std::env::temp_dir().join(unique_topic("avro-loadgen"));
    let session = SessionConfig {
        drive: DriveConfig {
            bootstrap: cluster.bootstrap().to_string(),
            client_properties: props.clone(),
            drain_timeout: WAIT,
            namespace: namespace.clone(),
        },
        options: DriveOptions {
            values,
            ..DriveOptions::default()
        },
        out_dir: out_dir.clone(),
        audit: Some(Guarantee::ExactlyOnce),
        deserved: Some(loadgen::synth::deserved_outcomes(
            &scenario,
            codecs::ids::order_id_for,
        )?),
        // The record with the unknown id, above.
        poison_sent: true,
        state: None,
        label: RunLabel::here("loadgen (avro_wire test)"),
    };
    let outcome = loadgen::session::run_session(&session, schedule)?;
    let _ = std::fs::remove_dir_all(&out_dir);
    print!("{}", outcome.table);
    let drive = &outcome.drive;
    assert_eq!(
        (drive.missing, drive.duplicate_outcomes, drive.undecodable),
        (0, 0, 0)
    );
    assert!(drive.outcomes > 0 && drive.outcomes == drive.orders_sent);
    let audit = outcome.audit.as_ref().expect("audited");
    println!("{}", audit.report);
    assert!(audit.report.passed(), "{}", audit.report);
    assert_eq!(audit.undecodable, 1, "only the unknown id's record");
    assert!(audit.report.deserved_compared > 0);
    assert!(outcome.passed());

    api.stop()?;
    Arc::try_unwrap(engine)
        .map_err(|_| anyhow::anyhow!("the engine is still shared"))?
        .shutdown()?;
    let _ = stop.send(());
    runtime.block_on(server)??;
    Ok(())
}
