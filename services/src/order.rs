//! The Order stage: every order's status, the state behind order-status queries.
//!
//! Owns: the `OrderBook` (one per partition of the account-keyed topics: one
//! `OrderRecord` per order) and how it follows the flow: `order.created`
//! makes an order Accepted; exactly one terminal outcome closes it
//! (`stock.updated`: Filled; `payment.failed`: RejectedFunds;
//! `payment.refunded`: RejectedStockRefunded); `order.amended` and
//! `order.cancelled` are recorded as requests.
//! Must never: emit events or decide outcomes (Payment and Inventory do), let
//! a second, different outcome replace the first, or change state for an
//! event it rejects.
//!
//! # Amend and cancel
//! The flow has no resting orders: Payment decides an order as soon as it
//! reads its `order.created`, and Inventory as soon as it reads the payment,
//! so by the time a client's amend or cancel could act the outcome is decided
//! or in flight. Amend and cancel are therefore *requests*, recorded with a
//! verdict and never an outcome:
//! - before the terminal outcome is known, the request is `Open`; when the
//!   outcome arrives it becomes `Superseded` (the outcome stands);
//! - after the terminal outcome, it is recorded as `TooLate`.
//!
//! So "every accepted order reaches exactly one terminal outcome" holds with
//! no change to Payment or Inventory, and a status query shows what the
//! client asked for and why it did not apply. Making cancel effective needs a
//! working-order state before Payment debits (Payment would then read
//! `order.updated` and cancel would become a fourth terminal outcome); that
//! is a change of the flow, not of this stage.
//!
//! # Order of arrival
//! The stage reads five topics; across topics, Kafka gives no order, and a
//! replay after a crash may interleave them differently than the first
//! time. An outcome or a request can thus arrive before its `order.created`:
//! the stage records it on a placeholder and fills the order's details when
//! the create arrives. The resulting record does not depend on the
//! interleaving (only the history's order does).
//!
//! Lives on: the core of the shard that owns the partition.

use codecs::{
    AccountId, ArchivedOrderAmended, ArchivedOrderCancelled, ClientOrderId, EventId, EventKind,
    EventRef, Money, OrderCreatedRef, OrderId, PaymentFailReason, Quantity, Sku,
};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::{ChangelogStore, PartitionStores, Store, StoreValue};

pub use crate::retention::ORDER_RETENTION_DEFAULT_MS;
use crate::retention::{StreamClock, EVICTIONS_PER_EVENT_MAX};
use crate::routing::{expect_partition, expect_topic, require_order};
use crate::store_codec::{fail_reason_code, fail_reason_from, OrderKey, ValueReader, ValueWriter};
use crate::topics::{
    account_key, ORDER_CREATED, ORDER_UPDATED, PAYMENT_FAILED, PAYMENT_REFUNDED, STOCK_UPDATED,
};

/// Changelog store name, service-prefixed (see `payment::ACCOUNTS_STORE`).
pub const ORDERS_STORE: &str = "order-orders";

/// The topics the Order stage reads, all keyed by account.
pub const ORDER_INPUTS: [&str; 5] = [
    ORDER_CREATED,
    ORDER_UPDATED,
    PAYMENT_FAILED,
    STOCK_UPDATED,
    PAYMENT_REFUNDED,
];

/// Most history entries kept per order; older ones are dropped (counted).
pub const HISTORY_ENTRIES_MAX: usize = 6;

/// How an order ended. Exactly one per accepted order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderOutcome {
    /// Inventory took the units (`stock.updated`).
    Filled,
    /// Payment refused it (`payment.failed`): no funds, unknown account, or
    /// an invalid order; the reason says which.
    RejectedFunds(PaymentFailReason),
    /// Inventory refused it and Payment refunded (`payment.refunded`).
    RejectedStockRefunded,
}

impl OrderOutcome {
    /// The event kind that carries this outcome.
    pub fn event_kind(self) -> EventKind {
        match self {
            OrderOutcome::Filled => EventKind::StockUpdated,
            OrderOutcome::RejectedFunds(_) => EventKind::PaymentFailed,
            OrderOutcome::RejectedStockRefunded => EventKind::PaymentRefunded,
        }
    }
}

/// An order's status, as a query answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// Only a request for this order id was seen, not its `order.created`.
    NotYetAccepted,
    /// Accepted; the outcome is being decided.
    Accepted,
    /// Terminal.
    Done(OrderOutcome),
}

/// What a client asked after creating the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderRequest {
    Amend {
        quantity: Quantity,
        limit_price: Money,
    },
    Cancel,
}

/// What became of a request (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Received before the outcome was known.
    Open,
    /// The outcome arrived after the request; the outcome stands.
    Superseded,
    /// Received after the outcome.
    TooLate,
}

/// The latest request on an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub request: OrderRequest,
    pub verdict: RequestVerdict,
    pub event: EventId,
}

/// A step in an order's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Milestone {
    Accepted,
    AmendRequested,
    CancelRequested,
    Outcome(OrderOutcome),
}

/// One history entry: the milestone and the timestamp of the Kafka record
/// that brought it, milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub milestone: Milestone,
    pub at_ms: i64,
}

/// The latest `HISTORY_ENTRIES_MAX` milestones, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    entries: [HistoryEntry; HISTORY_ENTRIES_MAX],
    len: u8,
    /// Entries dropped to keep the bound.
    dropped: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            entries: [HistoryEntry {
                milestone: Milestone::Accepted,
                at_ms: 0,
            }; HISTORY_ENTRIES_MAX],
            len: 0,
            dropped: 0,
        }
    }
}

impl History {
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries[..usize::from(self.len)]
    }

    /// Entries dropped to keep the bound.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    fn push(&mut self, entry: HistoryEntry) {
        let len = usize::from(self.len);
        if len < HISTORY_ENTRIES_MAX {
            self.entries[len] = entry;
            self.len += 1;
        } else {
            self.entries.rotate_left(1);
            self.entries[HISTORY_ENTRIES_MAX - 1] = entry;
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

const _: () = assert!(
    HISTORY_ENTRIES_MAX <= u8::MAX as usize,
    "the history length is stored in one byte"
);

/// One order as the Order stage knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderRecord {
    pub account: AccountId,
    pub sku: Sku,
    /// As created; from the outcome event while the create is not seen yet.
    pub quantity: Quantity,
    /// As created; zero while the create is not seen yet.
    pub limit_price: Money,
    /// `None` while the create is not seen yet.
    pub client_order_id: Option<ClientOrderId>,
    /// The `order.created` event; `NONE` while not seen yet.
    pub created_by: EventId,
    pub outcome: Option<OrderOutcome>,
    /// The event that carried the outcome; `NONE` without one.
    pub outcome_event: EventId,
    pub request: Option<RequestRecord>,
    pub history: History,
}

impl OrderRecord {
    fn placeholder(account: AccountId, sku: Sku, quantity: Quantity) -> Self {
        OrderRecord {
            account,
            sku,
            quantity,
            limit_price: Money::ZERO,
            client_order_id: None,
            created_by: EventId::NONE,
            outcome: None,
            outcome_event: EventId::NONE,
            request: None,
            history: History::default(),
        }
    }

    /// Whether its `order.created` was seen.
    pub fn is_created(&self) -> bool {
        !self.created_by.is_none()
    }

    /// The event time (ms) from which the order is finished and may be
    /// evicted once the retention has passed: that of its outcome, when it has
    /// one and no open request. `None` while it must be kept. (If later
    /// requests pushed the outcome out of the bounded history, the latest
    /// entry's time stands in: later, never earlier.)
    pub fn finished_at_ms(&self) -> Option<i64> {
        self.outcome?;
        if self
            .request
            .is_some_and(|r| r.verdict == RequestVerdict::Open)
        {
            return None;
        }
        let entries = self.history.entries();
        entries
            .iter()
            .rev()
            .find(|e| matches!(e.milestone, Milestone::Outcome(_)))
            .or(entries.last())
            .map(|e| e.at_ms)
    }

    pub fn status(&self) -> OrderStatus {
        match (self.outcome, self.is_created()) {
            (Some(outcome), _) => OrderStatus::Done(outcome),
            (None, true) => OrderStatus::Accepted,
            (None, false) => OrderStatus::NotYetAccepted,
        }
    }
}

fn outcome_code(outcome: Option<OrderOutcome>) -> (u8, u8) {
    match outcome {
        None => (0, 0),
        Some(OrderOutcome::Filled) => (1, 0),
        Some(OrderOutcome::RejectedFunds(reason)) => (2, fail_reason_code(reason)),
        Some(OrderOutcome::RejectedStockRefunded) => (3, 0),
    }
}

fn outcome_from(tag: u8, reason: u8) -> Result<Option<OrderOutcome>, &'static str> {
    Ok(match tag {
        0 => None,
        1 => Some(OrderOutcome::Filled),
        2 => Some(OrderOutcome::RejectedFunds(fail_reason_from(reason)?)),
        3 => Some(OrderOutcome::RejectedStockRefunded),
        _ => return Err("unknown order outcome"),
    })
}

fn milestone_code(milestone: Milestone) -> (u8, u8) {
    match milestone {
        Milestone::Accepted => (0, 0),
        Milestone::AmendRequested => (1, 0),
        Milestone::CancelRequested => (2, 0),
        Milestone::Outcome(outcome) => {
            let (tag, reason) = outcome_code(Some(outcome));
            (2 + tag, reason)
        }
    }
}

fn milestone_from(tag: u8, reason: u8) -> Result<Milestone, &'static str> {
    Ok(match tag {
        0 => Milestone::Accepted,
        1 => Milestone::AmendRequested,
        2 => Milestone::CancelRequested,
        3..=5 => match outcome_from(tag - 2, reason)? {
            Some(outcome) => Milestone::Outcome(outcome),
            None => return Err("unknown history milestone"),
        },
        _ => return Err("unknown history milestone"),
    })
}

impl StoreValue for OrderRecord {
    /// account 8 | sku 16 | quantity 8 | limit price 8 | client order id 32 |
    /// created_by 16 | outcome 1 + reason 1 | outcome event 16 | request 1 |
    /// verdict 1 | request quantity 8 | request price 8 | request event 16 |
    /// history dropped 8 | history length 1 | entries (tag 1 + reason 1 + at 8) each.
    fn encode(&self, out: &mut Vec<u8>) {
        let (outcome, reason) = outcome_code(self.outcome);
        let (request, verdict, quantity, price, event) = match self.request {
            None => (0, 0, Quantity::ZERO, Money::ZERO, EventId::NONE),
            Some(r) => {
                let verdict = match r.verdict {
                    RequestVerdict::Open => 0,
                    RequestVerdict::Superseded => 1,
                    RequestVerdict::TooLate => 2,
                };
                match r.request {
                    OrderRequest::Amend {
                        quantity,
                        limit_price,
                    } => (1, verdict, quantity, limit_price, r.event),
                    OrderRequest::Cancel => (2, verdict, Quantity::ZERO, Money::ZERO, r.event),
                }
            }
        };
        let mut w = ValueWriter(out);
        w.account(self.account)
            .sku(&self.sku)
            .quantity(self.quantity)
            .money(self.limit_price)
            .client_order_id(self.client_order_id.as_ref())
            .event_id(self.created_by)
            .u8(outcome)
            .u8(reason)
            .event_id(self.outcome_event)
            .u8(request)
            .u8(verdict)
            .quantity(quantity)
            .money(price)
            .event_id(event)
            .u64(u64::from(self.history.dropped))
            .u8(self.history.len);
        for entry in self.history.entries() {
            let (tag, reason) = milestone_code(entry.milestone);
            w.u8(tag).u8(reason).i64(entry.at_ms);
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let account = r.account()?;
        let sku = r.sku()?;
        let quantity = r.quantity()?;
        let limit_price = r.money()?;
        let client_order_id = r.client_order_id()?;
        let created_by = r.event_id()?;
        let outcome_tag = r.u8()?;
        let outcome_reason = r.u8()?;
        let outcome = outcome_from(outcome_tag, outcome_reason)?;
        let outcome_event = r.event_id()?;
        let request_tag = r.u8()?;
        let verdict = r.u8()?;
        let request_quantity = r.quantity()?;
        let request_price = r.money()?;
        let request_event = r.event_id()?;
        let verdict = match verdict {
            0 => RequestVerdict::Open,
            1 => RequestVerdict::Superseded,
            2 => RequestVerdict::TooLate,
            _ => return Err("unknown request verdict"),
        };
        let request = match request_tag {
            0 => None,
            1 => Some(OrderRequest::Amend {
                quantity: request_quantity,
                limit_price: request_price,
            }),
            2 => Some(OrderRequest::Cancel),
            _ => return Err("unknown order request"),
        }
        .map(|request| RequestRecord {
            request,
            verdict,
            event: request_event,
        });
        let dropped = u32::try_from(r.u64()?).map_err(|_| "history drop count out of range")?;
        let len = r.u8()?;
        if usize::from(len) > HISTORY_ENTRIES_MAX {
            return Err("history longer than HISTORY_ENTRIES_MAX");
        }
        let mut history = History {
            dropped,
            ..History::default()
        };
        for _ in 0..len {
            let tag = r.u8()?;
            let reason = r.u8()?;
            let at_ms = r.i64()?;
            history.push(HistoryEntry {
                milestone: milestone_from(tag, reason)?,
                at_ms,
            });
        }
        r.finish()?;
        Ok(OrderRecord {
            account,
            sku,
            quantity,
            limit_price,
            client_order_id,
            created_by,
            outcome,
            outcome_event,
            request,
            history,
        })
    }
}

/// A terminal outcome for an order, from its event or straight from Payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeNotice {
    pub order: OrderId,
    pub account: AccountId,
    pub sku: Sku,
    pub quantity: Quantity,
    pub outcome: OrderOutcome,
    /// The event carrying the outcome.
    pub event: EventId,
    /// Timestamp of the record that brought it, ms since the epoch.
    pub at_ms: i64,
}

/// An outcome the Order stage cannot accept: the flow broke its own rules
/// upstream (two outcomes for one order, or one for another account).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutcomeConflict {
    #[error("order {order}: outcome {new:?} after outcome {recorded:?}; an order has exactly one")]
    SecondOutcome {
        order: u64,
        recorded: OrderOutcome,
        new: OrderOutcome,
    },
    #[error(
        "order {order}: outcome for account {new}, but the order belongs to account {recorded}"
    )]
    OtherAccount {
        order: u64,
        recorded: AccountId,
        new: AccountId,
    },
}

impl From<OutcomeConflict> for Rejection {
    fn from(conflict: OutcomeConflict) -> Self {
        Rejection::user_data(conflict.to_string())
    }
}

/// What `OrderBook::check_created` found; apply it with `apply_created`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreatePlan {
    /// A new order.
    New,
    /// An outcome or request arrived first; fill in the order's details.
    FillPlaceholder,
    /// Seen already (a replay or a client's retry); nothing to do.
    Duplicate,
}

/// The Order stage's state for one partition of the account-keyed topics.
///
/// Finished orders are evicted once the retention has passed in event time
/// ([`OrderBook::evict_finished`], `crate::retention`).
pub struct OrderBook {
    pub orders: Store<OrderKey, OrderRecord>,
    clock: StreamClock,
}

impl Default for OrderBook {
    fn default() -> Self {
        OrderBook {
            orders: Store::with_retention(ORDERS_STORE, OrderRecord::finished_at_ms),
            clock: StreamClock::default(),
        }
    }
}

impl PartitionStores for OrderBook {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.orders);
    }
}

impl OrderBook {
    /// Moves the partition's stream time to `at_ms` (never back) and evicts
    /// orders finished more than `retention_ms` before it, looking at no more
    /// than [`EVICTIONS_PER_EVENT_MAX`] queued orders. Each eviction is a
    /// tombstone in the changelog at the next commit. Returns the evictions.
    pub fn evict_finished(&mut self, at_ms: i64, retention_ms: i64) -> usize {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.orders.evict_finished(cutoff, EVICTIONS_PER_EVENT_MAX)
    }

    /// Before an `order.created` at `at_ms` is checked: forgets `order` if
    /// its retention has passed, so a resubmission after the retention is a
    /// new order here as in Payment and Inventory. Returns whether it went.
    pub fn forget_if_past_retention(
        &mut self,
        order: OrderId,
        at_ms: i64,
        retention_ms: i64,
    ) -> bool {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.orders.evict_if_finished_by(&OrderKey(order), cutoff)
    }

    /// The latest record timestamp seen (ms); `i64::MIN` before the first.
    pub fn stream_time_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The order-status query.
    pub fn order(&self, order: OrderId) -> Option<&OrderRecord> {
        self.orders.get(&OrderKey(order))
    }

    /// Checks an `order.created` without changing anything, so that a
    /// composite stage can check every service before any of them writes.
    pub fn check_created(&self, order: OrderCreatedRef<'_>) -> Result<CreatePlan, Rejection> {
        let order_id = require_order(order.header(), EventKind::OrderCreated)?;
        let Some(record) = self.order(order_id) else {
            return Ok(CreatePlan::New);
        };
        if !record.is_created() {
            return if record.account == order.account() && record.sku == order.sku() {
                Ok(CreatePlan::FillPlaceholder)
            } else {
                Err(Rejection::user_data(format!(
                    "order {} was seen for account {} ({}) before its create, which says account {} ({})",
                    order_id.0,
                    record.account,
                    record.sku,
                    order.account(),
                    order.sku()
                )))
            };
        }
        let same = record.created_by == order.header().event_id()
            || (record.account == order.account()
                && record.sku == order.sku()
                && record.quantity == order.quantity()
                && record.limit_price == order.limit_price()
                && record.client_order_id == Some(order.client_order_id()));
        if same {
            Ok(CreatePlan::Duplicate)
        } else {
            Err(Rejection::user_data(format!(
                "order id {} already names another order (account {}, {} × {} at {})",
                order_id.0, record.account, record.sku, record.quantity, record.limit_price
            )))
        }
    }

    /// Applies what `check_created` planned for the same event.
    pub fn apply_created(&mut self, plan: CreatePlan, order: OrderCreatedRef<'_>, at_ms: i64) {
        let order_id = order.header().order_id();
        let key = OrderKey(order_id);
        let fill = |record: &mut OrderRecord| {
            record.quantity = order.quantity();
            record.limit_price = order.limit_price();
            record.client_order_id = Some(order.client_order_id());
            record.created_by = order.header().event_id();
            record.history.push(HistoryEntry {
                milestone: Milestone::Accepted,
                at_ms,
            });
        };
        match plan {
            CreatePlan::Duplicate => {}
            CreatePlan::New => {
                let mut record =
                    OrderRecord::placeholder(order.account(), order.sku(), order.quantity());
                fill(&mut record);
                self.orders.insert(key, record);
            }
            CreatePlan::FillPlaceholder => {
                if let Some(record) = self.orders.get_mut(&key) {
                    fill(record);
                }
            }
        }
    }

    /// `order.created`: check, then apply.
    pub fn record_created(
        &mut self,
        order: OrderCreatedRef<'_>,
        at_ms: i64,
    ) -> Result<CreatePlan, Rejection> {
        let plan = self.check_created(order)?;
        self.apply_created(plan, order, at_ms);
        Ok(plan)
    }

    /// A terminal outcome. The same outcome again (a replay, a duplicate) is
    /// absorbed; a different one is a conflict and changes nothing.
    pub fn record_outcome(&mut self, notice: &OutcomeNotice) -> Result<(), OutcomeConflict> {
        let key = OrderKey(notice.order);
        if let Some(record) = self.order(notice.order) {
            if record.account != notice.account {
                return Err(OutcomeConflict::OtherAccount {
                    order: notice.order.0,
                    recorded: record.account,
                    new: notice.account,
                });
            }
            match record.outcome {
                Some(recorded) if recorded == notice.outcome => return Ok(()),
                Some(recorded) => {
                    return Err(OutcomeConflict::SecondOutcome {
                        order: notice.order.0,
                        recorded,
                        new: notice.outcome,
                    })
                }
                None => {}
            }
        }
        let record = self.orders.upsert_with(key, || {
            OrderRecord::placeholder(notice.account, notice.sku, notice.quantity)
        });
        record.outcome = Some(notice.outcome);
        record.outcome_event = notice.event;
        if let Some(request) = record.request.as_mut() {
            if request.verdict == RequestVerdict::Open {
                request.verdict = RequestVerdict::Superseded;
            }
        }
        record.history.push(HistoryEntry {
            milestone: Milestone::Outcome(notice.outcome),
            at_ms: notice.at_ms,
        });
        Ok(())
    }

    /// `order.amended` / `order.cancelled`: recorded as a request (see the
    /// module doc); never changes the outcome.
    pub fn record_request(
        &mut self,
        order: OrderId,
        account: AccountId,
        sku: Sku,
        request: OrderRequest,
        event: EventId,
        at_ms: i64,
    ) -> Result<(), Rejection> {
        if let OrderRequest::Amend {
            quantity,
            limit_price,
        } = request
        {
            if quantity.0 <= 0 || limit_price.0 <= 0 {
                return Err(Rejection::user_data(format!(
                    "order.amended for order {} asks {quantity} at {limit_price}: both must be positive",
                    order.0
                )));
            }
        }
        let key = OrderKey(order);
        if let Some(record) = self.order(order) {
            if record.account != account || record.sku != sku {
                return Err(Rejection::user_data(format!(
                    "request on order {} for account {account} ({sku}), but the order is account {} ({})",
                    order.0, record.account, record.sku
                )));
            }
            if record.request.is_some_and(|r| r.event == event) {
                return Ok(());
            }
        }
        let record = self.orders.upsert_with(key, || {
            OrderRecord::placeholder(account, sku, Quantity::ZERO)
        });
        let verdict = if record.outcome.is_some() {
            RequestVerdict::TooLate
        } else {
            RequestVerdict::Open
        };
        record.request = Some(RequestRecord {
            request,
            verdict,
            event,
        });
        record.history.push(HistoryEntry {
            milestone: match request {
                OrderRequest::Amend { .. } => Milestone::AmendRequested,
                OrderRequest::Cancel => Milestone::CancelRequested,
            },
            at_ms,
        });
        Ok(())
    }

    /// `order.amended`.
    pub fn record_amended(
        &mut self,
        amended: &ArchivedOrderAmended,
        at_ms: i64,
    ) -> Result<(), Rejection> {
        let order = require_order(amended.header(), EventKind::OrderAmended)?;
        self.record_request(
            order,
            amended.account(),
            amended.sku(),
            OrderRequest::Amend {
                quantity: amended.quantity(),
                limit_price: amended.limit_price(),
            },
            amended.header().event_id(),
            at_ms,
        )
    }

    /// `order.cancelled`.
    pub fn record_cancelled(
        &mut self,
        cancelled: &ArchivedOrderCancelled,
        at_ms: i64,
    ) -> Result<(), Rejection> {
        let order = require_order(cancelled.header(), EventKind::OrderCancelled)?;
        self.record_request(
            order,
            cancelled.account(),
            cancelled.sku(),
            OrderRequest::Cancel,
            cancelled.header().event_id(),
            at_ms,
        )
    }

    /// Applies any event the Order stage reads that arrived from Kafka.
    pub(crate) fn apply_event(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
    ) -> Result<(), Rejection> {
        let at_ms = input.timestamp_ms;
        match event {
            EventRef::OrderCreated(order) => self.record_created(order, at_ms).map(drop),
            EventRef::OrderAmended(amended) => self.record_amended(amended, at_ms),
            EventRef::OrderCancelled(cancelled) => self.record_cancelled(cancelled, at_ms),
            EventRef::PaymentFailed(_)
            | EventRef::StockUpdated(_)
            | EventRef::PaymentRefunded(_) => {
                let notice = outcome_notice(event, at_ms)?;
                self.record_outcome(&notice).map_err(Rejection::from)
            }
            other => Err(Rejection::user_data(format!(
                "the order stage does not take {}",
                other.kind()
            ))),
        }
    }
}

/// The outcome an outcome event carries.
fn outcome_notice(event: EventRef<'_>, at_ms: i64) -> Result<OutcomeNotice, Rejection> {
    let (account, sku, quantity, outcome) = match event {
        EventRef::PaymentFailed(e) => (
            e.account(),
            e.sku(),
            e.quantity(),
            OrderOutcome::RejectedFunds(e.reason()),
        ),
        EventRef::StockUpdated(e) => (e.account(), e.sku(), e.quantity(), OrderOutcome::Filled),
        EventRef::PaymentRefunded(e) => (
            e.account(),
            e.sku(),
            e.quantity(),
            OrderOutcome::RejectedStockRefunded,
        ),
        other => {
            return Err(Rejection::user_data(format!(
                "{} is not an order outcome",
                other.kind()
            )))
        }
    };
    Ok(OutcomeNotice {
        order: require_order(event.header(), event.kind())?,
        account,
        sku,
        quantity,
        outcome,
        event: event.event_id(),
        at_ms,
    })
}

/// The Order stage alone (see [`crate::flow::TradeFlow`] for the composite,
/// where it hears Payment's outcomes directly), with the default retention
/// ([`ORDER_RETENTION_DEFAULT_MS`]; `TradeFlow` takes the core map's).
#[derive(Debug, Default)]
pub struct OrderStage;

impl Stage for OrderStage {
    type State = OrderBook;

    fn name(&self) -> &'static str {
        "order"
    }

    fn input_topics(&self) -> &[&'static str] {
        &ORDER_INPUTS
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        book: &mut OrderBook,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        expect_topic(input, event.kind())?;
        let Some(account) = event.account() else {
            return Err(Rejection::user_data(format!(
                "the order stage does not take {}",
                event.kind()
            )));
        };
        expect_partition(input, &account_key(account), out.partitions())?;
        if let EventRef::OrderCreated(order) = event {
            book.forget_if_past_retention(
                order.header().order_id(),
                input.timestamp_ms,
                ORDER_RETENTION_DEFAULT_MS,
            );
        }
        book.apply_event(input, event)?;
        book.evict_finished(input.timestamp_ms, ORDER_RETENTION_DEFAULT_MS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn outcome() -> impl Strategy<Value = OrderOutcome> {
        prop_oneof![
            Just(OrderOutcome::Filled),
            Just(OrderOutcome::RejectedFunds(
                PaymentFailReason::InsufficientFunds
            )),
            Just(OrderOutcome::RejectedFunds(PaymentFailReason::InvalidOrder)),
            Just(OrderOutcome::RejectedStockRefunded),
        ]
    }

    fn milestone() -> impl Strategy<Value = Milestone> {
        prop_oneof![
            Just(Milestone::Accepted),
            Just(Milestone::AmendRequested),
            Just(Milestone::CancelRequested),
            outcome().prop_map(Milestone::Outcome),
        ]
    }

    fn request() -> impl Strategy<Value = Option<RequestRecord>> {
        let request = prop_oneof![
            (any::<i64>(), any::<i64>()).prop_map(|(q, p)| OrderRequest::Amend {
                quantity: Quantity(q),
                limit_price: Money(p)
            }),
            Just(OrderRequest::Cancel),
        ];
        let verdict = prop_oneof![
            Just(RequestVerdict::Open),
            Just(RequestVerdict::Superseded),
            Just(RequestVerdict::TooLate),
        ];
        proptest::option::of((request, verdict, any::<u128>()).prop_map(
            |(request, verdict, event)| RequestRecord {
                request,
                verdict,
                event: EventId(event),
            },
        ))
    }

    proptest! {
        #[test]
        fn order_records_round_trip(
            account: u64, quantity: i64, price: i64, created: u128, outcome_event: u128,
            sku in "[A-Z0-9._-]{1,16}",
            client in proptest::option::of("[!-~]{1,32}"),
            outcome in proptest::option::of(outcome()),
            request in request(),
            history in proptest::collection::vec((milestone(), any::<i64>()), 0..10),
        ) {
            let fail = |e: codecs::ValueError| TestCaseError::fail(e.to_string());
            let mut record = OrderRecord {
                account: AccountId(account),
                sku: Sku::new(&sku).map_err(fail)?,
                quantity: Quantity(quantity),
                limit_price: Money(price),
                client_order_id: client.map(|c| ClientOrderId::new(&c)).transpose().map_err(fail)?,
                created_by: EventId(created),
                outcome,
                outcome_event: EventId(outcome_event),
                request,
                history: History::default(),
            };
            for (milestone, at_ms) in history {
                record.history.push(HistoryEntry { milestone, at_ms });
            }
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            prop_assert_eq!(OrderRecord::decode(&bytes), Ok(record));
            prop_assert!(OrderRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    fn sku(text: &str) -> Result<Sku, TestCaseError> {
        Sku::new(text).map_err(|e| TestCaseError::fail(e.to_string()))
    }

    /// One step of an order book's life in the retention property.
    #[derive(Clone, Debug)]
    enum Step {
        /// An outcome for order `order` at event time `at_ms`.
        Outcome { order: u64, at_ms: i64 },
        /// A cancel request (open before the outcome, too late after it).
        Cancel { order: u64, at_ms: i64 },
        /// A record of another kind moves the stream time on.
        Tick { at_ms: i64 },
        /// A commit: dirty keys to the changelog.
        Commit,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..40, 0i64..10_000).prop_map(|(order, at_ms)| Step::Outcome { order, at_ms }),
            (1u64..40, 0i64..10_000).prop_map(|(order, at_ms)| Step::Cancel { order, at_ms }),
            (0i64..12_000).prop_map(|at_ms| Step::Tick { at_ms }),
            Just(Step::Commit),
        ]
    }

    fn commit(book: &mut OrderBook, changelog: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        book.orders
            .write_dirty(&mut |k, v| changelog.push((k.to_vec(), v.map(<[u8]>::to_vec))));
    }

    /// Evicts until the retention queue stops shrinking (one call may only
    /// skip stale entries and evict nothing).
    fn drain(book: &mut OrderBook, now: i64, retention_ms: i64) {
        loop {
            let queued = book.orders.retention_queue_len();
            book.evict_finished(now, retention_ms);
            if book.orders.retention_queue_len() == queued {
                return;
            }
        }
    }

    proptest! {
        /// Retention evicts exactly the orders finished more than the
        /// retention before the stream time (never an unfinished one, never
        /// early), and a restore from the changelog (tombstones included)
        /// brings back the live book, evicted orders staying gone.
        #[test]
        fn retention_evicts_only_finished_orders_past_it_and_restores_the_same(
            steps in proptest::collection::vec(step(), 1..200),
            retention_ms in 0i64..5_000,
        ) {
            let mut book = OrderBook::default();
            let mut changelog = Vec::new();
            let sku = sku("ACME")?;
            for step in &steps {
                let at_ms = match *step {
                    Step::Outcome { order, at_ms } => {
                        let notice = OutcomeNotice {
                            order: OrderId(order),
                            account: AccountId(1),
                            sku,
                            quantity: Quantity(1),
                            outcome: OrderOutcome::Filled,
                            event: EventId(u128::from(order)),
                            at_ms,
                        };
                        prop_assert!(book.record_outcome(&notice).is_ok());
                        at_ms
                    }
                    Step::Cancel { order, at_ms } => {
                        let event = EventId(u128::from(order) << 64 | at_ms as u128);
                        prop_assert!(book
                            .record_request(OrderId(order), AccountId(1), sku, OrderRequest::Cancel, event, at_ms)
                            .is_ok());
                        at_ms
                    }
                    Step::Tick { at_ms } => at_ms,
                    Step::Commit => {
                        commit(&mut book, &mut changelog);
                        continue;
                    }
                };
                let before: Vec<_> = book.orders.iter().map(|(k, r)| (*k, *r)).collect();
                book.evict_finished(at_ms, retention_ms);
                let cutoff = book.stream_time_ms().saturating_sub(retention_ms);
                for (key, record) in before {
                    if book.orders.get(&key).is_none() {
                        let finished = record.finished_at_ms();
                        prop_assert!(
                            finished.is_some_and(|t| t <= cutoff),
                            "order {} evicted at cutoff {cutoff}: finished {finished:?}",
                            key.0 .0
                        );
                    }
                }
            }
            commit(&mut book, &mut changelog);
            // Bounded work per event: catch up with more calls.
            let now = book.stream_time_ms();
            drain(&mut book, now, retention_ms);
            commit(&mut book, &mut changelog);
            let cutoff = now.saturating_sub(retention_ms);
            for (key, record) in book.orders.iter() {
                prop_assert!(
                    record.finished_at_ms().is_none_or(|t| t > cutoff),
                    "order {} finished at {:?} outlived cutoff {cutoff}",
                    key.0 .0, record.finished_at_ms()
                );
            }
            let mut restored = OrderBook::default();
            for (key, value) in &changelog {
                prop_assert!(restored.orders.apply(key, value.as_deref()).is_ok());
            }
            prop_assert_eq!(restored.orders.dump(), book.orders.dump());
            // The restored book evicts nothing the live one keeps.
            drain(&mut restored, now, retention_ms);
            prop_assert_eq!(restored.orders.dump(), book.orders.dump());
        }
    }

    #[test]
    fn an_order_is_kept_until_its_outcome_and_then_for_the_retention() -> Result<(), TestCaseError>
    {
        let mut book = OrderBook::default();
        let sku = sku("ACME")?;
        let order = OrderId(9);
        book.record_request(
            order,
            AccountId(1),
            sku,
            OrderRequest::Cancel,
            EventId(1),
            1_000,
        )
        .map_err(|r| TestCaseError::fail(r.reason))?;
        assert_eq!(
            book.evict_finished(1_000_000, 10),
            0,
            "an open request is kept"
        );
        let notice = OutcomeNotice {
            order,
            account: AccountId(1),
            sku,
            quantity: Quantity(1),
            outcome: OrderOutcome::Filled,
            event: EventId(2),
            at_ms: 2_000,
        };
        book.record_outcome(&notice)
            .map_err(|c| TestCaseError::fail(c.to_string()))?;
        assert_eq!(
            book.order(order).and_then(OrderRecord::finished_at_ms),
            Some(2_000)
        );
        let mut changelog = Vec::new();
        commit(&mut book, &mut changelog);
        // The stream time is already 1 000 000 (never goes back): evicted at once.
        assert_eq!(book.evict_finished(2_001, 1_000), 1);
        assert!(book.order(order).is_none());
        commit(&mut book, &mut changelog);
        assert_eq!(
            changelog.last().map(|(_, v)| v.is_none()),
            Some(true),
            "a tombstone"
        );
        Ok(())
    }
}
