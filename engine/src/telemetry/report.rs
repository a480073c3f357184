//! What a shard publishes about once a second: counter deltas
//! ([`ShardStats`]), interval histograms, consumer lag and store sizes.
//! Must never: hold anything a shard still writes (a report is moved, not
//! shared).

use super::*;

/// Counters a shard keeps for itself; published as metrics in its reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub commits: u64,
    pub changelog_records: u64,
    pub restored_records: u64,
    pub restored_bytes: u64,
    /// Partition restores completed (one per partition per assignment).
    pub restores: u64,
    /// Transactions rolled back in memory (before-images put back, inputs
    /// rewound) instead of a restart and restore.
    pub rollbacks: u64,
    /// From the port: transactions aborted to discard uncommitted work.
    pub transaction_aborts: u64,
    /// From the port: sends retried after waiting for a full producer queue.
    pub send_retries: u64,
    /// From the port: waits for a lagging co-partitioned input topic.
    pub input_order_waits: u64,
    /// From the port: such waits that ran out (processing went on).
    pub input_order_enforced: u64,
    /// Nanoseconds the shard spent blocked in commits (its input waits
    /// meanwhile): the share of a shard's time a commit costs.
    pub commit_blocked_ns: u64,
}

impl ShardStats {
    /// Field-wise `self - earlier` (counters only grow, so never negative).
    pub fn minus(&self, earlier: &ShardStats) -> ShardStats {
        self.zip(earlier, u64::saturating_sub)
    }

    /// Field-wise sum.
    pub fn plus(&self, other: &ShardStats) -> ShardStats {
        self.zip(other, u64::saturating_add)
    }

    fn zip(&self, o: &ShardStats, f: fn(u64, u64) -> u64) -> ShardStats {
        ShardStats {
            records_in: f(self.records_in, o.records_in),
            records_out: f(self.records_out, o.records_out),
            dead_lettered: f(self.dead_lettered, o.dead_lettered),
            commits: f(self.commits, o.commits),
            changelog_records: f(self.changelog_records, o.changelog_records),
            restored_records: f(self.restored_records, o.restored_records),
            restored_bytes: f(self.restored_bytes, o.restored_bytes),
            restores: f(self.restores, o.restores),
            rollbacks: f(self.rollbacks, o.rollbacks),
            transaction_aborts: f(self.transaction_aborts, o.transaction_aborts),
            send_retries: f(self.send_retries, o.send_retries),
            input_order_waits: f(self.input_order_waits, o.input_order_waits),
            input_order_enforced: f(self.input_order_enforced, o.input_order_enforced),
            commit_blocked_ns: f(self.commit_blocked_ns, o.commit_blocked_ns),
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
