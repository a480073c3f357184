//! The `loadgen` command line: drives a tradeflow deployment or a bare Kafka
//! cluster with open-loop load and prints HDR latency reports.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::ping::{self, PingConfig};

/// Open-loop load generator and latency reporter for tradeflow.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure produce → consume round trips through one topic at a fixed rate:
    /// the latency floor of the cluster, before any tradeflow processing.
    Ping {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// Topic to ping through (created if missing).
        #[arg(long, default_value = "loadgen.ping")]
        topic: String,
        /// Partitions when the topic is created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Replication factor when the topic is created.
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// Offered rate in records per second (open loop).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 5)]
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
        Command::Ping {
            bootstrap,
            topic,
            partitions,
            replication,
            rate,
            duration_s,
        } => {
            let report = ping::run(&PingConfig {
                bootstrap: bootstrap.clone(),
                topic,
                partitions,
                replication,
                rate_per_s: rate,
                duration: Duration::from_secs(duration_s),
                client_properties: Vec::new(),
            })
            .with_context(|| format!("ping against {bootstrap}"))?;
            println!(
                "sent {} received {} offered {:.0}/s achieved {:.0}/s",
                report.sent, report.received, report.offered_rate_per_s, report.achieved_rate_per_s
            );
            print!("{}", report.latency.table());
            anyhow::ensure!(
                report.received == report.sent,
                "{} of {} records did not come back",
                report.sent - report.received,
                report.sent
            );
        }
    }
    Ok(())
}
