//! Standby replicas: warm copies of partitions that other nodes own, kept by
//! tailing their changelogs, handed to a shard of this node when it takes
//! one of them over.
//!
//! Owns: the node's copies ([`StandbyCopies`]: one `PartitionStores` per
//! partition with the next changelog offset each store has read, and which
//! partitions a shard of this node holds active), owned outright by the
//! keeper thread (`kafka::standby`, the only code here that touches
//! rdkafka); and the message protocol by which shards reach them
//! ([`StandbyHandle`]: a bounded channel of [`StandbyRequest`]s). A shard
//! that gains a partition asks for its copy and gets it by value with the
//! offsets it reached, so it restores only the tail; a shard that loses a
//! partition hands its stores back by message.
//!
//! Must never: share a copy between threads (a copy is moved, never
//! borrowed across threads: no lock guards anything here), write to any
//! topic, take part in a transaction, or hand out a copy of a partition a
//! shard of this node already holds (the take marks the partition active,
//! and the keeper stops tailing it). A copy is built from `read_committed`
//! reads only (or is a shard's committed state), so it never holds an
//! aborted write; it may be behind, never ahead, of what the owner
//! committed.
//!
//! Lives on: [`StandbyCopies`] on the keeper's thread only; handles on the
//! shards' threads and their supervisors, used on `assign` and `revoke`
//! only, never per record.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use hashbrown::HashMap;
use tracing::warn;

use crate::ids::PartitionId;
use crate::store::PartitionStores;

/// Requests a keeper may have waiting: shards' assignment changes, a few per
/// rebalance each. A full queue makes a release wait (up to
/// [`STANDBY_REPLY_TIMEOUT`]) rather than be lost.
pub const STANDBY_REQUEST_DEPTH: usize = 256;
/// Longest a shard waits for the keeper to hand over a copy (or to accept a
/// released partition). The keeper serves requests between batches it waits
/// at most some 10 ms for; past this the shard restores in full and the
/// node carries on without that copy.
pub const STANDBY_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// One partition's warm copy: its stores, and per changelog topic (in
/// `changelog::Changelogs::topics` order: one per store in `for_each_store`
/// order under the per-store layout, the one shared topic first under the
/// shared layout; entries past the topics are unused) the next changelog
/// offset to read, `None` while nothing was read (a take-over then
/// restores from that changelog in full).
///
/// Invariant: for every changelog, `state` equals the committed changelog
/// records below `next` applied in order, or a state those records
/// overwrite (a shard's committed state handed back with a `next` at or
/// below where its writes ended: applying the records again from `next`
/// gives the same result as applying them once).
pub struct WarmCopy<St> {
    pub state: St,
    pub next: Vec<Option<i64>>,
    /// A changelog record could not be applied: the copy is empty and stays
    /// so; a take-over restores the partition in full.
    pub poisoned: bool,
}

impl<St: PartitionStores> WarmCopy<St> {
    /// An empty copy of a stage's stores, read from nowhere yet (one
    /// position per store: enough for either layout).
    pub fn empty() -> Self {
        WarmCopy {
            state: St::default(),
            next: vec![None; St::store_names().len()],
            poisoned: false,
        }
    }
}

/// What a shard (or its supervisor) asks of the node's keeper.
pub enum StandbyRequest<St> {
    /// A shard of this node takes `partitions` over (all those of one
    /// assignment, so the shard waits for the keeper once): the keeper
    /// answers with their warm copies in the same order, moved out of its
    /// map (`None` for one it keeps none of), and marks them active.
    Take {
        partitions: Vec<PartitionId>,
        reply: Sender<Vec<Option<WarmCopy<St>>>>,
    },
    /// A shard of this node gave `partition` up (or failed while it may have
    /// held it). `copy`: the shard's committed stores and the changelog
    /// offsets they cover, kept as the warm copy; `None`: the keeper copies
    /// the partition again from its changelogs' start.
    Release {
        partition: PartitionId,
        copy: Option<WarmCopy<St>>,
    },
}

/// A shard's way to the node's keeper; cloned to every shard.
pub struct StandbyHandle<St> {
    replicas: u32,
    requests: Sender<StandbyRequest<St>>,
}

impl<St> Clone for StandbyHandle<St> {
    fn clone(&self) -> Self {
        StandbyHandle {
            replicas: self.replicas,
            requests: self.requests.clone(),
        }
    }
}

impl<St: PartitionStores> StandbyHandle<St> {
    /// A handle and the copies it reaches: `StandbyCopies` goes to the
    /// keeper's thread, the handle to the shards.
    pub fn pair(replicas: u32) -> (StandbyHandle<St>, StandbyCopies<St>) {
        let (tx, rx) = crossbeam_channel::bounded(STANDBY_REQUEST_DEPTH);
        (
            StandbyHandle {
                replicas,
                requests: tx,
            },
            StandbyCopies {
                replicas,
                slots: HashMap::new(),
                requests: rx,
            },
        )
    }

    /// How many copies of each partition the deployment asks for
    /// (`[state] standby_replicas`).
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Takes the warm copies of `partitions` from the keeper, in the same
    /// order (`None` for a partition it keeps no copy of); they are active
    /// from then on. All `None` when the keeper has stopped or did not
    /// answer in time: the caller restores in full.
    pub fn take(&self, partitions: &[PartitionId]) -> Vec<Option<WarmCopy<St>>> {
        let none = || partitions.iter().map(|_| None).collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let (reply, copies) = crossbeam_channel::bounded(1);
        let request = StandbyRequest::Take {
            partitions: partitions.to_vec(),
            reply,
        };
        if self
            .requests
            .send_timeout(request, STANDBY_REPLY_TIMEOUT)
            .is_err()
        {
            warn!(
                ?partitions,
                "the standby keeper took no request: restoring in full"
            );
            return none();
        }
        match copies.recv_timeout(STANDBY_REPLY_TIMEOUT) {
            Ok(copies) if copies.len() == partitions.len() => copies,
            Ok(_) => none(),
            Err(e) => {
                // A late answer finds the reply channel gone and drops the
                // copies; the keeper marked the partitions active either way.
                warn!(?partitions, error = %e, "the standby keeper did not hand copies over: restoring in full");
                none()
            }
        }
    }

    /// Gives `partition` back to the keeper, with the shard's committed
    /// stores as its copy where the shard has them. Losing the message only
    /// costs the copy (the keeper treats the partition as active until a
    /// later release).
    pub fn release(&self, partition: PartitionId, copy: Option<WarmCopy<St>>) {
        if self
            .requests
            .send_timeout(
                StandbyRequest::Release { partition, copy },
                STANDBY_REPLY_TIMEOUT,
            )
            .is_err()
        {
            warn!(%partition, "the standby keeper took no release: no copy of the partition is kept");
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
    /// watermarks (as of the keeper's last fetch), summed over its changelog topics.
    pub offsets_behind: u64,
}

/// The node's standby copies, owned by the keeper's thread; shards reach
/// them only through a [`StandbyHandle`]'s messages.
pub struct StandbyCopies<St> {
    replicas: u32,
    slots: HashMap<PartitionId, Slot<St>>,
    requests: Receiver<StandbyRequest<St>>,
}

/// What serving the waiting requests changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Requests served.
    pub requests: usize,
    /// A copy was handed over or handed back: the keeper's read positions
    /// changed.
    pub positions_changed: bool,
    /// Every handle is gone (the node's shards have stopped).
    pub orphaned: bool,
}

impl<St: PartitionStores> StandbyCopies<St> {
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Serves every request waiting now, without blocking.
    pub fn serve(&mut self) -> Served {
        let mut served = Served::default();
        loop {
            match self.requests.try_recv() {
                Ok(request) => {
                    served.requests += 1;
                    served.positions_changed |= self.answer(request);
                }
                Err(TryRecvError::Empty) => return served,
                Err(TryRecvError::Disconnected) => {
                    served.orphaned = true;
                    return served;
                }
            }
        }
    }

    /// Answers one request; true if a warm copy came or went.
    fn answer(&mut self, request: StandbyRequest<St>) -> bool {
        match request {
            StandbyRequest::Take { partitions, reply } => {
                let copies: Vec<Option<WarmCopy<St>>> = partitions
                    .iter()
                    .map(|&p| match self.slots.insert(p, Slot::Active) {
                        Some(Slot::Warm(copy)) => Some(copy),
                        Some(Slot::Active) | None => None,
                    })
                    .collect();
                let moved = copies.iter().any(Option::is_some);
                // A shard that stopped waiting dropped its reply channel:
                // the copies are dropped, the partitions stay active.
                let _ = reply.try_send(copies);
                moved
            }
            StandbyRequest::Release { partition, copy } => match self.slots.get(&partition) {
                // A copy tailed all along (a take that was never answered)
                // is as good as the shard's and needs no re-read.
                Some(Slot::Warm(_)) => false,
                Some(Slot::Active) | None => {
                    match copy {
                        Some(copy) if !copy.poisoned => {
                            self.slots.insert(partition, Slot::Warm(copy));
                        }
                        // `keep` copies it again from the changelogs' start.
                        _ => {
                            self.slots.remove(&partition);
                        }
                    }
                    true
                }
            },
        }
    }

    /// Starts a copy of every partition of `wanted` that is neither active
    /// nor kept, and drops copies of partitions no longer wanted. Returns
    /// the partitions now kept warm.
    pub fn keep(&mut self, wanted: &[PartitionId]) -> Vec<PartitionId> {
        self.slots
            .retain(|p, slot| matches!(slot, Slot::Active) || wanted.contains(p));
        for &p in wanted {
            self.slots
                .entry(p)
                .or_insert_with(|| Slot::Warm(WarmCopy::empty()));
        }
        let mut warm: Vec<PartitionId> = self
            .slots
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
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Active))
            .map(|(p, _)| *p)
            .collect();
        active.sort();
        active
    }

    /// The warm copy of `partition`, if one is kept (`None`: the record is
    /// not for a copy, for instance one handed over a moment ago).
    pub fn copy_mut(&mut self, partition: PartitionId) -> Option<&mut WarmCopy<St>> {
        match self.slots.get_mut(&partition) {
            Some(Slot::Warm(copy)) => Some(copy),
            _ => None,
        }
    }

    /// The next offset each warm copy has to read, per store.
    pub fn positions(&self) -> Vec<(PartitionId, Vec<Option<i64>>)> {
        let mut out: Vec<(PartitionId, Vec<Option<i64>>)> = self
            .slots
            .iter()
            .filter_map(|(p, slot)| match slot {
                Slot::Warm(copy) => Some((*p, copy.next.clone())),
                Slot::Active => None,
            })
            .collect();
        out.sort_by_key(|(p, _)| *p);
        out
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

    /// Runs `copies` as a keeper would, on its own thread, until every
    /// handle is gone; returns them for inspection.
    fn keeper(mut copies: StandbyCopies<Two>) -> std::thread::JoinHandle<StandbyCopies<Two>> {
        std::thread::spawn(move || {
            while !copies.serve().orphaned {
                std::thread::sleep(Duration::from_millis(1));
            }
            copies
        })
    }

    #[test]
    fn a_taken_copy_is_moved_to_the_shard_once_and_not_kept_again_until_released() {
        let (handle, mut copies) = StandbyHandle::<Two>::pair(1);
        let p = PartitionId(2);
        assert_eq!(copies.keep(&[PartitionId(1), p]), vec![PartitionId(1), p]);
        let copy = copies.copy_mut(p).expect("kept");
        copy.state.a.insert(7, 70);
        copy.next[0] = Some(5);
        let running = keeper(copies);
        let mut taken = handle.take(&[PartitionId(4), p]);
        assert!(taken[0].is_none(), "no copy of partition 4 was kept");
        let taken = taken.pop().flatten().expect("a warm copy");
        assert_eq!(taken.next, vec![Some(5), None]);
        assert_eq!(taken.state.a.get(&7), Some(&70));
        assert!(handle.take(&[p])[0].is_none(), "handed over once");
        drop(handle);
        let mut copies = running.join().expect("keeper");
        assert!(copies.copy_mut(p).is_none(), "the keeper let go of it");
        assert_eq!(copies.keep(&[PartitionId(1), p]), vec![PartitionId(1)]);
        assert_eq!(copies.active(), vec![p, PartitionId(4)]);
    }

    #[test]
    fn a_release_without_stores_is_copied_again_from_the_changelogs_start() {
        let (handle, mut copies) = StandbyHandle::<Two>::pair(1);
        let p = PartitionId(0);
        copies.keep(&[p]);
        let running = keeper(copies);
        assert!(handle.take(&[p])[0].is_some());
        handle.release(p, None);
        drop(handle);
        let mut copies = running.join().expect("keeper");
        assert!(copies.active().is_empty());
        assert_eq!(copies.keep(&[p]), vec![p]);
        assert_eq!(copies.positions(), vec![(p, vec![None, None])]);
    }

    #[test]
    fn released_stores_become_the_copy_at_the_offsets_the_shard_reached() {
        let (handle, copies) = StandbyHandle::<Two>::pair(1);
        let p = PartitionId(3);
        let running = keeper(copies);
        assert!(handle.take(&[p])[0].is_none(), "nothing kept yet");
        let mut stores = WarmCopy::<Two>::empty();
        stores.state.b.insert(1, 11);
        stores.next = vec![Some(40), Some(41)];
        handle.release(p, Some(stores));
        let mut again = WarmCopy::<Two>::empty();
        again.state.a.insert(9, 99);
        // The copy kept since wins over a later hand-back of the same
        // partition (a take the shard stopped waiting for).
        handle.release(p, Some(again));
        drop(handle);
        let mut copies = running.join().expect("keeper");
        assert_eq!(copies.keep(&[p]), vec![p]);
        assert_eq!(copies.positions(), vec![(p, vec![Some(40), Some(41)])]);
        let copy = copies.copy_mut(p).expect("kept");
        assert_eq!(copy.state.b.get(&1), Some(&11));
        assert_eq!(copy.state.a.get(&9), None);
    }

    #[test]
    fn a_partition_taken_without_a_copy_is_active_and_a_stopped_keeper_hands_nothing() {
        let (handle, copies) = StandbyHandle::<Two>::pair(1);
        let running = keeper(copies);
        assert!(handle.take(&[PartitionId(0)])[0].is_none());
        let other = handle.clone();
        drop(handle);
        drop(other);
        let mut copies = running.join().expect("keeper");
        assert_eq!(copies.keep(&[PartitionId(0)]), Vec::<PartitionId>::new());
        let (handle, copies) = StandbyHandle::<Two>::pair(1);
        drop(copies);
        assert!(
            handle.take(&[PartitionId(1)])[0].is_none(),
            "no keeper: restore in full"
        );
    }
}
