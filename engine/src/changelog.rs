//! The changelog layout: which compacted topic each store's changes go to,
//! and how a record of a changelog is routed back to its store at restore.
//!
//! Two layouts (`[state] changelog_layout`, [`ChangelogLayout`]):
//! - **per-store** (the default): one topic per store,
//!   `<application id>-<store>-changelog`, as Kafka Streams names them; a
//!   record's key is the store's own key bytes.
//! - **shared**: one topic for every store of the application,
//!   `<application id>-changelog`, co-partitioned with the inputs like the
//!   per-store ones (partition p holds the state of input partition p). A
//!   record's key is the store's name, length-prefixed, then the store's
//!   own key bytes: `[n: u8][n bytes of the store name, UTF-8][key]`, with
//!   1 ≤ n ≤ 255. The prefix is the store's name, not a number, so it stays
//!   valid when a release adds, drops or reorders stores; compaction keeps
//!   the latest record per (store, key). This is a wire format: changing it
//!   makes existing shared changelogs unreadable.
//!
//! A commit's transaction spans one changelog partition per dirty store per
//! owned partition under per-store, at most one per owned partition under
//! shared: fewer partitions in a transaction, a cheaper commit.
//!
//! Owns: the layout's topic names, the shared key prefix (encoding and
//! decoding), and the routing of a changelog record to its store.
//! Must never: talk to Kafka or know store types; a key whose prefix names
//! no store of the application is a typed error (a corrupt changelog),
//! never a panic and never skipped.

pub use tuning::ChangelogLayout;

use crate::store::StoreCodecError;
use crate::topics::{changelog_topic, shared_changelog_topic};

/// Longest store name the shared layout's one-byte length prefix can carry.
pub const STORE_NAME_BYTES_MAX: usize = u8::MAX as usize;

/// Appends the shared layout's key of `key` in store `store` to `out`:
/// `[len(store)][store][key]`.
///
/// `store` must be 1 to [`STORE_NAME_BYTES_MAX`] bytes (store names are the
/// stages' constants; [`Changelogs::new`] checks them once).
pub fn encode_shared_key(store: &str, key: &[u8], out: &mut Vec<u8>) {
    let name = store.as_bytes();
    debug_assert!(!name.is_empty() && name.len() <= STORE_NAME_BYTES_MAX);
    out.reserve(1 + name.len() + key.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(key);
}

/// Splits a shared changelog key into the store's name (as bytes) and the
/// store's own key bytes.
pub fn decode_shared_key(bytes: &[u8]) -> Result<(&[u8], &[u8]), StoreCodecError> {
    let (&len, rest) = bytes.split_first().ok_or(StoreCodecError::SharedKey {
        reason: "an empty key has no store prefix",
    })?;
    let len = usize::from(len);
    if len == 0 {
        return Err(StoreCodecError::SharedKey {
            reason: "a store prefix of length 0",
        });
    }
    if rest.len() < len {
        return Err(StoreCodecError::SharedKey {
            reason: "a key shorter than its store prefix",
        });
    }
    Ok(rest.split_at(len))
}

/// The logical changelog topics of `stores` of `application_id` under
/// `layout`: one per store, in the stores' order (per-store), or the one
/// shared topic (shared).
pub fn changelog_topics(
    layout: ChangelogLayout,
    application_id: &str,
    stores: &[&str],
) -> Vec<String> {
    match layout {
        ChangelogLayout::PerStore => stores
            .iter()
            .map(|store| changelog_topic(application_id, store))
            .collect(),
        ChangelogLayout::Shared => vec![shared_changelog_topic(application_id)],
    }
}

/// The layout that is not `layout`.
pub fn other_layout(layout: ChangelogLayout) -> ChangelogLayout {
    match layout {
        ChangelogLayout::PerStore => ChangelogLayout::Shared,
        ChangelogLayout::Shared => ChangelogLayout::PerStore,
    }
}

/// The changelog topics of one stage's stores under one layout, and the way
/// between a store and its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changelogs {
    layout: ChangelogLayout,
    /// The stores, in `for_each_store` order.
    stores: Vec<&'static str>,
    /// Logical topic names: one per store (per-store), or one (shared).
    topics: Vec<String>,
    /// Shared: each store's key prefix, `[len][name]`; per-store: empty.
    prefixes: Vec<Vec<u8>>,
}

impl Changelogs {
    /// The changelogs of `stores` (in `for_each_store` order) of
    /// `application_id` under `layout`.
    ///
    /// Panics when a store name is empty or longer than
    /// [`STORE_NAME_BYTES_MAX`] bytes, or two stores share a name: store
    /// names are the stages' constants, so that is a programming error.
    pub fn new(layout: ChangelogLayout, application_id: &str, stores: Vec<&'static str>) -> Self {
        for (i, store) in stores.iter().enumerate() {
            assert!(
                !store.is_empty() && store.len() <= STORE_NAME_BYTES_MAX,
                "store name {store:?} must be 1-{STORE_NAME_BYTES_MAX} bytes"
            );
            assert!(
                !stores[..i].contains(store),
                "two stores are named {store:?}"
            );
        }
        let topics = changelog_topics(layout, application_id, &stores);
        let prefixes = match layout {
            ChangelogLayout::PerStore => Vec::new(),
            ChangelogLayout::Shared => stores
                .iter()
                .map(|store| {
                    let mut prefix = Vec::new();
                    encode_shared_key(store, &[], &mut prefix);
                    prefix
                })
                .collect(),
        };
        Changelogs {
            layout,
            stores,
            topics,
            prefixes,
        }
    }

    pub fn layout(&self) -> ChangelogLayout {
        self.layout
    }

    /// The stores, in `for_each_store` order.
    pub fn stores(&self) -> &[&'static str] {
        &self.stores
    }

    /// The logical changelog topics a partition's state lives in: one per
    /// store (per-store) or one (shared). Read positions (a restore's end, a
    /// standby copy's next offsets) are kept per entry of this list.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The index in [`Self::topics`] of the topic store number `store`
    /// writes to.
    pub fn topic_of(&self, store: usize) -> usize {
        match self.layout {
            ChangelogLayout::PerStore => store,
            ChangelogLayout::Shared => 0,
        }
    }

    /// The key store number `store` writes `key` under: `key` itself
    /// (per-store), or `key` behind the store's prefix, built in `buffer`
    /// (shared).
    pub fn write_key<'k>(&self, store: usize, key: &'k [u8], buffer: &'k mut Vec<u8>) -> &'k [u8] {
        match self.prefixes.get(store) {
            Some(prefix) => {
                buffer.clear();
                buffer.extend_from_slice(prefix);
                buffer.extend_from_slice(key);
                buffer
            }
            None => key,
        }
    }

    /// The store a record of topic number `topic` (of [`Self::topics`])
    /// belongs to, and the store's own key bytes. A shared key whose prefix
    /// is malformed or names no store of the application is an error: the
    /// changelog is corrupt, or written by another application.
    pub fn route<'k>(
        &self,
        topic: usize,
        key: &'k [u8],
    ) -> Result<(usize, &'k [u8]), StoreCodecError> {
        match self.layout {
            ChangelogLayout::PerStore => Ok((topic, key)),
            ChangelogLayout::Shared => {
                let (name, key) = decode_shared_key(key)?;
                match self.stores.iter().position(|s| s.as_bytes() == name) {
                    Some(store) => Ok((store, key)),
                    None => Err(StoreCodecError::UnknownStore {
                        store: String::from_utf8_lossy(name).into_owned(),
                    }),
                }
            }
        }
    }

    /// The topics the *other* layout would keep this state in: a node must
    /// not start when they hold records (they would be ignored, and the
    /// state they hold lost).
    pub fn other_layout_topics(&self, application_id: &str) -> Vec<String> {
        changelog_topics(other_layout(self.layout), application_id, &self.stores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STORES: [&str; 3] = ["payment-accounts", "payment-orders", "inventory-stock"];

    fn both() -> [Changelogs; 2] {
        [
            Changelogs::new(ChangelogLayout::PerStore, "app", STORES.to_vec()),
            Changelogs::new(ChangelogLayout::Shared, "app", STORES.to_vec()),
        ]
    }

    #[test]
    fn per_store_has_a_topic_per_store_and_shared_one_for_all() {
        let [per_store, shared] = both();
        assert_eq!(
            per_store.topics(),
            [
                "app-payment-accounts-changelog",
                "app-payment-orders-changelog",
                "app-inventory-stock-changelog"
            ]
        );
        assert_eq!(per_store.topic_of(2), 2);
        assert_eq!(shared.topics(), ["app-changelog"]);
        assert_eq!(shared.topic_of(2), 0);
        assert_eq!(per_store.other_layout_topics("app"), shared.topics());
        assert_eq!(shared.other_layout_topics("app"), per_store.topics());
    }

    #[test]
    fn the_shared_key_is_the_length_prefixed_store_name_then_the_key() {
        let [per_store, shared] = both();
        let mut buffer = Vec::new();
        assert_eq!(per_store.write_key(1, b"k1", &mut buffer), b"k1");
        let written = shared.write_key(1, b"k1", &mut buffer).to_vec();
        assert_eq!(written, b"\x0epayment-ordersk1");
        assert_eq!(shared.route(0, &written), Ok((1, &b"k1"[..])));
        assert_eq!(per_store.route(1, b"k1"), Ok((1, &b"k1"[..])));
        // An empty store key is a key too.
        let written = shared.write_key(0, b"", &mut buffer).to_vec();
        assert_eq!(shared.route(0, &written), Ok((0, &b""[..])));
    }

    #[test]
    fn a_prefix_naming_no_store_or_malformed_is_an_error_not_a_panic() {
        let [_, shared] = both();
        assert_eq!(
            shared.route(0, b"\x05orderk"),
            Err(StoreCodecError::UnknownStore {
                store: "order".into()
            })
        );
        for bad in [&b""[..], b"\x00key", b"\x10payment-orders", b"\xff"] {
            assert!(
                matches!(shared.route(0, bad), Err(StoreCodecError::SharedKey { .. })),
                "{bad:?}"
            );
        }
        // A key of a known store that is a prefix of another name is not
        // mistaken for it.
        let shorter = Changelogs::new(ChangelogLayout::Shared, "app", vec!["payment"]);
        assert_eq!(
            shorter.route(0, b"\x0epayment-ordersk"),
            Err(StoreCodecError::UnknownStore {
                store: "payment-orders".into()
            })
        );
    }

    proptest! {
        #[test]
        fn a_shared_key_decodes_to_the_store_and_key_it_was_encoded_from(
            store in "[a-z0-9-]{1,255}",
            key in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = Vec::new();
            encode_shared_key(&store, &key, &mut out);
            let (name, rest) = decode_shared_key(&out).expect("decodes");
            prop_assert_eq!(name, store.as_bytes());
            prop_assert_eq!(rest, &key[..]);
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let [_, shared] = both();
            let _ = shared.route(0, &bytes);
        }
    }
}
