//! Standby replicas: warm copies of partitions that other nodes own, kept by
//! tailing their changelogs, handed to a shard of this node when it takes
//! one of them over ([`StandbyCopies`]).
//!
//! Owns: the node's copies (one `PartitionStores` per partition, with the
//! next changelog offset each store has read) and which partitions a shard
//! of this node holds active. The keeper that fills the copies is
//! `kafka::standby` (the only code here that touches rdkafka); the shard
//! takes a copy in `Shard::assign` and restores only the tail after it.
//!
//! Must never: write to any topic, take part in a transaction, or hand out a
//! copy of a partition a shard of this node already holds (the take marks
//! the partition active, and the keeper stops tailing it). A copy is built
//! from `read_committed` reads only, so it never holds an aborted write; it
//! may be behind, never ahead, of what the owner committed.
//!
//! Lives on: shared between the node's shards (on `assign` and `revoke`
//! only, never per record) and the keeper thread (once per fetched batch);
//! one mutex, never held across I/O.

use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashMap;

use crate::ids::PartitionId;
use crate::store::PartitionStores;

/// One partition's warm copy: its stores, and per store (in
/// `for_each_store` order) the next changelog offset to read, `None` while
/// nothing was read (a take-over then restores the store in full).
pub struct WarmCopy<St> {
    pub state: St,
    pub next: Vec<Option<i64>>,
    /// A changelog record could not be applied: the copy is empty and stays
    /// so; a take-over restores the partition in full.
    pub poisoned: bool,
}

impl<St: PartitionStores> WarmCopy<St> {
    /// An empty copy of a stage's stores, read from nowhere yet.
    pub fn empty() -> Self {
        WarmCopy {
            state: St::default(),
            next: vec![None; St::store_names().len()],
            poisoned: false,
        }
    }
}

/// Where one partition stands on this node.
enum Slot<St> {
    /// The keeper tails its changelogs into this copy.
    Warm(WarmCopy<St>),
    /// A shard of this node owns it: no copy is kept.
    Active,
}

/// How far a warm copy is behind its changelogs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyLag {
    pub partition: PartitionId,
    /// Offsets between the copy's read positions and the changelogs' high
    /// watermarks (as of the keeper's last fetch), summed over the stores.
    pub offsets_behind: u64,
}

/// The node's standby copies, shared by its shards and the keeper.
pub struct StandbyCopies<St> {
    /// How many copies of each partition the deployment asks for
    /// (`[state] standby_replicas`).
    replicas: u32,
    slots: Mutex<HashMap<PartitionId, Slot<St>>>,
    /// Shared with the node's telemetry (`Telemetry::standby_lag_sink`).
    lag: Arc<Mutex<Vec<StandbyLag>>>,
}

impl<St: PartitionStores> StandbyCopies<St> {
    /// `lag`: where the keeper publishes its copies' lag for the metrics.
    pub fn new(replicas: u32, lag: Arc<Mutex<Vec<StandbyLag>>>) -> Self {
        StandbyCopies {
            replicas,
            slots: Mutex::new(HashMap::new()),
            lag,
        }
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<PartitionId, Slot<St>>> {
        // A keeper that panicked mid-apply may have left one copy half
        // applied; a take-over restores its tail from the recorded position,
        // which was advanced only after each applied record.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A shard of this node takes `partition` over: its warm copy, if one
    /// is kept, and the partition is marked active so the keeper lets go.
    pub fn take(&self, partition: PartitionId) -> Option<WarmCopy<St>> {
        match self.slots().insert(partition, Slot::Active) {
            Some(Slot::Warm(copy)) => Some(copy),
            Some(Slot::Active) | None => None,
        }
    }

    /// A shard of this node gave `partition` up: the keeper may keep a copy
    /// of it again (built from the changelog's start).
    pub fn release(&self, partition: PartitionId) {
        let mut slots = self.slots();
        if matches!(slots.get(&partition), Some(Slot::Active)) {
            slots.remove(&partition);
        }
    }

    /// Starts a copy of every partition of `wanted` that is neither active
    /// nor kept, and drops copies of partitions no longer wanted. Returns
    /// the partitions now kept warm.
    pub fn keep(&self, wanted: &[PartitionId]) -> Vec<PartitionId> {
        let mut slots = self.slots();
        slots.retain(|p, slot| matches!(slot, Slot::Active) || wanted.contains(p));
        for &p in wanted {
            slots
                .entry(p)
                .or_insert_with(|| Slot::Warm(WarmCopy::empty()));
        }
        let mut warm: Vec<PartitionId> = slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Warm(_)))
            .map(|(p, _)| *p)
            .collect();
        warm.sort();
        warm
    }

    /// Partitions a shard of this node holds active.
    pub fn active(&self) -> Vec<PartitionId> {
        let mut active: Vec<PartitionId> = self
            .slots()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Active))
            .map(|(p, _)| *p)
            .collect();
        active.sort();
        active
    }

    /// Runs `f` on the warm copy of `partition`, if one is kept (false
    /// otherwise: the record is not for a copy, for instance one taken a
    /// moment ago).
    pub fn with_copy(&self, partition: PartitionId, f: impl FnOnce(&mut WarmCopy<St>)) -> bool {
        match self.slots().get_mut(&partition) {
            Some(Slot::Warm(copy)) => {
                f(copy);
                true
            }
            _ => false,
        }
    }

    /// The next offset each warm copy has to read, per store.
    pub fn positions(&self) -> Vec<(PartitionId, Vec<Option<i64>>)> {
        let mut out: Vec<(PartitionId, Vec<Option<i64>>)> = self
            .slots()
            .iter()
            .filter_map(|(p, slot)| match slot {
                Slot::Warm(copy) => Some((*p, copy.next.clone())),
                Slot::Active => None,
            })
            .collect();
        out.sort_by_key(|(p, _)| *p);
        out
    }

    pub fn set_lag(&self, lag: Vec<StandbyLag>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    /// Each warm copy's lag, as the keeper last measured it.
    pub fn lag(&self) -> Vec<StandbyLag> {
        self.lag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChangelogStore, Store};

    struct Two {
        a: Store<u64, i64>,
        b: Store<u64, i64>,
    }

    impl Default for Two {
        fn default() -> Self {
            Two {
                a: Store::new("a"),
                b: Store::new("b"),
            }
        }
    }

    impl PartitionStores for Two {
        fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
            f(&mut self.a);
            f(&mut self.b);
        }
    }

    #[test]
    fn a_taken_copy_is_handed_over_once_and_the_partition_is_not_kept_again_until_released() {
        let copies: StandbyCopies<Two> = StandbyCopies::new(1, Arc::default());
        let p = PartitionId(2);
        assert_eq!(copies.keep(&[PartitionId(1), p]), vec![PartitionId(1), p]);
        assert!(copies.with_copy(p, |copy| {
            copy.state.a.insert(7, 70);
            copy.next[0] = Some(5);
        }));
        let taken = copies.take(p).expect("a warm copy");
        assert_eq!(taken.next, vec![Some(5), None]);
        assert_eq!(taken.state.a.get(&7), Some(&70));
        assert!(copies.take(p).is_none(), "handed over once");
        assert!(!copies.with_copy(p, |_| {}), "the keeper lets go of it");
        assert_eq!(copies.keep(&[PartitionId(1), p]), vec![PartitionId(1)]);
        assert_eq!(copies.active(), vec![p]);
        copies.release(p);
        assert_eq!(copies.keep(&[PartitionId(1), p]), vec![PartitionId(1), p]);
        assert_eq!(
            copies.positions(),
            vec![(PartitionId(1), vec![None, None]), (p, vec![None, None])],
            "kept again from the changelog's start"
        );
        assert_eq!(copies.keep(&[]), Vec::<PartitionId>::new());
    }

    #[test]
    fn a_partition_taken_without_a_copy_is_active_and_restored_in_full() {
        let copies: StandbyCopies<Two> = StandbyCopies::new(1, Arc::default());
        assert!(copies.take(PartitionId(0)).is_none());
        assert_eq!(copies.keep(&[PartitionId(0)]), Vec::<PartitionId>::new());
    }
}
