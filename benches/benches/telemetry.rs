//! What recording a metric costs on a shard's hot path, beside the peers a
//! shared metrics registry would use, measured in the same run:
//!
//! - shard-local: a plain counter `+= 1`, an HdrHistogram record into the
//!   shard's own histogram (`ShardTelemetry::record_ns`), the TSC tick read
//!   (`ticks`), a whole timing (`record_since`: tick read + record), and
//!   what a shard pays per record (sampled timing + end-to-end latency);
//! - peers: `Instant::now()` (vDSO), an uncontended atomic `fetch_add`, the
//!   same on a cache line another core writes all the time (what a counter
//!   shared between shards costs), and the `prometheus` crate's shared
//!   `IntCounter::inc` and `Histogram::observe`.
//!
//! Run: `cargo bench -p tradeflow-benches --bench telemetry`. Criterion prints
//! the time per recorded metric; the closing table repeats the medians.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use engine::telemetry::{ShardTelemetry, Timing};

/// Recordings per timed batch, so the loop's own cost is amortised.
const RECORDS_PER_ITER: u64 = 1_000;

fn per_record(c: &mut Criterion, name: &str, mut body: impl FnMut(u64)) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for i in 0..iters {
                for j in 0..RECORDS_PER_ITER {
                    body(black_box(i ^ j));
                }
            }
            started.elapsed() / RECORDS_PER_ITER as u32
        })
    });
}

fn recording(c: &mut Criterion) {
    let mut counter = 0u64;
    per_record(c, "shard-local counter += 1", |_| {
        counter = black_box(counter) + 1;
    });

    let mut telemetry = ShardTelemetry::new(&["bench.input"]);
    per_record(c, "shard-local HDR record (record_ns)", |v| {
        // Values spread over 1 µs..1 ms, like per-record timings.
        telemetry.record_ns(Timing::Process, 0, 1_000 + (v & 0xF_FFFF));
    });
    per_record(c, "shard-local TSC read (ticks)", |_| {
        black_box(telemetry.ticks());
    });
    let mut start = telemetry.ticks();
    per_record(c, "shard-local timing (tick read + HDR record)", |_| {
        start = telemetry.record_since(Timing::Process, 0, start);
    });

    // What a shard pays per record: the sampling check (a clock read one
    // record in RECORD_TIMING_SAMPLE_EVERY), the end-to-end latency of every
    // record, and the process timing of sampled ones.
    let mut shard = ShardTelemetry::new(&["bench.input"]);
    let created_at_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 - 1_000_000);
    per_record(c, "shard per record: sampled timing + end-to-end", |_| {
        let sampled = shard.start_record();
        shard.record_end_to_end(0, created_at_ns);
        if let Some(started) = sampled {
            shard.record_since(Timing::Process, 0, started);
        }
    });

    per_record(c, "peer: Instant::now (vDSO)", |_| {
        black_box(Instant::now());
    });
    let own = AtomicU64::new(0);
    per_record(c, "peer: uncontended atomic fetch_add", |_| {
        own.fetch_add(1, Ordering::Relaxed);
    });

    // A counter another core increments all the time: every increment has
    // to win the cache line back.
    let shared = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rival = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                shared.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    per_record(c, "peer: atomic fetch_add shared with another core", |_| {
        shared.fetch_add(1, Ordering::Relaxed);
    });
    stop.store(true, Ordering::Relaxed);
    let _ = rival.join();

    let registry_counter =
        prometheus::IntCounter::new("bench_total", "bench").expect("a valid metric name");
    per_record(c, "peer: prometheus IntCounter::inc", |_| {
        registry_counter.inc();
    });
    let registry_histogram =
        prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("bench_seconds", "bench"))
            .expect("a valid metric name");
    per_record(c, "peer: prometheus Histogram::observe", |v| {
        registry_histogram.observe((1_000 + (v & 0xF_FFFF)) as f64 * 1e-9);
    });
    println!(
        "(HDR record: {} values recorded into one shard-local histogram)",
        telemetry
            .histogram(Timing::Process, 0)
            .map_or(0, hdrhistogram::Histogram::len)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = recording
}
criterion_main!(benches);
