//! Property tests: random valid core maps survive a write and a read, and the
//! ownership questions agree with the shard lists.
//!
//! Owns: the generator of valid core maps and the invariants every one of them
//! keeps. Must never: use a fixed seed silently; proptest prints the failing
//! case and persists it for replay.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tuning::{
    ClientThreads, CommitPolicy, CommitTiming, CoreId, Guarantee, IdleStrategy, Machine, NodeName,
    NodeSection, NodeTuning, Ownership, OwnershipMode, PartitionId, RetryPolicy, RuntimeKnobs,
    ShardPlacement,
};

/// A valid placement: distinct shard cores and, in core-map mode, each
/// partition given to at most one shard, with every shard owning at least one
/// and some partitions left unowned as another node's.
fn placement() -> impl Strategy<Value = (Ownership, Vec<ShardPlacement>)> {
    (
        proptest::sample::subsequence((0usize..16).collect::<Vec<_>>(), 1..=8),
        1usize..64,
        any::<bool>(),
    )
        .prop_flat_map(|(cores, count, consumer_group)| {
            let count = count.max(cores.len());
            // owners[p] indexes `cores`; `cores.len()` means "another node".
            let owners = proptest::collection::vec(0..=cores.len(), count);
            (Just(cores), Just(consumer_group), owners)
        })
        .prop_map(|(cores, consumer_group, owners)| {
            let mut shards: Vec<ShardPlacement> = cores
                .iter()
                .map(|&core| ShardPlacement {
                    core: CoreId(core),
                    partitions: Vec::new(),
                })
                .collect();
            let mode = if consumer_group {
                OwnershipMode::ConsumerGroup
            } else {
                // The first partitions go one to each shard, so none is empty.
                for (p, &owner) in owners.iter().enumerate() {
                    let owner = if p < shards.len() { p } else { owner };
                    if let Some(shard) = shards.get_mut(owner) {
                        shard.partitions.push(PartitionId(p as i32));
                    }
                }
                OwnershipMode::CoreMap
            };
            let ownership = Ownership {
                mode,
                partitions: owners.len() as u32,
                session_ms: tuning::limits::NODE_SESSION_MS_DEFAULT,
                liveness_addr: None,
            };
            (ownership, shards)
        })
}

/// Knobs within their limits; client cores (16-19) never hold a shard, and
/// "shard-core" only comes with parking, as the rules require.
fn knobs() -> impl Strategy<Value = (RuntimeKnobs, CommitPolicy)> {
    let idle = prop_oneof![
        Just(IdleStrategy::BusyPoll),
        (1u32..=100_000).prop_map(|park_us| IdleStrategy::Park { park_us }),
    ];
    let client_threads = prop_oneof![
        Just(ClientThreads::Unpinned),
        Just(ClientThreads::ShardCore),
        proptest::sample::subsequence((16usize..20).collect::<Vec<_>>(), 1..=4)
            .prop_map(|cores| ClientThreads::Cores(cores.into_iter().map(CoreId).collect())),
    ];
    let guarantee = prop_oneof![Just(Guarantee::ExactlyOnce), Just(Guarantee::AtLeastOnce),];
    let timing = prop_oneof![Just(CommitTiming::Interval), Just(CommitTiming::Adaptive)];
    // The adaptive keys as fractions of the interval, so they stay in range.
    let adaptive = (0.0f64..=1.0, 0.0f64..=1.0, 1u32..=100, 1u32..=100_000);
    (
        idle,
        client_threads,
        1u32..=5_000,
        any::<bool>(),
        guarantee,
        timing,
        adaptive,
    )
        .prop_map(
            |(idle, client_threads, interval_ms, on_drain, guarantee, timing, adaptive)| {
                let (target, min_gap, busy_percent_max, transactions_per_s_max) = adaptive;
                let target_latency_ms =
                    ((f64::from(interval_ms) * target) as u32).clamp(1, interval_ms);
                let min_interval_ms = (f64::from(interval_ms) * min_gap) as u32;
                let client_threads = match (idle, client_threads) {
                    (IdleStrategy::BusyPoll, ClientThreads::ShardCore) => ClientThreads::Unpinned,
                    (_, other) => other,
                };
                let runtime = RuntimeKnobs {
                    idle,
                    client_threads,
                };
                let commit = CommitPolicy {
                    interval_ms,
                    on_drain,
                    guarantee,
                    timing,
                    target_latency_ms,
                    min_interval_ms,
                    busy_percent_max,
                    transactions_per_s_max,
                };
                (runtime, commit)
            },
        )
}

/// A retry policy within its limits: the first wait no longer than the
/// longest, and a deadline no shorter than the first wait.
fn retry() -> impl Strategy<Value = RetryPolicy> {
    (1u32..=1_000, 1u32..=600_000)
        .prop_flat_map(|(attempts_max, backoff_min_ms)| {
            (
                Just(attempts_max),
                Just(backoff_min_ms),
                backoff_min_ms..=600_000,
                backoff_min_ms..=3_600_000,
            )
        })
        .prop_map(
            |(attempts_max, backoff_min_ms, backoff_max_ms, deadline_ms)| RetryPolicy {
                attempts_max,
                deadline_ms,
                backoff_min_ms,
                backoff_max_ms,
            },
        )
}

fn valid_map() -> impl Strategy<Value = NodeTuning> {
    (
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?",
        placement(),
        knobs(),
        retry(),
    )
        .prop_map(|(name, (ownership, shards), (runtime, commit), retry)| {
            let name = NodeName::new(name).unwrap_or_else(|e| panic!("generator: {e}"));
            NodeTuning::new(
                NodeSection { name },
                ownership,
                shards,
                runtime,
                commit,
                retry,
            )
            .unwrap_or_else(|e| panic!("the generator made an invalid map: {e}"))
        })
}

proptest! {
    #[test]
    fn valid_maps_round_trip_through_toml(tuning in valid_map()) {
        let text = tuning.to_toml_string();
        let again = NodeTuning::from_toml_str(&text);
        prop_assert!(again.is_ok(), "{text}\n{again:?}");
        let again = again.unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(&again, &tuning, "{}", text);
        // And writing is stable: the text of the re-read map is the same.
        prop_assert_eq!(again.to_toml_string(), text);
        prop_assert!(tuning.validate_against(&Machine::with_cores(20)).is_ok());
    }

    #[test]
    fn owner_of_agrees_with_the_shard_lists(tuning in valid_map()) {
        let core_map = tuning.ownership().mode == OwnershipMode::CoreMap;
        let mut owned = BTreeSet::new();
        for shard in tuning.shards() {
            prop_assert_eq!(tuning.partitions_of(shard.core), shard.partitions.as_slice());
            for &p in &shard.partitions {
                // No partition has two owners.
                prop_assert!(owned.insert(p), "partition {} owned twice", p);
                prop_assert_eq!(tuning.owner_of(p), Some(shard.core));
            }
        }
        let count = i32::try_from(tuning.ownership().partitions).unwrap_or(i32::MAX);
        let unowned = tuning.unowned_partitions();
        for p in (0..count).map(PartitionId) {
            let owner = tuning.owner_of(p);
            prop_assert_eq!(owner.is_some(), owned.contains(&p));
            prop_assert_eq!(unowned.contains(&p), core_map && owner.is_none());
        }
        prop_assert_eq!(tuning.owner_of(PartitionId(count)), None);
        prop_assert_eq!(tuning.owner_of(PartitionId(-1)), None);
    }
}
