//! `audit`: the invariant audit, a pure function over every event read from
//! every topic of the flow that checks the domain's invariants
//! (docs/ARCHITECTURE.md) after a run, crashes included, and says what it
//! found in a readable report. A crate of its own so that every load run can
//! end with it (`loadgen run`, `loadgen audit`) and so can the engine's
//! binary (`tradeflow audit`, `tradeflow demo`) without linking the load
//! generator; `services::audit` re-exports it and adds the adapters from the
//! stages' stores to a [`StateSnapshot`].
//!
//! Owns: `Audit` (feed it `(topic, event)` pairs in any order), the
//! `AuditReport` it produces (counts, totals, violations, `Display`),
//! `StateSnapshot` (balances, stock and order states in plain maps, as a
//! caller dumped them from the stages, compared against what the events
//! imply) and the audit's own view of an order's state ([`OrderState`],
//! [`Outcome`]). Reading the topics is the caller's (`loadgen::audit_read`,
//! `tradeflow audit`).
//! Must never: read Kafka or the engine (callers decode the topics and pass
//! events in), depend on the order events are fed in, know a stage's types,
//! or trust a stage: every figure is re-derived from the events themselves.
//!
//! Lives on the thread of its caller; nothing in it is shared.
//!
//! **Architecture invariant:** `audit` depends on `codecs` alone: no Kafka
//! client, no engine, no stage, no load generator.
//!
//! Checked:
//! - every accepted order reaches exactly one terminal outcome (filled,
//!   rejected for funds, rejected for stock and refunded): none lost (no
//!   outcome after the flow drained), none twice; and the chain behind it is
//!   whole (a fill has a payment, a refund has a rejection of that payment,
//!   amounts and quantities agree along the chain);
//! - cash is conserved: funding = balances + value of filled orders; stock is
//!   conserved: replenished = on hand + units filled (all stock arrives by
//!   `stock.replenished`, so the initial stock is zero); with a
//!   `StateSnapshot`, the stages' balances and stock equal what the events
//!   imply;
//! - no balance and no stock level is negative;
//! - under exactly-once, no event id appears twice; under at-least-once,
//!   duplicates are allowed and counted, and their effects are counted once.
//!   Under both, one id with two different contents is a violation;
//! - with [`DeservedOutcomes`] (the plan of a `loadgen::synth` scenario),
//!   every planned order was accepted and ended as planned: a restore that
//!   lost a funding or a replenishment turns deserved fills into refusals
//!   that conserve cash and stock, and only this check sees it.
//!
//! Inputs the stages refuse by rule (a funding or replenishment that is not
//! positive, an order event without an order id) go to dead-letter topics
//! and are counted here as refused, not applied. Sums are `i128` with
//! checked arithmetic, so no run is large enough to overflow them silently.
//!
//! Topics are logical names (`codecs::topics`): a caller reading a
//! namespaced deployment strips the namespace first.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};

use codecs::topics::topic_of;
use codecs::{
    AccountId, Event, EventId, EventKind, Money, OrderId, PaymentFailReason, Quantity, Sku,
};

/// Most violations kept in a report; the rest are only counted.
pub const VIOLATIONS_KEPT_MAX: usize = 10_000;
/// Most violations `Display` prints.
pub const VIOLATIONS_SHOWN_MAX: usize = 50;

/// The processing guarantee the run was made under: the workspace's one
/// guarantee type (the core map's `commit.guarantee`). Under at-least-once
/// duplicates are allowed and effects must still count once; under
/// exactly-once each event appears once to a `read_committed` consumer.
pub use tuning::Guarantee;

/// A broken invariant, with what is needed to find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An event on another topic than its kind's.
    Misrouted {
        event: EventId,
        kind: EventKind,
        topic: String,
    },
    /// An event without an id cannot be deduplicated.
    MissingEventId {
        kind: EventKind,
    },
    /// Exactly-once: the same event read more than once.
    Duplicate {
        event: EventId,
        kind: EventKind,
    },
    /// One event id carrying two different events.
    EventIdReused {
        event: EventId,
        kind: EventKind,
    },
    /// An outcome or step for an order never created.
    WithoutOrder {
        order: OrderId,
        kind: EventKind,
    },
    /// An accepted order without a terminal outcome after the flow drained.
    Lost {
        order: OrderId,
        stage: &'static str,
    },
    /// An order with more than one terminal outcome.
    SeveralOutcomes {
        order: OrderId,
        outcomes: u32,
    },
    /// Payment decided an order more than once.
    SeveralPaymentDecisions {
        order: OrderId,
        completed: u32,
        failed: u32,
    },
    /// Inventory decided an order more than once.
    SeveralStockDecisions {
        order: OrderId,
        updated: u32,
        rejected: u32,
    },
    /// A step whose cause is missing (a fill without a payment, a refund
    /// without a rejection...).
    BrokenChain {
        order: OrderId,
        missing: EventKind,
        found: EventKind,
    },
    /// An order that breaks a domain rule was paid.
    InvalidOrderPaid {
        order: OrderId,
    },
    /// Amounts along an order's chain disagree.
    AmountMismatch {
        order: OrderId,
        kind: EventKind,
        expected: Money,
        found: Money,
    },
    /// Quantities along an order's chain disagree.
    QuantityMismatch {
        order: OrderId,
        kind: EventKind,
        expected: Quantity,
        found: Quantity,
    },
    NegativeBalance {
        account: AccountId,
        balance: i128,
    },
    NegativeStock {
        sku: Sku,
        on_hand: i128,
    },
    /// `stock.updated` reported a negative remainder.
    NegativeRemaining {
        order: OrderId,
        remaining: Quantity,
    },
    CashNotConserved {
        funded: i128,
        balances: i128,
        filled_value: i128,
    },
    StockNotConserved {
        replenished: i128,
        on_hand: i128,
        filled_units: i128,
    },
    /// A stage's balance differs from what the events imply.
    BalanceDiffers {
        account: AccountId,
        derived: i128,
        state: i128,
    },
    /// A stage's stock differs from what the events imply.
    StockDiffers {
        sku: Sku,
        derived: i128,
        state: i128,
    },
    /// The Order stage's status differs from the outcome the events show.
    StatusDiffers {
        order: OrderId,
        derived: Option<Outcome>,
        state: Option<OrderState>,
    },
    /// A planned order whose `order.created` never reached the flow.
    NeverAccepted {
        order: OrderId,
    },
    /// An order that ended otherwise than the scenario planned.
    Undeserved {
        order: OrderId,
        deserved: Deserved,
        found: Outcome,
    },
    /// A sum left `i128` (it cannot in any real run; reported, not wrapped).
    Overflow {
        what: &'static str,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Misrouted { event, kind, topic } => {
                write!(f, "{kind} {event} read from {topic}, expected {}", topic_of(*kind))
            }
            Violation::MissingEventId { kind } => write!(f, "{kind} without an event id"),
            Violation::Duplicate { event, kind } => {
                write!(f, "{kind} {event} appears more than once under exactly-once")
            }
            Violation::EventIdReused { event, kind } => {
                write!(f, "event id {event} names two different events (one a {kind})")
            }
            Violation::WithoutOrder { order, kind } => {
                write!(f, "order {}: {kind} for an order never created", order.0)
            }
            Violation::Lost { order, stage } => {
                write!(f, "order {}: no terminal outcome ({stage})", order.0)
            }
            Violation::SeveralOutcomes { order, outcomes } => {
                write!(f, "order {}: {outcomes} terminal outcomes", order.0)
            }
            Violation::SeveralPaymentDecisions {
                order,
                completed,
                failed,
            } => write!(
                f,
                "order {}: paid {completed} times and refused {failed} times",
                order.0
            ),
            Violation::SeveralStockDecisions {
                order,
                updated,
                rejected,
            } => write!(
                f,
                "order {}: filled {updated} times and rejected for stock {rejected} times",
                order.0
            ),
            Violation::BrokenChain {
                order,
                missing,
                found,
            } => write!(f, "order {}: {found} without {missing}", order.0),
            Violation::InvalidOrderPaid { order } => write!(
                f,
                "order {}: paid although its quantity or price is not positive, or its cost overflows",
                order.0
            ),
            Violation::AmountMismatch {
                order,
                kind,
                expected,
                found,
            } => write!(
                f,
                "order {}: {kind} carries {found}, expected {expected}",
                order.0
            ),
            Violation::QuantityMismatch {
                order,
                kind,
                expected,
                found,
            } => write!(
                f,
                "order {}: {kind} carries {found} units, expected {expected}",
                order.0
            ),
            Violation::NegativeBalance { account, balance } => {
                write!(f, "account {account}: balance {balance} is negative")
            }
            Violation::NegativeStock { sku, on_hand } => {
                write!(f, "{sku}: {on_hand} units on hand is negative")
            }
            Violation::NegativeRemaining { order, remaining } => {
                write!(f, "order {}: stock.updated left {remaining} units", order.0)
            }
            Violation::CashNotConserved {
                funded,
                balances,
                filled_value,
            } => write!(
                f,
                "cash not conserved: funded {funded} ≠ balances {balances} + filled value {filled_value}"
            ),
            Violation::StockNotConserved {
                replenished,
                on_hand,
                filled_units,
            } => write!(
                f,
                "stock not conserved: replenished {replenished} ≠ on hand {on_hand} + filled {filled_units}"
            ),
            Violation::BalanceDiffers {
                account,
                derived,
                state,
            } => write!(
                f,
                "account {account}: Payment holds {state}, the events imply {derived}"
            ),
            Violation::StockDiffers {
                sku,
                derived,
                state,
            } => write!(
                f,
                "{sku}: Inventory holds {state} units, the events imply {derived}"
            ),
            Violation::StatusDiffers {
                order,
                derived,
                state,
            } => write!(
                f,
                "order {}: the Order stage says {state:?}, the events say {derived:?}",
                order.0
            ),
            Violation::NeverAccepted { order } => write!(
                f,
                "order {}: planned by the scenario, never accepted (no order.created)",
                order.0
            ),
            Violation::Undeserved {
                order,
                deserved,
                found,
            } => write!(
                f,
                "order {}: the scenario planned it to {deserved}, it ended {found:?}",
                order.0
            ),
            Violation::Overflow { what } => write!(f, "{what} overflowed i128"),
        }
    }
}

/// What happened to the orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Distinct orders with an `order.created`.
    pub accepted: u64,
    /// Further creates of an order with a new event id (a client's retry).
    pub resubmitted: u64,
    pub filled: u64,
    pub rejected_funds: u64,
    pub rejected_stock_refunded: u64,
    /// Accepted orders without exactly one terminal outcome.
    pub unresolved: u64,
    /// Amend and cancel requests (never outcomes).
    pub requests: u64,
}

/// Cash and stock totals the events imply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTotals {
    pub funded: i128,
    pub balances: i128,
    pub filled_value: i128,
    pub replenished_units: i128,
    pub on_hand_units: i128,
    pub filled_units: i128,
}

/// What the audit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub guarantee: Guarantee,
    /// Events fed in, duplicates included.
    pub events: u64,
    /// Events read again with an id already seen (same content).
    pub duplicates: u64,
    /// Inputs the stages refuse by rule (dead-lettered), not applied.
    pub refused_inputs: u64,
    pub orders: OrderCounts,
    pub totals: FlowTotals,
    /// Whether a `StateSnapshot` was compared.
    pub state_compared: bool,
    /// Orders whose outcome was compared with the one the scenario planned
    /// (0 without [`DeservedOutcomes`]).
    pub deserved_compared: u64,
    /// Balance per account, as the events imply.
    pub balances: BTreeMap<AccountId, i128>,
    /// Units on hand per instrument, as the events imply.
    pub on_hand: BTreeMap<Sku, i128>,
    /// The first `VIOLATIONS_KEPT_MAX` violations.
    pub violations: Vec<Violation>,
    /// All violations, kept or not.
    pub violation_count: u64,
}

impl AuditReport {
    /// No invariant broken.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }

    fn violate(&mut self, violation: Violation) {
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(violation);
        }
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        writeln!(f, "audit {verdict} ({:?})", self.guarantee)?;
        writeln!(
            f,
            "  events      {} read, {} duplicates, {} refused inputs",
            self.events, self.duplicates, self.refused_inputs
        )?;
        let o = &self.orders;
        writeln!(
            f,
            "  orders      {} accepted ({} resubmitted): {} filled, {} rejected for funds, \
             {} rejected for stock and refunded, {} unresolved; {} amend/cancel requests",
            o.accepted,
            o.resubmitted,
            o.filled,
            o.rejected_funds,
            o.rejected_stock_refunded,
            o.unresolved,
            o.requests
        )?;
        let t = &self.totals;
        writeln!(
            f,
            "  cash        funded {} = balances {} + filled value {} ({} accounts)",
            t.funded,
            t.balances,
            t.filled_value,
            self.balances.len()
        )?;
        writeln!(
            f,
            "  stock       replenished {} = on hand {} + filled {} ({} instruments)",
            t.replenished_units,
            t.on_hand_units,
            t.filled_units,
            self.on_hand.len()
        )?;
        writeln!(
            f,
            "  state       {}",
            if self.state_compared {
                "compared with the stages' stores"
            } else {
                "not compared"
            }
        )?;
        if self.deserved_compared > 0 {
            writeln!(
                f,
                "  deserved    {} planned orders compared with their outcomes",
                self.deserved_compared
            )?;
        } else {
            writeln!(f, "  deserved    no plan compared")?;
        }
        if self.passed() {
            return Ok(());
        }
        writeln!(f, "  violations  {}", self.violation_count)?;
        for violation in self.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
            writeln!(f, "    - {violation}")?;
        }
        let hidden = self
            .violation_count
            .saturating_sub(VIOLATIONS_SHOWN_MAX as u64);
        if hidden > 0 {
            writeln!(f, "    ... and {hidden} more")?;
        }
        Ok(())
    }
}

/// How an order ended, as the events show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Inventory took the units (`stock.updated`).
    Filled,
    /// Payment refused it (`payment.failed`), for the reason given.
    RejectedFunds(PaymentFailReason),
    /// Inventory refused it and Payment refunded (`payment.refunded`).
    RejectedStockRefunded,
}

/// How a scenario meant an order to end (`loadgen::synth` plans each order
/// so that its outcome does not depend on timing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deserved {
    /// Funded and stocked for: must fill.
    Fill,
    /// Costs more than its account is ever funded with: must be refused
    /// for insufficient funds.
    FailFunds,
    /// Asks for more units than its instrument ever holds: must be
    /// rejected for stock and refunded.
    FailStock,
}

impl fmt::Display for Deserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Deserved::Fill => "fill",
            Deserved::FailFunds => "fail for funds",
            Deserved::FailStock => "fail for stock and be refunded",
        })
    }
}

impl Deserved {
    /// Whether `outcome` is the one deserved.
    pub fn matches(self, outcome: Outcome) -> bool {
        matches!(
            (self, outcome),
            (Deserved::Fill, Outcome::Filled)
                | (
                    Deserved::FailFunds,
                    Outcome::RejectedFunds(PaymentFailReason::InsufficientFunds)
                )
                | (Deserved::FailStock, Outcome::RejectedStockRefunded)
        )
    }
}

/// The outcome each order of a scenario deserves, by order id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeservedOutcomes {
    orders: HashMap<OrderId, Deserved>,
}

impl DeservedOutcomes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plans `order` to end as `deserved` (a later plan for the same order
    /// replaces the earlier one).
    pub fn insert(&mut self, order: OrderId, deserved: Deserved) {
        self.orders.insert(order, deserved);
    }

    /// Forgets the plan of `order` (a scenario cut short never sent it).
    pub fn remove(&mut self, order: OrderId) -> Option<Deserved> {
        self.orders.remove(&order)
    }

    pub fn get(&self, order: OrderId) -> Option<Deserved> {
        self.orders.get(&order).copied()
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Orders planned to end as `deserved`.
    pub fn count(&self, deserved: Deserved) -> u64 {
        self.orders.values().filter(|d| **d == deserved).count() as u64
    }
}

/// Where an order stands, as a stage holding orders reports it (the audit's
/// own vocabulary: it knows no stage's types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Only a request for the order was seen, not its `order.created`.
    NotYetAccepted,
    /// Accepted; no outcome yet.
    Accepted,
    /// Ended.
    Done(Outcome),
}

/// The stages' state at the end of a run, in plain maps, to compare with the
/// events. Only the parts present are compared (a run without the Order
/// stage has no order states to compare).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSnapshot {
    /// `Some` once any partition's accounts were added.
    pub balances: Option<BTreeMap<AccountId, Money>>,
    /// `Some` once any partition's stock was added.
    pub on_hand: Option<BTreeMap<Sku, Quantity>>,
    /// `Some` once any partition's orders were added.
    pub order_status: Option<BTreeMap<OrderId, OrderState>>,
}

impl StateSnapshot {
    /// The balances, present from now on (add one partition's accounts).
    pub fn balances_mut(&mut self) -> &mut BTreeMap<AccountId, Money> {
        self.balances.get_or_insert_with(BTreeMap::new)
    }

    /// The units on hand, present from now on (add one partition's stock).
    pub fn on_hand_mut(&mut self) -> &mut BTreeMap<Sku, Quantity> {
        self.on_hand.get_or_insert_with(BTreeMap::new)
    }

    /// The order states, present from now on (add one partition's orders).
    pub fn order_status_mut(&mut self) -> &mut BTreeMap<OrderId, OrderState> {
        self.order_status.get_or_insert_with(BTreeMap::new)
    }
}

/// The first create of an order: what the order asked for.
#[derive(Clone, Copy, Debug)]
struct Created {
    account: AccountId,
    quantity: Quantity,
    /// quantity × limit price, `None` if the order breaks a rule (not
    /// positive, or overflowing).
    cost: Option<Money>,
}

/// Everything the events say about one order (each event id counted once).
#[derive(Clone, Copy, Debug, Default)]
struct OrderTrail {
    created: Option<Created>,
    creates: u32,
    requests: u32,
    completed: u32,
    /// Quantity, amount, account and own id of the first payment.
    paid: Option<(Quantity, Money, AccountId, EventId)>,
    failed: u32,
    failed_reason: Option<PaymentFailReason>,
    updated: u32,
    /// Quantity, amount and causing payment of the first fill.
    filled: Option<(Quantity, Money, EventId)>,
    rejected: u32,
    /// Amount, own id and causing payment of the first stock rejection.
    rejection: Option<(Money, EventId, EventId)>,
    refunded: u32,
    /// Amount, account and causing rejection of the first refund.
    refund: Option<(Money, AccountId, EventId)>,
}

/// Cash movements of one account.
#[derive(Clone, Copy, Debug, Default)]
struct AccountFlow {
    funded: i128,
    debited: i128,
    refunded: i128,
}

/// Stock movements of one instrument.
#[derive(Clone, Copy, Debug, Default)]
struct SkuFlow {
    replenished: i128,
    filled: i128,
}

/// Feeds events in, then `finish`. See the module doc.
pub struct Audit {
    guarantee: Guarantee,
    /// A fingerprint of each event's content, by id, to tell a duplicate
    /// from a reused id without keeping every event.
    seen: HashMap<EventId, u64>,
    orders: BTreeMap<OrderId, OrderTrail>,
    accounts: BTreeMap<AccountId, AccountFlow>,
    skus: BTreeMap<Sku, SkuFlow>,
    deserved: Option<DeservedOutcomes>,
    report: AuditReport,
}

fn fingerprint(event: &Event) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all a
    // comparison of two events read by the same audit needs.
    let mut hasher = DefaultHasher::new();
    event.hash(&mut hasher);
    hasher.finish()
}

fn add(sum: &mut i128, amount: i64, overflowed: &mut bool) {
    match sum.checked_add(i128::from(amount)) {
        Some(total) => *sum = total,
        None => *overflowed = true,
    }
}

impl Audit {
    pub fn new(guarantee: Guarantee) -> Self {
        Audit {
            guarantee,
            seen: HashMap::new(),
            orders: BTreeMap::new(),
            accounts: BTreeMap::new(),
            skus: BTreeMap::new(),
            deserved: None,
            report: AuditReport {
                guarantee,
                events: 0,
                duplicates: 0,
                refused_inputs: 0,
                orders: OrderCounts::default(),
                totals: FlowTotals::default(),
                state_compared: false,
                deserved_compared: 0,
                balances: BTreeMap::new(),
                on_hand: BTreeMap::new(),
                violations: Vec::new(),
                violation_count: 0,
            },
        }
    }

    /// Also checks that every order of `plan` was accepted and ended as
    /// planned (orders outside the plan are judged by the other checks only).
    pub fn expect_outcomes(mut self, plan: DeservedOutcomes) -> Self {
        self.deserved = Some(plan);
        self
    }

    /// One event as read from `topic`.
    pub fn record(&mut self, topic: &str, event: &Event) {
        self.report.events += 1;
        let kind = event.kind();
        let id = event.header().event_id;
        if topic != topic_of(kind) {
            self.report.violate(Violation::Misrouted {
                event: id,
                kind,
                topic: topic.to_string(),
            });
        }
        if id.is_none() {
            self.report.violate(Violation::MissingEventId { kind });
            return;
        }
        let print = fingerprint(event);
        if let Some(&previous) = self.seen.get(&id) {
            if previous != print {
                self.report
                    .violate(Violation::EventIdReused { event: id, kind });
            } else {
                self.report.duplicates += 1;
                if self.guarantee == Guarantee::ExactlyOnce {
                    self.report
                        .violate(Violation::Duplicate { event: id, kind });
                }
            }
            // Effects count once, whatever the guarantee.
            return;
        }
        self.seen.insert(id, print);
        self.apply(event);
    }

    fn apply(&mut self, event: &Event) {
        let order = event.header().order_id;
        let id = event.header().event_id;
        if event.kind().is_order_scoped() && order.is_none() {
            // Dead-lettered by the stage that reads it.
            self.report.refused_inputs += 1;
            return;
        }
        match event {
            Event::AccountFunded(e) => {
                if e.amount.0 <= 0 {
                    self.report.refused_inputs += 1;
                    return;
                }
                let mut overflowed = false;
                add(
                    &mut self.accounts.entry(e.account).or_default().funded,
                    e.amount.0,
                    &mut overflowed,
                );
                self.overflow(overflowed, "funding of an account");
            }
            Event::StockReplenished(e) => {
                if e.quantity.0 <= 0 {
                    self.report.refused_inputs += 1;
                    return;
                }
                let mut overflowed = false;
                add(
                    &mut self.skus.entry(e.sku).or_default().replenished,
                    e.quantity.0,
                    &mut overflowed,
                );
                self.overflow(overflowed, "replenishment of an instrument");
            }
            Event::OrderCreated(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.creates += 1;
                if trail.created.is_none() {
                    let valid = e.quantity.0 > 0 && e.limit_price.0 > 0;
                    trail.created = Some(Created {
                        account: e.account,
                        quantity: e.quantity,
                        cost: e
                            .limit_price
                            .checked_mul_quantity(e.quantity)
                            .ok()
                            .filter(|_| valid),
                    });
                }
            }
            Event::OrderAmended(_) | Event::OrderCancelled(_) => {
                self.orders.entry(order).or_default().requests += 1;
            }
            Event::PaymentCompleted(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.completed += 1;
                trail
                    .paid
                    .get_or_insert((e.quantity, e.amount, e.account, id));
                let mut overflowed = false;
                add(
                    &mut self.accounts.entry(e.account).or_default().debited,
                    e.amount.0,
                    &mut overflowed,
                );
                self.overflow(overflowed, "debits of an account");
            }
            Event::PaymentFailed(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.failed += 1;
                trail.failed_reason.get_or_insert(e.reason);
            }
            Event::StockUpdated(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.updated += 1;
                trail
                    .filled
                    .get_or_insert((e.quantity, e.amount, event.header().causation_id));
                if e.remaining.0 < 0 {
                    self.report.violate(Violation::NegativeRemaining {
                        order,
                        remaining: e.remaining,
                    });
                }
                let mut overflowed = false;
                add(
                    &mut self.skus.entry(e.sku).or_default().filled,
                    e.quantity.0,
                    &mut overflowed,
                );
                self.overflow(overflowed, "fills of an instrument");
            }
            Event::StockRejected(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.rejected += 1;
                trail
                    .rejection
                    .get_or_insert((e.amount, id, event.header().causation_id));
            }
            Event::PaymentRefunded(e) => {
                let trail = self.orders.entry(order).or_default();
                trail.refunded += 1;
                trail
                    .refund
                    .get_or_insert((e.amount, e.account, event.header().causation_id));
                let mut overflowed = false;
                add(
                    &mut self.accounts.entry(e.account).or_default().refunded,
                    e.amount.0,
                    &mut overflowed,
                );
                self.overflow(overflowed, "refunds of an account");
            }
        }
    }

    fn overflow(&mut self, overflowed: bool, what: &'static str) {
        if overflowed {
            self.report.violate(Violation::Overflow { what });
        }
    }

    /// The report, from the events alone.
    pub fn finish(mut self) -> AuditReport {
        self.check_orders();
        self.check_cash_and_stock();
        self.report
    }

    /// The report, also comparing the stages' state with the events.
    pub fn finish_with_state(mut self, state: &StateSnapshot) -> AuditReport {
        self.check_orders();
        self.check_cash_and_stock();
        self.compare_state(state);
        self.report
    }

    fn check_orders(&mut self) {
        let orders = std::mem::take(&mut self.orders);
        for (&order, trail) in &orders {
            self.check_order(order, trail);
        }
        if let Some(plan) = self.deserved.take() {
            self.check_deserved(&orders, &plan);
        }
        self.orders = orders;
    }

    /// Every planned order was accepted and ended as planned. An order lost
    /// or decided twice is reported by `check_order` already.
    fn check_deserved(&mut self, orders: &BTreeMap<OrderId, OrderTrail>, plan: &DeservedOutcomes) {
        let mut planned: Vec<(OrderId, Deserved)> =
            plan.orders.iter().map(|(o, d)| (*o, *d)).collect();
        planned.sort_unstable_by_key(|(order, _)| *order);
        for (order, deserved) in planned {
            self.report.deserved_compared += 1;
            let Some(trail) = orders.get(&order).filter(|t| t.created.is_some()) else {
                self.report.violate(Violation::NeverAccepted { order });
                continue;
            };
            if let Some(found) = derived_outcome(trail) {
                if !deserved.matches(found) {
                    self.report.violate(Violation::Undeserved {
                        order,
                        deserved,
                        found,
                    });
                }
            }
        }
    }

    fn check_order(&mut self, order: OrderId, t: &OrderTrail) {
        let counts = &mut self.report.orders;
        counts.requests += u64::from(t.requests);
        let Some(created) = t.created else {
            for (n, kind) in [
                (t.completed, EventKind::PaymentCompleted),
                (t.failed, EventKind::PaymentFailed),
                (t.updated, EventKind::StockUpdated),
                (t.rejected, EventKind::StockRejected),
                (t.refunded, EventKind::PaymentRefunded),
            ] {
                if n > 0 {
                    self.report.violate(Violation::WithoutOrder { order, kind });
                }
            }
            return;
        };
        counts.accepted += 1;
        counts.resubmitted += u64::from(t.creates.saturating_sub(1));
        let outcomes = t.failed + t.updated + t.refunded;
        match outcomes {
            1 if t.failed == 1 => counts.rejected_funds += 1,
            1 if t.updated == 1 => counts.filled += 1,
            1 => counts.rejected_stock_refunded += 1,
            _ => counts.unresolved += 1,
        }
        if outcomes == 0 {
            let stage = match (t.completed, t.rejected) {
                (0, _) => "Payment never decided it",
                (_, 0) => "paid; Inventory never decided it",
                _ => "rejected for stock; never refunded",
            };
            self.report.violate(Violation::Lost { order, stage });
        } else if outcomes > 1 {
            self.report
                .violate(Violation::SeveralOutcomes { order, outcomes });
        }
        if t.completed + t.failed > 1 {
            self.report.violate(Violation::SeveralPaymentDecisions {
                order,
                completed: t.completed,
                failed: t.failed,
            });
        }
        if t.updated + t.rejected > 1 {
            self.report.violate(Violation::SeveralStockDecisions {
                order,
                updated: t.updated,
                rejected: t.rejected,
            });
        }
        self.check_chain(order, created, t);
    }

    /// Each step follows from the one before, with the same amounts.
    fn check_chain(&mut self, order: OrderId, created: Created, t: &OrderTrail) {
        let broken = |missing, found| Violation::BrokenChain {
            order,
            missing,
            found,
        };
        if let Some((quantity, amount, account, _)) = t.paid {
            match created.cost {
                None => self.report.violate(Violation::InvalidOrderPaid { order }),
                Some(cost) => self.check_amount(order, EventKind::PaymentCompleted, cost, amount),
            }
            if quantity != created.quantity {
                self.report.violate(Violation::QuantityMismatch {
                    order,
                    kind: EventKind::PaymentCompleted,
                    expected: created.quantity,
                    found: quantity,
                });
            }
            if account != created.account {
                self.report
                    .violate(broken(EventKind::OrderCreated, EventKind::PaymentCompleted));
            }
        }
        if created.cost.is_none()
            && t.failed > 0
            && !matches!(
                t.failed_reason,
                Some(PaymentFailReason::InvalidOrder | PaymentFailReason::AmountOverflow)
            )
        {
            // An order that breaks a rule must be refused for that rule.
            self.report.violate(Violation::InvalidOrderPaid { order });
        }
        if let Some((quantity, amount, cause)) = t.filled {
            match t.paid {
                Some((paid_quantity, paid_amount, _, paid_id)) if paid_id == cause => {
                    self.check_amount(order, EventKind::StockUpdated, paid_amount, amount);
                    if quantity != paid_quantity {
                        self.report.violate(Violation::QuantityMismatch {
                            order,
                            kind: EventKind::StockUpdated,
                            expected: paid_quantity,
                            found: quantity,
                        });
                    }
                }
                _ => self
                    .report
                    .violate(broken(EventKind::PaymentCompleted, EventKind::StockUpdated)),
            }
        }
        if let Some((amount, _, cause)) = t.rejection {
            match t.paid {
                Some((_, paid_amount, _, paid_id)) if paid_id == cause => {
                    self.check_amount(order, EventKind::StockRejected, paid_amount, amount);
                }
                _ => self.report.violate(broken(
                    EventKind::PaymentCompleted,
                    EventKind::StockRejected,
                )),
            }
        }
        if let Some((amount, account, cause)) = t.refund {
            match t.rejection {
                Some((rejected_amount, rejection_id, _)) if rejection_id == cause => {
                    self.check_amount(order, EventKind::PaymentRefunded, rejected_amount, amount);
                }
                _ => self
                    .report
                    .violate(broken(EventKind::StockRejected, EventKind::PaymentRefunded)),
            }
            if account != created.account {
                self.report
                    .violate(broken(EventKind::OrderCreated, EventKind::PaymentRefunded));
            }
        }
    }

    fn check_amount(&mut self, order: OrderId, kind: EventKind, expected: Money, found: Money) {
        if expected != found {
            self.report.violate(Violation::AmountMismatch {
                order,
                kind,
                expected,
                found,
            });
        }
    }

    fn check_cash_and_stock(&mut self) {
        let mut overflowed = false;
        let mut totals = FlowTotals::default();
        let mut sum = |total: &mut i128, value: i128| match total.checked_add(value) {
            Some(t) => *total = t,
            None => overflowed = true,
        };
        let mut balances = BTreeMap::new();
        for (&account, flow) in &self.accounts {
            let balance = flow
                .funded
                .checked_sub(flow.debited)
                .and_then(|b| b.checked_add(flow.refunded));
            let Some(balance) = balance else {
                self.report.violate(Violation::Overflow {
                    what: "an account's balance",
                });
                continue;
            };
            sum(&mut totals.funded, flow.funded);
            sum(&mut totals.balances, balance);
            balances.insert(account, balance);
        }
        let mut on_hand = BTreeMap::new();
        for (&sku, flow) in &self.skus {
            let Some(units) = flow.replenished.checked_sub(flow.filled) else {
                self.report.violate(Violation::Overflow {
                    what: "an instrument's stock",
                });
                continue;
            };
            sum(&mut totals.replenished_units, flow.replenished);
            sum(&mut totals.on_hand_units, units);
            sum(&mut totals.filled_units, flow.filled);
            on_hand.insert(sku, units);
        }
        for trail in self.orders.values() {
            if let Some((_, amount, _)) = trail.filled {
                sum(&mut totals.filled_value, i128::from(amount.0));
            }
        }
        if overflowed {
            self.report.violate(Violation::Overflow {
                what: "a flow total",
            });
        }
        for (&account, &balance) in &balances {
            if balance < 0 {
                self.report
                    .violate(Violation::NegativeBalance { account, balance });
            }
        }
        for (&sku, &units) in &on_hand {
            if units < 0 {
                self.report.violate(Violation::NegativeStock {
                    sku,
                    on_hand: units,
                });
            }
        }
        if totals.balances.checked_add(totals.filled_value) != Some(totals.funded) {
            self.report.violate(Violation::CashNotConserved {
                funded: totals.funded,
                balances: totals.balances,
                filled_value: totals.filled_value,
            });
        }
        if totals.on_hand_units.checked_add(totals.filled_units) != Some(totals.replenished_units) {
            self.report.violate(Violation::StockNotConserved {
                replenished: totals.replenished_units,
                on_hand: totals.on_hand_units,
                filled_units: totals.filled_units,
            });
        }
        self.report.totals = totals;
        self.report.balances = balances;
        self.report.on_hand = on_hand;
    }

    fn compare_state(&mut self, state: &StateSnapshot) {
        self.report.state_compared = true;
        if let Some(balances) = &state.balances {
            self.compare_balances(balances);
        }
        if let Some(on_hand) = &state.on_hand {
            self.compare_stock(on_hand);
        }
        if let Some(statuses) = &state.order_status {
            self.compare_statuses(statuses);
        }
    }

    fn compare_balances(&mut self, state: &BTreeMap<AccountId, Money>) {
        let mut accounts: Vec<AccountId> = self.report.balances.keys().copied().collect();
        accounts.extend(state.keys().copied());
        accounts.sort_unstable();
        accounts.dedup();
        let mut total: i128 = 0;
        let mut overflowed = false;
        for account in accounts {
            let derived = self.report.balances.get(&account).copied().unwrap_or(0);
            let held = state.get(&account).map_or(0, |m| i128::from(m.0));
            total = total.checked_add(held).unwrap_or_else(|| {
                overflowed = true;
                total
            });
            if held < 0 {
                self.report.violate(Violation::NegativeBalance {
                    account,
                    balance: held,
                });
            }
            if derived != held {
                self.report.violate(Violation::BalanceDiffers {
                    account,
                    derived,
                    state: held,
                });
            }
        }
        self.overflow(overflowed, "the stages' balances");
        let t = self.report.totals;
        if total.checked_add(t.filled_value) != Some(t.funded) {
            self.report.violate(Violation::CashNotConserved {
                funded: t.funded,
                balances: total,
                filled_value: t.filled_value,
            });
        }
    }

    fn compare_stock(&mut self, state: &BTreeMap<Sku, Quantity>) {
        let mut skus: Vec<Sku> = self.report.on_hand.keys().copied().collect();
        skus.extend(state.keys().copied());
        skus.sort_unstable();
        skus.dedup();
        let mut total: i128 = 0;
        let mut overflowed = false;
        for sku in skus {
            let derived = self.report.on_hand.get(&sku).copied().unwrap_or(0);
            let held = state.get(&sku).map_or(0, |q| i128::from(q.0));
            total = total.checked_add(held).unwrap_or_else(|| {
                overflowed = true;
                total
            });
            if held < 0 {
                self.report
                    .violate(Violation::NegativeStock { sku, on_hand: held });
            }
            if derived != held {
                self.report.violate(Violation::StockDiffers {
                    sku,
                    derived,
                    state: held,
                });
            }
        }
        self.overflow(overflowed, "the stages' stock");
        let t = self.report.totals;
        if total.checked_add(t.filled_units) != Some(t.replenished_units) {
            self.report.violate(Violation::StockNotConserved {
                replenished: t.replenished_units,
                on_hand: total,
                filled_units: t.filled_units,
            });
        }
    }

    fn compare_statuses(&mut self, state: &BTreeMap<OrderId, OrderState>) {
        let orders = std::mem::take(&mut self.orders);
        for (&order, trail) in &orders {
            if trail.created.is_none() {
                continue;
            }
            let derived = derived_outcome(trail);
            let held = state.get(&order).copied();
            let agrees = match (derived, held) {
                (Some(outcome), Some(OrderState::Done(status))) => outcome == status,
                // Lost or decided twice: reported already; the stage still
                // holding it open is consistent with that.
                (None, Some(OrderState::Accepted)) => true,
                _ => false,
            };
            if !agrees {
                self.report.violate(Violation::StatusDiffers {
                    order,
                    derived,
                    state: held,
                });
            }
        }
        self.orders = orders;
    }
}

/// The one terminal outcome of an order, if it has exactly one.
fn derived_outcome(t: &OrderTrail) -> Option<Outcome> {
    match (t.failed, t.updated, t.refunded) {
        (1, 0, 0) => t.failed_reason.map(Outcome::RejectedFunds),
        (0, 1, 0) => Some(Outcome::Filled),
        (0, 0, 1) => Some(Outcome::RejectedStockRefunded),
        _ => None,
    }
}

/// Audits `events` (each with the topic it was read from) in one call.
pub fn audit<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a Event)>,
    guarantee: Guarantee,
) -> AuditReport {
    let mut audit = Audit::new(guarantee);
    for (topic, event) in events {
        audit.record(topic, event);
    }
    audit.finish()
}

#[cfg(test)]
mod tests {
    //! The audit on hand-made event logs: a clean flow passes, and each
    //! doctored log fails with the violation that names what broke. (The
    //! same checks over logs the real stages produced are in
    //! `services/tests/audit.rs`.)

    use codecs::topics::{
        ACCOUNT_FUNDED, ORDER_CREATED, PAYMENT_COMPLETED, PAYMENT_FAILED, PAYMENT_REFUNDED,
        STOCK_REJECTED, STOCK_REPLENISHED, STOCK_UPDATED,
    };
    use codecs::{
        AccountFunded, ClientOrderId, EventHeader, OrderCreated, PaymentCompleted, PaymentFailed,
        PaymentRefunded, StockRejectReason, StockRejected, StockReplenished, StockUpdated, Tag,
        TimeInForce, TimestampNs, ValueError,
    };

    use super::*;

    fn header(event: u128, order: u64, cause: u128) -> EventHeader {
        EventHeader {
            event_id: EventId(event),
            order_id: OrderId(order),
            causation_id: EventId(cause),
            created_at_ns: TimestampNs(1),
        }
    }

    /// Account 1 funded 1 000, 5 units of ACME; order 10 (2 × 100) fills,
    /// order 11 (20 × 100) is refused for funds, order 12 (4 × 100, only 3
    /// left) is rejected for stock and refunded.
    fn clean_log() -> Result<Vec<(&'static str, Event)>, ValueError> {
        let acme = Sku::new("ACME")?;
        let account = AccountId(1);
        let create = |id: u128, order: u64, quantity: i64| -> Result<Event, ValueError> {
            Ok(Event::OrderCreated(OrderCreated {
                header: header(id, order, 0),
                account,
                sku: acme,
                quantity: Quantity(quantity),
                limit_price: Money(100),
                client_order_id: ClientOrderId::new(&format!("c-{order}"))?,
                time_in_force: TimeInForce::Gtc,
                tag: Tag::EMPTY,
            }))
        };
        Ok(vec![
            (
                ACCOUNT_FUNDED,
                Event::AccountFunded(AccountFunded {
                    header: header(1, 0, 0),
                    account,
                    amount: Money(1_000),
                }),
            ),
            (
                STOCK_REPLENISHED,
                Event::StockReplenished(StockReplenished {
                    header: header(2, 0, 0),
                    sku: acme,
                    quantity: Quantity(5),
                }),
            ),
            (ORDER_CREATED, create(3, 10, 2)?),
            (
                PAYMENT_COMPLETED,
                Event::PaymentCompleted(PaymentCompleted {
                    header: header(4, 10, 3),
                    account,
                    sku: acme,
                    quantity: Quantity(2),
                    amount: Money(200),
                }),
            ),
            (
                STOCK_UPDATED,
                Event::StockUpdated(StockUpdated {
                    header: header(5, 10, 4),
                    account,
                    sku: acme,
                    quantity: Quantity(2),
                    remaining: Quantity(3),
                    amount: Money(200),
                }),
            ),
            (ORDER_CREATED, create(6, 11, 20)?),
            (
                PAYMENT_FAILED,
                Event::PaymentFailed(PaymentFailed {
                    header: header(7, 11, 6),
                    account,
                    sku: acme,
                    quantity: Quantity(20),
                    amount: Money(2_000),
                    reason: PaymentFailReason::InsufficientFunds,
                }),
            ),
            (ORDER_CREATED, create(8, 12, 4)?),
            (
                PAYMENT_COMPLETED,
                Event::PaymentCompleted(PaymentCompleted {
                    header: header(9, 12, 8),
                    account,
                    sku: acme,
                    quantity: Quantity(4),
                    amount: Money(400),
                }),
            ),
            (
                STOCK_REJECTED,
                Event::StockRejected(StockRejected {
                    header: header(13, 12, 9),
                    account,
                    sku: acme,
                    quantity: Quantity(4),
                    amount: Money(400),
                    reason: StockRejectReason::InsufficientStock,
                }),
            ),
            (
                PAYMENT_REFUNDED,
                Event::PaymentRefunded(PaymentRefunded {
                    header: header(14, 12, 13),
                    account,
                    sku: acme,
                    quantity: Quantity(4),
                    amount: Money(400),
                }),
            ),
        ])
    }

    fn run(log: &[(&'static str, Event)], guarantee: Guarantee) -> AuditReport {
        audit(log.iter().map(|(t, e)| (*t, e)), guarantee)
    }

    fn has(report: &AuditReport, pred: impl Fn(&Violation) -> bool) -> bool {
        report.violations.iter().any(pred)
    }

    /// The state the stages would hold after `clean_log`.
    fn clean_state() -> Result<StateSnapshot, ValueError> {
        let mut state = StateSnapshot::default();
        state.balances_mut().insert(AccountId(1), Money(800));
        state.on_hand_mut().insert(Sku::new("ACME")?, Quantity(3));
        let orders = state.order_status_mut();
        orders.insert(OrderId(10), OrderState::Done(Outcome::Filled));
        orders.insert(
            OrderId(11),
            OrderState::Done(Outcome::RejectedFunds(PaymentFailReason::InsufficientFunds)),
        );
        orders.insert(
            OrderId(12),
            OrderState::Done(Outcome::RejectedStockRefunded),
        );
        Ok(state)
    }

    #[test]
    fn a_clean_log_passes_with_every_figure_derived() -> Result<(), ValueError> {
        let log = clean_log()?;
        let report = run(&log, Guarantee::ExactlyOnce);
        assert!(report.passed(), "{report}");
        assert_eq!(
            report.orders,
            OrderCounts {
                accepted: 3,
                filled: 1,
                rejected_funds: 1,
                rejected_stock_refunded: 1,
                ..OrderCounts::default()
            }
        );
        assert_eq!(report.totals.funded, 1_000);
        assert_eq!(report.totals.balances, 800);
        assert_eq!(report.totals.filled_value, 200);
        assert_eq!(report.totals.on_hand_units, 3);
        assert!(!report.state_compared);
        assert!(report.to_string().starts_with("audit PASSED"));

        let mut audit = Audit::new(Guarantee::ExactlyOnce);
        // Any order of feeding gives the same report.
        for (topic, event) in log.iter().rev() {
            audit.record(topic, event);
        }
        let with_state = audit.finish_with_state(&clean_state()?);
        assert!(with_state.passed(), "{with_state}");
        assert!(with_state.state_compared);
        Ok(())
    }

    #[test]
    fn a_lost_fill_breaks_the_outcome_and_the_cash() -> Result<(), ValueError> {
        let mut log = clean_log()?;
        log.retain(|(topic, _)| *topic != STOCK_UPDATED);
        let report = run(&log, Guarantee::ExactlyOnce);
        assert!(
            has(&report, |v| matches!(
                v,
                Violation::Lost {
                    order: OrderId(10),
                    ..
                }
            )),
            "{report}"
        );
        assert!(has(&report, |v| matches!(
            v,
            Violation::CashNotConserved { .. }
        )));
        assert!(report.to_string().contains("no terminal outcome"));
        Ok(())
    }

    #[test]
    fn a_duplicate_fails_exactly_once_and_counts_once_at_least_once() -> Result<(), ValueError> {
        let mut log = clean_log()?;
        let fill = log[4];
        log.push(fill);
        let exactly = run(&log, Guarantee::ExactlyOnce);
        assert!(has(&exactly, |v| matches!(v, Violation::Duplicate { .. })));
        let at_least = run(&log, Guarantee::AtLeastOnce);
        assert!(at_least.passed(), "{at_least}");
        assert_eq!(at_least.duplicates, 1);
        assert_eq!(at_least.totals.filled_units, 2, "the effect counts once");
        Ok(())
    }

    #[test]
    fn state_that_disagrees_with_the_events_is_named() -> Result<(), ValueError> {
        let log = clean_log()?;
        let mut state = clean_state()?;
        state.balances_mut().insert(AccountId(1), Money(801));
        state
            .order_status_mut()
            .insert(OrderId(10), OrderState::Accepted);
        let mut audit = Audit::new(Guarantee::ExactlyOnce);
        for (topic, event) in &log {
            audit.record(topic, event);
        }
        let report = audit.finish_with_state(&state);
        assert!(has(&report, |v| matches!(
            v,
            Violation::BalanceDiffers {
                derived: 800,
                state: 801,
                ..
            }
        )));
        assert!(has(&report, |v| matches!(
            v,
            Violation::StatusDiffers {
                order: OrderId(10),
                derived: Some(Outcome::Filled),
                state: Some(OrderState::Accepted),
            }
        )));
        assert!(report.to_string().starts_with("audit FAILED"));
        Ok(())
    }

    #[test]
    fn an_event_on_the_wrong_topic_is_misrouted() -> Result<(), ValueError> {
        let mut log = clean_log()?;
        log[4].0 = PAYMENT_FAILED;
        let report = run(&log, Guarantee::AtLeastOnce);
        assert!(has(&report, |v| matches!(v, Violation::Misrouted { .. })));
        Ok(())
    }
}
