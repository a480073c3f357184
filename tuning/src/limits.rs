//! Every limit and default of a core map, in one place, units last.
//!
//! Owns: the numbers the validator enforces and the defaults of optional keys,
//! and the compile-time checks that keep them consistent with each other.
//! Must never: hold runtime state or read the environment; a limit that depends
//! on the machine belongs to [`crate::Machine`].

/// CPU numbers a core map may name are `0..CORES_MAX`. Linux's `cpu_set_t`, the
/// mask that `sched_setaffinity` (and so `core_affinity`) takes, holds 1024 CPUs;
/// a larger number could never be pinned.
pub const CORES_MAX: usize = 1024;

/// Most partitions a core map may describe (`ownership.partitions`). The engine
/// sizes per-partition tables at start-up from this count; Kafka's own guidance
/// is a few thousand partitions per broker, so 10 000 is far past any sane map
/// while keeping those tables small.
pub const PARTITIONS_MAX: u32 = 10_000;

/// Longest `node.name`. The name is embedded in `group.instance.id`
/// (`<name>-<core>`), transactional ids, client ids and metric labels; keeping
/// it short keeps all of those readable.
pub const NODE_NAME_BYTES_MAX: usize = 48;

/// Default `runtime.park_us`: an idle parked shard re-polls every 200 µs. That
/// is about what one cross-core wake-up already costs on the 2-vCPU reference
/// VM (p50 120-170 µs measured there), so an idle shard adds at most about
/// one wake-up to the first record after a lull while leaving its core almost
/// entirely free.
pub const PARK_US_DEFAULT: u32 = 200;

/// Longest `runtime.park_us`. A parked shard notices its commit tick and a
/// shutdown request only when it wakes; 100 ms keeps that stall within one
/// default exactly-once commit interval.
pub const PARK_US_MAX: u32 = 100_000;

/// Default `commit.interval_ms`, Kafka Streams' `commit.interval.ms` under
/// exactly-once. We use it for at-least-once too (Kafka Streams uses 30 000
/// there): a crash replays at most one interval of input, and a short interval
/// keeps that replay, and the restart it slows, small.
pub const COMMIT_INTERVAL_MS_DEFAULT: u32 = 100;

/// Default `commit.target_latency_ms` (adaptive policy): a record's outputs
/// are committed within about this long of its arrival even while input
/// keeps coming. 5 ms is a few transaction commits on a loopback broker
/// (1-3 ms each), so under load several batches share each transaction.
pub const COMMIT_TARGET_LATENCY_MS_DEFAULT: u32 = 5;

/// Default `commit.min_interval_ms` (adaptive policy): at most 1 000 commits
/// per second per shard, whatever else asks for one.
pub const COMMIT_MIN_INTERVAL_MS_DEFAULT: u32 = 1;

/// Default `commit.busy_percent_max` (adaptive policy): a shard spends at
/// most 90 % of its time blocked in commits, so after a commit that took
/// `t` the next waits at least `t / 9`. It was 50 (wait as long as the last
/// commit took); once a commit cost about 3 ms (merged ProduceRequests), 90
/// measured a lower p99 at 1 000 orders/s and the same at 5 000
/// (docs/PERFORMANCE.md). The broker is protected by
/// `transactions_per_s_max`, which caps the node's transactions whatever
/// this share allows.
pub const COMMIT_BUSY_PERCENT_MAX_DEFAULT: u32 = 90;

/// Default `commit.transactions_per_s_max` (adaptive policy), per node: a
/// transaction costs the broker an AddPartitionsToTxn per new partition, an
/// EndTxn and a marker per partition; 400 a second per node keeps a small
/// broker (2 vCPU, measured in docs/PERFORMANCE.md) out of overload.
pub const COMMIT_TRANSACTIONS_PER_S_MAX_DEFAULT: u32 = 400;

/// Largest `commit.transactions_per_s_max`.
pub const COMMIT_TRANSACTIONS_PER_S_LIMIT: u32 = 100_000;

/// Longest `commit.interval_ms` under at-least-once: a crash replays up to one
/// interval of input, so a minute bounds the duplicates a restart can emit.
pub const COMMIT_INTERVAL_MS_MAX: u32 = 60_000;

/// Longest `commit.interval_ms` under exactly-once. A shard's transaction
/// stays open for up to one interval of processing and then for its commit
/// call; [`TRANSACTION_TIMEOUT_MS`] is sized as the commit call's timeout
/// (`records::KAFKA_CALL_TIMEOUT_MS`, 30 s, the workspace's one call
/// timeout, which the engine uses) plus this interval, so a
/// transaction opened at the start of an interval is committed (or has
/// failed at the shard) before the broker aborts it. At most half of the
/// timeout, as in Kafka Streams (10 s timeout, 100 ms interval by default).
pub const EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX: u32 = 5_000;

/// `transaction.timeout.ms` of every transactional producer the engine
/// creates (its shards', their at-least-once state producers', the owners'
/// registry's fencing producer): the one value, defined here so that the
/// exactly-once interval limit above and the engine's producers cannot
/// disagree (`engine::kafka::TRANSACTION_TIMEOUT_MS` is this constant; the
/// engine checks it is its commit call's timeout plus
/// [`EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX`]). Why 35 s and not Kafka
/// Streams' 10 s or the Java producer's 60 s: see the engine's
/// `kafka::TRANSACTION_TIMEOUT_MS` (leader failovers bound it from below,
/// the take-over after `kill -9` from above).
pub const TRANSACTION_TIMEOUT_MS: u64 = 35_000;

/// Default `retry.attempts_max`: restarts of a failed shard in one failure
/// streak before the engine gives up on it. With the default backoff the ten
/// waits (0.1, 0.2, 0.4 ... 6.4, then 10 s three times) add up to about 43 s,
/// which outlasts a broker restart (about 10-30 s).
pub const RETRY_ATTEMPTS_MAX_DEFAULT: u32 = 10;

/// Default `state.order_retention`: a finished order stays in the Order
/// stage's store for 24 hours of event time after its outcome.
pub const ORDER_RETENTION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

/// Largest `state.order_retention`: ten years. (Longer is "never", which the
/// memory of a node cannot promise.)
pub const ORDER_RETENTION_MS_LIMIT: u64 = 3_650 * 24 * 60 * 60 * 1000;

/// Largest `retry.attempts_max`. More restarts than this in one streak is a
/// crash loop, not a recovery; to ride out a long outage, raise
/// `retry.deadline_ms` instead.
pub const RETRY_ATTEMPTS_MAX_LIMIT: u32 = 1_000;

/// Default `retry.deadline_ms`: the longest a failure streak may last before
/// the engine gives up on the shard. Two minutes is a few broker restarts.
pub const RETRY_DEADLINE_MS_DEFAULT: u32 = 120_000;

/// Largest `retry.deadline_ms`. A shard that has not committed for an hour
/// is not coming back by itself; an operator should hear about it.
pub const RETRY_DEADLINE_MS_LIMIT: u32 = 3_600_000;

/// Default `retry.backoff_min_ms`: the wait before a streak's first restart;
/// it doubles at each restart of the streak.
pub const RETRY_BACKOFF_MIN_MS_DEFAULT: u32 = 100;

/// Default `retry.backoff_max_ms`: the cap on the doubling wait.
pub const RETRY_BACKOFF_MAX_MS_DEFAULT: u32 = 10_000;

/// Largest `retry.backoff_min_ms` and `retry.backoff_max_ms`. A failed shard
/// processes nothing while it waits; ten minutes between restarts is already
/// an outage. (Upper bounds of keys whose names end in `_max` are `_LIMIT`
/// here, so that a bound is never `..._MAX_MAX`.)
pub const RETRY_BACKOFF_MS_LIMIT: u32 = 600_000;

// A partition number is an `i32` on the wire; every valid one must fit.
const _: () = assert!(PARTITIONS_MAX as u64 <= i32::MAX as u64);
const _: () = assert!(PARK_US_DEFAULT >= 1 && PARK_US_DEFAULT <= PARK_US_MAX);
// The default commit interval must be valid under both guarantees, and the
// exactly-once bound must be the tighter one.
const _: () = assert!(COMMIT_INTERVAL_MS_DEFAULT <= EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX);
const _: () = assert!(EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX <= COMMIT_INTERVAL_MS_MAX);
// The adaptive defaults must pass the rules a file's [commit] section obeys.
const _: () = assert!(COMMIT_TARGET_LATENCY_MS_DEFAULT >= 1);
const _: () = assert!(COMMIT_TARGET_LATENCY_MS_DEFAULT <= COMMIT_INTERVAL_MS_DEFAULT);
const _: () = assert!(COMMIT_MIN_INTERVAL_MS_DEFAULT <= COMMIT_TARGET_LATENCY_MS_DEFAULT);
const _: () =
    assert!(COMMIT_BUSY_PERCENT_MAX_DEFAULT >= 1 && COMMIT_BUSY_PERCENT_MAX_DEFAULT <= 100);
const _: () = assert!(COMMIT_TRANSACTIONS_PER_S_MAX_DEFAULT >= 1);
const _: () = assert!(COMMIT_TRANSACTIONS_PER_S_MAX_DEFAULT <= COMMIT_TRANSACTIONS_PER_S_LIMIT);
// Leave at least as much time for the commit itself as for the interval.
const _: () = assert!(2 * EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX as u64 <= TRANSACTION_TIMEOUT_MS);
// A parked shard must wake at least once per default commit interval.
const _: () = assert!(PARK_US_MAX as u64 <= COMMIT_INTERVAL_MS_DEFAULT as u64 * 1_000);
// The retry defaults must pass the rules a file's [retry] section obeys:
// each in range, at least one restart, the first wait no longer than the
// longest, and a streak that outlasts its first wait.
const _: () = assert!(RETRY_ATTEMPTS_MAX_DEFAULT >= 1);
const _: () = assert!(RETRY_ATTEMPTS_MAX_DEFAULT <= RETRY_ATTEMPTS_MAX_LIMIT);
const _: () = assert!(RETRY_DEADLINE_MS_DEFAULT >= 1);
const _: () = assert!(RETRY_DEADLINE_MS_DEFAULT <= RETRY_DEADLINE_MS_LIMIT);
const _: () = assert!(RETRY_BACKOFF_MIN_MS_DEFAULT >= 1);
const _: () = assert!(RETRY_BACKOFF_MIN_MS_DEFAULT <= RETRY_BACKOFF_MAX_MS_DEFAULT);
const _: () = assert!(RETRY_BACKOFF_MAX_MS_DEFAULT <= RETRY_BACKOFF_MS_LIMIT);
const _: () = assert!(RETRY_BACKOFF_MIN_MS_DEFAULT <= RETRY_DEADLINE_MS_DEFAULT);

/// `[ownership] session_ms` by default: how long a node killed without
/// leaving stays registered as the owner of its partitions before the others
/// fence it. Long enough that a broker stalled for some seconds does not
/// make a live node look departed (docs/STATE.md, "Take-over after kill -9").
pub const NODE_SESSION_MS_DEFAULT: u32 = 10_000;
/// Least `[ownership] session_ms`. The broker must allow it too: its
/// `group.min.session.timeout.ms` (6 000 by default) bounds every classic
/// group's session, the owners' registry's included.
pub const NODE_SESSION_MS_MIN: u32 = 1_000;
/// Most `[ownership] session_ms` (the broker's default
/// `group.max.session.timeout.ms` is 30 minutes; past a few minutes a dead
/// node's partitions would wait too long for their fence).
pub const NODE_SESSION_MS_MAX: u32 = 300_000;
const _: () = assert!(NODE_SESSION_MS_MIN <= NODE_SESSION_MS_DEFAULT);
const _: () = assert!(NODE_SESSION_MS_DEFAULT <= NODE_SESSION_MS_MAX);

/// Most `[state] standby_replicas`: warm copies of a partition beyond its
/// owner (Kafka Streams' `num.standby.replicas` has no cap; each copy costs
/// a node the partition's memory and a changelog reader's fetches).
pub const STANDBY_REPLICAS_MAX: u32 = 8;
