//! The `tradeflow` command line: the engine and its services, and the embedded
//! demo a newcomer runs first.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use codecs::topics::TopicNamespace;
use engine::deployment::{plan_node, prepare_topics, FlowTopics, KafkaConnection};
use engine::runtime::{stop_on_signals, Engine};
#[cfg(feature = "demo")]
use rdkafka::mocking::MockCluster;
use services::deployment::{default_application_id, Topology};
use services::flow::{ServiceSet, TradeFlow};
use services::observe::{self, logging, logging::LogFormat, Observability};
use tuning::{Machine, NodeTuning};

/// Where REST (the Order API and the observability routes) listens by default.
const DEFAULT_REST_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Where a process without the API serves /metrics unless told: any free port.
const ANY_LOOPBACK_PORT: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Default `fetch.wait.max.ms` of the shards' consumers (see `--fetch-wait-max-ms`).
const FETCH_WAIT_MAX_MS_DEFAULT: u32 = 100;
/// `fetch.wait.max.ms` on librdkafka's mock cluster (the demo).
#[cfg(feature = "demo")]
const MOCK_FETCH_WAIT_MAX_MS: u32 = 5;
/// Exit status of `run` when a shard stopped without its final commit (the
/// commit failed and was aborted, or the shard had failed for good).
const EXIT_SHUTDOWN_ABORTED: i32 = 2;
/// Exit status of `run` when the shutdown deadline passed before the final
/// commit completed.
const EXIT_SHUTDOWN_DEADLINE: i32 = 3;

/// A low-latency, thread-per-core trade-flow engine on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "tradeflow", version, about, long_about = None)]
struct Cli {
    /// Log lines as text, or as JSON objects for central aggregation
    /// (Fluentd, Elastic); RUST_LOG picks what is logged.
    #[arg(long, global = true, default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read every topic of the flow as a read_committed consumer and check the
    /// invariants: one terminal outcome per accepted order, cash and stock
    /// conserved, nothing negative, no duplicate outputs under exactly-once.
    /// Exits non-zero on any violation.
    Audit {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// The guarantee the run was made under.
        #[arg(long, default_value = "exactly-once", value_parser = guarantee_arg())]
        guarantee: tuning::Guarantee,
        /// The deployment's topic namespace (as given to `run`).
        #[arg(long, default_value = "", value_parser = parse_namespace)]
        namespace: TopicNamespace,
        /// Extra librdkafka property, KEY=VALUE (repeatable).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// A core map whose [kafka.security] section the reader uses (TLS,
        /// SASL/SCRAM); --property settings come after it.
        #[arg(long, value_name = "CORE_MAP")]
        kafka_config: Option<PathBuf>,
        /// A Confluent-compatible schema registry: records in Confluent's
        /// Avro form (topics a core map sets to "avro") are read with the
        /// schema it holds under their id.
        #[arg(long, value_name = "URL")]
        schema_registry: Option<String>,
    },
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
        /// Topic namespace: every flow topic is `<NAMESPACE>.<name>`, so
        /// several deployments (or test runs) share a cluster apart. Empty:
        /// the seed's topic names.
        #[arg(long, default_value = "", value_parser = parse_namespace)]
        namespace: TopicNamespace,
        /// Kafka Streams' application.id: consumer group, changelog and
        /// transactional-id prefix. Defaults to "<NAMESPACE>-" (when one is
        /// given) followed by "tradeflow", or
        /// "tradeflow-<services>" when not all three run here.
        #[arg(long)]
        application_id: Option<String>,
        /// Replication factor of topics tradeflow creates (-1: broker default).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        replication: i32,
        /// Extra librdkafka property for every client, KEY=VALUE (repeatable),
        /// applied after the core map's [kafka.security] settings. Put
        /// passwords in [kafka.security] (password_file, password_env), not
        /// here: a command line is visible to every user of the host.
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Producer linger.ms: 0 for the lowest latency.
        #[arg(long, default_value_t = 0)]
        linger_ms: u32,
        /// Consumer fetch.wait.max.ms: how long the broker holds a fetch
        /// that found nothing. Records arriving answer a held fetch at once,
        /// so a longer hold costs no latency; it spares an idle node and
        /// its broker a fetch round trip every few milliseconds per
        /// consumer (docs/PERFORMANCE.md, idle cost).
        #[arg(long, default_value_t = FETCH_WAIT_MAX_MS_DEFAULT)]
        fetch_wait_max_ms: u32,
        /// Where the REST server listens: the Order API, /metrics,
        /// /health/live, /health/ready and /reports/hdr [default:
        /// 127.0.0.1:8080]. With --no-api it serves the observability routes
        /// alone, on any free port unless given (several processes of one
        /// host must not collide; the address is printed).
        #[arg(long)]
        rest_addr: Option<std::net::SocketAddr>,
        /// Where the Order API's gRPC server listens.
        #[arg(long, default_value = "127.0.0.1:50051")]
        grpc_addr: std::net::SocketAddr,
        /// Run no API on this node (processing only; /metrics and /health/*
        /// are still served on --rest-addr).
        #[arg(long)]
        no_api: bool,
        /// The Order API's token file (overrides the core map's
        /// [api.auth] tokens_file): bearer tokens, their accounts and roles;
        /// reloaded on SIGHUP. Without one the API is unauthenticated.
        #[arg(long)]
        api_tokens: Option<PathBuf>,
        /// TLS certificate chain (PEM) for REST and gRPC (overrides
        /// [api.tls] cert_file); needs --api-tls-key.
        #[arg(long, requires = "api_tls_key")]
        api_tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM; overrides [api.tls] key_file).
        #[arg(long, requires = "api_tls_cert")]
        api_tls_key: Option<PathBuf>,
        /// Where the engine's HDR latency report (percentile table and .hgrm
        /// files) is written at shutdown; default reports/engine/<unix time>.
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// After SIGINT or SIGTERM, how long the shutdown (API stop, final
        /// commit, close) may take. Exits 0 once committed, 2 when the final
        /// commit failed and was aborted, 3 when this deadline passed first.
        #[arg(long, default_value_t = 10.0)]
        shutdown_deadline_s: f64,
        /// A Confluent-compatible schema registry (`tradeflow registry` or
        /// any other, http only): at start, register the Avro value schema
        /// of every topic this node writes under `<topic>-value`, and refuse
        /// to start if the registry finds one incompatible (docs/SCHEMAS.md).
        #[arg(long, value_name = "URL")]
        schema_registry: Option<String>,
    },
    /// Print the deployment's plan: every topic it uses (flow topics,
    /// dead-letter topics, compacted changelogs) and each workload's
    /// least-privilege Kafka ACLs, as text or as Strimzi KafkaTopic and
    /// KafkaUser resources (deploy/strimzi/generated/ holds them).
    Plan {
        /// A core map of the deployment: its ownership.partitions is every
        /// topic's partition count.
        #[arg(long, default_value = "tuning/one-core.toml")]
        config: PathBuf,
        /// Topic namespace (as given to `run`).
        #[arg(long, default_value = "", value_parser = parse_namespace)]
        namespace: TopicNamespace,
        /// node: one process per node runs the whole flow and the API;
        /// per-service: one workload per service, the order workload serves
        /// the API.
        #[arg(long, default_value = "node")]
        topology: Topology,
        /// Replication factor of every topic (-1: the cluster's default).
        #[arg(long, default_value_t = 3, allow_hyphen_values = true)]
        replication: i32,
        /// The Strimzi Kafka cluster the resources belong to
        /// (the strimzi.io/cluster label).
        #[arg(long, default_value = "tradeflow")]
        cluster: String,
        /// What to print.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        emit: PlanFormat,
    },
    /// Print the least-privilege Kafka ACLs of the deployment's processes,
    /// derived from its own topic plan (the same as `plan`): read inputs,
    /// write outputs and dead-letter topics, its consumer and restore groups,
    /// its transactional-id prefix, its changelogs, and Create where it
    /// creates its topics. As kafka-acls.sh commands, Strimzi KafkaUser
    /// resources, or text.
    Acls {
        /// A core map of the deployment: its ownership.partitions is every
        /// topic's partition count, and its [kafka.security] username the
        /// principal when one workload is chosen with --workload.
        #[arg(long, default_value = "tuning/one-core.toml")]
        config: PathBuf,
        /// Topic namespace (as given to `run`).
        #[arg(long, default_value = "", value_parser = parse_namespace)]
        namespace: TopicNamespace,
        /// node: one process runs the whole flow and the API; per-service:
        /// one workload per service, the order workload serves the API.
        #[arg(long, default_value = "node")]
        topology: Topology,
        /// Only this workload: node, or order, payment, inventory.
        #[arg(long)]
        workload: Option<String>,
        /// A workload's Kafka principal, WORKLOAD=User:NAME (repeatable).
        /// Default: User:<the core map's kafka.security.username> for the one
        /// chosen workload, else User:<application id> (the KafkaUser name).
        #[arg(long = "principal", value_parser = parse_property)]
        principals: Vec<(String, String)>,
        /// The processes create missing topics at start-up (grants Create on
        /// exactly those topics); leave out when the topics are made first.
        #[arg(long)]
        creates_topics: bool,
        /// The Strimzi Kafka cluster (the strimzi.io/cluster label).
        #[arg(long, default_value = "tradeflow")]
        cluster: String,
        /// What to print.
        #[arg(long, value_enum, default_value_t = AclFormat::KafkaAcls)]
        emit: AclFormat,
    },
    /// Inspect or replay dead-lettered records.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Serve the Confluent Schema Registry REST API (Avro), durable in a
    /// compacted Kafka topic, until SIGINT or SIGTERM (docs/SCHEMAS.md).
    Registry {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// Where the REST API listens (port 0: any free port; the bound
        /// address is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// The compacted topic holding the schemas.
        #[arg(long, default_value = registry::DEFAULT_TOPIC)]
        topic: String,
        /// Replication factor if the topic is created (-1: broker default).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        replication: i32,
        /// Extra librdkafka property, KEY=VALUE (repeatable).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    /// Run the embedded quick-start: an in-process Kafka (librdkafka's mock
    /// cluster) with a few seconds of open-loop load, then a latency report.
    /// Needs nothing installed but Rust.
    Demo {
        /// Offered rate in records per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to send orders, in seconds.
        #[arg(long, default_value_t = 5)]
        duration_s: u64,
        /// Processing guarantee.
        #[arg(long, default_value = "exactly-once", value_parser = guarantee_arg())]
        guarantee: tuning::Guarantee,
        /// Kafka Streams' commit.interval.ms: the longest gap between commits.
        #[arg(long, default_value_t = 100)]
        commit_interval_ms: u32,
        /// Interval policy: also commit as soon as a shard drains its input.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        commit_on_drain: bool,
        /// When shards commit: `adaptive` (as soon as drained, rate-limited;
        /// the core maps' default) or `interval` (Kafka Streams' rule).
        #[arg(long, value_enum, default_value_t = CommitPolicyArg::Adaptive)]
        commit_policy: CommitPolicyArg,
        /// Where the demo's own schema registry (the Confluent Schema
        /// Registry REST API, as `tradeflow registry` serves it) listens while
        /// the demo runs; port 0 picks a free one, printed at start.
        #[arg(long, default_value = "127.0.0.1:0")]
        schema_registry_listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    match cli.command {
        Command::Demo {
            rate,
            duration_s,
            guarantee,
            commit_interval_ms,
            commit_on_drain,
            commit_policy,
            schema_registry_listen,
        } => demo(
            rate,
            duration_s,
            schema_registry_listen,
            tuning::CommitPolicy {
                interval_ms: commit_interval_ms,
                on_drain: commit_on_drain,
                guarantee,
                timing: match commit_policy {
                    CommitPolicyArg::Adaptive => tuning::CommitTiming::Adaptive,
                    CommitPolicyArg::Interval => tuning::CommitTiming::Interval,
                },
                ..tuning::CommitPolicy::default()
            },
        ),
        Command::Audit {
            bootstrap,
            guarantee,
            namespace,
            properties,
            kafka_config,
            schema_registry,
        } => {
            let properties = with_security(kafka_config.as_deref(), properties)?;
            let values =
                registry::values::ValueFormats::new(schema_registry.as_deref(), &namespace, &[])?;
            let report = audit_topics(&bootstrap, &properties, &namespace, &values, guarantee)?;
            print!("{report}");
            if !report.passed() {
                anyhow::bail!("the audit found violations");
            }
            Ok(())
        }
        Command::Run {
            config,
            bootstrap,
            services,
            namespace,
            application_id,
            replication,
            properties,
            linger_ms,
            fetch_wait_max_ms,
            rest_addr,
            grpc_addr,
            no_api,
            api_tokens,
            api_tls_cert,
            api_tls_key,
            report_dir,
            shutdown_deadline_s,
            schema_registry,
        } => {
            let shutdown_deadline = Duration::try_from_secs_f64(shutdown_deadline_s)
                .context("--shutdown-deadline-s must be a non-negative number of seconds")?;
            let application_id =
                application_id.unwrap_or_else(|| default_application_id(&namespace, services));
            let api = (!no_api).then_some(grpc_addr);
            let rest_addr = rest_addr.unwrap_or(if no_api {
                ANY_LOOPBACK_PORT
            } else {
                DEFAULT_REST_ADDR
            });
            let report_dir = report_dir.unwrap_or_else(default_report_dir);
            // Every client this node makes (shards, restore, topics, API)
            // gets the core map's security settings.
            let properties = with_security(Some(&config), properties)?;
            run(
                &config,
                services,
                KafkaConnection {
                    bootstrap,
                    application_id,
                    client_properties: properties,
                    linger_ms,
                    fetch_wait_max_ms,
                    namespace,
                },
                replication,
                rest_addr,
                api,
                ApiSecurityArgs {
                    tokens_file: api_tokens,
                    tls: api_tls_cert.zip(api_tls_key),
                },
                &report_dir,
                shutdown_deadline,
                schema_registry.as_deref(),
            )
        }
        Command::Dlq { action } => dlq_command(action),
        Command::Registry {
            bootstrap,
            listen,
            topic,
            replication,
            properties,
        } => registry_command(
            registry::StoreConfig {
                bootstrap,
                topic,
                replication,
                properties,
            },
            listen,
        ),
        Command::Acls {
            config,
            namespace,
            topology,
            workload,
            principals,
            creates_topics,
            cluster,
            emit,
        } => acls_command(AclsArgs {
            config,
            namespace,
            topology,
            workload,
            principals,
            creates_topics,
            cluster,
            emit,
        }),
        Command::Plan {
            config,
            namespace,
            topology,
            replication,
            cluster,
            emit,
        } => {
            let tuning = NodeTuning::load(&config)?;
            let partitions = i32::try_from(tuning.ownership().partitions)
                .context("ownership.partitions does not fit a Kafka partition count")?;
            let plan = services::deployment::plan(
                &namespace,
                topology,
                partitions,
                replication,
                tuning.state().changelog_layout,
            );
            match emit {
                PlanFormat::Text => print!("{}", services::deployment::plan_text(&plan)),
                PlanFormat::Strimzi => {
                    print!("{}", services::deployment::strimzi_yaml(&plan, &cluster)?)
                }
            }
            Ok(())
        }
    }
}

/// Registers the Avro value schema of every topic this node writes: the
/// stages' outputs and, with the API, what the API publishes. Any refusal
/// stops the start with the subject and the registry's reason.
fn register_schemas(
    url: &str,
    namespace: &TopicNamespace,
    outputs: &[&'static str],
    api: bool,
) -> anyhow::Result<Vec<registry::client::Registered>> {
    let mut written = outputs.to_vec();
    if api {
        written.extend(services::api::PUBLISHED_TOPICS);
    }
    let registered = registry::client::register_value_schemas(url, namespace, &written)
        .context("the schemas this node writes were not accepted; not starting")?;
    for r in &registered {
        tracing::info!(subject = %r.subject, id = r.id, "schema registered");
    }
    Ok(registered)
}

/// `tradeflow acls --emit` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AclFormat {
    /// kafka-acls.sh commands (BOOTSTRAP and ADMIN_CONFIG from the environment).
    KafkaAcls,
    /// Strimzi KafkaUser resources.
    Strimzi,
    /// For people.
    Text,
}

struct AclsArgs {
    config: PathBuf,
    namespace: TopicNamespace,
    topology: Topology,
    workload: Option<String>,
    principals: Vec<(String, String)>,
    creates_topics: bool,
    cluster: String,
    emit: AclFormat,
}

fn acls_command(args: AclsArgs) -> anyhow::Result<()> {
    let tuning = NodeTuning::load(&args.config)?;
    let security = tuning::KafkaSecurity::load(&args.config)?;
    let partitions = i32::try_from(tuning.ownership().partitions)
        .context("ownership.partitions does not fit a Kafka partition count")?;
    let creation = if args.creates_topics {
        services::deployment::TopicCreation::ByProcesses
    } else {
        services::deployment::TopicCreation::Prepared
    };
    let mut plan = services::deployment::plan_access(
        &args.namespace,
        args.topology,
        partitions,
        -1,
        creation,
        tuning.state().changelog_layout,
    );
    if let Some(name) = &args.workload {
        let names: Vec<String> = plan.workloads.iter().map(|w| w.name.clone()).collect();
        plan.workloads.retain(|w| &w.name == name);
        anyhow::ensure!(
            !plan.workloads.is_empty(),
            "--workload {name}: the {} topology has workloads {}",
            args.topology,
            names.join(", ")
        );
    }
    for (workload, _) in &args.principals {
        anyhow::ensure!(
            plan.workloads.iter().any(|w| &w.name == workload),
            "--principal {workload}=...: no such workload in this plan"
        );
    }
    let username = security.and_then(|s| s.sasl).map(|s| s.username);
    let single = plan.workloads.len() == 1;
    let principal = |w: &services::deployment::Workload| -> String {
        if let Some((_, p)) = args.principals.iter().find(|(name, _)| *name == w.name) {
            return p.clone();
        }
        match (&username, single) {
            (Some(user), true) => format!("User:{user}"),
            _ => format!("User:{}", w.application_id),
        }
    };
    match args.emit {
        AclFormat::KafkaAcls => print!(
            "{}",
            services::deployment::kafka_acls_script(&plan, &principal)
        ),
        AclFormat::Strimzi => print!(
            "{}",
            services::deployment::strimzi_users_yaml(&plan, &args.cluster)?
        ),
        AclFormat::Text => print!("{}", services::deployment::plan_text(&plan)),
    }
    Ok(())
}

/// `tradeflow registry`: reads the schemas log, serves until a signal.
fn registry_command(
    config: registry::StoreConfig,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    stop_on_signals(&stop).context("installing the signal handlers")?;
    serve_registry(config, listen, stop, |bound| {
        // Scripts read this line for the address (a port of 0 picks one).
        println!("tradeflow registry listening on http://{bound}");
    })
}

/// Serves the schema registry until `stop` is set; `bound` is told the
/// address once it listens.
fn serve_registry(
    config: registry::StoreConfig,
    listen: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bound: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    // A small runtime of its own: the registry is a control-plane service,
    // it must not take cores from an engine on the same node.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the registry's runtime")?;
    runtime.block_on(async move {
        let shutdown = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let (address, server) = registry::bind(&config, listen, shutdown)
            .await
            .with_context(|| format!("starting the registry on topic {}", config.topic))?;
        bound(address);
        tracing::info!(%address, topic = %config.topic, "schema registry serving");
        server.await.context("serving the registry")
    })
}

/// The schema registry of `tradeflow demo`: `tradeflow registry` on the
/// demo's in-process cluster, on a thread of its own, stopped when dropped.
#[cfg(feature = "demo")]
struct EmbeddedRegistry {
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

#[cfg(feature = "demo")]
impl EmbeddedRegistry {
    fn start(bootstrap: &str, listen: std::net::SocketAddr) -> anyhow::Result<Self> {
        let config = registry::StoreConfig {
            bootstrap: bootstrap.to_owned(),
            topic: registry::DEFAULT_TOPIC.to_owned(),
            replication: 1,
            properties: Vec::new(),
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("schema-registry".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    serve_registry(config, listen, stop, move |address| {
                        let _ = bound_tx.send(address);
                    })
                }
            })
            .context("starting the schema registry's thread")?;
        match bound_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => Ok(EmbeddedRegistry {
                url: format!("http://{address}"),
                stop,
                thread: Some(thread),
            }),
            // The thread ended (it says why) or never bound in time.
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(match thread.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) | Err(_) => {
                        anyhow::anyhow!("the schema registry did not start listening in 30 s")
                    }
                })
            }
        }
    }
}

#[cfg(feature = "demo")]
impl Drop for EmbeddedRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if let Ok(Err(e)) = thread.join() {
                tracing::warn!(error = %e, "the demo's schema registry stopped with an error");
            }
        }
    }
}

/// The core map's `[kafka.security]` client properties (the password read
/// now from its file or variable), followed by `--property` settings.
fn with_security(
    config: Option<&std::path::Path>,
    properties: Vec<(String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(path) = config {
        if let Some(security) = tuning::KafkaSecurity::load(path)? {
            tracing::info!(
                protocol = security.protocol.name(),
                sasl = ?security.sasl.as_ref().map(|s| (s.mechanism.name(), &s.username)),
                "Kafka clients use the core map's [kafka.security]"
            );
            out = security.client_properties()?;
        }
    }
    out.extend(properties);
    Ok(out)
}

/// `tradeflow plan --emit` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PlanFormat {
    /// Topics and ACLs, for people.
    Text,
    /// Strimzi KafkaTopic and KafkaUser resources.
    Strimzi,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Show a topic's dead letters with their causes, decoded where possible.
    List {
        /// The source topic (or its `.dlq` topic).
        topic: String,
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// A core map whose [kafka.security] section the clients use.
        #[arg(long, value_name = "CORE_MAP")]
        kafka_config: Option<PathBuf>,
        /// One JSON object per record instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send chosen dead letters back to their source topic after a fix.
    Replay {
        /// The source topic (or its `.dlq` topic).
        topic: String,
        #[arg(long, default_value = "127.0.0.1:19092")]
        bootstrap: String,
        /// A core map whose [kafka.security] section the clients use.
        #[arg(long, value_name = "CORE_MAP")]
        kafka_config: Option<PathBuf>,
        /// Only dead letters whose reason contains this text.
        #[arg(long)]
        reason_contains: Option<String>,
        /// Only dead letters of this error class (user-data, external, internal).
        #[arg(long)]
        class: Option<String>,
        /// Only these dead letters, as PARTITION:OFFSET (repeatable).
        #[arg(long = "offset")]
        offsets: Vec<String>,
        /// Say what would be replayed, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `--guarantee`: the workspace's one guarantee type, spelled as a core
/// map's `commit.guarantee` (and Kafka Streams) spells it.
fn guarantee_arg() -> impl clap::builder::TypedValueParser<Value = tuning::Guarantee> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(tuning::Guarantee::ALL.map(tuning::Guarantee::as_str))
        .try_map(|text| text.parse::<tuning::Guarantee>())
}

/// `demo --commit-policy` values (the core map's `commit.policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CommitPolicyArg {
    Adaptive,
    Interval,
}

/// Reads the flow's topics to their ends and audits what they hold.
fn audit_topics(
    bootstrap: &str,
    properties: &[(String, String)],
    namespace: &TopicNamespace,
    values: &registry::values::ValueFormats,
    guarantee: tuning::Guarantee,
) -> anyhow::Result<services::audit::AuditReport> {
    let mut values = values.reader();
    let mut audit = services::audit::Audit::new(guarantee);
    let mut undecodable = 0u64;
    let topics = namespace.all();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let read = engine::kafka::read_to_end(bootstrap, properties, &topics, &mut |record| match (
        namespace.flow_topic(record.topic),
        record.payload.map(|p| values.decode(p)),
    ) {
        (Some(topic), Some(Ok(event))) => audit.record(topic, &event),
        // Bad input records sit in the input topics too; the stages sent
        // them to dead-letter topics and they are no part of the flow.
        _ => undecodable += 1,
    })
    .with_context(|| format!("reading the flow's topics from {bootstrap}"))?;
    println!("read {read} records ({undecodable} undecodable, dead-lettered by the stages)");
    Ok(audit.finish())
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
}

fn default_report_dir() -> PathBuf {
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("reports/engine").join(unix_s.to_string())
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

fn parse_namespace(text: &str) -> Result<TopicNamespace, String> {
    TopicNamespace::new(text).map_err(|e| e.to_string())
}

fn dlq_command(action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List {
            topic,
            bootstrap,
            kafka_config,
            json,
        } => {
            let properties = with_security(kafka_config.as_deref(), Vec::new())?;
            let letters = services::dlq::list(&bootstrap, &properties, &topic)?;
            for letter in &letters {
                if json {
                    println!("{}", letter.to_json());
                } else {
                    print!("{letter}");
                }
            }
            if !json {
                println!(
                    "{} dead letter(s) in {}",
                    letters.len(),
                    services::dlq::dlq_topic_of(&topic)
                );
            }
            Ok(())
        }
        DlqAction::Replay {
            topic,
            bootstrap,
            kafka_config,
            reason_contains,
            class,
            offsets,
            dry_run,
        } => {
            let properties = with_security(kafka_config.as_deref(), Vec::new())?;
            let filter = services::dlq::ReplayFilter {
                reason_contains,
                class,
                offsets: offsets
                    .iter()
                    .map(|o| services::dlq::parse_offset(o))
                    .collect::<Result<_, _>>()?,
            };
            let summary = services::dlq::replay(&bootstrap, &properties, &topic, &filter, dry_run)?;
            for (target, partition, dlq_partition, dlq_offset) in &summary.targets {
                println!("{dlq_partition}:{dlq_offset} -> {target} partition {partition}");
            }
            println!(
                "{} of {} dead letter(s) {}",
                summary.targets.len(),
                summary.considered,
                if dry_run {
                    "would be replayed (dry run)"
                } else {
                    "replayed"
                }
            );
            Ok(())
        }
    }
}

/// The Order API's security options from the command line; each one
/// overrides its key in the core map's `[api]`.
struct ApiSecurityArgs {
    tokens_file: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
}

impl ApiSecurityArgs {
    /// The command line over the core map.
    fn apply(self, map: &tuning::ApiSection, config: &mut services::api::ApiConfig) {
        let metrics = match map.auth.as_ref().map(|auth| auth.metrics) {
            Some(tuning::ApiMetricsAccess::Token) => services::api::MetricsAccess::Token,
            _ => services::api::MetricsAccess::Open,
        };
        config.auth = self
            .tokens_file
            .or_else(|| map.auth.as_ref().map(|auth| auth.tokens_file.clone()))
            .map(|tokens_file| services::api::AuthConfig {
                tokens_file,
                metrics,
            });
        config.tls = self
            .tls
            .or_else(|| {
                map.tls
                    .as_ref()
                    .map(|tls| (tls.cert_file.clone(), tls.key_file.clone()))
            })
            .map(|(cert_file, key_file)| services::api::TlsConfig {
                cert_file,
                key_file,
            });
    }
}

#[allow(clippy::too_many_arguments)] // the command line's options, passed on as given
fn run(
    config: &std::path::Path,
    services: ServiceSet,
    connection: KafkaConnection,
    replication: i32,
    rest_addr: std::net::SocketAddr,
    api: Option<std::net::SocketAddr>,
    api_security: ApiSecurityArgs,
    report_dir: &std::path::Path,
    shutdown_deadline: Duration,
    schema_registry: Option<&str>,
) -> anyhow::Result<()> {
    // Read the machine before anything is pinned (see Machine::detect).
    let machine = Machine::detect();
    let tuning = NodeTuning::load(config)?;
    for warning in tuning.warnings(&machine) {
        tracing::warn!(%warning, "core map");
    }
    let plan = plan_node(&tuning, &machine, &connection)?;
    let order_retention_ms = i64::try_from(tuning.state().order_retention_ms)
        .context("[state] order_retention does not fit in i64 milliseconds")?;
    let flow = TradeFlow::new(services).with_order_retention(order_retention_ms);
    let stores = flow.store_names();
    let inputs = engine::Stage::input_topics(&flow).to_vec();
    let outputs = flow.output_topics();
    // `[wire]`: which topics are Avro; Avro needs the registry's ids. The
    // registry is --schema-registry, else the core map's
    // wire.schema_registry.
    let wire_settings = tuning::WireSettings::load(config, &services::topics::ALL)?;
    let schema_registry = schema_registry.or(wire_settings.schema_registry.as_deref());
    if schema_registry.is_none() {
        services::wire::wire_formats(&wire_settings, None, &connection.namespace, &outputs, &[])
            .with_context(|| format!("core map {}", config.display()))?;
    }
    let registered = match schema_registry {
        Some(url) => register_schemas(url, &connection.namespace, &outputs, api.is_some())?,
        None => Vec::new(),
    };
    let wire = services::wire::wire_formats(
        &wire_settings,
        schema_registry,
        &connection.namespace,
        &outputs,
        &registered,
    )
    .with_context(|| format!("core map {}", config.display()))?;
    // What the API publishes, in the same formats, under the ids the same
    // registration gave.
    let api_wire = services::wire::wire_formats(
        &wire_settings,
        schema_registry,
        &connection.namespace,
        if api.is_some() {
            &services::api::PUBLISHED_TOPICS[..]
        } else {
            &[]
        },
        &registered,
    )
    .with_context(|| format!("core map {}", config.display()))?;
    for (topic, writer) in wire.avro_topics().chain(api_wire.avro_topics()) {
        println!(
            "tradeflow: writes {topic} as Avro (schema id {})",
            writer.registry_id
        );
    }
    prepare_topics(
        &plan.settings,
        &FlowTopics {
            inputs,
            outputs,
            stores,
            changelog_layout: tuning.state().changelog_layout,
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
        "tradeflow: node {} running {services} as {} (topics: {}) with {} shard(s) on {} partitions ({:?})",
        tuning.node().name.as_str(),
        plan.settings.application_id,
        plan.settings.namespace,
        plan.shards.len(),
        plan.partitions,
        plan.settings.guarantee,
    );
    // One owner per partition across nodes: refuse to start while another
    // live node may process one of this node's partitions.
    let registration = engine::deployment::claim_partitions(&plan.settings, &tuning, replication)
        .context("claiming this node's partitions in the owners' registry")?;
    let partitions = plan.partitions;
    let engine = std::sync::Arc::new(Engine::start(
        plan.settings,
        plan.shards,
        plan.knobs,
        plan.partitions,
        move |_| {
            TradeFlow::new(services)
                .with_order_retention(order_retention_ms)
                .with_wire_formats(wire.clone())
        },
    )?);
    let telemetry = engine.telemetry();
    let observability = Observability::new(Some(telemetry.clone()))?;
    // The API's threads inherit this (unpinned) thread's affinity.
    let mut observe_server = None;
    let api = match api {
        Some(grpc) => {
            let mut config = services::api::ApiConfig::new(
                rest_addr,
                grpc,
                connection.bootstrap.clone(),
                partitions,
            );
            config.client_properties = connection.client_properties.clone();
            config.namespace = connection.namespace.clone();
            config.observability = Some(observability.clone());
            config.wire = api_wire;
            api_security.apply(tuning.api(), &mut config);
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            if !services.contains(services::flow::Service::Inventory) {
                // Inventory's state lives in another process: this one cannot
                // tell an unknown instrument, so Inventory rejects it and
                // Payment refunds.
                config.instruments = services::api::InstrumentPolicy::AnyWellFormed;
            }
            let handle = services::api::spawn(config, engine.clone())?;
            println!(
                "tradeflow: Order API on {scheme}://{} (REST, /openapi.yaml) and {} (gRPC{})",
                handle.rest_addr(),
                handle.grpc_addr(),
                if scheme == "https" { ", TLS" } else { "" }
            );
            println!(
                "tradeflow: metrics on {scheme}://{0}/metrics, health on /health/live and \
                 /health/ready, HDR report on /reports/hdr",
                handle.rest_addr()
            );
            Some(handle)
        }
        None => {
            let server = observe::spawn(rest_addr, observability.clone())?;
            println!(
                "tradeflow: metrics on http://{0}/metrics, health on /health/live and \
                 /health/ready, HDR report on /reports/hdr",
                server.addr()
            );
            observe_server = Some(server);
            None
        }
    };
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
    // Bounded shutdown: the API stops, every shard commits (or, when its
    // commit fails, aborts) and closes, the registration ends, all within
    // the deadline; past it the process exits without the commit.
    println!(
        "tradeflow: stopping (API, then commit and close; deadline {} s)",
        shutdown_deadline.as_secs_f64()
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tf-shutdown".into())
        .spawn(move || {
            let result = (|| -> anyhow::Result<_> {
                if let Some(api) = api {
                    api.stop()?;
                }
                if let Some(server) = observe_server {
                    server.stop()?;
                }
                let engine = std::sync::Arc::try_unwrap(engine).map_err(|_| {
                    anyhow::anyhow!("the engine is still shared after the API stopped")
                })?;
                Ok(engine.shutdown())
            })();
            // The shards are closed: another node may claim the partitions now.
            drop(registration);
            let _ = done_tx.send(result);
        })
        .context("starting the shutdown thread")?;
    let stopped = match done_rx.recv_timeout(shutdown_deadline) {
        Ok(Ok(Ok(stopped))) => stopped,
        Ok(Ok(Err(e))) => {
            eprintln!(
                "tradeflow: shutdown ABORTED: a shard stopped without its final commit ({e}); \
                 its open transaction was aborted, and the records since its last commit will \
                 be processed again by the partitions' next owner"
            );
            std::process::exit(EXIT_SHUTDOWN_ABORTED);
        }
        Ok(Err(e)) => return Err(e.context("stopping")),
        Err(_) => {
            eprintln!(
                "tradeflow: shutdown DEADLINE of {} s passed before the final commit \
                 completed; exiting without it: the open transaction is aborted (by the next \
                 start's init_transactions, or by the broker after transaction.timeout.ms) and \
                 the records since the last commit will be processed again",
                shutdown_deadline.as_secs_f64()
            );
            std::process::exit(EXIT_SHUTDOWN_DEADLINE);
        }
    };
    for (shard, stats) in stopped {
        println!(
            "  {shard}: {} records in, {} out, {} dead-lettered, {} commits, {} restored",
            stats.records_in,
            stats.records_out,
            stats.dead_lettered,
            stats.commits,
            stats.restored_records
        );
    }
    // Every shard published its final report before it stopped.
    let snapshot = telemetry.snapshot(Duration::from_secs(5))?;
    print!("{}", observe::report::table(&snapshot));
    let written = observe::report::write_to(&snapshot, report_dir)
        .with_context(|| format!("writing the HDR report to {}", report_dir.display()))?;
    println!(
        "tradeflow: HDR report ({} files) in {}",
        written.len(),
        report_dir.display()
    );
    Ok(())
}

/// `tradeflow demo` in a build without the `demo` feature (the production
/// image): the scenario generator and driver it drives the flow with are
/// not linked.
#[cfg(not(feature = "demo"))]
fn demo(
    _rate: u64,
    _duration_s: u64,
    _schema_registry_listen: std::net::SocketAddr,
    _commit: tuning::CommitPolicy,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this tradeflow was built without the demo (cargo feature `demo` of tradeflow-services, \
         on by default): build it with that feature to run `tradeflow demo`"
    )
}

/// The embedded quick start: the flow on librdkafka's mock cluster, driven
/// open-loop by the traffic crate (`traffic::synth`, `traffic::drive`), then
/// the latency report and the audit.
#[cfg(feature = "demo")]
fn demo(
    rate: u64,
    duration_s: u64,
    schema_registry_listen: std::net::SocketAddr,
    commit: tuning::CommitPolicy,
) -> anyhow::Result<()> {
    // The flags pass the rules a core map's sections obey (a bad one is
    // refused naming its key, `commit.interval_ms`, ...), and the rest of
    // the knobs are the core maps' defaults, with the shipped maps' layout:
    // one changelog for every store.
    let knobs = tuning::NodeKnobs::new(
        tuning::RuntimeKnobs::default(),
        commit,
        tuning::RetryPolicy::default(),
        tuning::StateSection {
            changelog_layout: tuning::ChangelogLayout::Shared,
            ..tuning::StateSection::default()
        },
    )
    .context("the demo's flags (--commit-* set the core map's [commit] keys, --guarantee commit.guarantee)")?;
    let guarantee = commit.guarantee;
    const PARTITIONS: i32 = 4;
    const APPLICATION: &str = "tradeflow-demo";
    let cluster = MockCluster::new(1).context("starting librdkafka's in-process mock cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    println!("tradeflow demo: in-process Kafka (librdkafka mock cluster) at {bootstrap}");

    // The mock answers no CreateTopics, so every topic is made here.
    let flow = TradeFlow::new(ServiceSet::ALL);
    let mut topics: Vec<String> = services::topics::ALL
        .iter()
        .map(|t| t.to_string())
        .collect();
    topics.extend(
        engine::Stage::input_topics(&flow)
            .iter()
            .map(|t| engine::topics::dead_letter_topic(t)),
    );
    let changelog_layout = knobs.state().changelog_layout;
    topics.extend(engine::changelog::changelog_topics(
        changelog_layout,
        APPLICATION,
        &flow.store_names(),
    ));
    for topic in &topics {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("creating {topic} on the mock cluster"))?;
    }

    // The quick start serves the Confluent Schema Registry API too, on the same
    // in-process cluster, with the value schema of every topic of the flow
    // registered: a client can fetch a subject or an id while the demo runs.
    cluster
        .create_topic(registry::DEFAULT_TOPIC, 1, 1)
        .context("creating the registry's topic on the mock cluster")?;
    let schema_registry = EmbeddedRegistry::start(&bootstrap, schema_registry_listen)?;
    let registered = register_schemas(
        &schema_registry.url,
        &TopicNamespace::none(),
        &flow.output_topics(),
        true,
    )?;
    println!(
        "schema registry (Confluent REST API) at {}: {} value schemas registered, subjects <topic>-value",
        schema_registry.url,
        registered.len()
    );

    let settings = engine::kafka::KafkaSettings {
        bootstrap: bootstrap.clone(),
        application_id: APPLICATION.into(),
        guarantee,
        client_properties: Vec::new(),
        linger_ms: 0,
        // librdkafka's mock cluster holds an empty fetch for the whole wait
        // (a real broker answers it as soon as records arrive), so the demo
        // keeps it short.
        fetch_wait_max_ms: MOCK_FETCH_WAIT_MAX_MS,
        namespace: TopicNamespace::none(),
    };
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let plans: Vec<_> = (0..cores)
        .map(|core| engine::runtime::ShardPlan {
            shard: engine::ShardId(core as u16),
            core: Some(core),
            ownership: engine::kafka::Ownership::Static(
                (0..PARTITIONS)
                    .filter(|p| *p as usize % cores == core)
                    .map(engine::PartitionId)
                    .collect(),
            ),
            transactional_id: format!("{APPLICATION}-demo-{core}"),
        })
        .collect();
    let engine = Engine::start(
        settings,
        plans,
        // The engine shares the node's commit-rate cap among the shards,
        // as for a core map's [commit].
        knobs,
        PARTITIONS,
        |_| TradeFlow::new(ServiceSet::ALL),
    )?;
    anyhow::ensure!(
        engine.wait_running(Duration::from_secs(60)),
        "the engine did not start: {:?}",
        engine.statuses()
    );
    println!(
        "engine: {cores} shard(s) pinned to cores, order + payment + inventory, {guarantee:?}, {PARTITIONS} partitions, commit policy {} (at least every {:?}{})",
        commit.timing,
        commit.interval(),
        match commit.timing {
            tuning::CommitTiming::Adaptive => format!(
                ", on drain or {} ms after the first waiting record, at most {} commits/s per node",
                commit.target_latency_ms, commit.transactions_per_s_max
            ),
            tuning::CommitTiming::Interval => format!(", on drain: {}", commit.on_drain),
        }
    );

    let config = traffic::synth::SynthConfig {
        accounts: 200,
        instruments: 20,
        orders: rate.saturating_mul(duration_s),
        rate_per_s: rate,
        ..traffic::synth::SynthConfig::default()
    };
    let scenario = traffic::synth::generate(&config, codecs::ids::order_id_for)?;
    let schedule = traffic::drive::schedule(scenario)?;
    println!(
        "load: {} accounts funded, {} instruments stocked, then orders (with amends, cancels, \
         some bound to fail for funds or stock), {} records at {rate}/s, open loop",
        config.accounts,
        config.instruments,
        schedule.len()
    );
    let report = traffic::drive::drive(
        &traffic::drive::DriveConfig {
            bootstrap: bootstrap.clone(),
            client_properties: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            namespace: TopicNamespace::none(),
        },
        schedule,
    )?;
    println!(
        "orders: {} sent, {} outcomes ({} filled, {} rejected for funds, {} rejected for stock and refunded), {} missing",
        report.orders_sent, report.outcomes, report.filled, report.rejected_funds, report.refunded, report.missing
    );
    println!(
        "throughput: {:.0} orders/s reached an outcome ({} records sent in {:.1} s)",
        report.achieved_orders_per_s(),
        report.events_sent,
        report.send_elapsed.as_secs_f64()
    );
    println!("end-to-end latency, order sent -> outcome visible to a read_committed consumer:");
    print!("{}", report.latency.table());
    let telemetry = engine.telemetry();
    let stats = engine.shutdown()?;
    let records_in: u64 = stats.iter().map(|(_, s)| s.records_in).sum();
    println!("engine: {records_in} records processed, then committed and closed");
    // Where the time went inside the engine, per hop (input topic).
    print!(
        "{}",
        observe::report::table(&telemetry.snapshot(Duration::from_secs(5))?)
    );

    let audit = audit_topics(
        &bootstrap,
        &[],
        &TopicNamespace::none(),
        &registry::values::ValueFormats::default(),
        guarantee,
    )?;
    print!("{audit}");
    anyhow::ensure!(audit.passed(), "the audit found violations");
    anyhow::ensure!(
        report.missing == 0,
        "{} orders never reached an outcome",
        report.missing
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_config() -> services::api::ApiConfig {
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        services::api::ApiConfig::new(any, any, "unused:9092", 4)
    }

    fn map() -> tuning::ApiSection {
        tuning::ApiSection {
            auth: Some(tuning::ApiAuth {
                tokens_file: PathBuf::from("/map/tokens.toml"),
                metrics: tuning::ApiMetricsAccess::Token,
            }),
            tls: Some(tuning::ApiTls {
                cert_file: PathBuf::from("/map/cert.pem"),
                key_file: PathBuf::from("/map/key.pem"),
            }),
        }
    }

    #[test]
    fn the_core_maps_api_section_configures_the_api_and_the_command_line_overrides_it() {
        let mut config = api_config();
        ApiSecurityArgs {
            tokens_file: None,
            tls: None,
        }
        .apply(&map(), &mut config);
        assert_eq!(
            config.auth,
            Some(services::api::AuthConfig {
                tokens_file: PathBuf::from("/map/tokens.toml"),
                metrics: services::api::MetricsAccess::Token,
            })
        );
        assert_eq!(
            config.tls.map(|tls| tls.cert_file),
            Some(PathBuf::from("/map/cert.pem"))
        );

        let mut config = api_config();
        ApiSecurityArgs {
            tokens_file: Some(PathBuf::from("/cli/tokens.toml")),
            tls: Some((PathBuf::from("/cli/c.pem"), PathBuf::from("/cli/k.pem"))),
        }
        .apply(&map(), &mut config);
        assert_eq!(
            config.auth.map(|auth| auth.tokens_file),
            Some(PathBuf::from("/cli/tokens.toml"))
        );
        assert_eq!(
            config.tls.map(|tls| tls.key_file),
            Some(PathBuf::from("/cli/k.pem"))
        );

        // Neither: open and plaintext, as before.
        let mut config = api_config();
        ApiSecurityArgs {
            tokens_file: None,
            tls: None,
        }
        .apply(&tuning::ApiSection::default(), &mut config);
        assert!(config.auth.is_none() && config.tls.is_none());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let refused = Cli::try_parse_from(["tradeflow", "run", "--api-tls-cert", "c.pem"]);
        assert!(refused.is_err());
        let parsed = Cli::try_parse_from([
            "tradeflow",
            "run",
            "--api-tls-cert",
            "c.pem",
            "--api-tls-key",
            "k.pem",
            "--api-tokens",
            "t.toml",
        ]);
        assert!(parsed.is_ok());
    }
}
