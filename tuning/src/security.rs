//! `[kafka.security]` of a core map: how every Kafka client of the node
//! authenticates and encrypts (TLS, SASL/SCRAM), read from the same file as
//! the core map.
//!
//! Owns: the section's file form and its rules (every error names its key,
//! `kafka.security.<key>`), reading the password from a file or an
//! environment variable at start-up, [`Secret`] (a value that never prints),
//! the librdkafka properties the section becomes, and which client
//! properties are secret ([`is_secret_property`]) so that every Debug of
//! client settings can redact them.
//! Must never: accept a password written inline in the file, put a password
//! into a message, a `Debug` or `Display` output, or talk to Kafka; the
//! engine's clients only receive the properties.
//!
//! Lives on: the thread that starts the node (or a tool), once.
//!
//! ```toml
//! [kafka.security]
//! protocol = "SASL_SSL"               # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
//! sasl_mechanism = "SCRAM-SHA-512"    # or SCRAM-SHA-256, PLAIN (default SCRAM-SHA-512)
//! username = "tradeflow-payment"
//! password_file = "/run/secrets/kafka-password"   # or password_env = "KAFKA_PASSWORD"
//! ca_file = "/etc/tradeflow/kafka-ca.pem"          # trust anchors for the brokers
//! cert_file = "/etc/tradeflow/client.pem"          # optional client certificate (mTLS)
//! key_file = "/etc/tradeflow/client.key"           # with cert_file
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of every key of the section, as messages name them.
const SECTION: &str = "kafka.security";

/// A secret value (a password). `Debug` and `Display` print `"<redacted>"`;
/// only [`Secret::expose`] gives the value, at the one place that hands it to
/// librdkafka.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for the client configuration only, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What every redacted value prints as.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a librdkafka property holds a secret (a password, a private key,
/// a JAAS or OAuth secret), so that its value must be redacted wherever
/// client settings are printed.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key == "sasl.jaas.config"
        || key == "ssl.key.pem"
        || key == "ssl_key"
        || key == "sasl.oauthbearer.config"
}

/// `client_properties` for printing: secret values replaced by [`REDACTED`].
pub fn redacted_properties(properties: &[(String, String)]) -> Vec<(&str, &str)> {
    properties
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret_property(key) {
                REDACTED
            } else {
                value.as_str()
            };
            (key.as_str(), shown)
        })
        .collect()
}

/// `security.protocol`, in Kafka's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    const fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    const fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn parse(text: &str) -> Option<SecurityProtocol> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(text))
    }
}

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    ScramSha512,
    ScramSha256,
    Plain,
}

impl SaslMechanism {
    pub const fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }

    fn parse(text: &str) -> Option<SaslMechanism> {
        [
            SaslMechanism::ScramSha512,
            SaslMechanism::ScramSha256,
            SaslMechanism::Plain,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(text))
    }
}

/// Where the SASL password is read from at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file holding the password (a trailing newline is ignored): a
    /// Kubernetes secret volume, a Vault agent's output.
    File(PathBuf),
    /// An environment variable's name.
    Env(String),
}

/// The SASL part of the section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: PasswordSource,
}

/// A validated `[kafka.security]` section. Holds where the password is, never
/// the password: [`KafkaSecurity::client_properties`] reads it when clients
/// are made, so a rotated password file is picked up by the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<SaslSettings>,
    /// CA certificates (PEM) the brokers' certificates must chain to; the
    /// system's trust store when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require mTLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Why the section cannot be used. Messages name the key and never carry a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: [kafka] section: {message}")]
    Syntax { path: String, message: String },
    #[error("{SECTION}.{key}: {problem}")]
    Key { key: &'static str, problem: String },
}

fn key_error(key: &'static str, problem: impl Into<String>) -> SecurityError {
    SecurityError::Key {
        key,
        problem: problem.into(),
    }
}

// The file form: only [kafka] is read here; the rest of the core map is
// `file.rs`'s. Unknown keys inside [kafka] and [kafka.security] are refused.
#[derive(Deserialize)]
struct FileRoot {
    #[serde(default)]
    kafka: Option<FileKafka>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKafka {
    #[serde(default)]
    security: Option<FileSecurity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecurity {
    protocol: String,
    sasl_mechanism: Option<String>,
    username: Option<String>,
    // Read only to refuse it with a useful message (and never echoed).
    password: Option<toml::Value>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// The `[kafka.security]` section of the core map at `path`, if it has
    /// one. Paths in it are used as written (relative ones against the
    /// working directory).
    pub fn load(path: impl AsRef<Path>) -> Result<Option<KafkaSecurity>, SecurityError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// As [`KafkaSecurity::load`], from text.
    pub fn from_toml_str(text: &str) -> Result<Option<KafkaSecurity>, SecurityError> {
        Self::parse(text, "core map")
    }

    fn parse(text: &str, origin: &str) -> Result<Option<KafkaSecurity>, SecurityError> {
        let root: FileRoot = toml::from_str(text).map_err(|e| SecurityError::Syntax {
            path: origin.to_string(),
            // toml's message quotes the offending line; a line holding an
            // inline password must not reach a log, so say only where.
            message: match e.span() {
                Some(span) => format!(
                    "{} (line {})",
                    e.message(),
                    text[..span.start.min(text.len())].lines().count().max(1)
                ),
                None => e.message().to_string(),
            },
        })?;
        match root.kafka.and_then(|k| k.security) {
            None => Ok(None),
            Some(file) => Self::validate(file).map(Some),
        }
    }

    fn validate(file: FileSecurity) -> Result<KafkaSecurity, SecurityError> {
        let protocol = SecurityProtocol::parse(&file.protocol).ok_or_else(|| {
            key_error(
                "protocol",
                format!(
                    "{:?} is not a security protocol; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                    file.protocol
                ),
            )
        })?;
        if file.password.is_some() {
            return Err(key_error(
                "password",
                "passwords are never written in the core map (it is copied, diffed and \
                 logged); put it in a file and set password_file, or in an environment \
                 variable and set password_env",
            ));
        }
        let sasl = if protocol.sasl() {
            let mechanism = match &file.sasl_mechanism {
                None => SaslMechanism::ScramSha512,
                Some(text) => SaslMechanism::parse(text).ok_or_else(|| {
                    key_error(
                        "sasl_mechanism",
                        format!(
                            "{text:?} is not supported; use SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
                        ),
                    )
                })?,
            };
            if mechanism == SaslMechanism::Plain && !protocol.tls() {
                return Err(key_error(
                    "sasl_mechanism",
                    "PLAIN sends the password in clear text; use it only with protocol = \
                     \"SASL_SSL\", or use SCRAM-SHA-512",
                ));
            }
            let username = match file.username {
                Some(name) if !name.trim().is_empty() => name,
                _ => {
                    return Err(key_error(
                        "username",
                        format!("required with protocol = \"{}\"", protocol.name()),
                    ))
                }
            };
            let password = match (file.password_file, file.password_env) {
                (Some(path), None) => PasswordSource::File(path),
                (None, Some(name)) if !name.is_empty() => PasswordSource::Env(name),
                (None, Some(_)) => {
                    return Err(key_error(
                        "password_env",
                        "empty; name the environment variable that holds the password",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(key_error(
                        "password_file",
                        "give password_file or password_env, not both",
                    ))
                }
                (None, None) => {
                    return Err(key_error(
                        "password_file",
                        format!(
                            "protocol = \"{}\" needs a password: set password_file or password_env",
                            protocol.name()
                        ),
                    ))
                }
            };
            Some(SaslSettings {
                mechanism,
                username,
                password,
            })
        } else {
            for (key, present) in [
                ("sasl_mechanism", file.sasl_mechanism.is_some()),
                ("username", file.username.is_some()),
                ("password_file", file.password_file.is_some()),
                ("password_env", file.password_env.is_some()),
            ] {
                if present {
                    return Err(key_error(
                        key,
                        format!(
                            "only used with protocol = \"SASL_SSL\" or \"SASL_PLAINTEXT\", \
                             not \"{}\"; remove it or change the protocol",
                            protocol.name()
                        ),
                    ));
                }
            }
            None
        };
        if !protocol.tls() {
            for (key, present) in [
                ("ca_file", file.ca_file.is_some()),
                ("cert_file", file.cert_file.is_some()),
                ("key_file", file.key_file.is_some()),
            ] {
                if present {
                    return Err(key_error(
                        key,
                        format!(
                            "only used with protocol = \"SSL\" or \"SASL_SSL\", not \"{}\"",
                            protocol.name()
                        ),
                    ));
                }
            }
        }
        match (&file.cert_file, &file.key_file) {
            (Some(_), None) => return Err(key_error("key_file", "required with cert_file")),
            (None, Some(_)) => return Err(key_error("cert_file", "required with key_file")),
            _ => {}
        }
        Ok(KafkaSecurity {
            protocol,
            sasl,
            ca_file: file.ca_file,
            cert_file: file.cert_file,
            key_file: file.key_file,
        })
    }

    /// The librdkafka properties for every client: reads the password now
    /// (from its file or variable) and checks that the certificate files
    /// exist, naming the key that points at a missing one.
    pub fn client_properties(&self) -> Result<Vec<(String, String)>, SecurityError> {
        let mut out = vec![(
            "security.protocol".to_string(),
            self.protocol.name().to_string(),
        )];
        for (key, property, path) in [
            ("ca_file", "ssl.ca.location", &self.ca_file),
            ("cert_file", "ssl.certificate.location", &self.cert_file),
            ("key_file", "ssl.key.location", &self.key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(key_error(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
                out.push((property.to_string(), path.display().to_string()));
            }
        }
        if let Some(sasl) = &self.sasl {
            let password = sasl.password.read()?;
            out.push(("sasl.mechanism".into(), sasl.mechanism.name().into()));
            out.push(("sasl.username".into(), sasl.username.clone()));
            out.push(("sasl.password".into(), password.expose().to_string()));
        }
        Ok(out)
    }
}

impl PasswordSource {
    /// The password, without a trailing newline. Errors name the key and the
    /// file or variable, never the content.
    pub fn read(&self) -> Result<Secret, SecurityError> {
        let (key, text) = match self {
            PasswordSource::File(path) => (
                "password_file",
                std::fs::read_to_string(path)
                    .map_err(|e| key_error("password_file", format!("{}: {e}", path.display())))?,
            ),
            PasswordSource::Env(name) => (
                "password_env",
                std::env::var(name).map_err(|_| {
                    key_error(
                        "password_env",
                        format!("the environment variable {name} is not set (or not UTF-8)"),
                    )
                })?,
            ),
        };
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(key_error(key, "the password is empty"));
        }
        Ok(Secret::new(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "hunter2-correct-horse";

    fn section(body: &str) -> Result<Option<KafkaSecurity>, SecurityError> {
        KafkaSecurity::from_toml_str(&format!("[node]\nname = \"a\"\n[kafka.security]\n{body}"))
    }

    fn error(body: &str) -> String {
        match section(body) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    #[test]
    fn a_map_without_the_section_has_no_security() -> Result<(), SecurityError> {
        assert_eq!(
            KafkaSecurity::from_toml_str("[node]\nname = \"a\"\n")?,
            None
        );
        Ok(())
    }

    #[test]
    fn sasl_ssl_with_a_password_file_becomes_client_properties(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("tf-security-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let password = dir.join("password");
        std::fs::write(&password, format!("{PASSWORD}\n"))?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not checked here")?;
        let security = section(&format!(
            "protocol = \"SASL_SSL\"\nusername = \"tradeflow-payment\"\npassword_file = {:?}\nca_file = {:?}\n",
            password.display().to_string(),
            ca.display().to_string()
        ))?
        .ok_or("no section")?;
        assert_eq!(
            security.sasl.as_ref().map(|s| s.mechanism),
            Some(SaslMechanism::ScramSha512),
            "SCRAM-SHA-512 is the default"
        );
        let properties = security.client_properties()?;
        let get = |k: &str| {
            properties
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("tradeflow-payment"));
        assert_eq!(
            get("sasl.password"),
            Some(PASSWORD),
            "trailing newline dropped"
        );
        assert_eq!(
            get("ssl.ca.location"),
            Some(ca.display().to_string().as_str())
        );
        // Printing the section or the properties never shows the password.
        let shown = format!("{security:?} {:?}", redacted_properties(&properties));
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new(PASSWORD);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&secret)), format!("Some({REDACTED})"));
        assert_eq!(secret.expose(), PASSWORD);
    }

    #[test]
    fn secret_properties_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        for key in ["sasl.username", "security.protocol", "ssl.ca.location"] {
            assert!(!is_secret_property(key), "{key}");
        }
    }

    #[test]
    fn an_inline_password_is_refused_without_echoing_it() {
        let message = error(&format!(
            "protocol = \"SASL_SSL\"\nusername = \"u\"\npassword = \"{PASSWORD}\"\n"
        ));
        assert!(
            message.starts_with("kafka.security.password: "),
            "{message}"
        );
        assert!(!message.contains(PASSWORD), "{message}");
    }

    #[test]
    fn every_broken_rule_names_its_key() {
        for (body, key) in [
            ("protocol = \"TLS\"\n", "kafka.security.protocol: "),
            (
                "protocol = \"SASL_SSL\"\npassword_env = \"P\"\n",
                "kafka.security.username: ",
            ),
            (
                "protocol = \"SASL_SSL\"\nusername = \"u\"\n",
                "kafka.security.password_file: ",
            ),
            (
                "protocol = \"SASL_SSL\"\nusername = \"u\"\npassword_env = \"P\"\npassword_file = \"f\"\n",
                "kafka.security.password_file: ",
            ),
            (
                "protocol = \"SASL_SSL\"\nsasl_mechanism = \"GSSAPI\"\nusername = \"u\"\npassword_env = \"P\"\n",
                "kafka.security.sasl_mechanism: ",
            ),
            (
                "protocol = \"SASL_PLAINTEXT\"\nsasl_mechanism = \"PLAIN\"\nusername = \"u\"\npassword_env = \"P\"\n",
                "kafka.security.sasl_mechanism: ",
            ),
            ("protocol = \"SSL\"\nusername = \"u\"\n", "kafka.security.username: "),
            ("protocol = \"PLAINTEXT\"\nca_file = \"ca.pem\"\n", "kafka.security.ca_file: "),
            ("protocol = \"SSL\"\ncert_file = \"c.pem\"\n", "kafka.security.key_file: "),
        ] {
            let message = error(body);
            assert!(message.starts_with(key), "{body}: {message}");
        }
        // An unknown key is refused too (a typo must not silently disable TLS).
        let message = error("protocol = \"SSL\"\ncafile = \"ca.pem\"\n");
        assert!(message.contains("cafile"), "{message}");
    }

    #[test]
    fn a_missing_password_or_certificate_names_the_key() -> Result<(), SecurityError> {
        let security = section(
            "protocol = \"SASL_SSL\"\nusername = \"u\"\npassword_env = \"TF_TEST_SURELY_UNSET_PASSWORD\"\n",
        )?;
        let message = security
            .map(|s| s.client_properties().err().map(|e| e.to_string()))
            .unwrap_or_default()
            .unwrap_or_default();
        assert!(
            message.starts_with("kafka.security.password_env: "),
            "{message}"
        );
        assert!(
            message.contains("TF_TEST_SURELY_UNSET_PASSWORD"),
            "{message}"
        );
        let security = section("protocol = \"SSL\"\nca_file = \"/nonexistent/ca.pem\"\n")?;
        let message = security
            .map(|s| s.client_properties().err().map(|e| e.to_string()))
            .unwrap_or_default()
            .unwrap_or_default();
        assert!(message.starts_with("kafka.security.ca_file: "), "{message}");
        Ok(())
    }
}
