//! Reading topics by assignment, as a `read_committed` consumer outside any
//! group: a topic to its end (audits, dead-letter inspection, tests), or
//! fixed offset ranges taken when the read begins (`loadgen record`, the
//! load generator's audit), so a reader sees a definite slice of a topic even
//! while producers keep appending.
//!
//! Owns: [`Reader`] (its client settings: group id, fetch size, stall
//! timeout, watermark patience), finding partitions and their offset ranges
//! (whole, or bounded by record timestamps), reading ranges to their ends,
//! and [`ReadRecord`], the record a visitor sees.
//! Must never: commit offsets or join a consumer group (`assign`, never
//! `subscribe`), hand a visitor a record at or past the end the read took at
//! its start, or wait forever on a partition that stopped moving (a stall
//! fails the read after [`ReaderSettings::stall`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::watermarks::{watermarks, Patience};
use crate::KAFKA_CALL_TIMEOUT_MS;

/// A read with nothing new for this long while short of its end fails (a
/// transaction left open that long is longer than any engine's timeout).
pub const READ_STALL_TIMEOUT_MS: u64 = 90_000;
/// Largest fetch per partition by default: reads of whole topics want big
/// batches.
pub const READ_FETCH_BYTES: usize = 8 * 1024 * 1024;

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
    #[error("no progress for {stalled_ms} ms with {remaining} partition(s) short of their end, first {first}")]
    Stalled {
        stalled_ms: u128,
        remaining: usize,
        first: String,
    },
}

fn kafka(op: &'static str) -> impl Fn(KafkaError) -> ReadError {
    move |source| ReadError::Kafka { op, source }
}

/// A client configuration: bootstrap servers and extra librdkafka
/// properties (`security.protocol`, `sasl.*`, `ssl.*`).
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

/// What a topic that does not exist means to a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingTopics {
    /// An error ([`ReadError::NoSuchTopic`]): the caller named it on purpose
    /// (a tool given a namespace that may be wrong).
    Fail,
    /// Nothing to read: a topic created only when first written (dead
    /// letters) or not created yet.
    Skip,
}

/// A reader's client context: the end of a partition is how a read knows it
/// is done, not an error worth a log line.
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

/// How a [`Reader`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderSettings {
    /// `group.id`: librdkafka requires one even for a consumer that only
    /// assigns; the group is never joined and nothing is committed under
    /// it. Named after the tool, for the broker's logs and ACLs.
    pub group_id: String,
    /// `max.partition.fetch.bytes`.
    pub fetch_bytes: usize,
    /// A read with nothing new for this long while short of its end fails.
    pub stall: Duration,
    /// How the ranges' watermarks are asked.
    pub patience: Patience,
}

impl ReaderSettings {
    /// A tool's reader: [`READ_FETCH_BYTES`], [`READ_STALL_TIMEOUT_MS`], and
    /// watermarks asked with [`Patience::NEW_TOPIC`].
    pub fn new(group_id: &str) -> Self {
        ReaderSettings {
            group_id: group_id.to_string(),
            fetch_bytes: READ_FETCH_BYTES,
            stall: Duration::from_millis(READ_STALL_TIMEOUT_MS),
            patience: Patience::NEW_TOPIC,
        }
    }
}

/// The partitions of `topic`, asked through `consumer`; a topic that does
/// not exist (unknown to the cluster, or listed without partitions) is
/// [`ReadError::NoSuchTopic`]. A topic listed with its partitions and
/// another error (a leader being elected) exists: its watermarks wait that
/// out, and skipping it would lose its records.
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
        .filter(|t| {
            t.name() == topic
                && !t.error().is_some_and(|e| {
                    RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition
                })
        })
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if found.is_empty() {
        return Err(ReadError::NoSuchTopic(topic.to_string()));
    }
    Ok(found)
}

/// One record a read hands its visitor.
#[derive(Clone, Copy)]
pub struct ReadRecord<'a> {
    message: &'a BorrowedMessage<'a>,
}

impl std::fmt::Debug for ReadRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish()
    }
}

impl<'a> ReadRecord<'a> {
    /// The physical topic.
    pub fn topic(&self) -> &'a str {
        self.message.topic()
    }

    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.message.key()
    }

    /// `None`: a tombstone.
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.message.payload()
    }

    /// The record's timestamp (create or log-append time), Unix ms.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.message.timestamp().to_millis()
    }

    /// The record's headers as (name, value) pairs; a header without a
    /// value reads as an empty one.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.message
            .headers()
            .into_iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value.unwrap_or_default()))
    }
}

/// A `read_committed` reader outside any group (it never commits).
pub struct Reader {
    consumer: BaseConsumer<EndAware>,
    settings: ReaderSettings,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Reader {
    /// A reader of the cluster at `bootstrap`, with `properties` (security)
    /// on top of its own settings.
    pub fn new(
        bootstrap: &str,
        properties: &[(String, String)],
        settings: ReaderSettings,
    ) -> Result<Reader, ReadError> {
        let consumer = client_config(bootstrap, properties)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set(
                "max.partition.fetch.bytes",
                settings.fetch_bytes.to_string(),
            )
            // Whole topics: keep fetching ahead (see the constants).
            .set("queued.min.messages", crate::QUEUED_RECORDS_MAX.to_string())
            .set(
                "fetch.queue.backoff.ms",
                crate::FETCH_QUEUE_BACKOFF_MS.to_string(),
            )
            .create_with_context(EndAware)
            .map_err(kafka("creating a reader"))?;
        Ok(Reader { consumer, settings })
    }

    /// The ranges of every partition of `topics` within `bounds`, as the
    /// topics are now. Empty ranges are left out.
    pub fn ranges<T: AsRef<str>>(
        &self,
        topics: &[T],
        bounds: TimeBounds,
        missing: MissingTopics,
    ) -> Result<Vec<PartitionRange>, ReadError> {
        let consumer = &self.consumer;
        let mut found = Vec::new();
        for topic in topics {
            let topic = topic.as_ref();
            let partitions = match (partitions(consumer, topic), missing) {
                (Err(ReadError::NoSuchTopic(_)), MissingTopics::Skip) => continue,
                (partitions, _) => partitions?,
            };
            for partition in partitions {
                let (low, high) = watermarks(consumer, topic, partition, self.settings.patience)
                    .map_err(kafka("reading watermarks"))?;
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
                        topic: topic.to_string(),
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
        &self,
        ranges: &[PartitionRange],
        visit: &mut dyn FnMut(&ReadRecord<'_>),
    ) -> Result<u64, ReadError> {
        if ranges.is_empty() {
            return Ok(0);
        }
        let consumer = &self.consumer;
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
                    // read_committed the position may sit past records it
                    // will never show (aborted, control markers): compare
                    // positions.
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
                        visit(&ReadRecord { message: &message });
                        visited += 1;
                    }
                    if message.offset() + 1 >= end {
                        ends.remove(&key);
                    }
                }
            }
            if last_progress.elapsed() > self.settings.stall {
                return Err(ReadError::Stalled {
                    stalled_ms: self.settings.stall.as_millis(),
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

    /// Reads every partition of `topics` from its beginning to its end at
    /// the time of the call, handing each record to `visit`; a topic that
    /// does not exist has nothing to read. Returns the number of records
    /// read.
    pub fn read_to_end<T: AsRef<str>>(
        &self,
        topics: &[T],
        visit: &mut dyn FnMut(&ReadRecord<'_>),
    ) -> Result<u64, ReadError> {
        let ranges = self.ranges(topics, TimeBounds::default(), MissingTopics::Skip)?;
        self.read_ranges(&ranges, visit)
    }
}
