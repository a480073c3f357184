//! Tests of the Order API's security: bearer tokens on REST and gRPC (401,
//! 403 by account scope and role, open health), the metrics setting, token
//! rotation on SIGHUP, and TLS on both ports with a certificate made here.
//!
//! Owns: nothing the running API uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

use super::super::auth::{Auth, AuthConfig, MetricsAccess};
use super::super::grpc::GrpcApi;
use super::super::proto::order_api_client::OrderApiClient;
use super::super::proto::order_api_server::OrderApi as _;
use super::super::proto::{
    CreateOrderRequest, FundAccountRequest, GetInstrumentRequest, ReplenishInstrumentRequest,
};
use super::super::{rest, ApiConfig, InstrumentPolicy, TlsConfig};
use super::{config, fixture, Fixture, Publisher, StateSource};
use crate::api::ops::OrderApi;

/// May act for account 7 only; no role.
const DESK: &str = "desk-7-0123456789abcdef0123456789abcdef";
/// Every account, and the ops role.
const OPS: &str = "ops-all-0123456789abcdef0123456789abcdef";
/// In no token file.
const STRANGER: &str = "stranger-0123456789abcdef0123456789abcdef";

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tf-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tokens_toml(desk: &str) -> String {
    format!(
        "[[token]]\nprincipal = \"desk-7\"\ntoken = \"{desk}\"\naccounts = [7]\n\n\
         [[token]]\nprincipal = \"back-office\"\ntoken = \"{OPS}\"\nall_accounts = true\nroles = [\"ops\"]\n"
    )
}

fn auth_config(path: &Path, metrics: MetricsAccess) -> AuthConfig {
    AuthConfig {
        tokens_file: path.to_path_buf(),
        metrics,
    }
}

/// The unit fixture's API behind the test tokens.
fn secured(scratch: &Scratch, metrics: MetricsAccess) -> Fixture {
    let path = scratch.file("tokens.toml", &tokens_toml(DESK));
    let f = fixture();
    let auth = Auth::load(auth_config(&path, metrics)).expect("tokens load");
    let api = Arc::new(
        OrderApi::new(
            &config(InstrumentPolicy::Inventory),
            Arc::clone(&f.state) as Arc<dyn StateSource>,
            Arc::clone(&f.recorder) as Arc<dyn Publisher>,
        )
        .with_auth(auth),
    );
    Fixture { api, ..f }
}

async fn send(
    router: axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn order_for(account: u64) -> Value {
    json!({"account": account, "sku": "AAPL", "quantity": 1, "limit_price": 10, "client_order_id": "c-1"})
}

#[tokio::test]
async fn rest_needs_a_known_bearer_token_and_keeps_to_its_scope() {
    let scratch = Scratch::new("rest-auth");
    let f = secured(&scratch, MetricsAccess::Open);
    let router = || rest::router(Arc::clone(&f.api), None);

    // 401 without a token, with an unknown one, with another scheme; the
    // body is not even looked at.
    for token in [None, Some(STRANGER)] {
        let (status, headers, body) =
            send(router(), "POST", "/v1/orders", token, Some(order_for(7))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(code(&body), "unauthenticated");
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    let basic = Request::builder()
        .uri("/v1/instruments/AAPL")
        .header("authorization", format!("Basic {DESK}"))
        .body(Body::empty())
        .expect("request");
    let response = router().oneshot(basic).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(router(), "GET", "/v1/accounts/x", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "401 before validation");
    assert!(f.recorder.taken().is_empty());

    // The desk acts for account 7 only, and holds no ops role.
    let (status, _, body) = send(
        router(),
        "POST",
        "/v1/orders",
        Some(DESK),
        Some(order_for(7)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(f.recorder.taken().len(), 1);
    for (method, uri, body) in [
        ("POST", "/v1/orders", Some(order_for(8))),
        ("GET", "/v1/accounts/8", None),
        ("GET", "/v1/accounts/8/orders/1", None),
        ("POST", "/v1/accounts/8/orders/1/cancel", None),
        (
            "POST",
            "/v1/accounts/8/orders/1/amend",
            Some(json!({"quantity": 1, "limit_price": 1})),
        ),
    ] {
        let (status, _, reply) = send(router(), method, uri, Some(DESK), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {reply}");
        assert_eq!(code(&reply), "account_forbidden", "{method} {uri}");
        assert_eq!(reply["error"]["field"], json!("account"));
    }
    for (uri, body) in [
        ("/v1/accounts/7/fundings", json!({"amount": 5})),
        (
            "/v1/instruments/AAPL/replenishments",
            json!({"quantity": 5}),
        ),
    ] {
        let (status, _, reply) = send(router(), "POST", uri, Some(DESK), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {reply}");
        assert_eq!(code(&reply), "role_required", "{uri}");
    }
    assert!(
        f.recorder.taken().is_empty(),
        "a refused call publishes nothing"
    );
    let (status, _, _) = send(router(), "GET", "/v1/instruments/AAPL", Some(DESK), None).await;
    assert_eq!(status, StatusCode::OK, "any principal reads stock");

    // ops: any account, fundings and replenishments.
    for (uri, body) in [
        ("/v1/accounts/8/fundings", json!({"amount": 5})),
        (
            "/v1/instruments/AAPL/replenishments",
            json!({"quantity": 5}),
        ),
    ] {
        let (status, _, reply) = send(router(), "POST", uri, Some(OPS), Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{uri}: {reply}");
    }
    assert_eq!(f.recorder.taken().len(), 2);

    // Health and the document stay open.
    for uri in ["/health/live", "/openapi.yaml"] {
        let (status, _, _) = send(router(), "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn metrics_need_a_token_only_when_configured() {
    let observability = crate::observe::Observability::new(None).expect("registry");
    for (metrics, without) in [
        (MetricsAccess::Open, StatusCode::OK),
        (MetricsAccess::Token, StatusCode::UNAUTHORIZED),
    ] {
        let scratch = Scratch::new("metrics");
        let f = secured(&scratch, metrics);
        let router = || rest::router(Arc::clone(&f.api), Some(&observability));
        let (status, _, _) = send(router(), "GET", "/metrics", None, None).await;
        assert_eq!(status, without, "{metrics:?}");
        let (status, _, _) = send(router(), "GET", "/metrics", Some(DESK), None).await;
        assert_eq!(status, StatusCode::OK, "{metrics:?}");
        let (status, _, _) = send(router(), "GET", "/health/live", None, None).await;
        assert_eq!(status, StatusCode::OK, "{metrics:?}");
    }
    // No token ever reaches the exposition.
    let text = observability.render().expect("render");
    assert!(!text.contains(DESK) && !text.contains(OPS));
}

/// A gRPC request carrying `authorization: Bearer <token>` when given.
fn with<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

#[tokio::test]
async fn grpc_applies_the_same_rules_from_metadata() {
    let scratch = Scratch::new("grpc-auth");
    let f = secured(&scratch, MetricsAccess::Open);
    let grpc = GrpcApi::new(Arc::clone(&f.api));
    let order = |account| CreateOrderRequest {
        account: Some(account),
        sku: Some("AAPL".into()),
        quantity: Some(1),
        limit_price: Some(10),
        client_order_id: Some("c-1".into()),
    };
    for token in [None, Some(STRANGER)] {
        let status = grpc
            .create_order(with(token, order(7)))
            .await
            .expect_err("unauthenticated");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let status = grpc
        .create_order(with(Some(DESK), order(8)))
        .await
        .expect_err("outside the scope");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().starts_with("account_forbidden: "));
    let status = grpc
        .fund_account(with(
            Some(DESK),
            FundAccountRequest {
                account: Some(7),
                amount: Some(5),
                idempotency_key: None,
            },
        ))
        .await
        .expect_err("no ops role");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().starts_with("role_required: "));
    assert!(f.recorder.taken().is_empty());
    grpc.create_order(with(Some(DESK), order(7)))
        .await
        .expect("in scope");
    grpc.replenish_instrument(with(
        Some(OPS),
        ReplenishInstrumentRequest {
            sku: Some("AAPL".into()),
            quantity: Some(5),
            idempotency_key: None,
        },
    ))
    .await
    .expect("ops replenishes");
    assert_eq!(f.recorder.taken().len(), 2);
}

/// One HTTP/1.1 GET over any stream; the whole response as text.
async fn http_get(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    uri: &str,
    token: Option<&str>,
) -> std::io::Result<String> {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!(
                "GET {uri} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_token_file_and_a_broken_file_keeps_the_old_tokens(
) -> Result<(), Box<dyn std::error::Error>> {
    const ROTATED: &str = "desk-7-rotated-fedcba9876543210fedcba98";
    let scratch = Scratch::new("sighup");
    let path = scratch.file("tokens.toml", &tokens_toml(DESK));
    let f = fixture();
    let handle = super::super::spawn_with(
        ApiConfig {
            auth: Some(auth_config(&path, MetricsAccess::Open)),
            ..config(InstrumentPolicy::Inventory)
        },
        Arc::clone(&f.state) as Arc<dyn StateSource>,
        Arc::clone(&f.recorder) as Arc<dyn Publisher>,
    )?;
    let addr = handle.rest_addr();
    let runtime = client_runtime();
    let status_with = |token: &str| -> std::io::Result<String> {
        runtime.block_on(async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let response = http_get(&mut stream, "/v1/instruments/AAPL", Some(token)).await?;
            Ok(response.lines().next().unwrap_or_default().to_string())
        })
    };
    let hangup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
    };
    let wait_for = |token: &str, expected: &str| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = status_with(token).map_err(|e| e.to_string())?;
            if line.starts_with(expected) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("still {line}, wanted {expected}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(status_with(DESK)?.starts_with("HTTP/1.1 200"));
    assert!(status_with(ROTATED)?.starts_with("HTTP/1.1 401"));
    // Rotation: the new token replaces the old one on SIGHUP.
    std::fs::write(&path, tokens_toml(ROTATED))?;
    assert!(hangup()?.success());
    wait_for(ROTATED, "HTTP/1.1 200")?;
    wait_for(DESK, "HTTP/1.1 401")?;
    // A broken file is refused and the rotated token stays in force.
    std::fs::write(&path, "[[token]]\nprincipal = \"x\"\ntoken = \"short\"\n")?;
    assert!(hangup()?.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(status_with(ROTATED)?.starts_with("HTTP/1.1 200"));
    assert!(handle.is_running());
    handle.stop()?;
    Ok(())
}

#[test]
fn a_missing_or_broken_token_file_stops_the_start() {
    let scratch = Scratch::new("bad-tokens");
    let broken = scratch.file("tokens.toml", "[[token]]\nprincipal = 1\n");
    for path in [scratch.0.join("absent.toml"), broken] {
        let f = fixture();
        let started = super::super::spawn_with(
            ApiConfig {
                auth: Some(auth_config(&path, MetricsAccess::Open)),
                ..config(InstrumentPolicy::Inventory)
            },
            Arc::clone(&f.state) as Arc<dyn StateSource>,
            Arc::clone(&f.recorder) as Arc<dyn Publisher>,
        );
        let error = started.err().expect("refused").to_string();
        assert!(error.contains("token file"), "{error}");
    }
}

#[test]
fn tls_serves_rest_and_grpc_with_the_configured_certificate(
) -> Result<(), Box<dyn std::error::Error>> {
    use tokio_rustls::rustls;
    let scratch = Scratch::new("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_pem = certified.cert.pem();
    let cert_file = scratch.file("cert.pem", &cert_pem);
    let key_file = scratch.file("key.pem", &certified.signing_key.serialize_pem());
    let f = fixture();
    let handle = super::super::spawn_with(
        ApiConfig {
            tls: Some(TlsConfig {
                cert_file,
                key_file,
            }),
            ..config(InstrumentPolicy::Inventory)
        },
        Arc::clone(&f.state) as Arc<dyn StateSource>,
        Arc::clone(&f.recorder) as Arc<dyn Publisher>,
    )?;
    let runtime = client_runtime();
    runtime.block_on(async {
        // A client that trusts only the certificate made above.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone())?;
        #[allow(deprecated)] // ring, as the server (see api::tls)
        let provider = rustls::crypto::ring::default_provider();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(handle.rest_addr()).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut tls = connector.connect(name, tcp).await?;
        let response = http_get(&mut tls, "/health/live", None).await?;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        // Plain HTTP to the TLS port gets no HTTP answer.
        let mut plain = tokio::net::TcpStream::connect(handle.rest_addr()).await?;
        let answer = http_get(&mut plain, "/health/live", None).await;
        assert!(
            !answer.as_deref().unwrap_or_default().starts_with("HTTP/"),
            "{answer:?}"
        );

        // gRPC over TLS, trusting the same certificate.
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
            .domain_name("localhost");
        let channel =
            tonic::transport::Channel::from_shared(format!("https://{}", handle.grpc_addr()))?
                .tls_config(tls)?
                .connect()
                .await?;
        let stock = OrderApiClient::new(channel)
            .get_instrument(GetInstrumentRequest {
                sku: Some("AAPL".into()),
            })
            .await?
            .into_inner();
        assert_eq!(stock.on_hand, 10);
        // Plaintext gRPC to the TLS port fails.
        let plaintext = OrderApiClient::connect(format!("http://{}", handle.grpc_addr())).await;
        let refused = match plaintext {
            Err(_) => true,
            Ok(mut client) => client
                .get_instrument(GetInstrumentRequest {
                    sku: Some("AAPL".into()),
                })
                .await
                .is_err(),
        };
        assert!(refused, "plaintext gRPC must not be served on the TLS port");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    handle.stop()?;
    Ok(())
}
