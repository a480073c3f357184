//! The two forms of the flow's record values, as the flow's clients outside
//! the engine write and read them (loadgen, and `tradeflow audit` and
//! `tradeflow demo`): framed rkyv (the default) and Confluent's Avro form
//! (magic byte 0, the registry's 4-byte schema id, an Avro datum), per topic
//! as a core map's `[wire.value_format]` sets them for the engine
//! (docs/SCHEMAS.md). Here, beside [`crate::client`], so that those readers
//! share one decoder without the engine's binary linking the load generator.
//!
//! Owns: [`ValueFormats`] (which topics loadgen writes as Avro, under the
//! ids the registry gave their schemas when loadgen registered or looked
//! them up at start, through [`crate::client`] as `tradeflow run` does;
//! and the registry it asks about ids it reads), the [`ValueWriter`] of the
//! sender and the [`ValueReader`] of every consumer (the drive's outcome
//! reader, the audit, `record`), and [`ValueError`].
//!
//! The first byte decides: `codecs::RKYV_MAGIC` is rkyv (exactly
//! `codecs::decode`); `0` is Confluent's Avro form, its id looked up in the
//! ids registered at start, then in the reader's cache, then once through
//! the registry (`GET /schemas/ids/{id}`), every answer, known or not,
//! cached; anything else is refused (`wrong_magic`). A `0` record whose id
//! is one of the pre-upgrade rkyv table (101…1001) is a legacy frame unless
//! the registry has that id as a tradeflow value schema; then it is read as
//! whichever of the two its bytes validate as, and refused when both (the
//! engine's rule, `engine::wire`, docs/SCHEMAS.md).
//! Must never: ask the registry per record, write a topic as Avro under an
//! id the registry did not give, or write an event that the rkyv form would
//! refuse (every event is validated as rkyv first, as the engine does).

use std::collections::HashMap;
use std::sync::Arc;

use crate::client::{ClientError, ValueSchemaLookup};
use codecs::avro::{latest_value_schema, value_subject, PreparedSchema};
use codecs::topics::TopicNamespace;
use codecs::{DecodeError, Encoder, Event, EventSchema, CONFLUENT_MAGIC_BYTE};

/// Why a value could not be written or read in its form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a valid rkyv (or legacy) frame, and not Avro either.
    #[error(transparent)]
    Rkyv(#[from] DecodeError),
    /// A Confluent-framed record and no registry to ask about its id.
    #[error("schema id {id}: a Confluent-framed record, but no --schema-registry was given")]
    NoRegistry { id: u32 },
    /// Valid both as a legacy rkyv frame and as Avro under a registry id.
    #[error(
        "ambiguous record: id {id} is both a legacy rkyv table id ({legacy}) and a registry \
         schema id, and the bytes are valid as both"
    )]
    AmbiguousFrame { id: u32, legacy: EventSchema },
    #[error("unknown schema id {id}: the schema registry has no schema with this id")]
    UnknownSchemaId { id: u32 },
    #[error("schema id {id} is not a tradeflow value schema: {cause}")]
    UnreadableSchema { id: u32, cause: String },
    /// Not cached: the next record of the id asks again.
    #[error("schema id {id}: the schema registry could not be asked: {cause}")]
    RegistryUnreachable { id: u32, cause: String },
    #[error("Avro record of schema id {id} is invalid: {cause}")]
    InvalidAvro { id: u32, cause: String },
    /// An event the flow refuses, or one its topic's schema cannot carry.
    #[error("encoding for {topic}: {cause}")]
    Encode { topic: String, cause: String },
}

/// Why the formats could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum ValueFormatsError {
    #[error("{0} is written as Avro, which needs a schema registry: give --schema-registry URL")]
    NoRegistry(String),
    #[error("{0} is not a topic of the flow")]
    NotAFlowTopic(String),
    #[error("the Avro schema of {topic}: {reason}")]
    Schema { topic: &'static str, reason: String },
    #[error("registering the schemas loadgen writes: {0}")]
    Registry(#[from] ClientError),
}

/// A topic written as Avro: the id its schema has in the registry.
#[derive(Clone, Debug)]
struct AvroTopic {
    topic: &'static str,
    registry_id: u32,
    schema: Arc<PreparedSchema>,
}

/// Which topics are written as Avro, and which registry to ask about ids
/// read. The default writes and reads rkyv only.
#[derive(Clone, Debug, Default)]
pub struct ValueFormats {
    registry: Option<String>,
    avro: Vec<AvroTopic>,
}

impl ValueFormats {
    /// Reads Avro as well as rkyv, asking the registry at `url` about ids;
    /// writes the logical topics in `avro_topics` as Avro, after registering
    /// (or finding, when already there) the latest value schema of each
    /// under `<namespace>.<topic>-value`, as `tradeflow run` does. Without
    /// `url`, any Avro topic is an error.
    pub fn new(
        registry: Option<&str>,
        namespace: &TopicNamespace,
        avro_topics: &[&str],
    ) -> Result<Self, ValueFormatsError> {
        let mut topics: Vec<&'static str> = Vec::new();
        for name in avro_topics {
            let topic = codecs::topics::ALL
                .iter()
                .copied()
                .find(|t| t == name)
                .ok_or_else(|| ValueFormatsError::NotAFlowTopic(name.to_string()))?;
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        let Some(url) = registry else {
            return match topics.first() {
                Some(topic) => Err(ValueFormatsError::NoRegistry(topic.to_string())),
                None => Ok(ValueFormats::default()),
            };
        };
        let registered = crate::client::register_value_schemas(url, namespace, &topics)?;
        let mut avro = Vec::new();
        for topic in topics {
            let subject = value_subject(&namespace.physical(topic));
            let schema_error = |reason: String| ValueFormatsError::Schema { topic, reason };
            let schema = latest_value_schema(topic)
                .ok_or_else(|| schema_error("no Avro schema in this build".into()))?;
            let registry_id = registered
                .iter()
                .find(|r| r.subject == subject)
                .map(|r| r.id)
                .ok_or_else(|| schema_error(format!("{subject} was not registered")))?;
            let schema = PreparedSchema::new(schema).map_err(|e| schema_error(e.to_string()))?;
            avro.push(AvroTopic {
                topic,
                registry_id,
                schema: Arc::new(schema),
            });
        }
        Ok(ValueFormats {
            registry: Some(url.to_string()),
            avro,
        })
    }

    /// The topics written as Avro, with their registry ids.
    pub fn avro_topics(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.avro.iter().map(|a| (a.topic, a.registry_id))
    }

    /// A writer for one sender.
    pub fn writer(&self) -> ValueWriter {
        ValueWriter {
            rkyv: Encoder::new(),
            avro: self.avro.clone(),
            frame: Vec::with_capacity(256),
        }
    }

    /// A reader for one consumer: it knows the ids registered at start and
    /// caches what the registry answers about others.
    pub fn reader(&self) -> ValueReader {
        ValueReader {
            registry: self.registry.clone(),
            known: self
                .avro
                .iter()
                .map(|a| (a.registry_id, Ok(a.schema.clone())))
                .collect(),
        }
    }
}

/// Encodes events in their topic's form, into buffers it reuses.
pub struct ValueWriter {
    rkyv: Encoder,
    avro: Vec<AvroTopic>,
    frame: Vec<u8>,
}

impl ValueWriter {
    /// `event` as the value of a record on `topic` (logical name).
    pub fn encode(&mut self, topic: &str, event: &Event) -> Result<&[u8], ValueError> {
        let encode = |cause: String| ValueError::Encode {
            topic: topic.to_string(),
            cause,
        };
        // Validated as rkyv either way: Avro records obey the same rules.
        let rkyv = self.rkyv.encode(event).map_err(|e| encode(e.to_string()))?;
        let Some(avro) = self.avro.iter().find(|a| a.topic == topic) else {
            return Ok(rkyv);
        };
        let datum = avro
            .schema
            .encode(event)
            .map_err(|e| encode(e.to_string()))?;
        self.frame.clear();
        self.frame.push(CONFLUENT_MAGIC_BYTE);
        self.frame
            .extend_from_slice(&avro.registry_id.to_be_bytes());
        self.frame.extend_from_slice(&datum);
        Ok(&self.frame)
    }
}

/// Decodes record values of either form (see the module doc).
pub struct ValueReader {
    registry: Option<String>,
    /// Ids registered at start, and every answer of the registry since.
    known: HashMap<u32, Result<Arc<PreparedSchema>, ValueError>>,
}

impl ValueReader {
    /// The event a record value holds, by its first byte: rkyv, or
    /// Confluent's form (Avro, or a legacy frame).
    pub fn decode(&mut self, payload: &[u8]) -> Result<Event, ValueError> {
        if payload.first() == Some(&CONFLUENT_MAGIC_BYTE) {
            return self.decode_magic_zero(payload);
        }
        Ok(codecs::decode(payload)?.to_event())
    }

    #[cold]
    fn decode_magic_zero(&mut self, payload: &[u8]) -> Result<Event, ValueError> {
        let (id, datum) = codecs::avro::unframe(payload).map_err(|_| {
            ValueError::Rkyv(DecodeError::TruncatedHeader {
                len: payload.len(),
                header: codecs::LEGACY_FRAME_HEADER_BYTES,
            })
        })?;
        let reads_avro = self.registry.is_some() || !self.known.is_empty();
        let Some(legacy_schema) = EventSchema::from_legacy_id(id) else {
            if !reads_avro {
                return Err(ValueError::NoRegistry { id });
            }
            let schema = self.schema_of(id)?;
            return decode_avro(id, &schema, datum);
        };
        let legacy = codecs::decode_legacy(payload).map(|e| e.to_event());
        let schema = if reads_avro {
            match self.schema_of(id) {
                Ok(schema) => Some(schema),
                // No tradeflow value schema under this id: only legacy fits.
                Err(ValueError::UnknownSchemaId { .. } | ValueError::UnreadableSchema { .. }) => {
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let Some(schema) = schema else {
            return Ok(legacy?);
        };
        match (legacy, schema.decode(datum)) {
            (Ok(_), Ok(_)) => Err(ValueError::AmbiguousFrame {
                id,
                legacy: legacy_schema,
            }),
            (Ok(event), Err(_)) => Ok(event),
            (Err(_), _) => decode_avro(id, &schema, datum),
        }
    }

    fn schema_of(&mut self, id: u32) -> Result<Arc<PreparedSchema>, ValueError> {
        if let Some(answer) = self.known.get(&id) {
            return answer.clone();
        }
        let Some(url) = &self.registry else {
            return Err(ValueError::UnknownSchemaId { id });
        };
        let answer = match crate::client::value_schema_by_id(url, id) {
            Ok(ValueSchemaLookup::Readable(schema)) => Ok(schema),
            Ok(ValueSchemaLookup::NotRegistered) => Err(ValueError::UnknownSchemaId { id }),
            Ok(ValueSchemaLookup::Unreadable(cause)) => {
                Err(ValueError::UnreadableSchema { id, cause })
            }
            Err(e) => {
                return Err(ValueError::RegistryUnreachable {
                    id,
                    cause: e.to_string(),
                })
            }
        };
        tracing::debug!(
            id,
            known = answer.is_ok(),
            "schema id resolved through the registry"
        );
        self.known.insert(id, answer.clone());
        answer
    }
}

fn decode_avro(id: u32, schema: &PreparedSchema, datum: &[u8]) -> Result<Event, ValueError> {
    schema.decode(datum).map_err(|e| ValueError::InvalidAvro {
        id,
        cause: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::testing::sample_events;

    fn prepared(topic: &str) -> Arc<PreparedSchema> {
        Arc::new(
            PreparedSchema::new(latest_value_schema(topic).expect("a flow topic")).expect("parses"),
        )
    }

    /// Formats writing `topic` as Avro under `id`, with no registry to ask.
    fn avro_without_registry(topic: &'static str, id: u32) -> ValueFormats {
        ValueFormats {
            registry: None,
            avro: vec![AvroTopic {
                topic,
                registry_id: id,
                schema: prepared(topic),
            }],
        }
    }

    #[test]
    fn writes_the_avro_topics_as_avro_and_the_others_as_rkyv_and_reads_both_back() {
        let formats = avro_without_registry(codecs::topics::ORDER_CREATED, 7);
        let mut writer = formats.writer();
        let mut reader = formats.reader();
        for event in sample_events() {
            let topic = codecs::topics::topic_of(event.kind());
            let value = writer.encode(topic, &event).expect("encodes").to_vec();
            if topic == codecs::topics::ORDER_CREATED {
                let (id, datum) = codecs::avro::unframe(&value).expect("Confluent frame");
                assert_eq!(id, 7);
                assert_eq!(prepared(topic).decode(datum).expect("Avro"), event);
                assert!(codecs::decode(&value).is_err(), "not rkyv as well");
            } else {
                assert_eq!(codecs::decode(&value).expect("rkyv").to_event(), event);
            }
            assert_eq!(reader.decode(&value).expect("either form"), event);
        }
    }

    #[test]
    fn without_a_registry_an_unknown_avro_id_is_an_error_and_rkyv_reads_as_before() {
        let formats = avro_without_registry(codecs::topics::ORDER_CREATED, 7);
        let mut reader = formats.reader();
        let event = sample_events()
            .into_iter()
            .find(|e| codecs::topics::topic_of(e.kind()) == codecs::topics::ORDER_CREATED)
            .expect("a sample order");
        let datum = prepared(codecs::topics::ORDER_CREATED)
            .encode(&event)
            .expect("fits");
        assert_eq!(
            reader.decode(&codecs::avro::frame(4242, &datum)),
            Err(ValueError::UnknownSchemaId { id: 4242 })
        );
        assert!(matches!(
            reader.decode(&codecs::avro::frame(7, &[0xff, 0xff])),
            Err(ValueError::InvalidAvro { id: 7, .. })
        ));
        let mut rkyv_only = ValueFormats::default().reader();
        assert_eq!(
            rkyv_only.decode(&codecs::avro::frame(7, &datum)),
            Err(ValueError::NoRegistry { id: 7 })
        );
        assert!(matches!(
            rkyv_only.decode(b"not an event"),
            Err(ValueError::Rkyv(DecodeError::WrongMagic { byte: b'n' }))
        ));
        assert_eq!(
            rkyv_only
                .decode(&codecs::encode_to_vec(&event).expect("rkyv"))
                .expect("rkyv"),
            event
        );
    }

    #[test]
    fn legacy_frames_read_unless_a_known_avro_id_fits_the_bytes_better() {
        let mut rkyv_only = ValueFormats::default().reader();
        // 101 (legacy order.created v1) is a registry id here, and 102 not.
        let formats = avro_without_registry(codecs::topics::ORDER_CREATED, 101);
        let mut with_avro = formats.reader();
        for event in sample_events() {
            let frame = codecs::encode_to_vec(&event).expect("rkyv");
            let legacy = codecs::testing::legacy_frame(&frame).expect("valid frame");
            assert_eq!(rkyv_only.decode(&legacy).expect("legacy"), event);
            assert_eq!(with_avro.decode(&legacy).expect("legacy"), event);
        }
        let order = sample_events()
            .into_iter()
            .find(|e| codecs::topics::topic_of(e.kind()) == codecs::topics::ORDER_CREATED)
            .expect("a sample order");
        let datum = prepared(codecs::topics::ORDER_CREATED)
            .encode(&order)
            .expect("fits");
        assert_eq!(
            with_avro
                .decode(&codecs::avro::frame(101, &datum))
                .expect("Avro"),
            order
        );
    }

    #[test]
    fn an_avro_topic_needs_a_registry_and_a_flow_topic() {
        let namespace = TopicNamespace::none();
        assert!(matches!(
            ValueFormats::new(None, &namespace, &[codecs::topics::ORDER_CREATED]),
            Err(ValueFormatsError::NoRegistry(_))
        ));
        assert!(matches!(
            ValueFormats::new(Some("http://127.0.0.1:9"), &namespace, &["orders"]),
            Err(ValueFormatsError::NotAFlowTopic(_))
        ));
        assert!(ValueFormats::new(None, &namespace, &[])
            .expect("rkyv")
            .avro_topics()
            .next()
            .is_none());
    }
}
