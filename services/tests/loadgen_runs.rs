//! `loadgen` against the real single broker and a real engine (the
//! `tradeflow` binary as a child process, exactly-once), through the library
//! entry points the `loadgen` commands call (`loadgen::session`,
//! `loadgen::record`, `loadgen::traffic::replay`):
//!
//! - a short run writes every report file, the SVG plots parse as SVG
//!   documents, and the audit at the end passes;
//! - recording a namespace's inputs and replaying the file into a fresh
//!   namespace gives the same orders and the same outcomes;
//! - coordinated omission: the engine is paused (SIGSTOP) for a known time
//!   in the middle of an open-loop run; the corrected p99 shows the pause,
//!   the uncorrected one does not.
//!
//! Each run has its own topic namespace and application id, so no run reads
//! another's history. The runs share two cores with the broker, so they take
//! turns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{Guarantee, KafkaSettings};
use loadgen::drive::{DriveConfig, DriveOptions, ScheduledRecord};
use loadgen::record::{capture, RecordConfig, INPUT_TOPICS};
use loadgen::report::{self, Summary};
use loadgen::session::{run_session, synth_schedule, RunLabel, SessionConfig, SessionOutcome};
use loadgen::synth::SynthConfig;
use loadgen::traffic::replay::{plan_replay, IdRewriter, Pace, Schedule};
use loadgen::traffic::TrafficReader;
use services::flow::{ServiceSet, TradeFlow};
use tradeflow_tests::{unique_topic, KafkaCluster};

const PARTITIONS: i32 = 4;
/// How long a run waits for its last outcomes.
const DRAIN_TIMEOUT_S: u64 = 60;

/// One run at a time: each loads the same two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An engine process, stopped (SIGTERM) when dropped.
struct Engine {
    child: Child,
    log: PathBuf,
}

impl Engine {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `kill -<signal>` of the engine process.
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed: {status}");
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A stopped process ignores SIGTERM until it is continued.
        let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        let _ = Command::new("kill").arg(self.pid()).status();
        // Bounded: a hung engine is killed, not waited for.
        let _ = tradeflow_tests::wait_or_kill(&mut self.child, Duration::from_secs(60));
    }
}

/// A namespace of its own with its topics made, and the engine that serves it.
struct Deployment {
    cluster: KafkaCluster,
    namespace: TopicNamespace,
    dir: PathBuf,
    engine: Engine,
    /// Synthetic scenarios run so far.
    scenarios: std::sync::atomic::AtomicU32,
}

impl Deployment {
    fn start(label: &str) -> anyhow::Result<Deployment> {
        tradeflow_tests::init_logging();
        let cluster = KafkaCluster::single()?;
        let name = unique_topic(label);
        let namespace = TopicNamespace::new(&name)?;
        let application_id = format!("{name}-app");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        // The flow's topics exist before the driver looks for its outcome topics.
        let flow = TradeFlow::new(ServiceSet::ALL);
        prepare_topics(
            &KafkaSettings {
                bootstrap: cluster.bootstrap().to_string(),
                application_id: application_id.clone(),
                guarantee: Guarantee::ExactlyOnce,
                client_properties: Vec::new(),
                linger_ms: 0,
                fetch_wait_max_ms: 5,
                namespace: namespace.clone(),
            },
            &FlowTopics {
                inputs: engine::Stage::input_topics(&flow).to_vec(),
                outputs: flow.output_topics(),
                stores: flow.store_names(),
                changelog_layout: Default::default(),
            },
            PARTITIONS,
            1,
        )?;
        let config = dir.join("engine.toml");
        std::fs::File::create(&config)?.write_all(
            format!(
                "[node]\nname = \"lg\"\n[ownership]\nmode = \"core-map\"\npartitions = {PARTITIONS}\n\
                 [[shard]]\ncore = 0\npartitions = [\"0-{}\"]\n[runtime]\nidle = \"park\"\n\
                 park_us = 200\nclient_threads = \"unpinned\"\n[commit]\ninterval_ms = 100\n\
                 on_drain = true\nguarantee = \"exactly-once\"\n",
                PARTITIONS - 1
            )
            .as_bytes(),
        )?;
        let log = dir.join("engine.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_tradeflow"))
            // Any free port for /metrics and /health: tests run side by side.
            .args(["run", "--no-api", "--rest-addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--report-dir")
            .arg(dir.join("engine-report"))
            .args(["--bootstrap", cluster.bootstrap(), "--replication", "1"])
            .args(["--namespace", namespace.name()])
            .args(["--application-id", &application_id])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()?;
        println!("{label}: namespace {namespace}, files in {}", dir.display());
        Ok(Deployment {
            cluster,
            namespace,
            dir,
            engine: Engine { child, log },
            scenarios: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn session(&self, name: &str, pending_orders_max: usize) -> SessionConfig {
        SessionConfig {
            drive: DriveConfig {
                bootstrap: self.cluster.bootstrap().to_string(),
                client_properties: vec![("broker.address.family".into(), "v4".into())],
                drain_timeout: Duration::from_secs(DRAIN_TIMEOUT_S),
                namespace: self.namespace.clone(),
            },
            options: DriveOptions {
                pending_orders_max,
                ..DriveOptions::default()
            },
            out_dir: self.dir.join(name),
            audit: Some(Guarantee::ExactlyOnce),
            deserved: None,
            poison_sent: false,
            state: None,
            label: RunLabel::here(&format!("loadgen {name} (test)")),
        }
    }

    /// A synthetic run: `rate` records/s, orders for `seconds` after the set-up.
    fn run_synth(
        &self,
        name: &str,
        scenario: SynthConfig,
        pending_orders_max: usize,
    ) -> anyhow::Result<SessionOutcome> {
        let (_, schedule) = synth_schedule(&scenario)?;
        let mut session = self.session(name, pending_orders_max);
        // Scenarios of one deployment share its instruments (synth numbers
        // them from SYM0001), so stock an earlier one left changes which
        // orders of a later one fill: only the first scenario's outcomes do
        // not depend on the others, and only it is held to its plan.
        if self
            .scenarios
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            session.deserved = Some(loadgen::synth::deserved_outcomes(
                &scenario,
                codecs::ids::order_id_for,
            )?);
        }
        let outcome = run_session(&session, schedule)?;
        print!("{}", outcome.table);
        if let Some(audit) = &outcome.audit {
            print!("{}", audit.report);
        }
        if !outcome.passed() {
            eprintln!("engine log (last lines):\n{}", self.engine.log_tail());
        }
        Ok(outcome)
    }
}

/// A scenario of `orders` order-flow records at `rate` records/s, with a run
/// id of its own.
fn scenario(rate: u64, orders: u64) -> SynthConfig {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    SynthConfig {
        seed: run_id,
        run_id: Some(run_id),
        accounts: 50,
        instruments: 10,
        orders,
        rate_per_s: rate,
        fail_funds_share: 0.05,
        fail_stock_share: 0.05,
        ..SynthConfig::default()
    }
}

/// Parses `path` as XML and returns its root element's name.
fn xml_root(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut root = None;
    loop {
        match reader.read_event()? {
            quick_xml::events::Event::Start(element) if root.is_none() => {
                root = Some(String::from_utf8_lossy(element.name().as_ref()).into_owned());
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    root.ok_or_else(|| anyhow::anyhow!("{} has no root element", path.display()))
}

#[test]
fn a_short_run_writes_every_report_file_and_the_audit_passes() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let deployment = Deployment::start("lg-run")?;
    let outcome = deployment.run_synth("run", scenario(100, 400), 10_000)?;
    assert!(outcome.passed(), "orders missing or the audit failed");
    let drive = &outcome.drive;
    assert!(drive.orders_sent > 300, "{} orders", drive.orders_sent);
    assert_eq!(drive.outcomes, drive.orders_sent);
    assert!(drive.filled > 0 && drive.rejected_funds > 0 && drive.refunded > 0);
    let audit = outcome.audit.as_ref().map(|a| &a.report);
    assert_eq!(audit.map(|r| r.orders.accepted), Some(drive.orders_sent));

    let dir = deployment.dir.join("run");
    for file in [
        report::HGRM_CORRECTED,
        report::HGRM_UNCORRECTED,
        report::HLOG,
        report::SVG_PERCENTILES,
        report::SVG_THROUGHPUT,
        report::SUMMARY_JSON,
    ] {
        let size = std::fs::metadata(dir.join(file))?.len();
        assert!(size > 0, "{file} is empty");
    }
    for svg in [report::SVG_PERCENTILES, report::SVG_THROUGHPUT] {
        assert_eq!(xml_root(&dir.join(svg))?, "svg", "{svg}");
    }
    let hgrm = std::fs::read_to_string(dir.join(report::HGRM_CORRECTED))?;
    assert!(hgrm.contains("#[Max     ="), "{hgrm}");
    let hlog = std::fs::read_to_string(dir.join(report::HLOG))?;
    assert!(hlog.starts_with("#[Histogram log format version 1.3]"));
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join(report::SUMMARY_JSON))?)?;
    assert_eq!(summary, outcome.summary);
    let flow = summary
        .flow
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no flow summary"))?;
    assert_eq!(flow.audit.as_ref().map(|a| a.passed), Some(true));
    assert_eq!(summary.load.received, drive.orders_sent);
    let stage_counts: Vec<(&str, u64)> = flow
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.latency_us.count))
        .collect();
    assert!(
        stage_counts.contains(&("payment", drive.orders_sent)),
        "every order's payment decision is timed: {stage_counts:?}"
    );
    Ok(())
}

#[test]
fn a_recorded_namespace_replays_to_the_same_orders_and_outcomes() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let original = Deployment::start("lg-rec")?;
    let first = original.run_synth("original", scenario(100, 300), 10_000)?;
    assert!(first.passed());

    let (captured, file) = capture(
        &RecordConfig {
            bootstrap: original.cluster.bootstrap().to_string(),
            client_properties: Vec::new(),
            namespace: original.namespace.clone(),
            topics: INPUT_TOPICS.map(String::from).to_vec(),
            bounds: Default::default(),
            source: "test".into(),
            values: Default::default(),
        },
        Vec::new(),
    )?;
    println!("captured {captured:?}");
    assert_eq!(captured.records, first.drive.events_sent);
    drop(original);

    let copy = Deployment::start("lg-replay")?;
    let reader = TrafficReader::new(std::io::BufReader::new(&file[..]))?;
    let planned: Vec<Result<ScheduledRecord, _>> = plan_replay(
        reader,
        Schedule::new(Pace::Speedup(2.0))?,
        IdRewriter::with_services_order_ids(0x5eed),
    )
    .collect();
    let outcome = run_session(&copy.session("replay", 10_000), planned)?;
    print!("{}", outcome.table);
    let replay = &outcome.drive;
    let original = &first.drive;
    assert!(outcome.passed(), "orders missing or the audit failed");
    assert_eq!(replay.events_sent, original.events_sent);
    assert_eq!(replay.orders_sent, original.orders_sent);
    assert_eq!(replay.outcomes, original.outcomes);
    assert_eq!(
        (replay.filled, replay.rejected_funds, replay.refunded),
        (original.filled, original.rejected_funds, original.refunded),
        "each order ends as it did (the scenario's outcomes do not depend on timing)"
    );
    let audited = |o: &SessionOutcome| o.audit.as_ref().map(|a| a.report.orders);
    assert_eq!(audited(&outcome), audited(&first));
    Ok(())
}

/// The engine stops for this long in the middle of the run.
const PAUSE: Duration = Duration::from_secs(4);
/// Records per second of the coordinated-omission runs (~90 % are orders).
const CO_RATE_PER_S: u64 = 30;
/// Share of orders that a pause may catch in flight, at most, for the
/// uncorrected p99 not to see it (below 1 %, with room).
const CO_STALLED_SHARE_MAX: f64 = 0.008;
/// Bounds of the paused run's length.
const CO_RUN_S_MIN: u64 = 40;
const CO_RUN_S_MAX: u64 = 240;

#[test]
fn a_paused_engine_shows_in_the_corrected_p99_only() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let deployment = Deployment::start("lg-co")?;
    // Most orders are refused for funds: Payment decides them in one hop,
    // which keeps the flow's latency, and so the orders in flight, small.
    // Each run has accounts of its own: cash left over from an earlier run
    // would pay for an order meant to fail.
    let mix = |config: SynthConfig, account_base: u64| SynthConfig {
        fail_funds_share: 0.8,
        account_base,
        ..config
    };
    // The engine's first transactions are slow to start; not measured.
    let warm_up = deployment.run_synth("warm-up", mix(scenario(CO_RATE_PER_S, 30), 0), 10_000)?;
    assert!(warm_up.passed());
    // Calibration: how many orders are in flight at this rate, unpaused.
    let calibration = deployment.run_synth(
        "calibration",
        mix(scenario(CO_RATE_PER_S, 240), 1_000),
        10_000,
    )?;
    assert!(calibration.passed());
    let order_rate = calibration.drive.offered_order_rate_per_s();
    let p90_s = calibration.drive.latency.corrected.value_at_quantile(0.90) as f64 / 1e9;
    // A client allowing somewhat more than the usual in-flight orders is
    // not held back by the flow, only by a stall.
    let pending_max = ((order_rate * p90_s * 1.2).ceil() as usize).max(8);
    // Few enough caught in flight by the pause: the run is long enough.
    let run_s = ((pending_max as f64 / (order_rate * CO_STALLED_SHARE_MAX)).ceil() as u64)
        .clamp(CO_RUN_S_MIN, CO_RUN_S_MAX);
    println!(
        "calibration: {order_rate:.1} orders/s, p90 {p90_s:.3} s → at most {pending_max} pending \
         orders, a {run_s} s run, paused {PAUSE:?}"
    );

    let config = mix(scenario(CO_RATE_PER_S, CO_RATE_PER_S * run_s), 2_000);
    let setup = Duration::from_secs_f64(
        (config.accounts + config.instruments) as f64 / CO_RATE_PER_S as f64,
    );
    let pause_at = setup + Duration::from_secs(run_s / 3);
    let paused = std::thread::scope(|scope| -> anyhow::Result<SessionOutcome> {
        let run = scope.spawn(|| deployment.run_synth("paused", config.clone(), pending_max));
        let started = Instant::now();
        std::thread::sleep(pause_at);
        deployment.engine.signal("STOP")?;
        let stopped = Instant::now();
        std::thread::sleep(PAUSE);
        deployment.engine.signal("CONT")?;
        println!(
            "engine stopped {:.1} s into the run for {:.2} s",
            (stopped - started).as_secs_f64(),
            stopped.elapsed().as_secs_f64()
        );
        run.join()
            .map_err(|_| anyhow::anyhow!("the run panicked"))?
    })?;
    assert!(paused.passed(), "orders missing or the audit failed");

    let latency = &paused.drive.latency;
    let s = |ns: u64| ns as f64 / 1e9;
    let (corrected_p99, uncorrected_p99) = (
        s(latency.corrected.value_at_quantile(0.99)),
        s(latency.uncorrected.value_at_quantile(0.99)),
    );
    let corrected_p50 = s(latency.corrected.value_at_quantile(0.50));
    let pause = PAUSE.as_secs_f64();
    println!(
        "paused run: corrected p99 {corrected_p99:.3} s, uncorrected p99 {uncorrected_p99:.3} s, \
         corrected p50 {corrected_p50:.3} s, max {:.3} s; the sender waited up to {:.3} s",
        s(latency.corrected.max()),
        paused.drive.pending_wait_max.as_secs_f64()
    );
    // Orders due while the engine stood still waited for it, measured from
    // when they were due.
    assert!(
        corrected_p99 >= pause / 2.0,
        "the corrected p99 {corrected_p99:.3} s does not show a {pause} s pause"
    );
    assert!(s(latency.corrected.max()) >= pause * 0.75);
    // Measured from when they left, only the few in flight saw it.
    assert!(
        uncorrected_p99 < pause / 2.0,
        "the uncorrected p99 {uncorrected_p99:.3} s shows the {pause} s pause"
    );
    // The premise: outside the pause the pending bound did not hold the
    // sender back (else every order would be late and the above vacuous).
    assert!(
        corrected_p50 < pause / 4.0,
        "the corrected p50 {corrected_p50:.3} s: the pending bound throttled the whole run"
    );
    Ok(())
}
