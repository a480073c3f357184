//! Crash recovery against the real three-broker cluster (replication 3,
//! `min.insync.replicas` 2), exactly-once: the `tradeflow` binary runs all
//! three services as its own process under steady open-loop load and is
//! killed with SIGKILL and restarted three times. Every order must reach
//! exactly one outcome and the audit of every topic (read_committed) must pass.
//!
//! Not here yet: a broker killed under load. Tried on 2026-11-22: after the
//! partition leader died, 821 transactional records to one partition stayed
//! queued until their transaction timed out, and each commit blocked in
//! `send_offsets_to_transaction` for its full 30 s, so outcomes stopped
//! becoming visible. That needs the producer's leader failover under
//! transactions investigated before it can be a passing test.
//!
//! The flow's topic names are fixed, so this test owns the three-broker
//! cluster's flow topics; nothing else writes them there.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::deployment::{prepare_topics, FlowTopics};
use engine::kafka::{Guarantee, KafkaSettings};
use loadgen::drive::{drive, DriveConfig};
use loadgen::synth::{generate, SynthConfig};
use services::audit::{Audit, DeliveryGuarantee};
use services::flow::{ServiceSet, TradeFlow};
use tradeflow_tests::KafkaCluster;

const RATE_PER_S: u64 = 300;
const ORDERS: u64 = 6_000;
const KILLS: usize = 3;

fn core_map(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("fault.toml");
    let mut file = std::fs::File::create(&path)?;
    writeln!(
        file,
        r#"[node]
name = "fault"
[ownership]
mode = "core-map"
partitions = 4
[[shard]]
core = 0
partitions = ["0-3"]
[runtime]
idle = "park"
park_us = 200
client_threads = "unpinned"
[commit]
interval_ms = 100
on_drain = true
guarantee = "exactly-once"
"#
    )?;
    Ok(path)
}

fn spawn_engine(
    config: &std::path::Path,
    bootstrap: &str,
    log: &std::path::Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(env!("CARGO_BIN_EXE_tradeflow"))
        .args(["run", "--config"])
        .arg(config)
        .args([
            "--bootstrap",
            bootstrap,
            "--replication",
            "3",
            "--application-id",
            "fault-eos",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?)
}

#[test]
fn kill_nine_three_times_under_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let cluster = KafkaCluster::three()?;
    let bootstrap = cluster.bootstrap().to_string();
    let dir = std::env::temp_dir().join(format!("tradeflow-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = core_map(&dir)?;
    // Create the flow's topics before anything reads them: on a fresh cluster
    // the driver would otherwise look for outcome topics the engine has not
    // made yet.
    let flow = TradeFlow::new(ServiceSet::ALL);
    prepare_topics(
        &KafkaSettings {
            bootstrap: bootstrap.clone(),
            application_id: "fault-eos".into(),
            guarantee: Guarantee::ExactlyOnce,
            client_properties: Vec::new(),
            linger_ms: 0,
            fetch_wait_max_ms: 5,
            namespace: codecs::topics::TopicNamespace::none(),
        },
        &FlowTopics {
            inputs: engine::Stage::input_topics(&flow).to_vec(),
            outputs: flow.output_topics(),
            stores: flow.store_names(),
        },
        4,
        3,
    )?;
    let log = dir.join("engine.log");
    let mut engine = spawn_engine(&config, &bootstrap, &log)?;

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
            orders: ORDERS,
            rate_per_s: RATE_PER_S,
            ..SynthConfig::default()
        },
        codecs::ids::order_id_for,
    )?;
    let schedule = loadgen::drive::schedule(scenario)?;
    let drive_config = DriveConfig {
        bootstrap: bootstrap.clone(),
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        drain_timeout: Duration::from_secs(90),
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let driver = std::thread::spawn(move || drive(&drive_config, schedule));

    let mut recoveries = Vec::new();
    for kill in 1..=KILLS {
        std::thread::sleep(Duration::from_secs(4));
        engine.kill()?; // SIGKILL: no commit, no close, an open transaction left behind.
        engine.wait()?;
        let restarted = Instant::now();
        engine = spawn_engine(&config, &bootstrap, &log)?;
        recoveries.push(restarted);
        println!("kill -9 #{kill} at {:?} into the run; restarted", restarted);
    }
    let report = driver
        .join()
        .map_err(|_| anyhow::anyhow!("the load driver panicked"))??;
    // SIGTERM: the clean shutdown sequence.
    let _ = Command::new("kill").arg(engine.id().to_string()).status();
    let stopped = engine.wait()?;
    println!(
        "orders {} sent, {} outcomes ({} filled, {} rejected for funds, {} refunded), {} missing, \
         {} duplicate outcomes; corrected max latency {:.1} s (the recovery gaps), p99 {:.1} ms; \
         engine exit {stopped}",
        report.orders_sent,
        report.outcomes,
        report.filled,
        report.rejected_funds,
        report.refunded,
        report.missing,
        report.duplicate_outcomes,
        report.latency.corrected.max() as f64 / 1e9,
        report.latency.corrected.value_at_quantile(0.99) as f64 / 1e6,
    );

    let mut audit = Audit::new(DeliveryGuarantee::ExactlyOnce);
    engine::kafka::read_to_end(&bootstrap, &[], &codecs::topics::ALL, &mut |record| {
        if let Some(Ok(event)) = record.payload.map(codecs::decode) {
            audit.record(record.topic, &event.to_event());
        }
    })?;
    let audit = audit.finish();
    print!("{audit}");
    if !audit.passed() || report.missing > 0 {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<_> = tail.lines().rev().take(30).collect();
        eprintln!(
            "engine log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    assert_eq!(report.missing, 0, "orders without an outcome");
    assert_eq!(
        report.duplicate_outcomes, 0,
        "an order saw two committed outcomes"
    );
    assert!(audit.passed(), "the audit found violations");
    Ok(())
}
