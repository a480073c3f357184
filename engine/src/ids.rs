//! Strong types for the things a shard counts and owns: partitions, offsets,
//! shards and input topics.
//!
//! Must never: carry behaviour beyond construction and display; rules live with
//! the code that enforces them.

use std::fmt;

/// A partition number. Every co-partitioned topic (a stage's inputs and its
/// stores' changelogs) has the same partitions, so one number names the unit of
/// ownership: "partition 3" is partition 3 of every one of those topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub i32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A Kafka offset. "The next offset to read" when it describes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

/// A shard: one single-threaded executor, usually pinned to one core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Index of an input topic in its stage's [`crate::stage::Stage::input_topics`]
/// list, so the hot path compares a byte instead of a topic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicIdx(pub u8);

/// Most input topics one stage may read; per-partition progress is a fixed array.
pub const INPUT_TOPICS_MAX: usize = 8;
