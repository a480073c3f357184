//! The input records a shard's consumer has fetched and not yet handed to
//! the shard, and the order they are handed over in: [`InputTimeline`].
//!
//! Owns: one queue per assigned input partition, holding the records as
//! librdkafka delivered them (no copy: the shard still decodes each one in
//! place), and the choice of the next record. A stage's input topics are
//! co-partitioned, so partition N of every input topic is one unit of work
//! (Kafka Streams' task). Within it the next record is the queue head with
//! the earliest timestamp, as Kafka Streams' `PartitionGroup` picks it: an
//! order written after its account's funding is decided after that funding
//! even when librdkafka fetched the order's partition first (a fetch
//! response lists its partitions in any order, and a shard that starts
//! behind fetches minutes of both topics at once). When one topic's queue is
//! empty but the broker holds committed records of it the consumer has not
//! fetched yet (its `read_committed` lag), the unit waits for them rather
//! than decide ahead of them (Kafka Streams' `max.task.idle.ms` = 0: wait for
//! data known to exist), for at most [`CO_PARTITION_WAIT_MAX`]; past that it
//! goes on with what it has ("enforced processing", counted) until it has
//! caught up again.
//!
//! Must never: reorder the records of one partition, keep a record of a
//! partition that was revoked or sought back (the caller drops them with
//! [`InputTimeline::forget`]), wait without a bound, or ask the broker
//! anything: the lag comes from what the consumer cached from its last fetch
//! response.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::TopicIdx;

/// How long a partition waits for a co-partitioned topic whose committed
/// records the broker holds but the consumer has not fetched yet. A fetch
/// brings them within `fetch.wait.max.ms` on a healthy cluster; the bound
/// only matters when a partition's end cannot be learned (its leader is
/// moving, its first fetch has not answered).
pub const CO_PARTITION_WAIT_MAX: Duration = Duration::from_millis(500);

/// Most records held across all partitions before the shard goes on without
/// waiting: librdkafka stops fetching a partition whose queue is full, so a
/// unit waiting for one topic while holding many records of another could
/// otherwise wait for a fetch that never comes.
pub const HELD_RECORDS_MAX: usize = 16_384;

/// What the timeline needs to know of a held record.
pub trait TimedRecord {
    fn partition(&self) -> i32;
    /// The record's Kafka timestamp (create or log-append time), in ms.
    fn timestamp_ms(&self) -> i64;
}

/// What the consumer knows of how far behind the broker's committed end one
/// input partition is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLag {
    /// Nothing committed at the broker that the consumer has not fetched.
    CaughtUp,
    /// Committed records the consumer has not fetched yet.
    Behind,
    /// No fetch response yet (a partition just assigned or sought).
    Unknown,
    /// Not an assigned partition of this consumer.
    NotAssigned,
}

/// What [`InputTimeline::next`] found.
#[derive(Debug)]
pub enum NextInput<M> {
    Record(TopicIdx, M),
    /// Records are held, but every unit holding them waits for a lagging
    /// co-partitioned topic; ask again by `until` at the latest.
    Waiting {
        until: Instant,
    },
    Empty,
}

/// Counted by the timeline since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderingCounts {
    /// Times a unit started waiting for a lagging co-partitioned topic.
    pub waits: u64,
    /// Times a unit gave up waiting after [`CO_PARTITION_WAIT_MAX`] (or with
    /// [`HELD_RECORDS_MAX`] records held) and went on without it.
    pub enforced: u64,
}

/// The held records of one partition number, one queue per input topic.
struct PartitionUnit<M> {
    queues: Vec<VecDeque<(TopicIdx, M)>>,
    held: usize,
    /// Bumped each time a record is added: a topic seen caught up at this
    /// generation stays caught up until the consumer brings more records of
    /// the unit (any newer end would have come with a fetch response).
    generation: u64,
    caught_up_at: Vec<Option<u64>>,
    waiting_since: Option<Instant>,
    enforced: bool,
}

impl<M> PartitionUnit<M> {
    fn new(topics: usize) -> Self {
        PartitionUnit {
            queues: (0..topics).map(|_| VecDeque::new()).collect(),
            held: 0,
            generation: 0,
            caught_up_at: vec![None; topics],
            waiting_since: None,
            enforced: false,
        }
    }
}

/// See the module doc.
pub struct InputTimeline<M> {
    topics: usize,
    units: BTreeMap<i32, PartitionUnit<M>>,
    held: usize,
    counts: OrderingCounts,
}

impl<M: TimedRecord> InputTimeline<M> {
    /// A timeline over `topics` co-partitioned input topics.
    pub fn new(topics: usize) -> Self {
        InputTimeline {
            topics,
            units: BTreeMap::new(),
            held: 0,
            counts: OrderingCounts::default(),
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    pub fn counts(&self) -> OrderingCounts {
        self.counts
    }

    /// Holds `record` of input `topic` behind the records of its partition
    /// already held.
    pub fn hold(&mut self, topic: TopicIdx, record: M) {
        let topics = self.topics;
        let unit = self
            .units
            .entry(record.partition())
            .or_insert_with(|| PartitionUnit::new(topics));
        let Some(queue) = unit.queues.get_mut(topic.0 as usize) else {
            return;
        };
        queue.push_back((topic, record));
        unit.held += 1;
        unit.generation += 1;
        self.held += 1;
    }

    /// The oldest held record of input `topic`'s `partition`: the next one of
    /// it the shard will see (the consumer's position is past it).
    pub fn first_held(&self, topic: TopicIdx, partition: i32) -> Option<&M> {
        self.units
            .get(&partition)?
            .queues
            .get(topic.0 as usize)?
            .front()
            .map(|(_, record)| record)
    }

    /// Drops every held record of `partition`, all topics (revoked, or every
    /// topic of it sought back: the consumer fetches them again).
    pub fn forget(&mut self, partition: i32) {
        if let Some(unit) = self.units.remove(&partition) {
            self.held -= unit.held;
        }
    }

    /// Drops the held records of input `topic`'s `partition` only (that one
    /// partition was sought back). The other topics' held records stay: the
    /// consumer goes on after them, so dropping them would skip them.
    pub fn forget_topic(&mut self, topic: TopicIdx, partition: i32) {
        let Some(unit) = self.units.get_mut(&partition) else {
            return;
        };
        let Some(queue) = unit.queues.get_mut(topic.0 as usize) else {
            return;
        };
        let dropped = queue.len();
        queue.clear();
        unit.held -= dropped;
        self.held -= dropped;
        // Sought back, the topic is behind again: ask its lag anew.
        unit.generation += 1;
    }

    /// Drops every held record.
    pub fn clear(&mut self) {
        self.units.clear();
        self.held = 0;
    }

    /// The next record to hand over, if one may go now. `lag` tells how far
    /// the consumer is behind for an input partition (a call into the
    /// consumer's cached state; made only for a unit whose queue of that
    /// topic is empty).
    pub fn next(
        &mut self,
        now: Instant,
        lag: &mut dyn FnMut(TopicIdx, i32) -> InputLag,
    ) -> NextInput<M> {
        if self.held == 0 {
            return NextInput::Empty;
        }
        let crowded = self.held >= HELD_RECORDS_MAX;
        let mut best: Option<(i64, i32, usize)> = None;
        let mut wake: Option<Instant> = None;
        for (&partition, unit) in self.units.iter_mut() {
            if unit.held == 0 {
                continue;
            }
            let mut head: Option<(i64, usize)> = None;
            let mut behind = false;
            for (t, queue) in unit.queues.iter().enumerate() {
                match queue.front() {
                    Some((_, record)) => {
                        let at = record.timestamp_ms();
                        if head.is_none_or(|(best_at, _)| at < best_at) {
                            head = Some((at, t));
                        }
                    }
                    None if behind => {}
                    None => {
                        if unit.caught_up_at[t] == Some(unit.generation) {
                            continue;
                        }
                        match lag(TopicIdx(t as u8), partition) {
                            InputLag::CaughtUp | InputLag::NotAssigned => {
                                unit.caught_up_at[t] = Some(unit.generation);
                            }
                            InputLag::Behind | InputLag::Unknown => behind = true,
                        }
                    }
                }
            }
            let Some((at, t)) = head else { continue };
            if behind && !unit.enforced && !crowded {
                let since = *unit.waiting_since.get_or_insert_with(|| {
                    self.counts.waits += 1;
                    now
                });
                let until = since + CO_PARTITION_WAIT_MAX;
                if now < until {
                    wake = Some(wake.map_or(until, |w| w.min(until)));
                    continue;
                }
                unit.enforced = true;
                self.counts.enforced += 1;
            } else if !behind {
                unit.waiting_since = None;
                unit.enforced = false;
            }
            if best.is_none_or(|(best_at, _, _)| at < best_at) {
                best = Some((at, partition, t));
            }
        }
        match best {
            Some((_, partition, t)) => {
                let Some(unit) = self.units.get_mut(&partition) else {
                    return NextInput::Empty;
                };
                let Some((topic, record)) = unit.queues[t].pop_front() else {
                    return NextInput::Empty;
                };
                unit.held -= 1;
                self.held -= 1;
                NextInput::Record(topic, record)
            }
            None => match wake {
                Some(until) => NextInput::Waiting { until },
                None => NextInput::Empty,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Rec {
        partition: i32,
        at: i64,
        offset: i64,
    }

    impl TimedRecord for Rec {
        fn partition(&self) -> i32 {
            self.partition
        }
        fn timestamp_ms(&self) -> i64 {
            self.at
        }
    }

    fn caught_up(_: TopicIdx, _: i32) -> InputLag {
        InputLag::CaughtUp
    }

    fn drain(timeline: &mut InputTimeline<Rec>, now: Instant) -> Vec<(TopicIdx, Rec)> {
        let mut out = Vec::new();
        while let NextInput::Record(topic, record) = timeline.next(now, &mut caught_up) {
            out.push((topic, record));
        }
        out
    }

    #[test]
    fn an_order_fetched_before_its_funding_is_handed_over_after_it() {
        let mut timeline = InputTimeline::new(2);
        // Topic 0 (orders) arrived first, topic 1 (fundings) written earlier.
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 3,
                at: 20,
                offset: 0,
            },
        );
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 3,
                at: 30,
                offset: 1,
            },
        );
        timeline.hold(
            TopicIdx(1),
            Rec {
                partition: 3,
                at: 10,
                offset: 0,
            },
        );
        let order: Vec<(u8, i64)> = drain(&mut timeline, Instant::now())
            .into_iter()
            .map(|(t, r)| (t.0, r.at))
            .collect();
        assert_eq!(order, vec![(1, 10), (0, 20), (0, 30)]);
        assert_eq!(timeline.held(), 0);
    }

    #[test]
    fn a_unit_waits_for_a_lagging_topic_then_goes_on_after_the_bound() {
        let mut timeline = InputTimeline::new(2);
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 0,
                at: 20,
                offset: 0,
            },
        );
        let start = Instant::now();
        let mut behind = |t: TopicIdx, _| {
            if t.0 == 1 {
                InputLag::Behind
            } else {
                InputLag::CaughtUp
            }
        };
        match timeline.next(start, &mut behind) {
            NextInput::Waiting { until } => assert_eq!(until, start + CO_PARTITION_WAIT_MAX),
            other => panic!("expected a wait, got {other:?}"),
        }
        // The lagging funding arrives: it goes first, then the order.
        timeline.hold(
            TopicIdx(1),
            Rec {
                partition: 0,
                at: 10,
                offset: 0,
            },
        );
        let first = timeline.next(start, &mut behind);
        assert!(matches!(
            first,
            NextInput::Record(TopicIdx(1), Rec { at: 10, .. })
        ));
        // Topic 1's queue is empty again and still behind: wait, then give up.
        assert!(matches!(
            timeline.next(start, &mut behind),
            NextInput::Waiting { .. }
        ));
        let late = start + CO_PARTITION_WAIT_MAX;
        assert!(matches!(
            timeline.next(late, &mut behind),
            NextInput::Record(TopicIdx(0), Rec { at: 20, .. })
        ));
        // Two waits: the funding's arrival ended the first.
        assert_eq!(
            timeline.counts(),
            OrderingCounts {
                waits: 2,
                enforced: 1
            }
        );
    }

    #[test]
    fn an_unknown_end_waits_and_an_unassigned_topic_does_not() {
        let mut timeline = InputTimeline::new(2);
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 1,
                at: 5,
                offset: 0,
            },
        );
        let now = Instant::now();
        let mut unknown = |_, _| InputLag::Unknown;
        assert!(matches!(
            timeline.next(now, &mut unknown),
            NextInput::Waiting { .. }
        ));
        let mut unassigned = |_, _| InputLag::NotAssigned;
        assert!(matches!(
            timeline.next(now, &mut unassigned),
            NextInput::Record(..)
        ));
    }

    #[test]
    fn a_caught_up_topic_is_asked_again_only_after_new_records() {
        let mut timeline = InputTimeline::new(2);
        let mut asked = 0;
        let now = Instant::now();
        for offset in 0..3 {
            timeline.hold(
                TopicIdx(0),
                Rec {
                    partition: 0,
                    at: offset,
                    offset,
                },
            );
        }
        let mut count = |_: TopicIdx, _| {
            asked += 1;
            InputLag::CaughtUp
        };
        while let NextInput::Record(..) = timeline.next(now, &mut count) {}
        assert_eq!(asked, 1);
    }

    #[test]
    fn forgetting_a_partition_drops_only_its_records() {
        let mut timeline = InputTimeline::new(2);
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 0,
                at: 1,
                offset: 0,
            },
        );
        timeline.hold(
            TopicIdx(1),
            Rec {
                partition: 1,
                at: 2,
                offset: 0,
            },
        );
        timeline.forget(0);
        assert_eq!(timeline.held(), 1);
        let left = drain(&mut timeline, Instant::now());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.partition, 1);
    }

    #[test]
    fn forgetting_one_topic_of_a_partition_keeps_the_others() {
        let mut timeline = InputTimeline::new(2);
        timeline.hold(
            TopicIdx(0),
            Rec {
                partition: 0,
                at: 1,
                offset: 0,
            },
        );
        timeline.hold(
            TopicIdx(1),
            Rec {
                partition: 0,
                at: 2,
                offset: 0,
            },
        );
        timeline.forget_topic(TopicIdx(0), 0);
        assert_eq!(timeline.held(), 1);
        let left = drain(&mut timeline, Instant::now());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, TopicIdx(1));
    }

    proptest! {
        /// Whatever arrives in whatever interleaving: every record comes out
        /// once, each partition of each topic in its own order, and within a
        /// partition number the handed-over timestamps never go back when
        /// everything was held before the first pick.
        #[test]
        fn records_come_out_once_in_partition_order_and_time_order(
            arrivals in proptest::collection::vec((0u8..3, 0i32..3, 0i64..50), 0..120)
        ) {
            let mut timeline = InputTimeline::new(3);
            // Per (topic, partition), timestamps rise with the offset, as a
            // single producer's create times do.
            let mut next_offset = std::collections::HashMap::new();
            let mut last_at = std::collections::HashMap::new();
            for (topic, partition, step) in &arrivals {
                let offset = next_offset.entry((*topic, *partition)).or_insert(0i64);
                let at = last_at.entry((*topic, *partition)).or_insert(0i64);
                *at += step;
                timeline.hold(TopicIdx(*topic), Rec { partition: *partition, at: *at, offset: *offset });
                *offset += 1;
            }
            let out = drain(&mut timeline, Instant::now());
            prop_assert_eq!(out.len(), arrivals.len());
            let mut seen = std::collections::HashMap::new();
            let mut unit_time = std::collections::HashMap::new();
            for (topic, record) in out {
                let expected = seen.entry((topic.0, record.partition)).or_insert(0i64);
                prop_assert_eq!(record.offset, *expected);
                *expected += 1;
                let time = unit_time.entry(record.partition).or_insert(i64::MIN);
                prop_assert!(record.at >= *time);
                *time = record.at;
            }
        }
    }
}
