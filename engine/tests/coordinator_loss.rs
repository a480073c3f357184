//! The guard for the librdkafka patch in vendor/rdkafka-sys (PATCHED.md):
//! `send_offsets_to_transaction` must come back when the group
//! coordinator's broker goes away, by finding the new coordinator or by
//! failing within its timeout. Unpatched librdkafka 2.12.1 never re-checks a
//! coordinator request that waits for a broker that never comes back, so
//! this call blocked the shard forever (upstream issues #5456, #5511; the
//! broker-kill fault test in services/tests/faults.rs hung on it).
//!
//! librdkafka's mock cluster is the right tool here: it can stop one broker
//! and move a coordinator on command, which a real cluster only does after
//! its session timeouts. The bounds are ten times what the patched library
//! takes, so a slow machine does not fail them.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TRANSACTION_COORDINATOR: i32 = 1;
const GROUP_COORDINATOR: i32 = 2;
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A producer inside its second transaction with one record acknowledged,
/// and a consumer of the group `id` for its group metadata; the group coordinator is
/// broker 2 and the transaction coordinator broker 1 of three.
fn open_transaction(
    mock: &MockCluster<'_, DefaultProducerContext>,
    id: &str,
) -> (BaseProducer, BaseConsumer) {
    mock.create_topic("in", 1, 3).expect("mock topic");
    mock.create_topic("out", 1, 3).expect("mock topic");
    mock.coordinator(
        MockCoordinator::Transaction(id.into()),
        TRANSACTION_COORDINATOR,
    )
    .expect("transaction coordinator");
    mock.coordinator(MockCoordinator::Group(id.into()), GROUP_COORDINATOR)
        .expect("group coordinator");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("transactional.id", id)
        .create()
        .expect("producer");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", id)
        .create()
        .expect("consumer");
    producer
        .init_transactions(Duration::from_secs(10))
        .expect("init_transactions");
    // A first transaction with offsets, so the producer has the group
    // coordinator in its cache, as a running shard does when a broker dies.
    let timeout = Duration::from_secs(10);
    producer.begin_transaction().expect("begin_transaction");
    producer
        .send_offsets_to_transaction(
            &input_offsets(),
            &consumer.group_metadata().expect("group metadata"),
            timeout,
        )
        .expect("first send_offsets_to_transaction");
    producer.commit_transaction(timeout).expect("first commit");
    producer.begin_transaction().expect("begin_transaction");
    producer
        .send(BaseRecord::to("out").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("send");
    // Not `Producer::flush`: rdkafka 0.39's polls in 100 ms slices (see
    // `records::flush`).
    records::flush(&producer, timeout).expect("flush");
    (producer, consumer)
}

fn input_offsets() -> TopicPartitionList {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("in", 0, Offset::Offset(5))
        .expect("offset");
    offsets
}

#[test]
fn send_offsets_fails_within_its_timeout_when_the_group_coordinator_is_gone() {
    let mock = MockCluster::new(3).expect("mock cluster");
    let (producer, consumer) = open_transaction(&mock, "coordinator-gone");
    mock.broker_down(GROUP_COORDINATOR).expect("broker down");

    let started = Instant::now();
    let result = producer.send_offsets_to_transaction(
        &input_offsets(),
        &consumer.group_metadata().expect("group metadata"),
        CALL_TIMEOUT,
    );
    let took = started.elapsed();
    println!("send_offsets_to_transaction came back after {took:?}: {result:?}");
    assert!(
        result.is_err(),
        "no coordinator, yet the offsets were committed"
    );
    assert!(
        took < CALL_TIMEOUT * 10,
        "send_offsets_to_transaction took {took:?} for a {CALL_TIMEOUT:?} timeout"
    );
    // The error leaves the transaction abortable, not the producer dead:
    // the shard aborts and carries on with the same producer.
    producer
        .abort_transaction(Duration::from_secs(10))
        .expect("abort after the failed send_offsets");
}

#[test]
fn send_offsets_finds_the_new_group_coordinator_when_the_old_one_is_gone() {
    let mock = MockCluster::new(3).expect("mock cluster");
    let (producer, consumer) = open_transaction(&mock, "coordinator-moved");
    mock.broker_down(GROUP_COORDINATOR).expect("broker down");
    mock.coordinator(MockCoordinator::Group("coordinator-moved".into()), 3)
        .expect("move the group coordinator");

    let started = Instant::now();
    let timeout = Duration::from_secs(10);
    let result = producer.send_offsets_to_transaction(
        &input_offsets(),
        &consumer.group_metadata().expect("group metadata"),
        timeout,
    );
    let took = started.elapsed();
    println!("send_offsets_to_transaction came back after {took:?}: {result:?}");
    result.expect("the offsets go to the new coordinator");
    producer
        .commit_transaction(timeout)
        .expect("commit after the coordinator moved");
}
