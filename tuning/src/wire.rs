//! `[wire]` of a core map: the form of each flow topic's record values, read
//! from the same file as the core map.
//!
//! Owns: the section's file form and its rules (every error names its key,
//! `wire.value_format."<topic>"`). Like ksqlDB's `VALUE_FORMAT` and a Kafka
//! Streams topology's per-topic value serde, the format is chosen per topic;
//! a topic not listed is `rkyv`, the engine's zero-copy frame.
//! Must never: know which topics exist (the caller passes the flow's topics)
//! or talk to a schema registry (whether one is configured is the caller's
//! rule: Avro needs one).
//!
//! Lives on: the thread that starts the node, once.
//!
//! ```toml
//! [wire]
//! schema_registry = "http://registry:8081"          # or --schema-registry
//! [wire.value_format]
//! "order-service.order.created" = "avro"          # Confluent wire format
//! "payment-service.payment.completed" = "avro"
//! "inventory-service.stock.updated" = "avro"
//! "payment-service.payment.failed" = "rkyv"       # the default
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The value format of one topic (`wire.value_format."<topic>"`): the
/// workspace's one type for it, which the engine's codecs
/// (`engine::wire::ValueFormat`) and the load generator's `--value-format`
/// use too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValueFormat {
    /// The framed rkyv form (the default), read in place.
    #[default]
    Rkyv,
    /// Confluent's wire format: magic 0, the registry's schema id, an Avro
    /// datum; needs a schema registry.
    Avro,
}

impl ValueFormat {
    /// The value as a core map (and `--value-format`) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueFormat::Rkyv => "rkyv",
            ValueFormat::Avro => "avro",
        }
    }

    /// The format a core map's value names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        [ValueFormat::Rkyv, ValueFormat::Avro]
            .into_iter()
            .find(|f| f.as_str() == text)
    }
}

/// `[wire]`: the topics (logical names) whose format is set, and the
/// schema registry the node uses (`--schema-registry` overrides it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireSettings {
    pub value_format: BTreeMap<String, ValueFormat>,
    /// `wire.schema_registry`: a Confluent-compatible registry's base URL
    /// (http; no trailing slash).
    pub schema_registry: Option<String>,
}

/// Why `[wire]` was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireSettingsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// A key of the section is wrong; `key` is its full name.
    #[error("{path}: {key}: {message}")]
    Key {
        path: String,
        key: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct FileRoot {
    wire: Option<FileWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    #[serde(default)]
    value_format: BTreeMap<String, String>,
    schema_registry: Option<String>,
}

impl WireSettings {
    /// Reads `[wire]` of the core map at `path`; `topics` are the flow's
    /// logical topic names (any other key is refused). No section: rkyv
    /// everywhere.
    pub fn load(
        path: impl AsRef<Path>,
        topics: &[&str],
    ) -> Result<WireSettings, WireSettingsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WireSettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), topics)
    }

    /// As [`WireSettings::load`], from text.
    pub fn from_toml_str(text: &str, topics: &[&str]) -> Result<WireSettings, WireSettingsError> {
        Self::parse(text, "core map", topics)
    }

    /// The topics set to Avro.
    pub fn avro_topics(&self) -> impl Iterator<Item = &str> {
        self.value_format
            .iter()
            .filter(|(_, f)| **f == ValueFormat::Avro)
            .map(|(t, _)| t.as_str())
    }

    fn parse(text: &str, path: &str, topics: &[&str]) -> Result<WireSettings, WireSettingsError> {
        let root: FileRoot = toml::from_str(text).map_err(|e| WireSettingsError::Syntax {
            path: path.to_string(),
            message: e.message().to_string(),
        })?;
        let Some(file) = root.wire else {
            return Ok(WireSettings::default());
        };
        let mut value_format = BTreeMap::new();
        for (topic, format) in file.value_format {
            let key_error = |message: String| WireSettingsError::Key {
                path: path.to_string(),
                key: format!("wire.value_format.\"{topic}\""),
                message,
            };
            if !topics.contains(&topic.as_str()) {
                return Err(key_error(format!(
                    "not a topic of the flow; use a logical topic name: {}",
                    topics.join(", ")
                )));
            }
            let Some(format) = ValueFormat::parse(&format) else {
                return Err(key_error(format!(
                    "{format:?} is not a value format; use \"rkyv\" or \"avro\""
                )));
            };
            value_format.insert(topic, format);
        }
        let schema_registry = match file.schema_registry {
            None => None,
            Some(url) => Some(
                registry_url(&url).map_err(|message| WireSettingsError::Key {
                    path: path.to_string(),
                    key: "wire.schema_registry".to_string(),
                    message,
                })?,
            ),
        };
        Ok(WireSettings {
            value_format,
            schema_registry,
        })
    }
}

/// `url` as a registry base URL: `http://host[:port][/path]`, without a
/// trailing slash. The node's registry client speaks plain HTTP only.
fn registry_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} is not an http:// URL (the registry client speaks plain HTTP; \
             e.g. \"http://registry:8081\")"
        ));
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!(
            "{url:?} names no host (e.g. \"http://registry:8081\")"
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPICS: &[&str] = &[
        "order-service.order.created",
        "payment-service.payment.completed",
    ];

    #[test]
    fn reads_formats_and_names_the_key_of_a_mistake() {
        let settings = WireSettings::from_toml_str(
            "[node]\nname = \"a\"\n[wire.value_format]\n\"order-service.order.created\" = \"avro\"\n\
             \"payment-service.payment.completed\" = \"rkyv\"\n",
            TOPICS,
        )
        .expect("valid");
        assert_eq!(
            settings.avro_topics().collect::<Vec<_>>(),
            ["order-service.order.created"]
        );
        assert_eq!(
            WireSettings::from_toml_str("[node]\nname = \"a\"\n", TOPICS).expect("no section"),
            WireSettings::default()
        );
        let error = WireSettings::from_toml_str(
            "[wire.value_format]\n\"order-service.order.created\" = \"json\"\n",
            TOPICS,
        )
        .expect_err("json is no format")
        .to_string();
        assert!(
            error.contains("wire.value_format.\"order-service.order.created\"")
                && error.contains("\"rkyv\" or \"avro\""),
            "{error}"
        );
        let error =
            WireSettings::from_toml_str("[wire.value_format]\n\"orders\" = \"avro\"\n", TOPICS)
                .expect_err("no such topic")
                .to_string();
        assert!(
            error.contains("wire.value_format.\"orders\": not a topic of the flow"),
            "{error}"
        );
        let error = WireSettings::from_toml_str("[wire]\nformat = 1\n", TOPICS)
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("format"), "{error}");
    }

    #[test]
    fn the_registry_url_is_read_and_a_wrong_one_names_its_key() {
        let settings = WireSettings::from_toml_str(
            "[wire]\nschema_registry = \"http://registry:8081/\"\n",
            TOPICS,
        )
        .expect("valid");
        assert_eq!(
            settings.schema_registry.as_deref(),
            Some("http://registry:8081")
        );
        for wrong in [
            "registry:8081",
            "https://registry:8081",
            "http://",
            "http://:8081",
        ] {
            let error = WireSettings::from_toml_str(
                &format!("[wire]\nschema_registry = \"{wrong}\"\n"),
                TOPICS,
            )
            .expect_err(wrong)
            .to_string();
            assert!(error.contains("wire.schema_registry"), "{wrong}: {error}");
        }
    }
}
