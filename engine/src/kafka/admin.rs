//! Topic administration: creating the topics a deployment needs with their
//! settings, checking the ones that exist, and reading what a topic holds
//! (partition counts, record counts per partition).
//! Must never: alter or delete a topic that exists (one with another
//! partition count is an error naming it), or be called from a shard's hot
//! path.

use super::*;

/// One topic every deployment needs, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `-1` uses the broker's `default.replication.factor`.
    pub replication: i32,
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn stream(name: impl Into<String>, partitions: i32, replication: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication,
            config: Vec::new(),
        }
    }

    /// A compacted changelog, as Kafka Streams creates them.
    pub fn changelog(name: impl Into<String>, partitions: i32, replication: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication,
            config: vec![("cleanup.policy".into(), "compact".into())],
        }
    }
}

/// Why the topics of a deployment are not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code:?}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "topic {topic} has {actual} partitions but the flow needs {expected}: co-partitioned \
         topics and changelogs must match (recreate it or change ownership.partitions)"
    )]
    PartitionCount {
        topic: String,
        expected: i32,
        actual: i32,
    },
    #[error("topic {0} still has no leader for every partition after {1:?}")]
    NotReady(String, Duration),
    /// The brokers refused this client's credentials (or its TLS handshake).
    #[error(
        "the Kafka cluster refused this client: {0}; check [kafka.security] in the core map \
         (username, password_file or password_env, ca_file)"
    )]
    Denied(String),
}

/// Remembers the first authentication failure librdkafka reports, so a
/// start-up metadata wait can end with that reason instead of waiting out
/// its timeout and saying only "broker transport failure" (librdkafka keeps
/// reconnecting after a refused login, so the request itself never fails
/// with the cause).
#[derive(Default)]
struct DenialWatch {
    // Set once from librdkafka's callback (the first refusal is the
    // reason), read by the waiting thread: no lock needed.
    denied: std::sync::OnceLock<String>,
}

impl DenialWatch {
    fn denied(&self) -> Option<String> {
        self.denied.get().cloned()
    }
}

impl ClientContext for DenialWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        let refused = error.rdkafka_error_code().is_some_and(is_denied)
            || matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::SSL));
        if refused {
            let _ = self.denied.set(format!("{error}: {reason}"));
        } else {
            warn!(%error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for DenialWatch {}

/// `fetch_metadata` that ends as soon as the cluster refuses the client's
/// credentials (see [`DenialWatch`]), and otherwise waits up to `timeout`.
fn fetch_metadata_watched(
    probe: &BaseConsumer<DenialWatch>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<rdkafka::metadata::Metadata, TopicError> {
    const SLICE: Duration = Duration::from_secs(1);
    let started = Instant::now();
    loop {
        match probe.fetch_metadata(topic, SLICE) {
            Ok(metadata) => return Ok(metadata),
            Err(e) => {
                // Serves the error events, which reach the context here.
                let _ = probe.poll(Duration::ZERO);
                if let Some(reason) = probe.context().denied() {
                    return Err(TopicError::Denied(reason));
                }
                if started.elapsed() >= timeout {
                    return Err(e.into());
                }
            }
        }
    }
}

/// Creates the topics that are missing, and checks that existing ones have the
/// partition count the flow needs.
pub fn ensure_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<(), TopicError> {
    let probe: BaseConsumer<DenialWatch> = settings
        .base()
        .create_with_context(DenialWatch::default())?;
    let metadata =
        fetch_metadata_watched(&probe, None, Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))?;
    let existing: BTreeMap<&str, i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().len() as i32))
        .collect();
    let mut missing = Vec::new();
    for spec in specs {
        match existing.get(spec.name.as_str()) {
            Some(&actual) if actual != spec.partitions => {
                return Err(TopicError::PartitionCount {
                    topic: spec.name.clone(),
                    expected: spec.partitions,
                    actual,
                })
            }
            Some(_) => {}
            None => missing.push(spec),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings.base().create()?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|spec| {
            let mut topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(spec.replication),
            );
            for (key, value) in &spec.config {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_millis(KAFKA_CALL_TIMEOUT_MS)))
        .request_timeout(Some(Duration::from_millis(KAFKA_CALL_TIMEOUT_MS)));
    for result in block_on(admin.create_topics(new_topics.iter(), &options))? {
        match result {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    let deadline = Duration::from_millis(KAFKA_CALL_TIMEOUT_MS);
    let started = Instant::now();
    for spec in missing {
        loop {
            let metadata = probe.fetch_metadata(Some(&spec.name), Duration::from_secs(5))?;
            let ready = metadata.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() as i32 == spec.partitions
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                break;
            }
            if started.elapsed() > deadline {
                return Err(TopicError::NotReady(spec.name.clone(), deadline));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The records each of `topics` holds now (its partitions' high less low
/// watermarks, summed), for the topics that exist; a topic that does not
/// exist is left out. Transaction markers and records compaction has not
/// removed yet count too: it says whether a topic may hold data, not how
/// many keys. For start-up checks, never on a shard's data path.
pub fn topic_records(
    settings: &KafkaSettings,
    topics: &[String],
) -> Result<Vec<(String, u64)>, TopicError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let probe: BaseConsumer<DenialWatch> = settings
        .base()
        .create_with_context(DenialWatch::default())?;
    let metadata =
        fetch_metadata_watched(&probe, None, Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))?;
    let mut found = Vec::new();
    for topic in metadata.topics() {
        if topic.error().is_some() || !topics.iter().any(|t| t == topic.name()) {
            continue;
        }
        let mut records = 0u64;
        for partition in topic.partitions() {
            // At start-up beside a topic being created, or during a leader
            // election, the first answer may be NotLeaderForPartition: a
            // start-up check must wait that out, not fail the node (CI).
            let (low, high) = ::records::watermarks(
                &probe,
                topic.name(),
                partition.id(),
                ::records::Patience {
                    within: Duration::from_millis(KAFKA_CALL_TIMEOUT_MS),
                    retry: ::records::Retry::Transient,
                },
            )?;
            records += u64::try_from(high - low).unwrap_or(0);
        }
        found.push((topic.name().to_string(), records));
    }
    Ok(found)
}

/// The partition count of `topic`, from the cluster's metadata.
pub fn partition_count(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topic: &str,
) -> Result<i32, PortError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in client_properties {
        config.set(key, value);
    }
    let probe: BaseConsumer = config
        .create()
        .map_err(|e| kafka_error("creating a metadata reader", e))?;
    let metadata = probe
        .fetch_metadata(Some(topic), Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))
        .map_err(|e| kafka_error("reading metadata", e))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.partitions().len() as i32)
        .sum())
}
