//! A shard's telemetry over the simulated Kafka: what it counts and times per
//! record, how dead letters are classified, how lag is derived from committed
//! offsets and the partition's end, and what a restore reports.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use hdrhistogram::Histogram;

use codecs::TimestampNs;
use codecs::{encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, Money};
use engine::partitioner::partition_for;
use engine::sim::tally::{FundingTally, FUNDING_TOPIC};
use engine::sim::{SimCluster, SimPort};
use engine::telemetry::{ReportBody, ShardGauges, Timing, DEAD_LETTER_REASONS};
use engine::topics::changelog_topic;
use engine::{PartitionId, Shard, ShardId, Step};

const PARTITIONS: i32 = 2;
const APPLICATION: &str = "telemetry";

fn funding(event: u128, account: u64, created_at_ns: u64) -> Vec<u8> {
    let event = Event::AccountFunded(AccountFunded {
        header: EventHeader {
            event_id: EventId(event),
            created_at_ns: TimestampNs(created_at_ns),
            ..EventHeader::default()
        },
        account: AccountId(account),
        amount: Money(10),
    });
    encode_to_vec(&event).expect("a valid event encodes")
}

fn shard(
    cluster: &Rc<RefCell<SimCluster>>,
    gauges: &Arc<ShardGauges>,
) -> Shard<FundingTally, SimPort> {
    let mut port = SimPort::new(cluster.clone(), &[FUNDING_TOPIC]);
    port.grant(vec![PartitionId(0)]);
    Shard::new(
        ShardId(0),
        APPLICATION,
        FundingTally::new(),
        port,
        PARTITIONS,
    )
    .expect("one input topic fits")
    .with_gauges(Arc::clone(gauges))
    .with_timing_sample_every(1)
}

fn histogram(body: &ReportBody, timing: Timing) -> (Option<&'static str>, Histogram<u64>) {
    body.histograms
        .iter()
        .find(|(key, _)| key.timing == timing)
        .map(|(key, h)| (key.input, h.clone()))
        .expect("every timing is reported")
}

fn drain(shard: &mut Shard<FundingTally, SimPort>) -> usize {
    let mut steps = 0;
    while shard.step().expect("sim port never fails") != Step::Idle {
        steps += 1;
    }
    steps
}

#[test]
fn counters_timings_dead_letters_and_lag_follow_the_records() {
    let cluster = SimCluster::shared();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let accounts: Vec<u64> = (0..1_000u64)
        .filter(|a| partition_for(&a.to_be_bytes(), PARTITIONS) == PartitionId(0))
        .take(20)
        .collect();
    for (i, account) in accounts.iter().enumerate() {
        cluster.borrow_mut().append(
            FUNDING_TOPIC,
            PartitionId(0),
            (
                Some(account.to_be_bytes().to_vec()),
                Some(funding(i as u128 + 1, *account, now_ns - 5_000_000)),
            ),
        );
    }
    // Two poison records: no value, and a wrong magic byte.
    cluster
        .borrow_mut()
        .append(FUNDING_TOPIC, PartitionId(0), (None, None));
    cluster.borrow_mut().append(
        FUNDING_TOPIC,
        PartitionId(0),
        (None, Some(vec![9, 0, 0, 0, 1])),
    );

    let gauges = Arc::new(ShardGauges::default());
    let mut shard = shard(&cluster, &gauges);
    drain(&mut shard);
    assert!(
        gauges.read().assigned,
        "the assignment is visible to other threads"
    );

    // Before a commit, lag counts from where processing resumed.
    let before = shard.report();
    assert_eq!(before.lag.len(), 1);
    assert_eq!(before.lag[0].lag(), 22);
    assert_eq!(before.body.counters.records_in, 22);
    assert_eq!(before.body.counters.dead_lettered, 2);
    let (input, process) = histogram(&before.body, Timing::Process);
    assert_eq!(
        input,
        Some(FUNDING_TOPIC),
        "per-record timings name their input"
    );
    assert_eq!(process.len(), 22, "every record is timed, poison too");
    let (_, end_to_end) = histogram(&before.body, Timing::EndToEnd);
    assert_eq!(end_to_end.len(), 20, "decoded events only");
    assert!(
        end_to_end.min() >= 5_000_000,
        "created 5 ms before processing"
    );
    let reason = |code: &str| {
        DEAD_LETTER_REASONS
            .iter()
            .position(|r| *r == code)
            .expect("a known reason")
    };
    assert_eq!(before.body.dead_letters[0][reason("missing_value")], 1);
    assert_eq!(before.body.dead_letters[0][reason("wrong_magic")], 1);
    let tallies = before
        .stores
        .iter()
        .find(|s| s.store == "tallies")
        .expect("the stage's store is reported");
    assert_eq!(tallies.entries, 20);
    assert!(tallies.bytes > 0);

    shard.commit().expect("sim commit");
    let after = shard.report();
    assert_eq!(after.lag[0].lag(), 0, "drained and committed");
    assert_eq!(after.body.counters.records_in, 0, "reports carry deltas");
    assert_eq!(after.body.counters.commits, 1);
    let (input, commits) = histogram(&after.body, Timing::Commit);
    assert_eq!(input, None, "commits are per shard");
    assert_eq!(commits.len(), 1);
}

#[test]
fn a_restore_is_counted_live_and_timed() {
    let cluster = SimCluster::shared();
    let changelog = changelog_topic(APPLICATION, "tallies");
    for key in 0..50u64 {
        cluster.borrow_mut().append(
            &changelog,
            PartitionId(0),
            (Some(key.to_be_bytes().to_vec()), Some(vec![0; 24])),
        );
    }
    let gauges = Arc::new(ShardGauges::default());
    let mut shard = shard(&cluster, &gauges);
    assert_eq!(shard.step().expect("assign"), Step::Rebalanced);
    let live = gauges.read();
    assert_eq!(live.restored_records, 50);
    assert_eq!(live.restored_bytes, 50 * (8 + 24));
    assert_eq!(live.restoring, 0, "finished");
    let report = shard.report();
    assert_eq!(report.body.counters.restores, 1);
    assert_eq!(report.body.counters.restored_records, 50);
    let (_, restore) = histogram(&report.body, Timing::Restore);
    assert_eq!(restore.len(), 1);
}
