//! The `tradeflow` command line: the engine and its services, and the embedded
//! demo a newcomer runs first.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine::deployment::{plan_node, prepare_topics, FlowTopics, KafkaConnection};
use engine::runtime::{stop_on_signals, Engine};
use loadgen::ping::{self, PingConfig};
use rdkafka::mocking::MockCluster;
use services::flow::{ServiceSet, TradeFlow};
use tuning::{Machine, NodeTuning};

/// A low-latency, thread-per-core trade-flow engine on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "tradeflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine and the chosen services on this node, pinned as the core
    /// map says, until SIGINT or SIGTERM.
    Run {
        /// The node's core map and tuning knobs (see tuning/README.md).
        #[arg(long, default_value = "tuning/one-core.toml")]
        config: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// Services this process runs: any of order, payment, inventory.
        #[arg(long, default_value = "order,payment,inventory")]
        services: ServiceSet,
        /// Kafka Streams' application.id: consumer group, changelog and
        /// transactional-id prefix. Defaults to "tradeflow", or
        /// "tradeflow-<services>" when not all three run here.
        #[arg(long)]
        application_id: Option<String>,
        /// Replication factor of topics tradeflow creates (-1: broker default).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        replication: i32,
        /// Extra librdkafka property for every client, KEY=VALUE (repeatable):
        /// security.protocol, sasl.*, ssl.*, ...
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Producer linger.ms: 0 for the lowest latency.
        #[arg(long, default_value_t = 0)]
        linger_ms: u32,
        /// Consumer fetch.wait.max.ms: the latency an idle fetch may add.
        #[arg(long, default_value_t = 5)]
        fetch_wait_max_ms: u32,
    },
    /// Run the embedded quick-start: an in-process Kafka (librdkafka's mock
    /// cluster) with a few seconds of open-loop load, then a latency report.
    /// Needs nothing installed but Rust.
    Demo {
        /// Offered rate in records per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 3)]
        duration_s: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Demo { rate, duration_s } => demo(rate, duration_s),
        Command::Run {
            config,
            bootstrap,
            services,
            application_id,
            replication,
            properties,
            linger_ms,
            fetch_wait_max_ms,
        } => {
            let application_id = application_id.unwrap_or_else(|| default_application_id(services));
            run(
                &config,
                services,
                KafkaConnection {
                    bootstrap,
                    application_id,
                    client_properties: properties,
                    linger_ms,
                    fetch_wait_max_ms,
                },
                replication,
            )
        }
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

fn default_application_id(services: ServiceSet) -> String {
    if services == ServiceSet::ALL {
        "tradeflow".to_string()
    } else {
        format!("tradeflow-{}", services.to_string().replace(',', "-"))
    }
}

fn run(
    config: &std::path::Path,
    services: ServiceSet,
    connection: KafkaConnection,
    replication: i32,
) -> anyhow::Result<()> {
    // Read the machine before anything is pinned (see Machine::detect).
    let machine = Machine::detect();
    let tuning = NodeTuning::load(config)?;
    for warning in tuning.warnings(&machine) {
        tracing::warn!(%warning, "core map");
    }
    let plan = plan_node(&tuning, &machine, &connection)?;
    let flow = TradeFlow::new(services);
    let stores = flow.store_names();
    let inputs = engine::Stage::input_topics(&flow).to_vec();
    let outputs = flow.output_topics();
    prepare_topics(
        &plan.settings,
        &FlowTopics {
            inputs,
            outputs,
            stores,
        },
        plan.partitions,
        replication,
    )
    .context("preparing topics")?;
    let unowned = tuning.unowned_partitions();
    if !unowned.is_empty() {
        tracing::info!(
            ?unowned,
            "partitions this node's core map leaves to other nodes"
        );
    }
    println!(
        "tradeflow: node {} running {services} as {} with {} shard(s) on {} partitions ({:?})",
        tuning.node().name.as_str(),
        plan.settings.application_id,
        plan.shards.len(),
        plan.partitions,
        plan.settings.guarantee,
    );
    let engine = Engine::start(
        plan.settings,
        plan.shards,
        plan.knobs,
        plan.partitions,
        move |_| TradeFlow::new(services),
    )?;
    let stop = engine.stop_flag();
    stop_on_signals(&stop).context("installing signal handlers")?;
    while !stop.load(Ordering::Acquire) {
        if engine
            .statuses()
            .iter()
            .any(|(_, status)| *status == engine::runtime::ShardStatus::Failed)
        {
            tracing::error!("a shard failed for good; shutting down");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("tradeflow: stopping (commit, then close)");
    for (shard, stats) in engine.shutdown()? {
        println!(
            "  {shard}: {} records in, {} out, {} dead-lettered, {} commits, {} restored",
            stats.records_in,
            stats.records_out,
            stats.dead_lettered,
            stats.commits,
            stats.restored_records
        );
    }
    Ok(())
}

fn demo(rate: u64, duration_s: u64) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("starting librdkafka's in-process mock cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .create_topic("demo.ping", 4, 1)
        .context("creating demo.ping on the mock cluster")?;
    println!("tradeflow demo: in-process Kafka (librdkafka mock cluster) at {bootstrap}");
    println!(
        "sending {rate} records/s for {duration_s} s, open loop, through topic demo.ping (4 partitions)"
    );
    let report = ping::run(&PingConfig {
        bootstrap,
        topic: "demo.ping".into(),
        partitions: 4,
        replication: 1,
        rate_per_s: rate,
        duration: Duration::from_secs(duration_s),
        client_properties: Vec::new(),
    })
    .context("demo round trip")?;
    println!(
        "sent {} received {} offered {:.0}/s achieved {:.0}/s",
        report.sent, report.received, report.offered_rate_per_s, report.achieved_rate_per_s
    );
    println!("produce → consume latency (measured from the intended send time, and from the actual one):");
    print!("{}", report.latency.table());
    anyhow::ensure!(
        report.received == report.sent,
        "{} records were lost",
        report.sent - report.received
    );
    println!("all records came back. The trade flow (order → payment → inventory) joins this demo as the engine and services land.");
    Ok(())
}
