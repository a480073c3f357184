//! Reading a changelog partition back into a store: [`ChangelogReader`].
//!
//! Owns: the shard's changelog consumer (`read_committed`), a
//! `read_uncommitted` client used only for the partition's high watermark,
//! and the rule for when a restore is complete.
//!
//! Must never: stop at the last stable offset while a transaction that wrote
//! to the changelog before the restore began is still undecided. The
//! previous owner of a partition may have committed its last transaction a
//! moment ago: `EndTxn` has returned and the group's committed offsets
//! already include that transaction's inputs, but the coordinator writes the
//! commit markers to each partition on its own, so the changelog's last
//! stable offset (where a `read_committed` reader sees the end, and what
//! `ListOffsets` returns under `read_committed`) can still stand before the
//! transaction's state changes. A restore that ended there restored the state
//! without that transaction and then resumed the inputs after it: the
//! transaction's effects were lost (issue #16's rebalance test, node-b's last
//! debits missing on node-a). A restore therefore reads until the end of
//! partition lies at or beyond the high watermark it saw when it began, so
//! every transaction that wrote before that point has been decided (commit
//! markers written, or aborted) and read or skipped.
//!
//! Why raw librdkafka for the poll: `rdkafka` 0.39's `BaseConsumer::poll`
//! turns the end-of-partition event into `KafkaError::PartitionEOF(partition)`
//! and drops its offset, which is the reader's fetch position there (the last
//! stable offset under `read_committed`; `rdkafka_fetcher.c`, librdkafka
//! 2.12.1). That offset is what the rule above compares.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tracing::{info, warn};

use ::records::{FETCH_QUEUE_BACKOFF_MS, QUEUED_RECORDS_MAX};

use super::{
    kafka_error, prefetch_metadata, watermarks_retrying, EndAwareContext, KafkaSettings,
    TRANSACTION_TIMEOUT_MS,
};
use crate::ids::{Offset, PartitionId};
use crate::port::{PortError, RestoreStats};
use crate::store::ChangelogApply;
use crate::telemetry::ShardGauges;

/// How long a restore may go without progress before it fails: longer than
/// a transaction may stay open, so that an undecided transaction of a
/// previous owner that nobody fences (it is aborted when it times out) holds
/// the restore back rather than failing it.
pub const RESTORE_STALL_TIMEOUT_MS: u64 = TRANSACTION_TIMEOUT_MS + 30_000;
/// Bytes a changelog reader asks for per fetch.
pub const RESTORE_FETCH_BYTES: usize = 16 * 1024 * 1024;
/// How often (in records) a restore updates its remaining-offsets gauge.
pub const RESTORE_PROGRESS_EVERY_RECORDS: u64 = 1_024;
/// Most records a restore takes from librdkafka's queue at once.
pub const RESTORE_BATCH_RECORDS: usize = 4_096;
/// Longest a restore waits for a batch to fill (it returns as soon as it is
/// full; a partial batch costs at most this, once, at the end).
pub const RESTORE_BATCH_WAIT: Duration = Duration::from_millis(10);

/// Reads changelog partitions from their start to their decided end.
pub struct ChangelogReader {
    reader: BaseConsumer<EndAwareContext>,
    /// Changelog topics whose metadata `reader` has asked for (see
    /// `super::prefetch_metadata`): once per topic, before its first read.
    known: std::collections::BTreeSet<String>,
    /// `read_uncommitted`, so that `ListOffsets` answers the high watermark
    /// rather than the last stable offset. Never consumes.
    watermarks: BaseConsumer<EndAwareContext>,
}

/// One thing the reader's queue handed over.
pub(super) enum ReaderEvent<'a> {
    Record {
        /// The record's topic handle, only to tell topics apart while the
        /// batch lives ([`topic_name`] reads its name), and its partition:
        /// a standby keeper reads several of each.
        topic: usize,
        partition: i32,
        offset: i64,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    },
    /// The reader's fetch position reached the end it may read (under
    /// `read_committed`, the last stable offset).
    End {
        topic: usize,
        partition: i32,
        at: i64,
    },
    Error(String),
    Nothing,
}

impl ChangelogReader {
    pub fn new(settings: &KafkaSettings) -> Result<Self, PortError> {
        let reader: BaseConsumer<EndAwareContext> = settings
            .base()
            .set("group.id", format!("{}-restore", settings.application_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50")
            // Restores read one partition from its start as fast as possible:
            // large fetches amortise each broker round trip.
            .set("max.partition.fetch.bytes", RESTORE_FETCH_BYTES.to_string())
            .set("fetch.max.bytes", RESTORE_FETCH_BYTES.to_string())
            .set("queued.min.messages", QUEUED_RECORDS_MAX.to_string())
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
            .create_with_context(EndAwareContext)
            .map_err(|e| kafka_error("creating the changelog reader", e))?;
        let watermarks: BaseConsumer<EndAwareContext> = settings
            .base()
            .set("group.id", format!("{}-restore", settings.application_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create_with_context(EndAwareContext)
            .map_err(|e| kafka_error("creating the changelog watermark reader", e))?;
        Ok(ChangelogReader {
            reader,
            known: std::collections::BTreeSet::new(),
            watermarks,
        })
    }

    /// Records in the changelog partition (high watermark less low
    /// watermark): an upper bound on the keys a restore brings back, for
    /// sizing a store before it (compaction makes it tighter, never lower).
    pub fn extent(&mut self, changelog: &str, partition: PartitionId) -> Result<u64, PortError> {
        let (low, high) = self.watermarks(changelog, partition)?;
        Ok(u64::try_from(high - low).unwrap_or(0))
    }

    /// The partition's (low, high) watermarks. Right after a topic is
    /// created or a leader moves, the broker may not lead the partition yet:
    /// such errors are retried here (for as long as a restore may stall)
    /// rather than restart the shard.
    fn watermarks(&self, changelog: &str, partition: PartitionId) -> Result<(i64, i64), PortError> {
        watermarks_retrying(
            &self.watermarks,
            changelog,
            partition.0,
            Duration::from_millis(RESTORE_STALL_TIMEOUT_MS),
        )
    }

    /// Applies every committed record of `changelog` (physical name)
    /// `partition` to `apply`, up to a decided end at or beyond the high
    /// watermark seen at the start.
    ///
    /// Records come from librdkafka's queue in batches of up to
    /// [`RESTORE_BATCH_RECORDS`] (one queue lock and one clock reading per
    /// batch, not per record), each applied in place from librdkafka's
    /// buffer.
    pub fn restore(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        apply: &mut ChangelogApply<'_>,
        gauges: Option<&ShardGauges>,
    ) -> Result<RestoreStats, PortError> {
        self.restore_from(changelog, partition, None, apply, gauges)
    }

    /// [`Self::restore`] from `from` (a standby copy's next offset: every
    /// committed record before it is applied already) instead of the
    /// partition's start, to the same decided end: at or beyond the high
    /// watermark seen now, undecided transactions waited out. `None`, or an
    /// offset the log no longer holds (below its start), reads it all.
    pub fn restore_from(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        from: Option<i64>,
        apply: &mut ChangelogApply<'_>,
        gauges: Option<&ShardGauges>,
    ) -> Result<RestoreStats, PortError> {
        let (low, high) = self.watermarks(changelog, partition)?;
        let mut stats = RestoreStats::default();
        let start = match from {
            Some(from) if from > low => from,
            _ => low,
        };
        if high <= start {
            // Nothing was written at or after `start`: every transaction
            // that wrote before the high watermark was decided by the time
            // the copy read past it.
            stats.next = Some(Offset(start));
            return Ok(stats);
        }
        let offset = match from {
            Some(from) if from > low => KafkaOffset::Offset(from),
            _ => KafkaOffset::Beginning,
        };
        // Without the leader known at the assignment, the read would wait
        // for librdkafka's 1 s metadata scan and 500 ms offset-query retry:
        // some 0.55 s of every restore read was that.
        if !self.known.contains(changelog) {
            prefetch_metadata(&self.reader, changelog);
            self.known.insert(changelog.to_string());
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(changelog, partition.0, offset)
            .map_err(|e| kafka_error("assigning the changelog", e))?;
        self.reader
            .assign(&list)
            .map_err(|e| kafka_error("assigning the changelog", e))?;
        let mut last_progress = Instant::now();
        let mut position = start;
        let mut waiting_since: Option<Instant> = None;
        let queue = ReaderQueue::of(&self.reader)?;
        let mut batch = MessageBatch::new(RESTORE_BATCH_RECORDS);
        let mut done = false;
        while !done {
            let records_before = stats.records;
            for event in batch.fill(&queue, RESTORE_BATCH_WAIT) {
                if done {
                    // Past the decided end: nothing more to apply.
                    break;
                }
                match event {
                    ReaderEvent::Nothing => {}
                    ReaderEvent::End { at, .. } if at >= high => {
                        position = position.max(at);
                        done = true;
                    }
                    ReaderEvent::End { at, .. } => {
                        // Everything before `at` is read; a transaction that
                        // began at `at` is still undecided. Its commit or
                        // abort (or the coordinator's timeout) moves the end.
                        if waiting_since.is_none() {
                            info!(changelog, %partition, at, high, "waiting for an undecided transaction before the restore ends");
                            waiting_since = Some(Instant::now());
                        }
                        position = position.max(at);
                    }
                    ReaderEvent::Error(e) => {
                        warn!(error = %e, changelog, %partition, "changelog read error (retrying)")
                    }
                    ReaderEvent::Record {
                        offset, key, value, ..
                    } => {
                        position = offset + 1;
                        if stats.records % RESTORE_PROGRESS_EVERY_RECORDS == 0 {
                            if let Some(gauges) = gauges {
                                gauges.set_restore_remaining((high - position).max(0) as u64);
                            }
                        }
                        apply(key, value).map_err(|source| PortError::CorruptChangelog {
                            changelog: changelog.to_string(),
                            partition,
                            source,
                        })?;
                        stats.records += 1;
                        stats.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
                    }
                }
            }
            batch.release();
            if stats.records > records_before {
                last_progress = Instant::now();
            }
            if !done && last_progress.elapsed() > Duration::from_millis(RESTORE_STALL_TIMEOUT_MS) {
                return Err(PortError::Kafka {
                    op: "restoring",
                    message: format!(
                        "{changelog} {partition} made no progress at offset {position} of {high}"
                    ),
                    retryable: true,
                });
            }
        }
        if let Some(since) = waiting_since {
            info!(changelog, %partition, waited = ?since.elapsed(), "the undecided transaction was decided");
        }
        self.reader
            .unassign()
            .map_err(|e| kafka_error("releasing the changelog", e))?;
        stats.next = Some(Offset(position));
        Ok(stats)
    }
}

/// The reader's consumer queue, held for one restore rather than taken and
/// released per record.
pub(super) struct ReaderQueue(*mut rdkafka::bindings::rd_kafka_queue_t);

impl ReaderQueue {
    pub(super) fn of(reader: &BaseConsumer<EndAwareContext>) -> Result<Self, PortError> {
        // SAFETY: the consumer's handle is valid while `reader` is borrowed;
        // the queue reference taken here is released in `drop`.
        let queue =
            unsafe { rdkafka::bindings::rd_kafka_queue_get_consumer(reader.client().native_ptr()) };
        if queue.is_null() {
            return Err(PortError::Kafka {
                op: "restoring",
                message: "the changelog reader has no consumer queue".into(),
                retryable: false,
            });
        }
        Ok(ReaderQueue(queue))
    }
}

impl Drop for ReaderQueue {
    fn drop(&mut self) {
        // SAFETY: taken in `of`, released once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.0) }
    }
}

/// Messages taken from the reader's queue in one call, destroyed (handed
/// back to librdkafka) by `release` or when dropped, so an early return
/// (a corrupt record) leaks nothing.
pub(super) struct MessageBatch {
    messages: Vec<*mut rdkafka::bindings::rd_kafka_message_t>,
    len: usize,
}

impl MessageBatch {
    pub(super) fn new(capacity: usize) -> Self {
        MessageBatch {
            messages: vec![std::ptr::null_mut(); capacity],
            len: 0,
        }
    }

    /// Takes up to the batch's capacity of messages, waiting at most `wait`
    /// for it to fill, and reads them as events. The slices in the events
    /// point into the messages, which live until `release`.
    pub(super) fn fill(
        &mut self,
        queue: &ReaderQueue,
        wait: Duration,
    ) -> impl Iterator<Item = ReaderEvent<'_>> + '_ {
        self.release();
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: the queue is valid while `queue` lives (the consumer
        // outlives it); librdkafka writes at most `messages.len()` pointers.
        let taken = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(
                queue.0,
                wait_ms,
                self.messages.as_mut_ptr(),
                self.messages.len(),
            )
        };
        self.len = usize::try_from(taken).unwrap_or(0).min(self.messages.len());
        if taken < 0 {
            self.len = 0;
        }
        let error = (taken < 0).then(|| ReaderEvent::Error("consuming a batch failed".into()));
        error.into_iter().chain(
            self.messages[..self.len]
                .iter()
                // SAFETY: each pointer was just handed over by librdkafka and
                // is destroyed only in `release`, after the events are gone
                // (the iterator borrows the batch).
                .map(|&message| unsafe { message_event(message) }),
        )
    }

    /// Hands the messages back to librdkafka.
    pub(super) fn release(&mut self) {
        for message in self.messages[..self.len].iter_mut() {
            // SAFETY: taken in `fill`, destroyed once, then forgotten.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(*message) };
            *message = std::ptr::null_mut();
        }
        self.len = 0;
    }
}

impl Drop for MessageBatch {
    fn drop(&mut self) {
        self.release();
    }
}

/// What one message of the reader's queue says.
///
/// # Safety
/// `message` must be a valid message from librdkafka that outlives the
/// returned event.
unsafe fn message_event<'a>(
    message: *mut rdkafka::bindings::rd_kafka_message_t,
) -> ReaderEvent<'a> {
    use rdkafka::bindings as rd;
    if message.is_null() {
        return ReaderEvent::Nothing;
    }
    // SAFETY: valid per the contract; fields are read, slices built over
    // librdkafka's buffers, which live as long as the message.
    unsafe {
        let m = &*message;
        if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
            // The end's offset is the reader's fetch position there.
            return ReaderEvent::End {
                topic: m.rkt as usize,
                partition: m.partition,
                at: m.offset,
            };
        }
        if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return ReaderEvent::Error(
                std::ffi::CStr::from_ptr(rd::rd_kafka_err2str(m.err))
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        let key = if m.key.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(m.key as *const u8, m.key_len)
        };
        let value = if m.payload.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(m.payload as *const u8, m.len))
        };
        ReaderEvent::Record {
            topic: m.rkt as usize,
            partition: m.partition,
            offset: m.offset,
            key,
            value,
        }
    }
}

/// The name of the topic behind a handle of a [`ReaderEvent`].
///
/// # Safety
/// `topic` must come from an event of a batch that has not been released
/// yet (the message holds the handle).
pub(super) unsafe fn topic_name(topic: usize) -> String {
    // SAFETY: per the contract the handle is alive; librdkafka returns a
    // NUL-terminated name owned by it.
    unsafe {
        let name = rdkafka::bindings::rd_kafka_topic_name(topic as *const _);
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}
