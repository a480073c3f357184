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
//! Parts, one file each: `recorder` ([`ShardTelemetry`], [`Timing`], the
//! dead-letter reason table), `report` ([`ShardReport`], [`ShardStats`]),
//! `gauges` ([`ShardGauges`], [`ShardStatus`]) and `hub` ([`Telemetry`],
//! [`MetricsSnapshot`]); this file holds the bounds they share.
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
use crate::stage::ErrorClass;
use crate::standby::StandbyLag;

mod gauges;
mod hub;
mod recorder;
mod report;

pub use gauges::*;
pub use hub::*;
pub use recorder::*;
pub use report::*;

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

#[cfg(test)]
mod tests {
    use super::recorder::reason_index;
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
