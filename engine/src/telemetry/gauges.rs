//! The per-shard live gauges other threads read: status, restore progress,
//! readiness. Atomics with one writer each (the shard).
//! Must never: be written by two shards, or take a lock.

use super::*;

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
