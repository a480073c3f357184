//! Test support: builders for the flow's input events and a driver that runs
//! one event through a stage the way a shard would (encode, decode in place,
//! process, decode what was emitted).
//!
//! Owns: nothing a running engine uses. Not part of the stable API.
//! Must never: be used outside tests, benches and examples, nor on the data
//! path: it panics on bad test input, which is what a test wants.

use codecs::{
    decode, encode_to_vec, AccountFunded, AccountId, ClientOrderId, Event, EventHeader, EventId,
    Money, OrderAmended, OrderCancelled, OrderCreated, Quantity, Sku, StockReplenished, Tag,
    TimeInForce, TimestampNs,
};
use engine::partitioner::partition_for;
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::{Offset, TopicIdx};

use crate::ids::order_id_for;
use crate::topics::{account_key, sku_key, topic_of};

/// Builds input events with fresh, distinct event ids.
#[derive(Debug)]
pub struct EventFactory {
    next_id: u128,
}

impl Default for EventFactory {
    fn default() -> Self {
        EventFactory::new()
    }
}

impl EventFactory {
    pub fn new() -> Self {
        // High ids, far from anything `derived_event_id` is likely to make.
        EventFactory { next_id: 1 << 100 }
    }

    pub fn next_event_id(&mut self) -> EventId {
        self.next_id += 1;
        EventId(self.next_id)
    }

    fn header(&mut self, order: codecs::OrderId) -> EventHeader {
        EventHeader {
            event_id: self.next_event_id(),
            order_id: order,
            causation_id: EventId::NONE,
            created_at_ns: TimestampNs(1_700_000_000_000_000_000),
        }
    }

    /// `order.created` for `account`'s client order id `client` (the order id
    /// is `order_id_for(account, client)`).
    pub fn order(
        &mut self,
        account: u64,
        client: &str,
        sku: &str,
        quantity: i64,
        limit_price: i64,
    ) -> Event {
        let client = ClientOrderId::new(client).unwrap_or_else(|e| panic!("client order id: {e}"));
        let account = AccountId(account);
        let header = self.header(order_id_for(account, &client));
        Event::OrderCreated(OrderCreated {
            header,
            account,
            sku: sku_of(sku),
            quantity: Quantity(quantity),
            limit_price: Money(limit_price),
            client_order_id: client,
            time_in_force: TimeInForce::Gtc,
            tag: Tag::EMPTY,
        })
    }

    pub fn funding(&mut self, account: u64, amount: i64) -> Event {
        Event::AccountFunded(AccountFunded {
            header: self.header(codecs::OrderId::NONE),
            account: AccountId(account),
            amount: Money(amount),
        })
    }

    pub fn replenishment(&mut self, sku: &str, quantity: i64) -> Event {
        Event::StockReplenished(StockReplenished {
            header: self.header(codecs::OrderId::NONE),
            sku: sku_of(sku),
            quantity: Quantity(quantity),
        })
    }

    /// `order.amended` of the order `created` (an `order.created`).
    pub fn amend(&mut self, created: &Event, quantity: i64, limit_price: i64) -> Event {
        let (order, account, sku) = order_of(created);
        Event::OrderAmended(OrderAmended {
            header: self.header(order),
            account,
            sku,
            quantity: Quantity(quantity),
            limit_price: Money(limit_price),
        })
    }

    /// `order.cancelled` of the order `created` (an `order.created`).
    pub fn cancel(&mut self, created: &Event) -> Event {
        let (order, account, sku) = order_of(created);
        Event::OrderCancelled(OrderCancelled {
            header: self.header(order),
            account,
            sku,
        })
    }
}

fn order_of(created: &Event) -> (codecs::OrderId, AccountId, Sku) {
    match created {
        Event::OrderCreated(o) => (o.header.order_id, o.account, o.sku),
        other => panic!("expected order.created, got {}", other.kind()),
    }
}

/// A sku from test text.
pub fn sku_of(text: &str) -> Sku {
    Sku::new(text).unwrap_or_else(|e| panic!("sku {text:?}: {e}"))
}

/// The record key `event` is produced with on its topic.
pub fn record_key(event: &Event) -> Vec<u8> {
    match event {
        Event::PaymentCompleted(e) => sku_key(&e.sku).to_vec(),
        Event::StockReplenished(e) => sku_key(&e.sku).to_vec(),
        other => match other.account() {
            Some(account) => account_key(account).to_vec(),
            None => Vec::new(),
        },
    }
}

/// An event a stage emitted, decoded, with where it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub topic: &'static str,
    pub partition: i32,
    pub key: Vec<u8>,
    pub event: Event,
}

/// Runs `event` through `stage` as a shard with `partitions` partitions would,
/// delivering it on its kind's topic at the partition its key names.
pub fn deliver<S: Stage>(
    stage: &mut S,
    state: &mut S::State,
    event: &Event,
    partitions: i32,
) -> Result<Vec<Emitted>, Rejection> {
    let topic = topic_of(event.kind());
    let partition = partition_for(&record_key(event), partitions);
    deliver_at(stage, state, event, topic, partition.0, partitions)
}

/// The record timestamp [`deliver`] gives every input (ms since the epoch).
pub const DELIVERED_AT_MS: i64 = 1_700_000_000_000;

/// Like [`deliver`], with the record timestamp `timestamp_ms` (event time,
/// which drives retention).
pub fn deliver_timed<S: Stage>(
    stage: &mut S,
    state: &mut S::State,
    event: &Event,
    partitions: i32,
    timestamp_ms: i64,
) -> Result<Vec<Emitted>, Rejection> {
    let topic = topic_of(event.kind());
    let partition = partition_for(&record_key(event), partitions);
    deliver_record(
        stage,
        state,
        event,
        (topic, partition.0),
        partitions,
        timestamp_ms,
    )
}

/// Like [`deliver`], on an explicit topic and partition (to test misrouting).
pub fn deliver_at<S: Stage>(
    stage: &mut S,
    state: &mut S::State,
    event: &Event,
    topic: &str,
    partition: i32,
    partitions: i32,
) -> Result<Vec<Emitted>, Rejection> {
    deliver_record(
        stage,
        state,
        event,
        (topic, partition),
        partitions,
        DELIVERED_AT_MS,
    )
}

fn deliver_record<S: Stage>(
    stage: &mut S,
    state: &mut S::State,
    event: &Event,
    (topic, partition): (&str, i32),
    partitions: i32,
    timestamp_ms: i64,
) -> Result<Vec<Emitted>, Rejection> {
    let index = stage
        .input_topics()
        .iter()
        .position(|t| *t == topic)
        .unwrap_or_else(|| panic!("{} does not read {topic}", stage.name()));
    let topic_name = stage.input_topics()[index];
    let input = Input {
        topic: TopicIdx(index as u8),
        topic_name,
        partition: engine::PartitionId(partition),
        offset: Offset(0),
        timestamp_ms,
    };
    let frame = encode_to_vec(event).unwrap_or_else(|e| panic!("encoding: {e}"));
    let view = decode(&frame).unwrap_or_else(|e| panic!("decoding: {e}"));
    let mut out = Outbox::new(partitions);
    stage.process(&input, view, state, &mut out)?;
    Ok(out
        .iter()
        .map(|(entry, key, payload)| Emitted {
            topic: entry.topic,
            partition: entry.partition.0,
            key: key.to_vec(),
            event: decode(payload)
                .unwrap_or_else(|e| panic!("a stage emitted bad bytes: {e}"))
                .to_event(),
        })
        .collect())
}

/// The whole flow on one partition, in memory: inputs are produced to their
/// topics, every emitted event is recorded on its topic and delivered to the
/// flow when a running service reads that topic. Replays and reordering are
/// the caller's to make (`redeliver`, `deliver_pending`).
pub struct FlowHarness {
    pub flow: crate::flow::TradeFlow,
    pub state: crate::flow::TradeFlowState,
    /// Every record produced, with its topic, in production order.
    pub log: Vec<(&'static str, Event)>,
    /// Emitted events not yet delivered.
    pub pending: std::collections::VecDeque<Event>,
    /// Reasons of the records the flow dead-lettered.
    pub dead_letters: Vec<String>,
}

impl FlowHarness {
    pub fn new(services: crate::flow::ServiceSet) -> Self {
        FlowHarness {
            flow: crate::flow::TradeFlow::new(services),
            state: crate::flow::TradeFlowState::default(),
            log: Vec::new(),
            pending: std::collections::VecDeque::new(),
            dead_letters: Vec::new(),
        }
    }

    /// Produces `event` to its topic and delivers it.
    pub fn input(&mut self, event: &Event) {
        self.log.push((topic_of(event.kind()), *event));
        self.redeliver(event);
    }

    /// Delivers `event` (again) if a running service reads its topic; what
    /// the flow emits is recorded and queued.
    pub fn redeliver(&mut self, event: &Event) {
        let topic = topic_of(event.kind());
        if !self.flow.input_topics().contains(&topic) {
            return;
        }
        match deliver(&mut self.flow, &mut self.state, event, 1) {
            Ok(outputs) => {
                for emitted in outputs {
                    self.log.push((emitted.topic, emitted.event));
                    self.pending.push_back(emitted.event);
                }
            }
            Err(rejection) => self.dead_letters.push(rejection.reason),
        }
    }

    /// Delivers the pending event at `index` (modulo the queue's length).
    pub fn deliver_pending(&mut self, index: usize) {
        if self.pending.is_empty() {
            return;
        }
        let index = index % self.pending.len();
        if let Some(event) = self.pending.remove(index) {
            self.redeliver(&event);
        }
    }

    /// Delivers pending events until none is left.
    pub fn drain(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            self.redeliver(&event);
        }
    }

    /// The stores of the running services, for the audit.
    pub fn snapshot(&self) -> crate::audit::StateSnapshot {
        use crate::audit::StateSnapshotExt;
        use crate::flow::Service;
        let mut snapshot = crate::audit::StateSnapshot::default();
        let services = self.flow.services();
        if services.contains(Service::Payment) {
            snapshot.add_accounts(&self.state.accounts);
        }
        if services.contains(Service::Inventory) {
            snapshot.add_stock(&self.state.stock);
        }
        if services.contains(Service::Order) {
            snapshot.add_orders(&self.state.orders);
        }
        snapshot
    }

    /// Audits the log (and the state) under `guarantee`.
    pub fn audit(&self, guarantee: crate::audit::Guarantee) -> crate::audit::AuditReport {
        let mut audit = crate::audit::Audit::new(guarantee);
        for (topic, event) in &self.log {
            audit.record(topic, event);
        }
        audit.finish_with_state(&self.snapshot())
    }
}
