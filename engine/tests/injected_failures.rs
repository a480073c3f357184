//! Transaction failures injected with librdkafka's mock cluster: a
//! transaction end that fails fatally (fenced) makes the shard drop its
//! producer, rewind to the committed offsets, restore its state from the
//! changelog, and start over with a new producer that re-runs
//! `init_transactions` — the recovery the KIP-890-less librdkafka needs
//! (Jepsen); an offset send that fails abortably is rolled back in memory
//! with the same clients (before-images put back, inputs rewound, no
//! restore). Afterwards every input is applied once and output once to a
//! `read_committed` reader.
//!
//! The mock is fine here because nothing depends on it reporting committed
//! offsets: a restarted shard that rereads from the start skips what its
//! restored state already holds.
//!
//! What this test cannot judge on the mock is whether the failed transactions'
//! outputs stay invisible: librdkafka's mock hands out a new producer id on
//! InitProducerId without aborting the previous one's open transaction
//! (`rdkafka_mock_handlers.c`, `rd_kafka_mock_handle_InitProducerId`), where
//! Kafka aborts it, and runs here showed 0 to ~1 500 extra committed outputs.
//! The count is printed, not asserted; exactly-once outputs across restarts
//! are asserted against real brokers (services/tests/faults.rs: kill -9 three
//! times, 0 duplicates; tests/tests/engine_shards.rs: a rebalance mid-stream).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use codecs::{encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, Money};
use engine::kafka::{Guarantee, KafkaSettings, Ownership};
use engine::runtime::{Engine, ShardPlan};
use engine::sim::tally::{FundingTally, Tally};
use engine::store::StoreValue;
use engine::topics::changelog_topic;
use engine::{PartitionId, ShardId};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

const INPUT: &str = "mock.account.funded";
const ECHO: &str = "mock.account.funded.echo";
const APPLICATION: &str = "mock-app";
const PARTITIONS: i32 = 2;
const FUNDINGS: u64 = 1_500;
const WAIT: Duration = Duration::from_secs(120);

fn fund(bootstrap: &str) -> Result<BTreeMap<u64, (i64, u64)>, Box<dyn std::error::Error>> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut reference = BTreeMap::new();
    for i in 0..FUNDINGS {
        let account = i % 50;
        let event = Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: EventId(u128::from(i) + 1),
                ..EventHeader::default()
            },
            account: AccountId(account),
            amount: Money(10),
        });
        producer
            .send(
                BaseRecord::to(INPUT)
                    .key(&account.to_be_bytes()[..])
                    .payload(&encode_to_vec(&event)?),
            )
            .map_err(|(e, _)| e)?;
        let entry: &mut (i64, u64) = reference.entry(account).or_default();
        entry.0 += 10;
        entry.1 += 1;
    }
    // Not `flush`: rdkafka 0.39's polls in 100 ms slices. The producer's own
    // thread serves the delivery reports; wait for them to be in.
    let started = Instant::now();
    while producer.in_flight_count() > 0 {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("records still unacknowledged after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(reference)
}

fn tallies(engine: &Engine) -> BTreeMap<u64, (i64, u64)> {
    let mut out = BTreeMap::new();
    for (_, dump) in engine.dump(Duration::from_secs(10)).unwrap_or_default() {
        for (_, entries) in dump {
            for (key, value) in entries {
                let (Ok(key), Ok(tally)) =
                    (<[u8; 8]>::try_from(key.as_slice()), Tally::decode(&value))
                else {
                    continue;
                };
                out.insert(u64::from_be_bytes(key), (tally.sum, tally.count));
            }
        }
    }
    out
}

fn committed_echoes(bootstrap: &str) -> Result<Vec<EventId>, Box<dyn std::error::Error>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "echo-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(ECHO, p, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let mut ids = Vec::new();
    let mut at_end = BTreeSet::new();
    let started = Instant::now();
    while at_end.len() < PARTITIONS as usize && started.elapsed() < Duration::from_secs(30) {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                ids.push(
                    codecs::decode(payload)
                        .map_err(|e| e.to_string())?
                        .event_id(),
                );
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            _ => {}
        }
    }
    Ok(ids)
}

/// The tally shard over both partitions, exactly-once, on the mock.
fn start_engine(bootstrap: &str) -> Result<Engine, Box<dyn std::error::Error>> {
    let settings = KafkaSettings {
        bootstrap: bootstrap.to_string(),
        application_id: APPLICATION.into(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: Vec::new(),
        linger_ms: 1,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let knobs = tuning::NodeKnobs::new(
        tuning::RuntimeKnobs {
            idle: tuning::IdleStrategy::Park { park_us: 1_000 },
            client_threads: tuning::ClientThreads::Unpinned,
        },
        tuning::CommitPolicy {
            interval_ms: 50,
            on_drain: false,
            timing: tuning::CommitTiming::Interval,
            guarantee: Guarantee::ExactlyOnce,
            ..tuning::CommitPolicy::default()
        },
        tuning::RetryPolicy {
            attempts_max: 10,
            ..tuning::RetryPolicy::default()
        },
        tuning::StateSection::default(),
    )?;
    let plan = ShardPlan {
        shard: ShardId(0),
        core: None,
        ownership: Ownership::Static(vec![PartitionId(0), PartitionId(1)]),
        transactional_id: format!("{APPLICATION}-mock-0"),
    };
    Ok(Engine::start(
        settings,
        vec![plan],
        knobs,
        PARTITIONS,
        |_| FundingTally::echoing(INPUT, ECHO),
    )?)
}

#[test]
fn failed_transactions_restart_the_shard_and_lose_or_double_nothing(
) -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockCluster::new(1)?;
    let bootstrap = mock.bootstrap_servers();
    for topic in [
        INPUT.to_string(),
        ECHO.to_string(),
        format!("{INPUT}.dlq"),
        changelog_topic(APPLICATION, "tallies"),
    ] {
        mock.create_topic(&topic, PARTITIONS, 1)?;
    }
    let reference = fund(&bootstrap)?;

    // The first transaction end is fenced (fatal for the producer: a
    // restart), a later offset commit inside a transaction fails abortably
    // and an offset send is refused (a roll-back, or a restart if the
    // producer cannot abort): never a half-applied commit.
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH],
    );
    mock.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::AddOffsetsToTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE,
        ],
    );

    let engine = start_engine(&bootstrap)?;

    let started = Instant::now();
    while tallies(&engine) != reference {
        assert!(
            started.elapsed() < WAIT,
            "state never converged; restarts {:?}, statuses {:?}",
            engine.restarts(),
            engine.statuses()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarts: u32 = engine.restarts().iter().map(|(_, r)| r).sum();
    let rollbacks: u64 = engine
        .stats(Duration::from_secs(10))?
        .iter()
        .map(|(_, stats, _)| stats.rollbacks)
        .sum();
    engine.shutdown()?;

    let ids = committed_echoes(&bootstrap)?;
    let distinct: BTreeSet<_> = ids.iter().collect();
    println!(
        "{FUNDINGS} fundings, {restarts} shard restarts and {rollbacks} roll-backs after \
         injected failures, {} committed outputs ({} distinct)",
        ids.len(),
        distinct.len()
    );
    assert!(
        restarts >= 1,
        "the fenced transaction end restarted the shard"
    );
    assert_eq!(
        distinct.len() as u64,
        FUNDINGS,
        "every funding output at least once"
    );
    if ids.len() > distinct.len() {
        println!(
            "note: {} outputs of failed transactions look committed on the mock (see the module doc)",
            ids.len() - distinct.len()
        );
    }
    Ok(())
}

/// An offset commit inside the transaction refused with ILLEGAL_GENERATION
/// makes the transaction abortable (librdkafka: a permanent TxnOffsetCommit
/// error) but leaves the producer sound: the shard rolls back in memory with
/// the same clients, never restarts, restores nothing more, and applies
/// every input once.
#[test]
fn an_abortable_offset_commit_is_rolled_back_without_a_restart(
) -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockCluster::new(1)?;
    let bootstrap = mock.bootstrap_servers();
    for topic in [
        INPUT.to_string(),
        ECHO.to_string(),
        format!("{INPUT}.dlq"),
        changelog_topic(APPLICATION, "tallies"),
    ] {
        mock.create_topic(&topic, PARTITIONS, 1)?;
    }
    let reference = fund(&bootstrap)?;
    mock.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let engine = start_engine(&bootstrap)?;
    let started = Instant::now();
    // The state in memory converges before the first commit fails; wait
    // for the roll-back and a commit after it too.
    let stats = loop {
        let (_, stats, _) = engine.stats(Duration::from_secs(10))?.remove(0);
        if stats.rollbacks >= 1 && stats.commits >= 1 && tallies(&engine) == reference {
            break stats;
        }
        assert!(
            started.elapsed() < WAIT,
            "no roll-back and commit with the state converged: {stats:?}; restarts {:?}, \
             statuses {:?}",
            engine.restarts(),
            engine.statuses()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let restarts: u32 = engine.restarts().iter().map(|(_, r)| r).sum();
    engine.shutdown()?;
    let ids = committed_echoes(&bootstrap)?;
    let distinct: BTreeSet<_> = ids.iter().collect();
    println!(
        "{FUNDINGS} fundings: {} roll-backs, {restarts} restarts, {} restores; {} committed \
         outputs ({} distinct)",
        stats.rollbacks,
        stats.restores,
        ids.len(),
        distinct.len()
    );
    assert!(
        stats.rollbacks >= 1,
        "the refused offset commit was rolled back"
    );
    assert_eq!(restarts, 0, "a roll-back, not a restart");
    assert_eq!(
        stats.restores, PARTITIONS as u64,
        "no restore after the first"
    );
    assert_eq!(distinct.len() as u64, FUNDINGS, "every funding output");
    // Not asserted here: librdkafka's mock answers every fetch with no
    // aborted transactions (`rdkafka_mock_handlers.c`, "#Aborted" is always
    // 0), so a read_committed reader sees the aborted transaction's records.
    // tests/tests/abort_without_restore.rs asserts it on the real broker.
    if ids.len() > distinct.len() {
        println!(
            "note: {} outputs of the aborted transaction are visible on the mock",
            ids.len() - distinct.len()
        );
    }
    Ok(())
}
