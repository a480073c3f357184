//! The guard for `produce-request-merge.patch` in vendor/rdkafka-sys
//! (PATCHED.md): with `produce.request.max.partitions` above 1, a
//! transactional producer sends the batches of many partitions in one
//! ProduceRequest, and every record still arrives exactly once, in order,
//! also when the broker answers a merged request with an error and each
//! partition retries on its own.
//!
//! On librdkafka's mock cluster (which takes ProduceRequests of any number
//! of partitions). What is counted comes from librdkafka's own `protocol`
//! debug lines: the requests it sent, and the merges it made. The real
//! broker's side of it is every exactly-once test and audit that runs the
//! engine, whose shard producers merge by default.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext,
};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::TopicPartitionList;

const TOPICS: [&str; 2] = ["merge-a", "merge-b"];
const PARTITIONS: i32 = 8;
const TRANSACTIONS: usize = 12;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the ProduceRequests librdkafka sent and the merges it made.
#[derive(Clone, Default)]
struct ProduceRequests {
    sent: Arc<AtomicUsize>,
    merged: Arc<AtomicUsize>,
    carried: Arc<AtomicUsize>,
}

impl ClientContext for ProduceRequests {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "SEND" && log_message.contains("Sent ProduceRequest") {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        // "Merged 16 ProduceRequests (2 topic(s), 1234 bytes) into one"
        if fac == "PRODUCE" {
            if let Some(count) = log_message
                .split("Merged ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                self.merged.fetch_add(1, Ordering::Relaxed);
                self.carried.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

impl ProducerContext for ProduceRequests {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
    for topic in TOPICS {
        mock.create_topic(topic, PARTITIONS, 1).expect("mock topic");
    }
    mock
}

fn merging_producer(bootstrap: &str, context: ProduceRequests) -> BaseProducer<ProduceRequests> {
    let producer: BaseProducer<ProduceRequests> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "produce-merge")
        .set("enable.idempotence", "true")
        .set("produce.request.max.partitions", "64")
        // Held until the commit's flush, so that every partition's batch
        // is ready in the same pass of the broker thread.
        .set("linger.ms", "1000")
        .set("debug", "protocol")
        // rust-rdkafka passes on only the levels the `log` crate enables,
        // none in a test without a logger.
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(context)
        .expect("producer");
    producer
        .init_transactions(CALL_TIMEOUT)
        .expect("init_transactions");
    producer
}

/// A mock cluster with both topics and a merging producer counted by its
/// own log lines.
fn merging_setup() -> (
    MockCluster<'static, DefaultProducerContext>,
    String,
    ProduceRequests,
    BaseProducer<ProduceRequests>,
) {
    let mock = mock_cluster();
    let bootstrap = mock.bootstrap_servers();
    let counts = ProduceRequests::default();
    let producer = merging_producer(&bootstrap, counts.clone());
    (mock, bootstrap, counts, producer)
}

/// One record per partition of both topics per transaction; the payload
/// names the transaction, so a record doubled or lost shows.
fn produce_transactions(producer: &BaseProducer<ProduceRequests>) {
    for txn in 0..TRANSACTIONS {
        producer.begin_transaction().expect("begin_transaction");
        for topic in TOPICS {
            for partition in 0..PARTITIONS {
                let payload = format!("{txn}");
                let key = format!("{topic}/{partition}");
                producer
                    .send(
                        BaseRecord::to(topic)
                            .partition(partition)
                            .key(&key)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
        }
        commit_retrying(producer);
    }
}

/// Commits, retrying what librdkafka says may be retried (an injected
/// error can reach the commit's own requests too).
fn commit_retrying(producer: &BaseProducer<ProduceRequests>) {
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        match producer.commit_transaction(CALL_TIMEOUT) {
            Ok(()) => return,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                continue
            }
            Err(e) => panic!("commit_transaction: {e}"),
        }
    }
}

/// Every committed record, by topic and partition, in offset order.
fn read_committed(bootstrap: &str) -> BTreeMap<(String, i32), Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "produce-merge-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in TOPICS {
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
                .expect("assignment");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let expected = TOPICS.len() * PARTITIONS as usize * TRANSACTIONS;
    let mut records: BTreeMap<(String, i32), Vec<String>> = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + CALL_TIMEOUT;
    // A few polls past the expected count, so that a doubled record shows.
    let mut quiet_polls = 0;
    while Instant::now() < deadline && quiet_polls < 10 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
                records
                    .entry((message.topic().to_string(), message.partition()))
                    .or_default()
                    .push(payload.into_owned());
                read += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None if read >= expected => quiet_polls += 1,
            None => {}
        }
    }
    records
}

fn assert_each_record_once_in_order(records: &BTreeMap<(String, i32), Vec<String>>) {
    let in_order: Vec<String> = (0..TRANSACTIONS).map(|txn| txn.to_string()).collect();
    for topic in TOPICS {
        for partition in 0..PARTITIONS {
            let got = records
                .get(&(topic.to_string(), partition))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                got, in_order,
                "{topic} [{partition}]: the transactions' records, each once and in order"
            );
        }
    }
}

#[test]
fn a_transaction_over_many_partitions_goes_out_in_merged_requests_and_arrives_whole() {
    let (_mock, bootstrap, counts, producer) = merging_setup();
    produce_transactions(&producer);

    let sent = counts.sent.load(Ordering::Relaxed);
    let merged = counts.merged.load(Ordering::Relaxed);
    let carried = counts.carried.load(Ordering::Relaxed);
    let batches = TOPICS.len() * PARTITIONS as usize * TRANSACTIONS;
    println!(
        "{batches} partition batches in {sent} ProduceRequests ({merged} merged, carrying {carried})"
    );
    // Unpatched (or with merging off) each batch is a request of its own.
    assert!(
        sent <= batches / 4,
        "{batches} partition batches went out in {sent} ProduceRequests; merged, \
         one transaction's {} batches should need one or two",
        TOPICS.len() * PARTITIONS as usize
    );
    assert!(merged > 0 && carried > merged);
    assert_each_record_once_in_order(&read_committed(&bootstrap));
}

#[test]
fn an_error_on_a_merged_request_reaches_each_partition_and_nothing_is_lost_or_doubled() {
    let (mock, bootstrap, counts, producer) = merging_setup();
    // Retriable errors for the next ProduceRequests: the mock answers every
    // partition of a request with the request's error, so each carried
    // partition must see it, retry on its own, and keep its sequence.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    produce_transactions(&producer);

    let merged = counts.merged.load(Ordering::Relaxed);
    let sent = counts.sent.load(Ordering::Relaxed);
    println!("{sent} ProduceRequests sent, {merged} merged");
    assert!(merged > 0, "no request was merged");
    assert_each_record_once_in_order(&read_committed(&bootstrap));
}
