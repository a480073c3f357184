//! Retention against the real single-broker cluster: entries evicted from a
//! store with retention leave tombstones in its changelog, and a restore
//! through the engine's changelog reader (`RdKafkaPort::restore`) honours
//! them: nothing evicted comes back, and the restored store evicts what the
//! live one would.

use std::time::Duration;

use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, RdKafkaPort, TopicSpec};
use engine::port::KafkaPort;
use engine::store::{ChangelogStore, Store};
use engine::PartitionId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use tradeflow_tests::{unique_topic, KafkaCluster};

/// A value finished from the event time it carries when positive.
fn finished_at(value: &i64) -> Option<i64> {
    (*value > 0).then_some(*value)
}

/// Sends what a commit of `store` writes to `changelog` partition 0.
fn commit(
    store: &mut Store<u64, i64>,
    producer: &ThreadedProducer<DefaultProducerContext>,
    changelog: &str,
) -> anyhow::Result<usize> {
    let mut records = Vec::new();
    store.write_dirty(&mut |k, v| records.push((k.to_vec(), v.map(<[u8]>::to_vec))));
    for (key, value) in &records {
        let record = BaseRecord::<[u8], [u8]>::to(changelog)
            .partition(0)
            .key(key);
        let record = match value {
            Some(value) => record.payload(value),
            None => record,
        };
        producer
            .send(record)
            .map_err(|(e, _)| anyhow::anyhow!("sending to {changelog}: {e}"))?;
    }
    Ok(records.len())
}

#[test]
fn a_restore_after_eviction_brings_back_no_evicted_entry() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: unique_topic("retention-app"),
        guarantee: Guarantee::AtLeastOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 1,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let changelog = unique_topic("retention-changelog");
    ensure_topics(&settings, &[TopicSpec::changelog(&changelog, 1, 1)])?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("broker.address.family", "v4")
        .set("linger.ms", "1")
        .create()?;

    // 200 keys; even ones finished at event time key + 1, odd ones open.
    let mut live: Store<u64, i64> = Store::with_retention("orders", finished_at);
    for key in 0..200u64 {
        live.insert(key, if key % 2 == 0 { key as i64 + 1 } else { -1 });
    }
    assert_eq!(commit(&mut live, &producer, &changelog)?, 200);
    // Evict what finished by 100 (keys 0, 2, ..., 98), a few per call.
    let mut evicted = 0;
    loop {
        let queued = live.retention_queue_len();
        evicted += live.evict_finished(100, 8);
        if live.retention_queue_len() == queued {
            break;
        }
    }
    assert_eq!(evicted, 50);
    assert_eq!(
        commit(&mut live, &producer, &changelog)?,
        50,
        "a tombstone each"
    );
    // Open key 1 finishes later; key 3 is removed outright.
    live.insert(1, 500);
    live.remove(&3);
    commit(&mut live, &producer, &changelog)?;
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;

    let mut port = RdKafkaPort::new(&settings, &[], &Ownership::Static(Vec::new()), "unused")?;
    let mut restored: Store<u64, i64> = Store::with_retention("orders", finished_at);
    if let Some(records) = port.changelog_records(&changelog, PartitionId(0))? {
        assert_eq!(records, 252, "200 values, 50 evictions, 2 later changes");
        restored.reserve(usize::try_from(records)?);
    }
    let stats = port.restore(&changelog, PartitionId(0), &mut |k, v| restored.apply(k, v))?;
    restored.restored();
    port.close();
    assert_eq!(stats.records, 252);
    assert_eq!(restored.len(), 149, "200 less 50 evicted, less 1 removed");
    for key in (0..100u64).step_by(2).chain([3]) {
        assert_eq!(restored.get(&key), None, "key {key} came back");
    }
    assert_eq!(restored.dump(), live.dump());
    assert_eq!(restored.dirty_len(), 0, "a restore marks nothing dirty");

    // The restored store's retention queue was rebuilt from the changelog:
    // it evicts exactly what the live one does.
    // (A call may only skip stale queue entries, evicting nothing: drain
    // until the queue stops shrinking.)
    let drain = |store: &mut Store<u64, i64>| {
        let mut total = 0;
        loop {
            let queued = store.retention_queue_len();
            total += store.evict_finished(1_000, 8);
            if store.retention_queue_len() == queued {
                return total;
            }
        }
    };
    assert_eq!(drain(&mut restored), 51, "keys 100..=198 even, and key 1");
    assert_eq!(drain(&mut live), 51);
    assert_eq!(restored.dump(), live.dump());
    Ok(())
}
