//! `loadgen record`: captures a range of topics (by default the flow's
//! inputs from outside: `order.created`, `order.updated`, `account.funded`,
//! `stock.replenished`) into a traffic file, with each record's Kafka
//! timestamp as its send time, so `loadgen replay` can send it back at its
//! original pace.
//!
//! Owns: the range read (`read_committed`, fixed ends taken when the capture
//! begins), the merge of the topics' partitions into one send order, and the
//! file's header. Must never: write a record out of its partition's order
//! (a replay would apply an amend before its create), keep a namespace in
//! the file (topics are written under their logical names, so a capture
//! replays into any namespace), or hold more than [`RECORD_RECORDS_MAX`]
//! records.
//!
//! # Send order
//! Each partition keeps its offset order. Timestamps are the producers'
//! (`CreateTime`); where one goes backwards inside a partition it is lifted
//! to its predecessor's, so sorting by time never reorders a partition.
//! Records of different partitions and topics are ordered by time, then by
//! the flow's topic order — a funding that was sent a millisecond before an
//! order replays before it. The merge happens in memory: a capture is read
//! whole, sorted, then written.

use std::collections::HashMap;
use std::io::Write;

use codecs::topics::{
    TopicNamespace, ACCOUNT_FUNDED, ALL, ORDER_CREATED, ORDER_UPDATED, STOCK_REPLENISHED,
};

use crate::traffic::{Header, Payload, Record, TrafficError, TrafficWriter};
use records::{MissingTopics, ReadError, Reader, ReaderSettings, TimeBounds};

/// The topics a capture takes by default: what enters the flow from outside.
pub const INPUT_TOPICS: [&str; 4] = [
    ACCOUNT_FUNDED,
    STOCK_REPLENISHED,
    ORDER_CREATED,
    ORDER_UPDATED,
];
/// The `group.id` of loadgen's topic readers (`record`, `audit`): never
/// joined, nothing committed under it (reads are by assignment).
pub const READER_GROUP: &str = "loadgen-reader";
/// Most records one capture holds (they are merged in memory; ~300 bytes each).
pub const RECORD_RECORDS_MAX: usize = 10_000_000;
/// Nanoseconds per millisecond (Kafka timestamps are milliseconds).
const NS_PER_MS: u64 = 1_000_000;

/// What to capture.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub bootstrap: String,
    pub client_properties: Vec<(String, String)>,
    pub namespace: TopicNamespace,
    /// Logical topic names.
    pub topics: Vec<String>,
    pub bounds: TimeBounds,
    /// The header's `source` line.
    pub source: String,
    /// How values are decoded: rkyv, and Confluent's Avro form when a
    /// registry is given. Events are written to the file as events, so a
    /// replay sends them in whatever form it is told; a value that is
    /// neither is kept raw.
    pub values: registry::values::ValueFormats,
}

/// What a capture wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub records: u64,
    /// Records whose value is not an event (written as raw `value`).
    pub raw: u64,
    /// Records per logical topic.
    pub per_topic: Vec<(String, u64)>,
    /// Wall-clock time of the first record, Unix ns.
    pub epoch_unix_ns: Option<u64>,
    /// From the first record to the last.
    pub span_ns: u64,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error("{topic} partition {partition} offset {offset} has no timestamp")]
    NoTimestamp {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("more than {RECORD_RECORDS_MAX} records in the range: capture a shorter one")]
    TooMany,
}

/// One record read, before the merge.
struct Read {
    time_ms: i64,
    topic_rank: usize,
    partition: i32,
    offset: i64,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Payload,
}

/// Captures `config`'s range into a traffic file written to `out`.
pub fn capture<W: Write>(config: &RecordConfig, out: W) -> Result<(Captured, W), RecordError> {
    let consumer = Reader::new(
        &config.bootstrap,
        &config.client_properties,
        ReaderSettings::new(READER_GROUP),
    )?;
    let physical: Vec<String> = config
        .topics
        .iter()
        .map(|t| config.namespace.physical(t))
        .collect();
    let ranges = consumer.ranges(&physical, config.bounds, MissingTopics::Fail)?;
    let mut records: Vec<Read> = Vec::new();
    let mut failure: Option<RecordError> = None;
    // Latest timestamp per partition, to keep each partition's order.
    let mut latest: HashMap<(String, i32), i64> = HashMap::new();
    let mut values = config.values.reader();
    consumer.read_ranges(&ranges, &mut |message| {
        if failure.is_some() {
            return;
        }
        if records.len() >= RECORD_RECORDS_MAX {
            failure = Some(RecordError::TooMany);
            return;
        }
        let topic = config
            .namespace
            .logical(message.topic())
            .unwrap_or(message.topic())
            .to_string();
        let time_ms = match message.timestamp_ms() {
            Some(ms) => ms,
            None => {
                failure = Some(RecordError::NoTimestamp {
                    topic,
                    partition: message.partition(),
                    offset: message.offset(),
                });
                return;
            }
        };
        let floor = latest
            .entry((topic.clone(), message.partition()))
            .or_insert(i64::MIN);
        *floor = (*floor).max(time_ms);
        let payload = message.payload().unwrap_or_default();
        records.push(Read {
            time_ms: *floor,
            topic_rank: ALL.iter().position(|t| *t == topic).unwrap_or(ALL.len()),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: match values.decode(payload) {
                Ok(event) => Payload::Event(event),
                Err(_) => Payload::Raw(payload.to_vec()),
            },
            topic,
        });
    })?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    records.sort_by(|a, b| {
        (a.time_ms, a.topic_rank, &a.topic, a.partition, a.offset).cmp(&(
            b.time_ms,
            b.topic_rank,
            &b.topic,
            b.partition,
            b.offset,
        ))
    });
    let first_ms = records.first().map(|r| r.time_ms);
    let mut header = Header::new(config.source.clone());
    header.records = Some(records.len() as u64);
    header.epoch_unix_ns = first_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| ms * NS_PER_MS);
    let mut writer = TrafficWriter::new(out, &header)?;
    let mut per_topic: Vec<(String, u64)> = Vec::new();
    let mut raw = 0u64;
    let mut span_ns = 0u64;
    for read in records {
        let t_ns =
            u64::try_from(read.time_ms - first_ms.unwrap_or(read.time_ms)).unwrap_or(0) * NS_PER_MS;
        span_ns = t_ns;
        match per_topic.iter_mut().find(|(t, _)| *t == read.topic) {
            Some((_, n)) => *n += 1,
            None => per_topic.push((read.topic.clone(), 1)),
        }
        if matches!(read.payload, Payload::Raw(_)) {
            raw += 1;
        }
        writer.write(&Record {
            t_ns,
            topic: read.topic,
            // Keyed topics: the replaying producer's partitioner places them,
            // so a replay onto other partition counts stays keyed correctly.
            partition: None,
            key: read.key,
            payload: read.payload,
        })?;
    }
    let records = writer.written();
    let out = writer.finish()?;
    Ok((
        Captured {
            records,
            raw,
            per_topic,
            epoch_unix_ns: header.epoch_unix_ns,
            span_ns,
        },
        out,
    ))
}
