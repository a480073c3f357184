//! Fault tests against the three-broker cluster (replication 3,
//! `min.insync.replicas=2`): an acknowledged record survives the loss of the
//! partition leader. Tests in this file kill brokers, so they run one at a time.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tradeflow_tests::{consume_all, unique_topic, KafkaCluster};

/// Broker kills must not overlap between tests of this binary.
static ONE_FAULT_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Reports each record's fate (its index, acknowledged or not) to the test thread.
struct AckTracker(mpsc::Sender<(usize, bool)>);

impl ClientContext for AckTracker {}
impl ProducerContext for AckTracker {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Self::DeliveryOpaque) {
        let _ = self.0.send((*index, result.is_ok()));
    }
}

/// Restarts a killed node even when the test fails, so later tests find 3 brokers.
struct RestartOnDrop<'a> {
    cluster: &'a KafkaCluster,
    node: Option<usize>,
}

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(e) = self.cluster.start(node) {
                eprintln!("could not restart node {node}: {e}");
            }
        }
    }
}

#[test]
fn acks_all_records_survive_a_leader_kill_and_restart() -> anyhow::Result<()> {
    const PER_PHASE: usize = 1_500;
    let _serial = ONE_FAULT_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let cluster = KafkaCluster::three()?;
    let topic = unique_topic("durable");
    cluster.create_topic(&topic, 3, 3, &[("min.insync.replicas", "2")])?;

    let metadata_reader: BaseConsumer = cluster.client_config().create()?;
    let metadata = metadata_reader.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    println!(
        "three-broker cluster: {} brokers, topic {} partitions/replicas {:?}",
        metadata.brokers().len(),
        topic,
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(metadata.brokers().len(), 3);

    let (acks_tx, acks_rx) = mpsc::channel();
    let producer: ThreadedProducer<AckTracker> = cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("delivery.timeout.ms", "120000")
        .create_with_context(AckTracker(acks_tx))?;
    let send = |range: std::ops::Range<usize>| -> anyhow::Result<()> {
        for i in range {
            let key = format!("k{}", i % 64);
            let value = i.to_string();
            let mut record = BaseRecord::with_opaque_to(&topic, Box::new(i))
                .key(&key)
                .payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        // Queue full while the cluster fails over: wait and resend.
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "send failed: {e}"
                        );
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    };

    send(0..PER_PHASE)?;
    let leader = cluster
        .partition_leaders(&topic)?
        .into_iter()
        .find(|(partition, _)| *partition == 0)
        .map(|(_, leader)| leader)
        .ok_or_else(|| anyhow::anyhow!("partition 0 has no leader"))?;
    let node = usize::try_from(leader)?;
    cluster.kill(node)?;
    let mut guard = RestartOnDrop {
        cluster: &cluster,
        node: Some(node),
    };
    println!("killed node {node}, the leader of partition 0, with {PER_PHASE} records sent");

    send(PER_PHASE..2 * PER_PHASE)?;
    let restart_started = Instant::now();
    cluster.start(node)?;
    guard.node = None;
    println!("node {node} restarted in {:?}", restart_started.elapsed());

    send(2 * PER_PHASE..3 * PER_PHASE)?;
    tradeflow_tests::flush(&producer, Duration::from_secs(120))?;

    let total = 3 * PER_PHASE;
    let mut acked = HashSet::new();
    let mut failed = 0;
    while let Ok((index, ok)) = acks_rx.try_recv() {
        if ok {
            acked.insert(index);
        } else {
            failed += 1;
        }
    }
    println!(
        "{} of {total} records acknowledged, {failed} failed",
        acked.len()
    );
    assert_eq!(
        acked.len() + failed,
        total,
        "every send got a delivery report"
    );
    assert_eq!(
        failed, 0,
        "with 2 of 3 replicas in sync no send should fail"
    );

    let records = consume_all(&cluster, &topic, total, Duration::from_secs(90))?;
    let mut consumed = HashSet::new();
    for record in &records {
        let index: usize = String::from_utf8_lossy(&record.value).parse()?;
        assert!(
            consumed.insert(index),
            "record {index} appears twice (idempotence broken)"
        );
    }
    let lost: Vec<_> = acked.difference(&consumed).take(10).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?} ...");
    println!(
        "all {} acknowledged records read back after the leader kill",
        acked.len()
    );
    Ok(())
}
