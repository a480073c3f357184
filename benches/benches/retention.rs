//! Memory under a steady flow with retention, for docs/STATE.md: a store of
//! order-sized records (`Store::with_retention`, the mechanism the Order
//! stage's store uses) fed a steady flow of orders (each created, finished a
//! little later in event time, evicted once the retention has passed, a
//! commit every 1 000 events writing the dirty keys and tombstones), with the
//! process's resident memory sampled as it goes. Once the retention is
//! reached, live entries and resident memory stay flat.
//!
//! Prints a table and writes an SVG plot (resident MiB and live entries by
//! event time) to `TRADEFLOW_RETENTION_PLOT` (default
//! `target/retention-rss.svg`).
//! Run: `cargo bench -p tradeflow-benches --bench retention`
//! (`TRADEFLOW_RETENTION_ORDERS`: orders in the run, default 6 000 000;
//! `TRADEFLOW_RETENTION_MS`: the retention, default 5 000 ms of event time at
//! 100 orders per ms, so about 500 000 finished orders are kept).

use std::time::Instant;

use engine::store::{ChangelogStore, Store, StoreValue};
use plotters::prelude::*;

/// About the size of the Order stage's `OrderRecord` in memory.
#[derive(Clone, Copy)]
struct OrderSized {
    /// Event time of the outcome (ms), 0 while open.
    finished_at_ms: i64,
    rest: [u64; 31],
}

impl StoreValue for OrderSized {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.finished_at_ms.to_le_bytes());
        out.extend_from_slice(&self.rest[0].to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let at = bytes
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("short")?;
        Ok(OrderSized {
            finished_at_ms: i64::from_le_bytes(at),
            rest: [0; 31],
        })
    }
}

fn finished_at(value: &OrderSized) -> Option<i64> {
    (value.finished_at_ms > 0).then_some(value.finished_at_ms)
}

/// Resident set size of this process, bytes (Linux `/proc/self/statm`).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Orders created per ms of event time.
const ORDERS_PER_MS: u64 = 100;
/// An order's outcome comes this long (event time) after its create.
const OUTCOME_AFTER_MS: i64 = 50;
/// Events between two commits.
const COMMIT_EVERY_EVENTS: u64 = 1_000;
/// Queued orders one event may look at for eviction (as the Order stage).
const EVICTIONS_PER_EVENT_MAX: usize = 4;
/// Samples over the run.
const SAMPLES: u64 = 60;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let orders: u64 = std::env::var("TRADEFLOW_RETENTION_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000_000);
    let retention_ms: i64 = std::env::var("TRADEFLOW_RETENTION_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let plot = std::env::var("TRADEFLOW_RETENTION_PLOT")
        .unwrap_or_else(|_| "target/retention-rss.svg".to_string());

    let mut store: Store<u64, OrderSized> = Store::with_retention("orders", finished_at);
    let mut changelog_records = 0u64;
    let mut tombstones = 0u64;
    let mut samples: Vec<(f64, f64, usize)> = Vec::new();
    let started = Instant::now();
    let lag = OUTCOME_AFTER_MS as u64 * ORDERS_PER_MS;
    let mut events = 0u64;
    println!("event time s | live entries | resident MiB | retention queue");
    for n in 0..orders + lag {
        let now_ms = (n / ORDERS_PER_MS) as i64 + 1;
        // A create for order n, and the outcome of the order created
        // OUTCOME_AFTER_MS earlier.
        if n < orders {
            store.insert(
                n,
                OrderSized {
                    finished_at_ms: 0,
                    rest: [n; 31],
                },
            );
        }
        if let Some(done) = n.checked_sub(lag) {
            if let Some(order) = store.get_mut(&done) {
                order.finished_at_ms = now_ms;
            }
        }
        store.evict_finished(now_ms - retention_ms, EVICTIONS_PER_EVENT_MAX);
        events += 1;
        if events % COMMIT_EVERY_EVENTS == 0 {
            store.write_dirty(&mut |_, v| {
                changelog_records += 1;
                tombstones += u64::from(v.is_none());
            });
        }
        if n % ((orders + lag) / SAMPLES).max(1) == 0 {
            let rss = resident_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
            let t = now_ms as f64 / 1000.0;
            println!(
                "{t:12.1} | {:12} | {rss:12.1} | {}",
                store.len(),
                store.retention_queue_len()
            );
            samples.push((t, rss, store.len()));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let steady: Vec<_> = samples
        .iter()
        .filter(|(t, _, _)| *t * 1000.0 > (retention_ms + 2 * OUTCOME_AFTER_MS) as f64 * 1.5)
        .collect();
    let (low, high) = steady
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), (_, rss, _)| {
            (lo.min(*rss), hi.max(*rss))
        });
    println!(
        "retention: {orders} orders in {elapsed:.1} s ({:.0} events/s), retention {retention_ms} ms \
         of event time; {changelog_records} changelog records ({tombstones} tombstones); \
         {} live at the end; resident memory once retention is reached: {low:.1}-{high:.1} MiB \
         over {} samples",
        events as f64 / elapsed,
        store.len(),
        steady.len()
    );

    if let Some(parent) = std::path::Path::new(&plot).parent() {
        std::fs::create_dir_all(parent)?;
    }
    let root = SVGBackend::new(&plot, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = samples.last().map_or(1.0, |s| s.0);
    let rss_max = samples.iter().map(|s| s.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Store with retention {retention_ms} ms: resident memory and live entries"),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rss_max)?
        .set_secondary_coord(
            0.0..t_max,
            0.0..(samples.iter().map(|s| s.2).max().unwrap_or(1) as f64 * 1.15),
        );
    chart
        .configure_mesh()
        .x_desc("event time (s)")
        .y_desc("resident MiB")
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("live entries")
        .draw()?;
    chart
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.0, s.1)), &RED))?
        .label("resident MiB")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().map(|s| (s.0, s.2 as f64)),
            &BLUE,
        ))?
        .label("live entries")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    println!("retention: plot written to {plot}");
    Ok(())
}
