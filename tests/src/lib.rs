//! Harness for tradeflow's integration tests: a handle on a **real** Apache Kafka
//! cluster on loopback, started by `scripts/kafka`, plus the few admin, produce and
//! consume helpers the tests share.
//!
//! Owns: finding or starting the loopback clusters, naming test topics so tests
//! never collide, killing/restarting brokers for fault tests, and the knobs
//! the tests start engines with ([`TestKnobs`], validated by the tuning crate
//! like a core map's).
//! Must never: stand in for Kafka (no mocks here: librdkafka's mock cluster is for
//! unit tests only), or leave a broker it killed stopped when a test fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;

/// Routes the engine's `tracing` logs to stderr when `RUST_LOG` is set (e.g.
/// `RUST_LOG=engine=info cargo test ... -- --nocapture`); quiet otherwise.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// How long a test waits for a cluster operation before it fails with a reason.
pub const ADMIN_TIMEOUT_S: u64 = 30;

/// Errors the harness reports to a test; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("scripts/kafka {args} failed ({status}); see the broker logs (scripts/kafka logs N)")]
    Script { args: String, status: String },
    #[error("could not run scripts/kafka: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: {code:?}")]
    Topic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Which loopback cluster a test runs against. Both can run side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterSize {
    /// One combined broker+controller: most tests.
    Single,
    /// Three combined nodes, replication 3, `min.insync.replicas=2`: fault tests.
    Three,
}

impl ClusterSize {
    pub fn broker_count(self) -> usize {
        match self {
            ClusterSize::Single => 1,
            ClusterSize::Three => 3,
        }
    }
}

/// A running loopback Kafka cluster started by `scripts/kafka`.
#[derive(Debug, Clone)]
pub struct KafkaCluster {
    size: ClusterSize,
    bootstrap: String,
}

impl KafkaCluster {
    /// The single-broker cluster, started if it is not running (idempotent, so
    /// `cargo test` works without `scripts/test`, only slower the first time).
    pub fn single() -> Result<Self, HarnessError> {
        Self::ensure(ClusterSize::Single)
    }

    /// The three-broker cluster, started if it is not running.
    pub fn three() -> Result<Self, HarnessError> {
        Self::ensure(ClusterSize::Three)
    }

    fn ensure(size: ClusterSize) -> Result<Self, HarnessError> {
        let brokers = size.broker_count().to_string();
        run_script(&["up", "--brokers", &brokers])?;
        let bootstrap = script_output(&["bootstrap", "--brokers", &brokers])?;
        Ok(KafkaCluster { size, bootstrap })
    }

    pub fn size(&self) -> ClusterSize {
        self.size
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// A client config pointed at this cluster, with loopback-friendly timeouts.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "10000");
        config
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, HarnessError> {
        Ok(self.client_config().create()?)
    }

    /// Creates a topic and waits until every partition has a leader.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        config: &[(&str, &str)],
    ) -> Result<(), HarnessError> {
        let admin = self.admin()?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (key, value) in config {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(ADMIN_TIMEOUT_S)))
            .request_timeout(Some(Duration::from_secs(ADMIN_TIMEOUT_S)));
        for result in block_on(admin.create_topics([&topic], &options))? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(HarnessError::Topic { topic, code }),
            }
        }
        self.wait_for_leaders(name, partitions)
    }

    fn wait_for_leaders(&self, name: &str, partitions: i32) -> Result<(), HarnessError> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let timeout = Duration::from_secs(ADMIN_TIMEOUT_S);
        let start = Instant::now();
        while start.elapsed() < timeout {
            let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
            let ready = metadata.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            });
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(HarnessError::Timeout(
            timeout,
            format!("leaders for every partition of {name}"),
        ))
    }

    /// The broker ids that lead each partition of `topic`, by partition.
    pub fn partition_leaders(&self, topic: &str) -> Result<Vec<(i32, i32)>, HarnessError> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
            .collect())
    }

    /// Commits `group`'s offsets at the current end of every partition of
    /// `topics`, so an application started under that group processes only
    /// what is produced from now on (the flow's topics are shared by runs).
    pub fn start_group_at_end(
        &self,
        group: &str,
        topics: &[&str],
        partitions: i32,
    ) -> Result<(), HarnessError> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut offsets = rdkafka::TopicPartitionList::new();
        for topic in topics {
            for partition in 0..partitions {
                // A just-created topic's leader may not answer yet: the
                // workspace's one watermark loop waits that out.
                let (_, high) = records::watermarks(
                    &consumer,
                    topic,
                    partition,
                    records::Patience {
                        within: Duration::from_secs(ADMIN_TIMEOUT_S),
                        retry: records::Retry::AnyButDenied,
                    },
                )?;
                offsets.add_partition_offset(topic, partition, rdkafka::Offset::Offset(high))?;
            }
        }
        consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    }

    /// `kill -9` one node of this cluster; it stays down until [`Self::start`].
    pub fn kill(&self, node: usize) -> Result<(), HarnessError> {
        let brokers = self.size.broker_count().to_string();
        run_script(&["kill", &node.to_string(), "--brokers", &brokers])
    }

    /// Starts a killed node again and waits until it answers metadata requests.
    pub fn start(&self, node: usize) -> Result<(), HarnessError> {
        let brokers = self.size.broker_count().to_string();
        run_script(&["start", &node.to_string(), "--brokers", &brokers])
    }
}

/// Waits until every record handed to `producer` is acknowledged (its own
/// thread serves the delivery reports), checking every millisecond; fails
/// after `timeout`. Instead of `Producer::flush`, which in rdkafka 0.39 polls
/// in 100 ms slices and so takes at least 100 ms with a record in flight.
pub fn flush<C: rdkafka::producer::ProducerContext + 'static>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    timeout: Duration,
) -> Result<(), HarnessError> {
    records::flush_threaded(producer, timeout).map_err(|unacknowledged| {
        HarnessError::Timeout(
            timeout,
            format!("{} record(s) to be acknowledged", unacknowledged.in_flight),
        )
    })
}

/// Waits up to `within` for `child` to exit; on expiry kills it (SIGKILL)
/// and reaps it, and answers `None`: no test hangs on a child that hangs.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    within: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A topic name no other test (or earlier run against the same cluster) uses.
pub fn unique_topic(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// One record as a test reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads every record of `topic` from the beginning (as a `read_committed`
/// consumer) until `expected` records arrived or `timeout` passed.
pub fn consume_all(
    cluster: &KafkaCluster,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, HarnessError> {
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", unique_topic("harness-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut records = Vec::with_capacity(expected);
    let start = Instant::now();
    while records.len() < expected && start.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => records.push(ConsumedRecord {
                partition: message.partition(),
                key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Some(Err(e)) => tracing::warn!(error = %e, "consume error (retrying)"),
            None => {}
        }
    }
    Ok(records)
}

/// A `read_committed` reader of one partition from its beginning, assigned
/// (not subscribed: no group join) when made, so that a caller timing when
/// a record becomes readable can make it before the clock starts.
pub struct CommittedReader {
    consumer: BaseConsumer,
}

impl CommittedReader {
    pub fn new(cluster: &KafkaCluster, topic: &str, partition: i32) -> Result<Self, HarnessError> {
        let consumer: BaseConsumer = cluster
            .client_config()
            .set("group.id", unique_topic("harness-committed-reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
        consumer.assign(&assignment)?;
        Ok(CommittedReader { consumer })
    }

    /// The keys read, as soon as `expected` of them are, or whatever was
    /// read by `until`.
    pub fn keys(&self, expected: usize, until: Instant) -> Vec<String> {
        let mut keys = Vec::with_capacity(expected);
        while keys.len() < expected && Instant::now() < until {
            match self.consumer.poll(Duration::from_millis(10)) {
                Some(Ok(message)) => keys
                    .push(String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned()),
                Some(Err(e)) => tracing::warn!(error = %e, "consume error (retrying)"),
                None => {}
            }
        }
        keys
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The secured single-broker cluster (`scripts/kafka up --secure`): SASL_SSL
/// only, SCRAM-SHA-512, an authorizer that denies what no ACL allows. Its
/// users are `admin` (super user) and one per service (`tradeflow-order`,
/// `tradeflow-payment`, `tradeflow-inventory`), with random passwords in
/// files under [`SecureCluster::secrets`].
#[derive(Debug, Clone)]
pub struct SecureCluster {
    bootstrap: String,
    secrets: PathBuf,
}

impl SecureCluster {
    /// The secured cluster, started if it is not running (idempotent).
    pub fn ensure() -> Result<Self, HarnessError> {
        // One `up --secure` at a time in this process: the first makes the
        // certificates and formats the storage, and parallel tests starting
        // on a cold machine must not do that twice at once.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = STARTING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = run_script(&["up", "--secure"]);
        drop(guard);
        started?;
        Ok(SecureCluster {
            bootstrap: script_output(&["bootstrap", "--secure"])?,
            secrets: PathBuf::from(script_output(&["secrets", "--secure"])?),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Holds `ca.pem`, `<user>.password` and `admin.properties`.
    pub fn secrets(&self) -> &std::path::Path {
        &self.secrets
    }

    pub fn ca_file(&self) -> PathBuf {
        self.secrets.join("ca.pem")
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        self.secrets.join(format!("{user}.password"))
    }

    /// A core map's `[kafka.security]` section for `user` (SASL_SSL,
    /// SCRAM-SHA-512, the password from its file, the cluster's CA).
    pub fn security_section(&self, user: &str) -> String {
        format!(
            "[kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             username = \"{user}\"\npassword_file = {:?}\nca_file = {:?}\n",
            self.password_file(user).display().to_string(),
            self.ca_file().display().to_string()
        )
    }

    /// librdkafka properties of `user` with `password` (the test's own
    /// clients; the engine reads them from a core map instead).
    pub fn client_properties(&self, user: &str, password: &str) -> Vec<(String, String)> {
        vec![
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
            ("sasl.username".into(), user.into()),
            ("sasl.password".into(), password.into()),
            (
                "ssl.ca.location".into(),
                self.ca_file().display().to_string(),
            ),
            ("broker.address.family".into(), "v4".into()),
        ]
    }

    /// The admin's (super user's) properties.
    pub fn admin_properties(&self) -> Result<Vec<(String, String)>, HarnessError> {
        let password = std::fs::read_to_string(self.password_file("admin"))?;
        Ok(self.client_properties("admin", password.trim()))
    }

    /// Applies `kafka-acls.sh ... --add` lines (as `tradeflow acls --emit
    /// kafka-acls` prints them) through the Admin API, as the admin.
    pub fn apply_acls(&self, script: &str) -> Result<(), HarnessError> {
        use std::io::Write as _;
        let mut child = Command::new(repo_root().join("scripts/kafka"))
            .args(["acls", "--secure"])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let status = child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Script {
                args: "acls --secure".into(),
                status: status.to_string(),
            })
        }
    }
}

fn run_script(args: &[&str]) -> Result<(), HarnessError> {
    let status = Command::new(repo_root().join("scripts/kafka"))
        .args(args)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::Script {
            args: args.join(" "),
            status: status.to_string(),
        })
    }
}

fn script_output(args: &[&str]) -> Result<String, HarnessError> {
    let output = Command::new(repo_root().join("scripts/kafka"))
        .args(args)
        .output()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(HarnessError::Script {
            args: args.join(" "),
            status: output.status.to_string(),
        })
    }
}

/// The knobs the integration tests start engines with: shards parked 1 ms
/// between polls, unpinned client threads, Kafka Streams' interval commit
/// rule, a few restarts. [`TestKnobs::validated`] passes them through the
/// tuning crate's rules, as `tradeflow run` does a core map's.
#[derive(Clone, Copy, Debug)]
pub struct TestKnobs {
    /// `commit.guarantee`: must be the Kafka settings' guarantee.
    pub guarantee: tuning::Guarantee,
    pub commit_interval_ms: u32,
    pub commit_on_drain: bool,
    pub attempts_max: u32,
    pub standby_replicas: u32,
    pub changelog_layout: tuning::ChangelogLayout,
}

impl Default for TestKnobs {
    fn default() -> Self {
        TestKnobs {
            guarantee: tuning::Guarantee::ExactlyOnce,
            commit_interval_ms: 100,
            commit_on_drain: true,
            attempts_max: 3,
            standby_replicas: 0,
            changelog_layout: tuning::ChangelogLayout::default(),
        }
    }
}

impl TestKnobs {
    /// The knobs, checked by the rules a core map's sections obey.
    pub fn validated(&self) -> Result<tuning::NodeKnobs, tuning::TuningError> {
        tuning::NodeKnobs::new(
            tuning::RuntimeKnobs {
                idle: tuning::IdleStrategy::Park { park_us: 1_000 },
                client_threads: tuning::ClientThreads::Unpinned,
            },
            tuning::CommitPolicy {
                interval_ms: self.commit_interval_ms,
                on_drain: self.commit_on_drain,
                guarantee: self.guarantee,
                timing: tuning::CommitTiming::Interval,
                ..tuning::CommitPolicy::default()
            },
            tuning::RetryPolicy {
                attempts_max: self.attempts_max,
                ..tuning::RetryPolicy::default()
            },
            tuning::StateSection {
                standby_replicas: self.standby_replicas,
                changelog_layout: self.changelog_layout,
                ..tuning::StateSection::default()
            },
        )
    }
}
