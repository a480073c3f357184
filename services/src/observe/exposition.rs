//! The engine's telemetry in the Prometheus text format: a custom
//! `prometheus::core::Collector` that turns one `MetricsSnapshot` into metric
//! families at scrape time (counters, gauges, and histograms whose buckets are
//! read from the shards' merged HdrHistograms).
//!
//! Owns: every engine metric's name, type, help text, labels and bucket
//! bounds ([`ENGINE_METRICS`] is the list docs/OBSERVABILITY.md mirrors).
//! Must never: record anything itself (shards record, the hub merges), or
//! emit a label whose values are unbounded (dead-letter reasons are codes,
//! topics and partitions are the deployment's own).
//!
//! Lives on: the HTTP server's blocking threads (a scrape waits for the hub's
//! snapshot, at most `SNAPSHOT_TIMEOUT_MS`).

use std::collections::HashMap;
use std::time::Duration;

use engine::telemetry::{
    MetricsSnapshot, ShardMetrics, Telemetry, Timing, DEAD_LETTER_CLASSES, DEAD_LETTER_REASONS,
};
use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PromHistogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// How long a scrape waits for the telemetry hub's snapshot.
pub const SNAPSHOT_TIMEOUT_MS: u64 = 2_000;

const NS_PER_S: f64 = 1e9;

/// Bucket upper bounds (seconds) for per-record work: microseconds.
const RECORD_BUCKETS_S: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1,
];
/// Bucket upper bounds (seconds) for round trips through Kafka.
const KAFKA_BUCKETS_S: &[f64] = &[
    2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket upper bounds (seconds) for restores.
const RESTORE_BUCKETS_S: &[f64] = &[
    1e-3, 1e-2, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// One engine metric family.
#[derive(Clone, Copy, Debug)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// The Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

const SHARD: &[&str] = &["service", "shard"];
const SHARD_INPUT: &[&str] = &["service", "shard", "input"];

/// Every family the engine collector emits.
pub const ENGINE_METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: "tradeflow_records_in_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Input records the shard processed (dead-lettered ones included).",
    },
    MetricSpec {
        name: "tradeflow_records_out_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Output events the shard handed to its producer (dead letters and changelog writes not included).",
    },
    MetricSpec {
        name: "tradeflow_dead_letters_total",
        kind: MetricKind::Counter,
        labels: &["service", "shard", "class", "reason"],
        help: "Input records sent to a dead-letter topic, by error class and reason code.",
    },
    MetricSpec {
        name: "tradeflow_commits_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Successful commits (changelog writes, outputs and offsets; one transaction under exactly-once).",
    },
    MetricSpec {
        name: "tradeflow_shard_commit_blocked_seconds_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Seconds the shard spent blocked in commits, processing nothing meanwhile (rate() of it is the share of the shard's time a commit costs).",
    },
    MetricSpec {
        name: "tradeflow_transaction_aborts_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Transactions aborted to discard uncommitted work: after a revocation, or to roll back an abortable commit error (exactly-once).",
    },
    MetricSpec {
        name: "tradeflow_transaction_rollbacks_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Aborted transactions undone in memory (before-images put back, inputs rewound, same clients): no restart, no restore (exactly-once).",
    },
    MetricSpec {
        name: "tradeflow_changelog_records_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Changelog records written at commits.",
    },
    MetricSpec {
        name: "tradeflow_send_retries_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Producer sends retried after waiting for room in a full queue.",
    },
    MetricSpec {
        name: "tradeflow_input_order_waits_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Times a partition held its earliest record back to wait for a co-partitioned input topic the consumer was behind on (records are handed over in timestamp order across co-partitioned topics).",
    },
    MetricSpec {
        name: "tradeflow_input_order_enforced_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Times such a wait ran out (500 ms, or too many records held) and the partition went on without the lagging topic: records may then be handled out of timestamp order.",
    },
    MetricSpec {
        name: "tradeflow_shard_restarts_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Times the supervisor restarted the shard from its last commit after a failure (with exponential backoff).",
    },
    MetricSpec {
        name: "tradeflow_restores_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Partition restores completed (every store of one partition, from its changelogs).",
    },
    MetricSpec {
        name: "tradeflow_restored_records_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Changelog records applied by restores, counted live while a restore runs.",
    },
    MetricSpec {
        name: "tradeflow_restored_bytes_total",
        kind: MetricKind::Counter,
        labels: SHARD,
        help: "Changelog key and value bytes applied by restores, counted live.",
    },
    MetricSpec {
        name: "tradeflow_restore_partitions_in_progress",
        kind: MetricKind::Gauge,
        labels: SHARD,
        help: "Partitions whose stores the shard is restoring now.",
    },
    MetricSpec {
        name: "tradeflow_restore_remaining_offsets",
        kind: MetricKind::Gauge,
        labels: SHARD,
        help: "Offsets left to read in the changelog partition being restored (0 when none is).",
    },
    MetricSpec {
        name: "tradeflow_shard_ready",
        kind: MetricKind::Gauge,
        labels: SHARD,
        help: "1 when the shard runs, has restored every owned partition and polls; else 0.",
    },
    MetricSpec {
        name: "tradeflow_owned_partitions",
        kind: MetricKind::Gauge,
        labels: SHARD,
        help: "Partitions the shard owns.",
    },
    MetricSpec {
        name: "tradeflow_consumer_lag_records",
        kind: MetricKind::Gauge,
        labels: &["service", "shard", "topic", "partition"],
        help: "High watermark minus the group's committed offset, per input partition (as of the shard's last report).",
    },
    MetricSpec {
        name: "tradeflow_standby_lag_offsets",
        kind: MetricKind::Gauge,
        labels: &["partition"],
        help: "Offsets a standby copy of a partition another node owns is behind its changelogs' high watermarks, summed over its changelog topics (one per store, or the shared one) (as of the keeper's last fetch; absent without [state] standby_replicas).",
    },
    MetricSpec {
        name: "tradeflow_state_entries",
        kind: MetricKind::Gauge,
        labels: &["service", "shard", "store"],
        help: "Entries in a store, over the partitions the shard owns.",
    },
    MetricSpec {
        name: "tradeflow_state_bytes",
        kind: MetricKind::Gauge,
        labels: &["service", "shard", "store"],
        help: "Bytes of a store's hash tables (keys, values, control bytes; not heap the values own).",
    },
    MetricSpec {
        name: "tradeflow_process_duration_seconds",
        kind: MetricKind::Histogram,
        labels: SHARD_INPUT,
        help: "Per record: in-place decode, stage logic and output encoding, by input topic (HDR-recorded on the shard).",
    },
    MetricSpec {
        name: "tradeflow_end_to_end_latency_seconds",
        kind: MetricKind::Histogram,
        labels: SHARD_INPUT,
        help: "From the creation of the event that started the flow to this stage processing a record of it, by input topic.",
    },
    MetricSpec {
        name: "tradeflow_send_duration_seconds",
        kind: MetricKind::Histogram,
        labels: SHARD,
        help: "Handing the outbox to the producer (per record under exactly-once, per commit under at-least-once).",
    },
    MetricSpec {
        name: "tradeflow_commit_duration_seconds",
        kind: MetricKind::Histogram,
        labels: SHARD,
        help: "One commit: held outputs, changelog writes, offsets (and the transaction under exactly-once).",
    },
    MetricSpec {
        name: "tradeflow_restore_duration_seconds",
        kind: MetricKind::Histogram,
        labels: SHARD,
        help: "Restoring one partition's stores from their changelogs.",
    },
];

/// The family a timing is exposed as, and its buckets.
fn timing_family(timing: Timing) -> (&'static str, &'static [f64]) {
    match timing {
        Timing::Process => ("tradeflow_process_duration_seconds", RECORD_BUCKETS_S),
        Timing::EndToEnd => ("tradeflow_end_to_end_latency_seconds", KAFKA_BUCKETS_S),
        Timing::Send => ("tradeflow_send_duration_seconds", RECORD_BUCKETS_S),
        Timing::Commit => ("tradeflow_commit_duration_seconds", KAFKA_BUCKETS_S),
        Timing::Restore => ("tradeflow_restore_duration_seconds", RESTORE_BUCKETS_S),
    }
}

/// Renders the engine's snapshot at each scrape. See the module doc.
pub struct EngineCollector {
    telemetry: Telemetry,
    descs: Vec<Desc>,
}

impl EngineCollector {
    pub fn new(telemetry: Telemetry) -> prometheus::Result<Self> {
        let descs = ENGINE_METRICS
            .iter()
            .map(|spec| {
                Desc::new(
                    spec.name.to_string(),
                    spec.help.to_string(),
                    spec.labels.iter().map(|l| l.to_string()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(EngineCollector { telemetry, descs })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self
            .telemetry
            .snapshot(Duration::from_millis(SNAPSHOT_TIMEOUT_MS))
        {
            Ok(snapshot) => families(&snapshot),
            Err(e) => {
                // Prometheus sees the gap; the process's own metrics still render.
                tracing::warn!(error = %e, "no engine snapshot for this scrape");
                Vec::new()
            }
        }
    }
}

/// Collects samples per family, in `ENGINE_METRICS` order.
struct Families {
    metrics: Vec<Vec<Metric>>,
}

impl Families {
    fn new() -> Self {
        Families {
            metrics: ENGINE_METRICS.iter().map(|_| Vec::new()).collect(),
        }
    }

    fn push(&mut self, name: &str, metric: Metric) {
        if let Some(i) = ENGINE_METRICS.iter().position(|s| s.name == name) {
            self.metrics[i].push(metric);
        }
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.counter_f64(name, labels, value as f64);
    }

    fn counter_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut counter = Counter::default();
        counter.set_value(value);
        let mut metric = with_labels(labels);
        metric.set_counter(counter);
        self.push(name, metric);
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = with_labels(labels);
        metric.set_gauge(gauge);
        self.push(name, metric);
    }

    fn histogram(&mut self, timing: Timing, labels: &[(&str, &str)], h: &Histogram<u64>) {
        let (name, bounds) = timing_family(timing);
        let mut metric = with_labels(labels);
        metric.set_histogram(buckets(h, bounds));
        self.push(name, metric);
    }

    fn finish(self) -> Vec<MetricFamily> {
        ENGINE_METRICS
            .iter()
            .zip(self.metrics)
            .map(|(spec, metrics)| {
                let mut family = MetricFamily::default();
                family.set_name(spec.name.to_string());
                family.set_help(spec.help.to_string());
                family.set_field_type(match spec.kind {
                    MetricKind::Counter => MetricType::COUNTER,
                    MetricKind::Gauge => MetricType::GAUGE,
                    MetricKind::Histogram => MetricType::HISTOGRAM,
                });
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

fn with_labels(labels: &[(&str, &str)]) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect(),
    );
    metric
}

/// A Prometheus histogram read from an HdrHistogram in nanoseconds: each
/// bucket counts the values at or below its bound (to the HDR's 0.1 %
/// resolution); the sum is the HDR mean times the count.
pub fn buckets(h: &Histogram<u64>, bounds_s: &[f64]) -> PromHistogram {
    let mut out = PromHistogram::default();
    out.set_sample_count(h.len());
    out.set_sample_sum(h.mean() * h.len() as f64 / NS_PER_S);
    out.set_bucket(
        bounds_s
            .iter()
            .map(|bound| {
                let bound_ns = (bound * NS_PER_S) as u64;
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(if h.is_empty() {
                    0
                } else {
                    h.count_between(0, bound_ns)
                });
                bucket
            })
            .collect(),
    );
    out
}

/// Every engine family for one snapshot. Families are emitted for every shard
/// even before its first report (zeros), so dashboards and alerts find them.
pub fn families(snapshot: &MetricsSnapshot) -> Vec<MetricFamily> {
    let mut out = Families::new();
    for shard in &snapshot.shards {
        shard_families(&mut out, shard);
    }
    for lag in &snapshot.standby_lag {
        let partition = lag.partition.0.to_string();
        out.gauge(
            "tradeflow_standby_lag_offsets",
            &[("partition", partition.as_str())],
            lag.offsets_behind as f64,
        );
    }
    out.finish()
}

fn shard_families(out: &mut Families, m: &ShardMetrics) {
    let shard_id = m.shard.0.to_string();
    let service = if m.service.is_empty() {
        "unknown"
    } else {
        m.service
    };
    let labels = [("service", service), ("shard", shard_id.as_str())];
    let c = &m.counters;
    out.counter("tradeflow_records_in_total", &labels, c.records_in);
    out.counter("tradeflow_records_out_total", &labels, c.records_out);
    out.counter("tradeflow_commits_total", &labels, c.commits);
    out.counter_f64(
        "tradeflow_shard_commit_blocked_seconds_total",
        &labels,
        c.commit_blocked_ns as f64 / NS_PER_S,
    );
    out.counter(
        "tradeflow_transaction_aborts_total",
        &labels,
        c.transaction_aborts,
    );
    out.counter(
        "tradeflow_transaction_rollbacks_total",
        &labels,
        c.rollbacks,
    );
    out.counter(
        "tradeflow_changelog_records_total",
        &labels,
        c.changelog_records,
    );
    out.counter("tradeflow_send_retries_total", &labels, c.send_retries);
    out.counter(
        "tradeflow_input_order_waits_total",
        &labels,
        c.input_order_waits,
    );
    out.counter(
        "tradeflow_input_order_enforced_total",
        &labels,
        c.input_order_enforced,
    );
    out.counter(
        "tradeflow_shard_restarts_total",
        &labels,
        u64::from(m.live.restarts),
    );
    out.counter("tradeflow_restores_total", &labels, c.restores);
    out.counter(
        "tradeflow_restored_records_total",
        &labels,
        m.live.restored_records,
    );
    out.counter(
        "tradeflow_restored_bytes_total",
        &labels,
        m.live.restored_bytes,
    );
    for (class_index, class) in DEAD_LETTER_CLASSES.iter().enumerate() {
        for (reason_index, reason) in DEAD_LETTER_REASONS.iter().enumerate() {
            out.counter(
                "tradeflow_dead_letters_total",
                &[
                    ("service", service),
                    ("shard", shard_id.as_str()),
                    ("class", class.as_str()),
                    ("reason", reason),
                ],
                m.dead_letters[class_index][reason_index],
            );
        }
    }
    out.gauge(
        "tradeflow_restore_partitions_in_progress",
        &labels,
        f64::from(m.live.restoring),
    );
    out.gauge(
        "tradeflow_restore_remaining_offsets",
        &labels,
        m.live.restore_remaining as f64,
    );
    out.gauge(
        "tradeflow_shard_ready",
        &labels,
        if m.live.ready { 1.0 } else { 0.0 },
    );
    out.gauge("tradeflow_owned_partitions", &labels, m.owned.len() as f64);
    for lag in &m.lag {
        let partition = lag.partition.0.to_string();
        out.gauge(
            "tradeflow_consumer_lag_records",
            &[
                ("service", service),
                ("shard", shard_id.as_str()),
                ("topic", lag.topic),
                ("partition", partition.as_str()),
            ],
            lag.lag() as f64,
        );
    }
    for store in &m.stores {
        let store_labels = [
            ("service", service),
            ("shard", shard_id.as_str()),
            ("store", store.store),
        ];
        out.gauge(
            "tradeflow_state_entries",
            &store_labels,
            store.entries as f64,
        );
        out.gauge("tradeflow_state_bytes", &store_labels, store.bytes as f64);
    }
    // Shard-level timings always appear; per-input ones once an input has
    // reported (their label values come from the stage).
    for timing in [Timing::Send, Timing::Commit, Timing::Restore] {
        out.histogram(timing, &labels, &m.histogram(timing));
    }
    for (key, h) in &m.histograms {
        if let Some(input) = key.input {
            out.histogram(
                key.timing,
                &[
                    ("service", service),
                    ("shard", shard_id.as_str()),
                    ("input", input),
                ],
                h,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_values_at_or_below_their_bound() {
        let mut h = engine::telemetry::new_histogram();
        for us in [1u64, 3, 7, 20, 900] {
            h.saturating_record(us * 1_000);
        }
        let out = buckets(&h, &[2e-6, 1e-5, 1e-3]);
        let counts: Vec<u64> = out
            .get_bucket()
            .iter()
            .map(Bucket::cumulative_count)
            .collect();
        assert_eq!(counts, vec![1, 3, 5]);
        assert_eq!(out.get_sample_count(), 5);
        let sum = out.get_sample_sum();
        assert!((sum - 931e-6).abs() < 2e-6, "sum {sum}");
    }

    #[test]
    fn every_metric_name_follows_prometheus_conventions() {
        for spec in ENGINE_METRICS {
            assert!(spec.name.starts_with("tradeflow_"), "{}", spec.name);
            assert_eq!(
                spec.kind == MetricKind::Counter,
                spec.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                spec.name
            );
            if spec.kind == MetricKind::Histogram {
                assert!(spec.name.ends_with("_seconds"), "{}", spec.name);
            }
        }
    }
}
