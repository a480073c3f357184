//! A departed node's open transaction is aborted by the node that stays, on
//! the real single broker (`engine::kafka::registry`): the transaction
//! coordinator would otherwise keep it open until `transaction.timeout.ms`,
//! and nobody could read past it under `read_committed` (a take-over restore
//! waits for it: docs/STATE.md, "Take-over after kill -9").
//!
//! node-b registers in the owners' registry, and a producer under node-b's
//! shard transactional id opens a transaction, writes a record and leaves
//! the transaction open (as a node killed mid-transaction does). A plain
//! record follows it. node-a registers, then node-b's registration goes. The
//! plain record must become readable under `read_committed`, the open
//! transaction's record never, and node-b's producer must find itself
//! fenced. The open transaction's timeout is 60 s and the test gives up at
//! 40 s, so only node-a's fence can have ended it.

use std::time::{Duration, Instant};

use engine::kafka::registry::{register, Claim, REGISTRY_SESSION_TIMEOUT_MS};
use engine::kafka::{ensure_topics, shard_transactional_id, Guarantee, KafkaSettings, TopicSpec};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tradeflow_tests::{flush, unique_topic, CommittedReader, KafkaCluster};

/// Longer than the test waits: an abort by timeout cannot pass for a fence.
const OPEN_TRANSACTION_TIMEOUT_MS: &str = "60000";
const GIVE_UP_AFTER: Duration = Duration::from_secs(40);

fn claim(node: &str) -> Claim {
    Claim {
        node: node.into(),
        process: std::process::id(),
        mode: "consumer-group".into(),
        partitions: None,
        shards: Some((Guarantee::ExactlyOnce, vec![0])),
        liveness: None,
    }
}

#[test]
fn a_departed_nodes_open_transaction_is_aborted_by_the_node_that_stays() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic = unique_topic("fencing");
    let application_id = unique_topic("fencing-app");
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    ensure_topics(&settings, &[TopicSpec::stream(topic.as_str(), 1, 1)])?;

    let (node_b, _) = register(&settings, &claim("node-b"), 1, REGISTRY_SESSION_TIMEOUT_MS)?;

    // node-b's shard on core 0, killed with its transaction open.
    let node_b_id = shard_transactional_id(&application_id, "node-b-0");
    let departed: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config()
        .set("transactional.id", &node_b_id)
        .set("transaction.timeout.ms", OPEN_TRANSACTION_TIMEOUT_MS)
        .create()?;
    departed.init_transactions(Duration::from_secs(30))?;
    departed.begin_transaction()?;
    departed
        .send(
            BaseRecord::to(&topic)
                .key("open")
                .payload("never committed"),
        )
        .map_err(|(e, _)| e)?;
    flush(&departed, Duration::from_secs(10))?;
    let plain: ThreadedProducer<DefaultProducerContext> = cluster.client_config().create()?;
    plain
        .send(BaseRecord::to(&topic).key("after").payload("plain"))
        .map_err(|(e, _)| e)?;
    flush(&plain, Duration::from_secs(10))?;

    let (node_a, others) = register(&settings, &claim("node-a"), 1, REGISTRY_SESSION_TIMEOUT_MS)?;
    assert!(
        others.iter().any(|c| c.node == "node-b"),
        "node-a must see node-b in the registry before it leaves: {others:?}"
    );
    // Assigned and connected before the clock starts: the time is the
    // fence's, not the reader's start-up.
    let reader = CommittedReader::new(&cluster, &topic, 0)?;
    assert!(reader
        .keys(1, Instant::now() + Duration::from_secs(2))
        .is_empty());
    // The clock starts as node-b begins to leave: the drop returns once its
    // registration is gone, by which time node-a may have fenced it.
    let departed_at = Instant::now();
    drop(node_b);

    let read = reader.keys(1, departed_at + GIVE_UP_AFTER);
    let waited = departed_at.elapsed();
    drop(node_a);
    assert_eq!(
        read,
        ["after"],
        "after {waited:?} the record behind node-b's open transaction was still unreadable \
         (or the aborted record was read)"
    );
    println!("node-b's open transaction aborted {waited:?} after it left the registry");

    // node-b's producer, were it alive, is fenced: its transaction is gone.
    let commit = departed.commit_transaction(Duration::from_secs(10));
    assert!(
        commit.is_err(),
        "node-b's producer committed after node-a fenced its transactional id"
    );
    Ok(())
}

/// Keeps what librdkafka logs about acquiring a producer id.
#[derive(Default)]
struct PidLog(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for PidLog {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "GETPID" {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(log_message.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for PidLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// `init-pid-retry-backoff.patch` (vendor/rdkafka-sys/PATCHED.md): a fence
/// of an id that left a transaction open meets CONCURRENT_TRANSACTIONS
/// while the coordinator aborts it, and asks again after `retry.backoff.ms`
/// (here 10 ms), not after librdkafka's fixed 500 ms. Asserted through the
/// log of that branch, not a time; the time is printed.
#[test]
fn a_fence_asks_again_after_the_retry_backoff_not_half_a_second() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic = unique_topic("fence-backoff");
    let id = unique_topic("fence-backoff-id");
    let admin_settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: unique_topic("fence-backoff-app"),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    ensure_topics(&admin_settings, &[TopicSpec::stream(topic.as_str(), 1, 1)])?;
    let mut took = Vec::new();
    let mut concurrent_retries = 0;
    for _ in 0..3 {
        let open: ThreadedProducer<DefaultProducerContext> = cluster
            .client_config()
            .set("transactional.id", &id)
            .set("transaction.timeout.ms", OPEN_TRANSACTION_TIMEOUT_MS)
            .create()?;
        open.init_transactions(Duration::from_secs(30))?;
        open.begin_transaction()?;
        open.send(
            BaseRecord::to(&topic)
                .key("open")
                .payload("never committed"),
        )
        .map_err(|(e, _)| e)?;
        flush(&open, Duration::from_secs(10))?;

        let fence: ThreadedProducer<PidLog> = cluster
            .client_config()
            .set("transactional.id", &id)
            .set("transaction.timeout.ms", OPEN_TRANSACTION_TIMEOUT_MS)
            .set("retry.backoff.ms", "10")
            .set("debug", "eos")
            // rdkafka passes on only what the `log` crate's level lets
            // through, which this test does not configure.
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug)
            .create_with_context(PidLog::default())?;
        // Connected first, as the engine's fence does (`registry::fence_one`),
        // so the time below is the fence's, not librdkafka's start-up.
        for _ in 0..2 {
            let _ = fence
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5));
        }
        let started = Instant::now();
        fence.init_transactions(Duration::from_secs(30))?;
        took.push(started.elapsed());
        let log = fence
            .context()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        concurrent_retries += log
            .iter()
            .filter(|l| l.contains("retrying in 10ms"))
            .count();
        assert!(
            !log.iter()
                .any(|l| l.contains("concurrent operation") && l.ends_with(": retrying")),
            "a CONCURRENT_TRANSACTIONS answer took librdkafka's fixed 500 ms retry: {log:?}"
        );
    }
    println!("fences of an id with an open transaction took {took:?}");
    assert!(
        concurrent_retries > 0,
        "no fence met CONCURRENT_TRANSACTIONS: the test did not exercise the retry"
    );
    Ok(())
}
