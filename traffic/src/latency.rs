//! Latency recording with HdrHistogram: one histogram measured from each send's
//! *intended* time (corrected for coordinated omission) and one from its actual
//! send time (uncorrected), so a report can show both.
//!
//! Must never: be shared between threads while recording; each recorder belongs
//! to one thread and reports are merged afterwards.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram records before it saturates (60 s).
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept by every histogram.
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// Errors from building a latency report.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    #[error("histogram bounds: {0}")]
    Creation(#[from] hdrhistogram::CreationError),
    #[error("merging histograms: {0}")]
    Merge(#[from] hdrhistogram::AdditionError),
}

/// Corrected and uncorrected latencies of one run, in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
}

impl LatencyRecorder {
    pub fn new() -> Result<Self, LatencyError> {
        Ok(LatencyRecorder {
            corrected: Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG)?,
            uncorrected: Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG)?,
        })
    }

    /// Records one reply: `from_intended_ns` counts from when the schedule wanted
    /// the send, `from_actual_ns` from when it happened.
    pub fn record(&mut self, from_intended_ns: u64, from_actual_ns: u64) {
        self.corrected.saturating_record(from_intended_ns.max(1));
        self.uncorrected.saturating_record(from_actual_ns.max(1));
    }

    pub fn merge(&mut self, other: &LatencyRecorder) -> Result<(), LatencyError> {
        self.corrected.add(&other.corrected)?;
        self.uncorrected.add(&other.uncorrected)?;
        Ok(())
    }

    /// A percentile table in microseconds, corrected beside uncorrected.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>10} {:>14} {:>16}",
            "percentile", "corrected µs", "uncorrected µs"
        );
        for (label, q) in [
            ("p50", 0.50),
            ("p90", 0.90),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("p99.99", 0.9999),
        ] {
            let _ = writeln!(
                out,
                "{label:>10} {:>14.1} {:>16.1}",
                micros(self.corrected.value_at_quantile(q)),
                micros(self.uncorrected.value_at_quantile(q))
            );
        }
        let _ = writeln!(
            out,
            "{:>10} {:>14.1} {:>16.1}",
            "max",
            micros(self.corrected.max()),
            micros(self.uncorrected.max())
        );
        out
    }
}

fn micros(ns: u64) -> f64 {
    Duration::from_nanos(ns).as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_shows_in_the_corrected_histogram_only() -> Result<(), LatencyError> {
        // 1000 sends every 1 ms; the system stalls 100 ms at send 500, so the next
        // 100 sends leave late. Measured from their actual send they look fast;
        // measured from when they were due they waited up to 100 ms.
        let mut recorder = LatencyRecorder::new()?;
        let service_ns = 50_000;
        for i in 0..1000u64 {
            let lateness = if (500..600).contains(&i) {
                (600 - i) * 1_000_000
            } else {
                0
            };
            recorder.record(lateness + service_ns, service_ns);
        }
        assert!(recorder.corrected.value_at_quantile(0.99) > 50_000_000);
        assert!(recorder.uncorrected.value_at_quantile(0.99) < 100_000);
        assert!(recorder.table().contains("p99.9"));
        Ok(())
    }
}
