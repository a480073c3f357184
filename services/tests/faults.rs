//! Fault tests against real Kafka, most on the three-broker cluster
//! (replication 3, `min.insync.replicas` 2): the `tradeflow` binary runs all three services
//! as its own process(es) under steady open-loop load while something breaks,
//! and afterwards every order must have reached exactly one outcome and the
//! audit of every topic (read_committed) must pass.
//!
//! - `kill -9` of the engine, restarted, three times in a row (exactly-once);
//! - one broker killed and restarted during load (exactly-once);
//! - a second engine process joining the consumer group and leaving it
//!   (rebalance, exactly-once);
//! - `kill -9` three times in at-least-once mode: no order lost, duplicates
//!   allowed but each one byte-identical to the first (the audit checks);
//! - the single broker stopped for several seconds under load and started
//!   again: the engine rides it out by restarting with backoff (exactly-once);
//! - a second node started with a core map that overlaps the first's, under
//!   the same application id: it refuses to start (the owners' registry),
//!   processes nothing, and the audit finds no duplicate;
//! - `kill -9` of one of two group-mode engines (consumer protocol), once
//!   without and once with a standby replica: the survivor takes the killed
//!   node's partitions over; the time to that and what it restored are
//!   printed side by side (the standby restores only the tail);
//! - SIGTERM to an engine whose broker is stopped: it exits within its
//!   shutdown deadline saying whether it committed (0), aborted (2) or ran
//!   out of time (3), and a new engine finishes the flow with nothing lost.
//!
//! Each run has its own topic namespace and application id, so runs never
//! read each other's history. They share the cluster, and one of them kills a
//! broker, so they run one at a time.
//!
//! Every run ends the same way, so a fault that loses state cannot pass:
//! every order's outcome is compared with the one its scenario planned
//! (`loadgen::synth::deserved_outcomes`: a lost funding turns a deserved
//! fill into a refusal that still conserves cash); every account's balance
//! and every instrument's stock is read through the REST API of the engines
//! still running and compared key by key with what the audit derives from
//! the events; every engine stopped with SIGTERM must exit 0; no record of
//! the flow's topics may be undecodable (these runs inject none). Each fault
//! is shown to have happened: the killed broker led a partition of the flow
//! and the leadership moved, the joining engine owned partitions and
//! processed records. Every wait for a child process is bounded and kills
//! the child when it expires.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use engine::changelog::ChangelogLayout;
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{Guarantee, KafkaSettings};
use loadgen::drive::{drive, DriveConfig, DriveError, DriveReport};
use loadgen::state::http_get;
use loadgen::synth::{deserved_outcomes, generate, SynthConfig};
use services::audit::{Audit, StateSnapshot};
use services::flow::{ServiceSet, TradeFlow};
use tradeflow_tests::{unique_topic, KafkaCluster};

/// `--shutdown-deadline-s` of the engines the fault tests start (see `spawn`).
const FAULT_SHUTDOWN_DEADLINE_S: u64 = 30;
const RATE_PER_S: u64 = 300;
const PARTITIONS: i32 = 4;
/// Longest wait for an engine to exit after SIGTERM (its own shutdown
/// deadline is `FAULT_SHUTDOWN_DEADLINE_S`) or after `kill -9`; then it is killed and the test fails.
const EXIT_WAIT_S: u64 = 40;
/// Longest wait for an engine to print its API address.
const START_WAIT_S: u64 = 60;
/// Longest a state read through REST keeps retrying a key that is not
/// readable yet (its partition restoring, or owned by no engine).
const STATE_READ_WAIT_S: u64 = 60;
/// Longest wait for the joining engine to own partitions and process records.
const JOIN_WAIT_S: u64 = 60;
/// Longest wait for a survivor to take a killed node's partitions over: the
/// group's session (6 s on the test clusters), then the restore, which waits
/// out the killed node's open transaction until the coordinator aborts it
/// (`engine::kafka::TRANSACTION_TIMEOUT_MS`, 35 s, checked every 10 s),
/// then some.
const TAKE_OVER_WAIT_S: u64 = 120;
/// Longest wait for a partition's leadership to move off a killed broker.
const LEADER_MOVE_WAIT_S: u64 = 60;

/// One fault run at a time: they share the cluster and one kills a broker.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How the engine processes of a run own partitions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// One process owns every partition by core map (no group).
    CoreMap,
    /// Processes join one consumer group; Kafka spreads the partitions.
    Group,
}

/// One fault run: its namespace, application id, engine logs and load.
struct FaultRun {
    label: &'static str,
    guarantee: Guarantee,
    ownership: Ownership,
    cluster: KafkaCluster,
    namespace: TopicNamespace,
    application_id: String,
    dir: PathBuf,
    started: Instant,
    /// Engines started so far: each gets a log of its own.
    spawned: AtomicUsize,
    /// Group mode under KIP-848's consumer protocol (the broker's sticky,
    /// incremental range assignor) instead of the classic eager one.
    consumer_protocol: bool,
    /// `[state] standby_replicas` of the engines' core maps.
    standby_replicas: u32,
    /// `[state] changelog_layout` of the engines' core maps.
    changelog_layout: ChangelogLayout,
    /// `[ownership] session_ms` of the engines' core maps (`None`: the
    /// default).
    session_ms: Option<u32>,
    /// `[ownership] liveness_addr = "127.0.0.1:0"` in group mode: the nodes
    /// watch each other's beacons and act on a `kill -9` at once.
    liveness: bool,
}

/// A running `tradeflow run` process.
struct Engine {
    node: String,
    child: Child,
    log: PathBuf,
}

/// The open-loop load of a run and the scenario it sends.
struct Load {
    handle: JoinHandle<Result<DriveReport, DriveError>>,
    scenario: SynthConfig,
}

/// Waits up to `within` for `child` to exit; on expiry kills it (SIGKILL),
/// reaps it, and fails naming `what`.
fn wait_or_kill(child: &mut Child, within: Duration, what: &str) -> anyhow::Result<ExitStatus> {
    tradeflow_tests::wait_or_kill(child, within)?
        .ok_or_else(|| anyhow::anyhow!("{what} had not exited after {within:?}; killed"))
}

/// A test that fails half-way leaves no engine running behind it.
impl Drop for Engine {
    fn drop(&mut self) {
        let _ = tradeflow_tests::wait_or_kill(&mut self.child, Duration::ZERO);
    }
}

impl Engine {
    /// SIGTERM, then a bounded wait for the exit.
    fn stop(&mut self) -> anyhow::Result<(String, ExitStatus)> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = wait_or_kill(
            &mut self.child,
            Duration::from_secs(EXIT_WAIT_S),
            &format!("engine {} after SIGTERM", self.node),
        )?;
        Ok((self.node.clone(), status))
    }

    /// `kill -9`: no commit, no close, an open transaction left behind.
    fn kill_nine(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        wait_or_kill(
            &mut self.child,
            Duration::from_secs(EXIT_WAIT_S),
            &format!("engine {} after kill -9", self.node),
        )?;
        Ok(())
    }

    /// The address of its REST server (Order API and /metrics), as it
    /// printed it; waits until it has.
    fn rest_addr(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(START_WAIT_S);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found = text.lines().find_map(|line| {
                let rest = line.split_once("Order API on http://")?.1;
                Some(rest.split_once(' ')?.0.to_string())
            });
            if let Some(addr) = found {
                return Ok(addr);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("engine {} exited ({status}) before it served", self.node);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "engine {} printed no API address in {START_WAIT_S} s",
                    self.node
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every shard has restored and polls (`/health/ready`).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = self.rest_addr()?;
        let deadline = Instant::now() + Duration::from_secs(START_WAIT_S);
        loop {
            if let Ok((200, _)) = http_get(&addr, "/health/ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!("engine {} not ready in {START_WAIT_S} s", self.node);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Records each shard took in, summed, from the statistics an engine
/// prints at shutdown (`  shard-0: N records in, ...`).
fn records_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(": ")?;
            rest.split_once(" records in,")?
                .0
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Every account's balance and every instrument's stock of `scenario`,
/// read through the REST APIs of `engines`.
fn read_state(
    engines: &mut [&mut Engine],
    scenario: &SynthConfig,
) -> anyhow::Result<StateSnapshot> {
    let addrs = engines
        .iter_mut()
        .map(|engine| engine.rest_addr())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (accounts, skus) = loadgen::state::scenario_keys(scenario)?;
    Ok(loadgen::state::read_state(
        &addrs,
        &accounts,
        &skus,
        Duration::from_secs(STATE_READ_WAIT_S),
    )?)
}

/// The sum of a gauge over its label sets, from a Prometheus text page.
fn gauge_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl FaultRun {
    fn new(
        label: &'static str,
        guarantee: Guarantee,
        ownership: Ownership,
    ) -> anyhow::Result<Self> {
        Self::on(KafkaCluster::three()?, label, guarantee, ownership)
    }

    fn on(
        cluster: KafkaCluster,
        label: &'static str,
        guarantee: Guarantee,
        ownership: Ownership,
    ) -> anyhow::Result<Self> {
        tradeflow_tests::init_logging();
        let name = unique_topic(label);
        let namespace = TopicNamespace::new(&name)?;
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let run = FaultRun {
            label,
            guarantee,
            ownership,
            cluster,
            application_id: format!("{name}-app"),
            namespace,
            dir,
            started: Instant::now(),
            spawned: AtomicUsize::new(0),
            consumer_protocol: false,
            standby_replicas: 0,
            session_ms: None,
            liveness: false,
            changelog_layout: ChangelogLayout::PerStore,
        };
        // Create the flow's topics before anything reads them: on a fresh
        // cluster the driver would otherwise look for outcome topics the
        // engine has not made yet.
        let flow = TradeFlow::new(ServiceSet::ALL);
        prepare_topics(
            &run.settings(),
            &FlowTopics {
                inputs: engine::Stage::input_topics(&flow).to_vec(),
                outputs: flow.output_topics(),
                stores: flow.store_names(),
                changelog_layout: Default::default(),
            },
            PARTITIONS,
            run.replication(),
        )?;
        println!(
            "{label}: namespace {}, logs in {}",
            run.namespace,
            run.dir.display()
        );
        Ok(run)
    }

    fn replication(&self) -> i32 {
        self.cluster.size().broker_count() as i32
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap: self.cluster.bootstrap().to_string(),
            application_id: self.application_id.clone(),
            guarantee: self.guarantee,
            client_properties: Vec::new(),
            linger_ms: 0,
            fetch_wait_max_ms: 5,
            namespace: self.namespace.clone(),
        }
    }

    fn since_start(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The node's core map: in core-map mode one shard owning `partitions`
    /// (a range such as `"0-3"`).
    fn core_map(&self, node: &str, partitions: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{node}.toml"));
        let ownership = match self.ownership {
            Ownership::CoreMap => format!(
                "mode = \"core-map\"\npartitions = {PARTITIONS}\n[[shard]]\ncore = 0\npartitions = [\"{partitions}\"]"
            ),
            Ownership::Group => {
                format!("mode = \"consumer-group\"\npartitions = {PARTITIONS}\n[[shard]]\ncore = 0")
            }
        };
        // `session_ms` belongs to [ownership], before the first [[shard]].
        let ownership = match self.session_ms {
            Some(ms) => {
                ownership.replacen("\n[[shard]]", &format!("\nsession_ms = {ms}\n[[shard]]"), 1)
            }
            None => ownership,
        };
        let ownership = if self.liveness {
            ownership.replacen(
                "\n[[shard]]",
                "\nliveness_addr = \"127.0.0.1:0\"\n[[shard]]",
                1,
            )
        } else {
            ownership
        };
        let guarantee = match self.guarantee {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        };
        let mut file = std::fs::File::create(&path)?;
        writeln!(
            file,
            r#"[node]
name = "{node}"
[ownership]
{ownership}
[runtime]
idle = "park"
park_us = 200
client_threads = "unpinned"
[commit]
interval_ms = 100
on_drain = true
guarantee = "{guarantee}"
"#
        )?;
        writeln!(
            file,
            "[state]\nstandby_replicas = {}\nchangelog_layout = \"{}\"",
            self.standby_replicas, self.changelog_layout
        )?;
        Ok(path)
    }

    /// Starts a `tradeflow run` process as `node`, with a log of its own,
    /// owning every partition in core-map mode.
    ///
    /// Its shutdown deadline is 30 s, not the default 10 s: these tests
    /// stop the engine right after a fault, while the cluster may still be
    /// recovering, and what they judge is what the engine committed, not how
    /// fast (two CI runs saw the broker-kill test's final commit outlast 10 s
    /// after a 16 s commit during the broker's return, and exit 3).
    fn spawn(&self, node: &str) -> anyhow::Result<Engine> {
        self.spawn_with(
            node,
            &format!("0-{}", PARTITIONS - 1),
            &[
                "--shutdown-deadline-s",
                &FAULT_SHUTDOWN_DEADLINE_S.to_string(),
            ],
        )
    }

    /// Starts `node` owning `partitions` in core-map mode, with `args` added.
    fn spawn_with(&self, node: &str, partitions: &str, args: &[&str]) -> anyhow::Result<Engine> {
        let config = self.core_map(node, partitions)?;
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let log_path = self.dir.join(format!("{node}.{n}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradeflow"));
        command
            // The Order API (the state is read through it at the end),
            // metrics and health, on any free ports: runs overlap.
            .args([
                "run",
                "--rest-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--report-dir")
            .arg(self.dir.join(format!("{node}.{n}.hdr")))
            .arg("--config")
            .arg(config)
            .args(["--bootstrap", self.cluster.bootstrap()])
            .args(["--replication", &self.replication().to_string()])
            .args(["--namespace", self.namespace.name()])
            .args(["--application-id", &self.application_id])
            .args(args);
        // Consumer-group mode uses the consumer protocol unless told
        // otherwise; its session is the broker's (6 s on the test clusters).
        if self.ownership == Ownership::Group && !self.consumer_protocol {
            // Under the classic protocol a static member that leaves keeps its
            // partitions until its session times out (it sends no
            // LeaveGroup): keep that short.
            command.args(["--property", "group.protocol=classic"]);
            command.args(["--property", "session.timeout.ms=10000"]);
        }
        // TRADEFLOW_FAULT_LOG=engine=debug shows every commit in the logs.
        let filter = std::env::var("TRADEFLOW_FAULT_LOG").unwrap_or_else(|_| "warn".into());
        let child = command
            .env("RUST_LOG", filter)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        Ok(Engine {
            node: node.to_string(),
            child,
            log: log_path,
        })
    }

    /// Starts the open-loop load: `orders` orders at `RATE_PER_S`, once the
    /// scenario's set-up (every funding and replenishment) has been sent and
    /// `engine` answers for every account and instrument through its REST
    /// API. The engine processes its input topics in the order its consumer
    /// delivers them, not by timestamp (Kafka Streams' `max.task.idle.ms`
    /// synchronization is not implemented), so an `order.created` consumed
    /// ahead of the `account.funded` sent before it is refused for an
    /// unknown account: the deserved-outcomes check caught exactly that
    /// when fundings and orders were one stream. Applied first, the set-up
    /// makes every outcome independent of timing, so an order refused for
    /// an unknown account afterwards means state was lost.
    fn start_load(&self, orders: u64, engine: &mut Engine) -> anyhow::Result<Load> {
        // A seeded scenario with its own run id, so its ids never meet an earlier run's.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            | 1;
        let config = SynthConfig {
            seed: run_id,
            run_id: Some(run_id),
            accounts: 100,
            instruments: 10,
            orders,
            rate_per_s: RATE_PER_S,
            ..SynthConfig::default()
        };
        let drive_config = DriveConfig {
            bootstrap: self.cluster.bootstrap().to_string(),
            client_properties: vec![("broker.address.family".into(), "v4".into())],
            drain_timeout: Duration::from_secs(90),
            namespace: self.namespace.clone(),
        };
        let setup_len = usize::try_from(config.accounts + config.instruments)?;
        let setup = loadgen::drive::schedule(
            generate(&config, codecs::ids::order_id_for)?.take(setup_len),
        )?;
        drive(&drive_config, setup)?;
        let addr = engine.rest_addr()?;
        let (accounts, skus) = loadgen::state::scenario_keys(&config)?;
        let paths = accounts
            .iter()
            .map(|a| (format!("/v1/accounts/{}", a.0), "balance"))
            .chain(
                skus.iter()
                    .map(|s| (format!("/v1/instruments/{}", s.as_str()), "on_hand")),
            );
        let deadline = Instant::now() + Duration::from_secs(STATE_READ_WAIT_S);
        for (path, field) in paths {
            while loadgen::state::read_value(
                std::slice::from_ref(&addr),
                &path,
                field,
                Duration::from_secs(STATE_READ_WAIT_S),
            )?
            .is_none()
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{path} not set up after {STATE_READ_WAIT_S} s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let flow = loadgen::drive::schedule(
            generate(&config, codecs::ids::order_id_for)?.skip(setup_len),
        )?;
        Ok(Load {
            handle: std::thread::spawn(move || drive(&drive_config, flow)),
            scenario: config,
        })
    }

    /// Waits for the load; reads every balance and stock through the
    /// engines' REST APIs; stops the engines (SIGTERM, each must exit 0);
    /// audits every topic of the namespace against the scenario's plan and
    /// the state read; checks the run.
    fn finish(&self, load: Load, mut engines: Vec<Engine>) -> anyhow::Result<()> {
        let report = load.handle.join();
        // The flow has drained (or the driver gave up): the engines' state
        // is final. Read it before they stop.
        let state = {
            let mut running: Vec<&mut Engine> = engines.iter_mut().collect();
            read_state(&mut running, &load.scenario)
        };
        let mut exits = Vec::new();
        for mut engine in engines {
            exits.push(engine.stop()?);
        }
        let report = report.map_err(|_| anyhow::anyhow!("the load driver panicked"))??;
        println!(
            "{}: {} orders sent, {} outcomes ({} filled, {} rejected for funds, {} refunded), \
             {} missing, {} duplicate outcomes, {} undecodable; {:.0} orders/s achieved; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} s (the recovery gap); engines: {}",
            self.label,
            report.orders_sent,
            report.outcomes,
            report.filled,
            report.rejected_funds,
            report.refunded,
            report.missing,
            report.duplicate_outcomes,
            report.undecodable,
            report.achieved_orders_per_s(),
            report.latency.corrected.value_at_quantile(0.50) as f64 / 1e6,
            report.latency.corrected.value_at_quantile(0.99) as f64 / 1e6,
            report.latency.corrected.max() as f64 / 1e9,
            exits
                .iter()
                .map(|(node, status)| format!("{node} {status}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let state = state?;
        let plan = deserved_outcomes(&load.scenario, codecs::ids::order_id_for)?;
        let planned = plan.len() as u64;
        let (audit, undecodable) = self.audit(Some((plan, &state)))?;
        print!("{audit}");
        println!(
            "{}: state read through REST: {} balances, {} instruments",
            self.label,
            state.balances.as_ref().map_or(0, |b| b.len()),
            state.on_hand.as_ref().map_or(0, |s| s.len()),
        );
        if !audit.passed() || report.missing > 0 {
            self.print_logs();
        }
        assert_eq!(report.missing, 0, "orders without an outcome");
        if self.guarantee == Guarantee::ExactlyOnce {
            assert_eq!(
                report.duplicate_outcomes, 0,
                "an order saw two committed outcomes"
            );
        }
        assert_eq!(report.undecodable, 0, "undecodable outcomes");
        assert_eq!(undecodable, 0, "undecodable records in the flow's topics");
        assert!(audit.passed(), "the audit found violations");
        assert!(audit.state_compared);
        assert_eq!(audit.deserved_compared, planned);
        for (node, status) in &exits {
            assert!(
                status.success(),
                "engine {node} exited {status} after SIGTERM"
            );
        }
        Ok(())
    }

    /// Reads every topic of the run's namespace (read_committed) and audits
    /// it. After a broker failover a transaction's commit marker can be held
    /// up on a partition for a while (until the coordinator completes or
    /// times it out, `transaction.timeout.ms`), and a read_committed reader
    /// cannot pass it: such a stall is retried, not failed, up to three
    /// reads, each of which gives up after a minute without progress.
    /// Also returns the records that are not events of the flow.
    fn audit(
        &self,
        expect: Option<(services::audit::DeservedOutcomes, &StateSnapshot)>,
    ) -> anyhow::Result<(services::audit::AuditReport, u64)> {
        let topics = self.namespace.all();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut audit = Audit::new(self.guarantee);
            if let Some((plan, _)) = &expect {
                audit = audit.expect_outcomes(plan.clone());
            }
            let mut undecodable = 0u64;
            let read =
                engine::kafka::read_to_end(self.cluster.bootstrap(), &[], &topics, &mut |record| {
                    match (
                        self.namespace.flow_topic(record.topic),
                        record.payload.map(codecs::decode),
                    ) {
                        (Some(topic), Some(Ok(event))) => audit.record(topic, &event.to_event()),
                        _ => undecodable += 1,
                    }
                });
            match read {
                Ok(_) => {
                    let report = match &expect {
                        Some((_, state)) => audit.finish_with_state(state),
                        None => audit.finish(),
                    };
                    return Ok((report, undecodable));
                }
                Err(e) if attempt < 3 && e.is_retryable() => {
                    println!(
                        "{}: the audit's read stalled at {:.1} s ({e}); reading again",
                        self.label,
                        self.since_start()
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(30).collect();
                eprintln!(
                    "{} (last lines, newest first):\n{}",
                    path.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

/// `kill -9` the engine every few seconds, restart it at once, `kills` times.
fn kill_nine_under_load(run: &FaultRun, orders: u64, kills: usize) -> anyhow::Result<()> {
    let mut engine = run.spawn("fault")?;
    engine.wait_ready()?;
    let load = run.start_load(orders, &mut engine)?;
    for kill in 1..=kills {
        // Long enough for the restarted engine to restore and catch up, so
        // each kill lands on a running engine, not on one still starting.
        std::thread::sleep(Duration::from_secs(8));
        // The kill lands on an engine that is serving, not one that died.
        engine.rest_addr()?;
        engine.kill_nine()?;
        engine = run.spawn("fault")?;
        println!(
            "{}: kill -9 #{kill} at {:.1} s; restarted",
            run.label,
            run.since_start()
        );
    }
    run.finish(load, vec![engine])
}

#[test]
fn kill_nine_three_times_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("kill9-eos", Guarantee::ExactlyOnce, Ownership::CoreMap)?;
    kill_nine_under_load(&run, 9_000, 3)
}

/// The same under `[state] changelog_layout = "shared"`: the seven stores'
/// state in one changelog, restored after each kill by one read per
/// partition. The per-store changelogs the run prepared first stay empty,
/// and an empty one does not stop a node of the other layout.
#[test]
fn kill_nine_under_load_in_a_shared_changelog_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = FaultRun::new("kill9-shared", Guarantee::ExactlyOnce, Ownership::CoreMap)?;
    run.changelog_layout = ChangelogLayout::Shared;
    kill_nine_under_load(&run, 4_000, 1)?;
    let shared = run
        .namespace
        .physical(&engine::topics::shared_changelog_topic(&run.application_id));
    let records = engine::kafka::topic_records(&run.settings(), std::slice::from_ref(&shared))?;
    anyhow::ensure!(
        records.iter().any(|(topic, n)| *topic == shared && *n > 0),
        "the state was not written to {shared}: {records:?}"
    );
    Ok(())
}

/// This test found a hang in librdkafka (issue #16): in 3 of 5 fresh-clone CI
/// runs of 2026-12-05/06 the engine's shard went silent right after the
/// kill, inside `rd_kafka_send_offsets_to_transaction` (gdb: an untimed
/// `cnd_wait` for 48 s and more) although it passed a 30 s timeout. The
/// group coordinator request behind it never read its deadline and was never
/// re-run once its broker was gone (librdkafka #5456, #5511). The workspace
/// now builds a patched librdkafka (vendor/rdkafka-sys/PATCHED.md), and
/// engine/tests/coordinator_loss.rs guards the patch on the mock cluster.
#[test]
fn a_broker_killed_and_restarted_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("broker-eos", Guarantee::ExactlyOnce, Ownership::CoreMap)?;
    let mut engine = run.spawn("fault")?;
    engine.wait_ready()?;
    let load = run.start_load(6_000, &mut engine)?;
    // Let the engine restore and outcomes flow before the broker dies.
    std::thread::sleep(Duration::from_secs(6));
    // The broker to kill leads a partition the flow reads: ask the metadata.
    let topic = run.namespace.physical(codecs::topics::ORDER_CREATED);
    let (partition, broker) = run
        .cluster
        .partition_leaders(&topic)?
        .into_iter()
        .find(|(_, leader)| *leader > 0)
        .ok_or_else(|| anyhow::anyhow!("no partition of {topic} has a leader"))?;
    let killing = run.cluster.kill(broker as usize);
    println!(
        "{}: broker {broker}, leader of {topic}-{partition}, killed at {:.1} s",
        run.label,
        run.since_start()
    );
    let moved = leader_moved(&run, &topic, partition, broker);
    std::thread::sleep(Duration::from_secs(3));
    // Start it again whatever happened: the next tests share the cluster.
    let starting = run.cluster.start(broker as usize);
    println!(
        "{}: broker {broker} back at {:.1} s",
        run.label,
        run.since_start()
    );
    killing?;
    starting?;
    let new_leader = moved?;
    println!(
        "{}: {topic}-{partition} led by broker {new_leader} after the kill",
        run.label
    );
    assert_ne!(new_leader, broker, "the leadership did not move");
    run.finish(load, vec![engine])
}

/// Waits until `partition` of `topic` has a leader other than `killed`.
fn leader_moved(run: &FaultRun, topic: &str, partition: i32, killed: i32) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(LEADER_MOVE_WAIT_S);
    loop {
        let leader = run
            .cluster
            .partition_leaders(topic)
            .ok()
            .and_then(|leaders| leaders.into_iter().find(|(p, _)| *p == partition))
            .map(|(_, leader)| leader);
        match leader {
            Some(leader) if leader > 0 && leader != killed => return Ok(leader),
            _ if Instant::now() >= deadline => anyhow::bail!(
                "{topic}-{partition} still led by {leader:?} {LEADER_MOVE_WAIT_S} s after broker {killed} died"
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// With the deserved outcomes and the REST state compared, this test found
/// lost state at a consumer-group hand-over (2026-12-06, 3 of 4 runs): after
/// node-b left, node-a's balances exceeded what the events imply (node-b's
/// last debits missing), or node-b refused funded orders for an unknown
/// account. The new owner restored a partition while the previous owner's
/// last transaction was committed but its marker not yet written to the
/// changelog: a `read_committed` reader stops at the last stable offset,
/// before that transaction's state, while the committed offsets already
/// included its inputs. Restores now end only at or beyond the high
/// watermark they saw at the start (`engine::kafka::changelog_reader`;
/// `tests/tests/observability.rs` holds a transaction open to prove it).
#[test]
fn a_second_engine_joining_and_leaving_under_load_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("rebalance-eos", Guarantee::ExactlyOnce, Ownership::Group)?;
    let mut first = run.spawn("node-a")?;
    first.wait_ready()?;
    let load = run.start_load(6_000, &mut first)?;
    std::thread::sleep(Duration::from_secs(5));
    let mut second = run.spawn("node-b")?;
    println!("{}: node-b joined at {:.1} s", run.label, run.since_start());
    // The joiner must be given partitions and process records: watch its
    // gauges until it has, for at least 8 s.
    let addr = second.rest_addr()?;
    let joined = Instant::now();
    let (mut owned_max, mut taken_in) = (0.0f64, 0.0f64);
    while joined.elapsed() < Duration::from_secs(8)
        || (owned_max < 1.0 || taken_in < 1.0)
            && joined.elapsed() < Duration::from_secs(JOIN_WAIT_S)
    {
        if let Ok((200, page)) = http_get(&addr, "/metrics") {
            owned_max = owned_max.max(gauge_sum(&page, "tradeflow_owned_partitions"));
            taken_in = taken_in.max(gauge_sum(&page, "tradeflow_records_in_total"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // SIGTERM: node-b commits, closes and leaves; its partitions move back.
    let log = second.log.clone();
    let (_, left) = second.stop()?;
    let processed = records_in(&std::fs::read_to_string(&log)?);
    println!(
        "{}: node-b left at {:.1} s ({left}); it owned up to {owned_max} partitions and took in \
         {taken_in} records by its metrics, {processed} by its shutdown statistics",
        run.label,
        run.since_start()
    );
    assert!(left.success(), "node-b exited {left} after SIGTERM");
    assert!(owned_max >= 1.0, "node-b was never assigned a partition");
    assert!(processed > 0, "node-b processed no record");
    run.finish(load, vec![first])
}

/// The same join and leave under KIP-848's consumer protocol, with the
/// engines as separate processes running the whole flow (three stages,
/// co-partitioned topics): node-a restores nothing for the partitions it
/// keeps when node-b joins (its restore counter stays put), and when node-b
/// leaves it restores only the partitions it gets back.
#[test]
fn under_the_consumer_protocol_a_node_joining_and_leaving_moves_only_its_partitions(
) -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = FaultRun::new("rebalance-kip848", Guarantee::ExactlyOnce, Ownership::Group)?;
    run.consumer_protocol = true;
    let mut first = run.spawn("node-a")?;
    first.wait_ready()?;
    let load = run.start_load(6_000, &mut first)?;
    std::thread::sleep(Duration::from_secs(3));
    let node_a = first.rest_addr()?;
    let metric = |addr: &str, name: &str| -> anyhow::Result<f64> {
        match http_get(addr, "/metrics")? {
            (200, page) => Ok(gauge_sum(&page, name)),
            (status, _) => anyhow::bail!("/metrics answered {status}"),
        }
    };
    let restores_alone = metric(&node_a, "tradeflow_restores_total")?;
    let owned_alone = metric(&node_a, "tradeflow_owned_partitions")?;
    let mut second = run.spawn("node-b")?;
    let node_b = second.rest_addr()?;
    let joined = Instant::now();
    let mut owned_b = 0.0f64;
    let mut owned_joined = owned_alone;
    // Each node's gauges come from its shards' reports, published about once
    // a second, so node-b's can show its partitions before node-a's next
    // report shows them gone (the broker assigns them to node-b only after
    // node-a revoked them): wait for both sides to say so.
    while owned_b < 1.0 || owned_joined >= owned_alone || joined.elapsed() < Duration::from_secs(5)
    {
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(JOIN_WAIT_S),
            "after {JOIN_WAIT_S} s node-b owns {owned_b} partitions and node-a \
             {owned_joined} of its {owned_alone}: node-a never gave partitions to node-b"
        );
        std::thread::sleep(Duration::from_millis(250));
        owned_b = metric(&node_b, "tradeflow_owned_partitions").unwrap_or(0.0);
        owned_joined = metric(&node_a, "tradeflow_owned_partitions")?;
    }
    let restores_joined = metric(&node_a, "tradeflow_restores_total")?;
    let restores_b = metric(&node_b, "tradeflow_restores_total")?;
    println!(
        "{}: node-b joined: node-a owned {owned_alone} partitions (over its shards and \
         stages), keeps {owned_joined} and restored {} since; node-b owns {owned_b} after \
         {restores_b} restores",
        run.label,
        restores_joined - restores_alone
    );
    assert_eq!(
        restores_joined, restores_alone,
        "node-a restored nothing for the partitions it kept"
    );
    let (_, left) = second.stop()?;
    assert!(left.success(), "node-b exited {left} after SIGTERM");
    let gone = Instant::now();
    while metric(&node_a, "tradeflow_owned_partitions")? < owned_alone {
        anyhow::ensure!(
            gone.elapsed() < Duration::from_secs(JOIN_WAIT_S),
            "node-b's partitions never came back to node-a"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let restores_left = metric(&node_a, "tradeflow_restores_total")?;
    println!(
        "{}: node-b left; node-a owns all {owned_alone} again after {:.1} s, with {} restores",
        run.label,
        gone.elapsed().as_secs_f64(),
        restores_left - restores_joined
    );
    assert_eq!(
        restores_left - restores_joined,
        owned_alone - owned_joined,
        "node-a restored only what it got back"
    );
    run.finish(load, vec![first])
}

#[test]
fn kill_nine_three_times_at_least_once_loses_nothing_and_repeats_itself_exactly(
) -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("kill9-alos", Guarantee::AtLeastOnce, Ownership::CoreMap)?;
    kill_nine_under_load(&run, 9_000, 3)
}

#[test]
fn the_broker_stopped_under_load_is_ridden_out_with_retries() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::on(
        KafkaCluster::single()?,
        "broker-stop",
        Guarantee::ExactlyOnce,
        Ownership::CoreMap,
    )?;
    let mut engine = run.spawn("fault")?;
    engine.wait_ready()?;
    let load = run.start_load(6_000, &mut engine)?;
    std::thread::sleep(Duration::from_secs(6));
    let killing = run.cluster.kill(1);
    println!(
        "{}: the broker stopped at {:.1} s",
        run.label,
        run.since_start()
    );
    std::thread::sleep(Duration::from_secs(6));
    // Start it again whatever happened: the next tests share it.
    let starting = run.cluster.start(1);
    println!(
        "{}: the broker back at {:.1} s",
        run.label,
        run.since_start()
    );
    killing?;
    starting?;
    run.finish(load, vec![engine])
}

#[test]
fn two_nodes_with_overlapping_core_maps_never_process_one_partition_twice() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::on(
        KafkaCluster::single()?,
        "overlap",
        Guarantee::ExactlyOnce,
        Ownership::CoreMap,
    )?;
    let mut first = run.spawn("node-a")?;
    first.wait_ready()?;
    let load = run.start_load(3_000, &mut first)?;
    std::thread::sleep(Duration::from_secs(3));
    // node-b's core map shares partitions 2 and 3 with node-a's, under the
    // same application id: it must refuse, before it processes anything.
    let mut second = run.spawn_with("node-b", "2-3", &[])?;
    let refused = wait_or_kill(
        &mut second.child,
        Duration::from_secs(START_WAIT_S),
        "node-b beside node-a",
    )?;
    let log = std::fs::read_to_string(&second.log)?;
    println!(
        "{}: node-b exited at {:.1} s ({refused}): {}",
        run.label,
        run.since_start(),
        log.lines()
            .find(|l| l.contains("refusing"))
            .unwrap_or("(no refusal)")
    );
    assert!(!refused.success(), "node-b ran beside node-a");
    assert!(
        log.contains("refusing to start") && log.contains("node-a") && log.contains("[2, 3]"),
        "node-b's refusal does not name node-a and the shared partitions:\n{log}"
    );
    assert_eq!(records_in(&log), 0, "node-b processed records");
    // node-a carried the whole flow alone: the audit finds no duplicate.
    run.finish(load, vec![first])
}

#[test]
fn sigterm_with_the_broker_stopped_ends_within_the_deadline_and_says_how() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::on(
        KafkaCluster::single()?,
        "stop-deadline",
        Guarantee::ExactlyOnce,
        Ownership::CoreMap,
    )?;
    let deadline_s = 5;
    let mut engine = run.spawn_with(
        "fault",
        &format!("0-{}", PARTITIONS - 1),
        &["--shutdown-deadline-s", &deadline_s.to_string()],
    )?;
    engine.wait_ready()?;
    let load = run.start_load(3_000, &mut engine)?;
    std::thread::sleep(Duration::from_secs(4));
    let killing = run.cluster.kill(1);
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let _ = Command::new("kill")
        .arg(engine.child.id().to_string())
        .status();
    // A regression guard, not a timing assertion: six times the deadline.
    let stopped = wait_or_kill(
        &mut engine.child,
        Duration::from_secs(6 * deadline_s),
        "the engine after SIGTERM with its broker stopped",
    );
    let took = asked.elapsed();
    // Start the broker again whatever happened: the next tests share it.
    let starting = run.cluster.start(1);
    killing?;
    starting?;
    let status = stopped?;
    let log = std::fs::read_to_string(&engine.log)?;
    let said = log
        .lines()
        .find(|l| l.contains("shutdown ABORTED") || l.contains("shutdown DEADLINE"))
        .unwrap_or("(committed)");
    println!(
        "{}: SIGTERM with the broker stopped: exited {status} after {:.1} s (deadline {deadline_s} s): {said}",
        run.label,
        took.as_secs_f64()
    );
    match status.code() {
        Some(0) => assert!(
            log.contains(" records in,"),
            "exit 0 without the shard statistics of a committed shutdown:\n{log}"
        ),
        Some(2) => assert!(log.contains("shutdown ABORTED"), "{log}"),
        Some(3) => assert!(log.contains("shutdown DEADLINE"), "{log}"),
        other => panic!("unexpected exit {other:?} after SIGTERM:\n{log}"),
    }
    // Nothing the aborted shutdown left behind is lost: a new engine
    // finishes the flow and the run is audited in full.
    let engine = run.spawn("fault")?;
    run.finish(load, vec![engine])
}

/// What one take-over after a `kill -9` cost the survivor.
struct TakeOver {
    /// From the kill until the survivor owned (restored) every partition.
    total_s: f64,
    /// Restoring the taken partitions (the restore histogram's sum).
    restore_s: f64,
    /// Changelog records those restores read.
    restored_records: f64,
}

/// The consumer protocol's group session of the test clusters, as
/// scripts/kafka configures it (`TRADEFLOW_KAFKA_GROUP_SESSION_MS`, 6 s by
/// default).
fn test_cluster_group_session_ms() -> anyhow::Result<u32> {
    match std::env::var("TRADEFLOW_KAFKA_GROUP_SESSION_MS") {
        Ok(ms) => ms.parse().map_err(|e| {
            anyhow::anyhow!("TRADEFLOW_KAFKA_GROUP_SESSION_MS={ms:?} is not a number of ms: {e}")
        }),
        Err(_) => Ok(6_000),
    }
}

/// Whether the take-over tests give the nodes liveness beacons: yes, unless
/// `TRADEFLOW_FAULT_LIVENESS=0` (to measure a take-over by the sessions).
fn liveness_beacons() -> bool {
    std::env::var("TRADEFLOW_FAULT_LIVENESS").map_or(true, |v| v != "0")
}

/// Two group-mode engines under the consumer protocol with
/// `standby_replicas`; node-b is killed with `kill -9` under load and
/// node-a takes its partitions over. The whole run is audited as always.
fn kill_nine_beside_a_survivor(
    label: &'static str,
    standby_replicas: u32,
) -> anyhow::Result<TakeOver> {
    let mut run = FaultRun::new(label, Guarantee::ExactlyOnce, Ownership::Group)?;
    run.consumer_protocol = true;
    run.standby_replicas = standby_replicas;
    // The registry's session as short as the test clusters' group session
    // (`group.consumer.session.timeout.ms`, 6 s unless scripts/kafka was
    // started with TRADEFLOW_KAFKA_GROUP_SESSION_MS): the departed node is
    // fenced when the group hands its partitions over, rather than later
    // (docs/STATE.md, "Take-over after kill -9").
    run.session_ms = Some(test_cluster_group_session_ms()?);
    // Liveness beacons: node-a sees node-b's process go within
    // milliseconds, removes its group members and fences its transactional
    // ids, instead of waiting for the sessions above (docs/STATE.md).
    run.liveness = liveness_beacons();
    // The shipped core maps' layout: a take-over restores one changelog read
    // per partition, not one per store.
    run.changelog_layout = ChangelogLayout::Shared;
    let mut first = run.spawn("node-a")?;
    first.wait_ready()?;
    let load = run.start_load(6_000, &mut first)?;
    let node_a = first.rest_addr()?;
    let metric = |name: &str| -> anyhow::Result<f64> {
        match http_get(&node_a, "/metrics")? {
            (200, page) => Ok(gauge_sum(&page, name)),
            (status, _) => anyhow::bail!("/metrics answered {status}"),
        }
    };
    let owned_alone = metric("tradeflow_owned_partitions")?;
    let mut second = run.spawn("node-b")?;
    let node_b = second.rest_addr()?;
    let joined = Instant::now();
    let mut owned_b = 0.0f64;
    // node-b must own partitions and node-a's copies have time to catch up.
    while owned_b < 1.0 || joined.elapsed() < Duration::from_secs(8) {
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(JOIN_WAIT_S),
            "node-b was never assigned a partition"
        );
        owned_b = match http_get(&node_b, "/metrics") {
            Ok((200, page)) => gauge_sum(&page, "tradeflow_owned_partitions"),
            _ => 0.0,
        };
        std::thread::sleep(Duration::from_millis(250));
    }
    let standby_lag = match http_get(&node_a, "/metrics")? {
        (200, page) => page
            .lines()
            .filter(|l| l.starts_with("tradeflow_standby_lag_offsets{"))
            .map(str::to_string)
            .collect::<Vec<_>>(),
        (status, _) => anyhow::bail!("/metrics answered {status}"),
    };
    let restored_before = metric("tradeflow_restored_records_total")?;
    let restore_s_before = metric("tradeflow_restore_duration_seconds_sum")?;
    println!(
        "{}: node-b owns {owned_b} partitions; node-a's standby lag before the kill: {:?}",
        run.label, standby_lag
    );
    if standby_replicas > 0 {
        assert_eq!(
            standby_lag.len() as f64,
            owned_b,
            "node-a keeps a standby copy of every partition node-b owns"
        );
    } else {
        assert!(
            standby_lag.is_empty(),
            "no standby without standby_replicas"
        );
    }
    // The clock starts as the signal goes, not once the process is reaped
    // (which `kill_nine` waits for, polling): node-a may be at work before.
    let killed = Instant::now();
    // To line the take-over up with the nodes' logs (UTC).
    let killed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    second.kill_nine()?;
    println!(
        "{}: node-b killed at {killed_unix:.3} (Unix time; `date -ud @{killed_unix:.3}`)",
        run.label
    );
    while metric("tradeflow_owned_partitions")? < owned_alone {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(TAKE_OVER_WAIT_S),
            "node-b's partitions never came to node-a"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let take_over = TakeOver {
        total_s: killed.elapsed().as_secs_f64(),
        restore_s: metric("tradeflow_restore_duration_seconds_sum")? - restore_s_before,
        restored_records: metric("tradeflow_restored_records_total")? - restored_before,
    };
    println!(
        "{}: kill -9 of node-b: node-a owned all {owned_alone} partitions again after {:.2} s; \
         restoring them took {:.3} s and read {} changelog records",
        run.label, take_over.total_s, take_over.restore_s, take_over.restored_records
    );
    run.finish(load, vec![first])?;
    Ok(take_over)
}

/// Issue #15 item 5: the same kill -9 without and with a standby replica;
/// prints both take-overs. With liveness beacons (the default here) node-a
/// sees node-b's process go within milliseconds, removes its group member
/// and fences its transactional ids, and asks for its own new assignment
/// at once; then the restore, which may not end before node-b's open
/// transaction is decided (the fence decides it). With
/// `TRADEFLOW_FAULT_LIVENESS=0` the hand-over waits for the group's session
/// (6 s on the test clusters) and the fence for node-b's registration to
/// expire (docs/STATE.md "Take-over after kill -9"). What a standby saves
/// is the reading. Asserted: every audit (state compared through REST);
/// with the standby the restore read fewer records than without (the tail,
/// not the history); never a timing.
#[test]
#[ignore = "about 2 minutes on three brokers; run with --ignored"]
fn kill_nine_of_a_node_with_and_without_a_standby_replica_prints_both_take_overs(
) -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cold = kill_nine_beside_a_survivor("takeover-cold", 0)?;
    let warm = kill_nine_beside_a_survivor("takeover-standby", 1)?;
    println!(
        "take-over after kill -9 (consumer protocol, 2 nodes, 3 brokers, {} ms sessions, \
         liveness beacons {}): without standby {:.2} s in all, restore {:.3} s, {} records; \
         with 1 standby {:.2} s in all, restore {:.3} s, {} records",
        test_cluster_group_session_ms()?,
        if liveness_beacons() { "on" } else { "off" },
        cold.total_s,
        cold.restore_s,
        cold.restored_records,
        warm.total_s,
        warm.restore_s,
        warm.restored_records
    );
    assert!(
        warm.restored_records < cold.restored_records,
        "the standby's take-over restored only the tail"
    );
    Ok(())
}
