//! Telemetry: what a shard measures about itself, and how those measurements
//! leave its core without the hot path ever touching shared memory.
//!
//! Owns: the shard-local recorder ([`ShardTelemetry`]: a tick clock, plain
//! counters and one HdrHistogram per [`Timing`], written only by the owning
//! shard's thread, with no atomics and no allocation per record); the report a
//! shard publishes about once a second ([`ShardReport`]: counter deltas,
//! interval histograms swapped out for empty spares, consumer lag, store
//! sizes); the per-shard live gauges other threads read ([`ShardGauges`]:
//! status, restore progress, readiness; atomics with one writer each); and the
//! hub thread that merges reports off the hot path into a [`MetricsSnapshot`]
//! ([`Telemetry`] is the handle that asks it).
//! Must never: take a lock, let two shards write one recorder or one gauge,
//! block a shard on a slow reader (a full report queue leaves the data on the
//! shard for the next try), or know about Prometheus or HTTP: `services`
//! renders snapshots.
//!
//! Lives on: recorders on their shard's core; the hub on its own unpinned
//! thread; gauges are written on the shard's core and read anywhere.
//!
//! # Why not a metrics registry on the hot path
//! Kafka Streams removed its latency-percentile metrics because they kept
//! samples and leaked memory. An HdrHistogram has a fixed size set at start-up
//! and records in a few nanoseconds; keeping one per shard, never shared, and
//! moving whole histograms to the hub between intervals (as the loadgen's
//! interval recorder does) gives exact percentiles with bounded memory and no
//! contended cache line on the per-record path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use hdrhistogram::Histogram;

use crate::ids::{Offset, PartitionId, ShardId};
use crate::shard::ShardStats;
use crate::stage::ErrorClass;
use crate::standby::StandbyLag;

/// Longest duration a histogram resolves (one hour); longer ones saturate.
/// Restores of large changelogs are the longest thing measured.
pub const TIMING_NS_MAX: u64 = 3_600_000_000_000;
/// Significant decimal digits of every histogram (0.1 % resolution).
pub const HISTOGRAM_SIGFIG: u8 = 3;
/// How often a shard publishes a report to the hub.
pub const PUBLISH_INTERVAL_MS: u64 = 1_000;
/// Reports waiting for the hub, across all shards, before a shard keeps its
/// data for its next publish instead.
pub const REPORT_QUEUE_DEPTH: usize = 64;
/// Emptied histograms the hub hands back to one shard for reuse.
pub const SPARE_HISTOGRAMS_MAX: usize = 2 * Timing::COUNT;
/// How long a stopping shard waits for room to publish its final report.
pub const FINAL_REPORT_TIMEOUT_MS: u64 = 1_000;
/// One record in this many has its processing and send timed.
///
/// Reading the TSC costs ~13 ns on a KVM guest, more than everything else a
/// recording does; timing every record took three reads (~25 % of the
/// engine-only path, ~5 % of a record's time through Kafka). A 1-in-8 sample
/// keeps percentiles honest at any volume that has tails worth reading (a
/// p99.99 needs 80 000 records for 10 samples above it), while end-to-end
/// latency is still recorded for every record, against a clock read at most
/// seven records ago (microseconds; end-to-end latencies are hundreds of
/// them) and re-read after every idle poll and commit.
pub const RECORD_TIMING_SAMPLE_EVERY: u64 = 8;
const _: () = assert!(
    RECORD_TIMING_SAMPLE_EVERY.is_power_of_two(),
    "sampling tests a mask, not a division"
);

/// What a shard times, each into its own histogram, in nanoseconds. The
/// per-record timings (`Process`, `EndToEnd`) keep one histogram per input
/// topic: each input topic is one hop of the flow (`order.created` at
/// Payment, `payment.completed` at Inventory, ...), so they show where along
/// the flow time goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timing {
    /// One record: in-place decode, the stage's logic and encoding its
    /// outputs into the outbox. Per input topic.
    Process,
    /// One hand-over of the outbox to the producer: per record under
    /// exactly-once, per commit under at-least-once (outputs wait for it).
    Send,
    /// From the creation of the event that started a flow (`created_at_ns`,
    /// which every output inherits from its cause) to this stage processing a
    /// record of that flow: end-to-end latency up to this stage. Per input
    /// topic.
    EndToEnd,
    /// One commit: held outputs, changelog writes, then offsets (and the
    /// transaction's commit under exactly-once).
    Commit,
    /// Restoring one partition's stores from their changelogs.
    Restore,
}

impl Timing {
    pub const COUNT: usize = 5;
    pub const ALL: [Timing; Timing::COUNT] = [
        Timing::Process,
        Timing::Send,
        Timing::EndToEnd,
        Timing::Commit,
        Timing::Restore,
    ];

    /// A stable snake_case name, for labels and report files.
    pub const fn name(self) -> &'static str {
        match self {
            Timing::Process => "process",
            Timing::Send => "send",
            Timing::EndToEnd => "end_to_end",
            Timing::Commit => "commit",
            Timing::Restore => "restore",
        }
    }

    /// Whether this timing keeps one histogram per input topic.
    pub const fn per_input(self) -> bool {
        matches!(self, Timing::Process | Timing::EndToEnd)
    }
}

/// Which histogram: a timing, and for per-record timings the input topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimingKey {
    pub timing: Timing,
    pub input: Option<&'static str>,
}

/// Slots of the per-shard timings; per-input ones follow, two per input.
const SLOT_SEND: usize = 0;
const SLOT_COMMIT: usize = 1;
const SLOT_RESTORE: usize = 2;
const SLOTS_PER_SHARD: usize = 3;

/// The histogram slot of `timing` (for `input`, when it is per input).
#[inline]
fn slot(timing: Timing, input: usize) -> usize {
    match timing {
        Timing::Send => SLOT_SEND,
        Timing::Commit => SLOT_COMMIT,
        Timing::Restore => SLOT_RESTORE,
        Timing::Process => SLOTS_PER_SHARD + 2 * input,
        Timing::EndToEnd => SLOTS_PER_SHARD + 2 * input + 1,
    }
}

/// The key of every slot of a recorder reading `inputs`, in slot order.
fn slot_keys(inputs: &[&'static str]) -> Vec<TimingKey> {
    let mut keys = vec![
        TimingKey {
            timing: Timing::Send,
            input: None,
        },
        TimingKey {
            timing: Timing::Commit,
            input: None,
        },
        TimingKey {
            timing: Timing::Restore,
            input: None,
        },
    ];
    for input in inputs {
        for timing in [Timing::Process, Timing::EndToEnd] {
            keys.push(TimingKey {
                timing,
                input: Some(input),
            });
        }
    }
    keys
}

/// Why a record went to a dead-letter topic: a bounded set, fit for a metric
/// label (the free-text reason stays in the record's headers).
pub const DEAD_LETTER_REASONS: [&str; 16] = [
    "missing_value",
    "empty",
    "oversize",
    "truncated_header",
    "wrong_magic",
    "unknown_framing",
    "unknown_schema",
    "truncated_payload",
    "trailing_bytes",
    "corrupt_archive",
    "ambiguous_frame",
    "unknown_schema_id",
    "unreadable_schema",
    "schema_registry_unreachable",
    "invalid_avro",
    "rejected",
];
/// The error classes a dead letter can carry, in label form.
pub const DEAD_LETTER_CLASSES: [ErrorClass; 3] = [
    ErrorClass::UserData,
    ErrorClass::External,
    ErrorClass::Internal,
];

/// Dead-letter counts by class (rows, [`DEAD_LETTER_CLASSES`] order) and
/// reason (columns, [`DEAD_LETTER_REASONS`] order).
pub type DeadLetterCounts = [[u64; DEAD_LETTER_REASONS.len()]; DEAD_LETTER_CLASSES.len()];

fn class_index(class: ErrorClass) -> usize {
    match class {
        ErrorClass::UserData => 0,
        ErrorClass::External => 1,
        ErrorClass::Internal => 2,
    }
}

/// Index of `reason` in [`DEAD_LETTER_REASONS`]; unknown codes count as
/// `rejected` so a new decode error can never grow the label set.
fn reason_index(reason: &str) -> usize {
    DEAD_LETTER_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(DEAD_LETTER_REASONS.len() - 1)
}

/// A fresh histogram with the bounds every recorder and the hub share (so any
/// two can be added).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5), so creation cannot fail.
    Histogram::new_with_bounds(1, TIMING_NS_MAX, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// The shard-local recorder. See the module doc.
pub struct ShardTelemetry {
    clock: quanta::Clock,
    /// Wall-clock nanoseconds at `base_ticks`, so a record's end-to-end
    /// latency needs a tick read, not a system call.
    base_wall_ns: u64,
    base_ticks: u64,
    /// Records seen, for sampling; the sample mask (`every - 1`).
    sequence: u64,
    sample_mask: u64,
    /// The last clock reading, and whether time may have passed since (an
    /// idle poll, a commit) so the next record must read the clock again.
    now: u64,
    clock_stale: bool,
    /// One histogram per slot (see `slot`), keyed by `keys`.
    histograms: Vec<Histogram<u64>>,
    keys: Vec<TimingKey>,
    dead_letters: DeadLetterCounts,
    published_stats: ShardStats,
    published_dead_letters: DeadLetterCounts,
    spares: Option<Receiver<Histogram<u64>>>,
}

impl ShardTelemetry {
    /// A recorder for a stage reading `inputs` (its input topics, in
    /// `Stage::input_topics` order; per-record timings are kept per input).
    pub fn new(inputs: &[&'static str]) -> Self {
        let clock = quanta::Clock::new();
        let keys = slot_keys(inputs);
        let mut telemetry = ShardTelemetry {
            clock,
            base_wall_ns: 0,
            base_ticks: 0,
            sequence: 0,
            sample_mask: RECORD_TIMING_SAMPLE_EVERY - 1,
            now: 0,
            clock_stale: true,
            histograms: keys.iter().map(|_| new_histogram()).collect(),
            keys,
            dead_letters: [[0; DEAD_LETTER_REASONS.len()]; DEAD_LETTER_CLASSES.len()],
            published_stats: ShardStats::default(),
            published_dead_letters: [[0; DEAD_LETTER_REASONS.len()]; DEAD_LETTER_CLASSES.len()],
            spares: None,
        };
        telemetry.rebase_wall_clock();
        telemetry
    }

    /// Reuses the histograms the hub empties (see [`Telemetry`]).
    pub fn with_spares(mut self, spares: Receiver<Histogram<u64>>) -> Self {
        self.set_spares(spares);
        self
    }

    pub fn set_spares(&mut self, spares: Receiver<Histogram<u64>>) {
        self.spares = Some(spares);
    }

    /// Times one record in `every` (rounded up to a power of two; 1: all).
    pub fn sample_every(&mut self, every: u64) {
        self.sample_mask = every.max(1).next_power_of_two() - 1;
    }

    /// Called as a record starts: reads the clock when the record is sampled
    /// or the last reading is stale, and returns the start tick if the record
    /// is to be timed.
    #[inline]
    pub fn start_record(&mut self) -> Option<u64> {
        self.sequence = self.sequence.wrapping_add(1);
        let sampled = self.sequence & self.sample_mask == 0;
        if sampled || self.clock_stale {
            self.now = self.clock.raw();
            self.clock_stale = false;
        }
        sampled.then_some(self.now)
    }

    /// Time may have passed (idle, commit): the next record re-reads the clock.
    #[inline]
    pub fn clock_went_stale(&mut self) {
        self.clock_stale = true;
    }

    /// Re-reads the wall clock, so tick-derived wall time cannot drift far
    /// (done at each publish).
    fn rebase_wall_clock(&mut self) {
        self.base_ticks = self.clock.raw();
        self.base_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }

    /// The current tick count: a few nanoseconds (the TSC where it is stable,
    /// the OS clock otherwise).
    #[inline]
    pub fn ticks(&self) -> u64 {
        self.clock.raw()
    }

    /// Nanoseconds between two [`Self::ticks`] readings.
    pub fn ticks_to_ns(&self, start: u64, end: u64) -> u64 {
        self.clock.delta_as_nanos(start, end)
    }

    /// Records the time from `start` (a [`Self::ticks`] reading) to now, and
    /// returns now so consecutive timings share one clock read. `input` is
    /// the record's input topic index for per-input timings (else ignored).
    #[inline]
    pub fn record_since(&mut self, timing: Timing, input: usize, start: u64) -> u64 {
        let now = self.clock.raw();
        self.record_ns(timing, input, self.clock.delta_as_nanos(start, now));
        now
    }

    /// Records one duration in nanoseconds (see [`Self::record_since`]).
    #[inline]
    pub fn record_ns(&mut self, timing: Timing, input: usize, ns: u64) {
        if let Some(histogram) = self.histograms.get_mut(slot(timing, input)) {
            histogram.saturating_record(ns.max(1));
        }
    }

    /// Records the end-to-end latency of a record of `input` whose flow began
    /// at `created_at_ns` (Unix nanoseconds), as of the clock reading taken by
    /// [`Self::start_record`]. Events without a creation time (0), or stamped
    /// ahead of this host's clock, are skipped rather than recorded as nonsense.
    #[inline]
    pub fn record_end_to_end(&mut self, input: usize, created_at_ns: u64) {
        if created_at_ns == 0 {
            return;
        }
        let wall_ns = self.base_wall_ns + self.clock.delta_as_nanos(self.base_ticks, self.now);
        if let Some(age) = wall_ns.checked_sub(created_at_ns) {
            self.record_ns(Timing::EndToEnd, input, age);
        }
    }

    /// Counts one dead letter; `reason` is a [`DEAD_LETTER_REASONS`] code.
    pub fn dead_letter(&mut self, class: ErrorClass, reason: &str) {
        self.dead_letters[class_index(class)][reason_index(reason)] += 1;
    }

    /// The histogram of one timing since the last publish (tests, benches).
    pub fn histogram(&self, timing: Timing, input: usize) -> Option<&Histogram<u64>> {
        self.histograms.get(slot(timing, input))
    }

    /// Counter deltas and interval histograms since the last publish; the
    /// recorder carries on with empty histograms. Hand the report back with
    /// [`Self::restore`] if it could not be delivered.
    pub fn take(&mut self, stats: ShardStats) -> ReportBody {
        let mut histograms = Vec::with_capacity(self.keys.len());
        for (key, live) in self.keys.iter().zip(self.histograms.iter_mut()) {
            let spare = self
                .spares
                .as_ref()
                .and_then(|s| s.try_recv().ok())
                .unwrap_or_else(new_histogram);
            histograms.push((*key, std::mem::replace(live, spare)));
        }
        let counters = stats.minus(&self.published_stats);
        let mut dead_letters = self.dead_letters;
        for (row, published) in dead_letters.iter_mut().zip(&self.published_dead_letters) {
            for (count, before) in row.iter_mut().zip(published) {
                *count -= before;
            }
        }
        self.published_stats = stats;
        self.published_dead_letters = self.dead_letters;
        self.rebase_wall_clock();
        ReportBody {
            counters,
            dead_letters,
            histograms,
        }
    }

    /// Takes back a report that could not be delivered: its counts are
    /// published again next time and its samples rejoin the live histograms.
    pub fn restore(&mut self, body: ReportBody) {
        self.published_stats = self.published_stats.minus(&body.counters);
        for (row, undelivered) in self
            .published_dead_letters
            .iter_mut()
            .zip(&body.dead_letters)
        {
            for (count, back) in row.iter_mut().zip(undelivered) {
                *count -= back;
            }
        }
        for (key, histogram) in body.histograms {
            if let Some(i) = self.keys.iter().position(|k| *k == key) {
                // Same bounds on both sides, so adding cannot fail; a failure
                // would only lose these samples.
                let _ = self.histograms[i].add(&histogram);
            }
        }
    }
}

/// The part of a report the recorder produces: deltas and interval histograms.
#[derive(Clone, Debug)]
pub struct ReportBody {
    pub counters: ShardStats,
    pub dead_letters: DeadLetterCounts,
    pub histograms: Vec<(TimingKey, Histogram<u64>)>,
}

/// Lag of one input partition, as the shard saw it at publish time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: &'static str,
    pub partition: PartitionId,
    /// The next offset the group will read: the shard's last commit, or the
    /// consumer's position before it processed anything.
    pub committed: Offset,
    /// The partition's high watermark as the client last heard it.
    pub end: Offset,
}

impl PartitionLag {
    /// Records between the committed offset and the end (never negative).
    pub fn lag(&self) -> u64 {
        (self.end.0 - self.committed.0).max(0) as u64
    }
}

/// Size of one store across the partitions a shard owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSize {
    pub store: &'static str,
    pub entries: u64,
    /// Bytes of the hash tables (keys, values and control bytes), not memory
    /// the values own on the heap.
    pub bytes: u64,
}

/// What one shard publishes: deltas since its last report, and the current
/// values of its gauges.
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub shard: ShardId,
    pub service: &'static str,
    pub body: ReportBody,
    pub lag: Vec<PartitionLag>,
    pub stores: Vec<StoreSize>,
    pub owned: Vec<PartitionId>,
    /// Producer sends retried because its queue was full (cumulative for the
    /// current clients).
    pub send_retries: u64,
}

/// A shard's lifecycle, as other threads see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ShardStatus {
    Starting = 0,
    /// Owns partitions and has restored them (or owns none yet in group mode).
    Running = 1,
    Restarting = 2,
    Stopped = 3,
    Failed = 4,
}

impl ShardStatus {
    fn from_u8(v: u8) -> ShardStatus {
        match v {
            1 => ShardStatus::Running,
            2 => ShardStatus::Restarting,
            3 => ShardStatus::Stopped,
            4 => ShardStatus::Failed,
            _ => ShardStatus::Starting,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ShardStatus::Starting => "starting",
            ShardStatus::Running => "running",
            ShardStatus::Restarting => "restarting",
            ShardStatus::Stopped => "stopped",
            ShardStatus::Failed => "failed",
        }
    }
}

/// Live facts about one shard that other threads read at any time, even while
/// the shard is blocked in a restore. Each field has one writer: the shard's
/// thread, or its supervisor while the shard is not running.
#[derive(Debug, Default)]
pub struct ShardGauges {
    status: AtomicU8,
    restarts: AtomicU32,
    /// Partitions whose stores are being restored now.
    restoring: AtomicU32,
    /// The shard has taken its first assignment since it (re)started.
    assigned: AtomicBool,
    /// The shard's loop has polled since it (re)started.
    polling: AtomicBool,
    restored_records: AtomicU64,
    restored_bytes: AtomicU64,
    /// Offsets left to read in the changelog partition being restored.
    restore_remaining: AtomicU64,
    /// Bit p set: the shard owns partition p (p < 64), so a state query for
    /// it goes to this shard first instead of asking every shard in turn.
    owned_mask: AtomicU64,
    /// The shard owns a partition numbered 64 or above (not in the mask).
    owns_high: AtomicBool,
}

impl ShardGauges {
    /// Records the partitions the shard owns now (one writer: the shard).
    pub fn set_owned(&self, partitions: impl IntoIterator<Item = i32>) {
        let (mut mask, mut high) = (0u64, false);
        for p in partitions {
            match u32::try_from(p) {
                Ok(p) if p < 64 => mask |= 1 << p,
                _ => high = true,
            }
        }
        self.owned_mask.store(mask, Ordering::Release);
        self.owns_high.store(high, Ordering::Release);
    }

    /// Whether the shard may own `partition`: false only when it certainly
    /// does not (the answer can be stale during a move; the shard itself
    /// answers the query authoritatively).
    pub fn may_own(&self, partition: i32) -> bool {
        match u32::try_from(partition) {
            Ok(p) if p < 64 => self.owned_mask.load(Ordering::Acquire) & (1 << p) != 0,
            _ => self.owns_high.load(Ordering::Acquire),
        }
    }

    pub fn status(&self) -> ShardStatus {
        ShardStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    pub fn set_status(&self, status: ShardStatus) {
        self.status.store(status as u8, Ordering::Release);
    }

    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }

    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::AcqRel);
    }

    /// A new incarnation of the shard: not ready until it assigned and polled.
    pub fn reset_readiness(&self) {
        self.assigned.store(false, Ordering::Release);
        self.polling.store(false, Ordering::Release);
        self.restoring.store(0, Ordering::Release);
        self.restore_remaining.store(0, Ordering::Release);
    }

    pub fn set_assigned(&self) {
        self.assigned.store(true, Ordering::Release);
    }

    pub fn set_polling(&self) {
        // Checked first so the steady state only reads the line.
        if !self.polling.load(Ordering::Relaxed) {
            self.polling.store(true, Ordering::Release);
        }
    }

    pub fn restore_started(&self) {
        self.restoring.fetch_add(1, Ordering::AcqRel);
    }

    pub fn restore_finished(&self) {
        self.restore_remaining.store(0, Ordering::Release);
        // Never below zero, even if a failed restore is reported twice.
        let _ = self
            .restoring
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// One changelog record applied during a restore. Single writer, so a
    /// load and a store suffice (no locked read-modify-write).
    #[inline]
    pub fn restored(&self, bytes: u64) {
        let records = self.restored_records.load(Ordering::Relaxed);
        self.restored_records.store(records + 1, Ordering::Relaxed);
        let total = self.restored_bytes.load(Ordering::Relaxed);
        self.restored_bytes.store(total + bytes, Ordering::Relaxed);
    }

    pub fn set_restore_remaining(&self, offsets: u64) {
        self.restore_remaining.store(offsets, Ordering::Relaxed);
    }

    /// A consistent-enough reading of every gauge.
    pub fn read(&self) -> ShardLive {
        let status = self.status();
        let restoring = self.restoring.load(Ordering::Acquire);
        let assigned = self.assigned.load(Ordering::Acquire);
        let polling = self.polling.load(Ordering::Acquire);
        ShardLive {
            status,
            restarts: self.restarts(),
            restoring,
            assigned,
            polling,
            restored_records: self.restored_records.load(Ordering::Relaxed),
            restored_bytes: self.restored_bytes.load(Ordering::Relaxed),
            restore_remaining: self.restore_remaining.load(Ordering::Relaxed),
            ready: status == ShardStatus::Running && restoring == 0 && assigned && polling,
        }
    }
}

/// One reading of a shard's [`ShardGauges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLive {
    pub status: ShardStatus,
    pub restarts: u32,
    pub restoring: u32,
    pub assigned: bool,
    pub polling: bool,
    pub restored_records: u64,
    pub restored_bytes: u64,
    pub restore_remaining: u64,
    /// Running, every owned partition restored, and polling.
    pub ready: bool,
}

impl ShardLive {
    /// Why the shard is not ready, or `"ready"`.
    pub fn reason(&self) -> &'static str {
        if self.ready {
            "ready"
        } else if self.restoring > 0 {
            "restoring"
        } else if self.status != ShardStatus::Running {
            self.status.name()
        } else if !self.assigned {
            "awaiting assignment"
        } else {
            "not polling yet"
        }
    }
}

/// Everything known about one shard, merged over the process's lifetime.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    pub shard: ShardId,
    /// The stage's name (`Stage::name`); empty until its first report.
    pub service: &'static str,
    pub live: ShardLive,
    /// Cumulative over every incarnation of the shard in this process.
    pub counters: ShardStats,
    pub dead_letters: DeadLetterCounts,
    pub send_retries: u64,
    /// Cumulative histograms, one per [`TimingKey`] reported so far. Shared
    /// with the hub: a snapshot costs a reference count per histogram, not a
    /// copy of ~270 KiB (the hub copies on its next merge only while a
    /// snapshot still holds one).
    pub histograms: Vec<(TimingKey, Arc<Histogram<u64>>)>,
    pub lag: Vec<PartitionLag>,
    pub stores: Vec<StoreSize>,
    pub owned: Vec<PartitionId>,
}

impl ShardMetrics {
    fn new(shard: ShardId, live: ShardLive) -> Self {
        ShardMetrics {
            shard,
            service: "",
            live,
            counters: ShardStats::default(),
            dead_letters: [[0; DEAD_LETTER_REASONS.len()]; DEAD_LETTER_CLASSES.len()],
            send_retries: 0,
            histograms: Vec::new(),
            lag: Vec::new(),
            stores: Vec::new(),
            owned: Vec::new(),
        }
    }

    /// One timing of this shard, merged over its inputs.
    pub fn histogram(&self, timing: Timing) -> Histogram<u64> {
        let mut merged = new_histogram();
        for (key, h) in &self.histograms {
            if key.timing == timing {
                // Same bounds everywhere: adding cannot fail.
                let _ = merged.add(&**h);
            }
        }
        merged
    }
}

/// Every shard of the engine, as of the last reports plus live gauges.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    pub shards: Vec<ShardMetrics>,
    /// The node's standby copies and how far each is behind its changelogs
    /// (empty without `[state] standby_replicas`).
    pub standby_lag: Vec<StandbyLag>,
}

impl MetricsSnapshot {
    /// One timing merged over every shard.
    pub fn merged(&self, timing: Timing) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let _ = merged.add(shard.histogram(timing));
        }
        merged
    }

    /// Whether every shard is ready (false for an engine with no shards).
    pub fn ready(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.live.ready)
    }
}

/// Why the hub did not answer.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the telemetry hub did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the telemetry hub has stopped")]
    Stopped,
}

enum HubRequest {
    Snapshot(Sender<MetricsSnapshot>),
    /// The standby keeper's latest measure of its copies' lag.
    StandbyLag(Vec<StandbyLag>),
}

/// Where the standby keeper sends its copies' lag: a message to the hub,
/// which keeps the latest one for its snapshots (nothing is shared).
#[derive(Clone)]
pub struct StandbyLagSink {
    requests: Sender<HubRequest>,
}

impl StandbyLagSink {
    /// Hands `lag` to the hub without waiting: if its queue is full the
    /// measure is dropped, and the next one (a second later) replaces it.
    pub fn publish(&self, lag: Vec<StandbyLag>) {
        let _ = self.requests.try_send(HubRequest::StandbyLag(lag));
    }
}

/// A cloneable handle on the engine's telemetry: live readiness straight from
/// the gauges, and merged snapshots from the hub thread. Outlives the engine,
/// so the final report of a shutdown can still be read.
#[derive(Clone)]
pub struct Telemetry {
    gauges: Vec<(ShardId, Arc<ShardGauges>)>,
    requests: Sender<HubRequest>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("shards", &self.gauges.len())
            .finish()
    }
}

/// Where shards send reports and find spare histograms; one per shard.
#[derive(Clone)]
pub struct ReportChannel {
    pub reports: Sender<ShardReport>,
    pub spares: Receiver<Histogram<u64>>,
}

impl Telemetry {
    /// Starts the hub for `gauges`' shards; returns the handle and one report
    /// channel per shard, in the same order.
    pub fn start(
        gauges: Vec<(ShardId, Arc<ShardGauges>)>,
    ) -> std::io::Result<(Telemetry, Vec<ReportChannel>)> {
        let (report_tx, report_rx) = crossbeam_channel::bounded(REPORT_QUEUE_DEPTH);
        let (request_tx, request_rx) = crossbeam_channel::bounded(16);
        let mut channels = Vec::with_capacity(gauges.len());
        let mut spare_senders = Vec::with_capacity(gauges.len());
        for (shard, _) in &gauges {
            let (spare_tx, spare_rx) = crossbeam_channel::bounded(SPARE_HISTOGRAMS_MAX);
            channels.push(ReportChannel {
                reports: report_tx.clone(),
                spares: spare_rx,
            });
            spare_senders.push((*shard, spare_tx));
        }
        drop(report_tx);
        let hub = Hub {
            shards: gauges
                .iter()
                .map(|(id, g)| (ShardMetrics::new(*id, g.read()), Arc::clone(g)))
                .collect(),
            spares: spare_senders,
            standby_lag: Vec::new(),
        };
        std::thread::Builder::new()
            .name("tradeflow-telemetry".into())
            .spawn(move || hub.run(report_rx, request_rx))?;
        Ok((
            Telemetry {
                gauges,
                requests: request_tx,
            },
            channels,
        ))
    }

    /// Every shard's live gauges, without asking the hub.
    pub fn live(&self) -> Vec<(ShardId, ShardLive)> {
        self.gauges.iter().map(|(id, g)| (*id, g.read())).collect()
    }

    /// Whether every shard is ready: running, restored, polling.
    pub fn ready(&self) -> bool {
        !self.gauges.is_empty() && self.gauges.iter().all(|(_, g)| g.read().ready)
    }

    /// Everything merged so far (reports are at most `PUBLISH_INTERVAL_MS`
    /// old), with live gauges read now.
    pub fn snapshot(&self, timeout: Duration) -> Result<MetricsSnapshot, TelemetryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send_timeout(HubRequest::Snapshot(tx), timeout)
            .map_err(|_| TelemetryError::Stopped)?;
        rx.recv_timeout(timeout)
            .map_err(|_| TelemetryError::Timeout(timeout))
    }

    /// Where the standby keeper sends its copies' lag.
    pub fn standby_lag_sink(&self) -> StandbyLagSink {
        StandbyLagSink {
            requests: self.requests.clone(),
        }
    }
}

/// The hub's state: cumulative metrics per shard. Lives on its own thread.
struct Hub {
    shards: Vec<(ShardMetrics, Arc<ShardGauges>)>,
    spares: Vec<(ShardId, Sender<Histogram<u64>>)>,
    /// The standby keeper's last lag message (empty without standbys).
    standby_lag: Vec<StandbyLag>,
}

impl Hub {
    fn run(mut self, reports: Receiver<ShardReport>, requests: Receiver<HubRequest>) {
        let mut reports_open = true;
        loop {
            if reports_open {
                select! {
                    recv(reports) -> report => match report {
                        Ok(report) => self.merge(report),
                        // Every shard has stopped; keep answering for the
                        // final report.
                        Err(_) => reports_open = false,
                    },
                    recv(requests) -> request => match request {
                        Ok(request) => self.answer(request),
                        Err(_) => return,
                    },
                }
            } else {
                match requests.recv() {
                    Ok(request) => self.answer(request),
                    Err(_) => return,
                }
            }
        }
    }

    fn answer(&mut self, request: HubRequest) {
        match request {
            HubRequest::Snapshot(reply) => {
                let shards = self
                    .shards
                    .iter()
                    .map(|(metrics, gauges)| {
                        let mut metrics = metrics.clone();
                        metrics.live = gauges.read();
                        metrics
                    })
                    .collect();
                let _ = reply.try_send(MetricsSnapshot {
                    shards,
                    standby_lag: self.standby_lag.clone(),
                });
            }
            HubRequest::StandbyLag(lag) => self.standby_lag = lag,
        }
    }

    fn merge(&mut self, report: ShardReport) {
        let Some((metrics, _)) = self
            .shards
            .iter_mut()
            .find(|(m, _)| m.shard == report.shard)
        else {
            return;
        };
        metrics.service = report.service;
        metrics.counters = metrics.counters.plus(&report.body.counters);
        for (row, delta) in metrics
            .dead_letters
            .iter_mut()
            .zip(&report.body.dead_letters)
        {
            for (count, d) in row.iter_mut().zip(delta) {
                *count += d;
            }
        }
        // Retries are cumulative per set of clients; a restart starts them
        // again from zero, so keep the larger of the two readings.
        metrics.send_retries = metrics.send_retries.max(report.send_retries);
        metrics.lag = report.lag;
        metrics.stores = report.stores;
        metrics.owned = report.owned;
        let spare = self
            .spares
            .iter()
            .find(|(id, _)| *id == report.shard)
            .map(|(_, s)| s);
        for (key, mut interval) in report.body.histograms {
            match metrics.histograms.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => {
                    let _ = Arc::make_mut(total).add(&interval);
                }
                None => metrics.histograms.push((key, Arc::new(interval.clone()))),
            }
            interval.reset();
            if let Some(spare) = spare {
                // A full spare queue just drops the histogram.
                let _ = spare.try_send(interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code a dead letter's decode error can carry has a label of its
    /// own: none is counted as `rejected` (a stage's refusal).
    #[test]
    fn every_wire_error_counts_under_its_own_reason() {
        use crate::wire::WireError;
        use codecs::{DecodeError, EventSchema};
        let schema = EventSchema::OrderCreatedV1;
        let decode = [
            DecodeError::Empty,
            DecodeError::Oversize { len: 2, max: 1 },
            DecodeError::TruncatedHeader { len: 1, header: 4 },
            DecodeError::WrongMagic { byte: 7 },
            DecodeError::UnknownFraming { version: 9 },
            DecodeError::UnknownType {
                kind: 9,
                version: 9,
            },
            DecodeError::UnknownLegacyId { id: 9 },
            DecodeError::TruncatedPayload {
                schema,
                len: 1,
                expected: 2,
            },
            DecodeError::TrailingBytes {
                schema,
                len: 3,
                expected: 2,
            },
            DecodeError::CorruptArchive { schema },
        ];
        let cause = String::from("x");
        let wire = decode.into_iter().map(WireError::Rkyv).chain([
            WireError::AmbiguousFrame {
                id: 1,
                legacy: schema,
            },
            WireError::NoRegistry { id: 1 },
            WireError::UnknownSchemaId { id: 1 },
            WireError::UnreadableSchema {
                id: 1,
                cause: cause.clone(),
            },
            WireError::RegistryUnreachable {
                id: 1,
                cause: cause.clone(),
            },
            WireError::InvalidAvro { id: 1, cause },
        ]);
        let rejected = reason_index("rejected");
        for error in wire {
            assert_ne!(
                reason_index(error.reason()),
                rejected,
                "{error:?} ({}) has no label of its own",
                error.reason()
            );
        }
        assert_eq!(reason_index("missing_value"), 0);
    }

    #[test]
    fn a_report_carries_deltas_and_an_undelivered_one_is_sent_again() {
        let mut telemetry = ShardTelemetry::new(&["in"]);
        telemetry.record_ns(Timing::Process, 0, 1_000);
        telemetry.dead_letter(ErrorClass::UserData, "wrong_magic");
        let stats = ShardStats {
            records_in: 10,
            ..ShardStats::default()
        };
        let first = telemetry.take(stats);
        assert_eq!(first.counters.records_in, 10);
        assert_eq!(first.dead_letters[0][reason_index("wrong_magic")], 1);
        let process = |body: &ReportBody| {
            body.histograms
                .iter()
                .find(|(k, _)| k.timing == Timing::Process)
                .map_or(0, |(_, h)| h.len())
        };
        assert_eq!(process(&first), 1);
        assert!(telemetry
            .histogram(Timing::Process, 0)
            .is_some_and(Histogram::is_empty));

        // Not delivered: it comes back, and the next report includes it.
        telemetry.restore(first);
        telemetry.record_ns(Timing::Process, 0, 2_000);
        let second = telemetry.take(ShardStats {
            records_in: 15,
            ..ShardStats::default()
        });
        assert_eq!(second.counters.records_in, 15);
        assert_eq!(second.dead_letters[0][reason_index("wrong_magic")], 1);
        assert_eq!(process(&second), 2);

        let third = telemetry.take(ShardStats {
            records_in: 16,
            ..ShardStats::default()
        });
        assert_eq!(third.counters.records_in, 1);
        assert_eq!(third.dead_letters[0][reason_index("wrong_magic")], 0);
    }

    #[test]
    fn one_record_in_eight_is_timed_and_the_clock_is_reread_after_idle() {
        let mut telemetry = ShardTelemetry::new(&["in"]);
        let timed = (0..64)
            .filter(|_| telemetry.start_record().is_some())
            .count();
        assert_eq!(timed as u64, 64 / RECORD_TIMING_SAMPLE_EVERY);
        let before = telemetry.now;
        telemetry.clock_went_stale();
        let _ = telemetry.start_record();
        assert!(telemetry.now >= before, "re-read after going stale");
        telemetry.sample_every(1);
        assert!((0..10).all(|_| telemetry.start_record().is_some()));
    }

    #[test]
    fn unknown_dead_letter_reasons_fold_into_rejected() {
        assert_eq!(reason_index("no such code"), reason_index("rejected"));
        assert_eq!(reason_index("missing_value"), 0);
    }

    #[test]
    fn the_hub_merges_reports_and_recycles_histograms() -> Result<(), TelemetryError> {
        let gauges = Arc::new(ShardGauges::default());
        let (telemetry, channels) = Telemetry::start(vec![(ShardId(0), Arc::clone(&gauges))])
            .map_err(|_| TelemetryError::Stopped)?;
        let channel = &channels[0];
        let mut recorder = ShardTelemetry::new(&["t"]).with_spares(channel.spares.clone());
        for round in 1..=3u64 {
            recorder.record_ns(Timing::Commit, 0, 5_000 * round);
            let body = recorder.take(ShardStats {
                commits: round,
                ..ShardStats::default()
            });
            let report = ShardReport {
                shard: ShardId(0),
                service: "tally",
                body,
                lag: vec![PartitionLag {
                    topic: "t",
                    partition: PartitionId(0),
                    committed: Offset(7),
                    end: Offset(10),
                }],
                stores: Vec::new(),
                owned: vec![PartitionId(0)],
                send_retries: 0,
            };
            channel
                .reports
                .send(report)
                .map_err(|_| TelemetryError::Stopped)?;
        }
        // Requests and reports are separate queues: wait until all three
        // reports are merged.
        let mut snapshot = telemetry.snapshot(Duration::from_secs(5))?;
        for _ in 0..100 {
            if snapshot.shards[0].counters.commits == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            snapshot = telemetry.snapshot(Duration::from_secs(5))?;
        }
        let shard = &snapshot.shards[0];
        assert_eq!(shard.service, "tally");
        assert_eq!(shard.counters.commits, 3);
        assert_eq!(shard.lag[0].lag(), 3);
        assert_eq!(snapshot.merged(Timing::Commit).len(), 3);
        assert!(!snapshot.ready(), "a shard that never started is not ready");
        assert!(
            !channel.spares.is_empty(),
            "emptied histograms come back for reuse"
        );
        Ok(())
    }

    #[test]
    fn readiness_needs_running_assigned_polling_and_no_restore() {
        let gauges = ShardGauges::default();
        gauges.set_status(ShardStatus::Running);
        assert_eq!(gauges.read().reason(), "awaiting assignment");
        gauges.set_assigned();
        gauges.restore_started();
        assert_eq!(gauges.read().reason(), "restoring");
        gauges.restore_finished();
        assert_eq!(gauges.read().reason(), "not polling yet");
        gauges.set_polling();
        assert!(gauges.read().ready);
        gauges.reset_readiness();
        assert!(!gauges.read().ready);
    }

    #[test]
    fn the_standby_keepers_last_lag_message_is_in_the_snapshots() -> Result<(), TelemetryError> {
        let (telemetry, _channels) =
            Telemetry::start(vec![(ShardId(0), Arc::new(ShardGauges::default()))])
                .expect("hub thread");
        let timeout = Duration::from_secs(5);
        assert!(telemetry.snapshot(timeout)?.standby_lag.is_empty());
        let sink = telemetry.standby_lag_sink();
        let lag = |behind| StandbyLag {
            partition: PartitionId(3),
            offsets_behind: behind,
        };
        sink.publish(vec![lag(12)]);
        sink.publish(vec![lag(0)]);
        assert_eq!(telemetry.snapshot(timeout)?.standby_lag, vec![lag(0)]);
        Ok(())
    }

    #[test]
    fn end_to_end_skips_events_without_a_creation_time() {
        let mut telemetry = ShardTelemetry::new(&["in"]);
        let _ = telemetry.start_record();
        telemetry.record_end_to_end(0, 0);
        let end_to_end = |t: &ShardTelemetry| t.histogram(Timing::EndToEnd, 0).map(Histogram::max);
        assert_eq!(end_to_end(&telemetry), Some(0));
        let a_second_ago = telemetry.base_wall_ns - 1_000_000_000;
        telemetry.record_end_to_end(0, a_second_ago);
        let recorded = end_to_end(&telemetry).unwrap_or_default();
        assert!(recorded >= 999_000_000, "recorded {recorded} ns");
    }
}
