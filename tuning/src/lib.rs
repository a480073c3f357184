//! Core maps and tuning knobs, loaded from `tuning/*.toml`.
//!
//! Owns: parsing and validating which core owns which partitions and how a shard
//! waits for work (busy-poll or park).
//! Must never: start threads or talk to Kafka; it only describes a placement.
