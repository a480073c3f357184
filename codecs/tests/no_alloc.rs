//! Proves the hot path allocates nothing: decode-and-read of every field of
//! every event kind, and steady-state encoding, run under a counting global
//! allocator. Its own test binary, because a global allocator is per binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use codecs::testing::{read_every_field, sample_events};
use codecs::{decode, Encoder, EventRef, EventSchema};

struct CountingAllocator;

thread_local! {
    // Counted per thread, so tests running in parallel and the harness's own
    // threads cannot add to the count being measured. Const initializers and
    // no destructor keep the thread-locals themselves allocation-free.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call unchanged to the system allocator; counting
// touches only const thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn the_counter_sees_allocations() {
    // Without this, a broken counter would make the zero-allocation tests pass.
    let (count, v) = allocations_during(|| vec![1u8; 64]);
    assert!(count >= 1, "counting allocator missed a Vec allocation");
    drop(v);
}

#[test]
fn decode_and_read_every_field_allocates_nothing() {
    let mut frames: Vec<Vec<u8>> = sample_events()
        .iter()
        .map(|e| codecs::encode_to_vec(e).expect("sample events encode"))
        .collect();
    // Also the v1 form of order.created, read through the same accessors.
    let created = sample_events()
        .into_iter()
        .find_map(|e| match e {
            codecs::Event::OrderCreated(mut o) => {
                o.time_in_force = codecs::TimeInForce::Gtc;
                o.tag = codecs::Tag::EMPTY;
                Some(codecs::Event::OrderCreated(o))
            }
            _ => None,
        })
        .expect("samples hold an order.created");
    let mut encoder = Encoder::new();
    frames.push(
        encoder
            .encode_as(&created, EventSchema::OrderCreatedV1)
            .expect("GTC untagged order fits v1")
            .to_vec(),
    );

    let (count, checksum) = allocations_during(|| {
        let mut checksum = 0u64;
        for frame in &frames {
            let event = decode(frame).expect("valid frame");
            checksum ^= read_every_field(event);
            checksum ^= event.event_id().0 as u64 ^ event.order_id().0;
            checksum ^= event.created_at_ns().0 ^ event.causation_id().0 as u64;
            checksum ^= event.account().map_or(0, |a| a.0);
            checksum ^= event.sku().map_or(0, |s| s.as_str().len() as u64);
            if let EventRef::OrderCreated(order) = event {
                checksum ^= order.client_order_id().as_str().len() as u64;
                checksum ^= order.header().created_at_ns().0;
            }
        }
        checksum
    });
    assert_eq!(count, 0, "decoding and reading allocated {count} times");
    assert_ne!(checksum, 0);
    assert_eq!(frames.len(), 11, "one frame per schema");
}

#[test]
fn rejecting_bad_frames_allocates_nothing() {
    let good = codecs::encode_to_vec(&sample_events()[2]).expect("sample encodes");
    let mut corrupt = good.clone();
    // The time_in_force tag byte of order.created v2 (see the golden test).
    let last = corrupt.len() - 17;
    corrupt[last] = 0xff;
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 0],
        vec![1; 10],
        vec![0, 0, 0, 0, 99, 1, 2],
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), &[0]].concat(),
        vec![0; 300],
        corrupt,
    ];
    let (count, rejected) =
        allocations_during(|| bad.iter().filter(|f| decode(f).is_err()).count());
    assert_eq!(rejected, bad.len(), "every bad frame is rejected");
    assert_eq!(count, 0, "rejecting allocated {count} times");
}

#[test]
fn steady_state_encoding_allocates_nothing() {
    let events = sample_events();
    let mut encoder = Encoder::new();
    let (count, total) = allocations_during(|| {
        let mut total = 0usize;
        for _ in 0..3 {
            for event in &events {
                total += encoder.encode(event).expect("sample encodes").len();
            }
        }
        total
    });
    assert_eq!(count, 0, "encoding allocated {count} times");
    assert!(total > 0);
}
