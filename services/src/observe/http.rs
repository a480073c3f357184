//! The observability routes and the request-counting middleware, served on
//! the Order API's REST server or, in a process without the API, on a small
//! server of their own (every `tradeflow run` process serves them).
//!
//! Owns: `GET /metrics` (Prometheus text format 0.0.4), `GET /health/live`
//! (the process answers), `GET /health/ready` (200 only when every shard is
//! ready; 503 with each shard's reason otherwise), `GET /reports/hdr` (the
//! percentile table) and `GET /reports/hdr/{file}.hgrm` (one timing's
//! distribution; `<timing>.hgrm` or `<timing>--<input>.hgrm`), and the
//! middleware that counts every request by route template and status.
//! Must never: label a request by its raw path (unbounded), or run a blocking
//! engine read on an async worker (renders go to the blocking pool).
//!
//! Lives on: the server's tokio runtime.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engine::telemetry::Timing;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::exposition::SNAPSHOT_TIMEOUT_MS;
use super::{report, Observability, ObserveError};

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// How long the standalone server lets requests in flight finish on stop.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;

/// The observability routes alone.
pub fn routes(obs: Observability) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/reports/hdr", get(hdr_table))
        .route("/reports/hdr/{file}", get(hdr_file))
        .with_state(obs)
}

/// `router` plus the observability routes, with every request counted.
pub fn with_observability(router: Router, obs: &Observability) -> Router {
    router
        .merge(routes(obs.clone()))
        .layer(axum::middleware::from_fn_with_state(obs.clone(), track))
}

async fn track(State(obs): State<Observability>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Routing ran before this layer, so the template is known; a request no
    // route matched is counted under one label.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    obs.observe_request(
        &route,
        &method,
        response.status().as_str(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn metrics(State(obs): State<Observability>) -> Response {
    match tokio::task::spawn_blocking(move || obs.render()).await {
        Ok(Ok(text)) => (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn live() -> Response {
    Json(json!({ "status": "live" })).into_response()
}

async fn ready(State(obs): State<Observability>) -> Response {
    let readiness = obs.readiness();
    let shards: Vec<_> = readiness
        .shards
        .iter()
        .map(|(shard, live)| {
            json!({
                "shard": shard.0,
                "ready": live.ready,
                "status": live.status.name(),
                "reason": live.reason(),
                "restoring_partitions": live.restoring,
                "restored_records": live.restored_records,
                "restore_remaining_offsets": live.restore_remaining,
            })
        })
        .collect();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": readiness.ready, "shards": shards })),
    )
        .into_response()
}

async fn snapshot(
    obs: Observability,
) -> Result<engine::telemetry::MetricsSnapshot, (StatusCode, String)> {
    let Some(telemetry) = obs.telemetry().cloned() else {
        return Err((
            StatusCode::NOT_FOUND,
            "this process runs no engine".to_string(),
        ));
    };
    tokio::task::spawn_blocking(move || {
        telemetry.snapshot(Duration::from_millis(SNAPSHOT_TIMEOUT_MS))
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

async fn hdr_table(State(obs): State<Observability>) -> Response {
    match snapshot(obs).await {
        Ok(snapshot) => report::table(&snapshot).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `<timing>.hgrm` or `<timing>--<input>.hgrm`.
fn parse_hgrm_file(file: &str) -> Option<(Timing, Option<&str>)> {
    let stem = file.strip_suffix(".hgrm")?;
    let (timing, input) = match stem.split_once("--") {
        Some((timing, input)) => (timing, Some(input)),
        None => (stem, None),
    };
    let timing = Timing::ALL.into_iter().find(|t| t.name() == timing)?;
    Some((timing, input))
}

async fn hdr_file(State(obs): State<Observability>, Path(file): Path<String>) -> Response {
    let Some((timing, input)) = parse_hgrm_file(&file) else {
        return (
            StatusCode::NOT_FOUND,
            "expected <timing>.hgrm or <timing>--<input>.hgrm; timings: process, send, \
             end_to_end, commit, restore",
        )
            .into_response();
    };
    match snapshot(obs).await {
        Ok(snapshot) => match report::hgrm(&snapshot, timing, input) {
            Some(text) => text.into_response(),
            None => (StatusCode::NOT_FOUND, "no such input for this timing").into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// The observability routes on a server of their own (for a process that
/// runs no Order API).
pub struct ObserveServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<(), ObserveError>>,
}

impl ObserveServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the server to end.
    pub fn stop(self) -> Result<(), ObserveError> {
        let _ = self.stop.send(true);
        self.thread.join().map_err(|_| ObserveError::Panicked)?
    }
}

/// Serves the observability routes on `addr` (port 0: any free port) from a
/// new thread with a one-worker tokio runtime; returns once bound. Call it
/// from an unpinned thread: the runtime's threads inherit its affinity.
pub fn spawn(addr: SocketAddr, obs: Observability) -> Result<ObserveServer, ObserveError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tradeflow-observe")
        .enable_all()
        .build()
        .map_err(ObserveError::Runtime)?;
    let listener = runtime
        .block_on(TcpListener::bind(addr))
        .map_err(|source| ObserveError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(ObserveError::Runtime)?;
    let (stop, stopped) = watch::channel(false);
    let app = with_observability(Router::new(), &obs);
    let thread = std::thread::Builder::new()
        .name("tradeflow-observe".into())
        .spawn(move || {
            let result = runtime.block_on(serve(listener, app, stopped));
            runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_GRACE_MS));
            result
        })
        .map_err(ObserveError::Runtime)?;
    tracing::info!(%addr, "observability endpoints listening");
    Ok(ObserveServer { addr, stop, thread })
}

async fn serve(
    listener: TcpListener,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), ObserveError> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(ObserveError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_file_names_parse_to_a_timing_and_an_input() {
        assert_eq!(parse_hgrm_file("commit.hgrm"), Some((Timing::Commit, None)));
        assert_eq!(
            parse_hgrm_file("end_to_end--order-service.order.created.hgrm"),
            Some((Timing::EndToEnd, Some("order-service.order.created")))
        );
        assert_eq!(parse_hgrm_file("nope.hgrm"), None);
        assert_eq!(parse_hgrm_file("commit.txt"), None);
    }
}
