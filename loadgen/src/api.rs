//! `loadgen api`: the Order API under concurrent clients — what a desk's
//! order-entry gateway does to it. Each client keeps one HTTP/1.1 connection
//! and places orders at its share of the offered rate; every request is timed
//! from its intended send time (coordinated omission corrected) and from
//! when it was actually sent.
//!
//! Owns: the set-up (accounts funded, instruments replenished, through the
//! API), the client threads, and the request-latency report.
//! Must never: retry a failed request (a retry would hide the failure) or
//! wait for an order's outcome: this measures the API, `run` the flow.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

/// Longest a request may take before it counts as failed.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Latencies above this are clamped (they are failures long before).
const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// What `loadgen api` offers the API.
#[derive(Clone, Debug)]
pub struct ApiLoad {
    /// `http://host:port` of the node's REST API.
    pub base_url: String,
    /// Concurrent clients, one connection each.
    pub clients: usize,
    /// Orders per second over all clients; 0 sends back to back.
    pub rate_per_s: u64,
    pub duration: Duration,
    /// Accounts the orders spread over, ids `account_base + 1 ..= + accounts`.
    pub accounts: u64,
    pub account_base: u64,
    pub instruments: u64,
    /// Distinguishes this run's client order ids from every earlier run's.
    pub run_id: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiBenchError {
    #[error("set-up request {what} failed: {reason}")]
    SetUp { what: String, reason: String },
    #[error("a client thread failed: {0}")]
    Client(String),
}

/// What the clients saw.
#[derive(Debug)]
pub struct ApiReport {
    pub sent: u64,
    /// 2xx answers (202 accepted, or 200 for a repeat).
    pub accepted: u64,
    /// Non-2xx answers and transport errors, with a sample reason.
    pub failed: u64,
    pub failure_sample: Option<String>,
    pub elapsed: Duration,
    /// From each request's intended send time (corrected).
    pub corrected: Histogram<u64>,
    /// From when each request was actually written.
    pub service: Histogram<u64>,
}

impl ApiReport {
    fn empty() -> Self {
        ApiReport {
            sent: 0,
            accepted: 0,
            failed: 0,
            failure_sample: None,
            elapsed: Duration::ZERO,
            corrected: histogram(),
            service: histogram(),
        }
    }

    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ApiReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "requests: {} sent, {} accepted, {} failed{} in {:.1} s: {:.0} orders/s accepted",
            self.sent,
            self.accepted,
            self.failed,
            self.failure_sample
                .as_ref()
                .map(|s| format!(" (e.g. {s})"))
                .unwrap_or_default(),
            self.elapsed.as_secs_f64(),
            self.accepted_per_s()
        )?;
        writeln!(f, "request latency   corrected ms   uncorrected ms")?;
        for (name, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("max", 1.0),
        ] {
            writeln!(
                f,
                "{name:>9}   {:>12.2}   {:>14.2}",
                self.corrected.value_at_quantile(q) as f64 / 1e6,
                self.service.value_at_quantile(q) as f64 / 1e6
            )?;
        }
        Ok(())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .build()
        .into()
}

/// One POST; `Ok(status)` for any HTTP answer, `Err` for a transport failure.
fn post(agent: &ureq::Agent, url: &str, body: &serde_json::Value) -> Result<(u16, String), String> {
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

fn instrument(i: u64) -> String {
    format!("API{:04}", i + 1)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, LATENCY_NS_MAX, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant figures is valid"))
}

/// Funds every account and replenishes every instrument through the API,
/// so that the orders that follow can fill.
fn set_up(load: &ApiLoad) -> Result<(), ApiBenchError> {
    let agent = agent();
    let check = |what: String, answer: Result<(u16, String), String>| match answer {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, body)) => Err(ApiBenchError::SetUp {
            what,
            reason: format!("HTTP {status}: {body}"),
        }),
        Err(reason) => Err(ApiBenchError::SetUp { what, reason }),
    };
    for i in 1..=load.accounts {
        let account = load.account_base + i;
        let url = format!("{}/v1/accounts/{account}/fundings", load.base_url);
        check(
            url.clone(),
            post(&agent, &url, &json!({ "amount": 1_000_000_000_000i64 })),
        )?;
    }
    for i in 0..load.instruments {
        let url = format!(
            "{}/v1/instruments/{}/replenishments",
            load.base_url,
            instrument(i)
        );
        check(
            url.clone(),
            post(&agent, &url, &json!({ "quantity": 1_000_000_000i64 })),
        )?;
    }
    Ok(())
}

/// Runs the set-up, waits `settle` for it to be processed, then the clients.
pub fn run(load: &ApiLoad, settle: Duration) -> Result<ApiReport, ApiBenchError> {
    set_up(load)?;
    std::thread::sleep(settle);
    let clients = load.clients.max(1);
    // Each client paces its own share; the first sends start staggered.
    let gap = if load.rate_per_s == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(clients as f64 / load.rate_per_s as f64)
    };
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let load = load.clone();
            std::thread::Builder::new()
                .name(format!("api-client-{client}"))
                .spawn(move || client_loop(&load, client, clients, gap, started))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| ApiBenchError::Client(e.to_string()))?;
    let mut report = ApiReport::empty();
    for handle in handles {
        let part = handle
            .join()
            .map_err(|_| ApiBenchError::Client("panicked".into()))?;
        report.sent += part.sent;
        report.accepted += part.accepted;
        report.failed += part.failed;
        report.failure_sample = report.failure_sample.or(part.failure_sample);
        report
            .corrected
            .add(&part.corrected)
            .map_err(|e| ApiBenchError::Client(e.to_string()))?;
        report
            .service
            .add(&part.service)
            .map_err(|e| ApiBenchError::Client(e.to_string()))?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn client_loop(
    load: &ApiLoad,
    client: usize,
    clients: usize,
    gap: Duration,
    started: Instant,
) -> ApiReport {
    let agent = agent();
    let url = format!("{}/v1/orders", load.base_url);
    let mut part = ApiReport::empty();
    let offset = gap.mul_f64(client as f64 / clients as f64);
    let mut n: u64 = 0;
    loop {
        let intended = started + offset + gap.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        if intended.saturating_duration_since(started) >= load.duration {
            break;
        }
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        // Spread over accounts and instruments; ids unique per run and client.
        let order = n * clients as u64 + client as u64;
        let account = load.account_base + 1 + order % load.accounts.max(1);
        let body = json!({
            "account": account,
            "sku": instrument(order % load.instruments.max(1)),
            "quantity": 1,
            "limit_price": 100,
            "client_order_id": format!("api-{:x}-{order}", load.run_id),
        });
        let sent_at = Instant::now();
        let answer = post(&agent, &url, &body);
        let done = Instant::now();
        part.sent += 1;
        let _ = part
            .service
            .record((done - sent_at).as_nanos().min(u128::from(LATENCY_NS_MAX)) as u64);
        let _ = part.corrected.record(
            done.saturating_duration_since(if gap.is_zero() { sent_at } else { intended })
                .as_nanos()
                .min(u128::from(LATENCY_NS_MAX)) as u64,
        );
        match answer {
            Ok((status, _)) if (200..300).contains(&status) => part.accepted += 1,
            Ok((status, body)) => {
                part.failed += 1;
                part.failure_sample
                    .get_or_insert_with(|| format!("HTTP {status}: {body}"));
            }
            Err(reason) => {
                part.failed += 1;
                part.failure_sample.get_or_insert(reason);
            }
        }
        n += 1;
    }
    part
}
