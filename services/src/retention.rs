//! How long the per-order records of the three services are kept, and the
//! event-time clock that decides it.
//!
//! Owns: the default retention, the bound on eviction work per event, and
//! `StreamClock` (a partition's latest record timestamp). Each per-order
//! store (`order-orders`, `payment-orders`, `inventory-orders`) is an
//! `engine::Store::with_retention`; after each accepted event a service
//! evicts a few of its records whose retention has passed, and before it
//! decides on an order it forgets that order's record if its retention has
//! passed (so a record is never taken for a live one because eviction lags).
//! Must never: evict an account's cash or an instrument's stock, a record
//! without a finish time (an order still waiting for its outcome), or use
//! wall-clock time (a replay must decide as the first run did).
//!
//! Lives on: the core of the shard that owns the partition.

/// How long (event time) a finished order's records stay by default:
/// `[state] order_retention` in the core map overrides it. The core map's
/// default (`tuning::limits::ORDER_RETENTION_MS_DEFAULT`), in the stores'
/// signed milliseconds: one default for both.
pub const ORDER_RETENTION_DEFAULT_MS: i64 = tuning::limits::ORDER_RETENTION_MS_DEFAULT as i64;
// Every retention a core map accepts fits the stores' i64 milliseconds.
const _: () = assert!(tuning::limits::ORDER_RETENTION_MS_LIMIT <= i64::MAX as u64);

/// Queued records an event may look at for eviction, per store: bounded
/// work per event (each event finishes at most one order, so 4 keeps up with
/// any flow and catches up after a restore without a pause).
pub const EVICTIONS_PER_EVENT_MAX: usize = 4;

/// A partition's event time: the latest record timestamp (ms) its stage has
/// seen. Not kept across a restore: it starts again with the first record
/// after one, which can only delay an eviction, never bring one forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamClock {
    now_ms: i64,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { now_ms: i64::MIN }
    }
}

impl StreamClock {
    /// Moves the clock to `at_ms` (never back) and returns the cutoff for
    /// `retention_ms`: records finished at or before it may go.
    pub fn advance(&mut self, at_ms: i64, retention_ms: i64) -> i64 {
        self.now_ms = self.now_ms.max(at_ms);
        self.cutoff(retention_ms)
    }

    /// Records finished at or before this may go.
    pub fn cutoff(&self, retention_ms: i64) -> i64 {
        self.now_ms.saturating_sub(retention_ms)
    }

    /// The latest record timestamp seen; `i64::MIN` before the first.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_back_and_saturates() {
        let mut clock = StreamClock::default();
        assert_eq!(clock.cutoff(1_000), i64::MIN);
        assert_eq!(clock.advance(5_000, 1_000), 4_000);
        assert_eq!(clock.advance(3_000, 1_000), 4_000, "an older record");
        assert_eq!(clock.now_ms(), 5_000);
        assert_eq!(clock.advance(i64::MIN, i64::MAX), 5_000 - i64::MAX);
    }
}
