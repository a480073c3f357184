//! Interval recording: the measuring thread feeds [`IntervalRecorder`], which
//! keeps the whole run's histograms and, every interval (one second by
//! default), closes the current interval's pair of histograms into a compressed
//! [`IntervalLog`] entry — the data behind `latency.hlog` and the
//! throughput/p99-over-time plot.
//!
//! Lives on: the one thread that measures. It owns every histogram it records
//! into; [`IntervalRecorder::record`] touches nothing shared, locked or atomic.
//! When a record or a [`IntervalRecorder::tick`] crosses an interval boundary,
//! the measuring thread swaps the closed pair of histograms for a clean spare
//! and *moves* the closed pair through a bounded channel to the recorder's own
//! encoder thread, which V2-deflate-encodes it (50–350 µs per histogram,
//! measured: too long to pause a measuring loop for), resets it and sends it
//! back as the next spare. The encoder polls its queue, so a rotation never
//! wakes a thread. Rotation costs the measuring thread a swap and a channel
//! send — about 2 µs against a loopback broker, where encoding inline cost up to
//! a millisecond — and its wall time, preemption included, is kept in
//! [`IntervalLog::rotation_ns_max`] and `summary.json`. Memory grows by one
//! compressed entry (about a kilobyte) per interval instead of two full
//! histograms.
//!
//! Must never: share a histogram between threads (it is moved, and only when
//! closed), allocate a histogram per interval in steady state (spares come
//! back), or drop an interval (an interval without a reply is logged empty: a
//! stall must show as a gap in throughput). A full queue blocks the rotation
//! rather than losing intervals: it holds [`INTERVAL_QUEUE_MAX`] intervals,
//! far more than an encoder needs unless it is starved of CPU for that long.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::latency::{LatencyError, LatencyRecorder};

/// Default length of one interval of the interval log, as HdrHistogram's tools expect.
pub const INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Shortest interval accepted (shorter ones make the log large and the
/// per-interval percentiles meaningless).
pub const INTERVAL_MS_MIN: u64 = 100;
/// Closed intervals waiting for the encoder before a rotation blocks.
pub const INTERVAL_QUEUE_MAX: usize = 16;
/// How often the encoder thread looks for closed intervals.
const ENCODER_POLL_MS: u64 = 20;
// The encoder polls several times per interval, so it returns each spare before
// the next rotation needs it and the prefilled spares are never exhausted.
const _: () = assert!(ENCODER_POLL_MS * 4 <= INTERVAL_MS_MIN);
/// Clean spare histogram pairs kept for reuse.
const SPARES_MAX: usize = 4;
/// Spare pairs made before the run: creating a pair touches ~440 KiB (30–280 µs,
/// measured), which a rotation must not pay.
const SPARES_PREFILLED: usize = 2;
const _: () = assert!(
    SPARES_PREFILLED <= SPARES_MAX,
    "prefilled spares must fit the pool"
);

/// Why an interval could not be recorded or read back.
#[derive(Debug, thiserror::Error)]
pub enum IntervalError {
    #[error(transparent)]
    Latency(#[from] LatencyError),
    #[error("interval must be at least {INTERVAL_MS_MIN} ms, got {0:?}")]
    TooShort(Duration),
    #[error("time went backwards: record at {now_ns} ns is before interval start {start_ns} ns")]
    Backwards { now_ns: u64, start_ns: u64 },
    #[error("encoding interval {index}: {reason}")]
    Encode { index: usize, reason: String },
    #[error("decoding interval {index}: {reason}")]
    Decode { index: usize, reason: String },
    #[error("starting the interval encoder thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the interval encoder thread stopped early")]
    EncoderGone,
}

/// One closed interval: its place in the run and its two histograms,
/// V2-deflate encoded (the interval log's own compression).
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalEntry {
    /// Start of the interval, nanoseconds since the run's epoch.
    pub start_ns: u64,
    /// Length of the interval (the last one may be shorter).
    pub duration_ns: u64,
    /// Replies recorded in the interval.
    pub count: u64,
    /// Corrected (from the intended send time) histogram, nanoseconds, encoded.
    pub corrected_v2: Vec<u8>,
    /// Uncorrected (from the actual send time) histogram, nanoseconds, encoded.
    pub uncorrected_v2: Vec<u8>,
}

/// The closed intervals of one run, in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalLog {
    /// Nominal interval length.
    pub interval_ns: u64,
    pub entries: Vec<IntervalEntry>,
    /// Longest time one rotation kept the measuring thread busy: the recorder's
    /// own pause, reported so a reader can judge it against the latencies.
    pub rotation_ns_max: u64,
}

impl IntervalLog {
    /// Decodes entry `index` into its (corrected, uncorrected) histograms.
    pub fn histograms(&self, index: usize) -> Result<LatencyRecorder, IntervalError> {
        let Some(entry) = self.entries.get(index) else {
            return Err(IntervalError::Decode {
                index,
                reason: format!("no such interval ({} in the log)", self.entries.len()),
            });
        };
        let mut deserializer = Deserializer::new();
        let mut decode = |bytes: &[u8]| -> Result<Histogram<u64>, IntervalError> {
            deserializer
                .deserialize(&mut &bytes[..])
                .map_err(|e| IntervalError::Decode {
                    index,
                    reason: format!("{e:?}"),
                })
        };
        Ok(LatencyRecorder {
            corrected: decode(&entry.corrected_v2)?,
            uncorrected: decode(&entry.uncorrected_v2)?,
        })
    }
}

/// What a finished recorder hands to the report: the run's totals and its intervals.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub total: LatencyRecorder,
    pub intervals: IntervalLog,
}

/// A closed interval on its way to the encoder.
struct Closed {
    start_ns: u64,
    duration_ns: u64,
    histograms: LatencyRecorder,
}

/// Records latencies into whole-run histograms and rotates a pair of interval
/// histograms every `interval`. Owned by the measuring thread; times are
/// nanoseconds since the run's epoch, as the caller measures them.
pub struct IntervalRecorder {
    interval_ns: u64,
    total: LatencyRecorder,
    current: LatencyRecorder,
    current_start_ns: u64,
    closed: usize,
    rotation_ns_max: u64,
    to_encoder: Option<SyncSender<Closed>>,
    spares: Receiver<LatencyRecorder>,
    encoder: Option<JoinHandle<Result<IntervalLog, IntervalError>>>,
}

impl std::fmt::Debug for IntervalRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalRecorder")
            .field("interval_ns", &self.interval_ns)
            .field("current_start_ns", &self.current_start_ns)
            .field("closed_intervals", &self.closed)
            .field("total_count", &self.total.corrected.len())
            .finish()
    }
}

impl IntervalRecorder {
    /// A recorder whose first interval starts at the epoch (time 0), with its
    /// encoder thread started.
    pub fn new(interval: Duration) -> Result<Self, IntervalError> {
        if interval < Duration::from_millis(INTERVAL_MS_MIN) {
            return Err(IntervalError::TooShort(interval));
        }
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let (to_encoder, closed) = mpsc::sync_channel(INTERVAL_QUEUE_MAX);
        let (return_spare, spares) = mpsc::sync_channel(SPARES_MAX);
        for _ in 0..SPARES_PREFILLED {
            return_spare
                .try_send(LatencyRecorder::new()?)
                .map_err(|_| IntervalError::EncoderGone)?;
        }
        let encoder = std::thread::Builder::new()
            .name("interval-encode".into())
            .spawn(move || encode_intervals(interval_ns, closed, return_spare))
            .map_err(IntervalError::Spawn)?;
        Ok(IntervalRecorder {
            interval_ns,
            total: LatencyRecorder::new()?,
            current: LatencyRecorder::new()?,
            current_start_ns: 0,
            closed: 0,
            rotation_ns_max: 0,
            to_encoder: Some(to_encoder),
            spares,
            encoder: Some(encoder),
        })
    }

    /// Records one reply observed at `now_ns`: `from_intended_ns` is its
    /// latency from the scheduled send, `from_actual_ns` from the real one.
    #[inline]
    pub fn record(
        &mut self,
        now_ns: u64,
        from_intended_ns: u64,
        from_actual_ns: u64,
    ) -> Result<(), IntervalError> {
        self.tick(now_ns)?;
        self.total.record(from_intended_ns, from_actual_ns);
        self.current.record(from_intended_ns, from_actual_ns);
        Ok(())
    }

    /// Closes every interval that ended at or before `now_ns`. Call it from the
    /// measuring loop even when nothing arrives, so a stall is logged as empty
    /// intervals rather than stretched into the next reply's interval.
    #[inline]
    pub fn tick(&mut self, now_ns: u64) -> Result<(), IntervalError> {
        if now_ns < self.current_start_ns {
            return Err(IntervalError::Backwards {
                now_ns,
                start_ns: self.current_start_ns,
            });
        }
        while now_ns - self.current_start_ns >= self.interval_ns {
            self.close(self.interval_ns)?;
        }
        Ok(())
    }

    /// Replies recorded so far in the whole run.
    pub fn total_count(&self) -> u64 {
        self.total.corrected.len()
    }

    /// Closes the last (possibly partial) interval at `end_ns`, waits for the
    /// encoder to finish, and returns the run's totals and intervals.
    pub fn finish(mut self, end_ns: u64) -> Result<Recorded, IntervalError> {
        self.tick(end_ns)?;
        let rest_ns = end_ns - self.current_start_ns;
        if rest_ns > 0 || !self.current.corrected.is_empty() {
            self.close(rest_ns)?;
        }
        self.to_encoder = None; // the encoder ends when the queue is closed and empty
        let encoder = self.encoder.take().ok_or(IntervalError::EncoderGone)?;
        let mut log = encoder.join().map_err(|_| IntervalError::EncoderGone)??;
        log.rotation_ns_max = self.rotation_ns_max;
        Ok(Recorded {
            total: self.total,
            intervals: log,
        })
    }

    fn close(&mut self, duration_ns: u64) -> Result<(), IntervalError> {
        let started = Instant::now();
        let spare = match self.spares.try_recv() {
            Ok(spare) => spare,
            // Only while the first intervals are in flight, or if the encoder lags.
            Err(_) => LatencyRecorder::new()?,
        };
        let histograms = std::mem::replace(&mut self.current, spare);
        let closed = Closed {
            start_ns: self.current_start_ns,
            duration_ns,
            histograms,
        };
        self.to_encoder
            .as_ref()
            .ok_or(IntervalError::EncoderGone)?
            .send(closed)
            .map_err(|_| IntervalError::EncoderGone)?;
        self.closed += 1;
        self.current_start_ns = self.current_start_ns.saturating_add(duration_ns);
        let spent_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.rotation_ns_max = self.rotation_ns_max.max(spent_ns);
        Ok(())
    }
}

/// The encoder thread: encodes closed intervals in order, returns their
/// histograms clean, and hands back the log when the queue closes.
fn encode_intervals(
    interval_ns: u64,
    closed: Receiver<Closed>,
    return_spare: SyncSender<LatencyRecorder>,
) -> Result<IntervalLog, IntervalError> {
    let mut log = IntervalLog {
        interval_ns,
        entries: Vec::new(),
        rotation_ns_max: 0,
    };
    let mut serializer = V2DeflateSerializer::new();
    loop {
        // Poll rather than block: a sender never finds a receiver waiting, so
        // a rotation never wakes this thread (a wake-up on a busy core can
        // preempt the measuring thread itself).
        let Closed {
            start_ns,
            duration_ns,
            mut histograms,
        } = match closed.try_recv() {
            Ok(closed) => closed,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(ENCODER_POLL_MS));
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let index = log.entries.len();
        let mut encode = |h: &Histogram<u64>| -> Result<Vec<u8>, IntervalError> {
            let mut bytes = Vec::new();
            serializer
                .serialize(h, &mut bytes)
                .map_err(|e| IntervalError::Encode {
                    index,
                    reason: format!("{e:?}"),
                })?;
            Ok(bytes)
        };
        log.entries.push(IntervalEntry {
            start_ns,
            duration_ns,
            count: histograms.corrected.len(),
            corrected_v2: encode(&histograms.corrected)?,
            uncorrected_v2: encode(&histograms.uncorrected)?,
        });
        histograms.corrected.reset();
        histograms.uncorrected.reset();
        // A full spare pool (or a finished recorder) just drops this pair.
        let _ = return_spare.try_send(histograms);
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rotates_every_interval_and_logs_empty_ones() -> Result<(), IntervalError> {
        let mut recorder = IntervalRecorder::new(Duration::from_secs(1))?;
        for i in 0..100u64 {
            recorder.record(i * 10 * MS, 2 * MS, MS)?; // second 0: 100 replies
        }
        // seconds 1 and 2 see nothing (a stall), second 3 sees one slow reply
        recorder.record(3_500 * MS, 2_000 * MS, MS)?;
        let recorded = recorder.finish(3_800 * MS)?;
        let counts: Vec<u64> = recorded.intervals.entries.iter().map(|e| e.count).collect();
        assert_eq!(counts, [100, 0, 0, 1]);
        let starts: Vec<u64> = recorded
            .intervals
            .entries
            .iter()
            .map(|e| e.start_ns)
            .collect();
        assert_eq!(starts, [0, 1_000 * MS, 2_000 * MS, 3_000 * MS]);
        assert_eq!(recorded.intervals.entries[3].duration_ns, 800 * MS);
        assert_eq!(recorded.total.corrected.len(), 101);
        let last = recorded.intervals.histograms(3)?;
        assert_eq!(last.corrected.len(), 1);
        assert!(last.corrected.max() >= 2_000 * MS);
        let first = recorded.intervals.histograms(0)?;
        assert_eq!(first.uncorrected.len(), 100);
        Ok(())
    }

    #[test]
    fn refuses_time_going_backwards_and_tiny_intervals() -> Result<(), IntervalError> {
        assert!(matches!(
            IntervalRecorder::new(Duration::from_millis(10)),
            Err(IntervalError::TooShort(_))
        ));
        let mut recorder = IntervalRecorder::new(Duration::from_secs(1))?;
        recorder.tick(2_500 * MS)?;
        assert!(matches!(
            recorder.record(1_000 * MS, 1, 1),
            Err(IntervalError::Backwards { .. })
        ));
        Ok(())
    }

    #[test]
    fn rotations_measure_their_own_pause() -> Result<(), IntervalError> {
        // Not a timing assertion (tests never assert on timings): prints the
        // cost of one rotation of a realistic interval so a reviewer sees it.
        let mut recorder = IntervalRecorder::new(Duration::from_secs(1))?;
        for i in 0..10_000u64 {
            recorder.record(i * 50_000, 200_000 + (i * 7919) % 3_000_000, 150_000)?;
        }
        let recorded = recorder.finish(1_000 * MS)?;
        eprintln!(
            "one rotation (2 histograms, 10 000 values): {} µs",
            recorded.intervals.rotation_ns_max / 1_000
        );
        assert_eq!(recorded.intervals.entries.len(), 1);
        assert!(recorded.intervals.rotation_ns_max > 0);
        Ok(())
    }
}
