//! The processor API the services implement: a stage gets each input event as an
//! archived (zero-copy) value, its partition's stores, and an outbox for the
//! events it emits.
//!
//! Owns: the `Stage` trait, the per-record `Input` metadata, the `Outbox`, and
//! the `Rejection` a stage returns for an event that breaks a domain rule.
//! Must never: give a stage access to another partition's state, to Kafka
//! clients, or to anything shared with another shard.

use codecs::avro::AvroError;
use codecs::{EncodeError, Encoder, Event, EventRef, CONFLUENT_MAGIC_BYTE};

use crate::ids::{Offset, PartitionId, TopicIdx};
use crate::partitioner::partition_for;
use crate::store::PartitionStores;
use crate::wire::{AvroWriter, WireFormats};

/// Metadata of the record being processed.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub topic: TopicIdx,
    pub topic_name: &'a str,
    pub partition: PartitionId,
    pub offset: Offset,
    /// Broker or producer timestamp of the record, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// Who caused a failure, which decides whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad data from a producer: retrying cannot help; dead-letter it.
    UserData,
    /// A broker or network problem: retry with backoff.
    External,
    /// A bug or broken invariant in tradeflow itself.
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::UserData => "user-data",
            ErrorClass::External => "external",
            ErrorClass::Internal => "internal",
        }
    }
}

/// A stage's verdict that an event cannot be applied (a negative quantity, an
/// event of a kind this stage does not take): the record goes to the
/// dead-letter topic with this reason and processing continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub class: ErrorClass,
    pub reason: String,
}

impl Rejection {
    pub fn user_data(reason: impl Into<String>) -> Self {
        Rejection {
            class: ErrorClass::UserData,
            reason: reason.into(),
        }
    }
}

/// A trade-flow stage: Order, Payment or Inventory, or a test stage.
///
/// Every input topic of a stage is co-partitioned: partition N of each input and
/// of each store's changelog belongs to the same shard, with one `State` per
/// owned partition.
pub trait Stage: 'static {
    /// The stores of one partition.
    type State: PartitionStores;

    /// Service name, used in changelog topic names, dead-letter headers and metrics.
    fn name(&self) -> &'static str;

    /// The topics this stage reads, all with the same partition count.
    fn input_topics(&self) -> &[&'static str];

    /// Applies one event. Emitted events go to `out`; a `Rejection` sends the
    /// input record to the dead-letter topic. Must not panic on any input.
    fn process(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut Self::State,
        out: &mut Outbox,
    ) -> Result<(), Rejection>;

    /// The wire formats of this stage's topics (which outputs are written as
    /// Avro, how Avro inputs are read); read once when its shard is made.
    /// Default: rkyv everywhere.
    fn wire_formats(&self) -> WireFormats {
        WireFormats::default()
    }
}

/// Why an emitted event was not put into the outbox.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event is not valid (see [`EncodeError`]).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The topic is written as Avro and the event does not fit its schema.
    #[error("{topic} is written as Avro: {source}")]
    Avro {
        topic: &'static str,
        #[source]
        source: AvroError,
    },
}

/// One record waiting in the outbox, as offsets into the outbox's byte arena.
#[derive(Clone, Copy, Debug)]
pub struct OutboxEntry {
    pub topic: &'static str,
    pub partition: PartitionId,
    key: (u32, u32),
    payload: (u32, u32),
}

/// A record on its way to a dead-letter topic, with the reason in its headers.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub original_topic: &'a str,
    pub partition: PartitionId,
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub service: &'a str,
    pub class: ErrorClass,
    pub reason: &'a str,
}

/// Header names on dead-letter records (compare Kafka Streams' `__streams.errors.*`).
pub mod dlq_headers {
    pub const CLASS: &str = "tradeflow.error.class";
    pub const REASON: &str = "tradeflow.error.reason";
    pub const TOPIC: &str = "tradeflow.error.topic";
    pub const PARTITION: &str = "tradeflow.error.partition";
    pub const OFFSET: &str = "tradeflow.error.offset";
    pub const TIMESTAMP: &str = "tradeflow.error.timestamp";
    pub const SERVICE: &str = "tradeflow.error.service";
    pub const ATTEMPTS: &str = "tradeflow.error.attempts";
}

/// A dead-letter record copied out of the consumer's buffer. Rare by nature,
/// so it may allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDeadLetter {
    pub topic: String,
    pub partition: PartitionId,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Events a stage emitted while processing, encoded into one reused arena and
/// partitioned like Kafka's Java clients (murmur2 of the key), so the shard can
/// hand them to its producer without further copies or allocation.
pub struct Outbox {
    encoder: Encoder,
    /// Output topics written as Avro (empty: rkyv everywhere).
    avro: Vec<(&'static str, AvroWriter)>,
    bytes: Vec<u8>,
    entries: Vec<OutboxEntry>,
    dead_letters: Vec<PendingDeadLetter>,
    partitions: i32,
}

impl Outbox {
    /// `partitions`: the partition count of every topic of the flow.
    pub fn new(partitions: i32) -> Self {
        Outbox {
            encoder: Encoder::new(),
            avro: Vec::new(),
            bytes: Vec::with_capacity(64 * 1024),
            entries: Vec::with_capacity(256),
            dead_letters: Vec::new(),
            partitions,
        }
    }

    /// Writes the topics `formats` names as Avro, the others as rkyv.
    pub fn with_wire_formats(mut self, formats: &WireFormats) -> Self {
        self.avro = formats
            .avro_topics()
            .map(|(topic, writer)| (topic, writer.clone()))
            .collect();
        self
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Encodes `event` for `topic` with `key` (which decides the partition),
    /// as rkyv or, for a topic written as Avro, in Confluent's Avro form.
    pub fn emit(
        &mut self,
        topic: &'static str,
        key: &[u8],
        event: &Event,
    ) -> Result<(), EmitError> {
        let partition = partition_for(key, self.partitions);
        // Validated as rkyv either way: Avro records obey the same rules.
        let frame = self.encoder.encode(event)?;
        let key_start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(key);
        let payload_start = self.bytes.len() as u32;
        match self.avro.iter().find(|(t, _)| *t == topic) {
            None => self.bytes.extend_from_slice(frame),
            Some((_, writer)) => {
                let datum = match writer.schema.encode(event) {
                    Ok(datum) => datum,
                    Err(source) => {
                        self.bytes.truncate(key_start as usize);
                        return Err(EmitError::Avro { topic, source });
                    }
                };
                self.bytes.push(CONFLUENT_MAGIC_BYTE);
                self.bytes
                    .extend_from_slice(&writer.registry_id.to_be_bytes());
                self.bytes.extend_from_slice(&datum);
            }
        }
        self.entries.push(OutboxEntry {
            topic,
            partition,
            key: (key_start, payload_start),
            payload: (payload_start, self.bytes.len() as u32),
        });
        Ok(())
    }

    /// Queues the original record for its dead-letter topic, in the input's
    /// partition, with headers naming the cause.
    pub fn dead_letter(&mut self, letter: DeadLetter<'_>) {
        self.dead_letters.push(PendingDeadLetter {
            topic: letter.topic.to_string(),
            partition: letter.partition,
            key: letter.key.map(<[u8]>::to_vec),
            payload: letter.payload.map(<[u8]>::to_vec),
            headers: vec![
                (
                    dlq_headers::CLASS,
                    letter.class.as_str().as_bytes().to_vec(),
                ),
                (dlq_headers::REASON, letter.reason.as_bytes().to_vec()),
                (
                    dlq_headers::TOPIC,
                    letter.original_topic.as_bytes().to_vec(),
                ),
                (
                    dlq_headers::PARTITION,
                    letter.partition.0.to_string().into_bytes(),
                ),
                (
                    dlq_headers::OFFSET,
                    letter.offset.0.to_string().into_bytes(),
                ),
                (
                    dlq_headers::TIMESTAMP,
                    letter.timestamp_ms.to_string().into_bytes(),
                ),
                (dlq_headers::SERVICE, letter.service.as_bytes().to_vec()),
                (dlq_headers::ATTEMPTS, b"1".to_vec()),
            ],
        });
    }

    pub fn dead_letters(&self) -> &[PendingDeadLetter] {
        &self.dead_letters
    }

    /// Bytes of encoded keys and payloads waiting in the outbox.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Events emitted (dead letters not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dead_letters.is_empty()
    }

    /// Each entry with its key and payload bytes.
    pub fn iter(&self) -> impl Iterator<Item = (OutboxEntry, &[u8], &[u8])> {
        self.entries.iter().map(|e| {
            (
                *e,
                &self.bytes[e.key.0 as usize..e.key.1 as usize],
                &self.bytes[e.payload.0 as usize..e.payload.1 as usize],
            )
        })
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
        self.dead_letters.clear();
    }

    /// Drops what was emitted after `mark` (see [`Outbox::mark`]): a stage that
    /// rejects an event must not leave half its outputs behind.
    pub fn truncate(&mut self, mark: (usize, usize)) {
        self.entries.truncate(mark.0);
        self.bytes.truncate(mark.1);
    }

    pub fn mark(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes.len())
    }
}
