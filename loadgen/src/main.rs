//! The `loadgen` command line: drives a tradeflow deployment or a bare Kafka
//! cluster with open-loop load, writes HDR latency reports, and generates
//! synthetic traffic files for replay.
//!
//! Owns: argument parsing, the run's metadata (command line, commit, host) and
//! where files go. Must never: hold measuring logic — that lives in the library.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loadgen::interval::INTERVAL_MS_DEFAULT;
use loadgen::ping::{self, PingConfig, PingOptions};
use loadgen::progress::{Progress, Verbosity};
use loadgen::report::{Report, RunInfo};
use loadgen::synth::{self, SequentialOrderIds, SynthConfig};
use loadgen::traffic::{Header, TrafficWriter};

/// Directory under which reports go unless `--report-dir` says otherwise.
const REPORTS_DIR_DEFAULT: &str = "reports";
/// Records between progress updates while writing a traffic file.
const SYNTH_PROGRESS_EVERY_RECORDS: u64 = 4_096;

/// Open-loop load generator and latency reporter for tradeflow.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Cli {
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure produce → consume round trips through one topic at a fixed rate:
    /// the latency floor of the cluster, before any tradeflow processing.
    Ping(PingArgs),
    /// Write a seeded synthetic scenario (accounts funded, instruments stocked,
    /// a Zipf-skewed order flow) as a traffic file for replay.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
struct PingArgs {
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
    /// Length of one interval of the interval log, in milliseconds.
    #[arg(long, default_value_t = INTERVAL_MS_DEFAULT)]
    interval_ms: u64,
    /// Where to write the report [default: reports/ping-<UTC timestamp>].
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Traffic file to write (`-` for stdout).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// High 64 bits of every event id [default: derived from the seed].
    #[arg(long)]
    run_id: Option<u64>,
    /// Accounts, each funded once.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Instruments (SYM0001, …), each stocked once.
    #[arg(long, default_value_t = 100)]
    instruments: u64,
    /// Order-flow records after the set-up (creates, amends, cancels).
    #[arg(long, default_value_t = 10_000)]
    orders: u64,
    /// Offered rate of all records, per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Zipf exponent of account choice (0 uniform).
    #[arg(long, default_value_t = 1.0)]
    account_skew: f64,
    /// Zipf exponent of instrument choice (0 uniform).
    #[arg(long, default_value_t = 1.0)]
    instrument_skew: f64,
    /// Share of order-flow records that amend a recent order.
    #[arg(long, default_value_t = 0.05)]
    amend_share: f64,
    /// Share of order-flow records that cancel a recent order.
    #[arg(long, default_value_t = 0.05)]
    cancel_share: f64,
    /// Share of new orders bound to fail for funds.
    #[arg(long, default_value_t = 0.02)]
    fail_funds_share: f64,
    /// Share of new orders bound to fail for stock.
    #[arg(long, default_value_t = 0.02)]
    fail_stock_share: f64,
    /// Most units per order.
    #[arg(long, default_value_t = 100)]
    quantity_max: i64,
    /// Lowest limit price, minor units.
    #[arg(long, default_value_t = 100)]
    price_min: i64,
    /// Highest limit price, minor units.
    #[arg(long, default_value_t = 50_000)]
    price_max: i64,
    /// Number orders 1, 2, 3, … instead of deriving their ids as the services
    /// do (readable, but not what the Order service would assign).
    #[arg(long)]
    sequential_order_ids: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    match cli.command {
        Command::Ping(args) => ping_command(args, verbosity),
        Command::Synth(args) => synth_command(args, verbosity),
    }
}

fn ping_command(args: PingArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    let report_dir = args.report_dir.clone().unwrap_or_else(|| {
        PathBuf::from(REPORTS_DIR_DEFAULT).join(format!("ping-{}", utc_stamp(SystemTime::now())))
    });
    let options = PingOptions {
        interval: Duration::from_millis(args.interval_ms),
        progress: Progress::new(0, "replies", verbosity),
    };
    let report = ping::run_with(
        &PingConfig {
            bootstrap: args.bootstrap.clone(),
            topic: args.topic,
            partitions: args.partitions,
            replication: args.replication,
            rate_per_s: args.rate,
            duration: Duration::from_secs(args.duration_s),
            client_properties: Vec::new(),
        },
        &options,
    )
    .with_context(|| format!("ping against {}", args.bootstrap))?;
    options.progress.clear();
    let run = RunInfo {
        tool: "loadgen ping".into(),
        command_line: std::env::args().collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        commit: commit(),
        host: host(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        started: report.started,
        duration: report.elapsed,
        offered_rate_per_s: report.offered_rate_per_s,
        achieved_rate_per_s: report.achieved_rate_per_s,
        sent: report.sent,
        received: report.received,
    };
    let written = Report {
        run: &run,
        total: &report.latency,
        intervals: &report.intervals,
    };
    print!("{}", written.table());
    written
        .write_to(&report_dir)
        .with_context(|| format!("writing the report to {}", report_dir.display()))?;
    println!("report: {}", report_dir.display());
    anyhow::ensure!(
        report.received == report.sent,
        "{} of {} records did not come back",
        report.sent - report.received,
        report.sent
    );
    Ok(())
}

fn synth_command(args: SynthArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    let config = SynthConfig {
        seed: args.seed,
        run_id: args.run_id,
        accounts: args.accounts,
        instruments: args.instruments,
        orders: args.orders,
        rate_per_s: args.rate,
        account_skew: args.account_skew,
        instrument_skew: args.instrument_skew,
        amend_share: args.amend_share,
        cancel_share: args.cancel_share,
        fail_funds_share: args.fail_funds_share,
        fail_stock_share: args.fail_stock_share,
        quantity_max: args.quantity_max,
        price_min: args.price_min,
        price_max: args.price_max,
    };
    if args.sequential_order_ids {
        let scenario = synth::generate(&config, SequentialOrderIds::default())
            .context("generating the scenario")?;
        write_scenario(scenario, &args.out, verbosity)
    } else {
        let scenario = synth::generate(&config, codecs::ids::order_id_for)
            .context("generating the scenario")?;
        write_scenario(scenario, &args.out, verbosity)
    }
}

fn write_scenario<O: synth::OrderIds>(
    scenario: synth::Scenario<O>,
    out_path: &std::path::Path,
    verbosity: Verbosity,
) -> anyhow::Result<()> {
    let expected = scenario.expected();
    let mut header = Header::new(std::env::args().collect::<Vec<_>>().join(" "));
    header.records = Some(scenario.len());
    let to_stdout = out_path.as_os_str() == "-";
    let out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(out_path).with_context(|| format!("creating {}", out_path.display()))?,
        )
    };
    let progress = if to_stdout {
        Progress::hidden()
    } else {
        Progress::new(scenario.len(), "records", verbosity)
    };
    let mut writer = TrafficWriter::new(BufWriter::new(out), &header)?;
    for record in scenario {
        writer.write(&record?)?;
        if writer.written() % SYNTH_PROGRESS_EVERY_RECORDS == 0 {
            progress.set(writer.written());
        }
    }
    let written = writer.written();
    writer.finish()?.flush()?;
    progress.clear();
    if !to_stdout {
        println!(
            "{}: {written} records ({} fundings, {} replenishments, {} orders of which {} bound to fail for funds and {} for stock, {} amends, {} cancels)",
            out_path.display(),
            expected.fundings,
            expected.replenishments,
            expected.orders,
            expected.fail_funds,
            expected.fail_stock,
            expected.amends,
            expected.cancels
        );
    }
    Ok(())
}

/// The source commit: `TRADEFLOW_COMMIT` if set, else `git describe` of the
/// working directory, else `unknown`.
fn commit() -> String {
    if let Ok(commit) = std::env::var("TRADEFLOW_COMMIT") {
        return commit;
    }
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `YYYYMMDDTHHMMSSZ` for `time` in UTC (days-to-civil after Howard Hinnant).
fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56 UTC
        assert_eq!(utc_stamp(t), "20240229T123456Z");
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["loadgen", "synth", "--out", "x.jsonl", "--seed", "3", "-q"]);
        assert!(matches!(
            cli,
            Ok(Cli {
                quiet: true,
                command: Command::Synth(SynthArgs { seed: 3, .. })
            })
        ));
    }
}
