//! The `.hgrm` text against files written by HdrHistogram 2.2.2's Java
//! `outputPercentileDistribution` (`tests/data/*.hgrm`, made by
//! `tests/data/Golden.java`), byte for byte.

use hdr::hgrm;
use hdrhistogram::Histogram;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The bounds and precision `Golden.java` builds its histograms with (also
/// loadgen's recorders': `loadgen::latency`).
const GOLDEN_NS_MAX: u64 = 60_000_000_000;
const GOLDEN_SIGFIG: u8 = 3;

/// The histogram `tests/data/Golden.java` builds with HdrHistogram 2.2.2.
fn golden_histogram() -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let mut h = Histogram::new_with_bounds(1, GOLDEN_NS_MAX, GOLDEN_SIGFIG)?;
    for i in 1..=10_000u64 {
        h.record(i * 1000 + (i % 7) * 13)?;
    }
    for _ in 0..10 {
        h.record(50_000_000)?;
    }
    h.record(1_500_000_000)?;
    Ok(h)
}

/// The histogram `Golden.java ties` builds: running counts that hit percentile
/// steps exactly.
fn ties_histogram() -> Result<Histogram<u64>, Box<dyn std::error::Error>> {
    let mut h = Histogram::new_with_bounds(1, GOLDEN_NS_MAX, GOLDEN_SIGFIG)?;
    for v in 1..=8u64 {
        h.record_n(v * 100_000 + v * 7, 5_000)?;
    }
    for i in 0..40_000u64 {
        h.record(900_000 + (i % 1_000) * 1_000)?;
    }
    Ok(h)
}

#[test]
fn hgrm_matches_the_java_implementation_byte_for_byte() -> TestResult {
    assert_same_text(
        &hgrm::percentile_distribution(&golden_histogram()?, hgrm::NS_PER_US),
        include_str!("data/known.hgrm"),
    );
    assert_same_text(
        &hgrm::percentile_distribution(&ties_histogram()?, hgrm::NS_PER_US),
        include_str!("data/ties.hgrm"),
    );
    Ok(())
}

fn assert_same_text(actual: &str, expected: &str) {
    if actual != expected {
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            assert_eq!(a, e, "line {}", i + 1);
        }
        assert_eq!(actual.lines().count(), expected.lines().count());
    }
}
