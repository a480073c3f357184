//! Proves the single-broker cluster the suite runs against is a real Kafka:
//! topics are created through the Admin API, keyed records land on one partition
//! per key, and every produced record comes back from a consumer.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use tradeflow_tests::{consume_all, unique_topic, KafkaCluster};

#[test]
fn admin_creates_a_topic_the_broker_reports_in_its_metadata() -> anyhow::Result<()> {
    let cluster = KafkaCluster::single()?;
    let topic = unique_topic("metadata");
    cluster.create_topic(&topic, 4, 1, &[("cleanup.policy", "compact")])?;

    let consumer: BaseConsumer = cluster.client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    println!(
        "broker metadata: {} broker(s) {:?}, topic {} with {} partition(s), leaders {:?}",
        metadata.brokers().len(),
        metadata
            .brokers()
            .iter()
            .map(|b| format!("{}@{}:{}", b.id(), b.host(), b.port()))
            .collect::<Vec<_>>(),
        topic,
        metadata.topics()[0].partitions().len(),
        cluster.partition_leaders(&topic)?,
    );
    assert_eq!(metadata.brokers().len(), 1);
    let reported = &metadata.topics()[0];
    assert_eq!(reported.name(), topic);
    assert!(reported.error().is_none(), "{:?}", reported.error());
    assert_eq!(reported.partitions().len(), 4);
    Ok(())
}

#[test]
fn keyed_records_round_trip_and_each_key_stays_on_one_partition() -> anyhow::Result<()> {
    const RECORDS: usize = 2_000;
    const KEYS: usize = 37;
    let cluster = KafkaCluster::single()?;
    let topic = unique_topic("keyed");
    cluster.create_topic(&topic, 4, 1, &[])?;

    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()?;
    for i in 0..RECORDS {
        let key = format!("account-{}", i % KEYS);
        let value = format!("record-{i}");
        producer
            .send(BaseRecord::to(&topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)?;
    }
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;

    let records = consume_all(&cluster, &topic, RECORDS, Duration::from_secs(60))?;
    assert_eq!(
        records.len(),
        RECORDS,
        "every produced record is consumed once"
    );

    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut seen = vec![false; RECORDS];
    for record in &records {
        let owner = *partition_of_key
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(
            owner,
            record.partition,
            "key {:?} moved partitions",
            String::from_utf8_lossy(&record.key)
        );
        let index: usize = String::from_utf8_lossy(&record.value)
            .trim_start_matches("record-")
            .parse()?;
        assert!(!seen[index], "record {index} delivered twice");
        seen[index] = true;
    }
    let partitions_used: std::collections::HashSet<_> = partition_of_key.values().collect();
    println!(
        "{} records over {} keys landed on partitions {:?}",
        records.len(),
        partition_of_key.len(),
        partitions_used
    );
    assert_eq!(partition_of_key.len(), KEYS);
    assert!(partitions_used.len() > 1, "keys spread over partitions");
    Ok(())
}
