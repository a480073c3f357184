//! The rules a core map must satisfy, in three stages: on its own
//! ([`NodeTuning::new`]), on the machine that runs it
//! ([`NodeTuning::validate_against`]) and against the topics' real partition
//! counts ([`NodeTuning::check_partition_count`]); plus the warnings.
//!
//! Owns: deciding what is an error (the engine must not start) and what is a
//! warning (it may start, but should say so), and naming the key of each.
//! Must never: read files or the environment; the caller passes the machine
//! and the topic metadata in, so every rule runs the same under test.

use std::collections::HashMap;

use crate::error::{Key, Problem, ProblemKind, TuningError, Warning, WarningKind};
use crate::ids::{CoreId, PartitionId};
use crate::limits::{
    COMMIT_INTERVAL_MS_MAX, COMMIT_TRANSACTIONS_PER_S_LIMIT, CORES_MAX,
    EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX, NODE_SESSION_MS_MAX, NODE_SESSION_MS_MIN,
    ORDER_RETENTION_MS_LIMIT, PARK_US_MAX, PARTITIONS_MAX, RETRY_ATTEMPTS_MAX_LIMIT,
    RETRY_BACKOFF_MS_LIMIT, RETRY_DEADLINE_MS_LIMIT, STANDBY_REPLICAS_MAX,
};
use crate::machine::Machine;
use crate::model::{
    ClientThreads, CommitPolicy, Guarantee, IdleStrategy, NodeKnobs, NodeSection, NodeTuning,
    Origin, Ownership, OwnershipMode, RetryPolicy, RuntimeKnobs, Sections, ShardPlacement,
    StateSection,
};

impl NodeKnobs {
    /// Checks the sections by the rules their keys obey in a core map and
    /// builds the knobs; all broken rules are reported together, each
    /// naming its key (`commit.interval_ms`, `retry.backoff_min_ms`, ...).
    /// The rules that relate a section to the shard placement (client
    /// cores on a spinning shard's core, standbys in core-map mode) need
    /// the map and are checked by [`NodeTuning::new`] and the file reader.
    pub fn new(
        runtime: RuntimeKnobs,
        commit: CommitPolicy,
        retry: RetryPolicy,
        state: StateSection,
    ) -> Result<NodeKnobs, TuningError> {
        let mut problems = Vec::new();
        check_runtime(&runtime, &[], &mut problems);
        check_commit(commit, &mut problems);
        check_retry(retry, &mut problems);
        check_state(state, &mut problems);
        if !problems.is_empty() {
            return Err(TuningError::Invalid {
                path: None,
                problems,
            });
        }
        let mut runtime = runtime;
        if let ClientThreads::Cores(cores) = &mut runtime.client_threads {
            cores.sort_unstable();
        }
        Ok(NodeKnobs {
            runtime,
            commit,
            retry,
            state,
        })
    }
}

impl NodeTuning {
    /// Builds a map from its sections, checking every rule that does not
    /// depend on the machine. All broken rules are reported together.
    ///
    /// Partition lists (and client-thread core lists) may come in any order;
    /// the map keeps them ascending.
    pub fn new(
        node: NodeSection,
        ownership: Ownership,
        shards: Vec<ShardPlacement>,
        runtime: RuntimeKnobs,
        commit: CommitPolicy,
        retry: RetryPolicy,
    ) -> Result<NodeTuning, TuningError> {
        NodeTuning::build(
            (node, ownership, shards, runtime, commit, retry),
            Vec::new(),
            None,
        )
    }

    /// Checks `sections` and builds the map. `read_problems` are what reading
    /// the file already found; a key named there is not checked again, since
    /// its typed value is only what could be read of it.
    pub(crate) fn build(
        sections: Sections,
        read_problems: Vec<Problem>,
        origin: Option<Origin>,
    ) -> Result<NodeTuning, TuningError> {
        let (node, ownership, mut shards, mut runtime, commit, retry) = sections;
        let mut found = Vec::new();
        check_ownership(ownership, &shards, &mut found);
        check_runtime(&runtime, &shards, &mut found);
        check_commit(commit, &mut found);
        check_retry(retry, &mut found);
        let mut problems = read_problems;
        let already_reported: Vec<Key> = problems.iter().map(|p| p.key.clone()).collect();
        problems.extend(
            found
                .into_iter()
                .filter(|p| !already_reported.contains(&p.key)),
        );
        if !problems.is_empty() {
            return Err(match origin {
                Some(origin) => origin.invalid(problems),
                None => TuningError::Invalid {
                    path: None,
                    problems,
                },
            });
        }

        for shard in &mut shards {
            shard.partitions.sort_unstable();
        }
        if let ClientThreads::Cores(cores) = &mut runtime.client_threads {
            cores.sort_unstable();
        }
        let owners = owners_by_partition(ownership, &shards);
        Ok(NodeTuning {
            node,
            ownership,
            shards,
            runtime,
            commit,
            retry,
            api: crate::model::ApiSection::default(),
            state: crate::model::StateSection::default(),
            owners,
            origin,
        })
    }

    /// Checks the map against the machine it is about to run on: every core it
    /// names (shards and client threads) must be one this process may use.
    pub fn validate_against(&self, machine: &Machine) -> Result<(), TuningError> {
        let mut problems = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            if !machine.has_core(shard.core) {
                problems.push(Problem::new(
                    Key::shard(index).dot("core"),
                    ProblemKind::CoreMissing {
                        core: shard.core,
                        machine_cores: machine.cores_text(),
                    },
                ));
            }
        }
        if let ClientThreads::Cores(cores) = &self.runtime.client_threads {
            for core in cores.iter().filter(|c| !machine.has_core(**c)) {
                problems.push(Problem::new(
                    client_cores_key(),
                    ProblemKind::CoreMissing {
                        core: *core,
                        machine_cores: machine.cores_text(),
                    },
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(problems))
        }
    }

    /// Checks one topic's real partition count (from metadata) against
    /// `ownership.partitions`. Call it for every input topic and changelog:
    /// co-partitioning means partition `p` of each of them holds the same keys,
    /// which is only true when all have the same count.
    pub fn check_partition_count(&self, topic: &str, actual: u32) -> Result<(), TuningError> {
        if actual == self.ownership.partitions {
            return Ok(());
        }
        Err(self.invalid(vec![Problem::new(
            Key::at("ownership").dot("partitions"),
            ProblemKind::PartitionCountMismatch {
                topic: topic.to_owned(),
                expected: self.ownership.partitions,
                actual,
            },
        )]))
    }

    /// What the engine should log at start-up about this map on `machine`:
    /// nothing here stops it, but each is a likely mistake or a latency cost.
    pub fn warnings(&self, machine: &Machine) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let unowned = self.unowned_partitions();
        if !unowned.is_empty() {
            warnings.push(Warning {
                key: Key::at("ownership").dot("partitions"),
                kind: WarningKind::UnownedPartitions {
                    partitions: unowned,
                },
            });
        }

        match self.runtime.idle {
            IdleStrategy::Park { park_us } => {
                if let ClientThreads::Cores(cores) = &self.runtime.client_threads {
                    let shared: Vec<CoreId> = cores
                        .iter()
                        .copied()
                        .filter(|c| self.shard_on(*c).is_some())
                        .collect();
                    if !shared.is_empty() {
                        warnings.push(Warning {
                            key: client_cores_key(),
                            kind: WarningKind::ClientCoresShareShardCores { cores: shared },
                        });
                    }
                }
                if u64::from(park_us) > u64::from(self.commit.interval_ms) * 1_000 {
                    warnings.push(Warning {
                        key: Key::at("runtime").dot("park_us"),
                        kind: WarningKind::ParkOutlastsCommitInterval {
                            park_us,
                            interval_ms: self.commit.interval_ms,
                        },
                    });
                }
            }
            IdleStrategy::BusyPoll => {
                // Every core we may use spins: nothing is left for librdkafka's
                // threads (or a co-located broker) but preemption slices.
                let spinning_everywhere =
                    machine.core_count() > 0 && machine.cores().all(|c| self.shard_on(c).is_some());
                if spinning_everywhere {
                    warnings.push(Warning {
                        key: Key::at("runtime").dot("idle"),
                        kind: WarningKind::EveryCoreBusyPolls {
                            cores: machine.cores().collect(),
                        },
                    });
                }
            }
        }
        warnings
    }
}

fn client_cores_key() -> Key {
    Key::at("runtime").dot("client_threads").dot("cores")
}

fn check_ownership(ownership: Ownership, shards: &[ShardPlacement], problems: &mut Vec<Problem>) {
    let count_ok = (1..=PARTITIONS_MAX).contains(&ownership.partitions);
    if !count_ok {
        problems.push(Problem::new(
            Key::at("ownership").dot("partitions"),
            ProblemKind::PartitionCountOutOfRange {
                value: i64::from(ownership.partitions),
            },
        ));
    }
    if !(NODE_SESSION_MS_MIN..=NODE_SESSION_MS_MAX).contains(&ownership.session_ms) {
        problems.push(Problem::new(
            Key::at("ownership").dot("session_ms"),
            ProblemKind::NodeSessionOutOfRange {
                value: i64::from(ownership.session_ms),
            },
        ));
    }
    if ownership.liveness_addr.is_some() && ownership.mode == OwnershipMode::CoreMap {
        problems.push(Problem::new(
            Key::at("ownership").dot("liveness_addr"),
            ProblemKind::LivenessInCoreMap,
        ));
    }
    if shards.is_empty() {
        problems.push(Problem::new(Key::at("shard"), ProblemKind::NoShards));
    }

    let mut shard_of_core: HashMap<CoreId, usize> = HashMap::new();
    let mut shard_of_partition: HashMap<PartitionId, usize> = HashMap::new();
    for (index, shard) in shards.iter().enumerate() {
        let core_key = Key::shard(index).dot("core");
        if shard.core.0 >= CORES_MAX {
            problems.push(Problem::new(
                core_key,
                ProblemKind::CoreOutOfRange {
                    core: i64::try_from(shard.core.0).unwrap_or(i64::MAX),
                },
            ));
        } else if let Some(&other_shard) = shard_of_core.get(&shard.core) {
            problems.push(Problem::new(
                core_key,
                ProblemKind::CoreListedTwice {
                    core: shard.core,
                    other_shard,
                },
            ));
        } else {
            shard_of_core.insert(shard.core, index);
        }

        let partitions_key = Key::shard(index).dot("partitions");
        match ownership.mode {
            OwnershipMode::ConsumerGroup => {
                if !shard.partitions.is_empty() {
                    problems.push(Problem::new(
                        partitions_key,
                        ProblemKind::PartitionsFromGroup,
                    ));
                }
            }
            OwnershipMode::CoreMap => {
                if shard.partitions.is_empty() {
                    problems.push(Problem::new(
                        partitions_key.clone(),
                        ProblemKind::NoPartitions,
                    ));
                }
                for &partition in &shard.partitions {
                    let in_range = partition.0 >= 0
                        && u32::try_from(partition.0).is_ok_and(|p| p < ownership.partitions);
                    // With a bad count every partition would be "out of
                    // range"; the count's own problem says enough.
                    if count_ok && !in_range {
                        problems.push(Problem::new(
                            partitions_key.clone(),
                            ProblemKind::PartitionOutOfRange {
                                partition: i64::from(partition.0),
                                count: ownership.partitions,
                            },
                        ));
                        continue;
                    }
                    match shard_of_partition.get(&partition) {
                        Some(&other) if other == index => problems.push(Problem::new(
                            partitions_key.clone(),
                            ProblemKind::PartitionListedTwice { partition },
                        )),
                        Some(&other_shard) => problems.push(Problem::new(
                            partitions_key.clone(),
                            ProblemKind::PartitionOwnedTwice {
                                partition,
                                other_shard,
                                other_core: shards[other_shard].core,
                            },
                        )),
                        None => {
                            shard_of_partition.insert(partition, index);
                        }
                    }
                }
            }
        }
    }
}

fn check_runtime(runtime: &RuntimeKnobs, shards: &[ShardPlacement], problems: &mut Vec<Problem>) {
    if let IdleStrategy::Park { park_us } = runtime.idle {
        if !(1..=PARK_US_MAX).contains(&park_us) {
            problems.push(Problem::new(
                Key::at("runtime").dot("park_us"),
                ProblemKind::ParkUsOutOfRange {
                    value: i64::from(park_us),
                },
            ));
        }
    }
    let busy_poll = runtime.idle == IdleStrategy::BusyPoll;
    match &runtime.client_threads {
        ClientThreads::Unpinned => {}
        ClientThreads::ShardCore => {
            if busy_poll {
                problems.push(Problem::new(
                    Key::at("runtime").dot("client_threads"),
                    ProblemKind::ShardCoreClientsWithBusyPoll,
                ));
            }
        }
        ClientThreads::Cores(cores) => {
            if cores.is_empty() {
                problems.push(Problem::new(client_cores_key(), ProblemKind::NoClientCores));
            }
            let mut seen: Vec<CoreId> = Vec::with_capacity(cores.len());
            for &core in cores {
                if core.0 >= CORES_MAX {
                    problems.push(Problem::new(
                        client_cores_key(),
                        ProblemKind::CoreOutOfRange {
                            core: i64::try_from(core.0).unwrap_or(i64::MAX),
                        },
                    ));
                    continue;
                }
                if seen.contains(&core) {
                    problems.push(Problem::new(
                        client_cores_key(),
                        ProblemKind::ClientCoreListedTwice { core },
                    ));
                    continue;
                }
                seen.push(core);
                // A spinning shard never yields its core, so client threads
                // pinned there run only when the scheduler preempts it: every
                // fetch and produce then waits a time slice.
                if busy_poll {
                    if let Some(shard) = shards.iter().position(|s| s.core == core) {
                        problems.push(Problem::new(
                            client_cores_key(),
                            ProblemKind::ClientCoreRunsSpinningShard { core, shard },
                        ));
                    }
                }
            }
        }
    }
}

/// The range of an adaptive `[commit]` key, given the commit interval: a
/// latency target or a minimum gap longer than the interval would never
/// apply, since the interval commits first.
pub(crate) fn commit_key_range(name: &str, interval_ms: u32) -> (i64, i64, &'static str) {
    let interval = i64::from(interval_ms);
    match name {
        "target_latency_ms" => (1, interval, "ms, at most commit.interval_ms"),
        "min_interval_ms" => (0, interval, "ms, at most commit.interval_ms"),
        "busy_percent_max" => (1, 100, "percent of a shard's time"),
        _ => (
            1,
            i64::from(COMMIT_TRANSACTIONS_PER_S_LIMIT),
            "commits per second per node",
        ),
    }
}

fn check_commit(commit: CommitPolicy, problems: &mut Vec<Problem>) {
    let max = match commit.guarantee {
        Guarantee::ExactlyOnce => EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX,
        Guarantee::AtLeastOnce => COMMIT_INTERVAL_MS_MAX,
    };
    // The ms keys are bounded by the interval: judged only against a valid one.
    let interval_valid = (1..=max).contains(&commit.interval_ms);
    for (name, value) in [
        ("target_latency_ms", commit.target_latency_ms),
        ("min_interval_ms", commit.min_interval_ms),
        ("busy_percent_max", commit.busy_percent_max),
        ("transactions_per_s_max", commit.transactions_per_s_max),
    ] {
        let range = commit_key_range(name, commit.interval_ms);
        if name.ends_with("_ms") && !interval_valid {
            continue;
        }
        if !(range.0..=range.1).contains(&i64::from(value)) {
            problems.push(Problem::new(
                Key::at("commit").dot(name),
                ProblemKind::CommitKeyOutOfRange {
                    value: i64::from(value),
                    range,
                },
            ));
        }
    }
    let max = match commit.guarantee {
        Guarantee::ExactlyOnce => EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX,
        Guarantee::AtLeastOnce => COMMIT_INTERVAL_MS_MAX,
    };
    if !(1..=max).contains(&commit.interval_ms) {
        problems.push(Problem::new(
            Key::at("commit").dot("interval_ms"),
            ProblemKind::CommitIntervalOutOfRange {
                value: i64::from(commit.interval_ms),
                guarantee: commit.guarantee,
            },
        ));
    }
}

fn retry_key(name: &'static str) -> Key {
    Key::at("retry").dot(name)
}

/// Each value in its range, then the rules between them. A relation is only
/// checked between values that are in range themselves, so a bad value (or
/// the stand-in for one that could not be read) is reported once, on its own
/// key.
fn check_retry(retry: RetryPolicy, problems: &mut Vec<Problem>) {
    if retry.attempts_max == 0 {
        problems.push(Problem::new(
            retry_key("attempts_max"),
            ProblemKind::RetryAttemptsZero,
        ));
    } else if retry.attempts_max > RETRY_ATTEMPTS_MAX_LIMIT {
        problems.push(Problem::new(
            retry_key("attempts_max"),
            ProblemKind::RetryAttemptsOutOfRange {
                value: i64::from(retry.attempts_max),
            },
        ));
    }
    let deadline_ok = (1..=RETRY_DEADLINE_MS_LIMIT).contains(&retry.deadline_ms);
    if !deadline_ok {
        problems.push(Problem::new(
            retry_key("deadline_ms"),
            ProblemKind::RetryDeadlineOutOfRange {
                value: i64::from(retry.deadline_ms),
            },
        ));
    }
    let mut backoff_ok = |name, value: u32| {
        let ok = (1..=RETRY_BACKOFF_MS_LIMIT).contains(&value);
        if !ok {
            problems.push(Problem::new(
                retry_key(name),
                ProblemKind::RetryBackoffOutOfRange {
                    value: i64::from(value),
                },
            ));
        }
        ok
    };
    let min_ok = backoff_ok("backoff_min_ms", retry.backoff_min_ms);
    let max_ok = backoff_ok("backoff_max_ms", retry.backoff_max_ms);

    if min_ok && max_ok && retry.backoff_min_ms > retry.backoff_max_ms {
        problems.push(Problem::new(
            retry_key("backoff_min_ms"),
            ProblemKind::RetryBackoffMinAboveMax {
                min_ms: retry.backoff_min_ms,
                max_ms: retry.backoff_max_ms,
            },
        ));
    }
    // The engine checks the deadline when a restarted shard fails again: a
    // streak shorter than its first wait ends at the first failure after the
    // first restart, which is hardly a retry policy.
    if deadline_ok && min_ok && retry.deadline_ms < retry.backoff_min_ms {
        problems.push(Problem::new(
            retry_key("deadline_ms"),
            ProblemKind::RetryDeadlineBeforeFirstRestart {
                deadline_ms: retry.deadline_ms,
                backoff_min_ms: retry.backoff_min_ms,
            },
        ));
    }
}

/// `[state]` values built in code, by the ranges the file reader applies
/// (the file reader checks its text itself, and that standbys need
/// consumer-group mode).
fn check_state(state: StateSection, problems: &mut Vec<Problem>) {
    if state.standby_replicas > STANDBY_REPLICAS_MAX {
        problems.push(Problem::new(
            Key::at("state").dot("standby_replicas"),
            ProblemKind::StandbyReplicasOutOfRange {
                value: i64::from(state.standby_replicas),
            },
        ));
    }
    if !(1..=ORDER_RETENTION_MS_LIMIT).contains(&state.order_retention_ms) {
        problems.push(Problem::new(
            Key::at("state").dot("order_retention"),
            ProblemKind::OrderRetention {
                text: format!("{}ms", state.order_retention_ms),
            },
        ));
    }
}

/// The owning core of each partition, indexed by partition number. Called only
/// on a validated placement, where every listed partition is in range.
fn owners_by_partition(ownership: Ownership, shards: &[ShardPlacement]) -> Vec<Option<CoreId>> {
    let count = usize::try_from(ownership.partitions).unwrap_or(0);
    let mut owners = vec![None; count];
    if ownership.mode == OwnershipMode::CoreMap {
        for shard in shards {
            for partition in &shard.partitions {
                if let Some(slot) = usize::try_from(partition.0)
                    .ok()
                    .and_then(|p| owners.get_mut(p))
                {
                    *slot = Some(shard.core);
                }
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeName;
    use crate::limits::{NODE_SESSION_MS_DEFAULT, PARK_US_DEFAULT};
    use std::time::Duration;

    const HEAD: &str =
        "[node]\nname = \"node-a\"\n\n[ownership]\nmode = \"core-map\"\npartitions = 8\n";

    /// The map `HEAD` + `rest`.
    fn parse(rest: &str) -> Result<NodeTuning, TuningError> {
        NodeTuning::from_toml_str(&format!("{HEAD}{rest}"))
    }

    fn two_shards() -> &'static str {
        "[[shard]]\ncore = 0\npartitions = [0, 2, 4, 6]\n\n[[shard]]\ncore = 1\npartitions = [1, 3, 5, 7]\n"
    }

    /// The one problem `result` must fail with; panics (in a test) otherwise.
    fn only_problem<T: std::fmt::Debug>(result: Result<T, TuningError>) -> (Problem, String) {
        let error = result.expect_err("the map must be refused");
        let text = error.to_string();
        match error.problems() {
            [one] => (one.clone(), text),
            other => panic!("expected one problem, got {other:?}: {text}"),
        }
    }

    #[test]
    fn overlapping_partitions_name_both_shards() {
        let (problem, text) = only_problem(parse(
            "[[shard]]\ncore = 0\npartitions = [0, 2, 3]\n\n[[shard]]\ncore = 1\npartitions = [1, 3, 5]\n",
        ));
        assert_eq!(problem.key.to_string(), "shard[1].partitions");
        assert!(
            text.contains("shard[1].partitions: partition 3 is already owned by shard[0] (core 0)"),
            "{text}"
        );
        // Pointed at the line of shard[1]'s partitions (line 13 of the text).
        assert_eq!(problem.at.map(|at| at.line), Some(13), "{text}");
    }

    #[test]
    fn a_partition_listed_twice_in_one_shard_is_refused() {
        let (problem, _) = only_problem(parse(
            "[[shard]]\ncore = 0\npartitions = [\"0-3\", 2, \"4-7\"]\n",
        ));
        assert_eq!(problem.key.to_string(), "shard[0].partitions");
        assert_eq!(
            problem.kind,
            ProblemKind::PartitionListedTwice {
                partition: PartitionId(2)
            }
        );
    }

    #[test]
    fn partitions_out_of_range_are_refused() {
        for list in ["[8]", "[-1]", "[\"4-8\"]", "[\"0-2000000000\"]"] {
            let (problem, text) = only_problem(parse(&format!(
                "[[shard]]\ncore = 0\npartitions = {list}\n"
            )));
            assert_eq!(problem.key.to_string(), "shard[0].partitions", "{list}");
            assert!(text.contains("means partitions 0-7"), "{text}");
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let (problem, text) = only_problem(parse("[[shard]]\ncore = 0\npartitions = [\"5-2\"]\n"));
        assert_eq!(problem.key.to_string(), "shard[0].partitions");
        assert!(
            text.contains("\"5-2\" is not a partition or core range"),
            "{text}"
        );
    }

    #[test]
    fn a_core_the_machine_lacks_is_refused() {
        let tuning = parse(
            "[[shard]]\ncore = 0\npartitions = [0]\n[[shard]]\ncore = 1\npartitions = [1]\n[[shard]]\ncore = 9\npartitions = [2]\n",
        )
        .expect("valid on its own");
        assert!(tuning.validate_against(&Machine::with_cores(10)).is_ok());
        let (problem, text) = only_problem(tuning.validate_against(&Machine::with_cores(2)));
        assert_eq!(problem.key.to_string(), "shard[2].core");
        assert!(
            text.contains("shard[2].core: core 9 does not exist; this machine has cores 0-1"),
            "{text}"
        );
    }

    #[test]
    fn client_cores_the_machine_lacks_are_refused() {
        let tuning = parse(&format!(
            "{}[runtime]\nclient_threads = {{ cores = [4] }}\n",
            two_shards()
        ))
        .expect("valid on its own");
        let (problem, _) = only_problem(tuning.validate_against(&Machine::with_cores(2)));
        assert_eq!(problem.key.to_string(), "runtime.client_threads.cores");
    }

    #[test]
    fn machines_with_gaps_are_honoured() {
        let tuning = parse("[[shard]]\ncore = 3\npartitions = [\"0-7\"]\n").expect("valid");
        let machine = Machine::with_core_ids([CoreId(2), CoreId(3)]);
        assert!(tuning.validate_against(&machine).is_ok());
        let machine = Machine::with_core_ids([CoreId(0), CoreId(4), CoreId(5)]);
        let (_, text) = only_problem(tuning.validate_against(&machine));
        assert!(text.contains("this machine has cores 0, 4-5"), "{text}");
    }

    #[test]
    fn the_same_core_twice_is_refused() {
        let (problem, text) = only_problem(parse(
            "[[shard]]\ncore = 1\npartitions = [0]\n[[shard]]\ncore = 1\npartitions = [1]\n",
        ));
        assert_eq!(problem.key.to_string(), "shard[1].core");
        assert!(
            text.contains("core 1 is already used by shard[0]"),
            "{text}"
        );
    }

    #[test]
    fn cores_beyond_the_cpu_mask_or_negative_are_refused() {
        for core in ["1024", "-1"] {
            let (problem, _) = only_problem(parse(&format!(
                "[[shard]]\ncore = {core}\npartitions = [0]\n"
            )));
            assert_eq!(problem.key.to_string(), "shard[0].core", "{core}");
            assert!(matches!(problem.kind, ProblemKind::CoreOutOfRange { .. }));
        }
    }

    #[test]
    fn no_shards_is_refused() {
        let (problem, text) = only_problem(parse(""));
        assert_eq!(problem.key.to_string(), "shard");
        assert!(text.contains("no [[shard]] tables"), "{text}");
    }

    #[test]
    fn consumer_group_mode_refuses_listed_partitions() {
        let text = "[node]\nname = \"n\"\n[ownership]\nmode = \"consumer-group\"\npartitions = 8\n[[shard]]\ncore = 0\n[[shard]]\ncore = 1\npartitions = [1]\n";
        let (problem, message) = only_problem(NodeTuning::from_toml_str(text));
        assert_eq!(problem.key.to_string(), "shard[1].partitions");
        assert!(
            message.contains("takes partitions from the group"),
            "{message}"
        );
    }

    #[test]
    fn consumer_group_mode_owns_nothing_statically() {
        let text = "[node]\nname = \"n\"\n[ownership]\nmode = \"consumer-group\"\npartitions = 8\n[[shard]]\ncore = 0\n";
        let tuning = NodeTuning::from_toml_str(text).expect("valid");
        assert_eq!(tuning.owner_of(PartitionId(0)), None);
        assert!(tuning.partitions_of(CoreId(0)).is_empty());
        assert!(tuning.unowned_partitions().is_empty());
        assert!(tuning.warnings(&Machine::with_cores(2)).is_empty());
    }

    #[test]
    fn core_map_mode_needs_partitions_on_every_shard() {
        for shard in [
            "[[shard]]\ncore = 0\n",
            "[[shard]]\ncore = 0\npartitions = []\n",
        ] {
            let (problem, text) = only_problem(parse(shard));
            assert_eq!(problem.key.to_string(), "shard[0].partitions");
            assert!(
                text.contains("needs the partitions this shard owns"),
                "{text}"
            );
        }
    }

    #[test]
    fn partition_counts_must_match_the_topics() {
        let tuning = parse(two_shards()).expect("valid");
        assert!(tuning
            .check_partition_count("order-service.order.created", 8)
            .is_ok());
        let (problem, text) =
            only_problem(tuning.check_partition_count("order-service.order.created", 6));
        assert_eq!(problem.key.to_string(), "ownership.partitions");
        assert!(
            text.contains("topic \"order-service.order.created\" has 6 partitions but ownership.partitions = 8"),
            "{text}"
        );
        // Located at the count in the text it came from.
        assert_eq!(problem.at.map(|at| at.line), Some(6));
    }

    #[test]
    fn partition_counts_out_of_range_are_refused() {
        for count in ["0", "-3", "10001"] {
            let text = format!(
                "[node]\nname = \"n\"\n[ownership]\nmode = \"core-map\"\npartitions = {count}\n[[shard]]\ncore = 0\npartitions = [0]\n"
            );
            let (problem, _) = only_problem(NodeTuning::from_toml_str(&text));
            assert_eq!(problem.key.to_string(), "ownership.partitions", "{count}");
        }
    }

    #[test]
    fn unowned_partitions_are_allowed_and_reported() {
        let tuning = parse("[[shard]]\ncore = 0\npartitions = [0, 1, 2, 3]\n").expect("valid");
        let unowned = tuning.unowned_partitions();
        assert_eq!(unowned, (4..8).map(PartitionId).collect::<Vec<_>>());
        let warnings = tuning.warnings(&Machine::with_cores(2));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key.to_string(), "ownership.partitions");
        assert!(warnings[0]
            .to_string()
            .contains("partitions 4-7 have no shard"));
    }

    #[test]
    fn client_cores_on_spinning_shards_are_refused() {
        let (problem, text) = only_problem(parse(&format!(
            "{}[runtime]\nidle = \"busy-poll\"\nclient_threads = {{ cores = [1, 2] }}\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "runtime.client_threads.cores");
        assert!(
            text.contains("core 1 also runs shard[1], which busy-polls"),
            "{text}"
        );
    }

    #[test]
    fn client_cores_on_parked_shards_are_a_warning() {
        let tuning = parse(&format!(
            "{}[runtime]\nidle = \"park\"\nclient_threads = {{ cores = [1] }}\n",
            two_shards()
        ))
        .expect("allowed when shards park");
        let warnings = tuning.warnings(&Machine::with_cores(2));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key.to_string(), "runtime.client_threads.cores");
        assert_eq!(
            warnings[0].kind,
            WarningKind::ClientCoresShareShardCores {
                cores: vec![CoreId(1)]
            }
        );
    }

    #[test]
    fn shard_core_client_threads_with_busy_poll_are_refused() {
        let (problem, _) = only_problem(parse(&format!(
            "{}[runtime]\nidle = \"busy-poll\"\nclient_threads = \"shard-core\"\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "runtime.client_threads");
        // With parking it is a legitimate choice.
        let tuning = parse(&format!(
            "{}[runtime]\nidle = \"park\"\nclient_threads = \"shard-core\"\n",
            two_shards()
        ))
        .expect("allowed when shards park");
        assert_eq!(tuning.runtime().client_threads, ClientThreads::ShardCore);
    }

    #[test]
    fn client_core_lists_must_be_non_empty_and_distinct() {
        let (problem, _) = only_problem(parse(&format!(
            "{}[runtime]\nclient_threads = {{ cores = [] }}\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "runtime.client_threads.cores");
        assert_eq!(problem.kind, ProblemKind::NoClientCores);
        let (problem, _) = only_problem(parse(&format!(
            "{}[runtime]\nclient_threads = {{ cores = [\"2-3\", 3] }}\n",
            two_shards()
        )));
        assert_eq!(
            problem.kind,
            ProblemKind::ClientCoreListedTwice { core: CoreId(3) }
        );
    }

    #[test]
    fn adaptive_commit_keys_are_range_checked_against_the_interval() {
        for (key, value) in [
            ("target_latency_ms", "0"),
            ("target_latency_ms", "101"),
            ("min_interval_ms", "101"),
            ("min_interval_ms", "-1"),
            ("busy_percent_max", "0"),
            ("busy_percent_max", "101"),
            ("transactions_per_s_max", "0"),
        ] {
            let (problem, _) = only_problem(parse(&format!(
                "{}[commit]\ninterval_ms = 100\n{key} = {value}\n",
                two_shards()
            )));
            assert_eq!(
                problem.key.to_string(),
                format!("commit.{key}"),
                "{key} = {value}"
            );
            assert!(
                matches!(problem.kind, ProblemKind::CommitKeyOutOfRange { .. }),
                "{key} = {value}: {:?}",
                problem.kind
            );
        }
        let tuning = parse(&format!(
            "{}[commit]\npolicy = \"interval\"\ninterval_ms = 2\n",
            two_shards()
        ))
        .expect("defaults shrink to a short interval");
        assert_eq!(tuning.commit().timing, crate::CommitTiming::Interval);
        assert_eq!(tuning.commit().target_latency_ms, 2);
        assert_eq!(tuning.commit().min_interval_ms, 1);
    }

    #[test]
    fn park_us_applies_only_to_parking() {
        let (problem, _) = only_problem(parse(&format!(
            "{}[runtime]\nidle = \"busy-poll\"\npark_us = 50\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "runtime.park_us");
        assert_eq!(problem.kind, ProblemKind::ParkUsWithBusyPoll);
    }

    #[test]
    fn park_us_must_be_in_range() {
        for value in ["0", "-5", "100001"] {
            let (problem, _) = only_problem(parse(&format!(
                "{}[runtime]\nidle = \"park\"\npark_us = {value}\n",
                two_shards()
            )));
            assert_eq!(problem.key.to_string(), "runtime.park_us", "{value}");
        }
    }

    #[test]
    fn commit_intervals_are_bounded_by_the_guarantee() {
        let (problem, text) = only_problem(parse(&format!(
            "{}[commit]\ninterval_ms = 6000\nguarantee = \"exactly-once\"\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "commit.interval_ms");
        assert!(
            text.contains("under exactly-once it must be 1-5000"),
            "{text}"
        );
        let tuning = parse(&format!(
            "{}[commit]\ninterval_ms = 6000\nguarantee = \"at-least-once\"\n",
            two_shards()
        ))
        .expect("at-least-once allows longer intervals");
        assert_eq!(tuning.commit().interval_ms, 6000);
        for value in ["0", "-1"] {
            let (problem, _) = only_problem(parse(&format!(
                "{}[commit]\ninterval_ms = {value}\n",
                two_shards()
            )));
            assert_eq!(problem.key.to_string(), "commit.interval_ms");
        }
    }

    #[test]
    fn node_names_are_checked() {
        let text = format!(
            "[node]\nname = \"Node_A\"\n[ownership]\nmode = \"core-map\"\npartitions = 8\n{}",
            two_shards()
        );
        let (problem, message) = only_problem(NodeTuning::from_toml_str(&text));
        assert_eq!(problem.key.to_string(), "node.name");
        assert!(
            message.contains("\"Node_A\" is not a node name"),
            "{message}"
        );
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let error = parse(
            "[[shard]]\ncore = 0\npartitions = [0, 9]\n[[shard]]\ncore = 0\npartitions = [0]\n[commit]\ninterval_ms = 9000\n",
        )
        .expect_err("refused");
        let keys: Vec<String> = error.problems().iter().map(|p| p.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "shard[0].partitions",
                "shard[1].core",
                "shard[1].partitions",
                "commit.interval_ms"
            ]
        );
        assert!(error.problems().iter().all(|p| p.at.is_some()));
    }

    #[test]
    fn every_core_spinning_is_a_warning() {
        let tuning = parse(&format!(
            "{}[runtime]\nidle = \"busy-poll\"\n",
            two_shards()
        ))
        .expect("valid");
        let warnings = tuning.warnings(&Machine::with_cores(2));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key.to_string(), "runtime.idle");
        assert!(tuning.warnings(&Machine::with_cores(4)).is_empty());
    }

    #[test]
    fn parking_longer_than_the_commit_interval_is_a_warning() {
        let tuning = parse(&format!(
            "{}[runtime]\npark_us = 5000\n[commit]\ninterval_ms = 2\n",
            two_shards()
        ))
        .expect("valid");
        let warnings = tuning.warnings(&Machine::with_cores(2));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key.to_string(), "runtime.park_us");
    }

    #[test]
    fn optional_sections_take_their_defaults() {
        let tuning = parse(two_shards()).expect("valid");
        assert_eq!(tuning.runtime(), &RuntimeKnobs::default());
        assert_eq!(
            tuning.runtime().idle,
            IdleStrategy::Park {
                park_us: PARK_US_DEFAULT
            }
        );
        assert_eq!(tuning.commit(), CommitPolicy::default());
        assert_eq!(tuning.commit().guarantee, Guarantee::ExactlyOnce);
        assert!(tuning.commit().on_drain);
        assert_eq!(tuning.retry(), RetryPolicy::default());
    }

    #[test]
    fn retry_defaults_are_the_documented_ones() {
        let retry = parse(two_shards()).expect("valid").retry();
        assert_eq!(
            retry,
            RetryPolicy {
                attempts_max: 10,
                deadline_ms: 120_000,
                backoff_min_ms: 100,
                backoff_max_ms: 10_000,
            }
        );
        assert_eq!(retry.deadline(), Duration::from_secs(120));
        assert_eq!(retry.backoff_min(), Duration::from_millis(100));
        assert_eq!(retry.backoff_max(), Duration::from_secs(10));
        // An empty section is the same as none.
        let empty = parse(&format!("{}[retry]\n", two_shards())).expect("valid");
        assert_eq!(empty.retry(), RetryPolicy::default());
    }

    #[test]
    fn retry_keys_are_read_and_missing_ones_default() {
        let tuning = parse(&format!(
            "{}[retry]\nattempts_max = 3\ndeadline_ms = 30000\nbackoff_min_ms = 50\nbackoff_max_ms = 2000\n",
            two_shards()
        ))
        .expect("valid");
        assert_eq!(
            tuning.retry(),
            RetryPolicy {
                attempts_max: 3,
                deadline_ms: 30_000,
                backoff_min_ms: 50,
                backoff_max_ms: 2_000,
            }
        );
        let tuning = parse(&format!("{}[retry]\nattempts_max = 1\n", two_shards())).expect("valid");
        assert_eq!(
            tuning.retry(),
            RetryPolicy {
                attempts_max: 1,
                ..RetryPolicy::default()
            }
        );
        // The bounds themselves are allowed; equal waits and a deadline of
        // exactly the first wait too.
        let tuning = parse(&format!(
            "{}[retry]\nattempts_max = 1000\ndeadline_ms = 600000\nbackoff_min_ms = 600000\nbackoff_max_ms = 600000\n",
            two_shards()
        ))
        .expect("limits are inclusive");
        assert_eq!(tuning.retry().backoff_min_ms, tuning.retry().backoff_max_ms);
        assert_eq!(tuning.retry().deadline_ms, tuning.retry().backoff_min_ms);
        parse(&format!(
            "{}[retry]\ndeadline_ms = 3600000\nbackoff_min_ms = 1\nbackoff_max_ms = 1\n",
            two_shards()
        ))
        .expect("limits are inclusive");
    }

    #[test]
    fn retry_values_out_of_range_name_the_key_and_the_range() {
        let cases = [
            (
                "attempts_max",
                "-1",
                "it must be 1-1000 (restarts per failure streak)",
            ),
            ("attempts_max", "1001", "it must be 1-1000"),
            ("attempts_max", "5000000000", "it must be 1-1000"),
            ("deadline_ms", "0", "it must be 1-3600000 (ms)"),
            ("deadline_ms", "-120000", "it must be 1-3600000 (ms)"),
            ("deadline_ms", "3600001", "it must be 1-3600000 (ms)"),
            ("backoff_min_ms", "0", "it must be 1-600000 (ms)"),
            ("backoff_min_ms", "600001", "it must be 1-600000 (ms)"),
            ("backoff_max_ms", "-3", "it must be 1-600000 (ms)"),
            ("backoff_max_ms", "0", "it must be 1-600000 (ms)"),
            ("backoff_max_ms", "600001", "it must be 1-600000 (ms)"),
            (
                "backoff_max_ms",
                "9223372036854775807",
                "it must be 1-600000 (ms)",
            ),
        ];
        for (key, value, range) in cases {
            let (problem, text) = only_problem(parse(&format!(
                "{}[retry]\n{key} = {value}\n",
                two_shards()
            )));
            assert_eq!(problem.key.to_string(), format!("retry.{key}"), "{text}");
            assert!(
                text.contains(&format!("retry.{key}: {value} is out of range; {range}")),
                "{text}"
            );
            // Pointed at the value's line: HEAD has 6 lines, two_shards 7,
            // then [retry].
            assert_eq!(problem.at.map(|at| at.line), Some(15), "{text}");
        }
    }

    #[test]
    fn zero_attempts_is_refused_with_its_own_problem() {
        let (problem, text) = only_problem(parse(&format!(
            "{}[retry]\nattempts_max = 0\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.attempts_max");
        assert_eq!(problem.kind, ProblemKind::RetryAttemptsZero);
        assert!(
            text.contains("gives up on a shard at its first failure"),
            "{text}"
        );
        assert!(
            text.contains("set it to 1 or more (the default is 10)"),
            "{text}"
        );
    }

    #[test]
    fn a_first_wait_longer_than_the_longest_is_refused() {
        let (problem, text) = only_problem(parse(&format!(
            "{}[retry]\nbackoff_min_ms = 5000\nbackoff_max_ms = 1000\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.backoff_min_ms");
        assert_eq!(
            problem.kind,
            ProblemKind::RetryBackoffMinAboveMax {
                min_ms: 5_000,
                max_ms: 1_000
            }
        );
        assert!(
            text.contains("retry.backoff_min_ms: 5000 is longer than retry.backoff_max_ms = 1000"),
            "{text}"
        );
        assert!(
            text.contains("lower retry.backoff_min_ms to at most 1000, or raise retry.backoff_max_ms to at least 5000"),
            "{text}"
        );
        // Against the default cap, too.
        let (problem, _) = only_problem(parse(&format!(
            "{}[retry]\nbackoff_min_ms = 20000\n",
            two_shards()
        )));
        assert_eq!(
            problem.kind,
            ProblemKind::RetryBackoffMinAboveMax {
                min_ms: 20_000,
                max_ms: 10_000
            }
        );
    }

    #[test]
    fn a_deadline_shorter_than_the_first_wait_is_refused() {
        let (problem, text) = only_problem(parse(&format!(
            "{}[retry]\ndeadline_ms = 50\nbackoff_min_ms = 200\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.deadline_ms");
        assert_eq!(
            problem.kind,
            ProblemKind::RetryDeadlineBeforeFirstRestart {
                deadline_ms: 50,
                backoff_min_ms: 200
            }
        );
        assert!(
            text.contains("retry.deadline_ms: 50 is shorter than retry.backoff_min_ms = 200"),
            "{text}"
        );
        assert!(
            text.contains("raise retry.deadline_ms to at least 200"),
            "{text}"
        );
        // Against the default first wait, too.
        let (problem, _) = only_problem(parse(&format!(
            "{}[retry]\ndeadline_ms = 99\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.deadline_ms");
    }

    #[test]
    fn a_bad_retry_value_is_reported_once_and_not_related_to_the_others() {
        // backoff_min_ms = 20000 is above any cap but the unreadable one; only
        // the unreadable value is reported.
        let (problem, _) = only_problem(parse(&format!(
            "{}[retry]\nbackoff_min_ms = 20000\nbackoff_max_ms = -5\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.backoff_max_ms");
        let (problem, _) = only_problem(parse(&format!(
            "{}[retry]\ndeadline_ms = 50\nbackoff_min_ms = 0\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.backoff_min_ms");
        let (problem, _) = only_problem(parse(&format!(
            "{}[retry]\ndeadline_ms = -1\nbackoff_min_ms = 200\n",
            two_shards()
        )));
        assert_eq!(problem.key.to_string(), "retry.deadline_ms");
        assert_eq!(
            problem.kind,
            ProblemKind::RetryDeadlineOutOfRange { value: -1 }
        );
    }

    #[test]
    fn every_broken_retry_rule_is_reported_at_once() {
        let error = parse(&format!(
            "{}[retry]\nattempts_max = 0\ndeadline_ms = 10\nbackoff_min_ms = 5000\nbackoff_max_ms = 1000\n",
            two_shards()
        ))
        .expect_err("refused");
        let keys: Vec<String> = error.problems().iter().map(|p| p.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "retry.attempts_max",
                "retry.deadline_ms",
                "retry.backoff_min_ms"
            ]
        );
    }

    #[test]
    fn retry_policies_built_in_code_obey_the_same_rules() {
        let node = NodeSection {
            name: NodeName::new("n").expect("valid name"),
        };
        let ownership = Ownership {
            mode: OwnershipMode::ConsumerGroup,
            partitions: 4,
            session_ms: NODE_SESSION_MS_DEFAULT,
            liveness_addr: None,
        };
        let shards = vec![ShardPlacement {
            core: CoreId(0),
            partitions: Vec::new(),
        }];
        let build = |retry| {
            NodeTuning::new(
                node.clone(),
                ownership,
                shards.clone(),
                RuntimeKnobs::default(),
                CommitPolicy::default(),
                retry,
            )
        };
        let retry = RetryPolicy {
            attempts_max: 2,
            deadline_ms: 5_000,
            backoff_min_ms: 10,
            backoff_max_ms: 20,
        };
        assert_eq!(build(retry).expect("valid").retry(), retry);
        let (problem, _) = only_problem(build(RetryPolicy {
            backoff_min_ms: 0,
            ..retry
        }));
        assert_eq!(problem.key.to_string(), "retry.backoff_min_ms");
        assert_eq!(problem.at, None);
        let (problem, _) = only_problem(build(RetryPolicy {
            attempts_max: 0,
            ..retry
        }));
        assert_eq!(problem.kind, ProblemKind::RetryAttemptsZero);
        let (problem, _) = only_problem(build(RetryPolicy {
            backoff_min_ms: 30,
            ..retry
        }));
        assert_eq!(
            problem.kind,
            ProblemKind::RetryBackoffMinAboveMax {
                min_ms: 30,
                max_ms: 20
            }
        );
    }

    #[test]
    fn knobs_built_in_code_obey_the_rules_of_the_map_and_name_the_keys() {
        use crate::model::{ChangelogLayout, StateSection};
        assert_eq!(
            NodeKnobs::new(
                RuntimeKnobs::default(),
                CommitPolicy::default(),
                RetryPolicy::default(),
                StateSection::default(),
            )
            .expect("the defaults are valid"),
            NodeKnobs::default()
        );
        // A map without these sections runs with the same knobs.
        assert_eq!(
            parse(two_shards()).expect("valid").knobs(),
            NodeKnobs::default()
        );
        let error = NodeKnobs::new(
            RuntimeKnobs {
                idle: IdleStrategy::Park { park_us: 0 },
                client_threads: ClientThreads::Unpinned,
            },
            CommitPolicy {
                interval_ms: EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX + 1,
                ..CommitPolicy::default()
            },
            RetryPolicy {
                attempts_max: 0,
                ..RetryPolicy::default()
            },
            StateSection {
                standby_replicas: STANDBY_REPLICAS_MAX + 1,
                order_retention_ms: 0,
                changelog_layout: ChangelogLayout::Shared,
            },
        )
        .expect_err("every section is broken");
        let TuningError::Invalid { path, problems } = &error else {
            panic!("not a validation error: {error}");
        };
        assert_eq!(*path, None);
        let keys: Vec<String> = problems.iter().map(|p| p.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "runtime.park_us",
                "commit.interval_ms",
                "retry.attempts_max",
                "state.standby_replicas",
                "state.order_retention",
            ]
        );
        // The same interval is fine under at-least-once.
        let at_least_once = NodeKnobs::new(
            RuntimeKnobs::default(),
            CommitPolicy {
                interval_ms: EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX + 1,
                guarantee: Guarantee::AtLeastOnce,
                ..CommitPolicy::default()
            },
            RetryPolicy::default(),
            StateSection::default(),
        )
        .expect("valid under at-least-once");
        assert_eq!(at_least_once.commit().guarantee, Guarantee::AtLeastOnce);
    }

    #[test]
    fn guarantees_read_the_spelling_they_write() {
        for guarantee in Guarantee::ALL {
            assert_eq!(guarantee.as_str().parse::<Guarantee>(), Ok(guarantee));
            assert_eq!(guarantee.to_string(), guarantee.as_str());
        }
        let refused = "exactly_once"
            .parse::<Guarantee>()
            .expect_err("not a spelling");
        assert!(
            refused.to_string().contains("\"exactly_once\""),
            "{refused}"
        );
    }

    #[test]
    fn owner_of_and_partitions_of_answer_from_the_map() {
        let tuning = parse(two_shards()).expect("valid");
        assert_eq!(tuning.owner_of(PartitionId(6)), Some(CoreId(0)));
        assert_eq!(tuning.owner_of(PartitionId(7)), Some(CoreId(1)));
        assert_eq!(tuning.owner_of(PartitionId(8)), None);
        assert_eq!(tuning.owner_of(PartitionId(-1)), None);
        assert_eq!(
            tuning.partitions_of(CoreId(1)),
            &[1, 3, 5, 7].map(PartitionId)
        );
        assert!(tuning.partitions_of(CoreId(5)).is_empty());
        assert_eq!(
            tuning.shard_cores().collect::<Vec<_>>(),
            [CoreId(0), CoreId(1)]
        );
    }

    #[test]
    fn maps_built_in_code_obey_the_same_rules_and_are_kept_sorted() {
        let node = NodeSection {
            name: NodeName::new("n").expect("valid name"),
        };
        let ownership = Ownership {
            mode: OwnershipMode::CoreMap,
            partitions: 4,
            session_ms: NODE_SESSION_MS_DEFAULT,
            liveness_addr: None,
        };
        let shards = vec![
            ShardPlacement {
                core: CoreId(1),
                partitions: vec![PartitionId(3), PartitionId(1)],
            },
            ShardPlacement {
                core: CoreId(0),
                partitions: vec![PartitionId(2), PartitionId(0)],
            },
        ];
        let tuning = NodeTuning::new(
            node.clone(),
            ownership,
            shards.clone(),
            RuntimeKnobs::default(),
            CommitPolicy::default(),
            RetryPolicy::default(),
        )
        .expect("valid");
        assert_eq!(tuning.partitions_of(CoreId(1)), &[1, 3].map(PartitionId));
        assert_eq!(tuning.path(), None);

        let mut overlapping = shards;
        overlapping[1].partitions.push(PartitionId(3));
        let (problem, _) = only_problem(NodeTuning::new(
            node,
            ownership,
            overlapping,
            RuntimeKnobs::default(),
            CommitPolicy::default(),
            RetryPolicy::default(),
        ));
        assert_eq!(problem.key.to_string(), "shard[1].partitions");
        assert_eq!(problem.at, None);
    }

    #[test]
    fn a_node_session_built_in_code_obeys_the_file_s_range() {
        let node = NodeSection {
            name: NodeName::new("n").expect("valid name"),
        };
        let shards = vec![ShardPlacement {
            core: CoreId(0),
            partitions: Vec::new(),
        }];
        for session_ms in [NODE_SESSION_MS_MIN - 1, NODE_SESSION_MS_MAX + 1] {
            let ownership = Ownership {
                mode: OwnershipMode::ConsumerGroup,
                partitions: 4,
                session_ms,
                liveness_addr: None,
            };
            let (problem, _) = only_problem(NodeTuning::new(
                node.clone(),
                ownership,
                shards.clone(),
                RuntimeKnobs::default(),
                CommitPolicy::default(),
                RetryPolicy::default(),
            ));
            assert_eq!(problem.key.to_string(), "ownership.session_ms");
        }
    }
}
