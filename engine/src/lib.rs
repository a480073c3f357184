//! tradeflow's engine: shards pinned to cores, each owning a disjoint set of Kafka
//! partitions and the in-memory stores of their keys.
//!
//! Owns: shards, partition ownership, stores, changelog snapshots and restore,
//! and the only code that touches rdkafka and glommio types.
//! Must never: share a lock between shards on the data path, or commit an input
//! offset before the state change it caused has reached its changelog.
