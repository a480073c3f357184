//! Reading ranges of topics for loadgen's tools (`record`, `audit`): a
//! `read_committed` consumer outside any group, assigned to fixed offset
//! ranges taken when the read begins, so a tool reads a definite slice of a
//! topic even while producers keep appending.
//!
//! Owns: finding partitions and their offset ranges (whole, or bounded by
//! record timestamps) and reading them to their ends. Must never: commit
//! offsets or join a consumer group (a tool must not move a deployment's
//! groups), read past the end it took at the start, or run on a measuring
//! path (the open-loop reader lives in [`crate::drive`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Timeout of one metadata or offsets request.
pub const KAFKA_CALL_TIMEOUT_MS: u64 = 10_000;
/// How long a just-created topic may answer without a leader before a read
/// gives up (its leader election is asynchronous).
pub const TOPIC_READY_TIMEOUT_MS: u64 = 30_000;
/// A read with nothing new for this long while short of its end fails (a
/// transaction left open that long is longer than any engine's timeout).
pub const READ_STALL_TIMEOUT_MS: u64 = 90_000;
/// Largest fetch per partition: reads of whole topics want big batches.
const READ_FETCH_BYTES: usize = 8 * 1024 * 1024;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} does not exist or has no partitions (is the namespace right?)")]
    NoSuchTopic(String),
    #[error("no progress for {READ_STALL_TIMEOUT_MS} ms with {remaining} partition(s) short of their end, first {first}")]
    Stalled { remaining: usize, first: String },
}

fn kafka(op: &'static str) -> impl Fn(KafkaError) -> ReadError {
    move |source| ReadError::Kafka { op, source }
}

/// Serves `producer`'s delivery reports until none is in flight, in 1 ms
/// poll slices, or fails with `Flush` after `timeout`. Use instead of
/// `Producer::flush`: rdkafka 0.39's `BaseProducer::poll(t)` keeps polling
/// until `t` has passed, and its `flush` polls in 100 ms slices, so a flush
/// with a record in flight took at least 100 ms (the engine's port waits on
/// librdkafka's queue directly; a tool can afford a 1 ms slice).
pub fn flush<C: rdkafka::producer::ProducerContext>(
    producer: &rdkafka::producer::BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    use rdkafka::producer::Producer;
    let started = Instant::now();
    while producer.in_flight_count() > 0 {
        if started.elapsed() >= timeout {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// A client configuration: bootstrap servers and extra librdkafka properties.
pub fn client_config(bootstrap: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// The offsets `[start, end)` of one partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Where a range begins or ends in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeBounds {
    /// First record with a timestamp at or after this (Unix ms); `None`: the
    /// partition's beginning.
    pub since_unix_ms: Option<i64>,
    /// First record with a timestamp at or after this is past the range
    /// (Unix ms); `None`: the partition's end when the read begins.
    pub until_unix_ms: Option<i64>,
}

/// A reader's client context: the end of a partition is how a range read
/// knows it is done, not an error worth a log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndAware;

impl ClientContext for EndAware {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports an end of partition both on the message queue
        // and as a global error.
        let end_of_partition = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !end_of_partition {
            tracing::warn!(%error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for EndAware {}

/// A range reader.
pub type Reader = BaseConsumer<EndAware>;

/// A `read_committed` reader outside any group (it never commits).
pub fn reader(bootstrap: &str, properties: &[(String, String)]) -> Result<Reader, ReadError> {
    client_config(bootstrap, properties)
        .set("group.id", "loadgen-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("max.partition.fetch.bytes", READ_FETCH_BYTES.to_string())
        .create_with_context(EndAware)
        .map_err(kafka("creating a reader"))
}

/// The partitions of `topic`; a topic that does not exist is an error.
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<i32>, ReadError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))
        .map_err(kafka("reading metadata"))?;
    let found: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if found.is_empty() {
        return Err(ReadError::NoSuchTopic(topic.to_string()));
    }
    Ok(found)
}

/// Low and high watermarks, retrying while a just-created topic's leader
/// does not answer yet.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), ReadError> {
    let started = Instant::now();
    loop {
        match consumer.fetch_watermarks(
            topic,
            partition,
            Duration::from_millis(KAFKA_CALL_TIMEOUT_MS),
        ) {
            Ok(marks) => return Ok(marks),
            Err(_) if started.elapsed() < Duration::from_millis(TOPIC_READY_TIMEOUT_MS) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(kafka("reading watermarks")(e)),
        }
    }
}

/// The ranges of every partition of `topics` within `bounds`, as the topics
/// are now. Empty ranges are left out.
pub fn ranges(
    consumer: &Reader,
    topics: &[String],
    bounds: TimeBounds,
) -> Result<Vec<PartitionRange>, ReadError> {
    let mut found = Vec::new();
    for topic in topics {
        for partition in partitions(consumer, topic)? {
            let (low, high) = watermarks(consumer, topic, partition)?;
            let at = |unix_ms: Option<i64>, default: i64| -> Result<i64, ReadError> {
                let Some(ms) = unix_ms else {
                    return Ok(default);
                };
                let mut query = TopicPartitionList::new();
                query
                    .add_partition_offset(topic, partition, Offset::Offset(ms))
                    .map_err(kafka("asking offsets for times"))?;
                let answer = consumer
                    .offsets_for_times(query, Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))
                    .map_err(kafka("asking offsets for times"))?;
                // No record at or after the time: the range ends at the high mark.
                Ok(
                    match answer.find_partition(topic, partition).map(|e| e.offset()) {
                        Some(Offset::Offset(offset)) => offset.clamp(low, high),
                        _ => high,
                    },
                )
            };
            let start = at(bounds.since_unix_ms, low)?;
            let end = at(bounds.until_unix_ms, high)?;
            if end > start {
                found.push(PartitionRange {
                    topic: topic.clone(),
                    partition,
                    start,
                    end,
                });
            }
        }
    }
    Ok(found)
}

/// Reads every range to its end, handing each record inside a range to
/// `visit` (records of aborted transactions are never seen). Returns the
/// number of records visited.
pub fn read_ranges(
    consumer: &Reader,
    ranges: &[PartitionRange],
    visit: &mut dyn FnMut(&BorrowedMessage<'_>),
) -> Result<u64, ReadError> {
    if ranges.is_empty() {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for range in ranges {
        assignment
            .add_partition_offset(&range.topic, range.partition, Offset::Offset(range.start))
            .map_err(kafka("assigning"))?;
        ends.insert((range.topic.clone(), range.partition), range.end);
    }
    consumer.assign(&assignment).map_err(kafka("assigning"))?;
    let mut visited = 0u64;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // EOF names only the partition number, and under
                // read_committed the position may sit past records it will
                // never show (aborted, control markers): compare positions.
                let positions = consumer.position().map_err(kafka("reading positions"))?;
                for element in positions.elements() {
                    if let Offset::Offset(position) = element.offset() {
                        let key = (element.topic().to_string(), element.partition());
                        if ends.get(&key).is_some_and(|end| position >= *end) {
                            ends.remove(&key);
                            last_progress = Instant::now();
                        }
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "read error (librdkafka retries)"),
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let key = (message.topic().to_string(), message.partition());
                let Some(&end) = ends.get(&key) else {
                    continue;
                };
                if message.offset() < end {
                    visit(&message);
                    visited += 1;
                }
                if message.offset() + 1 >= end {
                    ends.remove(&key);
                }
            }
        }
        if last_progress.elapsed() > Duration::from_millis(READ_STALL_TIMEOUT_MS) {
            return Err(ReadError::Stalled {
                remaining: ends.len(),
                first: ends
                    .keys()
                    .next()
                    .map(|(t, p)| format!("{t}/{p}"))
                    .unwrap_or_default(),
            });
        }
    }
    Ok(visited)
}
