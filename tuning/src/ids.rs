//! Strong types for what a core map names: CPU cores, partitions and the node.
//!
//! Owns: [`CoreId`], [`PartitionId`], [`NodeName`] (with its spelling rule) and
//! the compact `0-3, 8` rendering used in messages and written files.
//! Must never: know about shards, modes or machines; rules that relate ids to
//! each other live in the validator.

use std::fmt;

use crate::limits::NODE_NAME_BYTES_MAX;

/// A CPU number, as Linux numbers them (`/proc/cpuinfo`'s `processor`, the
/// bits of `sched_setaffinity`'s mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition number. Every co-partitioned topic (a stage's inputs and its
/// stores' changelogs) has the same partitions, so "partition 3" is partition 3
/// of each of them and one number names the unit of ownership. `i32` because
/// that is Kafka's (and librdkafka's) partition type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub i32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `node.name`: 1 to [`NODE_NAME_BYTES_MAX`] characters from `a-z`, `0-9` and
/// `-`, neither starting nor ending with `-`.
///
/// Kafka identities are derived from it, so two nodes must never share one:
/// [`NodeName::instance_id`] gives `<name>-<core>` for a shard's
/// `group.instance.id` and transactional id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Checks the spelling rule; the error says which part of it `name` breaks.
    pub fn new(name: impl Into<String>) -> Result<NodeName, NodeNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if name.len() > NODE_NAME_BYTES_MAX {
            return Err(NodeNameError::TooLong { bytes: name.len() });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NodeNameError::BadCharacter { character: bad });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(NodeNameError::EdgeHyphen);
        }
        Ok(NodeName(name))
    }

    /// Stands in for a name that did not pass, so that the rest of a file can
    /// still be checked and every problem reported at once. Never escapes a
    /// failed validation.
    pub(crate) fn placeholder() -> NodeName {
        NodeName("invalid".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<name>-<core>`: the stable identity of this node's shard on `core`, for
    /// its `group.instance.id` (static membership) and as the per-shard part of
    /// its transactional id. Stable across restarts as long as the shard stays
    /// on the same core, which is what lets the broker fence the previous run's
    /// producer.
    pub fn instance_id(&self, core: CoreId) -> String {
        format!("{}-{}", self.0, core.0)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a [`NodeName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("it is empty")]
    Empty,
    #[error("it is {bytes} bytes long, more than {NODE_NAME_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("it contains {character:?}")]
    BadCharacter { character: char },
    #[error("it starts or ends with '-'")]
    EdgeHyphen,
}

/// Renders numbers compactly, sorted and de-duplicated: runs become `a-b`, so
/// `[0, 1, 2, 3, 8]` reads `0-3, 8`. Used for messages about
/// cores and partitions, which are long lists on big nodes.
pub(crate) fn ranges_text(ids: impl IntoIterator<Item = i64>) -> String {
    runs(ids)
        .into_iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits numbers into maximal runs of consecutive values `(first, last)`,
/// after sorting and de-duplicating them.
pub(crate) fn runs(ids: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut ids: Vec<i64> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => out.push((id, id)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_the_spelling_rule() {
        assert!(NodeName::new("node-a").is_ok());
        assert!(NodeName::new("n0").is_ok());
        assert_eq!(NodeName::new(""), Err(NodeNameError::Empty));
        assert_eq!(
            NodeName::new("Node-A"),
            Err(NodeNameError::BadCharacter { character: 'N' })
        );
        assert_eq!(
            NodeName::new("node_a"),
            Err(NodeNameError::BadCharacter { character: '_' })
        );
        assert_eq!(NodeName::new("-a"), Err(NodeNameError::EdgeHyphen));
        assert_eq!(NodeName::new("a-"), Err(NodeNameError::EdgeHyphen));
        assert!(NodeName::new("a".repeat(NODE_NAME_BYTES_MAX)).is_ok());
        assert_eq!(
            NodeName::new("a".repeat(NODE_NAME_BYTES_MAX + 1)),
            Err(NodeNameError::TooLong {
                bytes: NODE_NAME_BYTES_MAX + 1
            })
        );
    }

    #[test]
    fn instance_ids_join_name_and_core() {
        let name = NodeName::new("node-a").expect("valid name");
        assert_eq!(name.instance_id(CoreId(3)), "node-a-3");
    }

    #[test]
    fn ranges_text_compresses_runs() {
        assert_eq!(ranges_text([]), "");
        assert_eq!(ranges_text([5]), "5");
        assert_eq!(ranges_text([1, 0]), "0-1");
        assert_eq!(ranges_text([3, 0, 1, 2, 8, 8, 10, 11]), "0-3, 8, 10-11");
    }
}
