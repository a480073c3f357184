//! `TradeFlow`: any subset of Order, Payment and Inventory as one stage, so
//! one shard runs them with one consumer, one producer and one transaction
//! per commit (`tradeflow run --services order,payment,inventory`), or one
//! alone (`--services payment`).
//!
//! Owns: `ServiceSet` (which services run, parsed from a comma list), the
//! union of their input topics, the partition state holding all three
//! services' stores, and dispatch of each input to the services that read it.
//! Must never: carry data between partitions or re-key in memory: an event
//! whose consumer is keyed differently (Payment → Inventory by sku,
//! Inventory → Payment and Order by account) still goes through Kafka.
//!
//! # Order hears Payment directly
//! Payment's outcomes for an order (`payment.failed`, `payment.refunded`) are
//! keyed by account, like the Order stage's state, so when both run here the
//! order's record lives in the same partition state that Payment just
//! changed. The composite then applies the outcome to the Order stage in the
//! same step (as Kafka Streams chains processors inside one sub-topology)
//! instead of reading it back from Kafka: one round trip less before a status
//! query sees it, and it keeps the union of input topics at seven, within the
//! engine's `INPUT_TOPICS_MAX` of eight (all nine flow topics would not fit).
//! The events are still emitted for every other consumer.
//!
//! Lives on: the core of the shard that owns the partition.

use std::fmt;
use std::str::FromStr;

use codecs::{AccountId, EventRef, OrderId, Quantity, Sku};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::{ChangelogStore, PartitionStores};
use engine::wire::WireFormats;
use tracing::error;

use crate::inventory::StockLedger;
use crate::order::{OrderBook, OrderOutcome, OutcomeNotice};
use crate::payment::{AccountBook, PaymentOutcome};
use crate::retention::ORDER_RETENTION_DEFAULT_MS;
use crate::routing::{expect_home_partition, expect_topic};
use crate::topics::{
    ACCOUNT_FUNDED, ORDER_CREATED, ORDER_UPDATED, PAYMENT_COMPLETED, PAYMENT_FAILED,
    PAYMENT_REFUNDED, STOCK_REJECTED, STOCK_REPLENISHED, STOCK_UPDATED,
};

/// One of the flow's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Payment,
    Inventory,
}

impl Service {
    /// Every service, in the order of the flow.
    pub const ALL: [Service; 3] = [Service::Order, Service::Payment, Service::Inventory];

    pub const fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Inventory => "inventory",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Service::Order => 1,
            Service::Payment => 2,
            Service::Inventory => 4,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a service list could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceSetError {
    #[error("no service named; choose from order, payment, inventory")]
    Empty,
    #[error("unknown service {name:?}; choose from order, payment, inventory")]
    Unknown { name: String },
}

impl FromStr for Service {
    type Err = ServiceSetError;

    fn from_str(s: &str) -> Result<Self, ServiceSetError> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == s)
            .ok_or_else(|| ServiceSetError::Unknown {
                name: s.to_string(),
            })
    }
}

/// Which services a process runs. Parsed from `"order,payment,inventory"`
/// (any order, spaces around names allowed, repeats harmless).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceSet {
    bits: u8,
}

impl ServiceSet {
    /// All three: the whole flow in one process.
    pub const ALL: ServiceSet = ServiceSet { bits: 7 };

    pub const fn only(service: Service) -> ServiceSet {
        ServiceSet {
            bits: service.bit(),
        }
    }

    pub const fn with(self, service: Service) -> ServiceSet {
        ServiceSet {
            bits: self.bits | service.bit(),
        }
    }

    pub const fn contains(self, service: Service) -> bool {
        self.bits & service.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.bits == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Service> {
        Service::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The seven non-empty sets, for tests and tooling.
    pub fn all_subsets() -> impl Iterator<Item = ServiceSet> {
        (1..=7).map(|bits| ServiceSet { bits })
    }

    /// `"order+payment"`: the stage name of `TradeFlow` running this set.
    fn stage_name(self) -> &'static str {
        match self.bits {
            1 => "order",
            2 => "payment",
            3 => "order+payment",
            4 => "inventory",
            5 => "order+inventory",
            6 => "payment+inventory",
            7 => "order+payment+inventory",
            _ => "none",
        }
    }
}

impl FromStr for ServiceSet {
    type Err = ServiceSetError;

    fn from_str(s: &str) -> Result<Self, ServiceSetError> {
        if s.trim().is_empty() {
            return Err(ServiceSetError::Empty);
        }
        s.split(',').try_fold(ServiceSet { bits: 0 }, |set, name| {
            Ok(set.with(name.trim().parse::<Service>()?))
        })
    }
}

impl fmt::Display for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for service in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(service.name())?;
        }
        Ok(())
    }
}

/// The state of one partition: every service's stores, whichever run.
/// (The engine names a state's stores statically, so a subset still lists
/// all; those of services not running stay empty.)
#[derive(Default)]
pub struct TradeFlowState {
    pub orders: OrderBook,
    pub accounts: AccountBook,
    pub stock: StockLedger,
}

impl PartitionStores for TradeFlowState {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        self.orders.for_each_store(f);
        self.accounts.for_each_store(f);
        self.stock.for_each_store(f);
    }
}

/// The composite stage. See the module doc.
#[derive(Clone, Debug)]
pub struct TradeFlow {
    services: ServiceSet,
    inputs: Vec<&'static str>,
    /// How long (event time, ms) a finished order's records stay in the
    /// order, payment and inventory stores (`crate::retention`).
    order_retention_ms: i64,
    /// Which outputs are written as Avro, how Avro inputs are read.
    wire: WireFormats,
}

impl TradeFlow {
    pub fn new(services: ServiceSet) -> Self {
        TradeFlow {
            services,
            inputs: input_topics(services),
            order_retention_ms: ORDER_RETENTION_DEFAULT_MS,
            wire: WireFormats::default(),
        }
    }

    /// The same flow keeping finished orders `retention_ms` of event time
    /// (the core map's `[state] order_retention`).
    pub fn with_order_retention(self, retention_ms: i64) -> Self {
        TradeFlow {
            order_retention_ms: retention_ms,
            ..self
        }
    }

    pub fn order_retention_ms(&self) -> i64 {
        self.order_retention_ms
    }

    /// Writes and reads the topics as `wire` says (`services::wire`).
    pub fn with_wire_formats(mut self, wire: WireFormats) -> Self {
        self.wire = wire;
        self
    }

    pub fn services(&self) -> ServiceSet {
        self.services
    }

    /// The topics the running services emit to.
    pub fn output_topics(&self) -> Vec<&'static str> {
        let mut topics = Vec::new();
        if self.services.contains(Service::Payment) {
            topics.extend([PAYMENT_COMPLETED, PAYMENT_FAILED, PAYMENT_REFUNDED]);
        }
        if self.services.contains(Service::Inventory) {
            topics.extend([STOCK_UPDATED, STOCK_REJECTED]);
        }
        topics
    }

    /// Every store's name (changelog topics are derived from them).
    pub fn store_names(&self) -> Vec<&'static str> {
        TradeFlowState::store_names()
    }

    fn runs(&self, service: Service) -> bool {
        self.services.contains(service)
    }
}

/// The union of the running services' inputs, in the order of the flow.
/// Payment's outcomes are not read back when Order runs beside Payment (see
/// the module doc).
fn input_topics(services: ServiceSet) -> Vec<&'static str> {
    let order = services.contains(Service::Order);
    let payment = services.contains(Service::Payment);
    let inventory = services.contains(Service::Inventory);
    [
        (ORDER_CREATED, order || payment),
        (ORDER_UPDATED, order),
        (PAYMENT_COMPLETED, inventory),
        (PAYMENT_FAILED, order && !payment),
        (PAYMENT_REFUNDED, order && !payment),
        (STOCK_UPDATED, order),
        (STOCK_REJECTED, payment),
        (ACCOUNT_FUNDED, payment),
        (STOCK_REPLENISHED, inventory),
    ]
    .into_iter()
    .filter_map(|(topic, read)| read.then_some(topic))
    .collect()
}

/// Tells the Order stage a terminal outcome Payment just produced in this
/// partition. Payment has already changed its state and emitted the event, so
/// a conflict cannot reject the input any more; it is logged (the audit shows
/// it) and the Order stage keeps its first outcome.
fn tell_order(
    orders: &mut OrderBook,
    order: OrderId,
    what: (AccountId, Sku, Quantity),
    outcome: PaymentOutcome,
    at_ms: i64,
) {
    let (outcome, event) = match outcome {
        PaymentOutcome::Failed { reason, event } => (OrderOutcome::RejectedFunds(reason), event),
        PaymentOutcome::Refunded { event } => (OrderOutcome::RejectedStockRefunded, event),
        PaymentOutcome::Paid | PaymentOutcome::Funded | PaymentOutcome::Duplicate => return,
    };
    let (account, sku, quantity) = what;
    let notice = OutcomeNotice {
        order,
        account,
        sku,
        quantity,
        outcome,
        event,
        at_ms,
    };
    if let Err(conflict) = orders.record_outcome(&notice) {
        error!(%conflict, "payment produced an outcome the order stage cannot take");
    }
}

impl Stage for TradeFlow {
    type State = TradeFlowState;

    fn name(&self) -> &'static str {
        self.services.stage_name()
    }

    fn input_topics(&self) -> &[&'static str] {
        &self.inputs
    }

    fn wire_formats(&self) -> WireFormats {
        self.wire.clone()
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut TradeFlowState,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        // Subscribed topics only, each checked against the event's kind, so
        // the services each arm calls are running.
        expect_topic(input, event.kind())?;
        expect_home_partition(input, event, out.partitions())?;
        let (at_ms, retention_ms) = (input.timestamp_ms, self.order_retention_ms);
        // An order past its retention is forgotten before the event that
        // names it again is decided, in every service (crate::retention).
        match event {
            EventRef::OrderCreated(order) => {
                let id = order.header().order_id();
                if self.runs(Service::Order) {
                    state
                        .orders
                        .forget_if_past_retention(id, at_ms, retention_ms);
                }
                if self.runs(Service::Payment) {
                    state
                        .accounts
                        .forget_if_past_retention(id, at_ms, retention_ms);
                }
            }
            EventRef::PaymentCompleted(paid) => {
                state
                    .stock
                    .forget_if_past_retention(paid.header().order_id(), at_ms, retention_ms);
            }
            _ => {}
        }
        self.apply(input, event, state, out)?;
        // Incremental eviction after the event's own changes, and only for
        // an accepted one.
        if self.runs(Service::Order) {
            state.orders.evict_finished(at_ms, retention_ms);
        }
        if self.runs(Service::Payment) {
            state.accounts.evict_finished(at_ms, retention_ms);
        }
        if self.runs(Service::Inventory) {
            state.stock.evict_finished(at_ms, retention_ms);
        }
        Ok(())
    }
}

impl TradeFlow {
    /// One checked event, applied to the running services.
    fn apply(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        state: &mut TradeFlowState,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        let at_ms = input.timestamp_ms;
        match event {
            EventRef::OrderCreated(order) => {
                // Every check before any write: Order checks first, Payment
                // checks then writes, Order writes what it checked.
                let plan = if self.runs(Service::Order) {
                    Some(state.orders.check_created(order)?)
                } else {
                    None
                };
                let outcome = if self.runs(Service::Payment) {
                    Some(state.accounts.apply_order_created(order, at_ms, out)?)
                } else {
                    None
                };
                if let Some(plan) = plan {
                    state.orders.apply_created(plan, order, at_ms);
                    if let Some(outcome) = outcome {
                        let what = (order.account(), order.sku(), order.quantity());
                        let id = order.header().order_id();
                        tell_order(&mut state.orders, id, what, outcome, at_ms);
                    }
                }
                Ok(())
            }
            EventRef::StockRejected(rejection) => {
                let outcome = state.accounts.apply_stock_rejected(rejection, out)?;
                if self.runs(Service::Order) {
                    let what = (rejection.account(), rejection.sku(), rejection.quantity());
                    let id = rejection.header().order_id();
                    tell_order(&mut state.orders, id, what, outcome, at_ms);
                }
                Ok(())
            }
            EventRef::AccountFunded(funded) => {
                state.accounts.apply_account_funded(funded).map(drop)
            }
            EventRef::PaymentCompleted(paid) => state
                .stock
                .apply_payment_completed(paid, at_ms, out)
                .map(drop),
            EventRef::StockReplenished(replenished) => {
                state.stock.apply_stock_replenished(replenished).map(drop)
            }
            EventRef::OrderAmended(_)
            | EventRef::OrderCancelled(_)
            | EventRef::PaymentFailed(_)
            | EventRef::StockUpdated(_)
            | EventRef::PaymentRefunded(_) => state.orders.apply_event(input, event),
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::ids::INPUT_TOPICS_MAX;

    use super::*;

    #[test]
    fn service_lists_parse_and_name_the_bad_one() {
        assert_eq!("order,payment,inventory".parse(), Ok(ServiceSet::ALL));
        assert_eq!(
            " inventory , payment,payment".parse(),
            Ok(ServiceSet::only(Service::Payment).with(Service::Inventory))
        );
        assert_eq!(
            "payment".parse::<ServiceSet>().map(|s| s.to_string()),
            Ok("payment".to_string())
        );
        assert_eq!("".parse::<ServiceSet>(), Err(ServiceSetError::Empty));
        let err = "order,paymnet".parse::<ServiceSet>();
        assert_eq!(
            err,
            Err(ServiceSetError::Unknown {
                name: "paymnet".into()
            })
        );
        let message = err
            .map(drop)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("\"paymnet\""), "{message}");
        assert!("order,".parse::<ServiceSet>().is_err());
        assert_eq!(ServiceSet::ALL.to_string(), "order,payment,inventory");
    }

    #[test]
    fn every_subset_fits_the_engine_and_reads_each_topic_once() {
        for set in ServiceSet::all_subsets() {
            let flow = TradeFlow::new(set);
            let inputs = flow.input_topics();
            assert!(!inputs.is_empty());
            assert!(inputs.len() <= INPUT_TOPICS_MAX, "{set}: {inputs:?}");
            let mut unique = inputs.to_vec();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), inputs.len(), "{set}");
            // Nothing a running service emits is read back unless another
            // running service needs it through Kafka (re-keying).
            for output in flow.output_topics() {
                if inputs.contains(&output) {
                    assert!(
                        [PAYMENT_COMPLETED, STOCK_UPDATED, STOCK_REJECTED].contains(&output),
                        "{set} reads back {output}"
                    );
                }
            }
        }
        assert_eq!(TradeFlow::new(ServiceSet::ALL).input_topics().len(), 7);
        let mut order_alone = TradeFlow::new(ServiceSet::only(Service::Order))
            .input_topics()
            .to_vec();
        let mut order_inputs = crate::order::ORDER_INPUTS.to_vec();
        order_alone.sort_unstable();
        order_inputs.sort_unstable();
        assert_eq!(order_alone, order_inputs);
    }

    #[test]
    fn store_names_are_unique() {
        let mut names = TradeFlowState::store_names();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(count, 7);
    }
}
