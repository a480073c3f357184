//! The validated core map: [`NodeTuning`] and the sections it is made of.
//!
//! Owns: the types the engine reads at start-up and the questions it asks of
//! them (who owns partition 5, what does core 3 own, what is left unowned).
//! Must never: hold an unvalidated map. A `NodeTuning` exists only once every
//! rule in `validate.rs` holds, so its fields are private and reached through
//! getters; the section types are plain data that [`NodeTuning::new`] checks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Key, Location, Problem, TuningError};
use crate::ids::{CoreId, NodeName, PartitionId};
use crate::limits::{
    COMMIT_BUSY_PERCENT_MAX_DEFAULT, COMMIT_INTERVAL_MS_DEFAULT, COMMIT_MIN_INTERVAL_MS_DEFAULT,
    COMMIT_TARGET_LATENCY_MS_DEFAULT, COMMIT_TRANSACTIONS_PER_S_MAX_DEFAULT,
    ORDER_RETENTION_MS_DEFAULT, PARK_US_DEFAULT, RETRY_ATTEMPTS_MAX_DEFAULT,
    RETRY_BACKOFF_MAX_MS_DEFAULT, RETRY_BACKOFF_MIN_MS_DEFAULT, RETRY_DEADLINE_MS_DEFAULT,
};

/// `[node]`: who this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSection {
    pub name: NodeName,
}

/// `[ownership]`: how partitions reach shards, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub mode: OwnershipMode,
    /// The partition count that every co-partitioned input topic and every
    /// changelog must have (see [`NodeTuning::check_partition_count`]).
    pub partitions: u32,
    /// `session_ms`: how long this node, killed without leaving, stays
    /// registered as the owner of its partitions (the owners' registry's
    /// `session.timeout.ms`); after it the other nodes fence its
    /// transactional ids. Shorter takes over sooner and evicts a live node
    /// that stalls that long.
    pub session_ms: u32,
    /// `liveness_addr`: where this node's liveness beacon listens
    /// (consumer-group mode only; `None`, the default, runs none). The other
    /// nodes hold a connection to it and, when it closes without a goodbye
    /// and the address then refuses connections (the process is gone, as
    /// after `kill -9`), remove this node's group members and fence its
    /// transactional ids at once instead of after the sessions. Port 0 takes
    /// a free port; the address must be one the other nodes can reach.
    pub liveness_addr: Option<std::net::SocketAddr>,
}

/// `ownership.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnershipMode {
    /// `"core-map"`: each shard `assign()`s exactly the partitions listed for
    /// it. Static: moving a partition means editing the map and restarting.
    CoreMap,
    /// `"consumer-group"`: shards join the consumer group (static membership,
    /// `group.instance.id` = `<node>-<core>`) and the group hands out
    /// partitions; elastic across nodes, so the file lists no partitions.
    ConsumerGroup,
}

impl fmt::Display for OwnershipMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnershipMode::CoreMap => "core-map",
            OwnershipMode::ConsumerGroup => "consumer-group",
        })
    }
}

/// One `[[shard]]`: the core a shard is pinned to and, in core-map mode, the
/// partitions it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlacement {
    pub core: CoreId,
    /// Ascending in a validated map. Empty in consumer-group mode.
    pub partitions: Vec<PartitionId>,
}

/// `[runtime]`: how shards wait and where Kafka client threads run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeKnobs {
    pub idle: IdleStrategy,
    pub client_threads: ClientThreads,
}

impl Default for RuntimeKnobs {
    /// Park for [`PARK_US_DEFAULT`] µs, client threads unpinned: safe on a
    /// shared machine; dedicated nodes opt into busy-polling.
    fn default() -> Self {
        RuntimeKnobs {
            idle: IdleStrategy::Park {
                park_us: PARK_US_DEFAULT,
            },
            client_threads: ClientThreads::Unpinned,
        }
    }
}

/// `runtime.idle` (and `runtime.park_us`): what a shard does when it has no
/// work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStrategy {
    /// `"busy-poll"`: spin on the consumer queue. Lowest latency, costs a whole
    /// core even when idle; for dedicated cores only.
    BusyPoll,
    /// `"park"`: sleep up to `park_us` µs between polls, giving the core to
    /// other threads. Each wake-up costs a scheduler hand-off.
    Park { park_us: u32 },
}

impl IdleStrategy {
    /// How long an idle shard sleeps between polls; `None` when it spins.
    pub fn park_duration(&self) -> Option<Duration> {
        match self {
            IdleStrategy::BusyPoll => None,
            IdleStrategy::Park { park_us } => Some(Duration::from_micros(u64::from(*park_us))),
        }
    }
}

/// `runtime.client_threads`: where librdkafka's own threads (`rdk:main`,
/// `rdk:broker*`) run. They inherit the affinity of the thread that creates the
/// client, so the engine must choose deliberately (see tuning/README.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientThreads {
    /// `"unpinned"`: create clients from an unpinned thread; the OS places
    /// their threads on any core.
    Unpinned,
    /// `"shard-core"`: each shard's client threads share the shard's core.
    /// Keeps a shard's network hand-offs on one core (a same-core loopback
    /// round trip is several times cheaper than a cross-core one) but only
    /// works if the shard parks.
    ShardCore,
    /// `{ cores = [...] }`: client threads of every shard run on these I/O
    /// cores. Ascending in a validated map.
    Cores(Vec<CoreId>),
}

/// `[commit]`: when a shard commits and what a commit promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Longest time between commits while input keeps arriving; Kafka Streams'
    /// `commit.interval.ms`.
    pub interval_ms: u32,
    /// Also commit as soon as a shard has drained its input, so at low load a
    /// record's outputs become visible (to `read_committed` readers) without
    /// waiting for the rest of the interval.
    pub on_drain: bool,
    pub guarantee: Guarantee,
    /// `commit.policy`: when, within the interval, a shard commits.
    pub timing: CommitTiming,
    /// `commit.target_latency_ms` (adaptive): commit once the oldest
    /// uncommitted record has waited this long, less what a commit takes,
    /// even while input keeps arriving.
    pub target_latency_ms: u32,
    /// `commit.min_interval_ms` (adaptive): the shortest gap between two
    /// commits of a shard, whatever else says "commit now".
    pub min_interval_ms: u32,
    /// `commit.busy_percent_max` (adaptive): the largest share of a shard's
    /// time spent blocked in commits; after a commit that took `t`, the next
    /// waits at least `t × (100 − p) / p`, so slow commits back off.
    pub busy_percent_max: u32,
    /// `commit.transactions_per_s_max` (adaptive): the most commits per
    /// second of the whole node (shared evenly by its shards), so a fast
    /// shard never floods the broker with tiny transactions.
    pub transactions_per_s_max: u32,
}

impl CommitPolicy {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            interval_ms: COMMIT_INTERVAL_MS_DEFAULT,
            on_drain: true,
            guarantee: Guarantee::ExactlyOnce,
            timing: CommitTiming::Adaptive,
            target_latency_ms: COMMIT_TARGET_LATENCY_MS_DEFAULT,
            min_interval_ms: COMMIT_MIN_INTERVAL_MS_DEFAULT,
            busy_percent_max: COMMIT_BUSY_PERCENT_MAX_DEFAULT,
            transactions_per_s_max: COMMIT_TRANSACTIONS_PER_S_MAX_DEFAULT,
        }
    }
}

/// `commit.policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitTiming {
    /// `"interval"`: Kafka Streams' rule — every `interval_ms`, and (with
    /// `on_drain`) as soon as the input is drained, a drain commit waiting at
    /// least as long as the previous commit took.
    Interval,
    /// `"adaptive"`: as soon as the input is drained, or the oldest
    /// uncommitted record nears `target_latency_ms`, but never sooner than
    /// `min_interval_ms`, `busy_percent_max` and `transactions_per_s_max`
    /// allow; `interval_ms` stays the longest gap under load.
    Adaptive,
}

impl fmt::Display for CommitTiming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommitTiming::Interval => "interval",
            CommitTiming::Adaptive => "adaptive",
        })
    }
}

/// `commit.guarantee`: Kafka Streams' `processing.guarantee`. The one
/// guarantee type of the workspace: the engine's Kafka settings
/// (`engine::kafka::Guarantee`), the audit, the load generator and the
/// binaries' `--guarantee` flags all use this enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// `"exactly-once"`: outputs, changelog writes and input offsets commit in
    /// one Kafka transaction per shard per commit.
    ExactlyOnce,
    /// `"at-least-once"`: a shard holds its outputs until the commit. Each
    /// commit first writes its state changes to the changelogs atomically (in
    /// a Kafka transaction of their own), then sends the held outputs, then
    /// commits the input offsets. A crash replays up to one commit interval,
    /// and the replay re-emits the recorded outputs byte for byte.
    AtLeastOnce,
}

impl Guarantee {
    /// Both guarantees, in the order help texts list them.
    pub const ALL: [Guarantee; 2] = [Guarantee::ExactlyOnce, Guarantee::AtLeastOnce];

    /// The value as a core map (and a `--guarantee` flag) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spelling that names no guarantee.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is no processing guarantee: expected \"exactly-once\" or \"at-least-once\"")]
pub struct UnknownGuarantee(pub String);

impl std::str::FromStr for Guarantee {
    type Err = UnknownGuarantee;

    /// Reads the spelling [`Guarantee::as_str`] writes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Guarantee::ALL
            .into_iter()
            .find(|g| g.as_str() == text)
            .ok_or_else(|| UnknownGuarantee(text.to_string()))
    }
}

/// `[retry]`: how the engine restarts a failed shard. A restart starts the
/// shard afresh from its last commit (new clients, state restored from the
/// changelogs), after a wait that starts at `backoff_min_ms`, doubles at each
/// restart and is capped at `backoff_max_ms` (the engine adds ±25 % jitter).
/// Failures in a row form a streak, which ends when a restarted shard commits
/// again; the engine gives up on the shard when a streak needs more than
/// `attempts_max` restarts or lasts longer than `deadline_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Restarts in one streak before the engine gives up on the shard.
    pub attempts_max: u32,
    /// How long one streak may last before the engine gives up on the shard.
    pub deadline_ms: u32,
    /// The wait before a streak's first restart.
    pub backoff_min_ms: u32,
    /// The longest wait between two restarts.
    pub backoff_max_ms: u32,
}

impl RetryPolicy {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(u64::from(self.deadline_ms))
    }

    pub fn backoff_min(&self) -> Duration {
        Duration::from_millis(u64::from(self.backoff_min_ms))
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(u64::from(self.backoff_max_ms))
    }
}

impl Default for RetryPolicy {
    /// Ten restarts or two minutes per streak, waits from 100 ms to 10 s:
    /// enough to ride out a broker restart (see `limits.rs`).
    fn default() -> Self {
        RetryPolicy {
            attempts_max: RETRY_ATTEMPTS_MAX_DEFAULT,
            deadline_ms: RETRY_DEADLINE_MS_DEFAULT,
            backoff_min_ms: RETRY_BACKOFF_MIN_MS_DEFAULT,
            backoff_max_ms: RETRY_BACKOFF_MAX_MS_DEFAULT,
        }
    }
}

/// `[api]`: the Order API's security settings (read by `tradeflow run`;
/// the engine ignores them). Relative paths in the file are resolved
/// against the core map's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiSection {
    /// `[api.auth]`: bearer tokens; `None` leaves the API unauthenticated.
    pub auth: Option<ApiAuth>,
    /// `[api.tls]`: TLS on REST and gRPC; `None` serves plaintext.
    pub tls: Option<ApiTls>,
}

/// `[api.auth]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiAuth {
    /// The token file (TOML; docs/SECURITY.md), reloaded on SIGHUP.
    pub tokens_file: PathBuf,
    /// Who may read `/metrics` and `/reports/hdr`.
    pub metrics: ApiMetricsAccess,
}

/// `[api.auth] metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiMetricsAccess {
    /// Anyone who reaches the port.
    #[default]
    Open,
    /// Any valid bearer token.
    Token,
}

impl fmt::Display for ApiMetricsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiMetricsAccess::Open => "open",
            ApiMetricsAccess::Token => "token",
        })
    }
}

/// `[api.tls]`: PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[state]`: how long the stores keep what they may forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSection {
    /// `order_retention`: how long (event time) a finished order stays in the
    /// Order stage's store (and its changelog) after its outcome. Within it a
    /// resubmitted `client_order_id` is the same order; after it, a new one.
    pub order_retention_ms: u64,
    /// `standby_replicas`: warm copies this node keeps of partitions other
    /// nodes own, by tailing their changelogs, so a take-over restores only
    /// the tail (Kafka Streams' `num.standby.replicas`). 0 (the default):
    /// none. Group mode only.
    pub standby_replicas: u32,
    /// `changelog_layout`: one compacted changelog topic per store (the
    /// default) or one shared by every store of the application.
    pub changelog_layout: ChangelogLayout,
}

/// `[state] changelog_layout`: how a node's stores are mirrored to Kafka.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChangelogLayout {
    /// `"per-store"`: one compacted topic per store,
    /// `<application id>-<store>-changelog` (Kafka Streams' naming). A
    /// commit's transaction spans one changelog partition per dirty store
    /// per owned partition.
    #[default]
    PerStore,
    /// `"shared"`: one compacted topic for every store of the application,
    /// `<application id>-changelog`, each record's key prefixed with its
    /// store's name. A commit's transaction spans at most one changelog
    /// partition per owned partition.
    Shared,
}

impl ChangelogLayout {
    /// The key's value in a core map.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangelogLayout::PerStore => "per-store",
            ChangelogLayout::Shared => "shared",
        }
    }

    /// The layout a core map's value names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "per-store" => Some(ChangelogLayout::PerStore),
            "shared" => Some(ChangelogLayout::Shared),
            _ => None,
        }
    }
}

impl fmt::Display for ChangelogLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for StateSection {
    /// 24 hours.
    fn default() -> Self {
        StateSection {
            order_retention_ms: ORDER_RETENTION_MS_DEFAULT,
            standby_replicas: 0,
            changelog_layout: ChangelogLayout::PerStore,
        }
    }
}

/// What a node's engine runs with, apart from where its shards are:
/// `[runtime]`, `[commit]`, `[retry]` and `[state]`, each checked by the
/// same rules a core map's sections obey (see `validate.rs`).
///
/// The engine takes only this type (`engine::runtime::Engine::start`), so
/// every way of starting shards — `tradeflow run` (from a core map, through
/// [`NodeTuning::knobs`]), `tradeflow demo` (from its flags) and the tests —
/// passes one validation and gets one set of defaults. Its fields are
/// private: a `NodeKnobs` exists only once the rules hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeKnobs {
    pub(crate) runtime: RuntimeKnobs,
    pub(crate) commit: CommitPolicy,
    pub(crate) retry: RetryPolicy,
    pub(crate) state: StateSection,
}

impl Default for NodeKnobs {
    /// Every section's default: what a core map that names none of these
    /// sections runs with.
    fn default() -> Self {
        NodeKnobs {
            runtime: RuntimeKnobs::default(),
            commit: CommitPolicy::default(),
            retry: RetryPolicy::default(),
            state: StateSection::default(),
        }
    }
}

impl NodeKnobs {
    /// `[runtime]`: how shards wait and where client threads run.
    pub fn runtime(&self) -> &RuntimeKnobs {
        &self.runtime
    }

    /// `[commit]`: when shards commit and under which guarantee.
    pub fn commit(&self) -> CommitPolicy {
        self.commit
    }

    /// `[retry]`: how the engine restarts a failed shard.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// `[state]`: standby copies, the changelog layout, retention.
    pub fn state(&self) -> StateSection {
        self.state
    }
}

/// The sections of a map, in file order, before their combination is checked.
pub(crate) type Sections = (
    NodeSection,
    Ownership,
    Vec<ShardPlacement>,
    RuntimeKnobs,
    CommitPolicy,
    RetryPolicy,
);

/// A validated core map for one node. See the crate documentation for the
/// file format and the start-up sequence.
///
/// Lives on: the thread that starts the engine; it is plain data, so clone it
/// or share it (`Arc`) with the shards it describes.
#[derive(Clone, Debug)]
pub struct NodeTuning {
    pub(crate) node: NodeSection,
    pub(crate) ownership: Ownership,
    pub(crate) shards: Vec<ShardPlacement>,
    pub(crate) runtime: RuntimeKnobs,
    pub(crate) commit: CommitPolicy,
    pub(crate) retry: RetryPolicy,
    /// Order API settings; no rule relates them to the other sections.
    pub(crate) api: ApiSection,
    /// `[state]`; no rule relates it to the other sections.
    pub(crate) state: StateSection,
    /// Owning core of each partition, indexed by partition number; derived
    /// from `shards` (all `None` in consumer-group mode) so `owner_of` is O(1).
    pub(crate) owners: Vec<Option<CoreId>>,
    /// The text this map was read from, to point later errors at a line.
    pub(crate) origin: Option<Origin>,
}

/// Two maps are equal when they describe the same placement and knobs,
/// wherever they were read from.
impl PartialEq for NodeTuning {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
            && self.ownership == other.ownership
            && self.shards == other.shards
            && self.runtime == other.runtime
            && self.commit == other.commit
            && self.retry == other.retry
            && self.api == other.api
            && self.state == other.state
    }
}

impl Eq for NodeTuning {}

impl NodeTuning {
    /// `[api]`: the Order API's security settings.
    pub fn api(&self) -> &ApiSection {
        &self.api
    }

    /// `[state]`: retention of finished orders.
    pub fn state(&self) -> StateSection {
        self.state
    }

    pub fn node(&self) -> &NodeSection {
        &self.node
    }

    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// The shards in file order: `shards()[i]` is `shard[i]` in messages.
    pub fn shards(&self) -> &[ShardPlacement] {
        &self.shards
    }

    pub fn runtime(&self) -> &RuntimeKnobs {
        &self.runtime
    }

    /// The map's `[runtime]`, `[commit]`, `[retry]` and `[state]`, as the
    /// engine takes them.
    pub fn knobs(&self) -> NodeKnobs {
        NodeKnobs {
            runtime: self.runtime.clone(),
            commit: self.commit,
            retry: self.retry,
            state: self.state,
        }
    }

    pub fn commit(&self) -> CommitPolicy {
        self.commit
    }

    /// How the engine restarts a failed shard (`[retry]`).
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The file this map was loaded from, if it was.
    pub fn path(&self) -> Option<&Path> {
        self.origin.as_ref().and_then(|o| o.path.as_deref())
    }

    /// The core whose shard owns `partition` in core-map mode. `None` for a
    /// partition this node does not own (out of range, or left to another
    /// node), and always `None` in consumer-group mode, where the group
    /// decides at run time.
    pub fn owner_of(&self, partition: PartitionId) -> Option<CoreId> {
        let index = usize::try_from(partition.0).ok()?;
        self.owners.get(index).copied().flatten()
    }

    /// The partitions the shard on `core` owns, ascending; empty when no shard
    /// runs there, and in consumer-group mode.
    pub fn partitions_of(&self, core: CoreId) -> &[PartitionId] {
        self.shard_on(core).map_or(&[], |s| s.partitions.as_slice())
    }

    /// The shard pinned to `core`, if any.
    pub fn shard_on(&self, core: CoreId) -> Option<&ShardPlacement> {
        self.shards.iter().find(|s| s.core == core)
    }

    /// The cores that run shards, in file order.
    pub fn shard_cores(&self) -> impl Iterator<Item = CoreId> + '_ {
        self.shards.iter().map(|s| s.core)
    }

    /// Partitions of `0..ownership.partitions` that no shard of this node
    /// owns, ascending. Allowed, since in a multi-node core map another node
    /// owns them, but worth logging: if no node does, nobody consumes them.
    /// Always empty in consumer-group mode.
    pub fn unowned_partitions(&self) -> Vec<PartitionId> {
        match self.ownership.mode {
            OwnershipMode::ConsumerGroup => Vec::new(),
            OwnershipMode::CoreMap => (0..self.ownership.partitions)
                .filter_map(|p| i32::try_from(p).ok().map(PartitionId))
                .filter(|p| self.owner_of(*p).is_none())
                .collect(),
        }
    }

    /// Turns problems found after parsing into an error located in the file
    /// this map came from.
    pub(crate) fn invalid(&self, problems: Vec<Problem>) -> TuningError {
        match &self.origin {
            Some(origin) => origin.invalid(problems),
            None => TuningError::Invalid {
                path: None,
                problems,
            },
        }
    }
}

/// Where a map was read from: the path (if any) and the text, kept to point
/// errors found later (machine, topics) at a line.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) path: Option<PathBuf>,
    pub(crate) text: Arc<str>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text is the file itself; printing it in every Debug is noise.
        f.debug_struct("Origin")
            .field("path", &self.path)
            .field("text_bytes", &self.text.len())
            .finish()
    }
}

impl Origin {
    /// Locates each problem in the text and lists them in file order, so the
    /// message reads top to bottom like the file.
    pub(crate) fn invalid(&self, problems: Vec<Problem>) -> TuningError {
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .map(|mut problem| {
                if problem.at.is_none() {
                    problem.at = self.locate(&problem.key);
                }
                problem
            })
            .collect();
        problems.sort_by_key(|p| {
            p.at.map_or((usize::MAX, usize::MAX), |at| (at.line, at.column))
        });
        TuningError::Invalid {
            path: self.path.clone(),
            problems,
        }
    }

    fn locate(&self, key: &Key) -> Option<Location> {
        crate::position::locate(&self.text, key)
    }
}
