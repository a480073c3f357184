//! Abort without restore, on the real single broker: under exactly-once a
//! transaction that the broker makes abortable (a dead letter over its
//! topic's `max.message.bytes`: MESSAGE_TOO_LARGE) is rolled back in memory
//! with the same clients. The shard neither restarts nor restores (the
//! restore counters stay at one per partition), its state still equals the
//! reference, and each input's output is committed exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use codecs::{
    encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, EventRef, Money,
};
use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, TopicSpec};
use engine::runtime::{Engine, ShardPlan};
use engine::sim::tally::{FundingTally, Tally, TallyState};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::StoreValue;
use engine::topics::changelog_topic;
use engine::{PartitionId, ShardId};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use tradeflow_tests::{consume_all, unique_topic, KafkaCluster};

const PARTITIONS: i32 = 2;
const FUNDINGS: u64 = 600;
const ACCOUNTS: u64 = 40;
/// The event whose first processing dead-letters a record too large for
/// the dead-letter topic.
const POISON_EVENT: u128 = 300;
/// `max.message.bytes` of the dead-letter topic; the poisoned dead letter's
/// reason header alone is several times more.
const DLQ_MAX_MESSAGE_BYTES: usize = 1_024;
const WAIT: Duration = Duration::from_secs(90);

/// The tally stage, except that the first time it meets [`POISON_EVENT`] it
/// rejects it with a reason too long for the dead-letter topic. The stage
/// object outlives a roll-back (only a restart makes a new one), so the redo
/// applies the event normally.
struct OverSizeOnce {
    tally: FundingTally,
    poisoned: bool,
}

impl Stage for OverSizeOnce {
    type State = TallyState;

    fn name(&self) -> &'static str {
        self.tally.name()
    }

    fn input_topics(&self) -> &[&'static str] {
        self.tally.input_topics()
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut TallyState,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        if !self.poisoned && event.event_id() == EventId(POISON_EVENT) {
            self.poisoned = true;
            return Err(Rejection::user_data("x".repeat(4 * DLQ_MAX_MESSAGE_BYTES)));
        }
        self.tally.process(input, event, state, out)
    }
}

fn fund(cluster: &KafkaCluster, topic: &str) -> anyhow::Result<BTreeMap<u64, (i64, u64)>> {
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .client_config()
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    let mut reference = BTreeMap::new();
    for i in 1..=FUNDINGS {
        let account = (i * 7919) % ACCOUNTS;
        let amount = 1 + (i % 97) as i64;
        let event = Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: EventId(u128::from(i)),
                ..EventHeader::default()
            },
            account: AccountId(account),
            amount: Money(amount),
        });
        let payload = encode_to_vec(&event)?;
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&account.to_be_bytes()[..])
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
        let entry: &mut (i64, u64) = reference.entry(account).or_default();
        entry.0 += amount;
        entry.1 += 1;
    }
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;
    Ok(reference)
}

fn tallies(engine: &Engine) -> anyhow::Result<BTreeMap<u64, (i64, u64)>> {
    let mut out = BTreeMap::new();
    for (_, dump) in engine.dump(Duration::from_secs(10))? {
        for (_, entries) in dump {
            for (key, value) in entries {
                let account = u64::from_be_bytes(key.as_slice().try_into()?);
                let tally = Tally::decode(&value).map_err(anyhow::Error::msg)?;
                out.insert(account, (tally.sum, tally.count));
            }
        }
    }
    Ok(out)
}

#[test]
fn an_abortable_transaction_is_rolled_back_without_a_restart_or_a_restore() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic: &'static str = Box::leak(unique_topic("abort-no-restore").into_boxed_str());
    let echo: &'static str = Box::leak(format!("{topic}.echo").into_boxed_str());
    let application_id = unique_topic("abort-no-restore-app");
    let settings = KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.clone(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 1,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let mut dlq = TopicSpec::stream(format!("{topic}.dlq"), PARTITIONS, 1);
    dlq.config.push((
        "max.message.bytes".into(),
        DLQ_MAX_MESSAGE_BYTES.to_string(),
    ));
    ensure_topics(
        &settings,
        &[
            TopicSpec::stream(topic, PARTITIONS, 1),
            TopicSpec::changelog(changelog_topic(&application_id, "tallies"), PARTITIONS, 1),
            dlq,
            TopicSpec::stream(echo, PARTITIONS, 1),
        ],
    )?;
    let reference = fund(&cluster, topic)?;

    let knobs = tradeflow_tests::TestKnobs::default().validated()?;
    let plan = ShardPlan {
        shard: ShardId(0),
        core: None,
        ownership: Ownership::Static((0..PARTITIONS).map(PartitionId).collect()),
        transactional_id: format!("{application_id}-0"),
    };
    let engine = Engine::start(settings, vec![plan], knobs, PARTITIONS, move |_| {
        OverSizeOnce {
            tally: FundingTally::echoing(topic, echo),
            poisoned: false,
        }
    })?;
    let started = Instant::now();
    loop {
        if tallies(&engine)? == reference {
            break;
        }
        if started.elapsed() > WAIT {
            let statuses = engine.statuses();
            let restarts = engine.restarts();
            let _ = engine.shutdown();
            anyhow::bail!("state never converged: statuses {statuses:?}, restarts {restarts:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = engine.stats(Duration::from_secs(10))?;
    let restarts: u32 = engine.restarts().iter().map(|(_, r)| r).sum();
    engine.shutdown()?;
    let (_, stats, _) = &stats[0];
    println!(
        "rollbacks {}, transaction aborts {}, restores {}, restored records {}, restarts {restarts}, \
         commits {}",
        stats.rollbacks,
        stats.transaction_aborts,
        stats.restores,
        stats.restored_records,
        stats.commits
    );
    assert!(
        stats.rollbacks >= 1,
        "the oversized dead letter made a transaction abort"
    );
    assert_eq!(restarts, 0, "a roll-back, not a restart");
    assert_eq!(
        stats.restores, PARTITIONS as u64,
        "each partition restored once, at its assignment, and never again"
    );

    // Every funding's echo committed exactly once; nothing of the aborted
    // transaction is visible, the oversized dead letter included.
    let echoes = consume_all(
        &cluster,
        echo,
        FUNDINGS as usize + 1,
        Duration::from_secs(8),
    )?;
    let mut ids: Vec<EventId> = echoes
        .iter()
        .map(|r| codecs::decode(&r.value).map(|e| e.event_id()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ids.sort();
    let expected: Vec<EventId> = (1..=u128::from(FUNDINGS)).map(EventId).collect();
    assert_eq!(ids, expected, "one committed output per funding");
    let letters = consume_all(&cluster, &format!("{topic}.dlq"), 1, Duration::from_secs(2))?;
    assert!(letters.is_empty(), "no dead letter committed");
    Ok(())
}
