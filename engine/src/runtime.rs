//! The runtime: one glommio executor per shard, pinned to its core, running the
//! shard's loop (poll → process → commit → wait), supervised so a failed shard
//! restarts from its last commit.
//!
//! Owns: executors and their placement, where librdkafka's threads run, the
//! idle strategy (busy-poll or park), commit timing, the shutdown sequence,
//! the control channels (dumps, stats, stop) into each shard, and when each
//! shard publishes its telemetry report (about once a second, between
//! batches, and once more when it stops).
//! Must never: share a lock with a shard; everything crossing into a shard goes
//! through a bounded crossbeam channel or an atomic.
//!
//! Lives on: a supervisor thread per shard (unpinned) and the shard's executor
//! (pinned to the shard's core).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::cadence::{BatchEnd, CommitCadence, CommitRules};
use crate::changelog::Changelogs;
use crate::ids::{PartitionId, ShardId};
use crate::kafka::standby::{spawn_keeper, StandbyPlan};
use crate::kafka::{Guarantee, KafkaSettings, Ownership, RdKafkaPort};
use crate::port::PortError;
use crate::shard::{OutputTiming, Shard, ShardError, ShardStats, Step};
use crate::stage::Stage;
use crate::standby::StandbyHandle;
use crate::store::{PartitionStores, StoreEntries};
use crate::telemetry::{
    ReportChannel, ShardGauges, Telemetry, FINAL_REPORT_TIMEOUT_MS, PUBLISH_INTERVAL_MS,
};

pub use crate::telemetry::ShardStatus;

/// io_uring buffer memory per executor. glommio's default (10 MiB) exceeds the
/// 8 MiB locked-memory limit common on VMs; shards do no DMA file I/O.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 512 * 1024;
/// Records a shard processes before it checks commit timing and commands.
pub const BATCH_RECORDS_MAX: usize = 512;
/// A parked shard idle for this long stops re-polling on its park timer and
/// sleeps in its consumer instead (see `IDLE_WAIT_MAX_MS`).
pub const IDLE_DEEP_AFTER_MS: u64 = 20;
/// The longest a deeply idle shard sleeps in its consumer's queue. A fetched
/// record wakes it at once, so this bounds only how late it notices a
/// control command (an API query, a stop): 200 wake-ups a second instead of
/// one per `park_us`, which took a third of a core for two idle shards.
pub const IDLE_WAIT_MAX_MS: u64 = 5;
/// A commit slower than this is logged as a warning: outputs wait for it.
const SLOW_COMMIT: Duration = Duration::from_millis(1000);
/// Abortable commit failures in a row that are rolled back in memory
/// before the shard restarts instead (a failure every redo meets again).
pub const ROLLBACKS_IN_A_ROW_MAX: u32 = 3;
/// Commands queued for one shard before senders are told it is busy.
pub const COMMAND_QUEUE_DEPTH: usize = 16;
/// The settings the runtime starts with are the tuning crate's types, one
/// type per setting, validated before they get here ([`NodeKnobs`]).
pub use tuning::{ClientThreads, IdleStrategy, NodeKnobs, RetryPolicy};

/// The wait before restart number `attempt` (1-based) of a streak under
/// `retry`: exponential from `backoff_min_ms`, capped at `backoff_max_ms`,
/// with ±25 % jitter from `seed` so shards that failed together (a broker
/// went away) do not come back in lockstep.
///
/// A restart starts the shard afresh from its last commit with fresh clients
/// and state restored from the changelog: a failed transactional producer
/// cannot be reused (librdkafka lacks KIP-890, so an ambiguous commit or
/// abort is fatal for it), and a restart never skips or doubles a record.
pub fn restart_backoff(retry: &RetryPolicy, attempt: u32, seed: u64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let base = retry
        .backoff_min()
        .saturating_mul(1u32 << doublings)
        .min(retry.backoff_max());
    // splitmix64: a cheap, well-spread hash of the seed.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let permille = 750 + (z % 501); // 0.75 ..= 1.25
    base.mul_f64(permille as f64 / 1000.0)
}

/// One shard of this node.
#[derive(Clone, Debug)]
pub struct ShardPlan {
    pub shard: ShardId,
    /// The core to pin to; `None` leaves the executor unbound (tests, laptops).
    pub core: Option<usize>,
    pub ownership: Ownership,
    /// `<application.id>-<node>-<core>`.
    pub transactional_id: String,
}

/// Why the engine could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{shard}: {source}")]
    Port {
        shard: ShardId,
        #[source]
        source: PortError,
    },
    #[error("{shard}: starting its executor: {reason}")]
    Executor { shard: ShardId, reason: String },
    #[error("{shard}: gave up after {attempts} failures in a row; last error: {last}")]
    GaveUp {
        shard: ShardId,
        attempts: u32,
        last: String,
    },
    #[error("{0} is not running")]
    NotRunning(ShardId),
    #[error(
        "{shard}: the Kafka settings say {settings} but commit.guarantee says {commit}: \
         a node runs under one guarantee"
    )]
    GuaranteeMismatch {
        shard: ShardId,
        settings: crate::kafka::Guarantee,
        commit: crate::kafka::Guarantee,
    },
    #[error("locked-memory limit is {limit_bytes} bytes; each shard's executor needs {needed_bytes} (raise `ulimit -l`)")]
    LockedMemory { limit_bytes: u64, needed_bytes: u64 },
}

/// Every store of every partition of one shard, in changelog byte form.
pub type ShardDump = BTreeMap<(PartitionId, &'static str), StoreEntries>;

/// A read of one partition's state, run on the owning shard's thread. It gets
/// `None` when the shard does not own the partition. The state is handed over
/// as `Any` so the engine stays independent of the stage type; the query
/// downcasts it to the stage's `State`.
pub type StateQuery = Box<dyn FnOnce(Option<&dyn std::any::Any>) + Send>;

/// A request into a shard's loop.
pub enum ShardCommand {
    Dump(Sender<ShardDump>),
    Stats(Sender<(ShardStats, Vec<PartitionId>)>),
    Query {
        partition: PartitionId,
        query: StateQuery,
    },
}

struct ShardHandle {
    id: ShardId,
    commands: Sender<ShardCommand>,
    gauges: Arc<ShardGauges>,
    supervisor: JoinHandle<Result<ShardStats, EngineError>>,
}

/// A running node: its shards, the switch that stops them, and the handle
/// on their merged telemetry.
pub struct Engine {
    shards: Vec<ShardHandle>,
    stop: Arc<AtomicBool>,
    telemetry: Telemetry,
    /// The standby keeper's thread, when the node keeps standby copies.
    standby_keeper: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts one supervised shard per plan. `make_stage` builds each shard's
    /// stage (again after a restart).
    pub fn start<S, F>(
        settings: KafkaSettings,
        plans: Vec<ShardPlan>,
        knobs: NodeKnobs,
        partitions: i32,
        make_stage: F,
    ) -> Result<Engine, EngineError>
    where
        S: Stage,
        S::State: Send,
        F: Fn(ShardId) -> S + Send + Clone + 'static,
    {
        check_locked_memory(plans.len())?;
        let first_shard = plans.first().map_or(ShardId(0), |p| p.shard);
        if settings.guarantee != knobs.commit().guarantee {
            return Err(EngineError::GuaranteeMismatch {
                shard: first_shard,
                settings: settings.guarantee,
                commit: knobs.commit().guarantee,
            });
        }
        // The node's commit-rate cap is shared by the shards started here.
        let cadence = CommitRules::for_node(&knobs.commit(), plans.len());
        let stop = Arc::new(AtomicBool::new(false));
        let gauges: Vec<(ShardId, Arc<ShardGauges>)> = plans
            .iter()
            .map(|plan| (plan.shard, Arc::new(ShardGauges::default())))
            .collect();
        let (telemetry, channels) =
            Telemetry::start(gauges.clone()).map_err(|e| EngineError::Executor {
                shard: plans.first().map_or(ShardId(0), |p| p.shard),
                reason: format!("starting the telemetry hub: {e}"),
            })?;
        // The keeper owns the copies; shards reach them through the handle.
        let (standbys, standby_keeper) = if knobs.state().standby_replicas > 0 {
            let (handle, copies) = StandbyHandle::<S::State>::pair(knobs.state().standby_replicas);
            let all_gauges: Vec<Arc<ShardGauges>> =
                gauges.iter().map(|(_, g)| Arc::clone(g)).collect();
            let plan = StandbyPlan {
                changelogs: Changelogs::new(
                    knobs.state().changelog_layout,
                    &settings.application_id,
                    S::State::store_names(),
                ),
                partitions,
                shards_assigned: Box::new(move || all_gauges.iter().all(|g| g.read().assigned)),
                lag: telemetry.standby_lag_sink(),
            };
            let keeper = spawn_keeper(
                &settings,
                plan,
                copies,
                Arc::clone(&stop),
                "standby".to_string(),
            )
            .map_err(|source| EngineError::Port {
                shard: first_shard,
                source,
            })?;
            (Some(Arc::new(handle)), Some(keeper))
        } else {
            (None, None)
        };
        let mut shards = Vec::with_capacity(plans.len());
        for ((plan, (_, gauges)), reports) in plans.into_iter().zip(gauges).zip(channels) {
            let (commands_tx, commands_rx) = crossbeam_channel::bounded(COMMAND_QUEUE_DEPTH);
            let context = SupervisorContext {
                commits: Arc::new(AtomicU64::new(0)),
                settings: settings.clone(),
                plan: plan.clone(),
                knobs: knobs.clone(),
                cadence,
                partitions,
                stop: Arc::clone(&stop),
                gauges: Arc::clone(&gauges),
                commands: commands_rx,
                reports,
                standbys: standbys
                    .as_ref()
                    .map(|c| Arc::clone(c) as Arc<dyn std::any::Any + Send + Sync>),
            };
            let make_stage = make_stage.clone();
            let supervisor = std::thread::Builder::new()
                .name(format!("{}-supervisor", plan.shard))
                .spawn(move || supervise(context, make_stage))
                .map_err(|e| EngineError::Executor {
                    shard: plan.shard,
                    reason: e.to_string(),
                })?;
            shards.push(ShardHandle {
                id: plan.shard,
                commands: commands_tx,
                gauges,
                supervisor,
            });
        }
        Ok(Engine {
            shards,
            stop,
            telemetry,
            standby_keeper,
        })
    }

    /// The handle on every shard's metrics, gauges and readiness. It outlives
    /// the engine, so a shutdown's final reports can still be read.
    pub fn telemetry(&self) -> Telemetry {
        self.telemetry.clone()
    }

    /// The switch that stops every shard (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Whether a shard of this node may own `partition` by its gauges (see
    /// `ShardGauges::may_own`): false only when none does.
    pub fn may_own(&self, partition: PartitionId) -> bool {
        self.shards.iter().any(|s| s.gauges.may_own(partition.0))
    }

    pub fn statuses(&self) -> Vec<(ShardId, ShardStatus)> {
        self.shards
            .iter()
            .map(|s| (s.id, s.gauges.status()))
            .collect()
    }

    /// How often each shard was restarted from its last commit after a failure.
    pub fn restarts(&self) -> Vec<(ShardId, u32)> {
        self.shards
            .iter()
            .map(|s| (s.id, s.gauges.restarts()))
            .collect()
    }

    /// Waits until every shard runs (restored what it owns); false after
    /// `timeout`, or as soon as a shard has failed for good.
    pub fn wait_running(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let statuses = self.statuses();
            if statuses.iter().all(|(_, s)| *s == ShardStatus::Running) {
                return true;
            }
            if statuses.iter().any(|(_, s)| *s == ShardStatus::Failed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn ask<T>(
        &self,
        shard: &ShardHandle,
        make: impl FnOnce(Sender<T>) -> ShardCommand,
        timeout: Duration,
    ) -> Result<T, EngineError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        match shard.commands.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                return Err(EngineError::NotRunning(shard.id))
            }
        }
        rx.recv_timeout(timeout)
            .map_err(|_| EngineError::NotRunning(shard.id))
    }

    /// Every shard's stores, for comparing state across restarts.
    pub fn dump(&self, timeout: Duration) -> Result<Vec<(ShardId, ShardDump)>, EngineError> {
        self.shards
            .iter()
            .map(|s| Ok((s.id, self.ask(s, ShardCommand::Dump, timeout)?)))
            .collect()
    }

    /// Runs `read` against `partition`'s state on the shard that owns it and
    /// returns its answer; `Ok(None)` when no shard of this node owns the
    /// partition (another node does, or a rebalance is moving it).
    pub fn query<St, T, F>(
        &self,
        partition: PartitionId,
        read: F,
        timeout: Duration,
    ) -> Result<Option<T>, EngineError>
    where
        St: 'static,
        T: Send + 'static,
        F: Fn(&St) -> T + Send + Clone + 'static,
    {
        // The shard whose gauges say it owns the partition first, so a
        // query costs one hand-over, not one per shard; the others only if
        // it did not answer (ownership moved meanwhile).
        let (likely, others): (Vec<&ShardHandle>, Vec<&ShardHandle>) = self
            .shards
            .iter()
            .partition(|s| s.gauges.may_own(partition.0));
        for shard in likely.into_iter().chain(others) {
            let (tx, rx) = crossbeam_channel::bounded::<Option<T>>(1);
            let read = read.clone();
            let query: StateQuery = Box::new(move |state| {
                let answer = state.and_then(|s| s.downcast_ref::<St>()).map(read);
                let _ = tx.try_send(answer);
            });
            if shard
                .commands
                .try_send(ShardCommand::Query { partition, query })
                .is_err()
            {
                continue;
            }
            if let Ok(Some(answer)) = rx.recv_timeout(timeout) {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }

    /// Every shard's counters and owned partitions.
    pub fn stats(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(ShardId, ShardStats, Vec<PartitionId>)>, EngineError> {
        self.shards
            .iter()
            .map(|s| {
                let (stats, owned) = self.ask(s, ShardCommand::Stats, timeout)?;
                Ok((s.id, stats, owned))
            })
            .collect()
    }

    /// The shutdown sequence: stop polling → finish the batch → flush → commit →
    /// close, on every shard; returns each shard's final counters.
    pub fn shutdown(self) -> Result<Vec<(ShardId, ShardStats)>, EngineError> {
        self.stop.store(true, Ordering::Release);
        if let Some(keeper) = self.standby_keeper {
            if keeper.join().is_err() {
                warn!("the standby keeper panicked");
            }
        }
        let mut out = Vec::new();
        let mut first_error = None;
        for shard in self.shards {
            match shard.supervisor.join() {
                Ok(Ok(stats)) => out.push((shard.id, stats)),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(EngineError::Executor {
                        shard: shard.id,
                        reason: "supervisor panicked".into(),
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

struct SupervisorContext {
    /// Commits made by this shard's current run: a failed run that made
    /// any ends its failure streak.
    commits: Arc<AtomicU64>,
    settings: KafkaSettings,
    plan: ShardPlan,
    knobs: NodeKnobs,
    /// The `[commit]` rules as this shard applies them.
    cadence: CommitRules,
    partitions: i32,
    stop: Arc<AtomicBool>,
    gauges: Arc<ShardGauges>,
    commands: Receiver<ShardCommand>,
    reports: ReportChannel,
    /// The node's `StandbyHandle<S::State>`, typed back in `shard_loop`.
    standbys: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Runs a shard until it stops cleanly, restarting it from its last commit
/// (fresh clients, state restored from the changelog) when it fails.
fn supervise<S, F>(context: SupervisorContext, make_stage: F) -> Result<ShardStats, EngineError>
where
    S: Stage,
    S::State: Send,
    F: Fn(ShardId) -> S + Send + Clone + 'static,
{
    let shard = context.plan.shard;
    let retry = context.knobs.retry();
    let mut attempts = 0u32;
    let mut streak_started = Instant::now();
    loop {
        context.commits.store(0, Ordering::Release);
        // A new incarnation is not ready until it has restored and polled.
        context.gauges.reset_readiness();
        match run_once(&context, make_stage.clone()) {
            Ok(stats) => {
                context.gauges.set_status(ShardStatus::Stopped);
                return Ok(stats);
            }
            Err(e) if context.stop.load(Ordering::Acquire) => {
                context.gauges.set_status(ShardStatus::Failed);
                return Err(e);
            }
            Err(e) if is_permanent(&e) => {
                // A restart would meet it again: configuration or corrupt
                // data, for an operator to fix. Fail loudly, skip nothing.
                error!(%shard, error = %e, "shard failed and cannot recover by restarting");
                context.gauges.set_status(ShardStatus::Failed);
                return Err(e);
            }
            Err(e) => {
                if context.commits.load(Ordering::Acquire) > 0 {
                    // It had recovered since the last failure: a new streak.
                    attempts = 0;
                    streak_started = Instant::now();
                }
                attempts += 1;
                if attempts > retry.attempts_max || streak_started.elapsed() > retry.deadline() {
                    error!(%shard, error = %e, attempts, streak_s = streak_started.elapsed().as_secs(),
                           "shard failed for good");
                    context.gauges.set_status(ShardStatus::Failed);
                    return Err(EngineError::GaveUp {
                        shard,
                        attempts,
                        last: e.to_string(),
                    });
                }
                let seed = u64::from(shard.0) << 32
                    ^ u64::from(attempts)
                    ^ streak_started.elapsed().as_nanos() as u64;
                let backoff = restart_backoff(&retry, attempts, seed);
                warn!(%shard, error = %e, attempt = attempts, backoff_ms = backoff.as_millis() as u64,
                      retryable = is_retryable(&e), "shard failed; restarting from its last commit");
                context.gauges.set_status(ShardStatus::Restarting);
                release_standbys::<S::State>(&context);
                context.gauges.count_restart();
                // Wait in short steps so a shutdown during the backoff is
                // honoured at once rather than after it.
                let waiting = Instant::now();
                while waiting.elapsed() < backoff && !context.stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if context.stop.load(Ordering::Acquire) {
                    context.gauges.set_status(ShardStatus::Stopped);
                    return Err(e);
                }
            }
        }
    }
}

/// A failed shard's partitions are active no more: the standby keeper may
/// copy them until a shard (the restarted one, or another node's) takes them
/// again, which then restores only the tail after the copy.
fn release_standbys<St: PartitionStores + Send>(context: &SupervisorContext) {
    let Some(standbys) = context
        .standbys
        .clone()
        .and_then(|c| c.downcast::<StandbyHandle<St>>().ok())
    else {
        return;
    };
    for partition in 0..context.partitions {
        if context.gauges.may_own(partition) {
            // The failed shard's stores are gone (or not known to be
            // committed): the keeper copies the partition from its start.
            standbys.release(PartitionId(partition), None);
        }
    }
}

/// The port error behind `e`, if any.
fn port_error(e: &EngineError) -> Option<&PortError> {
    match e {
        EngineError::Port { source, .. } | EngineError::Shard(ShardError::Port { source, .. }) => {
            Some(source)
        }
        _ => None,
    }
}

/// Failures a restart cannot cure: the shard's configuration or its data.
fn is_permanent(e: &EngineError) -> bool {
    match e {
        EngineError::Executor { .. }
        | EngineError::LockedMemory { .. }
        | EngineError::Shard(ShardError::TooManyInputs { .. }) => true,
        _ => matches!(
            port_error(e),
            Some(
                PortError::CorruptChangelog { .. }
                    | PortError::NotCoPartitioned { .. }
                    | PortError::NotAuthorized { .. }
            )
        ),
    }
}

/// Transient by Kafka's own account (a broker away, a timeout, a full queue).
fn is_retryable(e: &EngineError) -> bool {
    port_error(e).is_some_and(PortError::is_retryable)
}

fn new_port<S: Stage>(context: &SupervisorContext, stage: &S) -> Result<RdKafkaPort, EngineError> {
    RdKafkaPort::new(
        &context.settings,
        stage.input_topics(),
        &context.plan.ownership,
        &context.plan.transactional_id,
    )
    .map(|port| port.with_gauges(Arc::clone(&context.gauges)))
    .map_err(|source| EngineError::Port {
        shard: context.plan.shard,
        source,
    })
}

fn run_once<S, F>(context: &SupervisorContext, make_stage: F) -> Result<ShardStats, EngineError>
where
    S: Stage,
    S::State: Send,
    F: Fn(ShardId) -> S + Send + 'static,
{
    let shard_id = context.plan.shard;
    // Clients created here (unpinned thread) keep librdkafka's threads off the
    // shard's core; see ClientThreads.
    let early_port = match &context.knobs.runtime().client_threads {
        ClientThreads::Unpinned => {
            let probe_stage = make_stage(shard_id);
            Some(new_port(context, &probe_stage)?)
        }
        ClientThreads::Cores(cores) if !cores.is_empty() => {
            let core = cores[usize::from(shard_id.0) % cores.len()].0;
            // This supervisor thread only waits on the executor, so it can carry
            // the I/O core's affinity that the client threads inherit.
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                warn!(%shard_id, core, "could not pin client threads to their I/O core");
            }
            let probe_stage = make_stage(shard_id);
            Some(new_port(context, &probe_stage)?)
        }
        ClientThreads::Cores(_) | ClientThreads::ShardCore => None,
    };
    let placement = match context.plan.core {
        Some(core) => Placement::Fixed(core),
        None => Placement::Unbound,
    };
    let loop_context = LoopContext {
        settings: context.settings.clone(),
        plan: context.plan.clone(),
        knobs: context.knobs.clone(),
        cadence: context.cadence,
        partitions: context.partitions,
        stop: Arc::clone(&context.stop),
        gauges: Arc::clone(&context.gauges),
        commands: context.commands.clone(),
        commits: Arc::clone(&context.commits),
        reports: context.reports.clone(),
        standbys: context.standbys.clone(),
    };
    let handle = LocalExecutorBuilder::new(placement)
        .name(&format!("{shard_id}"))
        .io_memory(EXECUTOR_IO_MEMORY_BYTES)
        .spawn(move || async move { shard_loop(loop_context, make_stage, early_port).await })
        .map_err(|e| EngineError::Executor {
            shard: shard_id,
            reason: e.to_string(),
        })?;
    handle.join().map_err(|e| EngineError::Executor {
        shard: shard_id,
        reason: e.to_string(),
    })?
}

struct LoopContext {
    settings: KafkaSettings,
    plan: ShardPlan,
    knobs: NodeKnobs,
    /// The `[commit]` rules as this shard applies them.
    cadence: CommitRules,
    partitions: i32,
    stop: Arc<AtomicBool>,
    gauges: Arc<ShardGauges>,
    commands: Receiver<ShardCommand>,
    /// Counted per commit, read by the supervisor (see SupervisorContext).
    commits: Arc<AtomicU64>,
    reports: ReportChannel,
    standbys: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

async fn shard_loop<S, F>(
    context: LoopContext,
    make_stage: F,
    early_port: Option<RdKafkaPort>,
) -> Result<ShardStats, EngineError>
where
    S: Stage,
    S::State: Send,
    F: Fn(ShardId) -> S,
{
    let id = context.plan.shard;
    let stage = make_stage(id);
    let port = match early_port {
        Some(port) => port,
        None => RdKafkaPort::new(
            &context.settings,
            stage.input_topics(),
            &context.plan.ownership,
            &context.plan.transactional_id,
        )
        .map(|port| port.with_gauges(Arc::clone(&context.gauges)))
        .map_err(|source| EngineError::Port { shard: id, source })?,
    };
    let output_timing = match context.settings.guarantee {
        Guarantee::ExactlyOnce => OutputTiming::Immediate,
        Guarantee::AtLeastOnce => OutputTiming::AtCommit,
    };
    // Every log line of this shard carries its id and service (JSON logs
    // show them as span fields).
    let span = info_span!("shard", shard = %id, service = stage.name(), core = ?context.plan.core);
    let shard = Shard::new(
        id,
        &context.settings.application_id,
        stage,
        port,
        context.partitions,
    )?
    .with_output_timing(output_timing)
    .with_changelog_layout(context.knobs.state().changelog_layout)
    // Under exactly-once an aborted transaction is undone in memory (see
    // Shard::roll_back); at-least-once never aborts a transaction of outputs.
    .with_undo(context.settings.guarantee == Guarantee::ExactlyOnce)
    .with_gauges(Arc::clone(&context.gauges))
    .with_spare_histograms(context.reports.spares.clone());
    let shard = match context
        .standbys
        .clone()
        .and_then(|c| c.downcast::<StandbyHandle<S::State>>().ok())
    {
        Some(standbys) => shard.with_standbys(StandbyHandle::clone(&standbys)),
        None => shard,
    };
    run_shard(shard, context).instrument(span).await
}

/// When the shard last reported, and the ownership that report showed.
struct Published {
    at: Instant,
    /// [`Shard::ownership_changes`] at that report.
    ownership: u64,
}

impl Published {
    fn now<S: Stage>(&mut self, shard: &mut Shard<S, RdKafkaPort>, reports: &ReportChannel) {
        publish(shard, reports);
        self.at = Instant::now();
        self.ownership = shard.ownership_changes();
    }
}

/// Hands the shard's report to the hub; a full queue leaves the data on the
/// shard for the next report, so nothing measured is lost and nothing blocks.
fn publish<S: Stage>(shard: &mut Shard<S, RdKafkaPort>, reports: &ReportChannel) {
    let report = shard.report();
    if let Err(e) = reports.reports.try_send(report) {
        shard.take_back(e.into_inner());
    }
}

/// Answers one command from outside the shard between batches.
fn serve_command<S: Stage>(shard: &mut Shard<S, RdKafkaPort>, command: ShardCommand) {
    match command {
        ShardCommand::Dump(reply) => {
            let _ = reply.try_send(shard.dump());
        }
        ShardCommand::Stats(reply) => {
            let _ = reply.try_send((shard.stats(), shard.owned_partitions()));
        }
        ShardCommand::Query { partition, query } => {
            query(
                shard
                    .state(partition)
                    .map(|state| state as &dyn std::any::Any),
            );
        }
    }
}

async fn run_shard<S: Stage>(
    mut shard: Shard<S, RdKafkaPort>,
    context: LoopContext,
) -> Result<ShardStats, EngineError> {
    let id = shard.id();
    info!(core = ?context.plan.core, ownership = ?context.plan.ownership, "shard started");
    if matches!(context.plan.ownership, Ownership::Group { .. }) {
        // A group member owns nothing until the group assigns; that is running
        // (readiness waits for the assignment too).
        context.gauges.set_status(ShardStatus::Running);
    }
    let publish_every = Duration::from_millis(PUBLISH_INTERVAL_MS);
    let mut published = Published {
        at: Instant::now(),
        ownership: shard.ownership_changes(),
    };
    let mut cadence = CommitCadence::new(context.cadence, Instant::now());
    let mut idle_since: Option<Instant> = None;
    // Roll-backs since the last successful commit: past the limit the
    // failure is taken to be one the redo meets again, and the shard
    // restarts (with the supervisor's backoff and its limit on attempts).
    let mut rollbacks_in_a_row = 0u32;
    while !context.stop.load(Ordering::Acquire) {
        while let Ok(command) = context.commands.try_recv() {
            serve_command(&mut shard, command);
        }
        let mut handled = 0;
        while handled < BATCH_RECORDS_MAX {
            match shard.step() {
                Ok(Step::Idle) => break,
                Ok(Step::Rebalanced) => {
                    context.gauges.set_status(ShardStatus::Running);
                    handled += 1;
                    // Reported before the batch goes on and before a commit
                    // that may take a while on a loaded broker.
                    if shard.ownership_changes() != published.ownership {
                        published.now(&mut shard, &context.reports);
                    }
                }
                Ok(Step::Processed | Step::DeadLettered) => handled += 1,
                // A send refused because the open transaction already failed
                // (a record of it the broker refused): as for a failed
                // commit, undo the transaction in memory and read its inputs
                // again. The record in hand counts as read (its position is
                // past it), so it is read again too.
                Err(e)
                    if shard.can_roll_back(&e) && rollbacks_in_a_row < ROLLBACKS_IN_A_ROW_MAX =>
                {
                    rollbacks_in_a_row += 1;
                    warn!(%id, error = %e, "a send failed in the open transaction; rolling it back");
                    shard.roll_back()?;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        context.gauges.set_polling();
        let now = Instant::now();
        if handled > 0 {
            cadence.processed(now);
        }
        let batch = BatchEnd {
            drained: handled < BATCH_RECORDS_MAX,
            uncommitted: shard.has_uncommitted(),
            outputs_full: shard.wants_commit(),
        };
        if cadence.due(now, batch) {
            let started = Instant::now();
            // Queries are answered while the commit waits on the broker;
            // anything that needs the whole shard waits for the commit.
            let mut deferred = Vec::new();
            let committed = shard.commit_serving(&mut |state_of| {
                while let Ok(command) = context.commands.try_recv() {
                    match command {
                        ShardCommand::Query { partition, query } => {
                            query(state_of(partition).map(|state| state as &dyn std::any::Any));
                        }
                        other => deferred.push(other),
                    }
                }
            });
            for command in deferred {
                serve_command(&mut shard, command);
            }
            match committed {
                Ok(()) => {
                    rollbacks_in_a_row = 0;
                    context.commits.fetch_add(1, Ordering::AcqRel);
                }
                // The transaction failed but the clients are sound: undo it
                // in memory and read its inputs again; no restart, no
                // restore. If the abort fails too, the shard restarts.
                Err(e)
                    if shard.can_roll_back(&e) && rollbacks_in_a_row < ROLLBACKS_IN_A_ROW_MAX =>
                {
                    rollbacks_in_a_row += 1;
                    warn!(%id, error = %e, "commit failed; rolling the transaction back");
                    shard.roll_back()?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let ended = Instant::now();
            cadence.committed(started, ended);
            let took = ended - started;
            if took >= SLOW_COMMIT {
                warn!(%id, took_ms = took.as_millis() as u64, handled, "slow commit");
            } else {
                debug!(%id, took_ms = took.as_millis() as u64, handled, "committed");
            }
        } else if handled > 0 {
            // The batch's state changes go out now, inside the open
            // transaction, so their partitions' registration and acks overlap
            // the next batch instead of lengthening the commit.
            if let Err(e) = shard.write_changelogs() {
                if !shard.can_roll_back(&e) || rollbacks_in_a_row >= ROLLBACKS_IN_A_ROW_MAX {
                    return Err(e.into());
                }
                rollbacks_in_a_row += 1;
                warn!(%id, error = %e, "changelog write failed; rolling the transaction back");
                shard.roll_back()?;
            }
        }
        // A change of ownership is reported at once: the node's gauges then
        // show a take-over when it happens, not up to a report interval later.
        if published.at.elapsed() >= publish_every
            || shard.ownership_changes() != published.ownership
        {
            published.now(&mut shard, &context.reports);
        }
        if handled == 0 {
            let idle_for = now.saturating_duration_since(*idle_since.get_or_insert(now));
            match context.knobs.runtime().idle {
                IdleStrategy::BusyPoll => {
                    std::hint::spin_loop();
                    glommio::yield_if_needed().await;
                }
                // Idle for a while with nothing left to commit: sleep in the
                // consumer, which a fetched record wakes at once. (With work
                // to commit the timer park keeps the commit on time.)
                IdleStrategy::Park { .. }
                    if idle_for >= Duration::from_millis(IDLE_DEEP_AFTER_MS)
                        && !shard.has_uncommitted() =>
                {
                    shard.wait_for_input(Duration::from_millis(IDLE_WAIT_MAX_MS))?;
                    glommio::yield_if_needed().await;
                }
                IdleStrategy::Park { park_us } => {
                    glommio::timer::sleep(Duration::from_micros(u64::from(park_us))).await
                }
            }
        } else {
            idle_since = None;
            glommio::yield_if_needed().await;
        }
    }
    // Shutdown: polling has stopped and the last batch is done; commit flushes
    // and commits what it processed, the final report goes to the hub (it
    // waits for room: this report is what a shutdown's HDR report reads), then
    // the clients close.
    if shard.has_uncommitted() {
        if let Err(e) = shard.commit() {
            // Commit if it can, else abort: the open transaction (if any) is
            // aborted and the clients closed, so nothing of it is kept and
            // the next owner processes those records again.
            warn!(%id, error = %e, "the final commit failed; aborting and closing");
            shard.abandon().close();
            return Err(e.into());
        }
    }
    let stats = shard.stats();
    let report = shard.report();
    if context
        .reports
        .reports
        .send_timeout(report, Duration::from_millis(FINAL_REPORT_TIMEOUT_MS))
        .is_err()
    {
        warn!(%id, "the telemetry hub took no final report");
    }
    let port = shard.shutdown()?;
    port.close();
    info!(
        records_in = stats.records_in,
        commits = stats.commits,
        "shard stopped"
    );
    Ok(stats)
}

/// Fails early, naming the limit, when io_uring's locked memory cannot hold one
/// executor per shard.
fn check_locked_memory(shards: usize) -> Result<(), EngineError> {
    let needed_bytes = (EXECUTOR_IO_MEMORY_BYTES * shards.max(1)) as u64;
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let Some(line) = limits.lines().find(|l| l.starts_with("Max locked memory")) else {
        return Ok(());
    };
    let soft = line.split_whitespace().nth(3).unwrap_or("unlimited");
    if let Ok(limit_bytes) = soft.parse::<u64>() {
        if limit_bytes < needed_bytes {
            return Err(EngineError::LockedMemory {
                limit_bytes,
                needed_bytes,
            });
        }
    }
    Ok(())
}

/// Sets `stop` on SIGINT or SIGTERM, so the shutdown sequence runs.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(stop))?;
    Ok(())
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_a_quarter() {
        let policy = RetryPolicy::default();
        for attempt in 1..=12u32 {
            let base = policy
                .backoff_min()
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(policy.backoff_max());
            let mut seen = std::collections::BTreeSet::new();
            for seed in 0..64u64 {
                let wait = restart_backoff(&policy, attempt, seed);
                assert!(
                    wait >= base.mul_f64(0.75) && wait <= base.mul_f64(1.25),
                    "{attempt} {wait:?}"
                );
                seen.insert(wait);
            }
            assert!(seen.len() > 8, "jitter spreads the waits: {seen:?}");
        }
    }

    #[test]
    fn configuration_and_corrupt_data_are_permanent_kafka_trouble_is_not() {
        let shard = ShardId(0);
        let corrupt = EngineError::Shard(ShardError::Port {
            shard,
            source: PortError::NotCoPartitioned {
                topic: "t".into(),
                partition: crate::PartitionId(0),
                missing: "u".into(),
            },
        });
        assert!(is_permanent(&corrupt));
        let away = EngineError::Port {
            shard,
            source: PortError::Kafka {
                op: "commit_transaction",
                message: "timed out".into(),
                retryable: true,
            },
        };
        assert!(!is_permanent(&away) && is_retryable(&away));
        let fenced = EngineError::Port {
            shard,
            source: PortError::Kafka {
                op: "commit_transaction",
                message: "fenced".into(),
                retryable: false,
            },
        };
        // A fenced or fatal producer is cured by a new one: restart.
        assert!(!is_permanent(&fenced) && !is_retryable(&fenced));
        // A missing ACL or a wrong password meets every restart again.
        let denied = EngineError::Port {
            shard,
            source: PortError::NotAuthorized {
                op: "delivering records",
                message: "Broker: Topic authorization failed".into(),
            },
        };
        assert!(is_permanent(&denied) && !is_retryable(&denied));
        assert!(denied.to_string().contains("tradeflow acls"), "{denied}");
    }
}
