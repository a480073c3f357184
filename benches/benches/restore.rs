//! State size and restore speed, for docs/STATE.md: bytes of memory per store
//! entry (counted by a global allocator), and how fast a shard restores 1 M keys
//! from a real changelog topic (keys/s, MB/s).
//!
//! Needs a broker: `scripts/kafka up`, or TRADEFLOW_BOOTSTRAP. Without one it
//! prints how to start one and measures memory only.
//! Run: `cargo bench -p tradeflow-benches --bench restore` (TRADEFLOW_RESTORE_KEYS
//! changes the key count; TRADEFLOW_RESTORE_RESERVE=0 restores without sizing
//! the store first).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, RdKafkaPort, TopicSpec};
use engine::port::KafkaPort;
use engine::store::{ChangelogStore, Store, StoreValue};
use engine::PartitionId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A payment-sized value: 16 bytes (cash and reserved, say).
#[derive(Clone, Copy)]
struct Balance {
    cash: i64,
    reserved: i64,
}

impl StoreValue for Balance {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cash.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let cash = bytes
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("short")?;
        let reserved = bytes
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .ok_or("short")?;
        Ok(Balance {
            cash: i64::from_le_bytes(cash),
            reserved: i64::from_le_bytes(reserved),
        })
    }
}

/// User and system CPU seconds of this process so far, all threads
/// (Linux `/proc/self/stat`, in clock ticks of 10 ms).
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn memory_per_entry(keys: u64) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut store: Store<u64, Balance> = Store::new("balances");
    for k in 0..keys {
        store.insert(
            k,
            Balance {
                cash: k as i64,
                reserved: 0,
            },
        );
    }
    // Forget the dirty list as a commit would, so only the map remains.
    store.write_dirty(&mut |_, _| {});
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let per_entry = (after - before) as f64 / keys as f64;
    println!(
        "memory: {keys} entries of Store<u64, 16-byte value> use {:.1} MiB, {per_entry:.1} bytes/entry \
         (payload 24 bytes, hashbrown control bytes and spare capacity)",
        (after - before) as f64 / (1 << 20) as f64
    );
    drop(store);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let keys: u64 = std::env::var("TRADEFLOW_RESTORE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    memory_per_entry(keys);

    let bootstrap =
        std::env::var("TRADEFLOW_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".to_string());
    let settings = KafkaSettings {
        bootstrap: bootstrap.clone(),
        application_id: format!("restore-bench-{}", std::process::id()),
        guarantee: Guarantee::AtLeastOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 5,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let topic = format!("{}-balances-changelog", settings.application_id);
    if let Err(e) = ensure_topics(&settings, &[TopicSpec::changelog(&topic, 1, 1)]) {
        println!("restore: no broker at {bootstrap} ({e}); start one with scripts/kafka up");
        return Ok(());
    }

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let written = Instant::now();
    let mut value = Vec::with_capacity(16);
    for k in 0..keys {
        value.clear();
        Balance {
            cash: k as i64,
            reserved: 1,
        }
        .encode(&mut value);
        let key = k.to_be_bytes();
        let mut record = BaseRecord::to(&topic)
            .partition(0)
            .key(&key[..])
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    // Not `flush`: rdkafka 0.39's polls in 100 ms slices. The producer's own
    // thread serves the delivery reports; wait for them to be in.
    let started = Instant::now();
    while producer.in_flight_count() > 0 {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("records still unacknowledged after 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "restore: wrote {keys} changelog records in {:?}",
        written.elapsed()
    );

    let mut port = RdKafkaPort::new(&settings, &[], &Ownership::Static(Vec::new()), "unused")?;
    let mut store: Store<u64, Balance> = Store::new("balances");
    let started = Instant::now();
    let cpu_before = process_cpu_s();
    // As the shard does: size the store from the changelog's extent first
    // (TRADEFLOW_RESTORE_RESERVE=0 leaves it to grow, for comparison).
    let reserve = std::env::var("TRADEFLOW_RESTORE_RESERVE").as_deref() != Ok("0");
    if reserve {
        if let Some(records) = port.changelog_records(&topic, PartitionId(0))? {
            store.reserve(usize::try_from(records)?);
        }
    }
    let stats = port.restore(&topic, PartitionId(0), &mut |k, v| store.apply(k, v))?;
    store.restored();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    println!(
        "restore: {} records ({:.1} MB of keys and values) into {} entries in {elapsed:.2} s: \
         {:.0} keys/s, {:.1} MB/s",
        stats.records,
        stats.bytes as f64 / 1e6,
        store.len(),
        stats.records as f64 / elapsed,
        stats.bytes as f64 / 1e6 / elapsed
    );
    if let Some(cpu) = cpu {
        println!(
            "restore: {cpu:.2} s of CPU in this process (all threads, librdkafka's included; \
             not the broker's): {:.0} keys per CPU-second",
            stats.records as f64 / cpu.max(0.01)
        );
    }
    port.close();
    Ok(())
}
