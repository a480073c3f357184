//! The `tradeflow` command line: the engine and its services, and the embedded
//! demo a newcomer runs first.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::ping::{self, PingConfig};
use rdkafka::mocking::MockCluster;

/// A low-latency, thread-per-core trade-flow engine on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "tradeflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    }
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
