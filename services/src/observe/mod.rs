//! Observability of a tradeflow process: Prometheus metrics, liveness and
//! readiness, the engine's HDR latency report, and logs for central
//! aggregation. docs/OBSERVABILITY.md lists every metric.
//!
//! Owns: the process's metrics registry ([`Observability`]: the engine's
//! telemetry rendered at scrape time by `exposition`, plus the HTTP request
//! counters recorded by `http`'s middleware), the routes `/metrics`,
//! `/health/live`, `/health/ready`, `/reports/hdr` (`http`), the report files
//! (`report`), and the `tracing` subscriber in text or JSON (`logging`).
//! Must never: record on a shard's thread or take a lock a shard takes (it
//! reads the engine only through `engine::telemetry::Telemetry`: gauges and
//! the hub's merged snapshots), or serve a metric whose label values are
//! unbounded.
//!
//! Lives on: the HTTP server's tokio threads (the Order API's, or its own
//! when the process runs without the API) and their blocking pool.

pub mod exposition;
pub mod http;
pub mod logging;
pub mod report;

use std::sync::Arc;

use engine::telemetry::{ShardLive, Telemetry};
use engine::ShardId;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

pub use http::{routes, spawn, with_observability, ObserveServer};

/// Bucket bounds (seconds) of HTTP request durations.
const REQUEST_BUCKETS_S: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Why observability could not start or render.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("prometheus: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("observability runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the observability server panicked")]
    Panicked,
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// The process's metrics and health. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Observability {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    telemetry: Option<Telemetry>,
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("engine", &self.inner.telemetry)
            .finish()
    }
}

/// Readiness of the process: every shard's live state.
#[derive(Clone, Debug)]
pub struct Readiness {
    pub ready: bool,
    pub shards: Vec<(ShardId, ShardLive)>,
}

impl Observability {
    /// Metrics for a process running `telemetry`'s engine (`None`: a process
    /// without an engine, e.g. an API test).
    pub fn new(telemetry: Option<Telemetry>) -> Result<Self, ObserveError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tradeflow_api_requests_total",
                "API requests served: REST by route template, method and HTTP status; gRPC by \
                 /<service>/<Method>, method gRPC and the code's name.",
            ),
            &["route", "method", "status"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "tradeflow_api_request_duration_seconds",
                "Time to answer an API request (REST or gRPC), by route and method.",
            )
            .buckets(REQUEST_BUCKETS_S.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        if let Some(telemetry) = &telemetry {
            registry.register(Box::new(exposition::EngineCollector::new(
                telemetry.clone(),
            )?))?;
        }
        Ok(Observability {
            inner: Arc::new(Inner {
                registry,
                requests,
                durations,
                telemetry,
            }),
        })
    }

    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.inner.telemetry.as_ref()
    }

    /// Every metric in the Prometheus text format. Blocks up to
    /// `exposition::SNAPSHOT_TIMEOUT_MS` for the engine's snapshot.
    pub fn render(&self) -> Result<String, ObserveError> {
        Ok(TextEncoder::new().encode_to_string(&self.inner.registry.gather())?)
    }

    /// Ready when every shard runs, has restored what it owns and polls.
    pub fn readiness(&self) -> Readiness {
        match &self.inner.telemetry {
            Some(telemetry) => {
                let shards = telemetry.live();
                Readiness {
                    ready: !shards.is_empty() && shards.iter().all(|(_, live)| live.ready),
                    shards,
                }
            }
            None => Readiness {
                ready: true,
                shards: Vec::new(),
            },
        }
    }

    /// Counts one answered request. `route` is the route's template (never
    /// the raw path, whose values are unbounded).
    /// `status` is the HTTP status code, or the gRPC code's name.
    pub fn observe_request(&self, route: &str, method: &str, status: &str, seconds: f64) {
        self.inner
            .requests
            .with_label_values(&[route, method, status])
            .inc();
        self.inner
            .durations
            .with_label_values(&[route, method])
            .observe(seconds);
    }
}
