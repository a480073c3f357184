//! The Order API: REST (axum) and gRPC (tonic) front doors to the trade
//! flow, with the same operations, rules and error codes on both.
//!
//! Owns: request validation (every rule and its machine-readable code,
//! `error`, `validate`), turning a valid request into the flow's event
//! (`ops`), publishing it and waiting for Kafka's acknowledgement
//! (`publish`, `kafka`) in the form the core map's `[wire.value_format]`
//! gives each topic (rkyv, or Confluent's Avro under the id the registry
//! gave the topic's schema at start: [`ApiConfig::wire`]), answering
//! status queries from the engine's in-memory state (`source`), who may
//! call (`auth`: bearer tokens, account scopes, the `ops` role, reload on
//! SIGHUP), TLS on both ports (`tls`), and the two servers with their
//! runtime (`rest`, `grpc`, [`spawn`], [`serve`]). See docs/SECURITY.md.
//! Must never: publish an event it has not validated, answer a create with
//! success before Kafka acknowledged the event (acks=all, idempotent
//! producer), run on a shard's core or block one (reads go through
//! `Engine::query`, which runs them on the owning shard between batches
//! and while its commit waits on the broker;
//! they are bounded in number and time), or decide an outcome (Payment and
//! Inventory do).
//!
//! Nor serve unprotected when a token file or certificate was configured
//! but does not load: the start fails instead.
//!
//! Lives on: its own tokio runtime (`API_WORKER_THREADS` workers plus
//! blocking threads for engine queries), started from the thread that
//! calls [`spawn`] and inheriting its CPU affinity: call it from an
//! unpinned thread so the API never competes with a shard for its core.
//!
//! # Where state is read
//! An order's status lives in the partition of its account
//! (`topics::account_key`), a balance likewise, a stock level in the
//! partition of its sku (`topics::sku_key`). The API asks the [`StateSource`]
//! for that partition; when no local shard owns it, REST answers
//! `421 Misdirected Request` (`partition_elsewhere`, another node owns it) or
//! `503` (`partition_unavailable`, shards are starting or restarting), with
//! the partition in the body, so a client or a router can go to the owner.
//!
//! # Unknown instruments
//! [`InstrumentPolicy`] decides: by default (`Inventory`) an instrument is
//! known once Inventory's state holds it (it was replenished at least once);
//! when this node does not own the sku's partition the API cannot tell, so
//! it accepts and Inventory rejects (`unknown_sku`, refunded). `Listed`
//! pins the tradeable set in configuration instead, `AnyWellFormed` checks
//! the symbol only.

pub mod auth;
mod error;
mod grpc;
mod kafka;
mod ops;
pub mod proto;
mod publish;
mod rest;
mod source;
#[cfg(test)]
mod tests;
mod tls;
mod validate;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codecs::Sku;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::observe::Observability;

pub use auth::{AuthConfig, MetricsAccess};
pub use error::{ApiError, ErrorCode, Reject};
pub use grpc::{ERROR_CODE_KEY, ERROR_FIELD_KEY, PARTITION_KEY};
pub use kafka::KafkaPublisher;
use ops::OrderApi;
pub use publish::{OutgoingRecord, PublishError, PublishFuture, Publisher};
pub use rest::OPENAPI_YAML;
pub use source::{Owned, StateSource};
pub use tls::TlsConfig;

/// Largest request body (REST) or message (gRPC) accepted; larger ones get
/// `413 body_too_large` (gRPC: `OUT_OF_RANGE`) before anything is parsed.
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024;
/// How long a state read may wait for the owning shard.
pub const QUERY_TIMEOUT_MS: u64 = 1_000;
/// Engine queries in flight at once. Below the engine's per-shard command
/// queue (`runtime::COMMAND_QUEUE_DEPTH`, 16) so API reads never fill it: a
/// full queue reads as "not owned here" to `Engine::query`.
pub const QUERIES_IN_FLIGHT_MAX: usize = 8;
/// How long the API waits for Kafka to acknowledge an event before it
/// answers `503 publish_failed` (librdkafka's `message.timeout.ms`).
pub const DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// Worker threads of the API's tokio runtime by default.
pub const API_WORKER_THREADS: usize = 2;
/// How long [`ApiHandle::stop`] lets in-flight requests finish.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

const _: () = assert!(
    QUERIES_IN_FLIGHT_MAX < engine::runtime::COMMAND_QUEUE_DEPTH,
    "API reads must leave room in a shard's command queue"
);

/// Which instruments an order may name (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum InstrumentPolicy {
    /// Known once Inventory holds it; accepted when this node cannot tell.
    #[default]
    Inventory,
    /// Exactly these (orders and replenishments alike).
    Listed(Vec<Sku>),
    /// Any well-formed symbol.
    AnyWellFormed,
}

/// Everything the API needs besides its state source.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where REST listens (port 0: any free port; see [`ApiHandle`]).
    pub rest_addr: SocketAddr,
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Kafka bootstrap servers for the API's producer.
    pub bootstrap: String,
    /// librdkafka properties for the producer (security, tuning), applied
    /// before the API's own `acks=all` and `enable.idempotence=true`, which
    /// cannot be overridden.
    pub client_properties: Vec<(String, String)>,
    /// Partitions of the flow's topics (`ownership.partitions`).
    pub partitions: i32,
    /// The deployment's topic namespace (see `codecs::topics::TopicNamespace`).
    pub namespace: codecs::topics::TopicNamespace,
    pub instruments: InstrumentPolicy,
    /// Worker threads of the API's runtime.
    pub worker_threads: usize,
    /// When set, the REST server also serves `/metrics`, `/health/ready`
    /// and `/reports/hdr`, and counts every request (see `observe`).
    pub observability: Option<Observability>,
    /// Bearer tokens (see `auth`); `None`: no authentication, with a
    /// warning at start.
    pub auth: Option<AuthConfig>,
    /// TLS on both ports; `None`: plain HTTP and plaintext gRPC.
    pub tls: Option<TlsConfig>,
    /// Which of [`PUBLISHED_TOPICS`] are written as Avro, with the ids the
    /// registry gave their schemas when the node registered them at start
    /// (`services::wire::wire_formats`); the default is rkyv everywhere.
    pub wire: engine::wire::WireFormats,
}

/// The topics the API publishes to (logical names): what a node with the
/// API registers in the schema registry beside its stages' outputs.
pub const PUBLISHED_TOPICS: [&str; 4] = [
    codecs::topics::ORDER_CREATED,
    codecs::topics::ORDER_UPDATED,
    codecs::topics::ACCOUNT_FUNDED,
    codecs::topics::STOCK_REPLENISHED,
];

impl ApiConfig {
    /// REST on `rest_addr`, gRPC on `grpc_addr`, defaults for the rest.
    pub fn new(
        rest_addr: SocketAddr,
        grpc_addr: SocketAddr,
        bootstrap: impl Into<String>,
        partitions: i32,
    ) -> Self {
        ApiConfig {
            rest_addr,
            grpc_addr,
            bootstrap: bootstrap.into(),
            client_properties: Vec::new(),
            partitions,
            namespace: codecs::topics::TopicNamespace::none(),
            instruments: InstrumentPolicy::default(),
            worker_threads: API_WORKER_THREADS,
            observability: None,
            auth: None,
            tls: None,
            wire: engine::wire::WireFormats::default(),
        }
    }
}

/// A running API on its own runtime thread.
pub struct ApiHandle {
    rest_addr: SocketAddr,
    grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<(), ApiError>>,
}

impl ApiHandle {
    /// The address REST is bound to (the real port when configured with 0).
    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// The address gRPC is bound to.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Whether the servers are still running (false after a fatal error).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Stops accepting, lets requests in flight finish (up to
    /// `SHUTDOWN_GRACE_MS`), and returns the servers' result.
    pub fn stop(self) -> Result<(), ApiError> {
        // A send error means the servers already ended; join says how.
        let _ = self.stop.send(true);
        self.thread.join().map_err(|_| ApiError::Panicked)?
    }
}

/// Starts the API with a Kafka producer built from `config`, on a new
/// thread with its own tokio runtime; returns once both ports are bound.
/// This is the entry point for `tradeflow run`: pass the node's `Engine`
/// as the state source (`Arc<Engine>` coerces to `Arc<dyn StateSource>`),
/// stop the API before shutting the engine down.
pub fn spawn(config: ApiConfig, source: Arc<dyn StateSource>) -> Result<ApiHandle, ApiError> {
    let publisher = KafkaPublisher::new(
        &config.bootstrap,
        &config.client_properties,
        config.namespace.clone(),
    )?;
    spawn_with(config, source, Arc::new(publisher))
}

/// [`spawn`] with any [`Publisher`] (tests record instead of producing).
pub fn spawn_with(
    config: ApiConfig,
    source: Arc<dyn StateSource>,
    publisher: Arc<dyn Publisher>,
) -> Result<ApiHandle, ApiError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .thread_name("tradeflow-api")
        .enable_all()
        .build()
        .map_err(ApiError::Runtime)?;
    let (rest, grpc) = runtime.block_on(bind(&config))?;
    let rest_addr = rest.local_addr().map_err(ApiError::Runtime)?;
    let grpc_addr = grpc.local_addr().map_err(ApiError::Runtime)?;
    let (stop, mut stopped) = watch::channel(false);
    let shutdown = async move {
        // Ends on `stop` or when the handle is dropped without it.
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let security = Security::load(&config)?;
    let api = OrderApi::new(&config, source, publisher).with_auth(security.auth.clone());
    let observability = config.observability.clone();
    let thread = std::thread::Builder::new()
        .name("tradeflow-api".into())
        .spawn(move || {
            let result = runtime.block_on(serve_bound(
                api,
                observability,
                security,
                rest,
                grpc,
                shutdown,
            ));
            runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
            result
        })
        .map_err(ApiError::Runtime)?;
    info!(%rest_addr, %grpc_addr, "order API listening");
    Ok(ApiHandle {
        rest_addr,
        grpc_addr,
        stop,
        thread,
    })
}

/// Runs both servers on the caller's tokio runtime until `shutdown`
/// completes (for callers that already have one; [`spawn`] starts its own).
pub async fn serve(
    config: ApiConfig,
    source: Arc<dyn StateSource>,
    publisher: Arc<dyn Publisher>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let security = Security::load(&config)?;
    let (rest, grpc) = bind(&config).await?;
    let api = OrderApi::new(&config, source, publisher).with_auth(security.auth.clone());
    serve_bound(
        api,
        config.observability.clone(),
        security,
        rest,
        grpc,
        shutdown,
    )
    .await
}

/// The token table and TLS material, read before anything listens so a
/// bad file stops the start instead of serving unprotected.
struct Security {
    auth: auth::Auth,
    tls: Option<tls::TlsMaterial>,
}

impl Security {
    fn load(config: &ApiConfig) -> Result<Self, ApiError> {
        let auth = match &config.auth {
            Some(auth) => auth::Auth::load(auth.clone())?,
            None => {
                warn!(
                    "order API is UNAUTHENTICATED: no token file configured \
                     ([api.auth] tokens_file or --api-tokens); anyone who reaches its \
                     ports may place orders for any account"
                );
                auth::Auth::off()
            }
        };
        let tls = config
            .tls
            .as_ref()
            .map(tls::TlsMaterial::load)
            .transpose()?;
        if tls.is_none() {
            info!("order API without TLS: plain HTTP and plaintext gRPC");
        }
        Ok(Security { auth, tls })
    }
}

/// Reloads the token file on every SIGHUP until the API stops. A file that
/// does not load is logged and the tokens in force stay.
#[cfg(unix)]
fn reload_tokens_on_sighup(auth: auth::Auth) -> Result<(), ApiError> {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(path) = auth.tokens_file().map(std::path::Path::to_path_buf) else {
        return Ok(());
    };
    let mut hangups = signal(SignalKind::hangup()).map_err(ApiError::Runtime)?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match auth.reload() {
                Ok(tokens) => {
                    info!(tokens_file = %path.display(), tokens, "order API: token file reloaded")
                }
                Err(e) => {
                    tracing::error!(error = %e, "order API: token file NOT reloaded; the previous tokens stay in force")
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_tokens_on_sighup(_: auth::Auth) -> Result<(), ApiError> {
    Ok(())
}

async fn bind(config: &ApiConfig) -> Result<(TcpListener, TcpListener), ApiError> {
    let rest = TcpListener::bind(config.rest_addr)
        .await
        .map_err(|source| ApiError::Bind {
            what: "REST",
            addr: config.rest_addr,
            source,
        })?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| ApiError::Bind {
            what: "gRPC",
            addr: config.grpc_addr,
            source,
        })?;
    Ok((rest, grpc))
}

async fn serve_bound(
    api: OrderApi,
    observability: Option<Observability>,
    security: Security,
    rest: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    // One shutdown signal, observed by both servers and the grace timer.
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    reload_tokens_on_sighup(security.auth.clone())?;
    let api = Arc::new(api);
    let router = rest::router(Arc::clone(&api), observability.as_ref());
    let rest_server = async {
        match &security.tls {
            Some(tls) => axum::serve(tls.rest_listener(rest), router)
                .with_graceful_shutdown(signal())
                .await
                .map_err(ApiError::Rest),
            None => axum::serve(rest, router)
                .with_graceful_shutdown(signal())
                .await
                .map_err(ApiError::Rest),
        }
    };
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        grpc_builder = grpc_builder
            .tls_config(tls.grpc())
            .map_err(|e| ApiError::Tls(format!("gRPC: {e}")))?;
    }
    let grpc_server = async {
        grpc_builder
            .add_service(grpc::service(Arc::clone(&api), observability.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc),
                signal(),
            )
            .await
            .map_err(ApiError::Grpc)
    };
    // Graceful shutdown waits for requests in flight; one stuck on Kafka
    // (up to DELIVERY_TIMEOUT_MS) must not hold the process that long.
    let grace = async {
        signal().await;
        tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
    };
    // The first server to fail ends both: a half-up API would look healthy
    // on one port while the other refuses.
    tokio::select! {
        served = async { tokio::try_join!(rest_server, grpc_server) } => served.map(drop),
        () = grace => {
            warn!(grace_ms = SHUTDOWN_GRACE_MS, "order API stopped with requests still in flight");
            Ok(())
        }
    }
}
