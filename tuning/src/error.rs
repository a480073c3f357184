//! What can be wrong with a core map, and what is merely worth a log line.
//!
//! Owns: [`TuningError`] (the map cannot be used), [`Problem`] (one broken rule,
//! named by its [`Key`] and located in the file), [`Warning`] (usable but
//! suspicious), and the wording of each: what is wrong and what to do.
//! Must never: decide a rule; the validator decides, this module only words it.
//!
//! Every failure here is the operator's to fix in the file (or in the topics);
//! retrying without an edit never helps.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::ids::{ranges_text, CoreId, NodeNameError, PartitionId};
use crate::limits::{
    COMMIT_INTERVAL_MS_MAX, CORES_MAX, EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX,
    NODE_SESSION_MS_DEFAULT, NODE_SESSION_MS_MAX, NODE_SESSION_MS_MIN, PARK_US_MAX, PARTITIONS_MAX,
    RETRY_ATTEMPTS_MAX_DEFAULT, RETRY_ATTEMPTS_MAX_LIMIT, RETRY_BACKOFF_MS_LIMIT,
    RETRY_DEADLINE_MS_DEFAULT, RETRY_DEADLINE_MS_LIMIT, STANDBY_REPLICAS_MAX,
};

/// A core map cannot be used as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuningError {
    /// The file could not be read.
    #[error("cannot read core map {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not TOML, or TOML of the wrong shape: bad syntax, a wrong type, a
    /// missing or unknown key. `message` is toml's own description.
    #[error("{}{message}", place(path.as_deref(), *at))]
    Syntax {
        path: Option<PathBuf>,
        at: Option<Location>,
        message: String,
    },
    /// Well-formed TOML that breaks one or more rules; every broken rule is
    /// listed, so one edit can fix them all.
    #[error("{}", invalid_text(path.as_deref(), problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

impl TuningError {
    /// The broken rules (empty for [`TuningError::Read`] and
    /// [`TuningError::Syntax`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            TuningError::Invalid { problems, .. } => problems,
            TuningError::Read { .. } | TuningError::Syntax { .. } => &[],
        }
    }
}

/// `path:line:column: ` (or as much of it as is known) before a message.
fn place(path: Option<&Path>, at: Option<Location>) -> String {
    match (path, at) {
        (Some(path), Some(at)) => format!("{}:{}:{}: ", path.display(), at.line, at.column),
        (Some(path), None) => format!("{}: ", path.display()),
        (None, Some(at)) => format!("line {}, column {}: ", at.line, at.column),
        (None, None) => String::new(),
    }
}

fn invalid_text(path: Option<&Path>, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}{one}", place(path, one.at)),
        many => {
            let mut text = format!(
                "{}{} problems in the core map:",
                place(path, None),
                many.len()
            );
            for problem in many {
                text.push_str(&format!("\n  {}{problem}", place(path, problem.at)));
            }
            text
        }
    }
}

/// Where in the file a key's value is: 1-based line and column (in
/// characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Location {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// A key of the file, as operators write it in messages: `shard[1].partitions`
/// (shards count from 0 in file order), `runtime.client_threads.cores`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(Vec<KeyPart>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyPart {
    Name(&'static str),
    Index(usize),
}

impl Key {
    pub(crate) fn at(name: &'static str) -> Key {
        Key(vec![KeyPart::Name(name)])
    }

    /// `shard[index]`.
    pub(crate) fn shard(index: usize) -> Key {
        Key(vec![KeyPart::Name("shard"), KeyPart::Index(index)])
    }

    pub(crate) fn dot(mut self, name: &'static str) -> Key {
        self.0.push(KeyPart::Name(name));
        self
    }

    pub(crate) fn parts(&self) -> &[KeyPart] {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            match part {
                KeyPart::Name(name) if i == 0 => f.write_str(name)?,
                KeyPart::Name(name) => write!(f, ".{name}")?,
                KeyPart::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One broken rule: the key it is about, where that key is (when the map came
/// from text), and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: Key,
    pub at: Option<Location>,
    pub kind: ProblemKind,
}

impl Problem {
    pub(crate) fn new(key: Key, kind: ProblemKind) -> Problem {
        Problem {
            key,
            at: None,
            kind,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.kind)
    }
}

/// The rules, each worded as what is wrong followed by what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    #[error("{name:?} is not a node name: {reason}; use 1-48 characters from a-z, 0-9 and '-', not starting or ending with '-'")]
    NodeName { name: String, reason: NodeNameError },

    #[error("no [[shard]] tables; add one per core that should run a shard")]
    NoShards,

    #[error("core {core} is not a CPU number; cores are 0-{}", CORES_MAX - 1)]
    CoreOutOfRange { core: i64 },

    #[error("core {core} is already used by shard[{other_shard}]; a core runs at most one shard: merge the two shards' partitions into one")]
    CoreListedTwice { core: CoreId, other_shard: usize },

    #[error("core {core} does not exist; this machine has cores {machine_cores}: pick one of those, or run this map on a node that has core {core}")]
    CoreMissing { core: CoreId, machine_cores: String },

    #[error("{value} is out of range; it must be 1-{PARTITIONS_MAX}")]
    PartitionCountOutOfRange { value: i64 },

    #[error("{text:?} is not a partition or core range; write a number or \"first-last\" with first <= last, like \"8-15\"")]
    BadRange { text: String },

    #[error("partition {partition} is out of range: ownership.partitions = {count} means partitions {}; fix the number (ownership.partitions must equal the topics' partition count)", count_text(*count))]
    PartitionOutOfRange { partition: i64, count: u32 },

    #[error("partition {partition} is listed twice; list each partition once")]
    PartitionListedTwice { partition: PartitionId },

    #[error("partition {partition} is already owned by shard[{other_shard}] (core {other_core}); a partition has exactly one owner: remove it from one of the two shards")]
    PartitionOwnedTwice {
        partition: PartitionId,
        other_shard: usize,
        other_core: CoreId,
    },

    #[error("ownership.mode = \"core-map\" needs the partitions this shard owns: list them (like [0, 2] or [\"0-7\"]), remove the shard, or set ownership.mode = \"consumer-group\"")]
    NoPartitions,

    #[error("ownership.mode = \"consumer-group\" takes partitions from the group, not from the file: remove this key, or set ownership.mode = \"core-map\" to pin partitions to cores")]
    PartitionsFromGroup,

    #[error("topic {topic:?} has {actual} partitions but ownership.partitions = {expected}; every co-partitioned input topic and changelog must have exactly ownership.partitions partitions: {}", partition_count_fix(*expected, *actual))]
    PartitionCountMismatch {
        topic: String,
        expected: u32,
        actual: u32,
    },

    #[error("{value} is out of range; it must be 1-{PARK_US_MAX} (µs)")]
    ParkUsOutOfRange { value: i64 },

    #[error(
        "applies only when runtime.idle = \"park\"; remove it, or set runtime.idle = \"park\""
    )]
    ParkUsWithBusyPoll,

    #[error("no cores listed; list at least one I/O core, or use client_threads = \"unpinned\"")]
    NoClientCores,

    #[error("core {core} is listed twice; list each core once")]
    ClientCoreListedTwice { core: CoreId },

    #[error("core {core} also runs shard[{shard}], which busy-polls (runtime.idle = \"busy-poll\") and would starve librdkafka's threads there; move the client threads to cores without shards, or set runtime.idle = \"park\"")]
    ClientCoreRunsSpinningShard { core: CoreId, shard: usize },

    #[error("\"shard-core\" puts each shard's librdkafka threads on the shard's own core, where a busy-polling shard (runtime.idle = \"busy-poll\") starves them; use \"unpinned\" or {{ cores = [...] }} with cores that run no shard, or set runtime.idle = \"park\"")]
    ShardCoreClientsWithBusyPoll,

    #[error("{value} is out of range; under {guarantee} it must be 1-{} (ms)", interval_ms_max(*guarantee))]
    CommitIntervalOutOfRange {
        value: i64,
        guarantee: crate::Guarantee,
    },

    #[error("{value} is out of range; it must be {}-{} ({})", range.0, range.1, range.2)]
    CommitKeyOutOfRange {
        value: i64,
        /// Smallest and largest value allowed, and the unit.
        range: (i64, i64, &'static str),
    },

    #[error("{value} is out of range; it must be 1-{RETRY_ATTEMPTS_MAX_LIMIT} (restarts per failure streak)")]
    RetryAttemptsOutOfRange { value: i64 },

    #[error("0 restarts means the engine gives up on a shard at its first failure, even one a restart would cure (a broker restart takes ~10-30 s); set it to 1 or more (the default is {RETRY_ATTEMPTS_MAX_DEFAULT})")]
    RetryAttemptsZero,

    #[error("{value} is out of range; it must be 1-{RETRY_DEADLINE_MS_LIMIT} (ms)")]
    RetryDeadlineOutOfRange { value: i64 },

    #[error("{text:?} is not a retention; write a positive whole number and a unit (ms, s, m, h or d) up to 3650d, like \"24h\" (the default) or \"90m\"")]
    OrderRetention { text: String },

    #[error("{text:?} is not a changelog layout; write \"per-store\" (the default: one compacted changelog topic per store) or \"shared\" (one compacted changelog topic for every store of the application)")]
    ChangelogLayout { text: String },

    #[error("{value} is out of range; it must be 0-{STANDBY_REPLICAS_MAX} (0, the default, keeps no standby copies)")]
    StandbyReplicasOutOfRange { value: i64 },

    #[error("{value} ms is out of range; it must be {NODE_SESSION_MS_MIN}-{NODE_SESSION_MS_MAX} (default {NODE_SESSION_MS_DEFAULT}), and within the broker's group.min.session.timeout.ms and group.max.session.timeout.ms")]
    NodeSessionOutOfRange { value: i64 },

    #[error("{text:?} is not a socket address; write an IP address and a port the other nodes can reach, like \"10.0.0.7:7070\" or \"127.0.0.1:0\" (port 0: any free port; host names are not resolved here)")]
    LivenessAddr { text: String },

    #[error("a liveness beacon in core-map mode: a core-map node never takes over another node's partitions, so nothing would act on its death; set it with ownership.mode = \"consumer-group\", or remove liveness_addr")]
    LivenessInCoreMap,

    #[error("{value} standby replica(s) in core-map mode: a core-map node never takes over another node's partitions (ownership is static), so a warm copy would never be used; standbys need ownership.mode = \"consumer-group\", or set standby_replicas = 0")]
    StandbyInCoreMap { value: u32 },

    #[error("{value} is out of range; it must be 1-{RETRY_BACKOFF_MS_LIMIT} (ms)")]
    RetryBackoffOutOfRange { value: i64 },

    #[error("{min_ms} is longer than retry.backoff_max_ms = {max_ms}, the cap on every wait between restarts; lower retry.backoff_min_ms to at most {max_ms}, or raise retry.backoff_max_ms to at least {min_ms}")]
    RetryBackoffMinAboveMax { min_ms: u32, max_ms: u32 },

    #[error("{deadline_ms} is shorter than retry.backoff_min_ms = {backoff_min_ms}, the wait before a failed shard's first restart: the failure streak would be out of time by then, and the next failure would end it; raise retry.deadline_ms to at least {backoff_min_ms} (the default is {RETRY_DEADLINE_MS_DEFAULT}), or lower retry.backoff_min_ms")]
    RetryDeadlineBeforeFirstRestart {
        deadline_ms: u32,
        backoff_min_ms: u32,
    },
}

fn count_text(count: u32) -> String {
    match count {
        0 => "none".to_owned(),
        1 => "0 only".to_owned(),
        n => format!("0-{}", n - 1),
    }
}

fn partition_count_fix(expected: u32, actual: u32) -> String {
    // Never advise altering a topic with data: keys would hash to partitions
    // other than the ones holding their state.
    if actual < expected {
        format!("if the topic is new, recreate it with {expected} partitions; otherwise set ownership.partitions = {actual} and re-map the partitions (never alter the partition count of a topic with data)")
    } else {
        format!("set ownership.partitions = {actual} and give the new partitions owners, or, if the topic is new, recreate it with {expected} partitions")
    }
}

fn interval_ms_max(guarantee: crate::Guarantee) -> u32 {
    match guarantee {
        crate::Guarantee::ExactlyOnce => EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX,
        crate::Guarantee::AtLeastOnce => COMMIT_INTERVAL_MS_MAX,
    }
}

/// A core map that works but deserves a log line at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub key: Key,
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.kind)
    }
}

/// What a [`Warning`] is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarningKind {
    #[error("partitions {} have no shard on this node; that is right only if another node's core map owns them, or nobody consumes them", ids_text(partitions))]
    UnownedPartitions { partitions: Vec<PartitionId> },

    #[error("cores {} run both a shard and librdkafka's threads; a parked shard gives its core back when idle, but under load the two compete: prefer cores without shards", cores_text(cores))]
    ClientCoresShareShardCores { cores: Vec<CoreId> },

    #[error("every core this process may use ({}) runs a busy-polling shard, so librdkafka's threads and the OS only get what the scheduler preempts from spinning shards; leave at least one core without a shard, or set runtime.idle = \"park\"", cores_text(cores))]
    EveryCoreBusyPolls { cores: Vec<CoreId> },

    #[error("park_us = {park_us} is longer than commit.interval_ms = {interval_ms}; an idle shard commits late by up to one park")]
    ParkOutlastsCommitInterval { park_us: u32, interval_ms: u32 },
}

fn ids_text(partitions: &[PartitionId]) -> String {
    ranges_text(partitions.iter().map(|p| i64::from(p.0)))
}

fn cores_text(cores: &[CoreId]) -> String {
    ranges_text(cores.iter().map(|c| i64::try_from(c.0).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_like_the_file() {
        assert_eq!(
            Key::shard(1).dot("partitions").to_string(),
            "shard[1].partitions"
        );
        assert_eq!(
            Key::at("runtime")
                .dot("client_threads")
                .dot("cores")
                .to_string(),
            "runtime.client_threads.cores"
        );
    }

    #[test]
    fn locations_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        let offset = text.find('2').expect("present");
        assert_eq!(
            Location::of_offset(text, offset),
            Location { line: 2, column: 6 }
        );
    }

    #[test]
    fn one_problem_reads_as_one_line_with_its_place() {
        let error = TuningError::Invalid {
            path: Some(PathBuf::from("tuning/x.toml")),
            problems: vec![Problem {
                key: Key::shard(1).dot("partitions"),
                at: Some(Location {
                    line: 14,
                    column: 14,
                }),
                kind: ProblemKind::PartitionOwnedTwice {
                    partition: PartitionId(3),
                    other_shard: 0,
                    other_core: CoreId(0),
                },
            }],
        };
        let text = error.to_string();
        assert!(
            text.starts_with("tuning/x.toml:14:14: shard[1].partitions: partition 3 is already owned by shard[0] (core 0)"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn several_problems_are_listed_one_per_line() {
        let error = TuningError::Invalid {
            path: None,
            problems: vec![
                Problem::new(Key::at("shard"), ProblemKind::NoShards),
                Problem::new(
                    Key::at("ownership").dot("partitions"),
                    ProblemKind::PartitionCountOutOfRange { value: 0 },
                ),
            ],
        };
        let text = error.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("2 problems"), "{text}");
    }

    #[test]
    fn partition_count_advice_depends_on_direction() {
        let fewer = ProblemKind::PartitionCountMismatch {
            topic: "t".into(),
            expected: 8,
            actual: 6,
        };
        assert!(fewer.to_string().contains("recreate it with 8 partitions"));
        let more = ProblemKind::PartitionCountMismatch {
            topic: "t".into(),
            expected: 8,
            actual: 12,
        };
        assert!(more.to_string().contains("set ownership.partitions = 12"));
    }
}
