//! The shard-local recorder: what a shard times ([`Timing`], one histogram
//! per timing and input topic), its counters and dead-letter reasons, read and
//! written only by the owning shard's thread.
//! Must never: use atomics or locks, allocate per record, or block.

use super::*;

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
pub(super) fn reason_index(reason: &str) -> usize {
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
    pub(super) base_wall_ns: u64,
    base_ticks: u64,
    /// Records seen, for sampling; the sample mask (`every - 1`).
    sequence: u64,
    sample_mask: u64,
    /// The last clock reading, and whether time may have passed since (an
    /// idle poll, a commit) so the next record must read the clock again.
    pub(super) now: u64,
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
