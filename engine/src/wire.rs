//! Per-topic wire formats of record values: the framed rkyv form (the
//! default, read in place) and Confluent's Avro form (magic byte 0, the
//! registry's 4-byte schema id, an Avro datum) for topics that other teams
//! produce or consume.
//!
//! Owns: [`WireFormats`] (which output topics this node writes as Avro, with
//! the registry id of each one's schema, and how to ask the registry about an
//! id), the per-shard [`WireReader`] that decodes either form of an input
//! record, and [`WireError`], the dead-letter causes of the Avro form.
//!
//! Both forms start with the same 5 bytes (magic 0, big-endian id), so the
//! framing and the id decide: a record that is a valid rkyv frame (an id of
//! the fixed rkyv table, that schema's exact payload size, a payload that
//! bytecheck accepts) is rkyv and costs exactly what [`codecs::decode`]
//! costs; only a record that is not is read as Avro. Its id is looked up in
//! the ids known at start, then in the shard's cache, then once through the
//! [`SchemaResolver`] (the registry); the answer, known or unknown, is
//! cached, so no record costs an HTTP request after the first of its id. An
//! Avro record is decoded into an event and re-framed as rkyv in a buffer
//! the reader owns, so stages see one form.
//!
//! Must never: talk HTTP itself (the resolver is the caller's), ask about an
//! id twice once the registry has answered, change the cost of the rkyv path,
//! or be shared between shards (each shard has its own reader and cache).

use std::collections::HashMap;
use std::sync::Arc;

use codecs::avro::{AvroError, PreparedSchema};
use codecs::{decode, DecodeError, Encoder, EventRef, SchemaId};

use crate::stage::ErrorClass;

/// The form of a topic's record values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// Framed rkyv, read in place (the default on the flow's internal hops).
    #[default]
    Rkyv,
    /// Confluent's wire format: magic 0, the registry's schema id, Avro binary.
    Avro,
}

impl ValueFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueFormat::Rkyv => "rkyv",
            ValueFormat::Avro => "avro",
        }
    }
}

/// What the registry says about a schema id.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// A value schema this build reads.
    Readable(Arc<PreparedSchema>),
    /// The registry has no schema with this id.
    NotRegistered,
    /// The registry has it, but it is no value schema this build reads
    /// (the reason says what it is).
    Unreadable(String),
}

/// Asks a schema registry about an id: `GET /schemas/ids/{id}` in practice.
/// Called from a shard's thread, once per unknown id per shard; `Err` means
/// the registry could not be asked (unreachable, garbage), which is not
/// cached.
pub trait SchemaResolver: Send + Sync {
    fn resolve(&self, id: u32) -> Result<Resolution, String>;
}

/// An output topic written as Avro: its schema and the id the registry gave it.
#[derive(Clone, Debug)]
pub struct AvroWriter {
    pub registry_id: u32,
    pub schema: Arc<PreparedSchema>,
}

/// The wire formats of one node, fixed at start and cloned into every shard.
/// The default is rkyv everywhere, reading no Avro.
#[derive(Clone, Default)]
pub struct WireFormats {
    /// Logical output topics written as Avro.
    writers: Vec<(&'static str, AvroWriter)>,
    /// Ids known at start (what the node registered).
    readers: HashMap<u32, Arc<PreparedSchema>>,
    resolver: Option<Arc<dyn SchemaResolver>>,
}

impl std::fmt::Debug for WireFormats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireFormats")
            .field(
                "avro_topics",
                &self.writers.iter().map(|(t, w)| (*t, w.registry_id)),
            )
            .field("known_ids", &self.readers.keys().collect::<Vec<_>>())
            .field("registry", &self.resolver.is_some())
            .finish()
    }
}

impl WireFormats {
    /// Reads Avro on every input, asking `resolver` about ids it has not seen.
    pub fn with_registry(resolver: Arc<dyn SchemaResolver>) -> Self {
        WireFormats {
            resolver: Some(resolver),
            ..WireFormats::default()
        }
    }

    /// Writes `topic` (logical name) as Avro with `writer`'s schema and id;
    /// the id is also known for reading.
    pub fn write_avro(mut self, topic: &'static str, writer: AvroWriter) -> Self {
        self.readers
            .insert(writer.registry_id, writer.schema.clone());
        self.writers.retain(|(t, _)| *t != topic);
        self.writers.push((topic, writer));
        self
    }

    /// Knows `id` as `schema` without asking the registry.
    pub fn read_avro(mut self, id: u32, schema: Arc<PreparedSchema>) -> Self {
        self.readers.insert(id, schema);
        self
    }

    /// The Avro writer of `topic`, if the topic is written as Avro.
    #[inline]
    pub fn writer(&self, topic: &str) -> Option<&AvroWriter> {
        self.writers
            .iter()
            .find_map(|(t, w)| (*t == topic).then_some(w))
    }

    /// The format `topic` is written in.
    pub fn format_of(&self, topic: &str) -> ValueFormat {
        if self.writer(topic).is_some() {
            ValueFormat::Avro
        } else {
            ValueFormat::Rkyv
        }
    }

    /// The topics written as Avro, with their registry ids.
    pub fn avro_topics(&self) -> impl Iterator<Item = (&'static str, &AvroWriter)> {
        self.writers.iter().map(|(t, w)| (*t, w))
    }

    /// Whether a record that is not rkyv is looked at as Avro.
    pub fn reads_avro(&self) -> bool {
        self.resolver.is_some() || !self.readers.is_empty()
    }
}

/// Why a record is neither a valid rkyv frame nor a readable Avro record.
/// Every variant dead-letters the record; the message is the DLQ's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a valid rkyv frame, and not Avro either (or no Avro is read).
    #[error(transparent)]
    Rkyv(#[from] DecodeError),
    /// The registry does not know the record's schema id.
    #[error("unknown schema id {id}: the schema registry has no schema with this id")]
    UnknownSchemaId { id: u32 },
    /// The registry knows the id, but not as a value schema of this build.
    #[error("schema id {id} is not a tradeflow value schema: {cause}")]
    UnreadableSchema { id: u32, cause: String },
    /// The registry could not be asked about the id (not cached: the next
    /// record with this id asks again).
    #[error("schema id {id}: the schema registry could not be asked: {cause}")]
    RegistryUnreachable { id: u32, cause: String },
    /// The datum does not decode with its schema, or decodes to an event the
    /// flow refuses (no event id, ...).
    #[error("Avro record of schema id {id} is invalid: {cause}")]
    InvalidAvro { id: u32, cause: String },
}

impl WireError {
    /// A stable snake_case code, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Rkyv(e) => e.reason(),
            WireError::UnknownSchemaId { .. } => "unknown_schema_id",
            WireError::UnreadableSchema { .. } => "unreadable_schema",
            WireError::RegistryUnreachable { .. } => "schema_registry_unreachable",
            WireError::InvalidAvro { .. } => "invalid_avro",
        }
    }

    /// Bad data, except when the registry could not be asked.
    pub fn class(&self) -> ErrorClass {
        match self {
            WireError::RegistryUnreachable { .. } => ErrorClass::External,
            _ => ErrorClass::UserData,
        }
    }
}

/// One shard's reader of input records in either form.
pub struct WireReader {
    formats: WireFormats,
    /// Answers of the registry, known or not.
    cache: HashMap<u32, Result<Arc<PreparedSchema>, WireError>>,
    /// Re-frames Avro records as rkyv, so stages see one form.
    transcoder: Encoder,
}

impl WireReader {
    pub fn new(formats: WireFormats) -> Self {
        WireReader {
            formats,
            cache: HashMap::new(),
            transcoder: Encoder::new(),
        }
    }

    /// Decodes a record value: rkyv in place, or Avro through the registry.
    #[inline]
    pub fn decode<'a>(&'a mut self, frame: &'a [u8]) -> Result<EventRef<'a>, WireError> {
        match decode(frame) {
            Ok(event) => Ok(event),
            Err(rkyv) => self.decode_avro(frame, rkyv),
        }
    }

    #[cold]
    #[inline(never)]
    fn decode_avro<'a>(
        &'a mut self,
        frame: &[u8],
        rkyv: DecodeError,
    ) -> Result<EventRef<'a>, WireError> {
        if !self.formats.reads_avro() {
            return Err(rkyv.into());
        }
        let (id, datum) = match rkyv {
            DecodeError::Empty
            | DecodeError::TruncatedHeader { .. }
            | DecodeError::WrongMagic { .. } => return Err(rkyv.into()),
            _ => codecs::avro::unframe(frame).map_err(|_| WireError::Rkyv(rkyv))?,
        };
        let schema = match self.schema_of(id) {
            Ok(schema) => schema,
            // An id of the rkyv table that the registry does not know: a
            // broken rkyv frame; say what is wrong with it as rkyv.
            Err(WireError::UnknownSchemaId { .. }) if SchemaId::from_u32(id).is_some() => {
                return Err(rkyv.into())
            }
            Err(e) => return Err(e),
        };
        let invalid = |cause: String| WireError::InvalidAvro { id, cause };
        let event = schema
            .decode(datum)
            .map_err(|e: AvroError| invalid(e.to_string()))?;
        let rkyv_frame = self
            .transcoder
            .encode(&event)
            .map_err(|e| invalid(e.to_string()))?;
        decode(rkyv_frame).map_err(|e| invalid(e.to_string()))
    }

    fn schema_of(&mut self, id: u32) -> Result<Arc<PreparedSchema>, WireError> {
        if let Some(schema) = self.formats.readers.get(&id) {
            return Ok(schema.clone());
        }
        if let Some(answer) = self.cache.get(&id) {
            return answer.clone();
        }
        let Some(resolver) = &self.formats.resolver else {
            return Err(WireError::UnknownSchemaId { id });
        };
        let answer = match resolver.resolve(id) {
            Ok(Resolution::Readable(schema)) => Ok(schema),
            Ok(Resolution::NotRegistered) => Err(WireError::UnknownSchemaId { id }),
            Ok(Resolution::Unreadable(cause)) => Err(WireError::UnreadableSchema { id, cause }),
            Err(cause) => return Err(WireError::RegistryUnreachable { id, cause }),
        };
        tracing::info!(
            id,
            known = answer.is_ok(),
            "schema id resolved through the registry"
        );
        self.cache.insert(id, answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::avro::latest_value_schema;
    use codecs::testing::sample_events;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingRegistry {
        known: HashMap<u32, Arc<PreparedSchema>>,
        asked: AtomicUsize,
    }

    impl SchemaResolver for CountingRegistry {
        fn resolve(&self, id: u32) -> Result<Resolution, String> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Ok(match self.known.get(&id) {
                Some(schema) => Resolution::Readable(schema.clone()),
                None => Resolution::NotRegistered,
            })
        }
    }

    fn prepared(topic: &str) -> Arc<PreparedSchema> {
        let schema = latest_value_schema(topic).expect("a flow topic");
        Arc::new(PreparedSchema::new(schema).expect("schemas parse"))
    }

    #[test]
    fn reads_rkyv_and_avro_alike_and_asks_the_registry_once_per_id() {
        let topic = codecs::topics::PAYMENT_COMPLETED;
        let schema = prepared(topic);
        let registry = Arc::new(CountingRegistry {
            known: HashMap::from([(7, schema.clone())]),
            asked: AtomicUsize::new(0),
        });
        let mut reader = WireReader::new(WireFormats::with_registry(registry.clone()));
        let event = sample_events()
            .into_iter()
            .find(|e| codecs::topics::topic_of(e.kind()) == topic)
            .expect("a sample payment.completed");
        let rkyv = codecs::encode_to_vec(&event).expect("encodes");
        let avro = codecs::avro::frame(7, &schema.encode(&event).expect("fits"));
        for _ in 0..3 {
            assert_eq!(reader.decode(&rkyv).expect("rkyv").to_event(), event);
            assert_eq!(reader.decode(&avro).expect("avro").to_event(), event);
        }
        assert_eq!(registry.asked.load(Ordering::Relaxed), 1, "rkyv never asks");

        let unknown = codecs::avro::frame(4242, &schema.encode(&event).expect("fits"));
        for _ in 0..3 {
            let e = reader.decode(&unknown).expect_err("unknown id");
            assert_eq!(e, WireError::UnknownSchemaId { id: 4242 });
            assert_eq!(e.reason(), "unknown_schema_id");
        }
        assert_eq!(registry.asked.load(Ordering::Relaxed), 2, "cached");

        // A broken rkyv frame stays an rkyv error.
        let mut truncated = rkyv.clone();
        truncated.pop();
        assert_eq!(
            reader.decode(&truncated).expect_err("truncated").reason(),
            "truncated_payload"
        );
        // A known id with garbage behind it.
        let garbage = codecs::avro::frame(7, &[0xff; 3]);
        assert_eq!(
            reader.decode(&garbage).expect_err("garbage").reason(),
            "invalid_avro"
        );
    }

    #[test]
    fn without_a_registry_a_non_rkyv_record_is_an_rkyv_error() {
        let mut reader = WireReader::new(WireFormats::default());
        let avro = codecs::avro::frame(7, &[2, 4, 6]);
        assert_eq!(
            reader.decode(&avro).expect_err("not rkyv"),
            WireError::Rkyv(DecodeError::UnknownSchema { id: 7 })
        );
    }
}
