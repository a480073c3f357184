//! Input order across co-partitioned topics, on the real single broker: a
//! shard hands its stage the records of partition N of its input topics in
//! timestamp order, whatever order the consumer fetched them in (Kafka
//! Streams' timestamp synchronization; `engine::kafka::input_order`).
//!
//! The backlog is written before the engine starts, the late topic first:
//! 200 records with later timestamps on `late`, then 200 with earlier ones on
//! `early`. The engine fetches both backlogs together, and librdkafka queues
//! them partition by partition in its fetch response's order. The stage
//! notes, per partition, every record handed over with a timestamp older
//! than one handed over before it: there must be none, and every record
//! must be handed over exactly once.

use std::time::{Duration, Instant};

use codecs::{
    encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, EventRef, Money,
};
use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, TopicSpec};
use engine::runtime::{Engine, ShardPlan};
use engine::sim::tally::{Tally, TallyState};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::StoreValue;
use engine::topics::changelog_topic;
use engine::{PartitionId, ShardId};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use tradeflow_tests::{unique_topic, KafkaCluster};

const PARTITIONS: i32 = 2;
const PER_TOPIC: u64 = 200;
const WAIT: Duration = Duration::from_secs(90);
/// The late topic's records are this much younger than the early one's.
const LATE_BY_MS: i64 = 60_000;

/// Per partition (the store key), in a `Tally`: `count` records handed over,
/// `last_offset` the newest timestamp handed over so far, `sum` the records
/// handed over older than that.
struct ArrivalLog {
    topics: [&'static str; 2],
}

impl Stage for ArrivalLog {
    type State = TallyState;

    fn name(&self) -> &'static str {
        "arrivals"
    }

    fn input_topics(&self) -> &[&'static str] {
        &self.topics
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        _event: EventRef<'_>,
        state: &mut TallyState,
        _out: &mut Outbox,
    ) -> Result<(), Rejection> {
        let log = state
            .tallies
            .upsert_with(u64::from(input.partition.0.unsigned_abs()), || Tally {
                last_offset: i64::MIN,
                ..Tally::default()
            });
        log.count += 1;
        if input.timestamp_ms < log.last_offset {
            log.sum += 1;
        }
        log.last_offset = log.last_offset.max(input.timestamp_ms);
        Ok(())
    }
}

fn write(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    first_event: u64,
    base_ms: i64,
) -> anyhow::Result<()> {
    for i in 0..PER_TOPIC {
        let account = i % 16;
        let event = Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: EventId(u128::from(first_event + i)),
                ..EventHeader::default()
            },
            account: AccountId(account),
            amount: Money(1),
        });
        let payload = encode_to_vec(&event)?;
        producer
            .send(
                BaseRecord::to(topic)
                    .partition((i % PARTITIONS as u64) as i32)
                    .key(&account.to_be_bytes()[..])
                    .payload(&payload)
                    .timestamp(base_ms + i as i64),
            )
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

fn logs(engine: &Engine) -> anyhow::Result<Vec<(u64, Tally)>> {
    let mut out = Vec::new();
    for (_, dump) in engine.dump(Duration::from_secs(10))? {
        for (_, entries) in dump {
            for (key, value) in entries {
                let partition = u64::from_be_bytes(key.as_slice().try_into()?);
                out.push((
                    partition,
                    Tally::decode(&value).map_err(anyhow::Error::msg)?,
                ));
            }
        }
    }
    Ok(out)
}

#[test]
fn a_backlog_of_two_co_partitioned_topics_is_handed_over_in_timestamp_order() -> anyhow::Result<()>
{
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let late: &'static str = Box::leak(unique_topic("order-late").into_boxed_str());
    let early: &'static str = Box::leak(format!("{late}.early").into_boxed_str());
    let application_id = unique_topic("input-order-app");
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 1,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    ensure_topics(
        &settings,
        &[
            TopicSpec::stream(late, PARTITIONS, 1),
            TopicSpec::stream(early, PARTITIONS, 1),
            TopicSpec::stream(format!("{late}.dlq"), PARTITIONS, 1),
            TopicSpec::changelog(changelog_topic(&application_id, "tallies"), PARTITIONS, 1),
        ],
    )?;
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // The late topic is written (and appended) first.
    write(&producer, late, 1, now_ms)?;
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;
    write(&producer, early, 1 + PER_TOPIC, now_ms - LATE_BY_MS)?;
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;

    let knobs = tradeflow_tests::TestKnobs {
        attempts_max: tuning::RetryPolicy::default().attempts_max,
        ..tradeflow_tests::TestKnobs::default()
    }
    .validated()?;
    let plan = ShardPlan {
        shard: ShardId(0),
        core: None,
        ownership: Ownership::Static((0..PARTITIONS).map(PartitionId).collect()),
        transactional_id: format!("{application_id}-0"),
    };
    let engine = Engine::start(settings, vec![plan], knobs, PARTITIONS, move |_| {
        ArrivalLog {
            topics: [late, early],
        }
    })?;
    let started = Instant::now();
    let logs = loop {
        let logs = logs(&engine)?;
        if logs.iter().map(|(_, log)| log.count).sum::<u64>() >= 2 * PER_TOPIC {
            break logs;
        }
        if started.elapsed() > WAIT {
            let _ = engine.shutdown();
            anyhow::bail!("not every record was handed over: {logs:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stats = engine.stats(Duration::from_secs(10))?;
    engine.shutdown()?;
    let (_, stats, _) = &stats[0];
    println!(
        "per partition (count, handed over out of timestamp order): {:?}; waits {}, enforced {}",
        logs.iter()
            .map(|(p, log)| (p, log.count, log.sum))
            .collect::<Vec<_>>(),
        stats.input_order_waits,
        stats.input_order_enforced
    );
    assert_eq!(logs.len(), PARTITIONS as usize);
    for (partition, log) in &logs {
        assert_eq!(
            log.count,
            2 * PER_TOPIC / PARTITIONS as u64,
            "partition {partition}: each record once"
        );
        assert_eq!(
            log.sum, 0,
            "partition {partition}: records handed over after a younger one"
        );
    }
    Ok(())
}
