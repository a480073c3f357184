//! State size and restore speed, for docs/STATE.md: bytes of memory per store
//! entry (counted by a global allocator), and how fast a shard restores 1 M keys
//! from a real changelog topic (keys/s, MB/s).
//!
//! Needs a broker: `scripts/kafka up`, or TRADEFLOW_BOOTSTRAP. Without one it
//! prints how to start one and measures memory only.
//! The restore runs in both changelog layouts (`[state] changelog_layout`):
//! two stores of one partition, the keys split evenly between them, each in
//! its own changelog topic (per-store) or both in one shared topic whose
//! keys carry the store's name (shared), restored as the shard restores
//! them (sized from the extent first, then each record applied in place;
//! shared: routed to its store by the key's prefix).
//!
//! Run: `cargo bench -p tradeflow-benches --bench restore` (TRADEFLOW_RESTORE_KEYS
//! changes the key count; TRADEFLOW_RESTORE_RESERVE=0 restores without sizing
//! the stores first; TRADEFLOW_RESTORE_LAYOUT=per-store or shared runs one
//! layout only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::changelog::{ChangelogLayout, Changelogs};
use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, RdKafkaPort, TopicSpec};
use engine::port::KafkaPort;
use engine::store::{ChangelogStore, PartitionStores, Store, StoreValue};
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

/// One partition's state: two stores of payment-sized values.
struct Books {
    balances: Store<u64, Balance>,
    holds: Store<u64, Balance>,
}

impl Default for Books {
    fn default() -> Self {
        Books {
            balances: Store::new("balances"),
            holds: Store::new("holds"),
        }
    }
}

impl PartitionStores for Books {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.balances);
        f(&mut self.holds);
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
    let layouts: Vec<ChangelogLayout> = match std::env::var("TRADEFLOW_RESTORE_LAYOUT") {
        Ok(layout) => vec![ChangelogLayout::parse(&layout)
            .ok_or("TRADEFLOW_RESTORE_LAYOUT must be per-store or shared")?],
        Err(_) => vec![ChangelogLayout::PerStore, ChangelogLayout::Shared],
    };
    for layout in layouts {
        if !restore(&bootstrap, keys, layout)? {
            break;
        }
    }
    Ok(())
}

/// Writes `keys` changelog records (half per store) in `layout`, then
/// restores them as a shard does and prints the figures. `false`: no broker.
fn restore(
    bootstrap: &str,
    keys: u64,
    layout: ChangelogLayout,
) -> Result<bool, Box<dyn std::error::Error>> {
    let settings = KafkaSettings {
        bootstrap: bootstrap.to_string(),
        application_id: format!("restore-bench-{}-{layout}", std::process::id()),
        guarantee: Guarantee::AtLeastOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 5,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    };
    let changelogs = Changelogs::new(layout, &settings.application_id, Books::store_names());
    let specs: Vec<TopicSpec> = changelogs
        .topics()
        .iter()
        .map(|topic| TopicSpec::changelog(topic, 1, 1))
        .collect();
    if let Err(e) = ensure_topics(&settings, &specs) {
        println!("restore: no broker at {bootstrap} ({e}); start one with scripts/kafka up");
        return Ok(false);
    }

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        // As the shards' producers write changelogs: uncompressed (librdkafka's
        // default). Until 2026-12-06 this wrote LZ4, about half the bytes to
        // fetch, and so measured a faster restore than a real changelog gets.
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let written = Instant::now();
    let mut value = Vec::with_capacity(16);
    let mut key_buffer = Vec::with_capacity(32);
    for k in 0..keys {
        value.clear();
        Balance {
            cash: k as i64,
            reserved: 1,
        }
        .encode(&mut value);
        let store = (k % 2) as usize;
        let topic = &changelogs.topics()[changelogs.topic_of(store)];
        let key = k.to_be_bytes();
        let key = changelogs.write_key(store, &key, &mut key_buffer);
        let mut record = BaseRecord::to(topic)
            .partition(0)
            .key(key)
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
        "restore ({layout}): wrote {keys} changelog records to {} topic(s) in {:?}",
        changelogs.topics().len(),
        written.elapsed()
    );

    let mut port = RdKafkaPort::new(&settings, &[], &Ownership::Static(Vec::new()), "unused")?;
    let mut books = Books::default();
    let started = Instant::now();
    let cpu_before = process_cpu_s();
    // As the shard does: size the stores from the changelogs' extent first
    // (TRADEFLOW_RESTORE_RESERVE=0 leaves them to grow, for comparison);
    // a shared changelog's records are shared evenly among the stores.
    let reserve = std::env::var("TRADEFLOW_RESTORE_RESERVE").as_deref() != Ok("0");
    let stores = changelogs.stores().len() as u64;
    let mut records = 0;
    let mut bytes = 0;
    for (index, topic) in changelogs.topics().iter().enumerate() {
        if reserve {
            if let Some(extent) = port.changelog_records(topic, PartitionId(0))? {
                let share = match layout {
                    ChangelogLayout::PerStore => extent,
                    ChangelogLayout::Shared => extent / stores,
                };
                let share = usize::try_from(share)?;
                match layout {
                    ChangelogLayout::PerStore if index == 0 => books.balances.reserve(share),
                    ChangelogLayout::PerStore => books.holds.reserve(share),
                    ChangelogLayout::Shared => {
                        books.for_each_store(&mut |store| store.reserve(share));
                    }
                }
            }
        }
        let stats = match layout {
            // Straight into the topic's store, as the shard does.
            ChangelogLayout::PerStore => {
                let store: &mut dyn ChangelogStore = if index == 0 {
                    &mut books.balances
                } else {
                    &mut books.holds
                };
                port.restore(topic, PartitionId(0), &mut |k, v| store.apply(k, v))?
            }
            ChangelogLayout::Shared => port.restore(topic, PartitionId(0), &mut |k, v| {
                let (store, key) = changelogs.route(index, k)?;
                books.apply_to(store, key, v)
            })?,
        };
        records += stats.records;
        bytes += stats.bytes;
    }
    books.for_each_store(&mut |store| store.restored());
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_s()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let entries = books.balances.len() + books.holds.len();
    println!(
        "restore ({layout}): {records} records ({:.1} MB of keys and values) into {entries} entries \
         of 2 stores in {elapsed:.2} s: {:.0} keys/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed
    );
    if entries as u64 != keys {
        return Err(format!("restored {entries} entries of {keys} keys").into());
    }
    if let Some(cpu) = cpu {
        println!(
            "restore ({layout}): {cpu:.2} s of CPU in this process (all threads, librdkafka's \
             included; not the broker's): {:.0} keys per CPU-second",
            records as f64 / cpu.max(0.01)
        );
    }
    port.close();
    Ok(true)
}
