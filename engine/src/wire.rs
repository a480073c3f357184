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
//! The first byte decides. [`codecs::RKYV_MAGIC`] is an rkyv frame, read
//! exactly as [`codecs::decode`] reads it (the hot path, nothing added but
//! one compare). `0` is Confluent's wire format: its 4-byte id is a registry
//! id, looked up in the ids known at start, then in the shard's cache, then
//! once through the [`SchemaResolver`] (the registry); the answer, known or
//! unknown, is cached, so no record costs an HTTP request after the first of
//! its id. An Avro record is decoded into an event and re-framed as rkyv in
//! a buffer the reader owns, so stages see one form. Any other first byte is
//! dead-lettered (`wrong_magic`, the byte named).
//!
//! Records written before the rkyv magic byte existed (legacy frames: magic
//! `0`, an id of the old fixed table 101…1001, the same archive) also start
//! with `0`. One whose id is not a table id is Confluent's. One whose id is
//! a table id is read as legacy rkyv when the registry does not know the id
//! as a tradeflow value schema (no registry, not registered, or registered
//! as something else); when the registry knows it as a tradeflow schema, it
//! is read as whichever of the two it validates as, and dead-lettered
//! (`ambiguous_frame`) when it validates as both: never guessed.
//!
//! Must never: talk HTTP itself (the resolver is the caller's), ask about an
//! id twice once the registry has answered, change the cost of the rkyv path,
//! or be shared between shards (each shard has its own reader and cache).

use std::collections::HashMap;
use std::sync::Arc;

use codecs::avro::{AvroError, PreparedSchema};
use codecs::{
    decode, decode_legacy, DecodeError, Encoder, EventRef, EventSchema, CONFLUENT_MAGIC_BYTE,
};

use crate::stage::ErrorClass;

/// The form of a topic's record values: the core map's
/// `wire.value_format."<topic>"` type (framed rkyv by default).
pub use tuning::ValueFormat;

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
    /// Not a valid rkyv frame (or legacy frame), and not Avro either (or no
    /// Avro is read).
    #[error(transparent)]
    Rkyv(#[from] DecodeError),
    /// Magic `0` and an id of the pre-upgrade table that the registry also
    /// has as a tradeflow value schema, with bytes that are valid both as a
    /// legacy rkyv frame and as an Avro datum of that schema: never guessed.
    #[error(
        "ambiguous record: id {id} is both a legacy rkyv table id ({legacy}) and a registry \
         schema id, and the bytes are valid as both"
    )]
    AmbiguousFrame { id: u32, legacy: EventSchema },
    /// A Confluent-framed record (magic `0`, a registry id that is no legacy
    /// table id) on a node that reads no Avro.
    #[error(
        "schema id {id}: a Confluent-framed record, but this node reads no Avro \
         (start it with --schema-registry URL)"
    )]
    NoRegistry { id: u32 },
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
            WireError::UnknownSchemaId { .. } | WireError::NoRegistry { .. } => "unknown_schema_id",
            WireError::UnreadableSchema { .. } => "unreadable_schema",
            WireError::RegistryUnreachable { .. } => "schema_registry_unreachable",
            WireError::InvalidAvro { .. } => "invalid_avro",
            WireError::AmbiguousFrame { .. } => "ambiguous_frame",
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
    /// Whether a legacy frame was read (logged once).
    legacy_seen: bool,
}

impl WireReader {
    pub fn new(formats: WireFormats) -> Self {
        WireReader {
            formats,
            cache: HashMap::new(),
            transcoder: Encoder::new(),
            legacy_seen: false,
        }
    }

    /// Decodes a record value by its first byte: rkyv in place, or
    /// Confluent's form (Avro through the registry, or a legacy frame).
    #[inline]
    pub fn decode<'a>(&'a mut self, frame: &'a [u8]) -> Result<EventRef<'a>, WireError> {
        if frame.first() == Some(&CONFLUENT_MAGIC_BYTE) {
            return self.decode_magic_zero(frame);
        }
        // Empty, oversize and any other first byte are refused here too.
        decode(frame).map_err(WireError::Rkyv)
    }

    #[cold]
    #[inline(never)]
    fn decode_magic_zero<'a>(&'a mut self, frame: &'a [u8]) -> Result<EventRef<'a>, WireError> {
        let (id, datum) = codecs::avro::unframe(frame).map_err(|_| {
            WireError::Rkyv(DecodeError::TruncatedHeader {
                len: frame.len(),
                header: codecs::LEGACY_FRAME_HEADER_BYTES,
            })
        })?;
        let Some(legacy_schema) = EventSchema::from_legacy_id(id) else {
            // A registry id and nothing else.
            if !self.formats.reads_avro() {
                return Err(WireError::NoRegistry { id });
            }
            let schema = self.schema_of(id)?;
            return self.decode_avro(id, &schema, datum);
        };
        let legacy = decode_legacy(frame);
        let schema = if self.formats.reads_avro() {
            match self.schema_of(id) {
                Ok(schema) => Some(schema),
                // The registry has no tradeflow value schema under this id:
                // the record can only be a legacy frame.
                Err(WireError::UnknownSchemaId { .. } | WireError::UnreadableSchema { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let Some(schema) = schema else {
            self.note_legacy(legacy_schema);
            return legacy.map_err(WireError::Rkyv);
        };
        // Both readings are possible: the bytes decide, and never both.
        let avro = schema.decode(datum);
        match (legacy, avro) {
            (Ok(_), Ok(_)) => Err(WireError::AmbiguousFrame {
                id,
                legacy: legacy_schema,
            }),
            (Ok(event), Err(_)) => {
                self.note_legacy(legacy_schema);
                Ok(event)
            }
            (Err(_), _) => self.decode_avro(id, &schema, datum),
        }
    }

    fn decode_avro(
        &mut self,
        id: u32,
        schema: &PreparedSchema,
        datum: &[u8],
    ) -> Result<EventRef<'_>, WireError> {
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

    /// Says once per reader that pre-upgrade frames are still being read.
    fn note_legacy(&mut self, schema: EventSchema) {
        if !self.legacy_seen {
            self.legacy_seen = true;
            tracing::info!(
                %schema,
                id = schema.legacy_id(),
                "reading a legacy rkyv frame (magic 0 + table id, written before the rkyv magic byte)"
            );
        }
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
    fn without_a_registry_a_confluent_record_is_refused_and_any_other_first_byte_too() {
        let mut reader = WireReader::new(WireFormats::default());
        let avro = codecs::avro::frame(7, &[2, 4, 6]);
        let e = reader.decode(&avro).expect_err("not rkyv");
        assert_eq!(e, WireError::NoRegistry { id: 7 });
        assert!(e.to_string().contains("--schema-registry"), "{e}");
        let e = reader
            .decode(b"{\"type\":\"order.created\"}")
            .expect_err("JSON");
        assert_eq!(e, WireError::Rkyv(DecodeError::WrongMagic { byte: b'{' }));
        assert_eq!(e.reason(), "wrong_magic");
        assert!(e.to_string().contains("magic byte is 0x7b"), "{e}");
        assert_eq!(
            reader.decode(&[]).expect_err("empty"),
            WireError::Rkyv(DecodeError::Empty)
        );
    }

    fn registry_with(known: &[(u32, &str)]) -> Arc<CountingRegistry> {
        Arc::new(CountingRegistry {
            known: known.iter().map(|(id, t)| (*id, prepared(t))).collect(),
            asked: AtomicUsize::new(0),
        })
    }

    /// Every sample event in its legacy frame, with the event.
    fn legacy_samples() -> Vec<(Vec<u8>, codecs::Event)> {
        sample_events()
            .into_iter()
            .map(|event| {
                let frame = codecs::encode_to_vec(&event).expect("encodes");
                let legacy = codecs::testing::legacy_frame(&frame).expect("valid frame");
                (legacy, event)
            })
            .collect()
    }

    #[test]
    fn legacy_frames_are_read_when_no_registry_has_their_id_as_a_tradeflow_schema() {
        // No registry at all: legacy rkyv.
        let mut reader = WireReader::new(WireFormats::default());
        for (legacy, event) in legacy_samples() {
            assert_eq!(reader.decode(&legacy).expect("legacy").to_event(), event);
        }
        // A broken legacy frame says what is wrong with it as rkyv.
        let (mut legacy, _) = legacy_samples().remove(0);
        legacy.pop();
        assert_eq!(
            reader.decode(&legacy).expect_err("truncated").reason(),
            "truncated_payload"
        );

        // A registry that has none of the table ids: legacy, asked once per id.
        let registry = registry_with(&[(7, codecs::topics::PAYMENT_COMPLETED)]);
        let mut reader = WireReader::new(WireFormats::with_registry(registry.clone()));
        let samples = legacy_samples();
        for _ in 0..3 {
            for (legacy, event) in &samples {
                assert_eq!(reader.decode(legacy).expect("legacy").to_event(), *event);
            }
        }
        let mut ids: Vec<_> = samples.iter().map(|(f, _)| f[1..5].to_vec()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(registry.asked.load(Ordering::Relaxed), ids.len());
    }

    #[test]
    fn a_table_id_the_registry_also_has_is_read_by_what_the_bytes_validate_as() {
        let topic = codecs::topics::PAYMENT_COMPLETED;
        let (legacy, event) = legacy_samples()
            .into_iter()
            .find(|(_, e)| codecs::topics::topic_of(e.kind()) == topic)
            .expect("a sample payment.completed");
        let id = EventSchema::PaymentCompletedV1.legacy_id();
        assert_eq!(legacy[1..5], id.to_be_bytes());
        // The registry numbered some schema 401 too: the very id of the
        // legacy payment.completed frames.
        let registry = registry_with(&[(id, topic)]);
        let mut reader = WireReader::new(WireFormats::with_registry(registry.clone()));
        // A legacy frame is no valid Avro datum of the schema: legacy.
        assert_eq!(reader.decode(&legacy).expect("legacy").to_event(), event);
        // An Avro datum under the same id is no valid legacy frame: Avro.
        let avro = codecs::avro::frame(id, &prepared(topic).encode(&event).expect("fits"));
        assert!(codecs::decode_legacy(&avro).is_err());
        assert_eq!(reader.decode(&avro).expect("avro").to_event(), event);
        // Neither: an Avro error, since the registry has the id.
        let garbage = codecs::avro::frame(id, &[0xff; 3]);
        assert_eq!(
            reader.decode(&garbage).expect_err("garbage").reason(),
            "invalid_avro"
        );
        assert_eq!(registry.asked.load(Ordering::Relaxed), 1);
    }
}
