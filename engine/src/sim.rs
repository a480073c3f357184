//! A deterministic, in-memory stand-in for Kafka that implements [`KafkaPort`], so
//! the shard's assignment, restore and commit logic can be driven through random
//! interleavings from one seed (compare TigerBeetle's VOPR). Used by the engine's
//! simulation tests; integration tests use real Kafka.
//!
//! Owns: logs per topic-partition, committed offsets, and per-port unacknowledged
//! sends that a simulated crash may or may not let land.
//! Must never: be used outside tests and benches, or share state between threads
//! (it is single-threaded by construction: `Rc<RefCell<_>>`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::ids::{Offset, PartitionId, TopicIdx};
use crate::port::{
    InputOffset, InputRecord, KafkaPort, OutRecord, Polled, PortError, RestoreStats, Rewind,
};
use crate::store::ChangelogApply;

/// SplitMix64: a tiny seeded generator so every simulated run replays from its seed.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One stored record: key and value (`None` value is a tombstone).
pub type SimRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The simulated cluster: every topic's partitions as vectors, and the group's
/// committed offsets.
#[derive(Default, Debug)]
pub struct SimCluster {
    pub logs: BTreeMap<(String, i32), Vec<SimRecord>>,
    pub committed: BTreeMap<(String, i32), i64>,
}

impl SimCluster {
    pub fn shared() -> Rc<RefCell<SimCluster>> {
        Rc::new(RefCell::new(SimCluster::default()))
    }

    pub fn append(&mut self, topic: &str, partition: PartitionId, record: SimRecord) {
        self.logs
            .entry((topic.to_string(), partition.0))
            .or_default()
            .push(record);
    }

    pub fn log(&self, topic: &str, partition: PartitionId) -> &[SimRecord] {
        self.logs
            .get(&(topic.to_string(), partition.0))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// One shard's view of the simulated cluster.
pub struct SimPort {
    cluster: Rc<RefCell<SimCluster>>,
    inputs: Vec<String>,
    owned: BTreeSet<PartitionId>,
    positions: BTreeMap<(u8, i32), i64>,
    /// Sent but not yet acknowledged: lands at the next commit, or maybe not at all
    /// if the shard crashes first.
    unacked: Vec<(String, PartitionId, SimRecord)>,
    ownership_changes: VecDeque<Polled<'static>>,
    key: Vec<u8>,
    payload: Vec<u8>,
    cursor: usize,
    /// The next commit fails as an abortable transaction would.
    abort_next_commit: bool,
}

impl SimPort {
    pub fn new(cluster: Rc<RefCell<SimCluster>>, inputs: &[&str]) -> Self {
        SimPort {
            cluster,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            owned: BTreeSet::new(),
            positions: BTreeMap::new(),
            unacked: Vec::new(),
            ownership_changes: VecDeque::new(),
            key: Vec::new(),
            payload: Vec::new(),
            cursor: 0,
            abort_next_commit: false,
        }
    }

    /// The group hands this port `partitions`; reading resumes at the committed offsets.
    pub fn grant(&mut self, partitions: Vec<PartitionId>) {
        let cluster = self.cluster.borrow();
        for partition in &partitions {
            self.owned.insert(*partition);
            for (i, topic) in self.inputs.iter().enumerate() {
                let committed = cluster
                    .committed
                    .get(&(topic.clone(), partition.0))
                    .copied()
                    .unwrap_or(0);
                self.positions.insert((i as u8, partition.0), committed);
            }
        }
        self.ownership_changes
            .push_back(Polled::Assigned(partitions));
    }

    /// The group takes `partitions` away.
    pub fn take_away(&mut self, partitions: Vec<PartitionId>) {
        for partition in &partitions {
            self.owned.remove(partition);
            self.positions.retain(|(_, p), _| *p != partition.0);
        }
        self.ownership_changes
            .push_back(Polled::Revoked(partitions));
    }

    /// A crash: each unacknowledged send lands or is lost, as `rng` decides (a
    /// real producer's in-flight requests may have reached the broker).
    pub fn crash(self, rng: &mut SimRng) {
        let mut cluster = self.cluster.borrow_mut();
        for (topic, partition, record) in self.unacked {
            if rng.chance(50) {
                cluster.append(&topic, partition, record);
            }
        }
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Makes the next commit fail with an abortable transaction error
    /// (what a record over the topic's size limit does on a real broker):
    /// nothing of it lands, and the shard must roll back.
    pub fn abort_next_commit(&mut self) {
        self.abort_next_commit = true;
    }
}

impl KafkaPort for SimPort {
    fn poll<R>(&mut self, handler: impl FnOnce(Polled<'_>) -> R) -> Result<R, PortError> {
        if let Some(change) = self.ownership_changes.pop_front() {
            return Ok(handler(change));
        }
        // Round-robin over owned (topic, partition) pairs with records waiting.
        let candidates: Vec<(u8, i32)> = self.positions.keys().copied().collect();
        let mut found = None;
        {
            let cluster = self.cluster.borrow();
            for step in 0..candidates.len() {
                let (topic, partition) = candidates[(self.cursor + step) % candidates.len()];
                let position = self.positions[&(topic, partition)];
                let log = cluster.log(&self.inputs[topic as usize], PartitionId(partition));
                if let Some((key, value)) = log.get(position as usize) {
                    self.cursor = (self.cursor + step + 1) % candidates.len();
                    self.key.clear();
                    self.payload.clear();
                    self.key
                        .extend_from_slice(key.as_deref().unwrap_or_default());
                    self.payload
                        .extend_from_slice(value.as_deref().unwrap_or_default());
                    found = Some((topic, partition, position, key.is_some(), value.is_some()));
                    break;
                }
            }
        }
        let Some((topic, partition, position, has_key, has_payload)) = found else {
            return Ok(handler(Polled::Idle));
        };
        self.positions.insert((topic, partition), position + 1);
        Ok(handler(Polled::Record(InputRecord {
            topic: TopicIdx(topic),
            partition: PartitionId(partition),
            offset: Offset(position),
            key: has_key.then_some(self.key.as_slice()),
            payload: has_payload.then_some(self.payload.as_slice()),
            timestamp_ms: 0,
        })))
    }

    fn send(&mut self, record: &OutRecord<'_>) -> Result<(), PortError> {
        self.unacked.push((
            record.topic.to_string(),
            record.partition,
            (
                record.key.map(<[u8]>::to_vec),
                record.payload.map(<[u8]>::to_vec),
            ),
        ));
        Ok(())
    }

    fn commit(
        &mut self,
        offsets: &[InputOffset],
        waiting: &mut dyn FnMut(),
    ) -> Result<(), PortError> {
        waiting();
        if std::mem::take(&mut self.abort_next_commit) {
            return Err(PortError::TransactionAbortable {
                op: "commit_transaction",
                message: "simulated abortable error".into(),
            });
        }
        let mut cluster = self.cluster.borrow_mut();
        for (topic, partition, record) in self.unacked.drain(..) {
            cluster.append(&topic, partition, record);
        }
        for offset in offsets {
            let key = (
                self.inputs[offset.topic.0 as usize].clone(),
                offset.partition.0,
            );
            let previous = cluster.committed.get(&key).copied().unwrap_or(0);
            assert!(
                offset.next.0 >= previous,
                "committed offset of {key:?} moved backwards"
            );
            cluster.committed.insert(key, offset.next.0);
        }
        Ok(())
    }

    /// Like an aborted transaction: unacknowledged sends are discarded and the
    /// kept partitions are read again from their committed offsets.
    fn rewind(&mut self, keep: &[PartitionId]) -> Result<Rewind, PortError> {
        self.unacked.clear();
        let cluster = self.cluster.borrow();
        for partition in keep {
            for (i, topic) in self.inputs.iter().enumerate() {
                let committed = cluster
                    .committed
                    .get(&(topic.clone(), partition.0))
                    .copied()
                    .unwrap_or(0);
                self.positions.insert((i as u8, partition.0), committed);
            }
        }
        Ok(Rewind::Done)
    }

    /// Like an aborted transaction that keeps the clients: unacknowledged
    /// sends are discarded and the listed inputs are read again from `next`.
    fn roll_back(&mut self, resume: &[InputOffset]) -> Result<(), PortError> {
        self.unacked.clear();
        for offset in resume {
            if self.owned.contains(&offset.partition) {
                self.positions
                    .insert((offset.topic.0, offset.partition.0), offset.next.0);
            }
        }
        Ok(())
    }

    fn restore(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        apply: &mut ChangelogApply<'_>,
    ) -> Result<RestoreStats, PortError> {
        self.restore_tail(changelog, partition, Offset(0), apply)
    }

    /// A log holds committed records only, so a record's index is its
    /// offset.
    fn restore_tail(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        from: Offset,
        apply: &mut ChangelogApply<'_>,
    ) -> Result<RestoreStats, PortError> {
        let cluster = self.cluster.borrow();
        let log = cluster.log(changelog, partition);
        let mut stats = RestoreStats {
            next: Some(Offset(log.len() as i64)),
            ..RestoreStats::default()
        };
        let skip = usize::try_from(from.0).unwrap_or(0);
        for (key, value) in log.iter().skip(skip) {
            let key = key.as_deref().unwrap_or_default();
            apply(key, value.as_deref()).map_err(|source| PortError::CorruptChangelog {
                changelog: changelog.to_string(),
                partition,
                source,
            })?;
            stats.records += 1;
            stats.bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
        }
        Ok(stats)
    }

    fn positions(&mut self, out: &mut Vec<crate::port::InputPosition>) {
        let cluster = self.cluster.borrow();
        for (&(topic, partition), &position) in &self.positions {
            let end = cluster
                .log(&self.inputs[topic as usize], PartitionId(partition))
                .len() as i64;
            out.push(crate::port::InputPosition {
                topic: TopicIdx(topic),
                partition: PartitionId(partition),
                position: Some(Offset(position)),
                end: Some(Offset(end)),
            });
        }
    }
}

/// A reference stage for engine tests: sums `account.funded` amounts per account.
/// It is idempotent by offset (a key's records arrive in offset order on one
/// partition, so a replayed record has an offset at or below the last applied
/// one), which is what at-least-once replays after a crash require.
pub mod tally {
    use codecs::EventRef;

    use crate::stage::{Input, Outbox, Rejection, Stage};
    use crate::store::{ChangelogStore, PartitionStores, Store, StoreValue};

    /// Topic the tally stage reads.
    pub const FUNDING_TOPIC: &str = "engine-test.account.funded";

    /// Sum and count of one account's fundings, and the last offset applied.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Tally {
        pub sum: i64,
        pub count: u64,
        pub last_offset: i64,
    }

    impl StoreValue for Tally {
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.sum.to_le_bytes());
            out.extend_from_slice(&self.count.to_le_bytes());
            out.extend_from_slice(&self.last_offset.to_le_bytes());
        }
        fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
            if bytes.len() != 24 {
                return Err("tally value must be 24 bytes");
            }
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                w
            };
            Ok(Tally {
                sum: i64::from_le_bytes(word(0)),
                count: u64::from_le_bytes(word(1)),
                last_offset: i64::from_le_bytes(word(2)),
            })
        }
    }

    /// One partition's tallies, by account id.
    pub struct TallyState {
        pub tallies: Store<u64, Tally>,
    }

    impl Default for TallyState {
        fn default() -> Self {
            TallyState {
                tallies: Store::new("tallies"),
            }
        }
    }

    impl PartitionStores for TallyState {
        fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
            f(&mut self.tallies);
        }
    }

    /// The stage.
    #[derive(Default)]
    pub struct FundingTally {
        topics: [&'static str; 1],
        /// Re-publishes every newly applied funding here (same event id), so
        /// tests can count outputs under each guarantee.
        echo: Option<&'static str>,
    }

    impl FundingTally {
        pub fn new() -> Self {
            Self::reading(FUNDING_TOPIC)
        }

        /// A tally over another topic (integration tests use one per run).
        pub fn reading(topic: &'static str) -> Self {
            FundingTally {
                topics: [topic],
                echo: None,
            }
        }

        /// A tally that also echoes each applied funding to `output`.
        pub fn echoing(topic: &'static str, output: &'static str) -> Self {
            FundingTally {
                topics: [topic],
                echo: Some(output),
            }
        }
    }

    impl Stage for FundingTally {
        type State = TallyState;

        fn name(&self) -> &'static str {
            "tally"
        }

        fn input_topics(&self) -> &[&'static str] {
            &self.topics
        }

        fn process(
            &mut self,
            input: &Input<'_>,
            event: EventRef<'_>,
            state: &mut TallyState,
            out: &mut Outbox,
        ) -> Result<(), Rejection> {
            let EventRef::AccountFunded(funded) = event else {
                return Err(Rejection::user_data(format!(
                    "the tally stage takes account.funded, not {}",
                    event.kind()
                )));
            };
            let account = funded.account().0;
            let offset = input.offset.0;
            if let Some(tally) = state.tallies.get(&account) {
                if tally.count > 0 && offset <= tally.last_offset {
                    return Ok(());
                }
            }
            let tally = state.tallies.upsert_with(account, Tally::default);
            tally.sum += funded.amount().0;
            tally.count += 1;
            tally.last_offset = offset;
            if let Some(echo) = self.echo {
                let event = codecs::Event::AccountFunded(codecs::ToNative::to_native(funded));
                out.emit(echo, &account.to_be_bytes(), &event)
                    .map_err(|e| Rejection::user_data(e.to_string()))?;
            }
            Ok(())
        }
    }
}
