//! When a shard commits: the commit policy's rules as a pure decision over
//! the shard's own clock readings, so every rule is unit-tested without Kafka
//! or an executor.
//!
//! Owns: [`CommitCadence`] (what the shard remembers between commits: when
//! the last one ended and how long it took, since when output waits) and the
//! two policies' rules — Kafka Streams' fixed interval (with commit-on-drain)
//! and the adaptive policy.
//! Must never: read a clock itself or block; the runtime passes `now` in, so
//! the decision is deterministic and costs a few comparisons per batch.
//!
//! Lives on: the shard's core, inside its loop.

use std::time::{Duration, Instant};

/// The adaptive policy's rules for one shard: the core map's `[commit]`
/// keys (`tuning::CommitPolicy`, see `tuning/README.md`) in the engine's
/// units, the node's rate cap shared out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveCommit {
    /// Commit once the oldest uncommitted record has waited this long, less
    /// what the last commit took, even while input keeps arriving.
    pub target_latency: Duration,
    /// The shortest gap between two commits of this shard.
    pub min_interval: Duration,
    /// The largest share of the shard's time spent blocked in commits
    /// (1–100): after a commit that took `t`, the next waits at least
    /// `t × (100 − p) / p`, so commits back off as they grow slower.
    pub busy_percent_max: u32,
    /// This shard's share of the node's commit-rate cap: the time from one
    /// commit's start to the next one's, so that the node starts at most
    /// `transactions_per_s_max` transactions a second. Measured from the
    /// start, not the end: a cap counted after each commit's own duration
    /// would hold the rate far below the cap and add the whole gap to every
    /// hop's latency.
    pub rate_gap: Duration,
}

impl AdaptiveCommit {
    /// The gap the busy share demands after a commit that took `took`.
    fn busy_gap(&self, took: Duration) -> Duration {
        let percent = self.busy_percent_max.clamp(1, 100);
        took.saturating_mul(100 - percent) / percent
    }
}

/// When a shard commits: a `tuning::CommitPolicy` (the one type of the
/// setting) compiled for one shard of a node by [`CommitRules::for_node`],
/// so the loop compares durations and never divides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommitRules {
    /// Kafka Streams' `commit.interval.ms`: the longest gap between commits
    /// while there is something to commit, under either policy.
    pub interval: Duration,
    /// Interval policy: also commit as soon as the input is drained, a drain
    /// commit waiting at least as long as the last commit took.
    pub on_drain: bool,
    /// `Some`: the adaptive policy, which replaces `on_drain`'s rule.
    pub adaptive: Option<AdaptiveCommit>,
}

impl CommitRules {
    /// The rules of `commit` for each shard of a node of `shards` shards:
    /// the node's commit-rate cap is shared evenly, so each shard keeps
    /// `shards / transactions_per_s_max` seconds between its commits' starts.
    pub fn for_node(commit: &tuning::CommitPolicy, shards: usize) -> Self {
        let adaptive = match commit.timing {
            tuning::CommitTiming::Interval => None,
            tuning::CommitTiming::Adaptive => Some(AdaptiveCommit {
                target_latency: Duration::from_millis(u64::from(commit.target_latency_ms)),
                min_interval: Duration::from_millis(u64::from(commit.min_interval_ms)),
                busy_percent_max: commit.busy_percent_max,
                rate_gap: Duration::from_secs_f64(
                    shards.max(1) as f64 / f64::from(commit.transactions_per_s_max.max(1)),
                ),
            }),
        };
        CommitRules {
            interval: commit.interval(),
            on_drain: commit.on_drain,
            adaptive,
        }
    }

    /// Kafka Streams' rule: every `interval`, and on drain if `on_drain`.
    pub fn fixed(interval: Duration, on_drain: bool) -> Self {
        CommitRules {
            interval,
            on_drain,
            adaptive: None,
        }
    }
}

/// What the shard's loop knows at the end of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchEnd {
    /// The input had nothing more to give (the batch ended short).
    pub drained: bool,
    /// Something was processed since the last commit.
    pub uncommitted: bool,
    /// Held outputs reached their memory bound: commit now.
    pub outputs_full: bool,
}

/// A shard's commit clock. See the module doc.
#[derive(Clone, Debug)]
pub struct CommitCadence {
    policy: CommitRules,
    last_start: Instant,
    last_end: Instant,
    last_took: Duration,
    /// When the first record since the last commit was processed.
    waiting_since: Option<Instant>,
}

impl CommitCadence {
    pub fn new(policy: CommitRules, now: Instant) -> Self {
        CommitCadence {
            policy,
            last_start: now,
            last_end: now,
            last_took: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// A batch processed records at `now` (the first one since the last
    /// commit starts the latency clock).
    pub fn processed(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// A commit ran from `started` to `ended`.
    pub fn committed(&mut self, started: Instant, ended: Instant) {
        self.last_took = ended.saturating_duration_since(started);
        self.last_start = started;
        self.last_end = ended;
        self.waiting_since = None;
    }

    /// How long the last commit took.
    pub fn last_took(&self) -> Duration {
        self.last_took
    }

    /// Whether the shard should commit now.
    pub fn due(&self, now: Instant, batch: BatchEnd) -> bool {
        if !batch.uncommitted {
            return false;
        }
        if batch.outputs_full {
            return true;
        }
        let since = now.saturating_duration_since(self.last_end);
        if since >= self.policy.interval {
            return true;
        }
        let Some(adaptive) = self.policy.adaptive else {
            // A drain commit waits at least as long as the last commit
            // took, so committing never takes more than half the shard's
            // time (a consumer whose prefetch queue empties between fetches
            // looks drained after nearly every batch).
            return batch.drained && self.policy.on_drain && since >= self.last_took;
        };
        let gap = adaptive.min_interval.max(adaptive.busy_gap(self.last_took));
        if since < gap || now.saturating_duration_since(self.last_start) < adaptive.rate_gap {
            return false;
        }
        if batch.drained {
            return true;
        }
        // Under steady input the batch never ends short: commit when the
        // oldest waiting output would otherwise miss the latency target.
        self.waiting_since.is_some_and(|first| {
            now.saturating_duration_since(first) + self.last_took >= adaptive.target_latency
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn adaptive() -> CommitRules {
        CommitRules {
            interval: 100 * MS,
            on_drain: true,
            adaptive: Some(AdaptiveCommit {
                target_latency: 5 * MS,
                min_interval: MS,
                busy_percent_max: 50,
                rate_gap: 2 * MS,
            }),
        }
    }

    const DRAINED: BatchEnd = BatchEnd {
        drained: true,
        uncommitted: true,
        outputs_full: false,
    };
    const BUSY: BatchEnd = BatchEnd {
        drained: false,
        uncommitted: true,
        outputs_full: false,
    };

    #[test]
    fn nothing_to_commit_is_never_due() {
        let t0 = Instant::now();
        for policy in [adaptive(), CommitRules::fixed(100 * MS, true)] {
            let cadence = CommitCadence::new(policy, t0);
            let idle = BatchEnd {
                uncommitted: false,
                ..DRAINED
            };
            assert!(!cadence.due(t0 + 10 * policy.interval, idle));
        }
    }

    #[test]
    fn the_interval_bounds_both_policies_and_full_outputs_commit_at_once() {
        let t0 = Instant::now();
        for policy in [adaptive(), CommitRules::fixed(100 * MS, false)] {
            let cadence = CommitCadence::new(policy, t0);
            assert!(cadence.due(t0 + 100 * MS, BUSY));
            let full = BatchEnd {
                outputs_full: true,
                ..BUSY
            };
            assert!(cadence.due(t0, full));
        }
    }

    #[test]
    fn interval_policy_drain_commits_wait_as_long_as_the_last_commit_took() {
        let t0 = Instant::now();
        let mut cadence = CommitCadence::new(CommitRules::fixed(100 * MS, true), t0);
        cadence.committed(t0, t0 + 10 * MS);
        assert!(!cadence.due(t0 + 15 * MS, DRAINED));
        assert!(cadence.due(t0 + 20 * MS, DRAINED));
        assert!(
            !cadence.due(t0 + 20 * MS, BUSY),
            "not drained: waits for the interval"
        );
        let no_drain = CommitCadence::new(CommitRules::fixed(100 * MS, false), t0);
        assert!(!no_drain.due(t0 + 50 * MS, DRAINED));
    }

    #[test]
    fn adaptive_commits_on_drain_once_the_gaps_allow() {
        let t0 = Instant::now();
        let mut cadence = CommitCadence::new(adaptive(), t0);
        cadence.committed(t0, t0 + MS);
        // Min interval 1 ms and busy gap 1 ms after the end: t0 + 2 ms.
        assert!(!cadence.due(t0 + MS + MS / 2, DRAINED));
        assert!(cadence.due(t0 + 2 * MS, DRAINED));
    }

    #[test]
    fn the_rate_cap_spaces_commit_starts_not_the_gaps_after_them() {
        let t0 = Instant::now();
        let mut rules = adaptive();
        if let Some(a) = rules.adaptive.as_mut() {
            a.rate_gap = 5 * MS;
            a.busy_percent_max = 90;
        }
        let mut cadence = CommitCadence::new(rules, t0);
        // A 3 ms commit: the cap allows the next start 5 ms after this
        // one's, 2 ms after its end, not 5 ms after its end.
        cadence.committed(t0, t0 + 3 * MS);
        assert!(!cadence.due(t0 + 4 * MS, DRAINED));
        assert!(cadence.due(t0 + 5 * MS, DRAINED));
        // A commit longer than the rate gap leaves only the busy share's gap.
        cadence.committed(t0 + 5 * MS, t0 + 14 * MS);
        assert!(!cadence.due(t0 + 14 * MS + MS / 2, DRAINED));
        assert!(cadence.due(t0 + 15 * MS, DRAINED));
    }

    #[test]
    fn adaptive_backs_off_as_commits_grow_slower() {
        let t0 = Instant::now();
        let mut cadence = CommitCadence::new(adaptive(), t0);
        // A 40 ms commit at a 50 % busy share: the next waits 40 ms.
        cadence.committed(t0, t0 + 40 * MS);
        assert!(!cadence.due(t0 + 79 * MS, DRAINED));
        assert!(cadence.due(t0 + 80 * MS, DRAINED));
        let mut stricter = adaptive();
        if let Some(a) = stricter.adaptive.as_mut() {
            a.busy_percent_max = 20;
        }
        let mut cadence = CommitCadence::new(stricter, t0);
        cadence.committed(t0, t0 + 10 * MS);
        // 20 %: wait four times the commit.
        assert!(!cadence.due(t0 + 49 * MS, DRAINED));
        assert!(cadence.due(t0 + 50 * MS, DRAINED));
    }

    #[test]
    fn adaptive_commits_under_steady_input_by_the_latency_target() {
        let t0 = Instant::now();
        let mut cadence = CommitCadence::new(adaptive(), t0);
        cadence.committed(t0, t0 + MS);
        let first = t0 + 10 * MS;
        cadence.processed(first);
        cadence.processed(first + 2 * MS); // the clock starts at the first
                                           // Waited 3 ms + the last commit's 1 ms < 5 ms target.
        assert!(!cadence.due(first + 3 * MS, BUSY));
        assert!(cadence.due(first + 4 * MS, BUSY));
        cadence.committed(first + 4 * MS, first + 5 * MS);
        assert!(
            !cadence.due(first + 30 * MS, BUSY),
            "nothing waits since the commit"
        );
    }
}
