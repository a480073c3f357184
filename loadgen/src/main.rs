//! The `loadgen` command line: drives a tradeflow deployment (`run`,
//! `replay`) or a bare Kafka cluster (`ping`) with open-loop load, writes HDR
//! latency reports, captures and generates traffic files (`record`, `synth`)
//! and audits a deployment's topics (`audit`).
//!
//! Owns: argument parsing, what reaches the terminal, where files go and the
//! exit status. Must never: hold measuring, reading or auditing logic — that
//! lives in the library (`loadgen::session` is what `run` and `replay` call).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use audit::Guarantee;
use clap::{Args, Parser, Subcommand};
use codecs::topics::TopicNamespace;
use loadgen::audit_read::audit_namespace;
use loadgen::drive::{
    DriveConfig, DriveOptions, DRAIN_TIMEOUT_MS_DEFAULT, PENDING_ORDERS_MAX_DEFAULT,
};
use loadgen::interval::INTERVAL_MS_DEFAULT;
use loadgen::ping::{self, PingConfig, PingOptions};
use loadgen::progress::{Progress, Verbosity};
use loadgen::record::{RecordConfig, INPUT_TOPICS};
use loadgen::report::{Report, RunInfo};
use loadgen::session::{self, RunLabel, SessionConfig, SessionOutcome};
use loadgen::synth::{self, SequentialOrderIds, SynthConfig};
use loadgen::traffic::replay::{plan_replay, IdRewriter, Pace, Schedule};
use loadgen::traffic::{Header, TrafficReader, TrafficWriter};
use records::TimeBounds;
use registry::values::ValueFormats;
use tuning::ValueFormat;

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
    /// Drive a synthetic scenario open-loop into a running tradeflow, time
    /// every order to its read_committed outcome, write the report, then audit
    /// every flow topic of the namespace (exit non-zero on a violation).
    Run(RunArgs),
    /// Capture a range of topics (by default the flow's inputs) into a traffic
    /// file, each record at its Kafka timestamp.
    Record(RecordArgs),
    /// Send a traffic file into a running tradeflow at its original pace, sped
    /// up, or at a fixed rate, with ids rewritten so it never collides with
    /// earlier data; report and audit as `run` does.
    Replay(ReplayArgs),
    /// Read every flow topic of a namespace (read_committed) and check the
    /// invariants; exit non-zero on a violation.
    Audit(AuditArgs),
    /// Place orders through a running node's REST API from concurrent
    /// clients (one keep-alive connection each) at a fixed rate, and report
    /// accepted orders/s and request latency (corrected and uncorrected).
    Api(ApiArgs),
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The node's REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Orders per second over all clients (0: each client back to back).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How long to place orders, seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Accounts funded first and ordered for.
    #[arg(long, default_value_t = 100)]
    accounts: u64,
    /// Account ids start after this [default: from the clock, so runs never collide].
    #[arg(long)]
    account_base: Option<u64>,
    /// Instruments replenished first and ordered.
    #[arg(long, default_value_t = 10)]
    instruments: u64,
    /// Seconds to let the set-up be processed before the orders start.
    #[arg(long, default_value_t = 2)]
    settle_s: u64,
}

/// Where the cluster is and which deployment's topics to use.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:19092")]
    bootstrap: String,
    /// Topic namespace of the deployment: topics are `<NAME>.<logical name>`
    /// [default: none, the plain names].
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        hide_default_value = true
    )]
    namespace: String,
    /// Extra librdkafka property for every client, KEY=VALUE (repeatable).
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// A core map whose [kafka.security] section (TLS, SASL/SCRAM; the
    /// password from its file or environment variable) every client uses,
    /// as `tradeflow run --config` does. --property settings come after it.
    #[arg(long, value_name = "CORE_MAP")]
    kafka_config: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// Every client's properties: the core map's security settings, then
    /// `--property`.
    fn client_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        if let Some(path) = &self.kafka_config {
            if let Some(security) = tuning::KafkaSecurity::load(path)? {
                out = security.client_properties()?;
            }
        }
        out.extend(self.properties.iter().cloned());
        Ok(out)
    }

    fn namespace(&self) -> anyhow::Result<TopicNamespace> {
        TopicNamespace::new(&self.namespace).context("--namespace")
    }
}

/// The form of record values, as a core map's `[wire.value_format]` gives
/// it to `tradeflow run` (docs/SCHEMAS.md).
#[derive(Debug, Args)]
struct WireArgs {
    /// A Confluent-compatible schema registry (`tradeflow registry` or any
    /// other; http only). Records in Confluent's Avro form are read with the
    /// schema it holds under their id (each id asked once); topics written
    /// as Avro get their ids from it at start (registered, or found when
    /// already there, as `tradeflow run --schema-registry` does).
    #[arg(long, value_name = "URL")]
    schema_registry: Option<String>,
    /// Write records as `avro` (Confluent's form: magic 0, the registry's
    /// id, an Avro datum; needs --schema-registry) or `rkyv` (the default):
    /// FORMAT alone sets the seed topics (order.created, order.updated,
    /// account.funded, stock.replenished), TOPIC=FORMAT one topic by its
    /// logical name (repeatable; later ones win).
    #[arg(long = "value-format", value_name = "[TOPIC=]FORMAT", value_parser = parse_value_format)]
    value_formats: Vec<(Option<String>, ValueFormat)>,
}

impl WireArgs {
    /// The formats, with the Avro topics' schemas registered.
    fn formats(&self, namespace: &TopicNamespace) -> anyhow::Result<ValueFormats> {
        let mut avro: Vec<String> = Vec::new();
        for (topic, format) in &self.value_formats {
            let topics = match topic {
                Some(topic) => vec![topic.clone()],
                None => INPUT_TOPICS.map(String::from).to_vec(),
            };
            for topic in topics {
                avro.retain(|t| *t != topic);
                if *format == ValueFormat::Avro {
                    avro.push(topic);
                }
            }
        }
        let avro: Vec<&str> = avro.iter().map(String::as_str).collect();
        let formats = ValueFormats::new(self.schema_registry.as_deref(), namespace, &avro)
            .context("--value-format")?;
        for (topic, id) in formats.avro_topics() {
            println!("loadgen: writes {topic} as Avro (schema id {id})");
        }
        Ok(formats)
    }
}

fn parse_value_format(text: &str) -> Result<(Option<String>, ValueFormat), String> {
    let (topic, format) = match text.split_once('=') {
        Some((topic, format)) => (Some(topic.trim().to_string()), format.trim()),
        None => (None, text.trim()),
    };
    let format = ValueFormat::parse(&format.to_ascii_lowercase())
        .ok_or_else(|| format!("expected [TOPIC=]rkyv or [TOPIC=]avro, got '{text}'"))?;
    Ok((topic, format))
}

/// `--guarantee`: the workspace's one guarantee type, spelled as a core
/// map's `commit.guarantee` (and Kafka Streams) spells it.
fn guarantee_arg() -> impl clap::builder::TypedValueParser<Value = Guarantee> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Guarantee::ALL.map(Guarantee::as_str))
        .try_map(|text| text.parse::<Guarantee>())
}

/// How a run against the flow is measured, reported and audited.
#[derive(Debug, Args)]
struct SessionArgs {
    /// Directory for the report files [default: reports/<command>-<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the invariant audit at the end.
    #[arg(long)]
    no_audit: bool,
    /// The guarantee the flow runs under (what the audit holds it to).
    #[arg(long, default_value = "exactly-once", value_parser = guarantee_arg())]
    guarantee: Guarantee,
    /// How long to wait for outstanding outcomes after the last send, seconds.
    #[arg(long, default_value_t = DRAIN_TIMEOUT_MS_DEFAULT / 1_000)]
    drain_timeout_s: u64,
    /// Orders awaiting their outcome before the sender waits for one (a
    /// client's bounded pending orders; the wait counts in corrected latency).
    #[arg(long, default_value_t = PENDING_ORDERS_MAX_DEFAULT)]
    pending_max: usize,
    /// Length of one interval of the interval log, in milliseconds.
    #[arg(long, default_value_t = INTERVAL_MS_DEFAULT)]
    interval_ms: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    wire: WireArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Offered rate of every record (set-up, then orders, amends, cancels), per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// How long the order flow lasts after the set-up, seconds (orders = rate × duration).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// High 64 bits of every event id [default: from the clock, so runs never collide].
    #[arg(long)]
    run_id: Option<u64>,
    /// After the drive, read every account's balance and every instrument's
    /// stock through this engine's Order API (host:port, repeatable: each
    /// key from the engine that owns it) and have the audit compare them
    /// with the events.
    #[arg(long = "state-from")]
    state_from: Vec<String>,
    #[command(flatten)]
    mix: ScenarioMix,
}

#[derive(Debug, Args)]
struct RecordArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// A Confluent-compatible schema registry: records in Confluent's Avro
    /// form are captured as the events they hold (a replay writes them in
    /// the form it is told).
    #[arg(long, value_name = "URL")]
    schema_registry: Option<String>,
    /// Traffic file to write.
    #[arg(long)]
    out: PathBuf,
    /// Logical topic to capture (repeatable) [default: the flow's inputs:
    /// account.funded, stock.replenished, order.created, order.updated].
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Only records with a timestamp at or after this, Unix milliseconds
    /// [default: each partition's beginning].
    #[arg(long)]
    since_unix_ms: Option<i64>,
    /// Only records with a timestamp before this, Unix milliseconds
    /// [default: each partition's end when the capture starts].
    #[arg(long)]
    until_unix_ms: Option<i64>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("pace").args(["speedup", "rate"]))]
struct ReplayArgs {
    /// The traffic file.
    file: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    wire: WireArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Replay this many times faster than recorded.
    #[arg(long)]
    speedup: Option<f64>,
    /// Ignore recorded times: a fixed rate, records per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Key of the id rewriting [default: from the clock, so replays never collide].
    #[arg(long)]
    run_id: Option<u64>,
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// A Confluent-compatible schema registry: records in Confluent's Avro
    /// form are read with the schema it holds under their id.
    #[arg(long, value_name = "URL")]
    schema_registry: Option<String>,
    /// The guarantee the flow ran under.
    #[arg(long, default_value = "exactly-once", value_parser = guarantee_arg())]
    guarantee: Guarantee,
}

#[derive(Debug, Args)]
struct PingArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Topic to ping through, in the namespace (created if missing).
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
    #[arg(long, visible_alias = "out")]
    report_dir: Option<PathBuf>,
}

/// Who trades what, and how orders behave: the part of a synthetic scenario
/// that `synth` and `run` share.
#[derive(Debug, Args)]
struct ScenarioMix {
    /// Accounts, each funded once.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Account ids start after this (disjoint accounts for runs sharing a deployment).
    #[arg(long, default_value_t = 0)]
    account_base: u64,
    /// Instruments (SYM0001, …), each stocked once.
    #[arg(long, default_value_t = 100)]
    instruments: u64,
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
}

impl ScenarioMix {
    /// `base` with this mix.
    fn apply(&self, base: SynthConfig) -> SynthConfig {
        SynthConfig {
            accounts: self.accounts,
            account_base: self.account_base,
            instruments: self.instruments,
            account_skew: self.account_skew,
            instrument_skew: self.instrument_skew,
            amend_share: self.amend_share,
            cancel_share: self.cancel_share,
            fail_funds_share: self.fail_funds_share,
            fail_stock_share: self.fail_stock_share,
            ..base
        }
    }
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
    #[command(flatten)]
    mix: ScenarioMix,
    /// Order-flow records after the set-up (creates, amends, cancels).
    #[arg(long, default_value_t = 10_000)]
    orders: u64,
    /// Offered rate of all records, per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
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
        Command::Run(args) => run_command(args, verbosity),
        Command::Record(args) => record_command(args),
        Command::Replay(args) => replay_command(args, verbosity),
        Command::Audit(args) => audit_command(args),
        Command::Api(args) => api_command(args),
    }
}

fn api_command(args: ApiArgs) -> anyhow::Result<()> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let load = loadgen::api::ApiLoad {
        base_url: args.url.trim_end_matches('/').to_string(),
        clients: args.clients,
        rate_per_s: args.rate,
        duration: Duration::from_secs(args.duration_s),
        accounts: args.accounts.max(1),
        // Millions of ids apart per second: runs a day apart never overlap.
        account_base: args
            .account_base
            .unwrap_or((clock.as_secs() % 1_000_000) * 1_000_000),
        instruments: args.instruments.max(1),
        run_id: clock.as_nanos() as u64,
    };
    println!(
        "loadgen api: {} clients, {} orders/s offered for {} s against {}",
        load.clients, load.rate_per_s, args.duration_s, load.base_url
    );
    let report = loadgen::api::run(&load, Duration::from_secs(args.settle_s))
        .with_context(|| format!("the API at {}", load.base_url))?;
    print!("{report}");
    if report.failed > 0 {
        anyhow::bail!("{} request(s) failed", report.failed);
    }
    Ok(())
}

fn ping_command(args: PingArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    let report_dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| default_report_dir("ping"));
    let bootstrap = args.cluster.bootstrap.clone();
    let options = PingOptions {
        interval: Duration::from_millis(args.interval_ms),
        progress: Progress::new(0, "replies", verbosity),
    };
    let report = ping::run_with(
        &PingConfig {
            bootstrap: bootstrap.clone(),
            topic: args.cluster.namespace()?.physical(&args.topic),
            partitions: args.partitions,
            replication: args.replication,
            rate_per_s: args.rate,
            duration: Duration::from_secs(args.duration_s),
            client_properties: args.cluster.client_properties()?,
        },
        &options,
    )
    .with_context(|| format!("ping against {bootstrap}"))?;
    options.progress.clear();
    let run = RunInfo {
        tool: "loadgen ping".into(),
        command_line: std::env::args().collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        commit: session::commit(),
        host: session::host(),
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
        flow: None,
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
    let config = args.mix.apply(SynthConfig {
        seed: args.seed,
        run_id: args.run_id,
        orders: args.orders,
        rate_per_s: args.rate,
        quantity_max: args.quantity_max,
        price_min: args.price_min,
        price_max: args.price_max,
        ..SynthConfig::default()
    });
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

fn default_report_dir(command: &str) -> PathBuf {
    PathBuf::from(REPORTS_DIR_DEFAULT).join(format!("{command}-{}", utc_stamp(SystemTime::now())))
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// A run id from the clock: distinct for every run, so ids never collide.
fn clock_run_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

/// The session of `run` and `replay`: cluster, options, report directory, audit.
fn session_config(
    command: &str,
    cluster: &ClusterArgs,
    wire: &WireArgs,
    args: &SessionArgs,
    progress: Progress,
) -> anyhow::Result<SessionConfig> {
    let values = wire.formats(&cluster.namespace()?)?;
    Ok(SessionConfig {
        drive: DriveConfig {
            bootstrap: cluster.bootstrap.clone(),
            client_properties: cluster.client_properties()?,
            drain_timeout: Duration::from_secs(args.drain_timeout_s),
            namespace: cluster.namespace()?,
        },
        options: DriveOptions {
            pending_orders_max: args.pending_max.max(1),
            interval: Duration::from_millis(args.interval_ms),
            progress: std::sync::Arc::new(progress),
            values,
        },
        out_dir: args
            .out
            .clone()
            .unwrap_or_else(|| default_report_dir(command)),
        audit: (!args.no_audit).then_some(args.guarantee),
        // `run` sets its scenario's plan; a replayed recording has none.
        deserved: None,
        // A recording may carry poison inputs; a synthetic scenario never does.
        poison_sent: command == "replay",
        // `run` sets it from --state-from and its scenario's keys.
        state: None,
        label: RunLabel::here(&format!("loadgen {command}")),
    })
}

/// Prints a finished session and fails if an order went missing or the audit failed.
fn finish_session(config: &SessionConfig, outcome: &SessionOutcome) -> anyhow::Result<()> {
    config.options.progress.close();
    print!("{}", outcome.table);
    println!("report: {}", config.out_dir.display());
    match &outcome.audit {
        Some(audit) => {
            println!(
                "audit of namespace {}: read {} records ({} undecodable{})",
                config.drive.namespace,
                audit.records,
                audit.undecodable,
                if config.poison_sent {
                    ", dead-lettered by the stages"
                } else {
                    "; the scenario sent none"
                }
            );
            print!("{}", audit.report);
        }
        None => println!("audit: skipped (--no-audit)"),
    }
    let drive = &outcome.drive;
    anyhow::ensure!(
        drive.missing == 0,
        "{} of {} orders never reached an outcome",
        drive.missing,
        drive.orders_sent
    );
    anyhow::ensure!(
        drive.duplicate_outcomes == 0,
        "{} orders saw a second outcome",
        drive.duplicate_outcomes
    );
    anyhow::ensure!(
        drive.undecodable == 0,
        "{} records on the outcome topics are not events",
        drive.undecodable
    );
    if let Some(audit) = &outcome.audit {
        anyhow::ensure!(
            config.poison_sent || audit.undecodable == 0,
            "{} records of the flow's topics are not events, and the scenario sent none",
            audit.undecodable
        );
    }
    anyhow::ensure!(outcome.passed(), "the audit found violations");
    Ok(())
}

fn run_command(args: RunArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    let config = args.mix.apply(SynthConfig {
        seed: args.seed,
        run_id: Some(args.run_id.unwrap_or_else(clock_run_id)),
        orders: args.rate.saturating_mul(args.duration_s),
        rate_per_s: args.rate,
        ..SynthConfig::default()
    });
    let (records, schedule) = session::synth_schedule(&config).context("the scenario")?;
    let progress = Progress::new(records, "records", verbosity);
    let mut session = session_config("run", &args.cluster, &args.wire, &args.session, progress)?;
    if session.audit.is_some() {
        session.deserved = Some(
            loadgen::synth::deserved_outcomes(&config, codecs::ids::order_id_for)
                .context("the scenario's plan")?,
        );
        if !args.state_from.is_empty() {
            let (accounts, skus) =
                loadgen::state::scenario_keys(&config).context("the scenario's keys")?;
            session.state = Some(loadgen::session::StateSource {
                addrs: args.state_from.clone(),
                accounts,
                skus,
            });
        }
    }
    let outcome = session::run_session(&session, schedule).with_context(|| {
        format!(
            "running against {} (namespace {})",
            session.drive.bootstrap, session.drive.namespace
        )
    })?;
    finish_session(&session, &outcome)
}

fn record_command(args: RecordArgs) -> anyhow::Result<()> {
    let namespace = args.cluster.namespace()?;
    let topics = if args.topics.is_empty() {
        INPUT_TOPICS.map(String::from).to_vec()
    } else {
        args.topics.clone()
    };
    let values = ValueFormats::new(args.schema_registry.as_deref(), &namespace, &[])?;
    let config = RecordConfig {
        bootstrap: args.cluster.bootstrap.clone(),
        client_properties: args.cluster.client_properties()?,
        source: format!(
            "loadgen record: {} namespace {namespace} topics {} since {} until {}",
            args.cluster.bootstrap,
            topics.join(","),
            args.since_unix_ms
                .map_or_else(|| "the beginning".to_string(), |ms| format!("{ms} ms")),
            args.until_unix_ms
                .map_or_else(|| "the end".to_string(), |ms| format!("{ms} ms")),
        ),
        namespace,
        topics,
        bounds: TimeBounds {
            since_unix_ms: args.since_unix_ms,
            until_unix_ms: args.until_unix_ms,
        },
        values,
    };
    let file =
        File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (captured, out) = loadgen::record::capture(&config, BufWriter::new(file))
        .with_context(|| format!("capturing from {}", config.bootstrap))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let per_topic: Vec<String> = captured
        .per_topic
        .iter()
        .map(|(topic, n)| format!("{n} {topic}"))
        .collect();
    println!(
        "{}: {} records over {:.3} s ({}; {} not events, kept raw)",
        args.out.display(),
        captured.records,
        captured.span_ns as f64 / 1e9,
        per_topic.join(", "),
        captured.raw
    );
    Ok(())
}

fn replay_command(args: ReplayArgs, verbosity: Verbosity) -> anyhow::Result<()> {
    let pace = match (args.speedup, args.rate) {
        (Some(factor), _) => Pace::Speedup(factor),
        (None, Some(rate)) => Pace::Rate(rate),
        (None, None) => Pace::Original,
    };
    let schedule = Schedule::new(pace)?;
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let reader = TrafficReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", args.file.display()))?;
    let records = reader.header().records.unwrap_or(0);
    let run_id = args.run_id.unwrap_or_else(clock_run_id);
    let planned = plan_replay(
        reader,
        schedule,
        IdRewriter::with_services_order_ids(run_id),
    );
    let progress = Progress::new(records, "records", verbosity);
    let session = session_config("replay", &args.cluster, &args.wire, &args.session, progress)?;
    println!(
        "replaying {} ({pace:?}, ids rewritten under run id {run_id:#x}) into namespace {}",
        args.file.display(),
        session.drive.namespace
    );
    let outcome = session::run_session(&session, planned).with_context(|| {
        format!(
            "replaying into {} (namespace {})",
            session.drive.bootstrap, session.drive.namespace
        )
    })?;
    finish_session(&session, &outcome)
}

fn audit_command(args: AuditArgs) -> anyhow::Result<()> {
    let namespace = args.cluster.namespace()?;
    let audit = audit_namespace(
        &args.cluster.bootstrap,
        &args.cluster.client_properties()?,
        &namespace,
        &ValueFormats::new(args.schema_registry.as_deref(), &namespace, &[])?,
        args.guarantee,
    )
    .with_context(|| {
        format!(
            "reading namespace {namespace} from {}",
            args.cluster.bootstrap
        )
    })?;
    println!(
        "read {} records of namespace {namespace} ({} undecodable, dead-lettered by the stages)",
        audit.records, audit.undecodable
    );
    print!("{}", audit.report);
    anyhow::ensure!(audit.report.passed(), "the audit found violations");
    Ok(())
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
        let cli = Cli::try_parse_from([
            "loadgen",
            "run",
            "--namespace",
            "lg-1",
            "--rate",
            "200",
            "--out",
            "r",
            "--no-audit",
        ]);
        let Ok(Cli {
            command: Command::Run(run),
            ..
        }) = cli
        else {
            panic!("run did not parse: {cli:?}");
        };
        assert_eq!(run.cluster.namespace, "lg-1");
        assert!(run.session.no_audit);
        assert_eq!(run.rate, 200);
        let cli = Cli::try_parse_from(["loadgen", "replay", "t.jsonl", "--speedup", "2"]);
        assert!(matches!(
            cli,
            Ok(Cli {
                command: Command::Replay(ReplayArgs {
                    speedup: Some(_),
                    rate: None,
                    ..
                }),
                ..
            })
        ));
    }

    #[test]
    fn value_formats_apply_to_the_seed_topics_or_one_topic_and_avro_needs_a_registry() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "run",
            "--value-format",
            "avro",
            "--value-format",
            "order-service.order.updated=rkyv",
        ]);
        let Ok(Cli {
            command: Command::Run(run),
            ..
        }) = cli
        else {
            panic!("run did not parse: {cli:?}");
        };
        assert_eq!(
            run.wire.value_formats,
            [
                (None, ValueFormat::Avro),
                (
                    Some(codecs::topics::ORDER_UPDATED.to_string()),
                    ValueFormat::Rkyv
                )
            ]
        );
        // No registry: refused before anything is sent.
        let error = run
            .wire
            .formats(&TopicNamespace::none())
            .expect_err("avro without a registry")
            .to_string();
        assert!(error.contains("--value-format"), "{error}");
        assert!(Cli::try_parse_from(["loadgen", "run", "--value-format", "json"]).is_err());
        let rkyv = WireArgs {
            schema_registry: None,
            value_formats: vec![(None, ValueFormat::Rkyv)],
        };
        assert_eq!(
            rkyv.formats(&TopicNamespace::none())
                .expect("rkyv needs no registry")
                .avro_topics()
                .count(),
            0
        );
    }

    #[test]
    fn a_replay_takes_one_pace_and_a_namespace_must_be_a_topic_prefix() {
        assert!(
            Cli::try_parse_from(["loadgen", "replay", "t", "--speedup", "2", "--rate", "9"])
                .is_err()
        );
        let cli = Cli::try_parse_from(["loadgen", "audit", "--namespace", "a b"]);
        let Ok(Cli {
            command: Command::Audit(audit),
            ..
        }) = cli
        else {
            panic!("audit did not parse: {cli:?}");
        };
        assert!(audit.cluster.namespace().is_err());
        assert!(matches!(
            Cli::try_parse_from([
                "loadgen",
                "record",
                "--out",
                "x",
                "--topic",
                "t",
                "--property",
                "a=b"
            ]),
            Ok(Cli {
                command: Command::Record(RecordArgs { .. }),
                ..
            })
        ));
    }
}
