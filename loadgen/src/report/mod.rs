//! Reports of a run, the way operators and HdrHistogram's tools read them:
//!
//! | file | content |
//! |---|---|
//! | stdout | percentile table (p50 … p99.99, max), corrected beside uncorrected; throughput achieved vs offered |
//! | `latency.hgrm` | corrected percentile distribution, µs, HdrHistogram's `.hgrm` text |
//! | `latency-uncorrected.hgrm` | the same, measured from the actual send |
//! | `latency.hlog` | interval log (V2 deflate histograms in ns, one per interval; corrected untagged, uncorrected tagged `uncorrected`), readable by HistogramLogAnalyzer |
//! | `latency-percentiles.svg` | latency by percentile, log-scaled percentile axis |
//! | `throughput-latency.svg` | per-interval throughput and p99 over time |
//! | `summary.json` | every figure above, for scripts ([`Summary`]); for runs against the flow also the outcomes and the audit ([`FlowSummary`]) |
//!
//! Owns: turning a finished recording (whole-run histograms and an
//! [`IntervalLog`], as [`crate::interval::Recorded`] holds them) plus what the run was
//! ([`RunInfo`]) into those files. Must never: record, or run on a measuring
//! thread — reports are written after the run, from data the recorder handed over.

pub mod plot;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdr::hgrm;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::interval::{IntervalError, IntervalLog};
use crate::latency::LatencyRecorder;

/// `format` field of `summary.json`.
pub const SUMMARY_FORMAT: &str = "tradeflow-loadgen-summary";
/// Version of `summary.json`'s layout; bumped on any incompatible change.
pub const SUMMARY_VERSION: u32 = 1;
/// Tag of the uncorrected histograms in `latency.hlog` (the corrected ones are untagged).
pub const HLOG_UNCORRECTED_TAG: &str = "uncorrected";
/// Divisor of the interval log's max column: nanoseconds shown as milliseconds,
/// as HdrHistogram's Java `HistogramLogWriter` does by default.
pub const HLOG_MAX_VALUE_DIVISOR: f64 = 1_000_000.0;

/// The files a report consists of, by name.
pub const HGRM_CORRECTED: &str = "latency.hgrm";
pub const HGRM_UNCORRECTED: &str = "latency-uncorrected.hgrm";
pub const HLOG: &str = "latency.hlog";
pub const SVG_PERCENTILES: &str = "latency-percentiles.svg";
pub const SVG_THROUGHPUT: &str = "throughput-latency.svg";
pub const SUMMARY_JSON: &str = "summary.json";

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plotting {file}: {reason}")]
    Plot { file: String, reason: String },
    #[error("writing the interval log: {0}")]
    IntervalLog(String),
    #[error(transparent)]
    Interval(#[from] IntervalError),
    #[error("summary JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What was run, where, and what it offered and achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// What ran, e.g. `loadgen ping`.
    pub tool: String,
    /// The command line, one argument per entry.
    pub command_line: Vec<String>,
    /// The tool's version.
    pub version: String,
    /// The source commit (`unknown` where it cannot be found).
    pub commit: String,
    /// The host that measured.
    pub host: String,
    /// CPUs the measuring process could use.
    pub cpus: usize,
    /// When the run's epoch (interval 0) began.
    pub started: SystemTime,
    /// From the epoch to the end of measuring (sending plus draining).
    pub duration: Duration,
    pub offered_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub sent: u64,
    pub received: u64,
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `histogram` (nanoseconds) in microseconds; all zero when empty.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                count: 0,
                min: 0.0,
                mean: 0.0,
                stdev: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                p99_99: 0.0,
                max: 0.0,
            };
        }
        let us = |ns: u64| ns as f64 / hgrm::NS_PER_US;
        Percentiles {
            count: histogram.len(),
            min: us(histogram.min_nz()),
            mean: histogram.mean() / hgrm::NS_PER_US,
            stdev: histogram.stdev() / hgrm::NS_PER_US,
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p99_9: us(histogram.value_at_quantile(0.999)),
            p99_99: us(histogram.value_at_quantile(0.9999)),
            max: us(histogram.max()),
        }
    }
}

/// One interval of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalSummary {
    /// Start, seconds since the run's epoch.
    pub start_s: f64,
    pub duration_s: f64,
    pub count: u64,
    /// Replies per second in this interval.
    pub throughput_per_s: f64,
    pub corrected: Percentiles,
    pub uncorrected: Percentiles,
}

/// `summary.json`: every figure of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Always [`SUMMARY_FORMAT`].
    pub format: String,
    /// Always [`SUMMARY_VERSION`] when written by this version.
    pub version: u32,
    pub run: RunSummary,
    pub load: LoadSummary,
    pub latency_us: LatencySummary,
    /// Nominal interval length of `intervals` and `latency.hlog`.
    pub interval_s: f64,
    /// Longest pause of the measuring thread for one interval rotation, µs.
    pub rotation_us_max: f64,
    pub intervals: Vec<IntervalSummary>,
    /// The files of the report, relative to its directory.
    pub files: Vec<String>,
    /// Runs against the flow (`loadgen run`, `replay`): what happened to the
    /// orders, and the audit. Absent for `ping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowSummary>,
}

/// What a run against the flow did to its orders (`sent`/`received` of
/// [`LoadSummary`] count orders and their outcomes there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// The topic namespace driven (empty: the default one).
    pub namespace: String,
    /// Every record sent: set-up, orders, amends, cancels, raw records.
    pub records_sent: u64,
    pub orders_sent: u64,
    pub filled: u64,
    pub rejected_funds: u64,
    pub rejected_stock_refunded: u64,
    /// Orders without an outcome when the run ended.
    pub missing: u64,
    /// Outcomes seen twice for one order.
    pub duplicate_outcomes: u64,
    /// Bound on orders awaiting an outcome before the sender waits.
    pub pending_orders_max: u64,
    /// Longest wait of the sender for that bound, ms (0: never bound).
    pub pending_wait_max_ms: f64,
    /// Where the orders' time went, stage by stage (Kafka timestamps, ms
    /// resolution), in flow order.
    #[serde(default)]
    pub stages: Vec<StageSummary>,
    /// The audit of every flow topic of the namespace; absent when turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSummary>,
}

/// One stage of the flow's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// `payment`, `inventory`, `refund`, `visible`.
    pub stage: String,
    /// What it spans.
    pub span: String,
    /// Microseconds.
    pub latency_us: Percentiles,
}

/// The audit's verdict, for scripts (the full report is printed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub passed: bool,
    /// `exactly-once` or `at-least-once`.
    pub guarantee: String,
    pub records: u64,
    pub orders_accepted: u64,
    pub violations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub tool: String,
    pub command_line: Vec<String>,
    pub version: String,
    pub commit: String,
    pub host: String,
    pub cpus: usize,
    /// The run's epoch, nanoseconds since the Unix epoch.
    pub started_unix_ns: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub offered_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub sent: u64,
    pub received: u64,
    /// Sent but never seen back.
    pub lost: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Measured from each send's intended time (coordinated omission corrected).
    pub corrected: Percentiles,
    /// Measured from each send's actual time.
    pub uncorrected: Percentiles,
}

/// A finished run, ready to be reported.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub run: &'a RunInfo,
    /// The whole run's histograms.
    pub total: &'a LatencyRecorder,
    pub intervals: &'a IntervalLog,
    /// For runs against the flow.
    pub flow: Option<&'a FlowSummary>,
}

impl Report<'_> {
    /// Every figure of the report.
    pub fn summary(&self) -> Result<Summary, ReportError> {
        let run = self.run;
        let mut intervals = Vec::with_capacity(self.intervals.entries.len());
        for (index, entry) in self.intervals.entries.iter().enumerate() {
            let histograms = self.intervals.histograms(index)?;
            let duration_s = entry.duration_ns as f64 / 1e9;
            intervals.push(IntervalSummary {
                start_s: entry.start_ns as f64 / 1e9,
                duration_s,
                count: entry.count,
                throughput_per_s: if duration_s > 0.0 {
                    entry.count as f64 / duration_s
                } else {
                    0.0
                },
                corrected: Percentiles::of(&histograms.corrected),
                uncorrected: Percentiles::of(&histograms.uncorrected),
            });
        }
        Ok(Summary {
            format: SUMMARY_FORMAT.to_string(),
            version: SUMMARY_VERSION,
            run: RunSummary {
                tool: run.tool.clone(),
                command_line: run.command_line.clone(),
                version: run.version.clone(),
                commit: run.commit.clone(),
                host: run.host.clone(),
                cpus: run.cpus,
                started_unix_ns: unix_ns(run.started),
                duration_s: run.duration.as_secs_f64(),
            },
            load: LoadSummary {
                offered_rate_per_s: run.offered_rate_per_s,
                achieved_rate_per_s: run.achieved_rate_per_s,
                sent: run.sent,
                received: run.received,
                lost: run.sent.saturating_sub(run.received),
            },
            latency_us: LatencySummary {
                corrected: Percentiles::of(&self.total.corrected),
                uncorrected: Percentiles::of(&self.total.uncorrected),
            },
            interval_s: self.intervals.interval_ns as f64 / 1e9,
            rotation_us_max: self.intervals.rotation_ns_max as f64 / hgrm::NS_PER_US,
            intervals,
            files: [
                HGRM_CORRECTED,
                HGRM_UNCORRECTED,
                HLOG,
                SVG_PERCENTILES,
                SVG_THROUGHPUT,
                SUMMARY_JSON,
            ]
            .map(String::from)
            .to_vec(),
            flow: self.flow.cloned(),
        })
    }

    /// The table printed on stdout: load, then percentiles corrected beside uncorrected.
    pub fn table(&self) -> String {
        let run = self.run;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: offered {:.0}/s, achieved {:.0}/s over {:.1} s (sent {}, received {}, lost {})",
            run.tool,
            run.offered_rate_per_s,
            run.achieved_rate_per_s,
            run.duration.as_secs_f64(),
            run.sent,
            run.received,
            run.sent.saturating_sub(run.received)
        );
        if let Some(flow) = self.flow {
            let _ = writeln!(
                out,
                "orders: {} sent ({} records): {} filled, {} rejected for funds, {} rejected for \
                 stock and refunded, {} missing, {} duplicate outcomes",
                flow.orders_sent,
                flow.records_sent,
                flow.filled,
                flow.rejected_funds,
                flow.rejected_stock_refunded,
                flow.missing,
                flow.duplicate_outcomes
            );
        }
        out.push_str(&self.total.table());
        if let Some(flow) = self.flow.filter(|f| !f.stages.is_empty()) {
            let _ = writeln!(
                out,
                "{:>10} {:>10} {:>10} {:>10} {:>10}  per stage, ms (Kafka timestamps)",
                "stage", "p50", "p99", "max", "count"
            );
            for stage in &flow.stages {
                let l = &stage.latency_us;
                let _ = writeln!(
                    out,
                    "{:>10} {:>10.1} {:>10.1} {:>10.1} {:>10}  {}",
                    stage.stage,
                    l.p50 / 1e3,
                    l.p99 / 1e3,
                    l.max / 1e3,
                    l.count,
                    stage.span
                );
            }
        }
        out
    }

    /// The interval log: HdrHistogram's format version 1.3, one corrected
    /// (untagged) and one uncorrected (tagged) histogram per interval.
    pub fn interval_log(&self) -> Result<Vec<u8>, ReportError> {
        let log_error = |e: std::io::Error| ReportError::IntervalLog(e.to_string());
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        {
            let mut header = IntervalLogWriterBuilder::new();
            header
                .add_comment("[Histogram log format version 1.3]")
                .add_comment(&format!(
                    "[{} {} (commit {}) on {}; values in nanoseconds]",
                    self.run.tool, self.run.version, self.run.commit, self.run.host
                ))
                .with_start_time(self.run.started)
                .with_base_time(self.run.started);
            header
                .begin_log_with(&mut out, &mut serializer)
                .map_err(log_error)?;
        }
        // The legend line the Java writer puts after the headers; the crate's
        // builder has no call for it, so it goes in between two writers.
        out.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        let mut writer = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(HLOG_MAX_VALUE_DIVISOR)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(log_error)?;
        let uncorrected_tag = Tag::new(HLOG_UNCORRECTED_TAG);
        let intervals = self.intervals;
        for (index, entry) in intervals.entries.iter().enumerate() {
            let histograms = intervals.histograms(index)?;
            let start = Duration::from_nanos(entry.start_ns);
            let length = Duration::from_nanos(entry.duration_ns);
            writer
                .write_histogram(&histograms.corrected, start, length, None)
                .map_err(|e| ReportError::IntervalLog(e.to_string()))?;
            writer
                .write_histogram(&histograms.uncorrected, start, length, uncorrected_tag)
                .map_err(|e| ReportError::IntervalLog(e.to_string()))?;
        }
        Ok(out)
    }

    /// Writes every file of the report into `dir` (created if missing) and
    /// returns the summary it wrote.
    pub fn write_to(&self, dir: &Path) -> Result<Summary, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let total = self.total;
        let summary = self.summary()?;
        let title = format!(
            "{} — {:.0}/s offered, {:.0}/s achieved, {} replies",
            self.run.tool,
            self.run.offered_rate_per_s,
            self.run.achieved_rate_per_s,
            total.corrected.len()
        );
        write_file(
            dir,
            HGRM_CORRECTED,
            hgrm::percentile_distribution(&total.corrected, hgrm::NS_PER_US).as_bytes(),
        )?;
        write_file(
            dir,
            HGRM_UNCORRECTED,
            hgrm::percentile_distribution(&total.uncorrected, hgrm::NS_PER_US).as_bytes(),
        )?;
        write_file(dir, HLOG, &self.interval_log()?)?;
        write_file(
            dir,
            SVG_PERCENTILES,
            plot::percentile_svg(&title, &total.corrected, &total.uncorrected)?.as_bytes(),
        )?;
        write_file(
            dir,
            SVG_THROUGHPUT,
            plot::throughput_latency_svg(&title, self.run.offered_rate_per_s, &summary.intervals)?
                .as_bytes(),
        )?;
        let mut json = serde_json::to_vec_pretty(&summary)?;
        json.push(b'\n');
        write_file(dir, SUMMARY_JSON, &json)?;
        Ok(summary)
    }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ReportError> {
    let path = dir.join(name);
    let io_error = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&path).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
