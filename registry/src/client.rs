//! A small blocking client of a Confluent-compatible schema registry, for a
//! node that registers the schemas it writes before it starts
//! (`tradeflow run --schema-registry URL`).
//!
//! Owns: registering (or finding, when already there) the latest Avro value
//! schema of each topic a node writes, under `<physical topic>-value`, and
//! turning a refusal into an error that names the subject and the registry's
//! reason. Works with `tradeflow registry` or any Confluent-compatible one.
//! Also looks a schema id up (`GET /schemas/ids/{id}`) for a node that reads
//! Avro records: once per id a shard has not seen, never per record.
//! Must never: sit on the data path beyond that one lookup per unseen id,
//! or retry an incompatibility (a 409 is a decision, not a fault).

use std::time::Duration;

use codecs::avro::latest_value_schema;
use codecs::topics::TopicNamespace;
use serde_json::{json, Value};

/// How long one request to the registry may take.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Why the node's schemas could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached or answered garbage.
    #[error("schema registry {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The registry refused a schema: incompatible (409) or invalid (422).
    #[error("schema registry refused subject {subject} (HTTP {status}, error code {error_code}): {message}")]
    Refused {
        subject: String,
        status: u16,
        error_code: i64,
        message: String,
    },
    /// A topic with no Avro schema in this build (a bug: every flow topic has one).
    #[error("no Avro schema for topic {0}")]
    NoSchema(String),
}

/// One registered subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub id: u32,
}

/// Registers the latest value schema of each logical topic in `topics`, in
/// `namespace`, at the registry at `base_url`; returns the subjects and ids.
/// An already registered schema answers its id (registering is idempotent).
pub fn register_value_schemas(
    base_url: &str,
    namespace: &TopicNamespace,
    topics: &[&str],
) -> Result<Vec<Registered>, ClientError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .build()
        .into();
    let base = base_url.trim_end_matches('/');
    let mut out = Vec::new();
    for topic in topics {
        let schema =
            latest_value_schema(topic).ok_or_else(|| ClientError::NoSchema(topic.to_string()))?;
        let subject = codecs::avro::value_subject(&namespace.physical(topic));
        let url = format!("{base}/subjects/{subject}/versions");
        let transport = |reason: String| ClientError::Transport {
            url: url.clone(),
            reason,
        };
        let response = agent
            .post(&url)
            .header("content-type", crate::CONTENT_TYPE)
            .send(json!({"schema": schema.text()}).to_string())
            .map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .read_to_string()
            .map_err(|e| transport(e.to_string()))?;
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| transport(format!("HTTP {status}, not JSON ({e}): {body}")))?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Refused {
                subject,
                status,
                error_code: answer["error_code"].as_i64().unwrap_or(-1),
                message: answer["message"].as_str().unwrap_or(&body).to_owned(),
            });
        }
        let id = answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| transport(format!("no schema id in {body}")))?;
        tracing::info!(%subject, id, "schema registered");
        out.push(Registered { subject, id });
    }
    Ok(out)
}

/// How long a lookup of one schema id may take: it runs on a shard's thread,
/// once per id it has not seen.
pub const LOOKUP_TIMEOUT_MS: u64 = 2_000;

/// The schema the registry at `base_url` holds under `id`
/// (`GET /schemas/ids/{id}`), as text; `Ok(None)` when the registry answers
/// that it has no such schema (HTTP 404). Called by a node's shards on an id
/// they have not seen, once per id (they cache the answer).
pub fn schema_by_id(base_url: &str, id: u32) -> Result<Option<String>, ClientError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(LOOKUP_TIMEOUT_MS)))
        .build()
        .into();
    let url = format!("{}/schemas/ids/{id}", base_url.trim_end_matches('/'));
    let transport = |reason: String| ClientError::Transport {
        url: url.clone(),
        reason,
    };
    let response = agent
        .get(&url)
        .header("accept", crate::CONTENT_TYPE)
        .call()
        .map_err(|e| transport(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_to_string()
        .map_err(|e| transport(e.to_string()))?;
    if status == 404 {
        return Ok(None);
    }
    let answer: Value = serde_json::from_str(&body)
        .map_err(|e| transport(format!("HTTP {status}, not JSON ({e}): {body}")))?;
    if !(200..300).contains(&status) {
        return Err(transport(format!("HTTP {status}: {body}")));
    }
    answer["schema"]
        .as_str()
        .map(|s| Some(s.to_owned()))
        .ok_or_else(|| transport(format!("no schema in {body}")))
}

/// What a registry holds under a schema id, for a reader of this build's
/// events.
#[derive(Debug, Clone)]
pub enum ValueSchemaLookup {
    /// One of this build's value schemas (compared by Avro's Parsing
    /// Canonical Form), parsed, ready to decode datums written with it.
    Readable(std::sync::Arc<codecs::avro::PreparedSchema>),
    /// The registry has no schema with this id (HTTP 404).
    NotRegistered,
    /// The registry has it, but it is no value schema of this build, or it
    /// does not parse (the reason says which).
    Unreadable(String),
}

/// Looks `id` up at the registry at `base_url` ([`schema_by_id`]) and
/// matches the answer against this build's value schemas: what a node's
/// shards and `loadgen` ask about an id they have not seen (once per id;
/// they cache the answer). `Err` means the registry could not be asked.
pub fn value_schema_by_id(base_url: &str, id: u32) -> Result<ValueSchemaLookup, ClientError> {
    use codecs::avro::{known_value_schema, PreparedSchema};
    let Some(text) = schema_by_id(base_url, id)? else {
        return Ok(ValueSchemaLookup::NotRegistered);
    };
    Ok(match known_value_schema(&text) {
        Ok(Some(schema)) => match PreparedSchema::new(schema) {
            Ok(prepared) => ValueSchemaLookup::Readable(std::sync::Arc::new(prepared)),
            Err(e) => ValueSchemaLookup::Unreadable(e.to_string()),
        },
        Ok(None) => ValueSchemaLookup::Unreadable(format!(
            "the registry's schema is none of this build's value schemas: {text}"
        )),
        Err(e) => {
            ValueSchemaLookup::Unreadable(format!("the registry's schema does not parse: {e}"))
        }
    })
}
