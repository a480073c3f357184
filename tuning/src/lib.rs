//! Core maps and tuning knobs, loaded from `tuning/*.toml`.
//!
//! Owns: parsing and validating which core's shard owns which partitions, how a
//! shard waits for work (busy-poll or park), where librdkafka's client threads
//! run, the commit policy and how a failed shard is restarted, the Kafka
//! clients' security settings (`[kafka.security]`, [`security`]); and the
//! questions the engine asks of that placement ([`NodeTuning::owner_of`],
//! [`NodeTuning::partitions_of`], [`NodeTuning::unowned_partitions`]).
//! Must never: start threads, pin anything or talk to Kafka; it only describes
//! a placement. The engine acts on it.
//!
//! Lives on: the thread that starts the engine, once, before any shard exists.
//!
//! # Start-up sequence
//! ```no_run
//! use tuning::{Machine, NodeTuning};
//!
//! # fn topic_partition_counts() -> Vec<(String, u32)> { Vec::new() }
//! # fn main() -> Result<(), tuning::TuningError> {
//! let tuning = NodeTuning::load("tuning/two-cores.toml")?; // syntax and rules
//! let machine = Machine::detect(); // before pinning any thread
//! tuning.validate_against(&machine)?; // every named core exists here
//! for warning in tuning.warnings(&machine) {
//!     tracing::warn!(%warning, "core map");
//! }
//! // Once topic metadata is in: co-partitioned topics must all match.
//! for (topic, partitions) in topic_partition_counts() {
//!     tuning.check_partition_count(&topic, partitions)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # The file
//! ```
//! use tuning::{
//!     ClientThreads, CoreId, IdleStrategy, Machine, NodeTuning, PartitionId, RetryPolicy,
//! };
//!
//! let tuning = NodeTuning::from_toml_str(r#"
//!     [node]
//!     name = "node-a"            # group.instance.id = node-a-<core>
//!
//!     [ownership]
//!     mode = "core-map"          # or "consumer-group" (no partitions listed)
//!     partitions = 8             # every co-partitioned topic has 8
//!
//!     [[shard]]                  # shard[0]
//!     core = 0
//!     partitions = ["0-3"]       # numbers or "first-last" ranges
//!
//!     [[shard]]                  # shard[1]
//!     core = 1
//!     partitions = [3, "4-7"]    # 3 again: a mistake
//!
//!     [runtime]                  # optional; these are the defaults
//!     idle = "park"              # or "busy-poll"
//!     park_us = 200
//!     client_threads = "unpinned" # or "shard-core", or { cores = [2, 3] }
//!
//!     [commit]                   # optional; these are the defaults
//!     interval_ms = 100
//!     on_drain = true
//!     guarantee = "exactly-once" # or "at-least-once"
//!
//!     [retry]                    # optional; these are the defaults
//!     attempts_max = 10          # restarts per failure streak
//!     deadline_ms = 120000       # longest failure streak
//!     backoff_min_ms = 100       # first wait, doubling per restart
//!     backoff_max_ms = 10000     # longest wait
//!
//!     [state]                    # optional; this is the default
//!     order_retention = "24h"    # finished orders kept (event time): ms, s, m, h, d
//! "#);
//! // Partition 3 appears in both shards: refused, naming the key.
//! let error = tuning.unwrap_err();
//! assert!(error.to_string().contains(
//!     "shard[1].partitions: partition 3 is already owned by shard[0] (core 0)"));
//!
//! let tuning = NodeTuning::from_toml_str(r#"
//!     [node]
//!     name = "node-a"
//!     [ownership]
//!     mode = "core-map"
//!     partitions = 8
//!     [[shard]]
//!     core = 0
//!     partitions = [0, 2, 4, 6]
//!     [[shard]]
//!     core = 1
//!     partitions = [1, 3, 5, 7]
//! "#)?;
//! tuning.validate_against(&Machine::with_cores(2))?;
//! assert_eq!(tuning.owner_of(PartitionId(5)), Some(CoreId(1)));
//! assert_eq!(tuning.partitions_of(CoreId(0)), &[0, 2, 4, 6].map(PartitionId));
//! assert!(tuning.unowned_partitions().is_empty());
//! assert_eq!(tuning.runtime().idle, IdleStrategy::Park { park_us: 200 });
//! assert_eq!(tuning.runtime().client_threads, ClientThreads::Unpinned);
//! assert_eq!(tuning.retry(), RetryPolicy::default());
//! assert!(tuning.validate_against(&Machine::with_cores(1)).is_err());
//! # Ok::<(), tuning::TuningError>(())
//! ```
//!
//! `tuning/README.md` explains every knob and when to turn it; the shipped
//! files (`one-core.toml`, `two-cores.toml`, `dedicated-8-core.toml`,
//! `consumer-group.toml`) are commented examples.
//!
//! # Errors
//! Every rule a map breaks becomes a [`Problem`] that names its [`Key`] as
//! written in the file (`shard[1].partitions`, counting `[[shard]]` tables from
//! 0), its line when the map came from text, and what to do about it; all
//! broken rules are reported at once. Syntax and type errors carry toml's
//! message with the file's path, line and column. Suspicious but workable maps
//! produce [`Warning`]s instead (see [`NodeTuning::warnings`]).

mod error;
mod file;
mod ids;
pub mod limits;
mod machine;
mod model;
mod position;
pub mod security;
mod validate;
pub mod wire;

pub use error::{Key, Location, Problem, ProblemKind, TuningError, Warning, WarningKind};
pub use ids::{CoreId, NodeName, NodeNameError, PartitionId};
pub use machine::Machine;
pub use model::{
    ApiAuth, ApiMetricsAccess, ApiSection, ApiTls, ChangelogLayout, ClientThreads, CommitPolicy,
    CommitTiming, Guarantee, IdleStrategy, NodeKnobs, NodeSection, NodeTuning, Ownership,
    OwnershipMode, RetryPolicy, RuntimeKnobs, ShardPlacement, StateSection, UnknownGuarantee,
};
pub use security::{KafkaSecurity, Secret, SecurityError};
pub use wire::{ValueFormat, WireSettings, WireSettingsError};
