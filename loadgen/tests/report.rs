//! Reports end to end: a known recording written to a directory and read back
//! with HdrHistogram's own readers, an XML parser and serde.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdr::hgrm;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use loadgen::interval::{IntervalRecorder, Recorded};
use loadgen::report::{self, Report, RunInfo, Summary};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MS: u64 = 1_000_000;

/// Three seconds of a steady 1 ms service, a one-second stall (nothing
/// arrives), then the late replies of the stall.
fn recording() -> Result<Recorded, Box<dyn std::error::Error>> {
    let mut recorder = IntervalRecorder::new(Duration::from_secs(1))?;
    for i in 0..3_000u64 {
        recorder.record(i * MS, MS, MS)?;
    }
    recorder.tick(3_999 * MS)?;
    for i in 0..1_000u64 {
        // due at 3 s + i ms, answered at 4.5 s + i µs
        let now = 4_500 * MS + i * 1_000;
        recorder.record(now, now - (3_000 + i) * MS, 200_000)?;
    }
    Ok(recorder.finish(5_000 * MS)?)
}

fn run_info() -> RunInfo {
    RunInfo {
        tool: "loadgen test".into(),
        command_line: vec!["loadgen".into(), "test".into()],
        version: "0.0.0".into(),
        commit: "abc".into(),
        host: "here".into(),
        cpus: 2,
        started: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        duration: Duration::from_secs(5),
        offered_rate_per_s: 1_000.0,
        achieved_rate_per_s: 800.0,
        sent: 4_000,
        received: 4_000,
    }
}

#[test]
fn a_report_directory_reads_back() -> TestResult {
    let recorded = recording()?;
    let run = run_info();
    let report = Report {
        run: &run,
        total: &recorded.total,
        intervals: &recorded.intervals,
        flow: None,
    };
    let dir = std::env::temp_dir().join(format!(
        "loadgen-report-test-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    ));
    let written = report.write_to(&dir)?;

    // Every file is there and non-empty.
    for name in &written.files {
        let bytes = std::fs::read(dir.join(name))?;
        assert!(!bytes.is_empty(), "{name} is empty");
    }

    // summary.json parses back to what was written.
    let summary: Summary = serde_json::from_slice(&std::fs::read(dir.join(report::SUMMARY_JSON))?)?;
    assert_eq!(summary, written);
    assert_eq!(summary.format, report::SUMMARY_FORMAT);
    assert_eq!(summary.intervals.len(), 5);
    let counts: Vec<u64> = summary.intervals.iter().map(|i| i.count).collect();
    assert_eq!(counts, [1_000, 1_000, 1_000, 0, 1_000]);
    assert!(summary.latency_us.corrected.max > 1_400_000.0);
    assert!(summary.latency_us.uncorrected.max < 1_100.0);
    assert_eq!(summary.load.lost, 0);

    // The .hgrm files are the distributions of the totals.
    let hgrm_text = std::fs::read_to_string(dir.join(report::HGRM_CORRECTED))?;
    assert_eq!(
        hgrm_text,
        hgrm::percentile_distribution(&recorded.total.corrected, hgrm::NS_PER_US)
    );
    assert!(hgrm_text.contains("Total count    =         4000]"));
    let uncorrected = std::fs::read_to_string(dir.join(report::HGRM_UNCORRECTED))?;
    assert!(uncorrected.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));

    // The SVGs are well-formed XML with an <svg> root and some text.
    for name in [report::SVG_PERCENTILES, report::SVG_THROUGHPUT] {
        let svg = std::fs::read_to_string(dir.join(name))?;
        let mut reader = quick_xml::Reader::from_str(&svg);
        let (mut depth, mut root, mut texts) = (0i32, None, 0);
        loop {
            match reader.read_event()? {
                quick_xml::events::Event::Start(tag) => {
                    if depth == 0 {
                        root = Some(String::from_utf8_lossy(tag.name().as_ref()).into_owned());
                    }
                    if tag.name().as_ref() == b"text" {
                        texts += 1;
                    }
                    depth += 1;
                }
                quick_xml::events::Event::End(_) => depth -= 1,
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "{name}: unbalanced");
        assert_eq!(root.as_deref(), Some("svg"), "{name}");
        assert!(texts > 5, "{name}: axis labels missing");
    }
    let percentiles = std::fs::read_to_string(dir.join(report::SVG_PERCENTILES))?;
    assert!(
        percentiles.contains("99.9%"),
        "percentile axis is labelled in nines"
    );

    // The interval log round-trips through the crate's reader.
    let log = std::fs::read(dir.join(report::HLOG))?;
    let text = String::from_utf8_lossy(&log);
    assert!(text.starts_with("#[Histogram log format version 1.3]\n"));
    assert!(text.contains("\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"));
    let mut base_time = None;
    let mut read_back = Vec::new();
    for entry in IntervalLogIterator::new(&log) {
        match entry.map_err(|e| format!("{e:?}"))? {
            LogEntry::BaseTime(t) => base_time = Some(t),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(interval) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())?;
                let histogram: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| format!("{e:?}"))?;
                read_back.push((
                    interval.tag().map(|t| t.as_str().to_string()),
                    interval.start_timestamp(),
                    interval.duration(),
                    histogram,
                ));
            }
        }
    }
    assert_eq!(base_time, Some(Duration::from_secs(1_800_000_000)));
    assert_eq!(read_back.len(), 2 * recorded.intervals.entries.len());
    for (i, entry) in recorded.intervals.entries.iter().enumerate() {
        let original = recorded.intervals.histograms(i)?;
        let (tag, start, length, corrected) = &read_back[2 * i];
        assert_eq!(tag, &None);
        assert_eq!(start.as_millis() as u64, entry.start_ns / MS);
        assert_eq!(length.as_millis() as u64, entry.duration_ns / MS);
        assert_eq!(corrected, &original.corrected);
        let (tag, _, _, uncorrected) = &read_back[2 * i + 1];
        assert_eq!(tag.as_deref(), Some(report::HLOG_UNCORRECTED_TAG));
        assert_eq!(uncorrected, &original.uncorrected);
    }

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_table_shows_offered_and_achieved() -> TestResult {
    let recorded = recording()?;
    let run = run_info();
    let table = Report {
        run: &run,
        total: &recorded.total,
        intervals: &recorded.intervals,
        flow: None,
    }
    .table();
    assert!(table.starts_with("loadgen test: offered 1000/s, achieved 800/s over 5.0 s (sent 4000, received 4000, lost 0)\n"));
    for row in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        assert!(
            table.contains(&format!(" {row} ")),
            "{row} missing:\n{table}"
        );
    }
    Ok(())
}
