//! The node's wire formats, from its core map's `[wire]` section and the
//! schema registry it registered its schemas with.
//!
//! Owns: the rule that Avro needs a registry (a config error naming the
//! `wire.value_format` keys otherwise), which registry id each Avro output
//! topic is written with (the id its schema got at start), and
//! [`RegistryResolver`], the engine's way of asking the registry about an id
//! it has not seen (`GET /schemas/ids/{id}`, matched against this build's
//! value schemas by canonical form).
//! Must never: ask the registry per record (the engine's shards cache every
//! answer), or let a topic be written as Avro under an id that the registry
//! did not give this node's schema.

use std::sync::Arc;

use codecs::avro::{latest_value_schema, value_subject, PreparedSchema};
use codecs::topics::TopicNamespace;
use engine::wire::{AvroWriter, Resolution, SchemaResolver, WireFormats};
use registry::client::Registered;
use tuning::WireSettings;

/// Why the node's wire formats could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WireSetupError {
    /// Avro on a topic, no registry to give ids.
    #[error(
        "{key} = \"avro\" needs a schema registry: start with --schema-registry URL \
         (or set the topic to \"rkyv\")"
    )]
    NoRegistry { key: String },
    /// An Avro output topic whose schema the node did not register.
    #[error("{topic} is written as Avro but its schema was not registered at start")]
    NotRegistered { topic: String },
    #[error("the Avro schema of {topic}: {reason}")]
    Schema { topic: String, reason: String },
}

/// Asks a Confluent-compatible registry about schema ids.
#[derive(Debug, Clone)]
pub struct RegistryResolver {
    base_url: String,
}

impl RegistryResolver {
    pub fn new(base_url: impl Into<String>) -> Self {
        RegistryResolver {
            base_url: base_url.into(),
        }
    }
}

impl SchemaResolver for RegistryResolver {
    fn resolve(&self, id: u32) -> Result<Resolution, String> {
        use registry::client::ValueSchemaLookup;
        Ok(
            match registry::client::value_schema_by_id(&self.base_url, id)
                .map_err(|e| e.to_string())?
            {
                ValueSchemaLookup::Readable(schema) => Resolution::Readable(schema),
                ValueSchemaLookup::NotRegistered => Resolution::NotRegistered,
                ValueSchemaLookup::Unreadable(reason) => Resolution::Unreadable(reason),
            },
        )
    }
}

/// The wire formats of a node: with a registry, every input reads Avro as
/// well as rkyv (the ids in `registered` known from the start, others asked
/// once), and each topic `settings` sets to Avro that the node writes
/// (`outputs`) is written with the id in `registered`. Without one, rkyv
/// only, and any Avro setting is an error.
pub fn wire_formats(
    settings: &WireSettings,
    registry: Option<&str>,
    namespace: &TopicNamespace,
    outputs: &[&'static str],
    registered: &[Registered],
) -> Result<WireFormats, WireSetupError> {
    let Some(url) = registry else {
        return match settings.avro_topics().next() {
            Some(topic) => Err(WireSetupError::NoRegistry {
                key: format!("wire.value_format.\"{topic}\""),
            }),
            None => Ok(WireFormats::default()),
        };
    };
    let mut formats = WireFormats::with_registry(Arc::new(RegistryResolver::new(url)));
    // Every id this node registered is known for reading without asking the
    // registry: no shard stalls on a lookup for the node's own schemas.
    for r in registered {
        let Some(topic) = codecs::topics::ALL
            .iter()
            .find(|t| value_subject(&namespace.physical(t)) == r.subject)
        else {
            continue;
        };
        if let Some(schema) = latest_value_schema(topic) {
            let schema = PreparedSchema::new(schema).map_err(|e| WireSetupError::Schema {
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
            formats = formats.read_avro(r.id, Arc::new(schema));
        }
    }
    for topic in settings.avro_topics() {
        let Some(&output) = outputs.iter().find(|t| **t == topic) else {
            // Read as Avro like any input; written by someone else.
            continue;
        };
        let schema_error = |reason: String| WireSetupError::Schema {
            topic: topic.to_string(),
            reason,
        };
        let schema = latest_value_schema(output)
            .ok_or_else(|| schema_error("no Avro schema in this build".into()))?;
        let subject = value_subject(&namespace.physical(output));
        let registry_id = registered
            .iter()
            .find(|r| r.subject == subject)
            .map(|r| r.id)
            .ok_or_else(|| WireSetupError::NotRegistered {
                topic: topic.to_string(),
            })?;
        let schema = PreparedSchema::new(schema).map_err(|e| schema_error(e.to_string()))?;
        formats = formats.write_avro(
            output,
            AvroWriter {
                registry_id,
                schema: Arc::new(schema),
            },
        );
    }
    Ok(formats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_without_a_registry_is_a_config_error_naming_the_key() {
        let settings = WireSettings::from_toml_str(
            "[wire.value_format]\n\"payment-service.payment.completed\" = \"avro\"\n",
            &codecs::topics::ALL,
        )
        .expect("valid section");
        let error = wire_formats(
            &settings,
            None,
            &TopicNamespace::default(),
            &[codecs::topics::PAYMENT_COMPLETED],
            &[],
        )
        .expect_err("no registry")
        .to_string();
        assert!(
            error.contains("wire.value_format.\"payment-service.payment.completed\"")
                && error.contains("--schema-registry"),
            "{error}"
        );
        let rkyv = wire_formats(
            &WireSettings::default(),
            None,
            &TopicNamespace::default(),
            &[],
            &[],
        )
        .expect("rkyv only");
        assert!(!rkyv.reads_avro());
    }

    #[test]
    fn an_avro_output_is_written_with_the_id_its_schema_was_registered_under() {
        let settings = WireSettings::from_toml_str(
            "[wire.value_format]\n\"payment-service.payment.completed\" = \"avro\"\n\
             \"order-service.order.created\" = \"avro\"\n",
            &codecs::topics::ALL,
        )
        .expect("valid section");
        let namespace = TopicNamespace::default();
        let registered = [Registered {
            subject: value_subject(codecs::topics::PAYMENT_COMPLETED),
            id: 17,
        }];
        let formats = wire_formats(
            &settings,
            Some("http://127.0.0.1:9"),
            &namespace,
            &[
                codecs::topics::PAYMENT_COMPLETED,
                codecs::topics::PAYMENT_FAILED,
            ],
            &registered,
        )
        .expect("registered");
        let written: Vec<_> = formats
            .avro_topics()
            .map(|(t, w)| (t, w.registry_id))
            .collect();
        assert_eq!(written, [(codecs::topics::PAYMENT_COMPLETED, 17)]);
        assert!(formats.reads_avro());
        // An id the node registered reads without asking the registry (none
        // listens on port 9).
        let with_order = [
            registered[0].clone(),
            Registered {
                subject: value_subject(codecs::topics::ORDER_CREATED),
                id: 18,
            },
        ];
        let formats = wire_formats(
            &settings,
            Some("http://127.0.0.1:9"),
            &namespace,
            &[codecs::topics::PAYMENT_COMPLETED],
            &with_order,
        )
        .expect("registered");
        let order = codecs::testing::sample_events()
            .into_iter()
            .find(|e| e.kind() == codecs::EventKind::OrderCreated)
            .expect("a sample order");
        let schema = PreparedSchema::new(
            latest_value_schema(codecs::topics::ORDER_CREATED).expect("a flow topic"),
        )
        .expect("parses");
        let record = codecs::avro::frame(18, &schema.encode(&order).expect("fits"));
        let mut reader = engine::wire::WireReader::new(formats);
        assert_eq!(reader.decode(&record).expect("known id").to_event(), order);

        let unregistered = wire_formats(
            &settings,
            Some("http://127.0.0.1:9"),
            &namespace,
            &[codecs::topics::PAYMENT_COMPLETED],
            &[],
        )
        .expect_err("not registered");
        assert!(matches!(unregistered, WireSetupError::NotRegistered { .. }));
    }
}
