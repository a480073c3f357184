//! The registry's state and rules, with no I/O: subjects, versions, global
//! schema ids, compatibility levels, and the log records that change them.
//!
//! Owns: deciding what a request does (a new version, an existing one, a
//! refusal with Confluent's error code) and applying log records. The state
//! is a pure function of the records applied in log order, which is what makes
//! every node that read `_schemas` to its end serve the same ids.
//! Must never: write anything itself (the caller appends the planned record to
//! the log first and applies it after), or judge compatibility with rules of
//! its own: apache-avro's `SchemaCompatibility` decides.

use std::collections::{BTreeMap, HashMap};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// The new schema reads data written with the latest one (the default).
    Backward,
    /// As `Backward`, against every earlier version.
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    /// As `Forward`, against every earlier version.
    ForwardTransitive,
    /// Both `Backward` and `Forward`.
    Full,
    /// As `Full`, against every earlier version.
    FullTransitive,
    /// No check.
    None,
}

impl CompatibilityLevel {
    /// Parses Confluent's name (`BACKWARD`, `FULL_TRANSITIVE`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// Confluent's name.
    pub fn name(self) -> &'static str {
        match self {
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
            CompatibilityLevel::None => "NONE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

/// A refused request, with the HTTP status and Confluent error code to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelNotConfigured(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive (got {0:?})")]
    InvalidCompatibilityLevel(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {details}")]
    Incompatible { subject: String, details: String },
    #[error("Invalid request: {0}")]
    BadRequest(String),
    #[error("Error in the backend data store: {0}")]
    Store(String),
}

impl RegistryError {
    /// The HTTP status Confluent answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            RegistryError::SubjectNotFound(_)
            | RegistryError::VersionNotFound(_)
            | RegistryError::SchemaNotFound
            | RegistryError::SubjectLevelNotConfigured(_) => 404,
            RegistryError::InvalidSchema(_)
            | RegistryError::InvalidVersion(_)
            | RegistryError::InvalidCompatibilityLevel(_) => 422,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::BadRequest(_) => 400,
            RegistryError::Store(_) => 500,
        }
    }

    /// Confluent's `error_code`.
    pub fn error_code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound => 40403,
            RegistryError::SubjectLevelNotConfigured(_) => 40408,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibilityLevel(_) => 42203,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::BadRequest(_) => 400,
            RegistryError::Store(_) => 50001,
        }
    }
}

/// One record of the `_schemas` log. The key is what compaction keeps the
/// latest value of; Confluent's own store uses the same key shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    /// A subject's version.
    Schema { subject: String, version: u32 },
    /// A compatibility level, global when `subject` is `None`.
    Config { subject: Option<String> },
}

/// The value of a `Schema` log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

/// The value of a `Config` log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: CompatibilityLevel,
}

/// A change to the registry: one log record (key, value; `None` deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Schema(SchemaValue),
    Config {
        subject: Option<String>,
        level: Option<CompatibilityLevel>,
    },
}

impl Change {
    /// The record's key and value bytes (JSON, as Confluent writes them).
    pub fn to_record(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        // Serializing these plain structs cannot fail; an empty value would be
        // read back as a bad record and skipped, never as a wrong one.
        let json = |v: &dyn erased::Json| v.to_vec();
        match self {
            Change::Schema(value) => (
                json(&LogKey::Schema {
                    subject: value.subject.clone(),
                    version: value.version,
                }),
                Some(json(value)),
            ),
            Change::Config { subject, level } => (
                json(&LogKey::Config {
                    subject: subject.clone(),
                }),
                level.map(|l| {
                    json(&ConfigValue {
                        compatibility_level: l,
                    })
                }),
            ),
        }
    }

    /// Reads a log record back; `Err` for a record this build cannot read.
    pub fn from_record(key: &[u8], value: Option<&[u8]>) -> Result<Change, String> {
        let key: LogKey = serde_json::from_slice(key).map_err(|e| format!("key: {e}"))?;
        match key {
            LogKey::Schema { .. } => {
                let value = value.ok_or("schema record without a value")?;
                Ok(Change::Schema(
                    serde_json::from_slice(value).map_err(|e| format!("value: {e}"))?,
                ))
            }
            LogKey::Config { subject } => Ok(Change::Config {
                subject,
                level: match value {
                    None => None,
                    Some(v) => Some(
                        serde_json::from_slice::<ConfigValue>(v)
                            .map_err(|e| format!("value: {e}"))?
                            .compatibility_level,
                    ),
                },
            }),
        }
    }
}

mod erased {
    /// Object-safe JSON encoding for the few record types.
    pub trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// A registered schema: its registry-wide id, its text and its parsed form.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    pub id: u32,
    pub text: String,
    pub parsed: Schema,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectVersion {
    pub version: u32,
    pub id: u32,
    pub deleted: bool,
}

/// A version as answered by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// What registering a schema under a subject does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The subject already has this schema: answer its id, write nothing.
    Existing { id: u32 },
    /// Append this record, then answer its id.
    New(SchemaValue),
}

/// A version selector from a URL: a number or `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text == "latest" || text == "-1" {
            return Ok(VersionRef::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_owned())),
        }
    }
}

/// Parses an Avro schema text and gives its identity: the schema JSON written
/// back compactly with sorted keys, so whitespace and key order do not make a
/// new schema, while docs and defaults (which Parsing Canonical Form drops,
/// and which matter to evolution) still do.
pub fn parse_schema(text: &str) -> Result<(String, Schema), RegistryError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let parsed = Schema::parse(&json).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    Ok((json.to_string(), parsed))
}

/// The whole registry state, rebuilt from the log.
#[derive(Debug, Default)]
pub struct Registry {
    schemas: BTreeMap<u32, StoredSchema>,
    ids_by_text: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<SubjectVersion>>,
    global_level: Option<CompatibilityLevel>,
    subject_levels: HashMap<String, CompatibilityLevel>,
}

impl Registry {
    /// Applies one log record. Records are applied in log order on every
    /// node; a later record for the same key replaces the earlier one.
    pub fn apply(&mut self, change: Change) -> Result<(), RegistryError> {
        match change {
            Change::Schema(value) => {
                if !self.schemas.contains_key(&value.id) {
                    let (text, parsed) = parse_schema(&value.schema)?;
                    self.ids_by_text.entry(text.clone()).or_insert(value.id);
                    self.schemas.insert(
                        value.id,
                        StoredSchema {
                            id: value.id,
                            text,
                            parsed,
                        },
                    );
                }
                let versions = self.subjects.entry(value.subject).or_default();
                let entry = SubjectVersion {
                    version: value.version,
                    id: value.id,
                    deleted: value.deleted,
                };
                match versions.binary_search_by_key(&value.version, |v| v.version) {
                    Ok(at) => versions[at] = entry,
                    Err(at) => versions.insert(at, entry),
                }
            }
            Change::Config { subject, level } => match (subject, level) {
                (None, level) => self.global_level = level,
                (Some(s), Some(level)) => {
                    self.subject_levels.insert(s, level);
                }
                (Some(s), None) => {
                    self.subject_levels.remove(&s);
                }
            },
        }
        Ok(())
    }

    /// The global level (BACKWARD unless set).
    pub fn global_level(&self) -> CompatibilityLevel {
        self.global_level.unwrap_or(CompatibilityLevel::Backward)
    }

    /// The subject's own level, if one was set.
    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    /// The level that governs `subject`.
    pub fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject)
            .unwrap_or_else(|| self.global_level())
    }

    /// Subjects with at least one live version, sorted.
    pub fn subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| versions.iter().any(|v| !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn live_versions(&self, subject: &str) -> Result<Vec<SubjectVersion>, RegistryError> {
        let live: Vec<SubjectVersion> = self
            .subjects
            .get(subject)
            .map(|vs| vs.iter().copied().filter(|v| !v.deleted).collect())
            .unwrap_or_default();
        if live.is_empty() {
            Err(RegistryError::SubjectNotFound(subject.to_owned()))
        } else {
            Ok(live)
        }
    }

    /// The live version numbers of a subject.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        Ok(self
            .live_versions(subject)?
            .iter()
            .map(|v| v.version)
            .collect())
    }

    /// One version of a subject.
    pub fn version(&self, subject: &str, which: VersionRef) -> Result<VersionInfo, RegistryError> {
        let live = self.live_versions(subject)?;
        let found = match which {
            VersionRef::Latest => live.last(),
            VersionRef::Number(n) => live.iter().find(|v| v.version == n),
        };
        let found = found.ok_or_else(|| {
            RegistryError::VersionNotFound(match which {
                VersionRef::Latest => "latest".into(),
                VersionRef::Number(n) => n.to_string(),
            })
        })?;
        Ok(VersionInfo {
            subject: subject.to_owned(),
            version: found.version,
            id: found.id,
            schema: self.schema_by_id(found.id)?.text.clone(),
        })
    }

    /// A schema by its registry-wide id (deleted subject versions keep
    /// their ids readable: old records still carry them).
    pub fn schema_by_id(&self, id: u32) -> Result<&StoredSchema, RegistryError> {
        self.schemas.get(&id).ok_or(RegistryError::SchemaNotFound)
    }

    /// The version of `subject` holding exactly this schema.
    pub fn lookup(&self, subject: &str, text: &str) -> Result<VersionInfo, RegistryError> {
        let live = self.live_versions(subject)?;
        let (normal, _) = parse_schema(text)?;
        let id = self
            .ids_by_text
            .get(&normal)
            .ok_or(RegistryError::SchemaNotFound)?;
        let found = live
            .iter()
            .find(|v| v.id == *id)
            .ok_or(RegistryError::SchemaNotFound)?;
        Ok(VersionInfo {
            subject: subject.to_owned(),
            version: found.version,
            id: found.id,
            schema: normal,
        })
    }

    /// Why `candidate` breaks `level` against `existing` (oldest first), or
    /// `Ok` when compatible. Non-transitive levels look at the latest only.
    fn check(
        &self,
        level: CompatibilityLevel,
        candidate: &Schema,
        existing: &[SubjectVersion],
    ) -> Result<(), Vec<String>> {
        let against: &[SubjectVersion] = if level.transitive() {
            existing
        } else {
            existing.last().map(std::slice::from_ref).unwrap_or(&[])
        };
        let mut problems = Vec::new();
        for v in against {
            let Ok(old) = self.schema_by_id(v.id) else {
                continue;
            };
            if level.backward() {
                // BACKWARD: the new schema (reader) reads the old one's data.
                if let Err(e) = SchemaCompatibility::can_read(&old.parsed, candidate) {
                    problems.push(format!(
                        "{{oldSchemaVersion: {}, direction: BACKWARD, reason: {e}}}",
                        v.version
                    ));
                }
            }
            if level.forward() {
                // FORWARD: the old schema (reader) reads the new one's data.
                if let Err(e) = SchemaCompatibility::can_read(candidate, &old.parsed) {
                    problems.push(format!(
                        "{{oldSchemaVersion: {}, direction: FORWARD, reason: {e}}}",
                        v.version
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Decides what registering `text` under `subject` does.
    pub fn plan_register(&self, subject: &str, text: &str) -> Result<Registration, RegistryError> {
        if subject.is_empty() {
            return Err(RegistryError::BadRequest("empty subject".into()));
        }
        let (normal, parsed) = parse_schema(text)?;
        let live: Vec<SubjectVersion> = self
            .subjects
            .get(subject)
            .map(|vs| vs.iter().copied().filter(|v| !v.deleted).collect())
            .unwrap_or_default();
        let known_id = self.ids_by_text.get(&normal).copied();
        if let Some(id) = known_id {
            if live.iter().any(|v| v.id == id) {
                return Ok(Registration::Existing { id });
            }
        }
        self.check(self.effective_level(subject), &parsed, &live)
            .map_err(|problems| RegistryError::Incompatible {
                subject: subject.to_owned(),
                details: problems.join(", "),
            })?;
        let id =
            known_id.unwrap_or_else(|| self.schemas.keys().next_back().map_or(1, |max| max + 1));
        let version = self
            .subjects
            .get(subject)
            .and_then(|vs| vs.last())
            .map_or(1, |v| v.version + 1);
        Ok(Registration::New(SchemaValue {
            subject: subject.to_owned(),
            version,
            id,
            schema: normal,
            deleted: false,
        }))
    }

    /// Whether `text` could be registered as the next version, checked
    /// against `which` (`latest`: as registering would check) — the
    /// problems, if any.
    pub fn test_compatibility(
        &self,
        subject: &str,
        which: VersionRef,
        text: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let (_, parsed) = parse_schema(text)?;
        let live = self.live_versions(subject)?;
        let level = self.effective_level(subject);
        let against = match which {
            VersionRef::Latest => live,
            VersionRef::Number(n) => {
                let v = live
                    .into_iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| RegistryError::VersionNotFound(n.to_string()))?;
                vec![v]
            }
        };
        Ok(self
            .check(level, &parsed, &against)
            .err()
            .unwrap_or_default())
    }

    /// The records that soft-delete `which` versions of a subject (all when
    /// `None`), and the versions deleted.
    pub fn plan_delete(
        &self,
        subject: &str,
        which: Option<VersionRef>,
    ) -> Result<(Vec<Change>, Vec<u32>), RegistryError> {
        let live = self.live_versions(subject)?;
        let chosen: Vec<SubjectVersion> = match which {
            None => live,
            Some(which) => vec![self.version(subject, which).map(|info| SubjectVersion {
                version: info.version,
                id: info.id,
                deleted: false,
            })?],
        };
        let mut changes = Vec::new();
        for v in &chosen {
            changes.push(Change::Schema(SchemaValue {
                subject: subject.to_owned(),
                version: v.version,
                id: v.id,
                schema: self.schema_by_id(v.id)?.text.clone(),
                deleted: true,
            }));
        }
        Ok((changes, chosen.iter().map(|v| v.version).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::avro::value_schemas;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;
    const V2_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
    const V2_TYPE_CHANGE: &str =
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;

    fn register(reg: &mut Registry, subject: &str, text: &str) -> Result<u32, RegistryError> {
        match reg.plan_register(subject, text)? {
            Registration::Existing { id } => Ok(id),
            Registration::New(value) => {
                let id = value.id;
                reg.apply(Change::Schema(value))?;
                Ok(id)
            }
        }
    }

    fn set_level(reg: &mut Registry, subject: Option<&str>, level: CompatibilityLevel) {
        reg.apply(Change::Config {
            subject: subject.map(str::to_owned),
            level: Some(level),
        })
        .expect("config applies");
    }

    #[test]
    fn backward_by_default_accepts_a_defaulted_field_and_refuses_the_rest() {
        let mut reg = Registry::default();
        assert_eq!(register(&mut reg, "t-value", V1), Ok(1));
        assert_eq!(register(&mut reg, "t-value", V1), Ok(1), "idempotent");
        for bad in [V2_NO_DEFAULT, V2_TYPE_CHANGE] {
            let err = register(&mut reg, "t-value", bad).expect_err("incompatible");
            assert_eq!((err.http_status(), err.error_code()), (409, 409));
        }
        assert_eq!(register(&mut reg, "t-value", V2_DEFAULT), Ok(2));
        assert_eq!(reg.versions("t-value"), Ok(vec![1, 2]));
        // The same schema under another subject keeps its id.
        assert_eq!(register(&mut reg, "u-value", V2_DEFAULT), Ok(2));
        assert_eq!(
            reg.version("u-value", VersionRef::Latest)
                .map(|v| v.version),
            Ok(1)
        );
    }

    #[test]
    fn forward_full_none_and_transitive_levels() {
        // Adding a field without default: old readers ignore it (FORWARD),
        // but the new schema cannot read old data (not BACKWARD, so not FULL).
        let mut reg = Registry::default();
        register(&mut reg, "s", V1).expect("first");
        set_level(&mut reg, Some("s"), CompatibilityLevel::Full);
        assert!(
            register(&mut reg, "s", V2_NO_DEFAULT).is_err(),
            "FULL refuses it"
        );
        set_level(&mut reg, Some("s"), CompatibilityLevel::Forward);
        assert!(
            register(&mut reg, "s", V2_NO_DEFAULT).is_ok(),
            "FORWARD takes it"
        );
        assert_eq!(reg.effective_level("s"), CompatibilityLevel::Forward);
        assert_eq!(reg.effective_level("other"), CompatibilityLevel::Backward);

        // v2 changes a's type (allowed under NONE); v3 adds a defaulted field
        // to v2: BACKWARD against v2 only, refused transitively (v1's long a).
        let mut reg = Registry::default();
        set_level(&mut reg, None, CompatibilityLevel::None);
        register(&mut reg, "x", V1).expect("v1");
        register(&mut reg, "x", V2_TYPE_CHANGE).expect("NONE takes anything");
        set_level(&mut reg, None, CompatibilityLevel::Backward);
        let v3 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"c","type":"long","default":0}]}"#;
        assert!(reg
            .test_compatibility("x", VersionRef::Number(2), v3)
            .expect("ok")
            .is_empty());
        set_level(&mut reg, None, CompatibilityLevel::BackwardTransitive);
        let problems = reg
            .test_compatibility("x", VersionRef::Latest, v3)
            .expect("ok");
        assert_eq!(problems.len(), 1, "v1 wrote a long 'a': {problems:?}");
        assert!(register(&mut reg, "x", v3).is_err());
    }

    #[test]
    fn bad_input_is_a_confluent_error() {
        let mut reg = Registry::default();
        let err = register(&mut reg, "s", "{not json").expect_err("invalid");
        assert_eq!(err.error_code(), 42201);
        let err = register(&mut reg, "s", r#"{"type":"nope"}"#).expect_err("invalid");
        assert_eq!(err.error_code(), 42201);
        assert_eq!(reg.versions("s").expect_err("none").error_code(), 40401);
        assert_eq!(VersionRef::parse("0").expect_err("bad").error_code(), 42202);
        assert_eq!(VersionRef::parse("x").expect_err("bad").error_code(), 42202);
        assert_eq!(reg.schema_by_id(9).expect_err("none").error_code(), 40403);
        assert_eq!(
            CompatibilityLevel::parse("FULL_TRANSITIVE"),
            Some(CompatibilityLevel::FullTransitive)
        );
        assert_eq!(CompatibilityLevel::parse("full"), None);
    }

    #[test]
    fn records_round_trip_and_rebuild_the_same_state() {
        let mut reg = Registry::default();
        let mut log = Vec::new();
        for schema in value_schemas() {
            match reg
                .plan_register(&schema.subject(), &schema.text())
                .expect("registers")
            {
                Registration::New(value) => {
                    let change = Change::Schema(value);
                    log.push(change.to_record());
                    reg.apply(change).expect("applies");
                }
                Registration::Existing { .. } => panic!("every tradeflow schema is new"),
            }
        }
        let (deletes, deleted) = reg
            .plan_delete(
                "order-service.order.created-value",
                Some(VersionRef::Number(1)),
            )
            .expect("deletes");
        assert_eq!(deleted, vec![1]);
        for change in deletes {
            log.push(change.to_record());
            reg.apply(change).expect("applies");
        }
        let config = Change::Config {
            subject: Some("a".into()),
            level: Some(CompatibilityLevel::Full),
        };
        log.push(config.to_record());
        let mut again = Registry::default();
        for (key, value) in &log {
            again
                .apply(Change::from_record(key, value.as_deref()).expect("reads"))
                .expect("applies");
        }
        assert_eq!(again.subjects(), reg.subjects());
        for subject in reg.subjects() {
            assert_eq!(again.versions(&subject), reg.versions(&subject));
            assert_eq!(
                again.version(&subject, VersionRef::Latest),
                reg.version(&subject, VersionRef::Latest)
            );
        }
        assert_eq!(
            again.versions("order-service.order.created-value"),
            Ok(vec![2])
        );
        assert_eq!(again.subject_level("a"), Some(CompatibilityLevel::Full));
        assert!(Change::from_record(b"{}", None).is_err());
    }
}
