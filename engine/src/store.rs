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

use hashbrown::HashMap;

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

struct Slot<V> {
    value: V,
    /// Set while the key waits in `Store::dirty` for the next changelog write.
    dirty: bool,
}

/// One store of one partition: a hash map whose changes since the last commit
/// are remembered, so each commit writes the latest value of each changed key
/// once (a hot key costs one changelog record per interval, not one per event).
pub struct Store<K: StoreKey, V: StoreValue> {
    name: &'static str,
    map: HashMap<K, Slot<V>>,
    dirty: Vec<K>,
    /// Before-images since the last commit, when the shard can abort.
    undo: UndoLog<K, V>,
}

/// Before-images of the keys changed since the last commit, in the order
/// they were taken: `None` for a key that did not exist. A key gets one entry
/// each time it is first changed after a changelog write (the dirty flag
/// tells), so undoing the entries newest first leaves every key as it was
/// at the last commit. Off (empty, never written) unless the shard may abort
/// a transaction and continue (exactly-once).
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
            undo: UndoLog {
                on: false,
                entries: Vec::new(),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|slot| &slot.value)
    }

    /// Mutable access marks the key dirty: the caller is about to change it.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let slot = self.map.get_mut(key)?;
        if !slot.dirty {
            self.undo.before(*key, Some(&slot.value));
            slot.dirty = true;
            self.dirty.push(*key);
        }
        Some(&mut slot.value)
    }

    /// The value for `key`, created with `default` if absent; marked dirty.
    pub fn upsert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        let undo = &mut self.undo;
        let slot = match self.map.entry(key) {
            hashbrown::hash_map::Entry::Occupied(occupied) => {
                let slot = occupied.into_mut();
                if !slot.dirty {
                    undo.before(key, Some(&slot.value));
                }
                slot
            }
            hashbrown::hash_map::Entry::Vacant(vacant) => {
                undo.before(key, None);
                vacant.insert(Slot {
                    value: default(),
                    dirty: false,
                })
            }
        };
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(key);
        }
        &mut slot.value
    }

    pub fn insert(&mut self, key: K, value: V) {
        match self.map.entry(key) {
            hashbrown::hash_map::Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                if !slot.dirty {
                    self.undo.before(key, Some(&slot.value));
                    slot.dirty = true;
                    self.dirty.push(key);
                }
                slot.value = value;
            }
            hashbrown::hash_map::Entry::Vacant(vacant) => {
                self.undo.before(key, None);
                vacant.insert(Slot { value, dirty: true });
                self.dirty.push(key);
            }
        }
    }

    /// Removes `key`; the next commit writes a tombstone for it.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        // Logged even if already dirty: the older entry, undone later, wins.
        self.undo.before(*key, Some(&slot.value));
        self.dirty.push(*key);
        Some(slot.value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, slot)| (k, &slot.value))
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
            match self.map.get_mut(&key) {
                Some(slot) if slot.dirty => {
                    slot.dirty = false;
                    value_bytes.clear();
                    slot.value.encode(&mut value_bytes);
                    sink(&key_bytes, Some(&value_bytes));
                }
                // Listed twice (removed, then inserted again): already written.
                Some(_) => {}
                None => sink(&key_bytes, None),
            }
        }
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreCodecError> {
        let store = self.name;
        let key = K::decode(key).map_err(|reason| StoreCodecError::Invalid { store, reason })?;
        match value {
            Some(bytes) => {
                let value = V::decode(bytes)
                    .map_err(|reason| StoreCodecError::Invalid { store, reason })?;
                self.map.insert(
                    key,
                    Slot {
                        value,
                        dirty: false,
                    },
                );
            }
            None => {
                self.map.remove(&key);
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn table_bytes(&self) -> usize {
        self.map.allocation_size() + self.dirty.capacity() * std::mem::size_of::<K>()
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
                    self.map.insert(
                        key,
                        Slot {
                            value,
                            dirty: false,
                        },
                    );
                }
                None => {
                    self.map.remove(&key);
                }
            }
        }
        // Keys changed since the last changelog write are all in the log
        // (their first change took a before-image), so all are back now.
        for key in self.dirty.drain(..) {
            if let Some(slot) = self.map.get_mut(&key) {
                slot.dirty = false;
            }
        }
        undone
    }

    fn dump(&self) -> StoreEntries {
        let mut entries: Vec<_> = self
            .map
            .iter()
            .map(|(k, slot)| {
                let mut key = Vec::new();
                k.encode(&mut key);
                let mut value = Vec::new();
                slot.value.encode(&mut value);
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
}
