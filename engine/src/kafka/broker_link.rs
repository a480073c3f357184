//! How `group_admin`'s own connections to a broker are secured: what the
//! client properties say (`security.protocol`, `sasl.*`, `ssl.*`), read the
//! way librdkafka reads them, so a node on a TLS or SASL cluster can remove
//! a dead node's members as it can on a plain one.
//!
//! Supported: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` and `SASL_SSL`, with the
//! SASL mechanisms `PLAIN`, `SCRAM-SHA-256` and `SCRAM-SHA-512` (RFC 5802,
//! 7677; what `[kafka.security]` writes), TLS through rustls with the CA of
//! `ssl.ca.location` and the broker's host name verified.
//!
//! Owns: the TLS session and the SASL exchange of one connection. Must
//! never: log a password or a SCRAM proof, accept a broker whose
//! certificate or SCRAM signature does not verify, or quietly downgrade:
//! what it cannot do as configured (client certificates, `GSSAPI`,
//! `OAUTHBEARER`, host-name checks turned off, no CA file) is an error
//! naming the property, and the caller leaves the group to its session.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What the client properties ask of a connection.
pub(super) struct BrokerSecurity {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslLogin>,
}

/// A SASL mechanism and the credentials for it.
pub(super) struct SaslLogin {
    pub(super) mechanism: SaslMechanism,
    username: String,
    password: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub(super) fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Why the properties cannot be honoured here (the property and why).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct UnsupportedSecurity {
    pub key: &'static str,
    pub reason: String,
}

fn unsupported(key: &'static str, reason: impl Into<String>) -> UnsupportedSecurity {
    UnsupportedSecurity {
        key,
        reason: reason.into(),
    }
}

impl BrokerSecurity {
    /// Reads `properties` (the node's client properties).
    pub(super) fn from_properties(
        properties: &[(String, String)],
    ) -> Result<BrokerSecurity, UnsupportedSecurity> {
        let get = |key: &str| {
            properties
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let protocol = get("security.protocol")
            .unwrap_or("plaintext")
            .to_ascii_lowercase();
        let (tls, sasl) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (true, false),
            "sasl_plaintext" => (false, true),
            "sasl_ssl" => (true, true),
            other => {
                return Err(unsupported(
                    "security.protocol",
                    format!("{other:?} is none of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
                ))
            }
        };
        let tls = if tls {
            for key in [
                "ssl.certificate.location",
                "ssl.key.location",
                "ssl.certificate.pem",
                "ssl.key.pem",
                "ssl.keystore.location",
            ] {
                if get(key).is_some() {
                    return Err(unsupported(
                        "ssl.certificate.location",
                        format!("{key} is set: client certificates are not supported here"),
                    ));
                }
            }
            if get("ssl.endpoint.identification.algorithm")
                .is_some_and(|v| !v.eq_ignore_ascii_case("https"))
            {
                return Err(unsupported(
                    "ssl.endpoint.identification.algorithm",
                    "only \"https\" (the broker's host name verified) is supported here",
                ));
            }
            let ca = get("ssl.ca.location").ok_or_else(|| {
                unsupported(
                    "ssl.ca.location",
                    "not set: the broker's CA must be given as a PEM file",
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(ca)
                .map_err(|e| unsupported("ssl.ca.location", format!("{ca}: {e}")))?;
            for certificate in certificates {
                let certificate = certificate
                    .map_err(|e| unsupported("ssl.ca.location", format!("{ca}: {e}")))?;
                roots
                    .add(certificate)
                    .map_err(|e| unsupported("ssl.ca.location", format!("{ca}: {e}")))?;
            }
            // ring, as the services' REST TLS: no cmake or C toolchain beyond
            // cc, at the cost of no post-quantum key exchange (the allow).
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| unsupported("security.protocol", e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        let sasl = if sasl {
            let mechanism = match get("sasl.mechanism")
                .or(get("sasl.mechanisms"))
                .unwrap_or("GSSAPI")
                .to_ascii_uppercase()
                .as_str()
            {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                other => {
                    return Err(unsupported(
                        "sasl.mechanism",
                        format!("{other} is none of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
                    ))
                }
            };
            let username = get("sasl.username")
                .ok_or_else(|| unsupported("sasl.username", "not set"))?
                .to_string();
            let password = get("sasl.password")
                .ok_or_else(|| unsupported("sasl.password", "not set"))?
                .to_string();
            Some(SaslLogin {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        Ok(BrokerSecurity { tls, sasl })
    }

    /// The SASL login to perform after connecting, if any.
    pub(super) fn sasl(&self) -> Option<&SaslLogin> {
        self.sasl.as_ref()
    }

    /// Wraps a connected socket to `host` in TLS when asked.
    pub(super) fn wrap(&self, host: &str, socket: TcpStream) -> std::io::Result<BrokerStream> {
        match &self.tls {
            None => Ok(BrokerStream::Plain(socket)),
            Some(config) => {
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?;
                let session = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(std::io::Error::other)?;
                Ok(BrokerStream::Tls(Box::new(rustls::StreamOwned::new(
                    session, socket,
                ))))
            }
        }
    }
}

/// A connection to a broker, in the clear or in TLS.
pub(super) enum BrokerStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl BrokerStream {
    pub(super) fn socket(&self) -> &TcpStream {
        match self {
            BrokerStream::Plain(socket) => socket,
            BrokerStream::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for BrokerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BrokerStream::Plain(socket) => socket.read(buf),
            BrokerStream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for BrokerStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BrokerStream::Plain(socket) => socket.write(buf),
            BrokerStream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BrokerStream::Plain(socket) => socket.flush(),
            BrokerStream::Tls(stream) => stream.flush(),
        }
    }
}

/// One SASL exchange: the client's messages in turn, given the server's.
pub(super) enum SaslExchange<'a> {
    Plain(&'a SaslLogin),
    Scram(ScramClient<'a>),
}

impl<'a> SaslExchange<'a> {
    pub(super) fn start(login: &'a SaslLogin) -> Result<SaslExchange<'a>, String> {
        match login.mechanism {
            SaslMechanism::Plain => Ok(SaslExchange::Plain(login)),
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                Ok(SaslExchange::Scram(ScramClient::new(login)?))
            }
        }
    }

    /// The first message to send.
    pub(super) fn first(&self) -> Vec<u8> {
        match self {
            SaslExchange::Plain(login) => {
                format!("\0{}\0{}", login.username, login.password).into_bytes()
            }
            SaslExchange::Scram(scram) => scram.client_first(),
        }
    }

    /// The answer to the server's message, or `None` when the exchange is
    /// complete; an error when the server's message does not verify.
    pub(super) fn answer(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            SaslExchange::Plain(_) => Ok(None),
            SaslExchange::Scram(scram) => scram.answer(server),
        }
    }
}

/// The client side of SCRAM (RFC 5802), SHA-256 or SHA-512.
pub(super) struct ScramClient<'a> {
    login: &'a SaslLogin,
    nonce: String,
    /// Set once the server's first message is answered: the server's
    /// signature the final message must carry.
    expected_server_signature: Option<Vec<u8>>,
}

impl<'a> ScramClient<'a> {
    fn new(login: &'a SaslLogin) -> Result<ScramClient<'a>, String> {
        let mut random = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| "no randomness for the SCRAM nonce".to_string())?;
        Ok(ScramClient {
            login,
            nonce: base64_encode(&random),
            expected_server_signature: None,
        })
    }

    fn algorithms(
        &self,
    ) -> (
        pbkdf2::Algorithm,
        hmac::Algorithm,
        &'static digest::Algorithm,
    ) {
        match self.login.mechanism {
            SaslMechanism::ScramSha512 => (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
            ),
            _ => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
            ),
        }
    }

    fn client_first_bare(&self) -> String {
        // RFC 5802 5.1: "=" and "," in a name are escaped.
        let name = self.login.username.replace('=', "=3D").replace(',', "=2C");
        format!("n={name},r={}", self.nonce)
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn answer(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let server = std::str::from_utf8(server).map_err(|_| "a SCRAM message not in UTF-8")?;
        let field = |name: char| {
            server
                .split(',')
                .find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('=')))
        };
        if let Some(expected) = self.expected_server_signature.take() {
            if let Some(error) = field('e') {
                return Err(format!("the broker refused the login: {error}"));
            }
            let signature = field('v')
                .and_then(base64_decode)
                .ok_or("the broker's final SCRAM message carries no signature")?;
            return if signature == expected {
                Ok(None)
            } else {
                Err("the broker's SCRAM signature does not verify".into())
            };
        }
        let nonce = field('r').ok_or("the broker's SCRAM message carries no nonce")?;
        if !nonce.starts_with(&self.nonce) {
            return Err("the broker's SCRAM nonce does not extend ours".into());
        }
        let salt = field('s')
            .and_then(base64_decode)
            .ok_or("the broker's SCRAM message carries no salt")?;
        let iterations = field('i')
            .and_then(|i| i.parse::<u32>().ok())
            .and_then(std::num::NonZeroU32::new)
            .ok_or("the broker's SCRAM message carries no iteration count")?;
        let (kdf, mac, hash) = self.algorithms();
        let mut salted = vec![0u8; hash.output_len()];
        pbkdf2::derive(
            kdf,
            iterations,
            &salt,
            self.login.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server},{without_proof}", self.client_first_bare());
        let client_signature = hmac::sign(
            &hmac::Key::new(mac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.expected_server_signature = Some(
            hmac::sign(
                &hmac::Key::new(mac, server_key.as_ref()),
                auth_message.as_bytes(),
            )
            .as_ref()
            .to_vec(),
        );
        Ok(Some(
            format!("{without_proof},p={}", base64_encode(&proof)).into_bytes(),
        ))
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7677's user and password (SCRAM-SHA-256).
    fn rfc_7677_login() -> SaslLogin {
        SaslLogin {
            mechanism: SaslMechanism::ScramSha256,
            username: "user".into(),
            password: "pencil".into(),
        }
    }

    /// A client whose nonce is `nonce` instead of a random one.
    fn scram_with_nonce<'a>(login: &'a SaslLogin, nonce: &str) -> ScramClient<'a> {
        ScramClient {
            login,
            nonce: nonce.into(),
            expected_server_signature: None,
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn scram_sha_256_follows_the_rfc_example() {
        let login = rfc_7677_login();
        let mut scram = scram_with_nonce(&login, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_message = scram
            .answer(server_first.as_bytes())
            .expect("answers")
            .expect("a final message");
        assert_eq!(
            String::from_utf8(final_message).expect("text"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            scram.answer(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(None)
        );
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let login = rfc_7677_login();
        let mut scram = scram_with_nonce(&login, "rOprNGfwEbeRWgbNEkqO");
        scram
            .answer(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .expect("answers");
        assert!(scram.answer(b"v=AAAA").is_err());
        let mut foreign = scram_with_nonce(&login, "ours");
        assert!(foreign
            .answer(b"r=theirs,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .is_err());
    }

    #[test]
    fn what_cannot_be_honoured_is_named_by_its_property() {
        let refused = |pairs: &[(&str, &str)]| {
            BrokerSecurity::from_properties(&properties(pairs))
                .err()
                .map(|e| e.key)
        };
        assert_eq!(refused(&[]), None);
        assert_eq!(
            refused(&[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "GSSAPI")
            ]),
            Some("sasl.mechanism")
        );
        assert_eq!(
            refused(&[
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN")
            ]),
            Some("sasl.username")
        );
        assert_eq!(
            refused(&[("security.protocol", "SSL")]),
            Some("ssl.ca.location")
        );
        assert_eq!(
            refused(&[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", "/nonexistent/ca.pem")
            ]),
            Some("ssl.ca.location")
        );
        assert_eq!(
            refused(&[("security.protocol", "SSL"), ("ssl.key.location", "/k.pem")]),
            Some("ssl.certificate.location")
        );
        assert_eq!(
            refused(&[("security.protocol", "carrier-pigeon")]),
            Some("security.protocol")
        );
        let plain = BrokerSecurity::from_properties(&properties(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .expect("supported");
        assert_eq!(
            plain.sasl().map(|s| s.mechanism),
            Some(SaslMechanism::ScramSha512)
        );
    }
}
