//! The registry's durable log: a compacted single-partition Kafka topic
//! (`_schemas` by default), as Confluent's registry keeps it.
//!
//! Owns: creating the topic if missing, reading it from the beginning to its
//! end at start (so a restarted node, or a second node, serves exactly the ids
//! the log holds), and appending one record per change, acknowledged by every
//! in-sync replica before the change is applied or answered.
//! Must never: answer a write before Kafka acknowledged it, or panic on a
//! record it cannot read (it is logged and skipped: a newer build's record).
//! One partition keeps one order for every node; writes are meant to come from
//! one node at a time (see docs/SCHEMAS.md, "What is not done").

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use records::{Reader, ReaderSettings};

use crate::model::{Change, Registry};

/// How long listing the cluster's topics may take at start.
const METADATA_TIMEOUT_MS: u64 = 10_000;
/// Default name of the schemas topic, as Confluent's.
pub const DEFAULT_TOPIC: &str = "_schemas";
/// How long one append waits for the brokers' acknowledgement.
pub const APPEND_TIMEOUT_MS: u64 = 15_000;

/// Where the log lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// The compacted topic holding the schemas.
    pub topic: String,
    /// Replication factor if the topic is created (-1: broker default).
    pub replication: i32,
    /// Extra librdkafka properties (security.protocol, sasl.*, ssl.*).
    pub properties: Vec<(String, String)>,
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("reading the schemas topic to its end: {0}")]
    Read(#[from] records::ReadError),
    #[error("record at offset {offset} of {topic} breaks the registry: {reason}")]
    Corrupt {
        topic: String,
        offset: i64,
        reason: String,
    },
    #[error("the reader task failed: {0}")]
    Task(String),
}

/// The appending side of the log.
pub struct KafkaLog {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.topic)
            .finish()
    }
}

fn client_config(config: &StoreConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

impl KafkaLog {
    /// Creates the topic if needed, reads it to its end and returns the log
    /// with the registry state it holds.
    pub async fn open(config: &StoreConfig) -> Result<(KafkaLog, Registry), StoreError> {
        ensure_topic(config).await?;
        let reader_config = config.clone();
        let registry = tokio::task::spawn_blocking(move || read_to_end(&reader_config))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let producer: FutureProducer = client_config(config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()?;
        Ok((
            KafkaLog {
                producer,
                topic: config.topic.clone(),
            },
            registry,
        ))
    }

    /// Appends one change and waits until Kafka acknowledged it.
    pub async fn append(&self, change: &Change) -> Result<(), StoreError> {
        let (key, value) = change.to_record();
        let mut record = FutureRecord::to(&self.topic).key(&key).partition(0);
        if let Some(value) = value.as_deref() {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_millis(APPEND_TIMEOUT_MS))
            .await
            .map_err(|(e, _)| StoreError::Kafka(e))?;
        Ok(())
    }
}

async fn ensure_topic(config: &StoreConfig) -> Result<(), StoreError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    // A topic that exists is used as it is, as Confluent's registry does: the
    // registry then needs no right to create topics (an operator made it),
    // and a cluster that serves no CreateTopics (librdkafka's mock, under
    // `tradeflow demo`) works. All topics are listed, not this one, so that
    // the request cannot make a broker auto-create it uncompacted.
    let listed = admin
        .inner()
        .fetch_metadata(None, Duration::from_millis(METADATA_TIMEOUT_MS))?;
    if listed
        .topics()
        .iter()
        .any(|t| t.name() == config.topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    // Compacted: only the latest record per key matters, as in Confluent's
    // store; one partition gives every node one order of changes.
    let topic = NewTopic::new(
        &config.topic,
        1,
        TopicReplication::Fixed(config.replication),
    )
    .set("cleanup.policy", "compact");
    let results = admin.create_topics([&topic], &AdminOptions::new()).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(StoreError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Stops reading the log after this long without a record while short of
/// its end (the `records` crate's stall timeout).
pub const READ_STALL_TIMEOUT_MS: u64 = 60_000;

fn read_to_end(config: &StoreConfig) -> Result<Registry, StoreError> {
    // The workspace's one reader: assigned, never subscribed (the group id
    // is only required by librdkafka, no offsets are committed); the
    // watermarks of a topic created a moment ago are asked until it has a
    // leader.
    let reader = Reader::new(
        &config.bootstrap,
        &config.properties,
        ReaderSettings {
            stall: Duration::from_millis(READ_STALL_TIMEOUT_MS),
            ..ReaderSettings::new("tradeflow-registry-reader")
        },
    )?;
    let mut registry = Registry::default();
    let mut records = 0_u64;
    let mut corrupt: Option<StoreError> = None;
    let read = reader.read_to_end(&[config.topic.as_str()], &mut |record| {
        if corrupt.is_some() {
            return;
        }
        let Some(key) = record.key() else {
            tracing::warn!(
                offset = record.offset(),
                "schemas record without a key skipped"
            );
            return;
        };
        match Change::from_record(key, record.payload()) {
            Ok(change) => match registry.apply(change) {
                Ok(()) => records += 1,
                Err(e) => {
                    corrupt = Some(StoreError::Corrupt {
                        topic: config.topic.clone(),
                        offset: record.offset(),
                        reason: e.to_string(),
                    })
                }
            },
            // Confluent's own record kinds (NOOP, DELETE_SUBJECT, ...) or a
            // newer build's: not ours to judge, so skipped and reported.
            Err(reason) => {
                tracing::warn!(offset = record.offset(), %reason, "schemas record skipped")
            }
        }
    })?;
    if let Some(corrupt) = corrupt {
        return Err(corrupt);
    }
    if read == 0 {
        tracing::info!(topic = %config.topic, "schemas topic is empty");
    } else {
        tracing::info!(topic = %config.topic, records, read, "schemas read to the end of the log");
    }
    Ok(registry)
}
