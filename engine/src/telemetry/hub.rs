//! The hub thread that merges shard reports, off the hot path, into a
//! [`MetricsSnapshot`], and [`Telemetry`], the handle that asks it.
//! Must never: block a shard (a full queue leaves the report on the shard),
//! or know about Prometheus or HTTP (`services` renders snapshots).

use std::time::Instant;

use tracing::{info, warn};

use super::*;

/// A running shard (not restoring) that has sent no report for this long is
/// logged as silent: its loop publishes about once a second, idle or not, so
/// a silence means it sits in one call (a commit waiting on the broker, a
/// blocking client call) or one very long batch. A log line, not a metric:
/// it is what an operator reads first when the flow stops.
pub const SHARD_SILENCE_WARN_MS: u64 = 5_000;

/// Everything known about one shard, merged over the process's lifetime.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    pub shard: ShardId,
    /// The stage's name (`Stage::name`); empty until its first report.
    pub service: &'static str,
    pub live: ShardLive,
    /// Cumulative over every incarnation of the shard in this process.
    pub counters: ShardStats,
    pub dead_letters: DeadLetterCounts,
    pub send_retries: u64,
    /// Cumulative histograms, one per [`TimingKey`] reported so far. Shared
    /// with the hub: a snapshot costs a reference count per histogram, not a
    /// copy of ~270 KiB (the hub copies on its next merge only while a
    /// snapshot still holds one).
    pub histograms: Vec<(TimingKey, Arc<Histogram<u64>>)>,
    pub lag: Vec<PartitionLag>,
    pub stores: Vec<StoreSize>,
    pub owned: Vec<PartitionId>,
}

impl ShardMetrics {
    fn new(shard: ShardId, live: ShardLive) -> Self {
        ShardMetrics {
            shard,
            service: "",
            live,
            counters: ShardStats::default(),
            dead_letters: [[0; DEAD_LETTER_REASONS.len()]; DEAD_LETTER_CLASSES.len()],
            send_retries: 0,
            histograms: Vec::new(),
            lag: Vec::new(),
            stores: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// One timing of this shard, merged over its inputs.
    pub fn histogram(&self, timing: Timing) -> Histogram<u64> {
        let mut merged = new_histogram();
        for (key, h) in &self.histograms {
            if key.timing == timing {
                // Same bounds everywhere: adding cannot fail.
                let _ = merged.add(&**h);
            }
        }
        merged
    }
}

/// Every shard of the engine, as of the last reports plus live gauges.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    pub shards: Vec<ShardMetrics>,
    /// The node's standby copies and how far each is behind its changelogs
    /// (empty without `[state] standby_replicas`).
    pub standby_lag: Vec<StandbyLag>,
}

impl MetricsSnapshot {
    /// One timing merged over every shard.
    pub fn merged(&self, timing: Timing) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let _ = merged.add(shard.histogram(timing));
        }
        merged
    }

    /// Whether every shard is ready (false for an engine with no shards).
    pub fn ready(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.live.ready)
    }
}

/// Why the hub did not answer.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the telemetry hub did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the telemetry hub has stopped")]
    Stopped,
}

enum HubRequest {
    Snapshot(Sender<MetricsSnapshot>),
    /// The standby keeper's latest measure of its copies' lag.
    StandbyLag(Vec<StandbyLag>),
}

/// Where the standby keeper sends its copies' lag: a message to the hub,
/// which keeps the latest one for its snapshots (nothing is shared).
#[derive(Clone)]
pub struct StandbyLagSink {
    requests: Sender<HubRequest>,
}

impl StandbyLagSink {
    /// Hands `lag` to the hub without waiting: if its queue is full the
    /// measure is dropped, and the next one (a second later) replaces it.
    pub fn publish(&self, lag: Vec<StandbyLag>) {
        let _ = self.requests.try_send(HubRequest::StandbyLag(lag));
    }
}

/// A cloneable handle on the engine's telemetry: live readiness straight from
/// the gauges, and merged snapshots from the hub thread. Outlives the engine,
/// so the final report of a shutdown can still be read.
#[derive(Clone)]
pub struct Telemetry {
    gauges: Vec<(ShardId, Arc<ShardGauges>)>,
    requests: Sender<HubRequest>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("shards", &self.gauges.len())
            .finish()
    }
}

/// Where shards send reports and find spare histograms; one per shard.
#[derive(Clone)]
pub struct ReportChannel {
    pub reports: Sender<ShardReport>,
    pub spares: Receiver<Histogram<u64>>,
}

impl Telemetry {
    /// Starts the hub for `gauges`' shards; returns the handle and one report
    /// channel per shard, in the same order.
    pub fn start(
        gauges: Vec<(ShardId, Arc<ShardGauges>)>,
    ) -> std::io::Result<(Telemetry, Vec<ReportChannel>)> {
        let (report_tx, report_rx) = crossbeam_channel::bounded(REPORT_QUEUE_DEPTH);
        let (request_tx, request_rx) = crossbeam_channel::bounded(16);
        let mut channels = Vec::with_capacity(gauges.len());
        let mut spare_senders = Vec::with_capacity(gauges.len());
        for (shard, _) in &gauges {
            let (spare_tx, spare_rx) = crossbeam_channel::bounded(SPARE_HISTOGRAMS_MAX);
            channels.push(ReportChannel {
                reports: report_tx.clone(),
                spares: spare_rx,
            });
            spare_senders.push((*shard, spare_tx));
        }
        drop(report_tx);
        let hub = Hub::new(&gauges, spare_senders, Instant::now());
        std::thread::Builder::new()
            .name("tradeflow-telemetry".into())
            .spawn(move || hub.run(report_rx, request_rx))?;
        Ok((
            Telemetry {
                gauges,
                requests: request_tx,
            },
            channels,
        ))
    }

    /// Every shard's live gauges, without asking the hub.
    pub fn live(&self) -> Vec<(ShardId, ShardLive)> {
        self.gauges.iter().map(|(id, g)| (*id, g.read())).collect()
    }

    /// Whether every shard is ready: running, restored, polling.
    pub fn ready(&self) -> bool {
        !self.gauges.is_empty() && self.gauges.iter().all(|(_, g)| g.read().ready)
    }

    /// Everything merged so far (reports are at most `PUBLISH_INTERVAL_MS`
    /// old), with live gauges read now.
    pub fn snapshot(&self, timeout: Duration) -> Result<MetricsSnapshot, TelemetryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send_timeout(HubRequest::Snapshot(tx), timeout)
            .map_err(|_| TelemetryError::Stopped)?;
        rx.recv_timeout(timeout)
            .map_err(|_| TelemetryError::Timeout(timeout))
    }

    /// Where the standby keeper sends its copies' lag.
    pub fn standby_lag_sink(&self) -> StandbyLagSink {
        StandbyLagSink {
            requests: self.requests.clone(),
        }
    }
}

/// The hub's state: cumulative metrics per shard. Lives on its own thread.
struct Hub {
    shards: Vec<(ShardMetrics, Arc<ShardGauges>)>,
    spares: Vec<(ShardId, Sender<Histogram<u64>>)>,
    /// The standby keeper's last lag message (empty without standbys).
    standby_lag: Vec<StandbyLag>,
    /// Per shard, in `shards`' order: when its last report arrived, and
    /// whether its silence since has been logged.
    heard: Vec<(Instant, bool)>,
}

/// What [`Hub::silences`] found about one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Silence {
    /// Running, not restoring, and no report for this long.
    Began(ShardId, Duration),
    /// Reporting again after a silence that was logged.
    Ended(ShardId, Duration),
}

impl Hub {
    fn new(
        gauges: &[(ShardId, Arc<ShardGauges>)],
        spares: Vec<(ShardId, Sender<Histogram<u64>>)>,
        now: Instant,
    ) -> Hub {
        Hub {
            shards: gauges
                .iter()
                .map(|(id, g)| (ShardMetrics::new(*id, g.read()), Arc::clone(g)))
                .collect(),
            spares,
            standby_lag: Vec::new(),
            heard: vec![(now, false); gauges.len()],
        }
    }

    fn run(mut self, reports: Receiver<ShardReport>, requests: Receiver<HubRequest>) {
        let mut reports_open = true;
        let check_every = Duration::from_millis(PUBLISH_INTERVAL_MS);
        let mut checked = Instant::now();
        loop {
            if reports_open {
                select! {
                    recv(reports) -> report => match report {
                        Ok(report) => {
                            let ended = self.heard_from(report.shard, Instant::now());
                            self.merge(report);
                            if let Some(Silence::Ended(shard, silent)) = ended {
                                info!(%shard, silent_ms = silent.as_millis() as u64,
                                      "shard reporting again");
                            }
                        }
                        // Every shard has stopped; keep answering for the
                        // final report.
                        Err(_) => reports_open = false,
                    },
                    recv(requests) -> request => match request {
                        Ok(request) => self.answer(request),
                        Err(_) => return,
                    },
                    default(check_every) => {}
                }
                if checked.elapsed() >= check_every {
                    checked = Instant::now();
                    for silence in self.silences(checked) {
                        if let Silence::Began(shard, silent) = silence {
                            let live = self
                                .shards
                                .iter()
                                .find(|(m, _)| m.shard == shard)
                                .map(|(_, g)| g.read());
                            warn!(%shard, silent_ms = silent.as_millis() as u64,
                                  polling = live.is_some_and(|l| l.polling),
                                  "shard has sent no report: it sits in one call (a commit \
                                   waiting on the broker, a blocking client call) or one long \
                                   batch");
                        }
                    }
                }
            } else {
                match requests.recv() {
                    Ok(request) => self.answer(request),
                    Err(_) => return,
                }
            }
        }
    }

    /// Notes a report from `shard` at `now`; says so if it ends a silence
    /// that was logged.
    fn heard_from(&mut self, shard: ShardId, now: Instant) -> Option<Silence> {
        let index = self.shards.iter().position(|(m, _)| m.shard == shard)?;
        let (last, warned) = self.heard[index];
        self.heard[index] = (now, false);
        warned.then(|| Silence::Ended(shard, now.saturating_duration_since(last)))
    }

    /// Shards silent past [`SHARD_SILENCE_WARN_MS`] while running and not
    /// restoring, each reported once per silence.
    fn silences(&mut self, now: Instant) -> Vec<Silence> {
        let limit = Duration::from_millis(SHARD_SILENCE_WARN_MS);
        let mut found = Vec::new();
        for ((metrics, gauges), (last, warned)) in self.shards.iter().zip(self.heard.iter_mut()) {
            let live = gauges.read();
            if live.status != ShardStatus::Running || live.restoring > 0 {
                // Starting, restoring, restarting or stopped: silence is
                // expected, and the clock starts again from here.
                *last = now;
                continue;
            }
            let silent = now.saturating_duration_since(*last);
            if silent >= limit && !*warned {
                *warned = true;
                found.push(Silence::Began(metrics.shard, silent));
            }
        }
        found
    }

    fn answer(&mut self, request: HubRequest) {
        match request {
            HubRequest::Snapshot(reply) => {
                let shards = self
                    .shards
                    .iter()
                    .map(|(metrics, gauges)| {
                        let mut metrics = metrics.clone();
                        metrics.live = gauges.read();
                        metrics
                    })
                    .collect();
                let _ = reply.try_send(MetricsSnapshot {
                    shards,
                    standby_lag: self.standby_lag.clone(),
                });
            }
            HubRequest::StandbyLag(lag) => self.standby_lag = lag,
        }
    }

    fn merge(&mut self, report: ShardReport) {
        let Some((metrics, _)) = self
            .shards
            .iter_mut()
            .find(|(m, _)| m.shard == report.shard)
        else {
            return;
        };
        metrics.service = report.service;
        metrics.counters = metrics.counters.plus(&report.body.counters);
        for (row, delta) in metrics
            .dead_letters
            .iter_mut()
            .zip(&report.body.dead_letters)
        {
            for (count, d) in row.iter_mut().zip(delta) {
                *count += d;
            }
        }
        // Retries are cumulative per set of clients; a restart starts them
        // again from zero, so keep the larger of the two readings.
        metrics.send_retries = metrics.send_retries.max(report.send_retries);
        metrics.lag = report.lag;
        metrics.stores = report.stores;
        metrics.owned = report.owned;
        let spare = self
            .spares
            .iter()
            .find(|(id, _)| *id == report.shard)
            .map(|(_, s)| s);
        for (key, mut interval) in report.body.histograms {
            match metrics.histograms.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => {
                    let _ = Arc::make_mut(total).add(&interval);
                }
                None => metrics.histograms.push((key, Arc::new(interval.clone()))),
            }
            interval.reset();
            if let Some(spare) = spare {
                // A full spare queue just drops the histogram.
                let _ = spare.try_send(interval);
            }
        }
    }
}

#[cfg(test)]
mod silence_tests {
    use super::*;

    fn hub(now: Instant) -> (Hub, Arc<ShardGauges>) {
        let gauges = Arc::new(ShardGauges::default());
        let hub = Hub::new(&[(ShardId(0), Arc::clone(&gauges))], Vec::new(), now);
        (hub, gauges)
    }

    #[test]
    fn a_running_shard_silent_past_the_limit_is_reported_once() {
        let start = Instant::now();
        let (mut hub, gauges) = hub(start);
        gauges.set_status(ShardStatus::Running);
        let limit = Duration::from_millis(SHARD_SILENCE_WARN_MS);
        assert!(hub.silences(start + limit / 2).is_empty());
        assert_eq!(
            hub.silences(start + limit),
            vec![Silence::Began(ShardId(0), limit)]
        );
        assert!(
            hub.silences(start + limit * 2).is_empty(),
            "one line per silence"
        );
        assert_eq!(
            hub.heard_from(ShardId(0), start + limit * 3),
            Some(Silence::Ended(ShardId(0), limit * 3))
        );
        assert!(hub.silences(start + limit * 3 + limit / 2).is_empty());
        assert_eq!(hub.silences(start + limit * 4).len(), 1, "a new silence");
    }

    #[test]
    fn a_shard_that_reports_or_is_not_running_is_never_silent() {
        let start = Instant::now();
        let (mut hub, gauges) = hub(start);
        let limit = Duration::from_millis(SHARD_SILENCE_WARN_MS);
        // Starting: a slow start is not a silence.
        assert!(hub.silences(start + limit * 2).is_empty());
        gauges.set_status(ShardStatus::Running);
        // The clock started again when it was last seen not running.
        assert!(hub.silences(start + limit * 2 + limit / 2).is_empty());
        assert_eq!(hub.heard_from(ShardId(0), start + limit * 3), None);
        assert!(hub.silences(start + limit * 3 + limit / 2).is_empty());
        gauges.restore_started();
        assert!(hub.silences(start + limit * 10).is_empty(), "restoring");
    }
}
