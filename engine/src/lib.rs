//! tradeflow's engine: shards pinned to cores, each owning a disjoint set of Kafka
//! partitions and the in-memory stores of their keys.
//!
//! Owns: shards, partition ownership, stores, changelog snapshots and restore,
//! and the only code that touches rdkafka and glommio types.
//! Must never: share a lock between shards on the data path, or commit an input
//! offset before the state change it caused has reached its changelog.

pub mod access;
pub mod cadence;
pub mod changelog;
pub mod deployment;
pub mod ids;
pub mod kafka;
pub mod liveness;
pub mod partitioner;
pub mod port;
pub mod runtime;
pub mod shard;
pub mod sim;
pub mod stage;
pub mod standby;
pub mod store;
pub mod telemetry;
pub mod topics;
pub mod wire;

pub use ids::{Offset, PartitionId, ShardId, TopicIdx};
pub use port::{InputOffset, InputRecord, KafkaPort, OutRecord, Polled, PortError};
pub use shard::{Shard, ShardError, ShardStats, Step};
pub use stage::{EmitError, ErrorClass, Input, Outbox, Rejection, Stage};
pub use store::{ChangelogStore, PartitionStores, Store, StoreKey, StoreValue};
pub use telemetry::{MetricsSnapshot, Telemetry, Timing};
