//! How many broker round trips an exactly-once commit costs, measured where
//! the round trip is known: librdkafka's mock cluster with a fixed response
//! delay (`rd_kafka_mock_broker_set_rtt`), so the figures do not depend on how
//! loaded this machine is. Three lines, each the median of `TRANSACTIONS`
//! commits with records still in flight at the commit, as a shard has them:
//! - `acks, then offsets`: the order the port used before (wait for every
//!   acknowledgement, then `send_offsets_to_transaction`, then commit);
//! - `offsets, then acks`: the offsets join the transaction while the
//!   acknowledgements are still coming (what `RdKafkaPort::commit` does now);
//! - `RdKafkaPort::commit`: the engine's own commit, for the record.
//!
//! Prints figures; asserts nothing (see docs/PERFORMANCE.md for the runs).
//!
//! `cargo bench -p tradeflow-benches --bench commit_path` (TRADEFLOW_RTT_MS
//! sets the round trip, 10 by default).

use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use engine::kafka::{Guarantee, KafkaSettings, Ownership, RdKafkaPort};
use engine::PartitionId;
use engine::{InputOffset, KafkaPort, Offset, OutRecord, TopicIdx};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;

const TRANSACTIONS: usize = 30;
const RECORDS: usize = 20;
const PARTITIONS: i32 = 4;
const INPUT: &str = "bench.input";
const OUTPUT: &str = "bench.output";

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

/// Serves delivery reports until none is in flight, without rdkafka 0.39's
/// 100 ms flush slices (see `engine::kafka::await_deliveries`).
fn await_acks(producer: &BaseProducer) {
    while producer.in_flight_count() > 0 {
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Raw rdkafka transactions in one of the two orders.
fn raw_commits(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    offsets_first: bool,
) -> Duration {
    let id = if offsets_first {
        "raw-offsets-first"
    } else {
        "raw-acks-first"
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("transactional.id", id)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", id)
        .create()
        .expect("consumer");
    let group = consumer.group_metadata().expect("group metadata");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init_transactions");
    let payload = [7u8; 64];
    let mut took = Vec::with_capacity(TRANSACTIONS);
    for transaction in 0..TRANSACTIONS {
        producer.begin_transaction().expect("begin");
        for i in 0..RECORDS {
            let key = (transaction * RECORDS + i).to_be_bytes();
            producer
                .send(
                    BaseRecord::to(OUTPUT)
                        .partition((i as i32) % PARTITIONS)
                        .key(&key[..])
                        .payload(&payload[..]),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(INPUT, 0, rdkafka::Offset::Offset(transaction as i64 + 1))
            .expect("offset");
        let started = Instant::now();
        if offsets_first {
            producer
                .send_offsets_to_transaction(&offsets, &group, timeout)
                .expect("send_offsets");
            await_acks(&producer);
        } else {
            await_acks(&producer);
            producer
                .send_offsets_to_transaction(&offsets, &group, timeout)
                .expect("send_offsets");
        }
        producer.commit_transaction(timeout).expect("commit");
        took.push(started.elapsed());
    }
    median(took)
}

fn port_commits(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> Duration {
    let settings = KafkaSettings {
        bootstrap: mock.bootstrap_servers(),
        application_id: "bench-port".into(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: Vec::new(),
        linger_ms: 0,
        fetch_wait_max_ms: 5,
        namespace: TopicNamespace::none(),
    };
    let mut port = RdKafkaPort::new(
        &settings,
        &[INPUT],
        &Ownership::Static((0..PARTITIONS).map(PartitionId).collect()),
        "bench-port-txn",
    )
    .expect("port on the mock cluster");
    let payload = [7u8; 64];
    let mut took = Vec::with_capacity(TRANSACTIONS);
    for transaction in 0..TRANSACTIONS {
        for i in 0..RECORDS {
            let key = (transaction * RECORDS + i).to_be_bytes();
            port.send(&OutRecord {
                topic: OUTPUT,
                partition: PartitionId((i as i32) % PARTITIONS),
                key: Some(&key),
                payload: Some(&payload),
                headers: &[],
            })
            .expect("output");
        }
        let offsets = [InputOffset {
            topic: TopicIdx(0),
            partition: PartitionId(0),
            next: Offset(transaction as i64 + 1),
        }];
        let started = Instant::now();
        port.commit(&offsets, &mut || {}).expect("commit");
        took.push(started.elapsed());
    }
    port.close();
    median(took)
}

fn main() {
    let rtt_ms: u64 = std::env::var("TRADEFLOW_RTT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rtt = Duration::from_millis(rtt_ms);
    let mock = MockCluster::new(1).expect("mock cluster");
    for topic in [INPUT, OUTPUT] {
        mock.create_topic(topic, PARTITIONS, 1).expect("mock topic");
    }
    mock.broker_round_trip_time(1, rtt)
        .expect("set the round trip");
    let in_rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    println!(
        "exactly-once commit, {RECORDS} records in flight on {PARTITIONS} partitions, broker round trip {rtt_ms} ms, median of {TRANSACTIONS}:"
    );
    for (label, took) in [
        ("acks, then offsets (before)", raw_commits(&mock, false)),
        ("offsets, then acks", raw_commits(&mock, true)),
        ("RdKafkaPort::commit (now)", port_commits(&mock)),
    ] {
        println!(
            "  {label:<30} {:>7.1} ms = {:.1} round trips",
            took.as_secs_f64() * 1e3,
            in_rtts(took)
        );
    }
}
