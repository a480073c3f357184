//! The engine's HDR latency report: a percentile table of every timing (per
//! input topic where the timing has one, and merged), and `.hgrm` percentile
//! distributions that HdrHistogram's plotters read, served over HTTP on
//! demand and written to a directory when the engine shuts down.
//!
//! Owns: the report's layout and file names.
//! Must never: record anything, or hold a histogram a shard still writes
//! (it reads the hub's merged copies).

use std::fmt::Write as _;
use std::path::Path;

use engine::telemetry::{new_histogram, MetricsSnapshot, Timing};
use hdr::hgrm::{percentile_distribution, NS_PER_US};
use hdrhistogram::Histogram;

/// The percentile table's file name in a report directory.
pub const TABLE_FILE: &str = "engine-latency.txt";

/// One row of the report: a timing, the input it is about (`None`: every
/// input of every shard), and the histogram merged over shards.
pub struct ReportRow {
    pub timing: Timing,
    pub input: Option<&'static str>,
    pub histogram: Histogram<u64>,
}

/// Every row of a snapshot: each timing merged over everything, then each
/// per-input timing per input (merged over shards).
pub fn rows(snapshot: &MetricsSnapshot) -> Vec<ReportRow> {
    let mut rows = Vec::new();
    for timing in Timing::ALL {
        rows.push(ReportRow {
            timing,
            input: None,
            histogram: snapshot.merged(timing),
        });
        if !timing.per_input() {
            continue;
        }
        let mut inputs: Vec<&'static str> = snapshot
            .shards
            .iter()
            .flat_map(|s| s.histograms.iter())
            .filter(|(key, _)| key.timing == timing)
            .filter_map(|(key, _)| key.input)
            .collect();
        inputs.sort_unstable();
        inputs.dedup();
        for input in inputs {
            let mut merged = new_histogram();
            for shard in &snapshot.shards {
                for (key, h) in &shard.histograms {
                    if key.timing == timing && key.input == Some(input) {
                        // Same bounds everywhere: adding cannot fail.
                        let _ = merged.add(&**h);
                    }
                }
            }
            rows.push(ReportRow {
                timing,
                input: Some(input),
                histogram: merged,
            });
        }
    }
    rows
}

fn micros(ns: u64) -> f64 {
    ns as f64 / NS_PER_US
}

/// The percentile table, in microseconds.
pub fn table(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let records_in: u64 = snapshot.shards.iter().map(|s| s.counters.records_in).sum();
    let _ = writeln!(
        out,
        "tradeflow engine HDR report: {} shard(s), {records_in} records in; values in µs",
        snapshot.shards.len()
    );
    let _ = writeln!(
        out,
        "{:<11} {:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "timing", "input", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for row in rows(snapshot) {
        let h = &row.histogram;
        let _ = write!(
            out,
            "{:<11} {:<40} {:>10}",
            row.timing.name(),
            row.input.unwrap_or("(all)"),
            h.len()
        );
        for q in [0.5, 0.9, 0.99, 0.999, 0.9999] {
            let _ = write!(out, " {:>10.1}", micros(h.value_at_quantile(q)));
        }
        let _ = writeln!(out, " {:>10.1}", micros(h.max()));
    }
    out
}

/// The `.hgrm` file name of a row: `<timing>.hgrm`, or
/// `<timing>--<input>.hgrm` for one input topic.
pub fn hgrm_file(timing: Timing, input: Option<&str>) -> String {
    match input {
        None => format!("{}.hgrm", timing.name()),
        Some(input) => format!("{}--{input}.hgrm", timing.name()),
    }
}

/// The `.hgrm` percentile distribution (microseconds) of one row, if the
/// snapshot has it.
pub fn hgrm(snapshot: &MetricsSnapshot, timing: Timing, input: Option<&str>) -> Option<String> {
    rows(snapshot)
        .into_iter()
        .find(|row| row.timing == timing && row.input == input)
        .map(|row| percentile_distribution(&row.histogram, NS_PER_US))
}

/// Writes the table and every row's `.hgrm` into `dir` (created if needed);
/// returns the files written.
pub fn write_to(snapshot: &MetricsSnapshot, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(TABLE_FILE), table(snapshot))?;
    let mut written = vec![TABLE_FILE.to_string()];
    for row in rows(snapshot) {
        let file = hgrm_file(row.timing, row.input);
        std::fs::write(
            dir.join(&file),
            percentile_distribution(&row.histogram, NS_PER_US),
        )?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_still_reports_every_timing() {
        let snapshot = MetricsSnapshot::default();
        let text = table(&snapshot);
        for timing in Timing::ALL {
            assert!(text.contains(timing.name()), "{text}");
        }
        let hgrm = hgrm(&snapshot, Timing::Commit, None).unwrap_or_default();
        assert!(hgrm.contains("Total count"), "{hgrm}");
        assert_eq!(
            hgrm_file(Timing::Process, Some("t")),
            "process--t.hgrm".to_string()
        );
    }

    #[test]
    fn a_report_directory_holds_the_table_and_one_hgrm_per_row() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("tradeflow-report-{}", std::process::id()));
        let written = write_to(&MetricsSnapshot::default(), &dir)?;
        assert_eq!(written.len(), 1 + Timing::ALL.len(), "{written:?}");
        for file in &written {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        let table = std::fs::read_to_string(dir.join(TABLE_FILE))?;
        assert!(table.contains("end_to_end"), "{table}");
        std::fs::remove_dir_all(&dir)
    }
}
