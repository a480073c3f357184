//! Shard-local state stores: one `hashbrown` map per store per partition, with the
//! dirty tracking that turns updates into changelog writes at each commit.
//!
//! Owns: the maps, which keys changed since the last commit, the before-images
//! of the keys the open transaction changed (to undo it on abort), and the
//! byte form of keys and values in the changelog.
//! Must never: be shared between shards or touched by a thread other than the
//! owning shard's; write to Kafka itself (the shard does, at commit).
//!
//! Lives on: the core of the shard that owns the partition.

use std::hash::Hash;

use std::collections::BinaryHeap;

use hashbrown::{HashMap, HashSet};

/// Why changelog bytes could not become a key or value again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreCodecError {
    #[error("store {store}: key of {actual} bytes, expected {expected}")]
    KeyLength {
        store: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("store {store}: value of {actual} bytes, expected {expected}")]
    ValueLength {
        store: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("store {store}: {reason}")]
    Invalid {
        store: &'static str,
        reason: &'static str,
    },
    /// A shared changelog's key without a well-formed store prefix (see
    /// `crate::changelog`).
    #[error("shared changelog key: {reason}")]
    SharedKey { reason: &'static str },
    /// A shared changelog's key whose prefix names no store of the
    /// application.
    #[error("shared changelog record of store {store:?}, which this application does not have")]
    UnknownStore { store: String },
}

/// Receives changelog records: key bytes and value bytes (`None`: a tombstone).
pub type ChangelogSink<'a> = dyn FnMut(&[u8], Option<&[u8]>) + 'a;
/// Applies changelog records to a store during restore.
pub type ChangelogApply<'a> = dyn FnMut(&[u8], Option<&[u8]>) -> Result<(), StoreCodecError> + 'a;
/// A store's entries in changelog byte form, sorted by key.
pub type StoreEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A key as it is written to a changelog. Fixed-size keys keep the hot path free
/// of allocation.
pub trait StoreKey: Copy + Eq + Hash + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self, &'static str>;
}

/// A value as it is written to a changelog.
pub trait StoreValue: Clone + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self, &'static str>;
}

/// Dirty-tracking capacity (keys) a store keeps across commits; a commit that
/// changed more keys (a bulk load) gives the rest back, so a store of a
/// million keys does not keep a million-key dirty list for ever.
pub const DIRTY_CAPACITY_KEPT: usize = 4_096;

/// Most bytes of slots a store reserves before a restore
/// ([`ChangelogStore::reserve`]): 256 MiB, about 11 M entries of 24 bytes.
pub const RESERVE_BYTES_MAX: usize = 256 << 20;

/// An entry due for eviction at `at_ms` (event time). Ordered by time only,
/// earliest first in a `BinaryHeap`.
struct Due<K> {
    at_ms: i64,
    key: K,
}

impl<K> PartialEq for Due<K> {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms
    }
}
impl<K> Eq for Due<K> {}
impl<K> PartialOrd for Due<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Due<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: `BinaryHeap` is a max-heap, the earliest must come first.
        other.at_ms.cmp(&self.at_ms)
    }
}

/// When a store's entries may be evicted: `finished_at` says from which event
/// time (ms) a value is finished (`None` while it must be kept); the queue
/// holds finished keys by that time, earliest first.
struct Retention<K, V> {
    finished_at: fn(&V) -> Option<i64>,
    queue: BinaryHeap<Due<K>>,
}

/// One store of one partition: a hash map whose changes since the last commit
/// are remembered, so each commit writes the latest value of each changed key
/// once (a hot key costs one changelog record per interval, not one per event).
///
/// The map's slot is the key and the value alone (no per-entry flag): which
/// keys changed is kept beside the map, in `dirty` (first-change order) and
/// `dirty_set` (membership), both sized by the keys changed per commit, not by
/// the store.
pub struct Store<K: StoreKey, V: StoreValue> {
    name: &'static str,
    map: HashMap<K, V>,
    /// Keys changed (or removed) since the last changelog write, in the order
    /// they first changed; each at most once.
    dirty: Vec<K>,
    /// The keys of `dirty`, for a constant-time "listed already?".
    dirty_set: HashSet<K>,
    retention: Option<Retention<K, V>>,
    /// Before-images since the last commit, when the shard can abort.
    undo: UndoLog<K, V>,
}

/// Before-images of the keys changed since the last commit, in the order
/// they were taken: `None` for a key that did not exist. A key gets one entry
/// each time it is first changed after a changelog write (`dirty_set` tells),
/// and one at each removal, so undoing the entries newest first leaves every
/// key as it was at the last commit. Off (empty, never written) unless the
/// shard may abort a transaction and continue (exactly-once).
struct UndoLog<K, V> {
    on: bool,
    entries: Vec<(K, Option<V>)>,
}

impl<K: StoreKey, V: StoreValue> UndoLog<K, V> {
    #[inline]
    fn before(&mut self, key: K, value: Option<&V>) {
        if self.on {
            self.entries.push((key, value.cloned()));
        }
    }
}

impl<K: StoreKey, V: StoreValue> Store<K, V> {
    pub fn new(name: &'static str) -> Self {
        Store {
            name,
            map: HashMap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            retention: None,
            undo: UndoLog {
                on: false,
                entries: Vec::new(),
            },
        }
    }

    /// A store whose finished entries can be evicted by event time
    /// ([`Store::evict_finished`]): `finished_at` gives the event time (ms) from
    /// which a value is finished, `None` while it must be kept. Finished
    /// entries are queued when they are written to the changelog and when a
    /// restore applies them, so a restored store evicts like the live one.
    pub fn with_retention(name: &'static str, finished_at: fn(&V) -> Option<i64>) -> Self {
        Store {
            retention: Some(Retention {
                finished_at,
                queue: BinaryHeap::new(),
            }),
            ..Store::new(name)
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Lists `key` as changed, once per commit interval.
    /// Marks `key` changed, before the change: its first change since the
    /// last changelog write also takes its before-image.
    fn mark_dirty(&mut self, key: K) {
        if self.dirty_set.insert(key) {
            self.dirty.push(key);
            if self.undo.on {
                let before = self.map.get(&key).cloned();
                self.undo.entries.push((key, before));
            }
        }
    }

    /// Mutable access marks the key dirty: the caller is about to change it.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let value = self.map.get_mut(key)?;
        if self.dirty_set.insert(*key) {
            self.undo.before(*key, Some(value));
            self.dirty.push(*key);
        }
        Some(value)
    }

    /// The value for `key`, created with `default` if absent; marked dirty.
    pub fn upsert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.mark_dirty(key);
        self.map.entry(key).or_insert_with(default)
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.mark_dirty(key);
        self.map.insert(key, value);
    }

    /// Removes `key`; the next commit writes a tombstone for it.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let value = self.map.remove(key)?;
        // Logged even if already dirty: the older entry, undone later, wins.
        self.undo.before(*key, Some(&value));
        if self.dirty_set.insert(*key) {
            self.dirty.push(*key);
        }
        Some(value)
    }

    /// Evicts entries finished at or before `cutoff_ms` (event time), looking
    /// at no more than `work_max` queued keys: bounded work per call, never a
    /// pause. An evicted key is removed like [`Store::remove`] (a tombstone at
    /// the next commit, so compaction drops it from the changelog too).
    /// Returns how many were evicted; 0 for a store without retention, or
    /// when the keys looked at were all stale (changed or removed since they
    /// were queued): to catch up, call until `retention_queue_len` stops
    /// shrinking.
    pub fn evict_finished(&mut self, cutoff_ms: i64, work_max: usize) -> usize {
        let mut evicted = 0;
        for _ in 0..work_max {
            let Some(retention) = self.retention.as_mut() else {
                return 0;
            };
            match retention.queue.peek() {
                Some(due) if due.at_ms <= cutoff_ms => {}
                _ => break,
            }
            let Some(due) = retention.queue.pop() else {
                break;
            };
            // Stale entries (removed since, or queued again under a later
            // time) are skipped: only a value still finished at the queued
            // time goes.
            let finished_at = retention.finished_at;
            let current = self.map.get(&due.key).and_then(finished_at);
            if current == Some(due.at_ms) {
                self.remove(&due.key);
                evicted += 1;
            }
        }
        evicted
    }

    /// Evicts `key` now if it is finished at or before `cutoff_ms`, whether or
    /// not its turn in the queue has come: a stage calls it before deciding
    /// on a key, so an entry past its retention is never taken for a live one
    /// because the incremental eviction lags. Returns whether it went.
    pub fn evict_if_finished_by(&mut self, key: &K, cutoff_ms: i64) -> bool {
        let Some(retention) = self.retention.as_ref() else {
            return false;
        };
        let due = self
            .map
            .get(key)
            .and_then(retention.finished_at)
            .is_some_and(|at_ms| at_ms <= cutoff_ms);
        if due {
            self.remove(key);
        }
        due
    }

    /// Finished keys waiting in the retention queue (stale ones included).
    pub fn retention_queue_len(&self) -> usize {
        self.retention.as_ref().map_or(0, |r| r.queue.len())
    }

    /// Queues `key` for eviction if `value` is finished.
    fn queue_if_finished(retention: &mut Option<Retention<K, V>>, key: K, value: &V) {
        if let Some(retention) = retention.as_mut() {
            if let Some(at_ms) = (retention.finished_at)(value) {
                retention.queue.push(Due { at_ms, key });
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }
}

/// What the shard needs from any store at commit and restore time, without
/// knowing its key and value types. Called once per commit, never per event.
pub trait ChangelogStore {
    fn name(&self) -> &'static str;
    /// Keys changed since the last [`ChangelogStore::write_dirty`].
    fn dirty_len(&self) -> usize;
    /// Hands each changed key's latest value (or `None` for a removed key) to
    /// `sink` and forgets that it changed.
    fn write_dirty(&mut self, sink: &mut ChangelogSink<'_>);
    /// Applies one changelog record during restore (`None` is a tombstone).
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreCodecError>;
    /// Room for `additional` more entries, asked before a restore of that
    /// many changelog records so the map grows once, not 20 times.
    fn reserve(&mut self, _additional: usize) {}
    /// A restore ended: give back capacity a [`ChangelogStore::reserve`]
    /// overshot (the changelog held more records than keys).
    fn restored(&mut self) {}
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of the store's table (keys, values and the map's control
    /// bytes), not what values own on the heap; for metrics.
    fn table_bytes(&self) -> usize {
        0
    }
    /// Every entry in changelog byte form, sorted by key: for comparing state
    /// across restarts and against a reference in tests.
    fn dump(&self) -> StoreEntries;
    /// Starts (or stops) keeping before-images, so that [`Self::undo`] can
    /// take the store back to the last commit. Off by default.
    fn keep_undo(&mut self, on: bool);
    /// The open transaction committed: its before-images are dropped.
    fn forget_undo(&mut self);
    /// The open transaction was aborted: puts back every key changed since
    /// the last [`Self::forget_undo`] (removing the ones that did not exist)
    /// and forgets that they changed, since their changelog writes were
    /// aborted with it. Returns how many before-images it put back.
    fn undo(&mut self) -> usize;
}

impl<K: StoreKey, V: StoreValue> ChangelogStore for Store<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    fn write_dirty(&mut self, sink: &mut ChangelogSink<'_>) {
        let mut key_bytes = Vec::with_capacity(32);
        let mut value_bytes = Vec::with_capacity(64);
        for key in self.dirty.drain(..) {
            key_bytes.clear();
            key.encode(&mut key_bytes);
            match self.map.get(&key) {
                Some(value) => {
                    value_bytes.clear();
                    value.encode(&mut value_bytes);
                    sink(&key_bytes, Some(&value_bytes));
                    Self::queue_if_finished(&mut self.retention, key, value);
                }
                None => sink(&key_bytes, None),
            }
        }
        self.dirty_set.clear();
        if self.dirty.capacity() > DIRTY_CAPACITY_KEPT {
            self.dirty.shrink_to(DIRTY_CAPACITY_KEPT);
        }
        if self.dirty_set.capacity() > DIRTY_CAPACITY_KEPT {
            self.dirty_set.shrink_to(DIRTY_CAPACITY_KEPT);
        }
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreCodecError> {
        let store = self.name;
        let key = K::decode(key).map_err(|reason| StoreCodecError::Invalid { store, reason })?;
        match value {
            Some(bytes) => {
                let value = V::decode(bytes)
                    .map_err(|reason| StoreCodecError::Invalid { store, reason })?;
                Self::queue_if_finished(&mut self.retention, key, &value);
                self.map.insert(key, value);
            }
            None => {
                // A tombstone (an eviction or a removal) is honoured: the key
                // stays gone; its queue entry, if any, is skipped as stale.
                self.map.remove(&key);
            }
        }
        Ok(())
    }

    fn reserve(&mut self, additional: usize) {
        // An uncompacted changelog may hold far more records than keys: never
        // reserve more than RESERVE_BYTES_MAX up front (growth covers the rest).
        let slot = std::mem::size_of::<(K, V)>().max(1);
        self.map.reserve(additional.min(RESERVE_BYTES_MAX / slot));
    }

    fn restored(&mut self) {
        // A no-op unless a smaller table holds every entry.
        self.map.shrink_to(self.map.len());
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn table_bytes(&self) -> usize {
        self.map.allocation_size()
            + self.dirty_set.allocation_size()
            + self.dirty.capacity() * std::mem::size_of::<K>()
            + self
                .retention
                .as_ref()
                .map_or(0, |r| r.queue.capacity() * std::mem::size_of::<Due<K>>())
    }

    fn keep_undo(&mut self, on: bool) {
        self.undo.on = on;
        self.undo.entries.clear();
    }

    fn forget_undo(&mut self) {
        self.undo.entries.clear();
    }

    fn undo(&mut self) -> usize {
        let undone = self.undo.entries.len();
        for (key, before) in self.undo.entries.drain(..).rev() {
            match before {
                Some(value) => {
                    // An eviction undone: the key is finished again, so it
                    // goes back in the retention queue (a stale duplicate is
                    // skipped by `evict_finished`).
                    Self::queue_if_finished(&mut self.retention, key, &value);
                    self.map.insert(key, value);
                }
                None => {
                    self.map.remove(&key);
                }
            }
        }
        // Keys changed since the last changelog write are all in the log
        // (their first change took a before-image), so all are back now.
        self.dirty.clear();
        self.dirty_set.clear();
        undone
    }

    fn dump(&self) -> StoreEntries {
        let mut entries: Vec<_> = self
            .map
            .iter()
            .map(|(k, v)| {
                let mut key = Vec::new();
                k.encode(&mut key);
                let mut value = Vec::new();
                v.encode(&mut value);
                (key, value)
            })
            .collect();
        entries.sort();
        entries
    }
}

/// The stores of one partition of one stage, enumerated for commit and restore.
/// A stage's state type implements this by listing its stores in a fixed order.
pub trait PartitionStores: Default + 'static {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore));

    /// Applies one changelog record to store number `index` (in
    /// `for_each_store` order); a store number the state does not have is
    /// an error, like a record the store cannot decode.
    fn apply_to(
        &mut self,
        index: usize,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreCodecError> {
        let mut at = 0;
        let mut result = Err(StoreCodecError::SharedKey {
            reason: "a store number the state does not have",
        });
        self.for_each_store(&mut |store| {
            if at == index {
                result = store.apply(key, value);
            }
            at += 1;
        });
        result
    }

    /// The stores' names, in `for_each_store` order.
    fn store_names() -> Vec<&'static str> {
        let mut names = Vec::new();
        Self::default().for_each_store(&mut |s| names.push(s.name()));
        names
    }
}

macro_rules! fixed_int_codec {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
                let array = bytes.try_into().map_err(|_| "integer key of the wrong length")?;
                Ok(<$t>::from_be_bytes(array))
            }
        }
        impl StoreValue for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
                let array = bytes.try_into().map_err(|_| "integer value of the wrong length")?;
                Ok(<$t>::from_le_bytes(array))
            }
        }
    )*};
}

fixed_int_codec!(u64, i64, u128);

#[cfg(test)]
mod tests {
    use super::*;

    fn written(store: &mut Store<u64, i64>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        store.write_dirty(&mut |k, v| out.push((k.to_vec(), v.map(<[u8]>::to_vec))));
        out
    }

    #[test]
    fn a_hot_key_is_written_once_per_commit() {
        let mut store: Store<u64, i64> = Store::new("tally");
        for i in 0..1000 {
            *store.upsert_with(7, || 0) += i;
        }
        let records = written(&mut store);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.as_deref(), Some(&499_500i64.to_le_bytes()[..]));
        assert!(written(&mut store).is_empty(), "nothing changed since");
    }

    #[test]
    fn removal_writes_a_tombstone_and_reinsert_writes_the_value_once() {
        let mut store: Store<u64, i64> = Store::new("tally");
        store.insert(1, 10);
        store.insert(2, 20);
        let _ = written(&mut store);
        store.remove(&1);
        store.remove(&2);
        store.insert(2, 22);
        let mut records = written(&mut store);
        records.sort();
        assert_eq!(
            records,
            vec![
                (1u64.to_be_bytes().to_vec(), None),
                (
                    2u64.to_be_bytes().to_vec(),
                    Some(22i64.to_le_bytes().to_vec())
                ),
            ]
        );
    }

    #[test]
    fn replaying_the_changelog_rebuilds_the_same_store() -> Result<(), StoreCodecError> {
        let mut live: Store<u64, i64> = Store::new("tally");
        let mut changelog = Vec::new();
        for round in 0..5i64 {
            for key in 0..50u64 {
                if (key + round as u64) % 7 == 0 {
                    live.remove(&key);
                } else {
                    *live.upsert_with(key, || 0) += round * key as i64;
                }
            }
            changelog.extend(written(&mut live));
        }
        let mut restored: Store<u64, i64> = Store::new("tally");
        for (key, value) in &changelog {
            restored.apply(key, value.as_deref())?;
        }
        assert_eq!(restored.dump(), live.dump());
        assert_eq!(restored.dirty_len(), 0, "restoring marks nothing dirty");
        Ok(())
    }

    #[test]
    fn undo_puts_back_the_committed_values_across_changelog_writes() {
        let mut store: Store<u64, i64> = Store::new("tally");
        store.keep_undo(true);
        store.insert(1, 10);
        store.insert(2, 20);
        store.insert(3, 30);
        let _ = written(&mut store);
        store.forget_undo();
        let committed = store.dump();
        // One batch, a changelog write, then another batch, then the abort.
        *store.get_mut(&1).expect("present") += 1;
        store.remove(&2);
        store.insert(4, 40);
        let _ = written(&mut store);
        *store.upsert_with(1, || 0) += 1;
        store.insert(2, 22);
        store.remove(&3);
        store.remove(&4);
        *store.upsert_with(5, || 0) += 5;
        assert!(store.undo() > 0);
        assert_eq!(store.dump(), committed);
        assert_eq!(store.dirty_len(), 0, "the aborted changes are forgotten");
        assert!(written(&mut store).is_empty());
        // The next transaction starts clean.
        *store.get_mut(&1).expect("present") += 100;
        store.forget_undo();
        assert_eq!(store.undo(), 0);
        assert_eq!(store.get(&1), Some(&110));
    }

    #[test]
    fn without_undo_no_before_image_is_kept() {
        let mut store: Store<u64, i64> = Store::new("tally");
        store.insert(1, 10);
        *store.get_mut(&1).expect("present") += 1;
        assert_eq!(store.undo.entries.len(), 0);
    }

    #[test]
    fn corrupt_changelog_bytes_are_an_error_not_a_panic() {
        let mut store: Store<u64, i64> = Store::new("tally");
        assert!(store.apply(&[1, 2, 3], Some(&[0; 8])).is_err());
        assert!(store.apply(&[0; 8], Some(&[1, 2])).is_err());
        assert!(store.is_empty());
    }

    /// A value finished from the event time it carries when positive.
    fn finished_at(value: &i64) -> Option<i64> {
        (*value > 0).then_some(*value)
    }

    fn retained() -> Store<u64, i64> {
        Store::with_retention("orders", finished_at)
    }

    #[test]
    fn finished_entries_are_evicted_after_the_cutoff_with_a_tombstone() {
        let mut store = retained();
        store.insert(1, 100); // finished at 100
        store.insert(2, 300); // finished at 300
        store.insert(3, -1); // not finished: kept for ever
        let _ = written(&mut store);
        assert_eq!(store.retention_queue_len(), 2);
        assert_eq!(store.evict_finished(99, 10), 0, "nothing finished by 99");
        assert_eq!(store.evict_finished(100, 10), 1);
        assert_eq!(store.get(&1), None);
        assert_eq!(store.get(&2), Some(&300));
        assert_eq!(
            written(&mut store),
            vec![(1u64.to_be_bytes().to_vec(), None)],
            "an eviction is a tombstone in the changelog"
        );
        assert_eq!(store.evict_finished(i64::MAX, 10), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&3), Some(&-1));
    }

    #[test]
    fn eviction_work_is_bounded_per_call() {
        let mut store = retained();
        for key in 0..100u64 {
            store.insert(key, 1 + key as i64);
        }
        let _ = written(&mut store);
        assert_eq!(store.evict_finished(i64::MAX, 8), 8);
        assert_eq!(store.len(), 92);
        let mut calls = 1;
        while store.evict_finished(i64::MAX, 8) > 0 {
            calls += 1;
        }
        assert_eq!(calls, 13, "100 entries, 8 a call");
        assert!(store.is_empty());
    }

    #[test]
    fn a_key_changed_since_it_was_queued_is_not_evicted_at_its_old_time() {
        let mut store = retained();
        store.insert(1, 100);
        let _ = written(&mut store);
        store.insert(1, 500); // finished later now (a later event time)
        let _ = written(&mut store);
        assert_eq!(
            store.evict_finished(200, 10),
            0,
            "the entry at 100 is stale"
        );
        assert_eq!(store.get(&1), Some(&500));
        store.insert(1, -1); // not finished any more
        let _ = written(&mut store);
        assert_eq!(store.evict_finished(i64::MAX, 10), 0);
        assert_eq!(store.get(&1), Some(&-1));
        assert_eq!(store.retention_queue_len(), 0, "stale entries are dropped");
    }

    #[test]
    fn a_restore_after_eviction_does_not_bring_the_entry_back_and_queues_the_rest(
    ) -> Result<(), StoreCodecError> {
        let mut live = retained();
        let mut changelog = Vec::new();
        for key in 0..10u64 {
            live.insert(
                key,
                if key % 2 == 0 {
                    10 * key as i64 + 1
                } else {
                    -1
                },
            );
        }
        changelog.extend(written(&mut live));
        assert_eq!(live.evict_finished(41, 100), 3, "keys 0, 2 and 4");
        changelog.extend(written(&mut live));

        let mut restored = retained();
        restored.reserve(changelog.len());
        for (key, value) in &changelog {
            restored.apply(key, value.as_deref())?;
        }
        assert_eq!(restored.dump(), live.dump(), "tombstones honoured");
        assert_eq!(restored.get(&0), None);
        assert_eq!(restored.dirty_len(), 0);
        // The restored store evicts what the live one would: keys 6 and 8.
        assert_eq!(restored.evict_finished(i64::MAX, 100), 2);
        assert_eq!(live.evict_finished(i64::MAX, 100), 2);
        assert_eq!(restored.dump(), live.dump());
        Ok(())
    }

    #[test]
    fn a_key_past_its_retention_is_evicted_on_touch_before_its_turn() {
        let mut store = retained();
        for key in 0..10u64 {
            store.insert(key, 100 + key as i64);
        }
        let _ = written(&mut store);
        assert!(!store.evict_if_finished_by(&9, 108), "finished at 109");
        assert!(store.evict_if_finished_by(&9, 109));
        assert_eq!(store.get(&9), None);
        assert!(!store.evict_if_finished_by(&9, i64::MAX), "gone already");
        assert_eq!(
            written(&mut store),
            vec![(9u64.to_be_bytes().to_vec(), None)]
        );
        // Its queue entry is stale now, skipped by the incremental eviction.
        assert_eq!(store.evict_finished(i64::MAX, 100), 9);
    }

    #[test]
    fn a_store_without_retention_evicts_nothing() {
        let mut store: Store<u64, i64> = Store::new("tally");
        store.insert(1, 1);
        let _ = written(&mut store);
        assert_eq!(store.evict_finished(i64::MAX, 10), 0);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_bulk_commit_gives_its_dirty_capacity_back() {
        let mut store: Store<u64, i64> = Store::new("tally");
        for key in 0..100_000u64 {
            store.insert(key, 1);
        }
        let bulk = store.table_bytes();
        let _ = written(&mut store);
        let after = store.table_bytes();
        assert!(
            after + 100_000 * std::mem::size_of::<u64>() <= bulk,
            "the dirty list and set shrink after the commit: {bulk} -> {after} bytes"
        );
        *store.upsert_with(7, || 0) += 1;
        assert_eq!(written(&mut store).len(), 1);
    }
}
