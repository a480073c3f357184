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
//!   again: the engine rides it out by restarting with backoff (exactly-once).
//!
//! Each run has its own topic namespace and application id, so runs never
//! read each other's history. They share the cluster, and one of them kills a
//! broker, so they run one at a time.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{Guarantee, KafkaSettings};
use loadgen::drive::{drive, DriveConfig, DriveError, DriveReport};
use loadgen::synth::{generate, SynthConfig};
use services::audit::{Audit, DeliveryGuarantee};
use services::flow::{ServiceSet, TradeFlow};
use tradeflow_tests::{unique_topic, KafkaCluster};

const RATE_PER_S: u64 = 300;
const PARTITIONS: i32 = 4;

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

    fn core_map(&self, node: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{node}.toml"));
        let ownership = match self.ownership {
            Ownership::CoreMap => format!(
                "mode = \"core-map\"\npartitions = {PARTITIONS}\n[[shard]]\ncore = 0\npartitions = [\"0-{}\"]",
                PARTITIONS - 1
            ),
            Ownership::Group => {
                format!("mode = \"consumer-group\"\npartitions = {PARTITIONS}\n[[shard]]\ncore = 0")
            }
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
        Ok(path)
    }

    fn log(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.log"))
    }

    /// Starts a `tradeflow run` process as `node` (appending to its log).
    fn spawn(&self, node: &str) -> anyhow::Result<Child> {
        let config = self.core_map(node)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(node))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradeflow"));
        command
            // Metrics and health listen on any free port: runs overlap.
            .args(["run", "--no-api", "--rest-addr", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(["--bootstrap", self.cluster.bootstrap()])
            .args(["--replication", &self.replication().to_string()])
            .args(["--namespace", self.namespace.name()])
            .args(["--application-id", &self.application_id]);
        if self.ownership == Ownership::Group {
            // A static member that leaves keeps its partitions until its
            // session times out (it sends no LeaveGroup): keep that short.
            command.args(["--property", "session.timeout.ms=10000"]);
        }
        // TRADEFLOW_FAULT_LOG=engine=debug shows every commit in the logs.
        let filter = std::env::var("TRADEFLOW_FAULT_LOG").unwrap_or_else(|_| "warn".into());
        Ok(command
            .env("RUST_LOG", filter)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?)
    }

    /// Starts the open-loop load: `orders` orders at `RATE_PER_S`.
    fn start_load(
        &self,
        orders: u64,
    ) -> anyhow::Result<JoinHandle<Result<DriveReport, DriveError>>> {
        // A seeded scenario with its own run id, so its ids never meet an earlier run's.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            | 1;
        let scenario = generate(
            &SynthConfig {
                seed: run_id,
                run_id: Some(run_id),
                accounts: 100,
                instruments: 10,
                orders,
                rate_per_s: RATE_PER_S,
                ..SynthConfig::default()
            },
            codecs::ids::order_id_for,
        )?;
        let schedule = loadgen::drive::schedule(scenario)?;
        let config = DriveConfig {
            bootstrap: self.cluster.bootstrap().to_string(),
            client_properties: vec![("broker.address.family".into(), "v4".into())],
            drain_timeout: Duration::from_secs(90),
            namespace: self.namespace.clone(),
        };
        Ok(std::thread::spawn(move || drive(&config, schedule)))
    }

    /// Waits for the load, stops `engines` (SIGTERM), audits every topic of
    /// the namespace and checks the run.
    fn finish(
        &self,
        load: JoinHandle<Result<DriveReport, DriveError>>,
        engines: Vec<(&str, Child)>,
    ) -> anyhow::Result<()> {
        let report = load.join();
        let mut exits = Vec::new();
        for (node, mut engine) in engines {
            // SIGTERM: the clean shutdown sequence.
            let _ = Command::new("kill").arg(engine.id().to_string()).status();
            exits.push(format!("{node} {}", engine.wait()?));
        }
        let report = report.map_err(|_| anyhow::anyhow!("the load driver panicked"))??;
        println!(
            "{}: {} orders sent, {} outcomes ({} filled, {} rejected for funds, {} refunded), \
             {} missing, {} duplicate outcomes; {:.0} orders/s achieved; latency p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} s (the recovery gap); engines: {}",
            self.label,
            report.orders_sent,
            report.outcomes,
            report.filled,
            report.rejected_funds,
            report.refunded,
            report.missing,
            report.duplicate_outcomes,
            report.achieved_orders_per_s(),
            report.latency.corrected.value_at_quantile(0.50) as f64 / 1e6,
            report.latency.corrected.value_at_quantile(0.99) as f64 / 1e6,
            report.latency.corrected.max() as f64 / 1e9,
            exits.join(", "),
        );

        let audit = self.audit()?;
        print!("{audit}");
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
        assert!(audit.passed(), "the audit found violations");
        Ok(())
    }

    /// Reads every topic of the run's namespace (read_committed) and audits
    /// it. After a broker failover a transaction's commit marker can be held
    /// up on a partition for a while (until the coordinator completes or
    /// times it out, `transaction.timeout.ms`), and a read_committed reader
    /// cannot pass it: such a stall is retried, not failed, up to three
    /// reads, each of which gives up after a minute without progress.
    fn audit(&self) -> anyhow::Result<services::audit::AuditReport> {
        let topics = self.namespace.all();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut audit = Audit::new(match self.guarantee {
                Guarantee::ExactlyOnce => DeliveryGuarantee::ExactlyOnce,
                Guarantee::AtLeastOnce => DeliveryGuarantee::AtLeastOnce,
            });
            let read =
                engine::kafka::read_to_end(self.cluster.bootstrap(), &[], &topics, &mut |record| {
                    if let (Some(topic), Some(Ok(event))) = (
                        self.namespace.flow_topic(record.topic),
                        record.payload.map(codecs::decode),
                    ) {
                        audit.record(topic, &event.to_event());
                    }
                });
            match read {
                Ok(_) => return Ok(audit.finish()),
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
    let load = run.start_load(orders)?;
    for kill in 1..=kills {
        // Long enough for the restarted engine to restore and catch up, so
        // each kill lands on a running engine, not on one still starting.
        std::thread::sleep(Duration::from_secs(8));
        engine.kill()?; // SIGKILL: no commit, no close, an open transaction left behind.
        engine.wait()?;
        engine = run.spawn("fault")?;
        println!(
            "{}: kill -9 #{kill} at {:.1} s; restarted",
            run.label,
            run.since_start()
        );
    }
    run.finish(load, vec![("fault", engine)])
}

#[test]
fn kill_nine_three_times_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("kill9-eos", Guarantee::ExactlyOnce, Ownership::CoreMap)?;
    kill_nine_under_load(&run, 9_000, 3)
}

#[test]
fn a_broker_killed_and_restarted_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("broker-eos", Guarantee::ExactlyOnce, Ownership::CoreMap)?;
    let engine = run.spawn("fault")?;
    let load = run.start_load(6_000)?;
    // Let the engine restore and outcomes flow before the broker dies.
    std::thread::sleep(Duration::from_secs(6));
    let broker = 2;
    let killing = run.cluster.kill(broker);
    println!(
        "{}: broker {broker} killed at {:.1} s",
        run.label,
        run.since_start()
    );
    std::thread::sleep(Duration::from_secs(5));
    // Start it again whatever happened: the next tests share the cluster.
    let starting = run.cluster.start(broker);
    println!(
        "{}: broker {broker} back at {:.1} s",
        run.label,
        run.since_start()
    );
    killing?;
    starting?;
    run.finish(load, vec![("fault", engine)])
}

#[test]
fn a_second_engine_joining_and_leaving_under_load_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = FaultRun::new("rebalance-eos", Guarantee::ExactlyOnce, Ownership::Group)?;
    let first = run.spawn("node-a")?;
    let load = run.start_load(6_000)?;
    std::thread::sleep(Duration::from_secs(5));
    let mut second = run.spawn("node-b")?;
    println!("{}: node-b joined at {:.1} s", run.label, run.since_start());
    std::thread::sleep(Duration::from_secs(8));
    // SIGTERM: node-b commits, closes and leaves; its partitions move back.
    let _ = Command::new("kill").arg(second.id().to_string()).status();
    let left = second.wait()?;
    println!(
        "{}: node-b left at {:.1} s ({left})",
        run.label,
        run.since_start()
    );
    run.finish(load, vec![("node-a", first)])
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
    let engine = run.spawn("fault")?;
    let load = run.start_load(6_000)?;
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
    run.finish(load, vec![("fault", engine)])
}
