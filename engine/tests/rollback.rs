//! Abort without restore, on the simulated port: random interleavings of
//! process / changelog write / commit / aborted commit / revocation leave
//! every store equal to a replay of the committed inputs, with no restore
//! for a partition the shard kept. With a standby keeper beside the shard,
//! a revoked partition's stores are handed to the keeper (rolled back to the
//! last commit) and taken back on the next assignment, which then restores
//! only the changelog after where the first restore ended: the state is the
//! same replay. Both changelog layouts: a changelog per store, and one
//! shared by both stores (`[state] changelog_layout = "shared"`).
//!
//! The stage here is deliberately not idempotent (it sums, counts and
//! deletes without looking at offsets), so a before-image that is not put
//! back, or a record read twice, shows as a wrong sum.

use std::collections::BTreeMap;
use std::rc::Rc;

use codecs::{
    encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, EventRef, Money,
};
use engine::changelog::ChangelogLayout;
use engine::partitioner::partition_for;
use engine::sim::{SimCluster, SimPort};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::standby::{StandbyCopies, StandbyHandle};
use engine::store::{ChangelogStore, PartitionStores, Store};
use engine::topics::{changelog_topic, shared_changelog_topic};
use engine::{PartitionId, Shard, ShardId, Step};
use proptest::prelude::*;

const INPUT: &str = "rollback.account.funded";
const ECHO: &str = "rollback.echo";
const APPLICATION: &str = "rollback";
const PARTITIONS: i32 = 3;
const ACCOUNTS: u64 = 12;

/// One partition's state: two stores, so an abort must undo both.
struct Ledger {
    sums: Store<u64, i64>,
    counts: Store<u64, u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            sums: Store::new("sums"),
            counts: Store::new("counts"),
        }
    }
}

impl PartitionStores for Ledger {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.sums);
        f(&mut self.counts);
    }
}

/// The rule both the shard and the reference replay apply: an amount that
/// is a multiple of 5 closes the account (both entries removed); any other
/// adds to its sum and counts one more funding.
fn apply_rule(
    sums: &mut BTreeMap<u64, i64>,
    counts: &mut BTreeMap<u64, u64>,
    account: u64,
    amount: i64,
) {
    if amount % 5 == 0 {
        sums.remove(&account);
        counts.remove(&account);
    } else {
        *sums.entry(account).or_default() += amount;
        *counts.entry(account).or_default() += 1;
    }
}

#[derive(Default)]
struct LedgerStage;

impl Stage for LedgerStage {
    type State = Ledger;

    fn name(&self) -> &'static str {
        "ledger"
    }

    fn input_topics(&self) -> &[&'static str] {
        &[INPUT]
    }

    fn process(
        &mut self,
        _input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut Ledger,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        let EventRef::AccountFunded(funded) = event else {
            return Err(Rejection::user_data("account.funded only"));
        };
        let account = funded.account().0;
        let amount = funded.amount().0;
        if amount % 5 == 0 {
            state.sums.remove(&account);
            state.counts.remove(&account);
        } else {
            *state.sums.upsert_with(account, || 0) += amount;
            match state.counts.get_mut(&account) {
                Some(count) => *count += 1,
                None => state.counts.insert(account, 1),
            }
        }
        let echo = Event::AccountFunded(codecs::ToNative::to_native(funded));
        out.emit(ECHO, &account.to_be_bytes(), &echo)
            .map_err(|e| Rejection::user_data(e.to_string()))
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Appends a funding of `amount` to `account`.
    Produce {
        account: u64,
        amount: i64,
    },
    /// Polls the shard this many times.
    Step(u8),
    /// Sends the dirty entries to the changelogs inside the open transaction.
    WriteChangelogs,
    Commit,
    /// A commit that fails as an abortable transaction; the shard rolls back.
    AbortedCommit,
    /// The group takes a partition away and later gives it back.
    Move(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ACCOUNTS, 1..40i64).prop_map(|(account, amount)| Op::Produce { account, amount }),
        4 => (1..8u8).prop_map(Op::Step),
        2 => Just(Op::WriteChangelogs),
        2 => Just(Op::Commit),
        2 => Just(Op::AbortedCommit),
        1 => (0..PARTITIONS as u8).prop_map(Op::Move),
    ]
}

type Dump = BTreeMap<(PartitionId, &'static str), Vec<(Vec<u8>, Vec<u8>)>>;

/// The stores a single-threaded replay of every committed input builds.
fn replay_committed(cluster: &SimCluster, partitions: &[PartitionId]) -> Dump {
    let mut out = Dump::new();
    for &partition in partitions {
        let committed = cluster
            .committed
            .get(&(INPUT.to_string(), partition.0))
            .copied()
            .unwrap_or(0) as usize;
        let (mut sums, mut counts) = (BTreeMap::new(), BTreeMap::new());
        for (_, payload) in &cluster.log(INPUT, partition)[..committed] {
            let bytes = payload.as_deref().expect("every input has a value");
            let Ok(EventRef::AccountFunded(funded)) = codecs::decode(bytes) else {
                panic!("the test writes account.funded only");
            };
            apply_rule(
                &mut sums,
                &mut counts,
                funded.account().0,
                funded.amount().0,
            );
        }
        let entries = |map: BTreeMap<u64, Vec<u8>>| -> Vec<(Vec<u8>, Vec<u8>)> {
            map.into_iter()
                .map(|(k, v)| (k.to_be_bytes().to_vec(), v))
                .collect()
        };
        out.insert(
            (partition, "sums"),
            entries(
                sums.into_iter()
                    .map(|(k, v)| (k, v.to_le_bytes().to_vec()))
                    .collect(),
            ),
        );
        out.insert(
            (partition, "counts"),
            entries(
                counts
                    .into_iter()
                    .map(|(k, v)| (k, v.to_le_bytes().to_vec()))
                    .collect(),
            ),
        );
    }
    out
}

fn committed_inputs(cluster: &SimCluster) -> usize {
    (0..PARTITIONS)
        .map(|p| {
            cluster
                .committed
                .get(&(INPUT.to_string(), p))
                .copied()
                .unwrap_or(0) as usize
        })
        .sum()
}

/// A standby keeper with no changelog to tail: it only answers the shard's
/// takes and releases, on its own thread, until the shard is gone.
fn keeper(mut copies: StandbyCopies<Ledger>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !copies.serve().orphaned {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    })
}

fn run(ops: &[Op]) {
    run_with(ops, false, ChangelogLayout::PerStore);
}

fn run_with(ops: &[Op], standbys: bool, layout: ChangelogLayout) {
    let cluster = SimCluster::shared();
    let all: Vec<PartitionId> = (0..PARTITIONS).map(PartitionId).collect();
    let shard = Shard::new(
        ShardId(0),
        APPLICATION,
        LedgerStage,
        SimPort::new(Rc::clone(&cluster), &[INPUT]),
        PARTITIONS,
    )
    .expect("one input")
    .with_changelog_layout(layout)
    .with_undo(true);
    let (mut shard, keeping) = if standbys {
        let (handle, copies) = StandbyHandle::<Ledger>::pair(1);
        (shard.with_standbys(handle), Some(keeper(copies)))
    } else {
        (shard, None)
    };
    shard.port_mut().grant(all.clone());
    assert_eq!(shard.step().expect("assign"), Step::Rebalanced);
    let mut next_event = 1u128;
    let mut restores_expected = PARTITIONS as u64;
    for op in ops {
        match op {
            Op::Produce { account, amount } => {
                let event = Event::AccountFunded(AccountFunded {
                    header: EventHeader {
                        event_id: EventId(next_event),
                        ..EventHeader::default()
                    },
                    account: AccountId(*account),
                    amount: Money(*amount),
                });
                next_event += 1;
                let key = account.to_be_bytes();
                let bytes = encode_to_vec(&event).expect("valid event");
                cluster.borrow_mut().append(
                    INPUT,
                    partition_for(&key, PARTITIONS),
                    (Some(key.to_vec()), Some(bytes)),
                );
            }
            Op::Step(n) => {
                for _ in 0..*n {
                    shard.step().expect("step");
                }
            }
            Op::WriteChangelogs => shard.write_changelogs().expect("changelog write"),
            Op::Commit => {
                shard.commit().expect("commit");
                assert_eq!(shard.dump(), replay_committed(&cluster.borrow(), &all));
            }
            Op::AbortedCommit => {
                shard.port_mut().abort_next_commit();
                let error = shard.commit().expect_err("the commit was made to fail");
                assert!(shard.can_roll_back(&error), "{error}");
                shard.roll_back().expect("roll back");
                assert!(!shard.has_uncommitted());
                assert_eq!(shard.dump(), replay_committed(&cluster.borrow(), &all));
            }
            Op::Move(partition) => {
                let partition = PartitionId(i32::from(*partition));
                shard.port_mut().take_away(vec![partition]);
                assert_eq!(shard.step().expect("revoke"), Step::Rebalanced);
                shard.port_mut().grant(vec![partition]);
                assert_eq!(shard.step().expect("assign"), Step::Rebalanced);
                // Only the partition that moved is restored.
                restores_expected += 1;
                assert_eq!(shard.dump(), replay_committed(&cluster.borrow(), &all));
            }
        }
        assert_eq!(
            shard.stats().restores,
            restores_expected,
            "a kept partition was restored"
        );
    }
    // Whatever is left commits; the state then equals a replay of all of
    // it, and so does a fresh shard's restore from the changelogs.
    while shard.step().expect("step") != Step::Idle {}
    shard.commit().expect("final commit");
    let cluster_ref = cluster.borrow();
    let expected = replay_committed(&cluster_ref, &all);
    assert_eq!(shard.dump(), expected);
    let committed = committed_inputs(&cluster_ref);
    assert_eq!(
        committed,
        (0..PARTITIONS)
            .map(|p| cluster_ref.log(INPUT, PartitionId(p)).len())
            .sum::<usize>(),
        "every input committed"
    );
    let echoes: usize = (0..PARTITIONS)
        .map(|p| cluster_ref.log(ECHO, PartitionId(p)).len())
        .sum();
    assert_eq!(
        echoes, committed,
        "one output per committed input, none of an aborted one"
    );
    // The state went to the layout's changelogs only.
    let records = |topic: &str| -> usize {
        (0..PARTITIONS)
            .map(|p| cluster_ref.log(topic, PartitionId(p)).len())
            .sum()
    };
    let (per_store, shared) = (
        records(&changelog_topic(APPLICATION, "sums"))
            + records(&changelog_topic(APPLICATION, "counts")),
        records(&shared_changelog_topic(APPLICATION)),
    );
    match layout {
        ChangelogLayout::PerStore => assert_eq!(shared, 0),
        ChangelogLayout::Shared => assert_eq!(per_store, 0),
    }
    drop(cluster_ref);
    let mut fresh = Shard::new(
        ShardId(1),
        APPLICATION,
        LedgerStage,
        SimPort::new(Rc::clone(&cluster), &[INPUT]),
        PARTITIONS,
    )
    .expect("one input")
    .with_changelog_layout(layout);
    fresh.port_mut().grant(all);
    assert_eq!(fresh.step().expect("assign"), Step::Rebalanced);
    assert_eq!(
        fresh.dump(),
        expected,
        "the changelogs hold no aborted write"
    );
    drop(shard);
    if let Some(keeping) = keeping {
        keeping.join().expect("the keeper stops with the shard");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn aborted_transactions_leave_the_state_of_the_committed_inputs(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }

    #[test]
    fn revoked_stores_handed_to_a_standby_keeper_and_taken_back_equal_the_committed_inputs(ops in prop::collection::vec(op(), 1..120)) {
        run_with(&ops, true, ChangelogLayout::PerStore);
    }

    #[test]
    fn in_a_shared_changelog_aborted_transactions_leave_the_state_of_the_committed_inputs(ops in prop::collection::vec(op(), 1..120)) {
        run_with(&ops, false, ChangelogLayout::Shared);
    }

    #[test]
    fn in_a_shared_changelog_stores_handed_to_a_standby_keeper_and_taken_back_equal_the_committed_inputs(ops in prop::collection::vec(op(), 1..120)) {
        run_with(&ops, true, ChangelogLayout::Shared);
    }
}

/// A shared changelog record whose prefix names no store of the stage
/// fails the restore with a corrupt-changelog error: no panic, and not
/// skipped.
#[test]
fn a_shared_changelog_record_of_an_unknown_store_fails_the_restore() {
    let cluster = SimCluster::shared();
    let mut key = Vec::new();
    engine::changelog::encode_shared_key("sums", &3u64.to_be_bytes(), &mut key);
    let changelog = shared_changelog_topic(APPLICATION);
    cluster.borrow_mut().append(
        &changelog,
        PartitionId(0),
        (Some(key), Some(5i64.to_le_bytes().to_vec())),
    );
    let mut unknown = Vec::new();
    engine::changelog::encode_shared_key("balances", &3u64.to_be_bytes(), &mut unknown);
    cluster.borrow_mut().append(
        &changelog,
        PartitionId(0),
        (Some(unknown), Some(5i64.to_le_bytes().to_vec())),
    );
    let mut shard = Shard::new(
        ShardId(0),
        APPLICATION,
        LedgerStage,
        SimPort::new(Rc::clone(&cluster), &[INPUT]),
        PARTITIONS,
    )
    .expect("one input")
    .with_changelog_layout(ChangelogLayout::Shared);
    shard.port_mut().grant(vec![PartitionId(0)]);
    let error = shard.step().expect_err("a corrupt changelog");
    let text = error.to_string();
    assert!(
        matches!(
            error,
            engine::ShardError::Port {
                source: engine::PortError::CorruptChangelog {
                    source: engine::store::StoreCodecError::UnknownStore { ref store },
                    ..
                },
                ..
            } if store == "balances"
        ),
        "{text}"
    );
    assert!(text.contains(&changelog), "{text}");
}

/// The roll-back is undone in memory: a hot key changed across several
/// batches (a changelog write between them) returns to its committed value.
#[test]
fn a_key_changed_in_several_batches_returns_to_its_committed_value() {
    let mut ops = vec![
        Op::Produce {
            account: 3,
            amount: 7,
        },
        Op::Step(4),
        Op::Commit,
    ];
    for amount in [1, 2, 5, 4] {
        ops.push(Op::Produce { account: 3, amount });
        ops.push(Op::Step(2));
        ops.push(Op::WriteChangelogs);
    }
    ops.push(Op::AbortedCommit);
    ops.push(Op::Step(10));
    ops.push(Op::Commit);
    run(&ops);
}
