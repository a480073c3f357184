//! The standby keeper: one thread per node that tails the changelogs of the
//! partitions no shard of this node owns into warm copies
//! (`crate::standby::StandbyCopies`, which this thread owns outright), so a
//! take-over restores only the tail.
//!
//! Owns: one `read_committed` consumer that `assign()`s changelog
//! partitions (it joins no group and commits nothing), the copies and their
//! read positions, and their lag (offsets behind the high watermark, from the
//! client's cached watermarks, about once a second, sent to the telemetry
//! hub by message).
//!
//! Must never: produce, commit offsets, or take part in a transaction; apply
//! a record past a corrupt one (the copy is dropped instead, so the
//! take-over restores that partition in full and meets the corruption the
//! way any restore does); or share a copy: shards ask for one by message
//! (`crate::standby::StandbyHandle`) and get it by value, between two of
//! the keeper's batches.
//!
//! Lives on: its own unpinned thread (`<node>-standby`), which sleeps in its
//! consumer (at most [`STANDBY_BATCH_WAIT`]) when nothing arrives and serves
//! the shards' requests between batches; shards send requests only when
//! their assignment changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tracing::{info, warn};

use super::changelog_reader::{topic_name, MessageBatch, ReaderEvent, ReaderQueue};
use super::{
    kafka_error, EndAwareContext, KafkaSettings, FETCH_QUEUE_BACKOFF_MS, QUEUED_RECORDS_MAX,
    RESTORE_FETCH_BYTES,
};
use crate::changelog::Changelogs;
use crate::ids::PartitionId;
use crate::port::PortError;
use crate::standby::{StandbyCopies, StandbyLag, WarmCopy};
use crate::store::PartitionStores;
use crate::telemetry::StandbyLagSink;

/// How often the keeper measures its copies' lag.
pub const STANDBY_LAG_EVERY: Duration = Duration::from_secs(1);
/// Most records it takes from its queue at once.
const STANDBY_BATCH_RECORDS: usize = 1_024;
/// Longest it waits for a batch: it sleeps there when nothing arrives, so
/// this bounds how long a shard's request for a copy waits to be served.
pub const STANDBY_BATCH_WAIT: Duration = Duration::from_millis(10);

/// What the keeper needs to know about the node.
pub struct StandbyPlan {
    /// The stage's changelogs under the node's layout: the logical topics
    /// to tail (one per store, or the one shared topic) and how a record
    /// reaches its store.
    pub changelogs: Changelogs,
    /// The partition count of every topic of the flow.
    pub partitions: i32,
    /// True once every shard of the node was first given its partitions:
    /// until then the keeper would copy partitions the node is about to own.
    pub shards_assigned: Box<dyn Fn() -> bool + Send>,
    /// Where the copies' lag goes (the node's telemetry hub).
    pub lag: StandbyLagSink,
}

/// Starts the keeper with the node's `copies`; it runs until `stop` is set
/// or every shard's handle is gone.
pub fn spawn_keeper<St>(
    settings: &KafkaSettings,
    plan: StandbyPlan,
    copies: StandbyCopies<St>,
    stop: Arc<AtomicBool>,
    thread_name: String,
) -> Result<JoinHandle<()>, PortError>
where
    St: PartitionStores + Send,
{
    let consumer: BaseConsumer<EndAwareContext> = settings
        .base()
        // The restore readers' group id: assign() only, never joined and
        // never committed to, so it needs no ACL of its own.
        .set("group.id", format!("{}-restore", settings.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .set("max.partition.fetch.bytes", RESTORE_FETCH_BYTES.to_string())
        // A new standby first catches up on whole changelogs, as a restore.
        .set("queued.min.messages", QUEUED_RECORDS_MAX.to_string())
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
        .create_with_context(EndAwareContext)
        .map_err(|e| kafka_error("creating the standby reader", e))?;
    let physical: Vec<String> = plan
        .changelogs
        .topics()
        .iter()
        .map(|c| settings.namespace.physical(c))
        .collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || keep(consumer, plan, physical, copies, stop))
        .map_err(|e| PortError::Kafka {
            op: "starting the standby keeper",
            message: e.to_string(),
            retryable: false,
        })
}

fn keep<St: PartitionStores>(
    consumer: BaseConsumer<EndAwareContext>,
    plan: StandbyPlan,
    physical: Vec<String>,
    mut copies: StandbyCopies<St>,
    stop: Arc<AtomicBool>,
) {
    // Until every shard has its first partitions, requests are answered
    // (takes find nothing, the partitions become active) but nothing is
    // copied yet.
    while !(plan.shards_assigned)() {
        if stop.load(Ordering::Acquire) || copies.serve().orphaned {
            return;
        }
        std::thread::sleep(STANDBY_BATCH_WAIT);
    }
    let all: Vec<PartitionId> = (0..plan.partitions).map(PartitionId).collect();
    let queue = match ReaderQueue::of(&consumer) {
        Ok(queue) => queue,
        Err(e) => {
            warn!(error = %e, "standby keeper stopped: no copies kept");
            return;
        }
    };
    let mut batch = MessageBatch::new(STANDBY_BATCH_RECORDS);
    // Topic handles seen in batches, resolved once to changelog indexes.
    let mut handles: Vec<(usize, Option<usize>)> = Vec::new();
    let mut kept: Option<Vec<PartitionId>> = None;
    let mut measured = Instant::now();
    info!(replicas = copies.replicas(), "standby keeper started");
    while !stop.load(Ordering::Acquire) {
        let served = copies.serve();
        if served.orphaned {
            break;
        }
        let now = copies.keep(&all);
        if served.positions_changed || kept.as_ref() != Some(&now) {
            // A copy came or went: read positions are the copies' own.
            batch.release();
            if let Err(e) = assign(&consumer, &physical, &copies) {
                warn!(error = %e, "standby keeper could not assign its changelogs (retrying)");
                kept = None;
                std::thread::sleep(STANDBY_BATCH_WAIT);
                continue;
            }
            info!(partitions = ?now.iter().map(|p| p.0).collect::<Vec<_>>(),
                  active = ?copies.active().iter().map(|p| p.0).collect::<Vec<_>>(),
                  "standby copies kept");
            kept = Some(now);
        }
        for event in batch.fill(&queue, STANDBY_BATCH_WAIT) {
            match event {
                ReaderEvent::Nothing => {}
                ReaderEvent::Error(e) => {
                    warn!(error = %e, "standby read error (retrying)");
                }
                ReaderEvent::End {
                    topic,
                    partition,
                    at,
                } => {
                    let Some(changelog) = changelog_of(&mut handles, &physical, topic) else {
                        continue;
                    };
                    // Under read_committed the end is the last stable
                    // offset: everything before it is read or decided.
                    if let Some(copy) = copies.copy_mut(PartitionId(partition)) {
                        if !copy.poisoned {
                            if let Some(next) = copy.next.get_mut(changelog) {
                                *next = Some(next.map_or(at, |n| n.max(at)));
                            }
                        }
                    }
                }
                ReaderEvent::Record {
                    topic,
                    partition,
                    offset,
                    key,
                    value,
                } => {
                    let Some(changelog) = changelog_of(&mut handles, &physical, topic) else {
                        continue;
                    };
                    if let Some(copy) = copies.copy_mut(PartitionId(partition)) {
                        let record = ChangelogRecord {
                            changelog,
                            offset,
                            key,
                            value,
                        };
                        apply(
                            copy,
                            &plan.changelogs,
                            record,
                            &physical[changelog],
                            partition,
                        );
                    }
                }
            }
        }
        batch.release();
        if measured.elapsed() >= STANDBY_LAG_EVERY {
            measured = Instant::now();
            plan.lag.publish(lag(&consumer, &physical, &copies));
        }
    }
    batch.release();
    plan.lag.publish(Vec::new());
    info!("standby keeper stopped");
}

/// One record of changelog number `changelog` (of `Changelogs::topics`).
struct ChangelogRecord<'a> {
    changelog: usize,
    offset: i64,
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

/// Applies one changelog record to the store it belongs to (its topic's,
/// or under the shared layout the one its key's prefix names).
fn apply<St: PartitionStores>(
    copy: &mut WarmCopy<St>,
    changelogs: &Changelogs,
    record: ChangelogRecord<'_>,
    changelog: &str,
    partition: i32,
) {
    let ChangelogRecord {
        changelog: index,
        offset,
        key,
        value,
    } = record;
    if copy.poisoned
        || copy
            .next
            .get(index)
            .copied()
            .flatten()
            .is_some_and(|next| offset < next)
    {
        return;
    }
    let applied = changelogs
        .route(index, key)
        .and_then(|(store, key)| copy.state.apply_to(store, key, value));
    match applied {
        Ok(()) => {
            if let Some(next) = copy.next.get_mut(index) {
                *next = Some(offset + 1);
            }
        }
        Err(e) => {
            warn!(changelog, partition, offset, error = %e,
                  "corrupt changelog record: the standby copy is dropped (a take-over restores in full)");
            *copy = WarmCopy::empty();
            copy.poisoned = true;
        }
    }
}

/// The changelog index of a topic handle (`None`: not one of ours).
fn changelog_of(
    handles: &mut Vec<(usize, Option<usize>)>,
    physical: &[String],
    topic: usize,
) -> Option<usize> {
    if let Some((_, index)) = handles.iter().find(|(h, _)| *h == topic) {
        return *index;
    }
    // SAFETY: called while the event's batch is alive.
    let name = unsafe { topic_name(topic) };
    let index = physical.iter().position(|p| *p == name);
    handles.push((topic, index));
    index
}

/// Assigns every changelog partition of every warm copy at the copy's next
/// offset (its start when nothing was read).
fn assign<St: PartitionStores>(
    consumer: &BaseConsumer<EndAwareContext>,
    physical: &[String],
    copies: &StandbyCopies<St>,
) -> Result<(), PortError> {
    let mut list = TopicPartitionList::new();
    for (partition, next) in copies.positions() {
        for (changelog, next) in physical.iter().zip(next) {
            let offset = next.map_or(KafkaOffset::Beginning, KafkaOffset::Offset);
            list.add_partition_offset(changelog, partition.0, offset)
                .map_err(|e| kafka_error("assigning standby changelogs", e))?;
        }
    }
    consumer
        .assign(&list)
        .map_err(|e| kafka_error("assigning standby changelogs", e))
}

/// Each warm copy's offsets behind its changelogs' high watermarks, from the
/// watermarks the client cached from its last fetch (no broker request).
fn lag<St: PartitionStores>(
    consumer: &BaseConsumer<EndAwareContext>,
    physical: &[String],
    copies: &StandbyCopies<St>,
) -> Vec<StandbyLag> {
    let names: Vec<std::ffi::CString> = physical
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_str()).ok())
        .collect();
    copies
        .positions()
        .into_iter()
        .map(|(partition, next)| {
            let mut behind = 0u64;
            for (name, next) in names.iter().zip(next) {
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: the consumer's handle outlives the call, `name` is
                // NUL-terminated, librdkafka writes only the two i64s; the
                // call reads cached state and never blocks on the network.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        consumer.client().native_ptr(),
                        name.as_ptr(),
                        partition.0,
                        &mut low,
                        &mut high,
                    )
                };
                if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    || high < 0
                {
                    continue;
                }
                let from = next.unwrap_or(low.max(0));
                behind += u64::try_from(high - from).unwrap_or(0);
            }
            StandbyLag {
                partition,
                offsets_behind: behind,
            }
        })
        .collect()
}
