//! The Avro form of every event: its schemas, the Schema Registry subjects
//! they live under, and Avro datum encoding and decoding.
//!
//! Owns one Avro schema per (event kind, version) — the same table as
//! [`EventSchema`] — generated here from one field list per event and checked in
//! under `codecs/schemas/avro/` (a test keeps the two equal), and the value
//! schema of each flow topic under Confluent's TopicNameStrategy
//! (`<topic>-value`). A topic that carries two kinds (`order.updated`:
//! amended and cancelled) has a union of both records as its value schema.
//!
//! The Avro record of an event has exactly the fields of its JSON edge form,
//! with the same names and the same text forms (an event id is its 32 hex
//! digits, a SKU its symbol, an enum its snake_case name), so that the JSON
//! form is the bridge: encoding is `Event` → JSON value → Avro value, decoding
//! the reverse, and any drift between the Rust types and the schemas fails the
//! round-trip tests. The unsigned 64-bit fields (`UNSIGNED_LONGS`: order ids,
//! accounts, timestamps) travel as Avro `long` holding the same 64 bits (two's
//! complement, as Java clients hold unsigned ids): order ids are hashes, so
//! half of them are above `i64::MAX` and read as negative longs elsewhere;
//! decoding turns them back into the same `u64`.
//!
//! Must never: sit on the hot path (the engine writes rkyv frames; Avro is for
//! the edges and for foreign clients), know about Kafka or any registry client
//! (the registry ids of these schemas are assigned by a registry, not here),
//! or change a released schema: evolve by adding a version, as
//! `order.created` v2 does (new fields with defaults, so BACKWARD compatible).

use std::collections::HashMap;

use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde_json::{json, Map, Value as Json};

use crate::events::{Event, EventKind, OrderCreated, OrderCreatedV1};
use crate::schema::{EventSchema, CONFLUENT_MAGIC_BYTE};
use crate::topics;

/// Namespace of every named Avro type of the flow.
pub const NAMESPACE: &str = "com.tradeflow.events";

/// Why an event could not be turned into Avro or read back from it.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The event does not fit the schema it was to be written with (a kind the
    /// topic does not carry, v2 data in a v1 schema).
    #[error("event does not fit {schema}: {reason}")]
    DoesNotFit {
        /// The subject and version written.
        schema: String,
        /// Why.
        reason: String,
    },
    /// The bytes are not a datum of the schema, or its values break a field's
    /// rule (SKU alphabet, id width, unknown enum symbol).
    #[error("invalid Avro datum for {schema}: {reason}")]
    InvalidDatum {
        /// The subject and version read with.
        schema: String,
        /// Why.
        reason: String,
    },
    /// A frame without the Confluent magic byte and 4-byte schema id.
    #[error("not a Confluent-framed record: {0}")]
    BadFrame(&'static str),
    /// apache-avro refused a generated schema: a bug here, caught by tests.
    #[error("generated Avro schema does not parse: {0}")]
    Schema(#[from] apache_avro::Error),
}

/// The `long` fields whose Rust type is `u64` (`OrderId`, `AccountId`,
/// `TimestampNs`): written as their 64 bits (`u64 as i64`) and read back the
/// same way. Every other `long` is an `i64` (`Money`, `Quantity`). The
/// round-trip test with `u64::MAX` in each of them keeps this list true.
const UNSIGNED_LONGS: [&str; 3] = ["order_id", "account", "created_at_ns"];

/// How each event field is typed in Avro. Every field of every event is one
/// of these, so one match covers the whole table.
#[derive(Clone, Copy)]
enum FieldType {
    /// `long`: ids, money, quantities, timestamps (integers, never floats).
    Long,
    /// `string` with a fixed alphabet and width, checked on decoding.
    Text,
    /// The common header record (defined at first use, referenced after).
    Header,
    /// An enum, by name, with its symbols (the serde snake_case names).
    Enum(&'static str, &'static str, &'static [&'static str]),
}

struct Field {
    name: &'static str,
    ty: FieldType,
    doc: &'static str,
    /// Avro default, for fields added by a later version.
    default: Option<Json>,
}

const fn field(name: &'static str, ty: FieldType, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        doc,
        default: None,
    }
}

const TIME_IN_FORCE: FieldType = FieldType::Enum(
    "TimeInForce",
    "How long an order may wait for its fill.",
    &["gtc", "ioc", "fok", "day"],
);
const PAYMENT_FAIL_REASON: FieldType = FieldType::Enum(
    "PaymentFailReason",
    "Why Payment refused an order.",
    &[
        "insufficient_funds",
        "unknown_account",
        "amount_overflow",
        "invalid_order",
    ],
);
const STOCK_REJECT_REASON: FieldType = FieldType::Enum(
    "StockRejectReason",
    "Why Inventory refused a paid order.",
    &["insufficient_stock", "unknown_sku", "invalid_quantity"],
);

/// The record name and doc of a schema's event (v1 and v2 of a kind share the
/// name: Avro resolution matches records by name).
fn record_name_doc(id: EventSchema) -> (&'static str, &'static str) {
    match id {
        EventSchema::OrderCreatedV1 | EventSchema::OrderCreatedV2 => (
            "OrderCreated",
            "A client's order was accepted by the Order service.",
        ),
        EventSchema::OrderAmendedV1 => (
            "OrderAmended",
            "The client changed an open order's quantity or limit price.",
        ),
        EventSchema::OrderCancelledV1 => ("OrderCancelled", "The client cancelled an open order."),
        EventSchema::PaymentCompletedV1 => (
            "PaymentCompleted",
            "Payment debited the order's cost; Inventory now takes the units.",
        ),
        EventSchema::PaymentFailedV1 => (
            "PaymentFailed",
            "Payment refused the order (terminal outcome: rejected for funds).",
        ),
        EventSchema::PaymentRefundedV1 => (
            "PaymentRefunded",
            "Payment gave the money back after Inventory rejected the order.",
        ),
        EventSchema::StockUpdatedV1 => (
            "StockUpdated",
            "Inventory took the units (terminal outcome: filled).",
        ),
        EventSchema::StockRejectedV1 => (
            "StockRejected",
            "Inventory refused a paid order; Payment refunds amount to account.",
        ),
        EventSchema::AccountFundedV1 => ("AccountFunded", "Cash was paid into an account."),
        EventSchema::StockReplenishedV1 => (
            "StockReplenished",
            "Units of an instrument were added to the desk's inventory.",
        ),
    }
}

/// The fields after the header, in the Rust struct's order.
fn body_fields(id: EventSchema) -> Vec<Field> {
    use FieldType::{Long, Text};
    let account = || field("account", Long, "The account (AccountId, unsigned).");
    let sku = || field("sku", Text, "The instrument: 1-8 of A-Z, 0-9, '.', '-'.");
    let quantity = || field("quantity", Long, "Units.");
    let amount = || field("amount", Long, "Amount in integer minor units.");
    let order_v1 = || {
        vec![
            account(),
            sku(),
            quantity(),
            field("limit_price", Long, "Highest price per unit, minor units."),
            field("client_order_id", Text, "The client's idempotency key."),
        ]
    };
    match id {
        EventSchema::OrderCreatedV1 => order_v1(),
        EventSchema::OrderCreatedV2 => {
            let mut fields = order_v1();
            fields.push(Field {
                default: Some(json!("gtc")),
                ..field(
                    "time_in_force",
                    TIME_IN_FORCE,
                    "Added in v2; v1 records read as gtc.",
                )
            });
            fields.push(Field {
                default: Some(json!("")),
                ..field("tag", Text, "Added in v2; v1 records read as empty.")
            });
            fields
        }
        EventSchema::OrderAmendedV1 => vec![
            account(),
            sku(),
            field("quantity", Long, "New quantity."),
            field("limit_price", Long, "New limit price, minor units."),
        ],
        EventSchema::OrderCancelledV1 => vec![account(), sku()],
        EventSchema::PaymentCompletedV1 | EventSchema::PaymentRefundedV1 => {
            vec![account(), sku(), quantity(), amount()]
        }
        EventSchema::PaymentFailedV1 => vec![
            account(),
            sku(),
            quantity(),
            amount(),
            field("reason", PAYMENT_FAIL_REASON, "Why."),
        ],
        EventSchema::StockUpdatedV1 => vec![
            account(),
            sku(),
            quantity(),
            field(
                "remaining",
                Long,
                "Units of the SKU left on hand afterwards.",
            ),
            amount(),
        ],
        EventSchema::StockRejectedV1 => vec![
            account(),
            sku(),
            quantity(),
            amount(),
            field("reason", STOCK_REJECT_REASON, "Why."),
        ],
        EventSchema::AccountFundedV1 => vec![account(), amount()],
        EventSchema::StockReplenishedV1 => vec![sku(), quantity()],
    }
}

/// Builds Avro JSON for records, defining each named type once per schema
/// document (Avro forbids redefinition; later uses name it).
#[derive(Default)]
struct Builder {
    defined: Vec<&'static str>,
}

impl Builder {
    fn first_use(&mut self, name: &'static str) -> bool {
        if self.defined.contains(&name) {
            false
        } else {
            self.defined.push(name);
            true
        }
    }

    fn field_type(&mut self, ty: FieldType) -> Json {
        match ty {
            FieldType::Long => json!("long"),
            FieldType::Text => json!("string"),
            FieldType::Header if self.first_use("EventHeader") => json!({
                "type": "record",
                "name": "EventHeader",
                "namespace": NAMESPACE,
                "doc": "Fields every event starts with.",
                "fields": [
                    {"name": "event_id", "type": "string",
                     "doc": "Unique id of this event, 32 lower-case hex digits (a u128)."},
                    {"name": "order_id", "type": "long",
                     "doc": "The order this event belongs to; 0 for funding and replenishment."},
                    {"name": "causation_id", "type": "string",
                     "doc": "The event that caused this one, 32 hex digits; all zeros for none."},
                    {"name": "created_at_ns", "type": "long",
                     "doc": "When the producer created the event, nanoseconds since the Unix epoch."}
                ]
            }),
            FieldType::Header => json!(format!("{NAMESPACE}.EventHeader")),
            FieldType::Enum(name, doc, symbols) if self.first_use(name) => json!({
                "type": "enum",
                "name": name,
                "namespace": NAMESPACE,
                "doc": doc,
                "symbols": symbols,
            }),
            FieldType::Enum(name, _, _) => json!(format!("{NAMESPACE}.{name}")),
        }
    }

    fn record(&mut self, id: EventSchema) -> Json {
        let (name, doc) = record_name_doc(id);
        let mut fields = vec![json!({
            "name": "header",
            "type": self.field_type(FieldType::Header),
            "doc": "Common header.",
        })];
        for f in body_fields(id) {
            let mut obj = Map::new();
            obj.insert("name".into(), json!(f.name));
            obj.insert("type".into(), self.field_type(f.ty));
            obj.insert("doc".into(), json!(f.doc));
            if let Some(default) = f.default {
                obj.insert("default".into(), default);
            }
            fields.push(Json::Object(obj));
        }
        json!({
            "type": "record",
            "name": name,
            "namespace": NAMESPACE,
            "doc": format!("{doc} ({} v{})", id.kind().name(), id.version()),
            "fields": fields,
        })
    }
}

/// The Avro schema (as JSON) of one (event kind, version), self-contained.
pub fn event_schema_json(id: EventSchema) -> Json {
    Builder::default().record(id)
}

/// The Schema Registry subject of a topic's record values (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// One version of a flow topic's value schema: the schema registered under
/// `<topic>-value`, and which event schemas it holds (one record, or a union).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSchema {
    /// The logical topic (one of [`topics::ALL`]).
    pub topic: &'static str,
    /// The subject version this schema is registered as, from 1.
    pub version: u32,
    /// The event schemas, in union order when more than one.
    pub events: Vec<EventSchema>,
}

impl ValueSchema {
    /// The subject, `<topic>-value`.
    pub fn subject(&self) -> String {
        value_subject(self.topic)
    }

    /// The schema as Avro JSON: the record, or a union of the records.
    pub fn json(&self) -> Json {
        let mut builder = Builder::default();
        match self.events.as_slice() {
            [one] => builder.record(*one),
            many => Json::Array(many.iter().map(|id| builder.record(*id)).collect()),
        }
    }

    /// The schema as the compact text registered and checked in.
    pub fn text(&self) -> String {
        self.json().to_string()
    }

    /// The schema parsed by apache-avro.
    pub fn parse(&self) -> Result<Schema, AvroError> {
        Ok(Schema::parse(&self.json())?)
    }

    fn label(&self) -> String {
        format!("{} v{}", self.subject(), self.version)
    }
}

/// Every value schema of every flow topic, oldest version first per topic:
/// what a registry holds for tradeflow, in the order to register it.
pub fn value_schemas() -> Vec<ValueSchema> {
    let mut out = Vec::new();
    for topic in topics::ALL {
        let kinds: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|k| topics::topic_of(*k) == topic)
            .collect();
        // Versions of a topic's value schema follow the newest kind version:
        // version n holds, for each kind, its schema n or its newest below n.
        let versions = kinds
            .iter()
            .map(|k| EventSchema::latest(*k).version())
            .max()
            .unwrap_or(1);
        for version in 1..=versions {
            let events = kinds
                .iter()
                .filter_map(|k| {
                    EventSchema::ALL
                        .into_iter()
                        .filter(|id| id.kind() == *k && id.version() <= version)
                        .max()
                })
                .collect();
            out.push(ValueSchema {
                topic,
                version,
                events,
            });
        }
    }
    out
}

/// The newest value schema of a flow topic, the one producers write.
pub fn latest_value_schema(topic: &str) -> Option<ValueSchema> {
    value_schemas()
        .into_iter()
        .filter(|s| s.topic == topic)
        .max_by_key(|s| s.version)
}

/// Which value schema of this build `text` (a schema as a registry serves it,
/// e.g. from `GET /schemas/ids/{id}`) is, compared by Avro's Parsing
/// Canonical Form (docs, defaults and whitespace aside); `None` when it is
/// none of them. The newest version wins when two versions print the same.
pub fn known_value_schema(text: &str) -> Result<Option<ValueSchema>, AvroError> {
    let theirs = Schema::parse_str(text)?.canonical_form();
    let mut found = None;
    for schema in value_schemas() {
        if schema.parse()?.canonical_form() == theirs {
            found = Some(schema);
        }
    }
    Ok(found)
}

/// A value schema parsed once, for encoding and decoding many events (parsing
/// a schema costs far more than one datum).
#[derive(Debug, Clone)]
pub struct PreparedSchema {
    value: ValueSchema,
    parsed: Schema,
    names: HashMap<Name, Schema>,
}

impl PreparedSchema {
    /// Parses `value` and resolves its named types.
    pub fn new(value: ValueSchema) -> Result<Self, AvroError> {
        let parsed = value.parse()?;
        let names = named_types(&parsed)?;
        Ok(PreparedSchema {
            value,
            parsed,
            names,
        })
    }

    /// The value schema this was prepared from.
    pub fn value_schema(&self) -> &ValueSchema {
        &self.value
    }

    /// Avro-encodes `event` as a datum of this schema (no framing).
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, AvroError> {
        let schema = &self.value;
        let does_not_fit = |reason: String| AvroError::DoesNotFit {
            schema: schema.label(),
            reason,
        };
        let branch = schema
            .events
            .iter()
            .position(|id| id.kind() == event.kind())
            .ok_or_else(|| does_not_fit(format!("the topic carries no {}", event.kind())))?;
        let id = schema.events[branch];
        if let (EventSchema::OrderCreatedV1, Event::OrderCreated(order)) = (id, event) {
            if order.to_v1().is_none() {
                return Err(does_not_fit(
                    "time_in_force or tag set, which v1 cannot carry".into(),
                ));
            }
        }
        let (parsed, names) = (&self.parsed, &self.names);
        let json = serde_json::to_value(event).map_err(|e| does_not_fit(e.to_string()))?;
        let value = match parsed {
            Schema::Union(union) => {
                let variant = union
                    .variants()
                    .get(branch)
                    .ok_or_else(|| does_not_fit("union branch missing".into()))?;
                let index = u32::try_from(branch).map_err(|e| does_not_fit(e.to_string()))?;
                AvroValue::Union(
                    index,
                    Box::new(json_to_avro(variant, &json, names).map_err(does_not_fit)?),
                )
            }
            record => json_to_avro(record, &json, names).map_err(does_not_fit)?,
        };
        apache_avro::to_avro_datum(parsed, value).map_err(|e| does_not_fit(e.to_string()))
    }

    /// Decodes a datum written with this schema (the writer's) into an event.
    /// A v1 `order.created` reads as `OrderCreated` with v2's defaults.
    pub fn decode(&self, mut datum: &[u8]) -> Result<Event, AvroError> {
        let schema = &self.value;
        let invalid = |reason: String| AvroError::InvalidDatum {
            schema: schema.label(),
            reason,
        };
        let value = apache_avro::from_avro_datum(&self.parsed, &mut datum, None)
            .map_err(|e| invalid(e.to_string()))?;
        if !datum.is_empty() {
            return Err(invalid(format!("{} bytes after the datum", datum.len())));
        }
        let (branch, record) = match value {
            AvroValue::Union(index, inner) => (index as usize, *inner),
            record => (0, record),
        };
        let id = *schema
            .events
            .get(branch)
            .ok_or_else(|| invalid(format!("union branch {branch} out of range")))?;
        let json = avro_to_json(record).map_err(invalid)?;
        let event = match id {
            EventSchema::OrderCreatedV1 => Event::OrderCreated(OrderCreated::from(
                serde_json::from_value::<OrderCreatedV1>(json)
                    .map_err(|e| invalid(e.to_string()))?,
            )),
            _ => {
                let Json::Object(mut fields) = json else {
                    return Err(invalid("not a record".into()));
                };
                fields.insert("type".into(), json!(id.kind().name()));
                serde_json::from_value::<Event>(Json::Object(fields))
                    .map_err(|e| invalid(e.to_string()))?
            }
        };
        Ok(event)
    }
}

/// Avro-encodes `event` as a datum of `schema` (no framing); parses the
/// schema each call; use [`PreparedSchema`] for many events.
pub fn encode_datum(schema: &ValueSchema, event: &Event) -> Result<Vec<u8>, AvroError> {
    PreparedSchema::new(schema.clone())?.encode(event)
}

/// Decodes a datum written with `schema` (the writer's schema) into an event.
/// A v1 `order.created` reads as `OrderCreated` with v2's defaults.
pub fn decode_datum(schema: &ValueSchema, datum: &[u8]) -> Result<Event, AvroError> {
    PreparedSchema::new(schema.clone())?.decode(datum)
}

/// Prefixes `datum` with Confluent's wire-format header: magic byte 0 and the
/// registry's 4-byte big-endian schema id.
pub fn frame(registry_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(CONFLUENT_MAGIC_BYTE);
    out.extend_from_slice(&registry_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed record into the registry schema id and the datum.
pub fn unframe(record: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    match record {
        [CONFLUENT_MAGIC_BYTE, a, b, c, d, datum @ ..] => {
            Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum))
        }
        [_, _, _, _, _, ..] => Err(AvroError::BadFrame("first byte is not the magic byte 0")),
        _ => Err(AvroError::BadFrame("shorter than the 5-byte header")),
    }
}

fn named_types(schema: &Schema) -> Result<HashMap<Name, Schema>, AvroError> {
    let resolved = ResolvedSchema::try_from(schema)?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(name, schema)| (name.clone(), (*schema).clone()))
        .collect())
}

/// The JSON edge form of a record, shaped by its Avro schema.
fn json_to_avro(
    schema: &Schema,
    json: &Json,
    names: &HashMap<Name, Schema>,
) -> Result<AvroValue, String> {
    match schema {
        Schema::Ref { name } => {
            let target = names
                .get(name)
                .ok_or_else(|| format!("unknown named type {}", name.fullname(None)))?;
            json_to_avro(target, json, names)
        }
        Schema::Record(record) => {
            let mut fields = Vec::with_capacity(record.fields.len());
            for f in &record.fields {
                let value = json
                    .get(&f.name)
                    .ok_or_else(|| format!("field {} missing", f.name))?;
                let value = json_to_avro(&f.schema, value, names)
                    .map_err(|e| format!("{}: {e}", f.name))?;
                fields.push((f.name.clone(), value));
            }
            Ok(AvroValue::Record(fields))
        }
        // An unsigned field above i64::MAX keeps its 64 bits (see UNSIGNED_LONGS).
        Schema::Long => json
            .as_i64()
            .or_else(|| json.as_u64().map(|unsigned| unsigned as i64))
            .map(AvroValue::Long)
            .ok_or_else(|| format!("{json} is not a 64-bit integer")),
        Schema::String => json
            .as_str()
            .map(|s| AvroValue::String(s.to_owned()))
            .ok_or_else(|| format!("{json} is not a string")),
        Schema::Enum(e) => {
            let symbol = json
                .as_str()
                .ok_or_else(|| format!("{json} is not an enum symbol"))?;
            let index = e
                .symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(|| format!("{symbol} is not a symbol of {}", e.name.name))?;
            let index = u32::try_from(index).map_err(|e| e.to_string())?;
            Ok(AvroValue::Enum(index, symbol.to_owned()))
        }
        other => Err(format!("schema type {other:?} is not used by events")),
    }
}

/// An Avro value of an event record in the JSON edge form's shape.
fn avro_to_json(value: AvroValue) -> Result<Json, String> {
    Ok(match value {
        AvroValue::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(name, v)| match v {
                    AvroValue::Long(n) if UNSIGNED_LONGS.contains(&name.as_str()) => {
                        Ok((name, json!(n as u64)))
                    }
                    v => avro_to_json(v).map(|j| (name, j)),
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
        AvroValue::Long(n) => json!(n),
        AvroValue::String(s) => json!(s),
        AvroValue::Enum(_, symbol) => json!(symbol),
        AvroValue::Union(_, inner) => avro_to_json(*inner)?,
        other => return Err(format!("unexpected Avro value {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema_compatibility::SchemaCompatibility;

    fn checked_in_path(schema: &ValueSchema) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/avro")
            .join(format!("{}.v{}.avsc", schema.subject(), schema.version))
    }

    #[test]
    fn a_registry_schema_is_known_by_canonical_form_and_a_stranger_is_not() {
        for schema in value_schemas() {
            // As a registry serves it: the checked-in file, pretty-printed.
            let served = std::fs::read_to_string(checked_in_path(&schema)).expect("checked in");
            assert_eq!(
                known_value_schema(&served).expect("parses"),
                Some(schema.clone()),
                "{}",
                schema.subject()
            );
        }
        let stranger = r#"{"type":"record","name":"Trade","fields":[{"name":"id","type":"long"}]}"#;
        assert_eq!(known_value_schema(stranger).expect("parses"), None);
        assert!(known_value_schema("{not json").is_err());
    }

    #[test]
    fn every_schema_parses_and_matches_the_checked_in_file() {
        // TRADEFLOW_BLESS=1 rewrites the files after an intended change.
        let bless = std::env::var_os("TRADEFLOW_BLESS").is_some();
        for schema in value_schemas() {
            let parsed = schema.parse().expect("generated schema parses");
            let pretty = serde_json::to_string_pretty(&schema.json()).expect("json") + "\n";
            let path = checked_in_path(&schema);
            if bless {
                std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
                std::fs::write(&path, &pretty).expect("write");
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (TRADEFLOW_BLESS=1 writes it)", path.display())
            });
            assert_eq!(
                on_disk,
                pretty,
                "{} differs from the generated schema",
                path.display()
            );
            // The file parses to the same schema (what foreign tools read).
            assert_eq!(Schema::parse_str(&on_disk).expect("file parses"), parsed);
        }
    }

    #[test]
    fn every_event_schema_and_topic_has_a_subject() {
        let schemas = value_schemas();
        for id in EventSchema::ALL {
            assert!(schemas.iter().any(|s| s.events.contains(&id)), "{id}");
        }
        for topic in topics::ALL {
            let latest = latest_value_schema(topic).expect("every topic has a schema");
            assert_eq!(latest.subject(), format!("{topic}-value"));
            for kind in EventKind::ALL
                .into_iter()
                .filter(|k| topics::topic_of(*k) == topic)
            {
                assert!(latest.events.contains(&EventSchema::latest(kind)), "{kind}");
            }
        }
        let order_created: Vec<_> = schemas
            .iter()
            .filter(|s| s.topic == topics::ORDER_CREATED)
            .collect();
        assert_eq!(order_created.len(), 2);
        assert_eq!(order_created[0].events, vec![EventSchema::OrderCreatedV1]);
        assert_eq!(order_created[1].events, vec![EventSchema::OrderCreatedV2]);
    }

    #[test]
    fn every_evolution_is_backward_compatible_by_apache_avro_rules() {
        let schemas = value_schemas();
        for pair in schemas.windows(2).filter(|w| w[0].topic == w[1].topic) {
            let (old, new) = (pair[0].parse().expect("old"), pair[1].parse().expect("new"));
            // BACKWARD: the new schema reads what the old one wrote.
            SchemaCompatibility::can_read(&old, &new)
                .unwrap_or_else(|e| panic!("{} v{}: {e}", pair[1].subject(), pair[1].version));
        }
    }

    #[test]
    fn a_v1_order_reads_as_v2_with_defaults_and_v2_data_does_not_fit_v1() {
        let v1 = &value_schemas()[0];
        assert_eq!(v1.events, vec![EventSchema::OrderCreatedV1]);
        let mut order = crate::testing::sample_events()
            .into_iter()
            .find_map(|e| match e {
                Event::OrderCreated(order) => Some(order),
                _ => None,
            })
            .expect("the samples have an order");
        order.time_in_force = crate::TimeInForce::Gtc;
        order.tag = crate::Tag::EMPTY;
        let datum = encode_datum(v1, &Event::OrderCreated(order)).expect("fits v1");
        assert_eq!(
            decode_datum(v1, &datum).expect("decodes"),
            Event::OrderCreated(order)
        );
        order.time_in_force = crate::TimeInForce::Ioc;
        assert!(matches!(
            encode_datum(v1, &Event::OrderCreated(order)),
            Err(AvroError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn bad_datums_and_frames_are_errors_not_panics() {
        let schema = latest_value_schema(topics::ORDER_CREATED).expect("schema");
        assert!(decode_datum(&schema, &[]).is_err());
        assert!(decode_datum(&schema, &[0xff; 40]).is_err());
        assert!(unframe(&[0, 0, 0]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 1, 2]).is_err());
        assert_eq!(unframe(&frame(7, &[9])).expect("framed"), (7, &[9u8][..]));
    }
}
