//! The Kafka port: what a shard needs from Kafka, as a trait, so the same shard
//! code runs against real Kafka (`kafka::RdKafkaPort`) and against the seeded
//! simulation (`sim::SimPort`).
//!
//! Owns: the shapes of records in and out, rebalance notifications, and the
//! commit contract ("everything sent so far is durable before these offsets are").
//! Must never: expose rdkafka types; nothing outside `kafka` sees them.

use std::time::Duration;

use crate::ids::{Offset, PartitionId, TopicIdx};
use crate::store::{ChangelogApply, StoreCodecError};

/// One input record, borrowed from the port until the next `poll`.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    pub topic: TopicIdx,
    pub partition: PartitionId,
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub timestamp_ms: i64,
}

/// What one `poll` found.
#[derive(Debug)]
pub enum Polled<'a> {
    Record(InputRecord<'a>),
    /// The shard now owns these partitions (of every input topic); it must
    /// restore their stores before it sees their records.
    Assigned(Vec<PartitionId>),
    /// The shard no longer owns these partitions.
    Revoked(Vec<PartitionId>),
    /// Nothing to do right now.
    Idle,
}

/// A record for the producer.
#[derive(Clone, Copy, Debug)]
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub partition: PartitionId,
    pub key: Option<&'a [u8]>,
    /// `None` writes a tombstone (changelog deletes).
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// The next offset to read of one input topic's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputOffset {
    pub topic: TopicIdx,
    pub partition: PartitionId,
    pub next: Offset,
}

/// How much a restore read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub records: u64,
    pub bytes: u64,
    /// Where the restore ended: every committed record of the changelog
    /// partition below this offset is applied (`None` where the port does
    /// not say). A shard that gives the partition up hands its stores to the
    /// standby keeper with it, which re-reads from there.
    pub next: Option<Offset>,
}

/// Where the consumer stands in one assigned input partition, from what the
/// client already knows (no broker request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputPosition {
    pub topic: TopicIdx,
    pub partition: PartitionId,
    /// The next offset the consumer hands to the shard, once it has fetched.
    pub position: Option<Offset>,
    /// The partition's high watermark as of the last fetch response.
    pub end: Option<Offset>,
}

/// Counts a port keeps about its clients, since they were created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Sends that waited for room in a full producer queue and went again.
    pub send_retries: u64,
    /// Transactions aborted to discard uncommitted work (revocations,
    /// roll-backs after an abortable commit error).
    pub transaction_aborts: u64,
    /// Times a partition waited for a lagging co-partitioned input topic
    /// before handing over its earliest record (see `kafka::input_order`).
    pub input_order_waits: u64,
    /// Times such a wait ran out and the shard went on without that topic.
    pub input_order_enforced: u64,
}

/// A failure at the Kafka boundary, classified so the caller knows whether a
/// retry can help.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{op}: {message}")]
    Kafka {
        op: &'static str,
        message: String,
        retryable: bool,
    },
    /// The cluster refused this principal (a missing ACL, wrong credentials):
    /// not retryable, and not cured by a restart.
    #[error(
        "{op}: not authorized by the Kafka cluster: {message}; grant the ACLs \
         `tradeflow acls` prints for this process, or fix [kafka.security] in the core map"
    )]
    NotAuthorized { op: &'static str, message: String },
    /// The open transaction cannot commit, but the clients are sound: abort
    /// it and redo the work since the last commit (see
    /// [`KafkaPort::roll_back`]). Nothing of it was committed.
    #[error("{op}: the transaction must be aborted: {message}")]
    TransactionAbortable { op: &'static str, message: String },
    #[error("restoring {changelog} {partition}: {source}")]
    CorruptChangelog {
        changelog: String,
        partition: PartitionId,
        source: StoreCodecError,
    },
    #[error("partition {partition} of {topic} was assigned without the co-partitioned {missing}")]
    NotCoPartitioned {
        topic: String,
        partition: PartitionId,
        missing: String,
    },
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PortError::Kafka {
                retryable: true,
                ..
            }
        )
    }

    /// Whether aborting the open transaction and redoing the work since the
    /// last commit, with the same clients, cures it.
    pub fn is_abortable(&self) -> bool {
        matches!(self, PortError::TransactionAbortable { .. })
    }
}

/// What [`KafkaPort::rewind`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewind {
    /// Uncommitted outputs were discarded and the kept partitions will be read
    /// again from their committed offsets: their state must be restored anew.
    Done,
    /// Nothing to discard (at-least-once: what was sent stays sent, and replays
    /// are deduplicated by the stages).
    NotNeeded,
}

/// What a shard needs from Kafka. Implementations are owned by one shard and
/// used from its thread only.
pub trait KafkaPort {
    /// Hands the next record or ownership change to `handler`, without blocking.
    /// The record borrows the client's buffer for the handler's duration only,
    /// which is what lets a shard decode it in place.
    fn poll<R>(&mut self, handler: impl FnOnce(Polled<'_>) -> R) -> Result<R, PortError>;

    /// Blocks until input may be there (a record, an ownership change) or
    /// `max` has passed, whichever comes first; the next [`Self::poll`]
    /// hands it over. For an idle shard: it sleeps in its client and wakes
    /// when a fetch brings a record, instead of re-polling on a timer.
    fn wait_for_input(&mut self, max: Duration) -> Result<(), PortError> {
        let _ = max;
        Ok(())
    }

    /// Queues a record for sending (not yet durable).
    fn send(&mut self, record: &OutRecord<'_>) -> Result<(), PortError>;

    /// Queues a changelog record. Changelog writes of one commit must become
    /// visible all together or not at all (see [`KafkaPort::checkpoint`]).
    fn send_changelog(&mut self, record: &OutRecord<'_>) -> Result<(), PortError> {
        self.send(record)
    }

    /// Makes the changelog records sent since the last checkpoint durable as
    /// one atomic unit, before any output of the same commit is sent. Under
    /// exactly-once they travel in the commit's transaction and this does
    /// nothing; under at-least-once it commits them in a transaction of their
    /// own, so a crash never leaves a partially written state behind (one
    /// store ahead of another) for a restore to trip over.
    fn checkpoint(&mut self) -> Result<(), PortError> {
        Ok(())
    }

    /// Makes every record sent so far durable, then commits `offsets`. Under
    /// exactly-once both happen in one transaction. Under at-least-once the
    /// offsets may commit after this returns, once the records sent before
    /// them are acknowledged, never earlier (the state checkpoint already
    /// holds their decisions, so a crash in between re-emits the same
    /// outputs). On error nothing may be assumed committed.
    ///
    /// `waiting` is called while the commit waits on the broker for its
    /// records' acknowledgements, at least every millisecond of that wait:
    /// the shard answers state queries there, so a query never waits out a
    /// commit. It must not change the shard's state or send anything.
    fn commit(
        &mut self,
        offsets: &[InputOffset],
        waiting: &mut dyn FnMut(),
    ) -> Result<(), PortError>;

    /// Discards what was sent since the last commit (aborting the open
    /// transaction under exactly-once) and moves `keep`'s read positions back to
    /// their committed offsets. Called when partitions are revoked with
    /// uncommitted work, which must not commit without its input offsets.
    fn rewind(&mut self, keep: &[PartitionId]) -> Result<Rewind, PortError>;

    /// Aborts the open transaction (what was sent since the last commit is
    /// discarded) and moves each listed input partition back to its `next`
    /// offset, keeping the clients and the assignment: the shard undoes its
    /// state in memory instead of restoring it. An error means the clients
    /// cannot go on (a fenced or fatal producer): the shard restarts.
    fn roll_back(&mut self, resume: &[InputOffset]) -> Result<(), PortError> {
        let _ = resume;
        Err(PortError::Kafka {
            op: "roll_back",
            message: "this port cannot roll a transaction back".into(),
            retryable: false,
        })
    }

    /// Feeds every record of a changelog partition, from its start to its end
    /// at the time of the call, to `apply`.
    fn restore(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        apply: &mut ChangelogApply<'_>,
    ) -> Result<RestoreStats, PortError>;

    /// Feeds the records of a changelog partition from offset `from` (a
    /// standby copy's next offset: what came before is applied already) to
    /// its end, the same end as [`Self::restore`]'s. The default reads the
    /// partition from its start: applying the whole changelog in order over
    /// a copy of a prefix of it gives the same state, only slower.
    fn restore_tail(
        &mut self,
        changelog: &str,
        partition: PartitionId,
        from: Offset,
        apply: &mut ChangelogApply<'_>,
    ) -> Result<RestoreStats, PortError> {
        let _ = from;
        self.restore(changelog, partition, apply)
    }

    /// Records in a changelog partition now (an upper bound on the keys its
    /// restore brings back), so the shard can size a store once before the
    /// restore; `None` where the port cannot tell.
    fn changelog_records(
        &mut self,
        changelog: &str,
        partition: PartitionId,
    ) -> Result<Option<u64>, PortError> {
        let _ = (changelog, partition);
        Ok(None)
    }

    /// Appends the position and end of every assigned input partition to
    /// `out`, from the client's cache (for consumer lag; called about once a
    /// second, never per record). Ports that cannot tell append nothing.
    fn positions(&mut self, out: &mut Vec<InputPosition>) {
        let _ = out;
    }

    /// What the port counted since its clients were created.
    fn counters(&self) -> PortCounters {
        PortCounters::default()
    }
}
