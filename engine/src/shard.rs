//! A shard: one stage's processing of the partitions one core owns. Pure logic
//! over a [`KafkaPort`]; the runtime decides when it steps and commits.
//!
//! Owns: the partitions it was assigned, their stores, their processed and
//! committed offsets, and the commit cycle (changelog writes, then offsets).
//! Must never: process a record of a partition it does not own, process a
//! partition before its stores are restored, or commit an offset before the
//! state change it caused was handed to the port in the same commit.
//!
//! Lives on: one core; nothing in it is shared with another shard. Its
//! telemetry is recorded in place (`telemetry::ShardTelemetry`) and leaves
//! the core only as a report the runtime publishes between batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashMap;
use tracing::{debug, info, warn};

use crate::changelog::{ChangelogLayout, Changelogs};
use crate::ids::{Offset, PartitionId, ShardId, TopicIdx, INPUT_TOPICS_MAX};
use crate::port::{
    InputOffset, InputPosition, InputRecord, KafkaPort, OutRecord, Polled, PortError, Rewind,
};
use crate::stage::{ErrorClass, Input, Outbox, Stage};
use crate::standby::{StandbyHandle, WarmCopy};
use crate::store::{PartitionStores, StoreEntries};
pub use crate::telemetry::ShardStats;
use crate::telemetry::{
    PartitionLag, ReportBody, ShardGauges, ShardReport, ShardTelemetry, StoreSize, Timing,
};
use crate::topics::dead_letter_topic;
use crate::wire::WireReader;
use hdrhistogram::Histogram;

/// Why a shard stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{shard}: {source}")]
    Port {
        shard: ShardId,
        #[source]
        source: PortError,
    },
    #[error("{shard}: stage {stage} reads {count} topics, more than {max}")]
    TooManyInputs {
        shard: ShardId,
        stage: &'static str,
        count: usize,
        max: usize,
    },
}

/// When a shard hands what its stage emitted to the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputTiming {
    /// At once, inside the open transaction (exactly-once: an abort discards
    /// them): the lowest latency.
    Immediate,
    /// At the commit, just before the changelog writes (at-least-once): a
    /// crash or revocation before the commit leaves nothing of the batch
    /// behind, so a replay can never contradict outputs already sent.
    AtCommit,
}

/// Held outputs past this many bytes make the runtime commit early, bounding
/// the memory an `AtCommit` shard holds between commits.
pub const HELD_OUTPUT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What one `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Processed,
    DeadLettered,
    Rebalanced,
    Idle,
}

/// What a poll asked the shard to do once the record's borrow has ended.
enum Action {
    Idle,
    Assign(Vec<PartitionId>),
    Revoke(Vec<PartitionId>),
    Processed(Step),
}

struct OwnedPartition<St> {
    state: St,
    /// Next offset to process, per input topic.
    next: [Option<Offset>; INPUT_TOPICS_MAX],
    /// Next offset to read as of the last successful commit, per input topic.
    committed: [Option<Offset>; INPUT_TOPICS_MAX],
    /// The first offset processed since the partition was assigned: where
    /// the group's committed offset stood then (for lag before a commit).
    resumed_from: [Option<Offset>; INPUT_TOPICS_MAX],
    /// Per changelog topic (`Changelogs::topics`: per store, or one for the
    /// shared layout), where its restore ended (`RestoreStats::next`): the
    /// state holds every committed changelog record below it, and this
    /// shard has been the partition's only writer since. A revoke hands the
    /// stores to the standby keeper with these as the copy's read positions.
    restored_to: Vec<Option<i64>>,
}

/// Names a shard writes to, computed once.
struct TopicNames {
    inputs: Vec<&'static str>,
    application_id: String,
    changelogs: Changelogs,
    dead_letters: Vec<String>,
    /// Reused to build shared-layout changelog keys (store prefix + key).
    changelog_key: Vec<u8>,
}

/// One stage on one core. See the module doc.
pub struct Shard<S: Stage, P: KafkaPort> {
    id: ShardId,
    stage: S,
    port: P,
    topics: TopicNames,
    owned: HashMap<PartitionId, OwnedPartition<S::State>>,
    outbox: Outbox,
    /// Decodes input records, rkyv or Avro (see `wire`).
    wire: WireReader,
    stats: ShardStats,
    uncommitted: bool,
    output_timing: OutputTiming,
    telemetry: ShardTelemetry,
    gauges: Arc<ShardGauges>,
    /// Reused by each report's lag reading.
    positions: Vec<InputPosition>,
    /// The stores keep before-images, so an aborted transaction is undone
    /// in memory ([`Shard::roll_back`]) instead of restored.
    undo: bool,
    /// The way to the node's standby keeper (`[state] standby_replicas` >
    /// 0): `assign` asks it for a partition's warm copy and restores only
    /// its tail; `revoke` hands the partition's committed stores back to it.
    /// `None`: every assignment restores in full, as without standbys.
    standbys: Option<StandbyHandle<S::State>>,
    /// Counts assignments and revocations, so the runtime reports a change
    /// of ownership at once instead of at its next periodic report.
    ownership_changes: u64,
}

impl<S: Stage, P: KafkaPort> Shard<S, P> {
    /// `partitions`: the partition count shared by every topic of the flow.
    pub fn new(
        id: ShardId,
        application_id: &str,
        stage: S,
        port: P,
        partitions: i32,
    ) -> Result<Self, ShardError> {
        let inputs = stage.input_topics().to_vec();
        if inputs.len() > INPUT_TOPICS_MAX {
            return Err(ShardError::TooManyInputs {
                shard: id,
                stage: stage.name(),
                count: inputs.len(),
                max: INPUT_TOPICS_MAX,
            });
        }
        let changelogs = Changelogs::new(
            ChangelogLayout::default(),
            application_id,
            S::State::store_names(),
        );
        let dead_letters = inputs.iter().map(|t| dead_letter_topic(t)).collect();
        let telemetry = ShardTelemetry::new(&inputs);
        let formats = stage.wire_formats();
        Ok(Shard {
            id,
            stage,
            port,
            topics: TopicNames {
                inputs,
                application_id: application_id.to_string(),
                changelogs,
                dead_letters,
                changelog_key: Vec::with_capacity(64),
            },
            owned: HashMap::new(),
            outbox: Outbox::new(partitions).with_wire_formats(&formats),
            wire: WireReader::new(formats),
            stats: ShardStats::default(),
            uncommitted: false,
            output_timing: OutputTiming::Immediate,
            telemetry,
            gauges: Arc::new(ShardGauges::default()),
            positions: Vec::new(),
            undo: false,
            standbys: None,
            ownership_changes: 0,
        })
    }

    /// Keeps state in the changelogs of `layout` (`[state]
    /// changelog_layout`; default per-store). Set before the first
    /// assignment: a partition's stores are restored from, and written to,
    /// this layout's topics only.
    pub fn with_changelog_layout(mut self, layout: ChangelogLayout) -> Self {
        self.topics.changelogs =
            Changelogs::new(layout, &self.topics.application_id, S::State::store_names());
        self
    }

    /// The changelog topics this shard writes and restores from (logical
    /// names).
    pub fn changelogs(&self) -> &Changelogs {
        &self.topics.changelogs
    }

    /// Takes over partitions from the node's standby copies when it has one
    /// (see [`crate::standby`]).
    pub fn with_standbys(mut self, standbys: StandbyHandle<S::State>) -> Self {
        self.standbys = Some(standbys);
        self
    }

    /// Keeps `gauges` (restore progress, assignment) current for other
    /// threads to read.
    pub fn with_gauges(mut self, gauges: Arc<ShardGauges>) -> Self {
        self.gauges = gauges;
        self
    }

    /// Times one record in `every` (a power of two; 1 times them all) instead
    /// of [`RECORD_TIMING_SAMPLE_EVERY`](crate::telemetry::RECORD_TIMING_SAMPLE_EVERY).
    pub fn with_timing_sample_every(mut self, every: u64) -> Self {
        self.telemetry.sample_every(every);
        self
    }

    /// Reuses the histograms the telemetry hub empties after each report.
    pub fn with_spare_histograms(
        mut self,
        spares: crossbeam_channel::Receiver<Histogram<u64>>,
    ) -> Self {
        self.telemetry.set_spares(spares);
        self
    }

    /// The shard's recorder (tests and benches read its histograms).
    pub fn telemetry(&self) -> &ShardTelemetry {
        &self.telemetry
    }

    /// Keeps, per transaction, the before-image of each key the first time
    /// it changes, so that [`Self::roll_back`] can undo an aborted
    /// transaction without a restore (exactly-once; off by default: it
    /// costs a clone of each value changed per batch).
    pub fn with_undo(mut self, on: bool) -> Self {
        self.undo = on;
        for owned in self.owned.values_mut() {
            owned.state.for_each_store(&mut |store| store.keep_undo(on));
        }
        self
    }

    /// Whether [`Self::roll_back`] can cure `error`: an abortable
    /// transaction, on a shard that keeps before-images.
    pub fn can_roll_back(&self, error: &ShardError) -> bool {
        self.undo && matches!(error, ShardError::Port { source, .. } if source.is_abortable())
    }

    /// Chooses when outputs go to the producer (default: immediately).
    pub fn with_output_timing(mut self, timing: OutputTiming) -> Self {
        self.output_timing = timing;
        self
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Whether held outputs have grown past [`HELD_OUTPUT_BYTES_MAX`] and the
    /// shard should commit now.
    pub fn wants_commit(&self) -> bool {
        self.outbox.bytes_len() > HELD_OUTPUT_BYTES_MAX
    }

    pub fn stats(&self) -> ShardStats {
        let port = self.port.counters();
        ShardStats {
            transaction_aborts: port.transaction_aborts,
            send_retries: port.send_retries,
            input_order_waits: port.input_order_waits,
            input_order_enforced: port.input_order_enforced,
            ..self.stats
        }
    }

    /// Everything measured since the last report, and the current lag, store
    /// sizes and owned partitions; the recorder carries on empty. Give it
    /// back with [`Self::take_back`] if it could not be delivered.
    pub fn report(&mut self) -> ShardReport {
        let body = self.telemetry.take(self.stats());
        let mut positions = std::mem::take(&mut self.positions);
        positions.clear();
        self.port.positions(&mut positions);
        let mut lag = Vec::with_capacity(positions.len());
        for input in &positions {
            let Some(owned) = self.owned.get(&input.partition) else {
                continue;
            };
            let topic = input.topic.0 as usize;
            let Some(end) = input.end else { continue };
            // The offset the group resumes from: the last commit, or where
            // the consumer started before anything was processed.
            let committed = match (owned.committed[topic], input.position) {
                // A transactional producer ends each transaction with a
                // marker the shard never sees as a record; when everything
                // read is committed and the consumer stands at the end, the
                // partition is caught up even though the committed offset
                // stops before the marker.
                (Some(c), Some(p)) if owned.next[topic] == Some(c) && p >= end => end,
                (Some(c), _) => c,
                // Nothing committed since the assignment: the group's offset
                // is where processing resumed, or where the consumer stands.
                (None, position) => match owned.resumed_from[topic].or(position) {
                    Some(offset) => offset,
                    None => continue,
                },
            };
            lag.push(PartitionLag {
                topic: self.topics.inputs[topic],
                partition: input.partition,
                committed,
                end,
            });
        }
        self.positions = positions;
        let mut stores: Vec<StoreSize> = S::State::store_names()
            .into_iter()
            .map(|store| StoreSize {
                store,
                ..StoreSize::default()
            })
            .collect();
        for owned in self.owned.values_mut() {
            let mut index = 0;
            owned.state.for_each_store(&mut |store| {
                if let Some(size) = stores.get_mut(index) {
                    size.entries += store.len() as u64;
                    size.bytes += store.table_bytes() as u64;
                }
                index += 1;
            });
        }
        ShardReport {
            shard: self.id,
            service: self.stage.name(),
            body,
            lag,
            stores,
            owned: self.owned_partitions(),
            send_retries: self.port.counters().send_retries,
        }
    }

    /// Takes back a report that could not be delivered (see [`Self::report`]).
    pub fn take_back(&mut self, report: ShardReport) {
        self.telemetry.restore(report.body);
    }

    /// The recorder's part of a report alone (tests).
    pub fn take_report_body(&mut self) -> ReportBody {
        self.telemetry.take(self.stats())
    }

    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// How many times the owned partitions changed (wrapping): a report
    /// made at another count may show other partitions than the shard owns.
    pub fn ownership_changes(&self) -> u64 {
        self.ownership_changes
    }

    /// The owned partitions changed: the gauges say so now, and the count
    /// tells the runtime to report them.
    fn owned_changed(&mut self) {
        self.gauges.set_owned(self.owned.keys().map(|p| p.0));
        self.ownership_changes = self.ownership_changes.wrapping_add(1);
    }

    /// Partitions this shard owns now, sorted.
    pub fn owned_partitions(&self) -> Vec<PartitionId> {
        let mut owned: Vec<_> = self.owned.keys().copied().collect();
        owned.sort();
        owned
    }

    /// Whether anything was processed since the last commit.
    pub fn has_uncommitted(&self) -> bool {
        self.uncommitted
    }

    /// Processed and committed offsets of one owned partition, per input topic.
    pub fn progress(
        &self,
        partition: PartitionId,
    ) -> Option<Vec<(Option<Offset>, Option<Offset>)>> {
        let owned = self.owned.get(&partition)?;
        Some(
            (0..self.topics.inputs.len())
                .map(|i| (owned.next[i], owned.committed[i]))
                .collect(),
        )
    }

    /// Every store of every owned partition in changelog byte form, for comparing
    /// state across restarts and against references.
    pub fn dump(&mut self) -> BTreeMap<(PartitionId, &'static str), StoreEntries> {
        let mut out = BTreeMap::new();
        for (partition, owned) in self.owned.iter_mut() {
            owned.state.for_each_store(&mut |store| {
                out.insert((*partition, store.name()), store.dump());
            });
        }
        out
    }

    /// Read access to one partition's stores.
    pub fn state(&self, partition: PartitionId) -> Option<&S::State> {
        self.owned.get(&partition).map(|o| &o.state)
    }

    /// Sleeps in the port until input may be there or `max` has passed (see
    /// [`KafkaPort::wait_for_input`]).
    pub fn wait_for_input(&mut self, max: std::time::Duration) -> Result<(), ShardError> {
        let id = self.id;
        self.port
            .wait_for_input(max)
            .map_err(|source| ShardError::Port { shard: id, source })
    }

    /// Polls the port once and handles what it returns.
    pub fn step(&mut self) -> Result<Step, ShardError> {
        let id = self.id;
        let stage = &mut self.stage;
        let owned = &mut self.owned;
        let outbox = &mut self.outbox;
        let wire = &mut self.wire;
        let topics = &self.topics;
        let telemetry = &mut self.telemetry;
        let mut processed_at = None;
        let action = self
            .port
            .poll(|polled| match polled {
                Polled::Idle => Action::Idle,
                Polled::Assigned(partitions) => Action::Assign(partitions),
                Polled::Revoked(partitions) => Action::Revoke(partitions),
                Polled::Record(record) => {
                    // A sampled record is timed; every record gets its
                    // end-to-end latency against a recent clock reading.
                    let sampled = telemetry.start_record();
                    let step =
                        process_record(id, stage, owned, outbox, wire, topics, telemetry, &record);
                    if let Some(started) = sampled {
                        processed_at = Some(telemetry.record_since(
                            Timing::Process,
                            record.topic.0 as usize,
                            started,
                        ));
                    }
                    Action::Processed(step)
                }
            })
            .map_err(|source| ShardError::Port { shard: id, source })?;
        match action {
            Action::Idle => {
                // Time passes while idle: the next record reads the clock.
                self.telemetry.clock_went_stale();
                Ok(Step::Idle)
            }
            Action::Assign(partitions) => {
                self.assign(&partitions)?;
                Ok(Step::Rebalanced)
            }
            Action::Revoke(partitions) => {
                self.revoke(&partitions)?;
                Ok(Step::Rebalanced)
            }
            Action::Processed(step) => {
                self.uncommitted = true;
                self.stats.records_in += 1;
                if step == Step::DeadLettered {
                    self.stats.dead_lettered += 1;
                }
                if self.output_timing == OutputTiming::Immediate && !self.outbox.is_empty() {
                    self.flush_outbox()?;
                    if let Some(processed_at) = processed_at {
                        self.telemetry.record_since(Timing::Send, 0, processed_at);
                    }
                }
                Ok(step)
            }
        }
    }

    fn flush_outbox(&mut self) -> Result<(), ShardError> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let id = self.id;
        for (entry, key, payload) in self.outbox.iter() {
            let record = OutRecord {
                topic: entry.topic,
                partition: entry.partition,
                key: Some(key),
                payload: Some(payload),
                headers: &[],
            };
            self.port
                .send(&record)
                .map_err(|source| ShardError::Port { shard: id, source })?;
        }
        for letter in self.outbox.dead_letters() {
            let headers: Vec<(&str, &[u8])> = letter
                .headers
                .iter()
                .map(|(k, v)| (*k, v.as_slice()))
                .collect();
            let record = OutRecord {
                topic: &letter.topic,
                partition: letter.partition,
                key: letter.key.as_deref(),
                payload: letter.payload.as_deref(),
                headers: &headers,
            };
            self.port
                .send(&record)
                .map_err(|source| ShardError::Port { shard: id, source })?;
        }
        self.stats.records_out += self.outbox.len() as u64;
        self.outbox.clear();
        Ok(())
    }

    /// Takes ownership of `partitions`: restores each one's stores from its
    /// changelogs before any of its records is processed.
    pub fn assign(&mut self, partitions: &[PartitionId]) -> Result<(), ShardError> {
        let new: Vec<PartitionId> = partitions
            .iter()
            .copied()
            .filter(|p| !self.owned.contains_key(p))
            .collect();
        // The warm standby copies of them all, asked for at once (one wait
        // for the keeper), if the node keeps any.
        let mut warm_copies = match &self.standbys {
            Some(standbys) => standbys.take(&new),
            None => Vec::new(),
        }
        .into_iter();
        for partition in new {
            // Log lines of the restore carry the partition (and, through the
            // runtime's span, the shard and service).
            let _span = tracing::info_span!("restore", %partition).entered();
            // A warm standby copy, if the node kept one: only the tail after
            // its read positions is restored.
            let warm = warm_copies.next().flatten().filter(|copy| !copy.poisoned);
            let (mut state, from) = match warm {
                Some(copy) => (copy.state, Some(copy.next)),
                None => (S::State::default(), None),
            };
            let started = self.telemetry.ticks();
            self.gauges.restore_started();
            let restored = match self.topics.changelogs.layout() {
                ChangelogLayout::PerStore => self.restore_per_store(partition, &mut state, from),
                ChangelogLayout::Shared => self.restore_shared(partition, &mut state, from),
            };
            self.gauges.restore_finished();
            let restored_to = match restored {
                Ok(restored_to) => restored_to,
                Err(source) => {
                    return Err(ShardError::Port {
                        shard: self.id,
                        source,
                    })
                }
            };
            self.telemetry.record_since(Timing::Restore, 0, started);
            self.stats.restores += 1;
            if self.undo {
                state.for_each_store(&mut |store| store.keep_undo(true));
            }
            self.owned.insert(
                partition,
                OwnedPartition {
                    state,
                    next: [None; INPUT_TOPICS_MAX],
                    committed: [None; INPUT_TOPICS_MAX],
                    resumed_from: [None; INPUT_TOPICS_MAX],
                    restored_to,
                },
            );
            debug!(shard = %self.id, %partition, "partition assigned and restored");
        }
        self.gauges.set_assigned();
        self.owned_changed();
        Ok(())
    }

    /// Restores `partition`'s stores into `state`, each from its own
    /// changelog (per-store layout): in full, or from a warm copy's read
    /// positions (`from`, one per store). Returns where each store's
    /// restore ended.
    fn restore_per_store(
        &mut self,
        partition: PartitionId,
        state: &mut S::State,
        from: Option<Vec<Option<i64>>>,
    ) -> Result<Vec<Option<i64>>, PortError> {
        let mut failure = None;
        let mut store_index = 0;
        let changelogs = self.topics.changelogs.topics();
        let mut restored_to = Vec::with_capacity(changelogs.len());
        let port = &mut self.port;
        let stats = &mut self.stats;
        let gauges = &self.gauges;
        state.for_each_store(&mut |store| {
            if failure.is_some() {
                return;
            }
            let changelog = &changelogs[store_index];
            let tail_from = from
                .as_ref()
                .map(|next| next.get(store_index).copied().flatten());
            store_index += 1;
            if let Some(tail_from) = tail_from {
                let mut apply = |k: &[u8], v: Option<&[u8]>| {
                    gauges.restored((k.len() + v.map_or(0, <[u8]>::len)) as u64);
                    store.apply(k, v)
                };
                // A store the copy never read (`None`) restores in full.
                let restored = match tail_from {
                    Some(next) => port.restore_tail(changelog, partition, Offset(next), &mut apply),
                    None => port.restore(changelog, partition, &mut apply),
                };
                match restored {
                    Ok(restored) => {
                        stats.restored_records += restored.records;
                        stats.restored_bytes += restored.bytes;
                        restored_to.push(restored.next.map(|o| o.0));
                        info!(
                            changelog = %changelog, %partition, from = ?tail_from,
                            records = restored.records, entries = store.len(),
                            "took over a standby copy; restored its tail"
                        );
                    }
                    Err(e) => failure = Some(e),
                }
                return;
            }
            // Sized once from the changelog's extent, not grown 20 times.
            match port.changelog_records(changelog, partition) {
                Ok(Some(records)) => {
                    store.reserve(usize::try_from(records).unwrap_or(usize::MAX));
                }
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    return;
                }
            }
            let mut apply = |k: &[u8], v: Option<&[u8]>| {
                gauges.restored((k.len() + v.map_or(0, <[u8]>::len)) as u64);
                store.apply(k, v)
            };
            let restored = port.restore(changelog, partition, &mut apply);
            // An uncompacted changelog holds more records than keys:
            // give back what the reservation overshot.
            store.restored();
            match restored {
                Ok(restored) => {
                    stats.restored_records += restored.records;
                    stats.restored_bytes += restored.bytes;
                    restored_to.push(restored.next.map(|o| o.0));
                    info!(
                        changelog = %changelog, %partition, records = restored.records,
                        bytes = restored.bytes, entries = store.len(), "restored store"
                    );
                }
                Err(e) => failure = Some(e),
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(restored_to),
        }
    }

    /// Restores `partition`'s stores into `state` from the one shared
    /// changelog (shared layout), each record routed to its store by its
    /// key's prefix: in full, or from a warm copy's read position (`from`,
    /// its first entry). A prefix that names no store fails the restore as
    /// a corrupt changelog. Returns where the restore ended.
    fn restore_shared(
        &mut self,
        partition: PartitionId,
        state: &mut S::State,
        from: Option<Vec<Option<i64>>>,
    ) -> Result<Vec<Option<i64>>, PortError> {
        let changelogs = &self.topics.changelogs;
        let changelog = &changelogs.topics()[0];
        let gauges = &self.gauges;
        let tail_from = from.map(|next| next.first().copied().flatten());
        if tail_from.is_none() {
            // The partition's records are shared by every store: each is
            // sized for an even share, then grows (at most a few doublings
            // for the stores that hold most keys).
            if let Some(records) = self.port.changelog_records(changelog, partition)? {
                let stores = changelogs.stores().len().max(1) as u64;
                let share = usize::try_from(records / stores).unwrap_or(usize::MAX);
                state.for_each_store(&mut |store| store.reserve(share));
            }
        }
        let mut apply = |k: &[u8], v: Option<&[u8]>| {
            gauges.restored((k.len() + v.map_or(0, <[u8]>::len)) as u64);
            let (store, key) = changelogs.route(0, k)?;
            state.apply_to(store, key, v)
        };
        let restored = match tail_from {
            Some(Some(next)) => {
                self.port
                    .restore_tail(changelog, partition, Offset(next), &mut apply)?
            }
            // A copy that never read the changelog restores in full.
            Some(None) | None => self.port.restore(changelog, partition, &mut apply)?,
        };
        if tail_from.is_none() {
            state.for_each_store(&mut |store| store.restored());
        }
        self.stats.restored_records += restored.records;
        self.stats.restored_bytes += restored.bytes;
        let mut entries = 0;
        state.for_each_store(&mut |store| entries += store.len());
        match tail_from {
            Some(tail_from) => info!(
                changelog = %changelog, %partition, from = ?tail_from,
                records = restored.records, entries,
                "took over a standby copy; restored its tail"
            ),
            None => info!(
                changelog = %changelog, %partition, records = restored.records,
                bytes = restored.bytes, entries, "restored partition"
            ),
        }
        Ok(vec![restored.next.map(|o| o.0)])
    }

    /// Gives up `partitions`: their state is dropped (the new owner restores it
    /// from the changelog), and whatever was not committed is redone there.
    /// Under exactly-once the open transaction holds outputs of the revoked
    /// partitions that must not commit without their offsets, so it is aborted
    /// and the partitions this shard keeps are rewound and restored.
    ///
    /// With standbys the revoked stores go to the node's keeper as its warm
    /// copies, at their last commit (before-images put back when a
    /// transaction is open), read again from where their restore ended;
    /// stores that may hold uncommitted changes with no before-images
    /// (at-least-once with work since the checkpoint) are dropped instead and
    /// the keeper copies the partition from its changelogs' start.
    pub fn revoke(&mut self, partitions: &[PartitionId]) -> Result<(), ShardError> {
        let committed_state = !self.uncommitted || self.undo;
        let uncommitted = self.uncommitted;
        for partition in partitions {
            let owned = self.owned.remove(partition);
            if owned.is_some() {
                debug!(shard = %self.id, %partition, "partition revoked");
            }
            if let Some(standbys) = &self.standbys {
                let copy = owned.filter(|_| committed_state).map(|mut owned| {
                    owned.state.for_each_store(&mut |store| {
                        if uncommitted {
                            // Back to the last commit: the open transaction
                            // is aborted below.
                            store.undo();
                        }
                        store.keep_undo(false);
                    });
                    WarmCopy {
                        state: owned.state,
                        next: owned.restored_to,
                        poisoned: false,
                    }
                });
                standbys.release(*partition, copy);
            }
        }
        self.owned_changed();
        if !self.uncommitted {
            return Ok(());
        }
        if self.undo {
            // The kept partitions' stores go back to the last commit in
            // memory; only the revoked ones will be restored (elsewhere).
            return self.roll_back();
        }
        let keep = self.owned_partitions();
        let id = self.id;
        let rewind = self
            .port
            .rewind(&keep)
            .map_err(|source| ShardError::Port { shard: id, source })?;
        if rewind == Rewind::Done {
            // Held or aborted outputs belong to work that will be redone.
            self.outbox.clear();
            for partition in &keep {
                self.owned.remove(partition);
            }
            self.assign(&keep)?;
            self.uncommitted = false;
            info!(shard = %id, kept = ?keep, "uncommitted work discarded after a revocation");
        }
        Ok(())
    }

    /// Sends every store entry changed since the last write to its changelog,
    /// inside the open transaction (exactly-once) or the open state
    /// checkpoint (at-least-once); nothing is committed. The runtime calls it
    /// after each batch so that the partitions' registration with the
    /// transaction and the records' acknowledgements overlap the processing
    /// of the next batch instead of all falling on the commit; `commit` calls
    /// it for what is left. A key changed in several batches is written once
    /// per batch (once per commit if only `commit` writes).
    pub fn write_changelogs(&mut self) -> Result<(), ShardError> {
        let id = self.id;
        let mut failure = None;
        let mut changelog_records = 0u64;
        let changelogs = &self.topics.changelogs;
        let key_buffer = &mut self.topics.changelog_key;
        for (partition, owned) in self.owned.iter_mut() {
            let mut store_index = 0;
            let port = &mut self.port;
            owned.state.for_each_store(&mut |store| {
                let index = store_index;
                let topic = &changelogs.topics()[changelogs.topic_of(index)];
                store_index += 1;
                store.write_dirty(&mut |key, value| {
                    if failure.is_some() {
                        return;
                    }
                    // Shared layout: the store's prefix, then its key.
                    let key = changelogs.write_key(index, key, key_buffer);
                    let record = OutRecord {
                        topic,
                        partition: *partition,
                        key: Some(key),
                        payload: value,
                        headers: &[],
                    };
                    changelog_records += 1;
                    if let Err(e) = port.send_changelog(&record) {
                        failure = Some(e);
                    }
                });
            });
        }
        self.stats.changelog_records += changelog_records;
        match failure {
            Some(source) => Err(ShardError::Port { shard: id, source }),
            None => Ok(()),
        }
    }

    /// Writes every changed store entry to its changelog (one atomic
    /// checkpoint), sends the held outputs, then commits the input offsets
    /// whose effects those writes contain.
    pub fn commit(&mut self) -> Result<(), ShardError> {
        self.commit_serving(&mut |_| {})
    }

    /// [`Shard::commit`], calling `serve` with a view of the owned state
    /// while the commit waits on the broker (see [`KafkaPort::commit`]):
    /// reads only, such as the API's queries, which then never wait out a
    /// commit. What they see is the state after the last batch, the same
    /// as between batches.
    pub fn commit_serving(&mut self, serve: &mut StateServe<'_, S>) -> Result<(), ShardError> {
        // State first, as one atomic checkpoint; then the held outputs; then
        // the offsets. A crash before the checkpoint loses the state changes
        // and sent no output of them, so the replay decides afresh; a crash
        // after it finds every decision recorded, so the replay re-emits the
        // recorded outputs byte for byte instead of deciding again.
        let started = self.telemetry.ticks();
        let id = self.id;
        self.write_changelogs()?;
        let mut offsets = Vec::new();
        for (partition, owned) in self.owned.iter_mut() {
            for (i, next) in owned.next.iter().enumerate() {
                if let Some(next) = next {
                    if owned.committed[i] != Some(*next) {
                        offsets.push(InputOffset {
                            topic: TopicIdx(i as u8),
                            partition: *partition,
                            next: *next,
                        });
                    }
                }
            }
        }
        self.port
            .checkpoint()
            .map_err(|source| ShardError::Port { shard: id, source })?;
        if !self.outbox.is_empty() {
            let sending = self.telemetry.ticks();
            self.flush_outbox()?;
            self.telemetry.record_since(Timing::Send, 0, sending);
        }
        let owned = &self.owned;
        let state_of = |partition: PartitionId| owned.get(&partition).map(|o| &o.state);
        self.port
            .commit(&offsets, &mut || serve(&state_of))
            .map_err(|source| ShardError::Port { shard: id, source })?;
        for offset in &offsets {
            if let Some(owned) = self.owned.get_mut(&offset.partition) {
                owned.committed[offset.topic.0 as usize] = Some(offset.next);
            }
        }
        if self.undo {
            for owned in self.owned.values_mut() {
                owned.state.for_each_store(&mut |store| store.forget_undo());
            }
        }
        self.stats.commits += 1;
        self.uncommitted = false;
        let ended = self.telemetry.record_since(Timing::Commit, 0, started);
        self.stats.commit_blocked_ns += self.telemetry.ticks_to_ns(started, ended);
        self.telemetry.clock_went_stale();
        Ok(())
    }

    /// Aborts the open transaction and takes every owned partition back to
    /// its last commit without a restore, with the same clients: each
    /// store puts its before-images back, held outputs are dropped, and each
    /// input is read again from its committed offset (or, with nothing
    /// committed since the assignment, from where processing resumed).
    /// Needs [`Self::with_undo`]; an error means the clients cannot go on
    /// (the runtime restarts the shard, which restores).
    pub fn roll_back(&mut self) -> Result<(), ShardError> {
        let id = self.id;
        if !self.undo {
            return Err(ShardError::Port {
                shard: id,
                source: PortError::Kafka {
                    op: "roll_back",
                    message: "the shard keeps no before-images".into(),
                    retryable: false,
                },
            });
        }
        let mut resume = Vec::new();
        for (partition, owned) in &self.owned {
            for topic in 0..self.topics.inputs.len() {
                if owned.next[topic].is_none() || owned.next[topic] == owned.committed[topic] {
                    continue;
                }
                if let Some(next) = owned.committed[topic].or(owned.resumed_from[topic]) {
                    resume.push(InputOffset {
                        topic: TopicIdx(topic as u8),
                        partition: *partition,
                        next,
                    });
                }
            }
        }
        self.port
            .roll_back(&resume)
            .map_err(|source| ShardError::Port { shard: id, source })?;
        let mut undone = 0usize;
        for owned in self.owned.values_mut() {
            owned
                .state
                .for_each_store(&mut |store| undone += store.undo());
            for topic in 0..INPUT_TOPICS_MAX {
                owned.next[topic] = owned.committed[topic];
                if owned.committed[topic].is_none() {
                    owned.resumed_from[topic] = None;
                }
            }
        }
        self.outbox.clear();
        self.uncommitted = false;
        self.stats.rollbacks += 1;
        info!(shard = %id, rewound = resume.len(), undone,
              "transaction aborted; state undone in memory, inputs rewound");
        Ok(())
    }

    /// Drops the shard as a crash would: nothing is committed, in-memory state is
    /// lost, and the port is handed back as it is.
    pub fn into_port(self) -> P {
        self.port
    }

    /// Commits what was processed and hands the port back for closing.
    pub fn shutdown(mut self) -> Result<P, ShardError> {
        if self.uncommitted {
            self.commit()?;
        }
        Ok(self.port)
    }

    /// Gives up the shard without committing (its final commit failed):
    /// the port, for the caller to close, which aborts any open transaction.
    /// Nothing since the last commit is kept.
    pub fn abandon(self) -> P {
        self.port
    }
}

/// What [`Shard::commit_serving`] calls while a commit waits: it is handed
/// the owned partitions' state by partition.
pub type StateServe<'a, S> =
    dyn for<'s> FnMut(&'s dyn Fn(PartitionId) -> Option<&'s <S as Stage>::State>) + 'a;

#[allow(clippy::too_many_arguments)] // the split borrows of one shard
fn process_record<S: Stage>(
    shard: ShardId,
    stage: &mut S,
    owned: &mut HashMap<PartitionId, OwnedPartition<S::State>>,
    outbox: &mut Outbox,
    wire: &mut WireReader,
    topics: &TopicNames,
    telemetry: &mut ShardTelemetry,
    record: &InputRecord<'_>,
) -> Step {
    let Some(partition) = owned.get_mut(&record.partition) else {
        // A record of a partition this shard does not own would corrupt another
        // shard's state; the port must never deliver one.
        panic!(
            "{shard} received {} offset {} of {}, which it does not own",
            record.partition, record.offset.0, topics.inputs[record.topic.0 as usize]
        );
    };
    let topic = record.topic.0 as usize;
    if partition.next[topic].is_none() {
        partition.resumed_from[topic] = Some(record.offset);
    }
    if let Some(next) = partition.next[topic] {
        assert!(
            record.offset >= next,
            "{shard}: offsets of {} {} went backwards ({} after {})",
            topics.inputs[topic],
            record.partition,
            record.offset.0,
            next.0
        );
    }
    partition.next[topic] = Some(record.offset.next());

    let input = Input {
        topic: record.topic,
        topic_name: topics.inputs[topic],
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
    };
    let verdict = match record.payload.map(|payload| wire.decode(payload)) {
        None => Err((
            ErrorClass::UserData,
            "missing_value",
            "record has no value".to_string(),
        )),
        Some(Err(e)) => Err((e.class(), e.reason(), e.to_string())),
        Some(Ok(event)) => {
            telemetry.record_end_to_end(topic, event.created_at_ns().0);
            let mark = outbox.mark();
            stage
                .process(&input, event, &mut partition.state, outbox)
                .map_err(|rejection| {
                    outbox.truncate(mark);
                    (rejection.class, "rejected", rejection.reason)
                })
        }
    };
    match verdict {
        Ok(()) => Step::Processed,
        Err((class, code, reason)) => {
            telemetry.dead_letter(class, code);
            warn!(
                %shard, topic = input.topic_name, partition = %record.partition,
                offset = record.offset.0, class = class.as_str(), %reason,
                "record dead-lettered"
            );
            dead_letter(outbox, topics, record, stage.name(), class, &reason);
            Step::DeadLettered
        }
    }
}

/// Queues the original record for `<topic>.dlq`; its headers say why.
fn dead_letter(
    outbox: &mut Outbox,
    topics: &TopicNames,
    record: &InputRecord<'_>,
    service: &str,
    class: ErrorClass,
    reason: &str,
) {
    outbox.dead_letter(crate::stage::DeadLetter {
        topic: &topics.dead_letters[record.topic.0 as usize],
        original_topic: topics.inputs[record.topic.0 as usize],
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key,
        payload: record.payload,
        service,
        class,
        reason,
    });
}
