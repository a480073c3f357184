//! Replay planning, pure and without Kafka: when each record of a traffic file
//! is meant to be sent ([`Pace`], [`Schedule`]), and how its ids are rewritten
//! so a replay never collides with the data it was recorded from or with an
//! earlier replay ([`IdRewriter`]).
//!
//! Id rewriting is a keyed bijection per replay run: the same original id maps
//! to the same new id everywhere in the run (an order's created, amended and
//! cancelled events, and every `causation_id` that points at a rewritten event),
//! different ids never merge, and the "none" ids (zero) stay none. Different run
//! ids give unrelated id spaces. Memory is constant unless order ids are derived
//! by the services' rule (see [`OrderIdRule::Derived`]).
//!
//! Must never: touch Kafka or a clock (the sender measures from the intended
//! times computed here), or hold more than one record's worth of state per
//! record (schedules stream).

use std::collections::HashMap;

use codecs::{AccountId, ClientOrderId, Event, EventId, OrderId, ValueError};

use super::header_mut;

/// Nanoseconds per second.
const NS_PER_S: u128 = 1_000_000_000;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Send each record at its recorded offset `t_ns`.
    Original,
    /// Send at `t_ns / factor` (2.0 replays twice as fast).
    Speedup(f64),
    /// Ignore recorded times: a constant rate, records per second.
    Rate(u64),
}

/// Why a pace cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaceError {
    #[error("speed-up must be a finite number above 0, got {0}")]
    Speedup(f64),
    #[error("rate must be at least 1 record/s")]
    ZeroRate,
}

impl Pace {
    /// Checks the pace's parameter.
    pub fn validate(self) -> Result<Pace, PaceError> {
        match self {
            Pace::Speedup(f) if !(f.is_finite() && f > 0.0) => Err(PaceError::Speedup(f)),
            Pace::Rate(0) => Err(PaceError::ZeroRate),
            pace => Ok(pace),
        }
    }

    /// The intended send time, nanoseconds after the replay's start, of the
    /// `index`-th record (0-based) recorded at `t_ns`.
    pub fn intended_ns(self, index: u64, t_ns: u64) -> u64 {
        match self {
            Pace::Original => t_ns,
            Pace::Speedup(factor) => (t_ns as f64 / factor) as u64,
            Pace::Rate(per_s) => {
                let ns = u128::from(index) * NS_PER_S / u128::from(per_s.max(1));
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        }
    }
}

/// Assigns intended send times to a stream of records in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    pace: Pace,
    next_index: u64,
}

impl Schedule {
    pub fn new(pace: Pace) -> Result<Schedule, PaceError> {
        Ok(Schedule {
            pace: pace.validate()?,
            next_index: 0,
        })
    }

    /// The intended send time of the next record, recorded at `t_ns`.
    pub fn next(&mut self, t_ns: u64) -> u64 {
        let intended = self.pace.intended_ns(self.next_index, t_ns);
        self.next_index += 1;
        intended
    }

    /// Pairs each record of `records` with its intended send time, lazily.
    pub fn plan<I, E>(mut self, records: I) -> impl Iterator<Item = Result<(u64, super::Record), E>>
    where
        I: IntoIterator<Item = Result<super::Record, E>>,
    {
        records
            .into_iter()
            .map(move |record| record.map(|record| (self.next(record.t_ns), record)))
    }
}

/// A rule for an order's id from its account and client order id, such as the
/// services' `codecs::ids::order_id_for`.
pub type OrderIdFn = fn(AccountId, &ClientOrderId) -> OrderId;

/// How a replay rewrites order ids.
#[derive(Debug, Clone, Copy)]
pub enum OrderIdRule {
    /// A keyed bijection of the original id (constant memory).
    Mixed,
    /// A derivation from the account and the rewritten client order id (the
    /// services' `codecs::ids::order_id_for`, so a replayed create carries the
    /// id the Order service would give it). `order.created` learns the new
    /// id; later events of the same order look it up (memory: one entry per
    /// order created in the replay). Orders created before the recording
    /// began fall back to `Mixed`.
    Derived(OrderIdFn),
}

/// Rewrites the ids of replayed events for one replay run.
#[derive(Debug, Clone)]
pub struct IdRewriter {
    run_id: u64,
    keys: [u64; 4],
    order_rule: OrderIdRule,
    derived: HashMap<OrderId, OrderId>,
}

/// Width of a client order id on the wire.
const CLIENT_ORDER_ID_BYTES: usize = ClientOrderId::WIDTH_BYTES;
/// Length of the readable prefix `R<8 hex>-` put before a client order id.
const CLIENT_ORDER_ID_PREFIX_BYTES: usize = 10;

impl IdRewriter {
    /// A rewriter for replay run `run_id`, order ids mixed.
    pub fn new(run_id: u64) -> IdRewriter {
        IdRewriter::with_order_rule(run_id, OrderIdRule::Mixed)
    }

    /// A rewriter for replay run `run_id` whose new order ids are the services'
    /// own (`codecs::ids::order_id_for` of the account and new client order id).
    pub fn with_services_order_ids(run_id: u64) -> IdRewriter {
        IdRewriter::with_order_rule(run_id, OrderIdRule::Derived(codecs::ids::order_id_for))
    }

    pub fn with_order_rule(run_id: u64, order_rule: OrderIdRule) -> IdRewriter {
        let key = |i: u64| fmix64(run_id ^ fmix64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        IdRewriter {
            run_id,
            keys: [key(1), key(2), key(3), key(4)],
            order_rule,
            derived: HashMap::new(),
        }
    }

    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// The new id of an event; `EventId::NONE` stays none.
    pub fn event_id(&self, id: EventId) -> EventId {
        if id.is_none() {
            return id;
        }
        let mixed = feistel128(id.0, &self.keys);
        // A bijection maps exactly one id to zero: give that one the image of zero.
        EventId(if mixed == 0 {
            feistel128(0, &self.keys)
        } else {
            mixed
        })
    }

    /// The new id of an order by the keyed bijection; `OrderId::NONE` stays none.
    pub fn mixed_order_id(&self, id: OrderId) -> OrderId {
        if id.is_none() {
            return id;
        }
        let key = self.keys[0] ^ self.keys[3];
        let mixed = fmix64(id.0 ^ key);
        OrderId(if mixed == 0 { fmix64(key) } else { mixed })
    }

    /// The new client order id: `R<run tag>-<original>` when that fits the
    /// 32-byte field (readable; the run tag is 8 hex digits of the run's key),
    /// else 32 hex digits of a keyed 128-bit hash of the original.
    pub fn client_order_id(&self, id: &ClientOrderId) -> Result<ClientOrderId, ValueError> {
        let original = id.as_str();
        if original.len() + CLIENT_ORDER_ID_PREFIX_BYTES <= CLIENT_ORDER_ID_BYTES {
            let tag = (self.keys[2] >> 32) as u32;
            return ClientOrderId::new(&format!("R{tag:08x}-{original}"));
        }
        let mut hash = [self.keys[1], self.keys[2]];
        for chunk in original.as_bytes().chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash[0] = fmix64(hash[0] ^ u64::from_le_bytes(word));
            hash[1] = fmix64(hash[1].wrapping_add(hash[0]) ^ chunk.len() as u64);
        }
        ClientOrderId::new(&format!("{:016x}{:016x}", hash[0], hash[1]))
    }

    /// Rewrites `event`'s ids in place: its event id, causation id, order id and
    /// (on `order.created`) client order id.
    pub fn rewrite(&mut self, event: &mut Event) -> Result<(), ValueError> {
        if let Event::OrderCreated(order) = event {
            order.client_order_id = self.client_order_id(&order.client_order_id)?;
            if let OrderIdRule::Derived(order_id_for) = self.order_rule {
                let new_id = order_id_for(order.account, &order.client_order_id);
                self.derived.insert(order.header.order_id, new_id);
            }
        }
        let new_order_id = {
            let original = header_mut(event).order_id;
            match self.derived.get(&original) {
                Some(derived) => *derived,
                None => self.mixed_order_id(original),
            }
        };
        let header = header_mut(event);
        header.event_id = self.event_id(header.event_id);
        header.causation_id = self.event_id(header.causation_id);
        header.order_id = new_order_id;
        Ok(())
    }
}

/// Why a record of a replay could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Traffic(#[from] super::TrafficError),
    #[error("record {index}: rewriting its ids: {source}")]
    Ids {
        index: u64,
        #[source]
        source: ValueError,
    },
    #[error(
        "record {index}: topic {topic:?} is not one of the flow's (a replay sends into the flow)"
    )]
    NotAFlowTopic { index: u64, topic: String },
}

/// A replay's schedule, streamed: each record of `records` at its intended
/// time under `schedule`'s pace, its ids rewritten by `rewriter` (the order's
/// `created_at_ns` is stamped by the sender, at its intended time).
pub fn plan_replay<I, E>(
    records: I,
    schedule: Schedule,
    mut rewriter: IdRewriter,
) -> impl Iterator<Item = Result<crate::drive::ScheduledRecord, ReplayError>>
where
    I: IntoIterator<Item = Result<super::Record, E>>,
    ReplayError: From<E>,
{
    schedule
        .plan(records)
        .enumerate()
        .map(move |(index, planned)| {
            let index = index as u64;
            let (at_ns, mut record) = planned?;
            if let super::Payload::Event(event) = &mut record.payload {
                rewriter
                    .rewrite(event)
                    .map_err(|source| ReplayError::Ids { index, source })?;
            }
            let topic = record.topic.clone();
            crate::drive::ScheduledRecord::from_traffic(at_ns, record)
                .ok_or(ReplayError::NotAFlowTopic { index, topic })
        })
}

/// MurmurHash3's 64-bit finalizer: a bijection on `u64` that mixes every bit.
pub(crate) const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A keyed bijection on `u128`: a four-round Feistel network over the two
/// 64-bit halves (bijective whatever the round function).
fn feistel128(x: u128, keys: &[u64; 4]) -> u128 {
    let mut left = (x >> 64) as u64;
    let mut right = x as u64;
    for key in keys {
        let next = left ^ fmix64(right ^ key);
        left = right;
        right = next;
    }
    (u128::from(left) << 64) | u128::from(right)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::stamp_created_at;
    use codecs::{
        EventHeader, Money, OrderCancelled, OrderCreated, Quantity, Sku, Tag, TimeInForce,
        TimestampNs,
    };

    #[test]
    fn paces_give_intended_times() -> Result<(), PaceError> {
        let recorded = [0u64, 1_000, 1_000, 5_000_000];
        let times = |pace| -> Result<Vec<u64>, PaceError> {
            let mut schedule = Schedule::new(pace)?;
            Ok(recorded.iter().map(|t| schedule.next(*t)).collect())
        };
        assert_eq!(times(Pace::Original)?, recorded);
        assert_eq!(times(Pace::Speedup(2.0))?, [0, 500, 500, 2_500_000]);
        assert_eq!(times(Pace::Speedup(0.5))?, [0, 2_000, 2_000, 10_000_000]);
        assert_eq!(
            times(Pace::Rate(1_000))?,
            [0, 1_000_000, 2_000_000, 3_000_000]
        );
        assert_eq!(
            Schedule::new(Pace::Rate(0)).err(),
            Some(PaceError::ZeroRate)
        );
        assert!(Schedule::new(Pace::Speedup(0.0)).is_err());
        assert!(Schedule::new(Pace::Speedup(f64::NAN)).is_err());
        Ok(())
    }

    #[test]
    fn id_bijections_keep_none_and_never_merge() {
        let rewriter = IdRewriter::new(7);
        assert_eq!(rewriter.event_id(EventId::NONE), EventId::NONE);
        assert_eq!(rewriter.mixed_order_id(OrderId::NONE), OrderId::NONE);
        let events: HashSet<EventId> = (1..10_000u128)
            .map(|i| rewriter.event_id(EventId(i)))
            .collect();
        assert_eq!(events.len(), 9_999);
        assert!(!events.contains(&EventId::NONE));
        let orders: HashSet<OrderId> = (1..10_000u64)
            .map(|i| rewriter.mixed_order_id(OrderId(i)))
            .collect();
        assert_eq!(orders.len(), 9_999);
        // The same id maps the same way; another run maps it elsewhere.
        assert_eq!(
            rewriter.event_id(EventId(42)),
            IdRewriter::new(7).event_id(EventId(42))
        );
        assert_ne!(
            rewriter.event_id(EventId(42)),
            IdRewriter::new(8).event_id(EventId(42))
        );
        assert_ne!(rewriter.event_id(EventId(42)), EventId(42));
    }

    #[test]
    fn client_order_ids_stay_readable_when_they_fit() -> Result<(), ValueError> {
        let rewriter = IdRewriter::new(7);
        let short = rewriter.client_order_id(&ClientOrderId::new("c-1")?)?;
        assert!(
            short.as_str().starts_with('R') && short.as_str().ends_with("-c-1"),
            "{short}"
        );
        let long_original = ClientOrderId::new("a-client-order-id-of-30-bytes!")?;
        let long = rewriter.client_order_id(&long_original)?;
        assert_eq!(long.as_str().len(), 32);
        assert_eq!(long, rewriter.client_order_id(&long_original)?);
        assert_ne!(long, IdRewriter::new(8).client_order_id(&long_original)?);
        Ok(())
    }

    fn created(event_id: u128, order_id: u64, client_order_id: &str) -> Result<Event, ValueError> {
        Ok(Event::OrderCreated(OrderCreated {
            header: EventHeader {
                event_id: EventId(event_id),
                order_id: OrderId(order_id),
                causation_id: EventId::NONE,
                created_at_ns: TimestampNs(1),
            },
            account: AccountId(3),
            sku: Sku::new("SYM0001")?,
            quantity: Quantity(5),
            limit_price: Money(100),
            client_order_id: ClientOrderId::new(client_order_id)?,
            time_in_force: TimeInForce::Gtc,
            tag: Tag::EMPTY,
        }))
    }

    fn cancelled(event_id: u128, order_id: u64, causation: u128) -> Result<Event, ValueError> {
        Ok(Event::OrderCancelled(OrderCancelled {
            header: EventHeader {
                event_id: EventId(event_id),
                order_id: OrderId(order_id),
                causation_id: EventId(causation),
                created_at_ns: TimestampNs(2),
            },
            account: AccountId(3),
            sku: Sku::new("SYM0001")?,
        }))
    }

    #[test]
    fn an_orders_events_stay_linked_after_rewriting() -> Result<(), ValueError> {
        for rule in [
            OrderIdRule::Mixed,
            OrderIdRule::Derived(|account, client| {
                OrderId(fmix64(account.0 ^ client.as_str().len() as u64) | 1)
            }),
        ] {
            let mut rewriter = IdRewriter::with_order_rule(99, rule);
            let mut create = created(10, 500, "c-1")?;
            let mut cancel = cancelled(11, 500, 10)?;
            rewriter.rewrite(&mut create)?;
            rewriter.rewrite(&mut cancel)?;
            assert_eq!(create.header().order_id, cancel.header().order_id);
            assert_ne!(create.header().order_id, OrderId(500));
            assert_eq!(cancel.header().causation_id, create.header().event_id);
            assert_ne!(create.header().event_id, EventId(10));
            let Event::OrderCreated(order) = create else {
                panic!("kind changed");
            };
            assert!(order.client_order_id.as_str().ends_with("-c-1"));
            if let OrderIdRule::Derived(rule) = rule {
                assert_eq!(
                    order.header.order_id,
                    rule(order.account, &order.client_order_id)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn stamping_sets_created_at() -> Result<(), ValueError> {
        let mut event = created(1, 2, "x")?;
        stamp_created_at(&mut event, TimestampNs(77));
        assert_eq!(event.header().created_at_ns, TimestampNs(77));
        Ok(())
    }

    #[test]
    fn a_replay_plan_paces_rewrites_and_refuses_foreign_topics(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::{Payload, Record};
        let record = |t_ns: u64, topic: &str, payload: Payload| -> Result<Record, ReplayError> {
            Ok(Record {
                t_ns,
                topic: topic.to_string(),
                partition: None,
                key: Some(vec![0, 0, 0, 0, 0, 0, 0, 3]),
                payload,
            })
        };
        let order = created(9, 40, "c-1")?;
        let records = vec![
            record(0, codecs::topics::ORDER_CREATED, Payload::Event(order)),
            record(
                2_000,
                codecs::topics::ORDER_CREATED,
                Payload::Raw(vec![0xff]),
            ),
            record(4_000, "somebody.else", Payload::Raw(vec![1])),
        ];
        let planned: Vec<_> = plan_replay(
            records,
            Schedule::new(Pace::Speedup(2.0))?,
            IdRewriter::with_services_order_ids(5),
        )
        .collect();
        let [Ok(first), Ok(raw), Err(foreign)] = &planned[..] else {
            panic!("{planned:?}");
        };
        assert_eq!((first.at_ns, raw.at_ns), (0, 1_000));
        let Payload::Event(Event::OrderCreated(rewritten)) = &first.payload else {
            panic!("{first:?}");
        };
        assert_ne!(rewritten.header.event_id, order.header().event_id);
        assert_eq!(
            rewritten.header.order_id,
            codecs::ids::order_id_for(rewritten.account, &rewritten.client_order_id),
            "the services' own id for the new client order id"
        );
        assert_eq!(raw.payload, Payload::Raw(vec![0xff]), "poison stays poison");
        assert!(matches!(
            foreign,
            ReplayError::NotAFlowTopic { index: 2, .. }
        ));
        Ok(())
    }
}
