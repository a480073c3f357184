//! Decode-and-read time per event: rkyv validated in place (our wire form)
//! against serde_json (our edge form), bincode (a compact serde peer) and Avro
//! (`codecs::avro`, the Schema Registry form, schemas parsed once), on the
//! same ten events, one of each kind. Every field is read in all three,
//! and the three checksums must agree, so no decoder is measured skipping work.
//!
//! After criterion's groups, a plain timed loop prints ns/event and the ratios
//! (criterion reports each codec alone, not how they compare). On this shared
//! 2-core machine raw times wander; the ratios, measured in one run, are the
//! figures to quote.

use std::hint::black_box;
use std::time::{Duration, Instant};

use codecs::avro::{latest_value_schema, PreparedSchema};
use codecs::testing::{read_every_field, read_every_owned_field, sample_events};
use codecs::{
    decode, AccountFunded, Encoder, Event, OrderAmended, OrderCancelled, OrderCreated,
    PaymentCompleted, PaymentFailed, PaymentRefunded, StockRejected, StockReplenished,
    StockUpdated,
};
use criterion::{criterion_group, Criterion, Throughput};
use serde::{Deserialize, Serialize};

/// bincode cannot read internally tagged enums (it has no `deserialize_any`),
/// so it gets serde's default externally tagged shape around the same structs.
#[derive(Serialize, Deserialize)]
enum BinEvent {
    OrderCreated(OrderCreated),
    OrderAmended(OrderAmended),
    OrderCancelled(OrderCancelled),
    PaymentCompleted(PaymentCompleted),
    PaymentFailed(PaymentFailed),
    PaymentRefunded(PaymentRefunded),
    StockUpdated(StockUpdated),
    StockRejected(StockRejected),
    AccountFunded(AccountFunded),
    StockReplenished(StockReplenished),
}

impl From<Event> for BinEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::OrderCreated(e) => BinEvent::OrderCreated(e),
            Event::OrderAmended(e) => BinEvent::OrderAmended(e),
            Event::OrderCancelled(e) => BinEvent::OrderCancelled(e),
            Event::PaymentCompleted(e) => BinEvent::PaymentCompleted(e),
            Event::PaymentFailed(e) => BinEvent::PaymentFailed(e),
            Event::PaymentRefunded(e) => BinEvent::PaymentRefunded(e),
            Event::StockUpdated(e) => BinEvent::StockUpdated(e),
            Event::StockRejected(e) => BinEvent::StockRejected(e),
            Event::AccountFunded(e) => BinEvent::AccountFunded(e),
            Event::StockReplenished(e) => BinEvent::StockReplenished(e),
        }
    }
}

impl From<BinEvent> for Event {
    fn from(e: BinEvent) -> Self {
        match e {
            BinEvent::OrderCreated(e) => Event::OrderCreated(e),
            BinEvent::OrderAmended(e) => Event::OrderAmended(e),
            BinEvent::OrderCancelled(e) => Event::OrderCancelled(e),
            BinEvent::PaymentCompleted(e) => Event::PaymentCompleted(e),
            BinEvent::PaymentFailed(e) => Event::PaymentFailed(e),
            BinEvent::PaymentRefunded(e) => Event::PaymentRefunded(e),
            BinEvent::StockUpdated(e) => Event::StockUpdated(e),
            BinEvent::StockRejected(e) => Event::StockRejected(e),
            BinEvent::AccountFunded(e) => Event::AccountFunded(e),
            BinEvent::StockReplenished(e) => Event::StockReplenished(e),
        }
    }
}

/// The same events in each codec's bytes.
struct Corpus {
    events: Vec<Event>,
    rkyv: Vec<Vec<u8>>,
    json: Vec<Vec<u8>>,
    bincode: Vec<Vec<u8>>,
    /// Each event's Avro datum with its topic's prepared value schema.
    avro: Vec<(PreparedSchema, Vec<u8>)>,
}

fn avro_schema(event: &Event) -> PreparedSchema {
    let topic = codecs::topics::topic_of(event.kind());
    let schema = latest_value_schema(topic).expect("every topic has an Avro schema");
    PreparedSchema::new(schema).expect("generated schemas parse")
}

fn corpus() -> Corpus {
    let events = sample_events();
    let rkyv = events
        .iter()
        .map(|e| codecs::encode_to_vec(e).expect("sample events encode"))
        .collect();
    let json = events
        .iter()
        .map(|e| e.to_json().expect("sample events serialize").into_bytes())
        .collect();
    let bincode = events
        .iter()
        .map(|e| {
            bincode::serde::encode_to_vec(BinEvent::from(*e), bincode::config::standard())
                .expect("sample events serialize")
        })
        .collect();
    let avro = events
        .iter()
        .map(|e| {
            let schema = avro_schema(e);
            let datum = schema.encode(e).expect("sample events fit Avro");
            (schema, datum)
        })
        .collect();
    Corpus {
        events,
        rkyv,
        json,
        bincode,
        avro,
    }
}

fn read_rkyv(frames: &[Vec<u8>]) -> u64 {
    frames.iter().fold(0, |sum, frame| {
        sum ^ read_every_field(decode(black_box(frame)).expect("valid frame"))
    })
}

fn read_json(texts: &[Vec<u8>]) -> u64 {
    texts.iter().fold(0, |sum, text| {
        let event: Event = serde_json::from_slice(black_box(text)).expect("valid JSON");
        sum ^ read_every_owned_field(&event)
    })
}

fn read_bincode(blobs: &[Vec<u8>]) -> u64 {
    blobs.iter().fold(0, |sum, blob| {
        let (event, _): (BinEvent, usize) =
            bincode::serde::borrow_decode_from_slice(black_box(blob), bincode::config::standard())
                .expect("valid bincode");
        sum ^ read_every_owned_field(&Event::from(event))
    })
}

fn read_avro(datums: &[(PreparedSchema, Vec<u8>)]) -> u64 {
    datums.iter().fold(0, |sum, (schema, datum)| {
        let event = schema.decode(black_box(datum)).expect("valid Avro");
        sum ^ read_every_owned_field(&event)
    })
}

fn decode_read(c: &mut Criterion) {
    let corpus = corpus();
    let expected = corpus
        .events
        .iter()
        .fold(0, |sum, e| sum ^ read_every_owned_field(e));
    assert_eq!(read_rkyv(&corpus.rkyv), expected);
    assert_eq!(read_json(&corpus.json), expected);
    assert_eq!(read_bincode(&corpus.bincode), expected);
    assert_eq!(read_avro(&corpus.avro), expected);

    let mut group = c.benchmark_group("decode_read");
    group.throughput(Throughput::Elements(corpus.events.len() as u64));
    group.bench_function("rkyv", |b| b.iter(|| read_rkyv(&corpus.rkyv)));
    group.bench_function("serde_json", |b| b.iter(|| read_json(&corpus.json)));
    group.bench_function("bincode", |b| b.iter(|| read_bincode(&corpus.bincode)));
    group.bench_function("avro", |b| b.iter(|| read_avro(&corpus.avro)));
    group.finish();
}

fn encode(c: &mut Criterion) {
    let corpus = corpus();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(corpus.events.len() as u64));
    let mut encoder = Encoder::new();
    group.bench_function("rkyv", |b| {
        b.iter(|| {
            corpus.events.iter().fold(0, |n, e| {
                n + encoder.encode(black_box(e)).expect("encodes").len()
            })
        })
    });
    let mut out = Vec::with_capacity(1024);
    group.bench_function("serde_json", |b| {
        b.iter(|| {
            corpus.events.iter().fold(0, |n, e| {
                out.clear();
                serde_json::to_writer(&mut out, black_box(e)).expect("serializes");
                n + out.len()
            })
        })
    });
    let mut slot = [0u8; 512];
    group.bench_function("bincode", |b| {
        b.iter(|| {
            corpus.events.iter().fold(0, |n, e| {
                n + bincode::serde::encode_into_slice(
                    BinEvent::from(*black_box(e)),
                    &mut slot,
                    bincode::config::standard(),
                )
                .expect("fits")
            })
        })
    });
    group.bench_function("avro", |b| {
        b.iter(|| {
            corpus
                .events
                .iter()
                .zip(&corpus.avro)
                .fold(0, |n, (e, (schema, _))| {
                    n + schema.encode(black_box(e)).expect("encodes").len()
                })
        })
    });
    group.finish();
}

criterion_group!(benches, decode_read, encode);

/// Mean ns per event of `read` over the corpus, after a warm-up.
fn ns_per_event(events: usize, budget: Duration, mut read: impl FnMut() -> u64) -> f64 {
    let warm_until = Instant::now() + budget / 4;
    while Instant::now() < warm_until {
        black_box(read());
    }
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            black_box(read());
        }
        rounds += 64;
    }
    start.elapsed().as_nanos() as f64 / (rounds as f64 * events as f64)
}

fn print_ratios() {
    let corpus = corpus();
    let n = corpus.events.len();
    let budget = Duration::from_millis(1_000);
    let rkyv = ns_per_event(n, budget, || read_rkyv(&corpus.rkyv));
    let json = ns_per_event(n, budget, || read_json(&corpus.json));
    let bin = ns_per_event(n, budget, || read_bincode(&corpus.bincode));
    let avro = ns_per_event(n, budget, || read_avro(&corpus.avro));
    let size = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!();
    println!("decode + read every field, mean over {n} events (one per kind), same run:");
    println!(
        "  rkyv (framed, bytecheck-validated, in place) {rkyv:8.1} ns/event  {:6.1} B/event",
        size(&corpus.rkyv)
    );
    println!(
        "  serde_json (Event, owned)                    {json:8.1} ns/event  {:6.1} B/event",
        size(&corpus.json)
    );
    println!(
        "  bincode 2 serde (owned)                      {bin:8.1} ns/event  {:6.1} B/event",
        size(&corpus.bincode)
    );
    let avro_bytes = corpus.avro.iter().map(|(_, d)| d.len() + 5).sum::<usize>() as f64 / n as f64;
    println!(
        "  Avro (framed, prepared schema, owned)        {avro:8.1} ns/event  {avro_bytes:6.1} B/event"
    );
    println!("  ratio serde_json / rkyv = {:.1}x", json / rkyv);
    println!("  ratio Avro / rkyv       = {:.1}x", avro / rkyv);
    println!("  ratio bincode / rkyv    = {:.1}x", bin / rkyv);
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary without `--bench`: a smoke run of
    // each benchmark is enough there, not a second of timing per codec.
    if std::env::args().any(|a| a == "--bench") {
        print_ratios();
    }
}
