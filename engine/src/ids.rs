//! Strong types for the things a shard counts and owns: partitions, offsets,
//! shards and input topics.
//!
//! Must never: carry behaviour beyond construction and display; rules live with
//! the code that enforces them.

use std::fmt;

/// A partition number: "partition 3" is partition 3 of every co-partitioned
/// topic. Core maps name partitions, so the type is `tuning`'s, shared here.
pub use tuning::{CoreId, PartitionId};

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
