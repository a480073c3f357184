//! Inventory: each instrument's stock, and what was decided for each paid order.
//!
//! Owns: the `StockLedger` (one per partition of the sku-keyed topics: units
//! on hand, a fill record per order, the replenishments applied) and its
//! rules: on `payment.completed` take the units if they are there
//! (`stock.updated`, keyed by account, carrying the fill's value for the
//! audit) or refuse (`stock.rejected`, keyed by account, carrying account and
//! amount so Payment refunds without a lookup); add `stock.replenished` units
//! once per event id.
//! Must never: let stock go negative, take units twice for one order, decide
//! one order twice, or change state for an event it rejects.
//!
//! A replayed `payment.completed` (same event id) re-emits the recorded
//! decision with the same ids; a second, different payment for an order
//! already decided means Payment broke its own rule and is dead-lettered.
//!
//! Lives on: the core of the shard that owns the partition.

use codecs::{
    AccountId, ArchivedPaymentCompleted, ArchivedStockReplenished, Event, EventId, EventKind,
    EventRef, Money, OrderId, Quantity, Sku, StockRejectReason, StockRejected, StockUpdated,
};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::{ChangelogStore, PartitionStores, Store, StoreValue};

use crate::retention::{StreamClock, EVICTIONS_PER_EVENT_MAX, ORDER_RETENTION_DEFAULT_MS};
use crate::routing::{caused_header, emit, expect_partition, expect_topic, require_order};
use crate::store_codec::{EventKey, OrderKey, SkuKey, ValueReader, ValueWriter};
use crate::topics::{account_key, sku_key, PAYMENT_COMPLETED, STOCK_REPLENISHED};

/// Changelog store names, service-prefixed (see `payment::ACCOUNTS_STORE`).
pub const STOCK_STORE: &str = "inventory-stock";
pub const FILLS_STORE: &str = "inventory-orders";
pub const REPLENISHMENTS_STORE: &str = "inventory-replenishments";

/// The topics Inventory reads, all keyed by sku.
pub const INVENTORY_INPUTS: [&str; 2] = [PAYMENT_COMPLETED, STOCK_REPLENISHED];

/// One instrument's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockLevel {
    /// Never negative.
    pub on_hand: Quantity,
}

impl StoreValue for StockLevel {
    fn encode(&self, out: &mut Vec<u8>) {
        ValueWriter(out).quantity(self.on_hand);
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let on_hand = r.quantity()?;
        r.finish()?;
        Ok(StockLevel { on_hand })
    }
}

/// What Inventory decided for a paid order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillStatus {
    /// Units taken; `remaining` were left on hand.
    Filled { remaining: Quantity },
    /// Refused; Payment refunds.
    Rejected(StockRejectReason),
}

/// Inventory's record of one order: deduplicates replays and re-emits the
/// same decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillRecord {
    /// The `payment.completed` event that was decided.
    pub cause: EventId,
    pub account: AccountId,
    pub sku: Sku,
    pub quantity: Quantity,
    pub amount: Money,
    pub status: FillStatus,
    /// Timestamp (ms) of the `payment.completed` record decided: the record
    /// is evicted once the retention has passed after it. `None` for a
    /// record written before this field existed (66 bytes), which is kept.
    pub decided_at_ms: Option<i64>,
}

impl FillRecord {
    /// From when the record may be evicted (see `crate::retention`).
    pub fn finished_at_ms(&self) -> Option<i64> {
        self.decided_at_ms
    }
}

fn reject_reason_code(reason: StockRejectReason) -> u8 {
    match reason {
        StockRejectReason::InsufficientStock => 0,
        StockRejectReason::UnknownSku => 1,
        StockRejectReason::InvalidQuantity => 2,
    }
}

fn reject_reason_from(code: u8) -> Result<StockRejectReason, &'static str> {
    Ok(match code {
        0 => StockRejectReason::InsufficientStock,
        1 => StockRejectReason::UnknownSku,
        2 => StockRejectReason::InvalidQuantity,
        _ => return Err("unknown stock rejection reason"),
    })
}

impl StoreValue for FillRecord {
    /// cause 16 | account 8 | sku 16 | quantity 8 | amount 8 | status 1 |
    /// reason 1 | remaining 8 | decided_at_ms 8: 74 bytes (66 without
    /// `decided_at_ms`, the layout before retention; still read).
    fn encode(&self, out: &mut Vec<u8>) {
        let (status, reason, remaining) = match self.status {
            FillStatus::Filled { remaining } => (0, 0, remaining),
            FillStatus::Rejected(reason) => (1, reject_reason_code(reason), Quantity::ZERO),
        };
        ValueWriter(out)
            .event_id(self.cause)
            .account(self.account)
            .sku(&self.sku)
            .quantity(self.quantity)
            .money(self.amount)
            .u8(status)
            .u8(reason)
            .quantity(remaining);
        if let Some(at_ms) = self.decided_at_ms {
            ValueWriter(out).i64(at_ms);
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let cause = r.event_id()?;
        let account = r.account()?;
        let sku = r.sku()?;
        let quantity = r.quantity()?;
        let amount = r.money()?;
        let status = r.u8()?;
        let reason = r.u8()?;
        let remaining = r.quantity()?;
        let decided_at_ms = if r.is_done() { None } else { Some(r.i64()?) };
        r.finish()?;
        let status = match status {
            0 => FillStatus::Filled { remaining },
            1 => FillStatus::Rejected(reject_reason_from(reason)?),
            _ => return Err("unknown fill status"),
        };
        Ok(FillRecord {
            cause,
            account,
            sku,
            quantity,
            amount,
            status,
            decided_at_ms,
        })
    }
}

/// A replenishment applied, kept to recognise its event id if it comes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplenishmentRecord {
    pub sku: Sku,
    pub quantity: Quantity,
}

impl StoreValue for ReplenishmentRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        ValueWriter(out).sku(&self.sku).quantity(self.quantity);
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let record = ReplenishmentRecord {
            sku: r.sku()?,
            quantity: r.quantity()?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Inventory's state for one partition of the sku-keyed topics. Fill
/// records are evicted once the retention has passed after their decision
/// (`crate::retention`); stock levels are never evicted.
pub struct StockLedger {
    pub stock: Store<SkuKey, StockLevel>,
    pub fills: Store<OrderKey, FillRecord>,
    pub replenishments: Store<EventKey, ReplenishmentRecord>,
    clock: StreamClock,
}

impl Default for StockLedger {
    fn default() -> Self {
        StockLedger {
            stock: Store::new(STOCK_STORE),
            fills: Store::with_retention(FILLS_STORE, FillRecord::finished_at_ms),
            replenishments: Store::new(REPLENISHMENTS_STORE),
            clock: StreamClock::default(),
        }
    }
}

impl PartitionStores for StockLedger {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.stock);
        f(&mut self.fills);
        f(&mut self.replenishments);
    }
}

/// What Inventory did with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// `stock.updated` emitted (first decision or a replay of it).
    Filled,
    /// `stock.rejected` emitted (first decision or a replay of it).
    Rejected(StockRejectReason),
    /// Units added.
    Replenished,
    /// Already applied; nothing emitted.
    Duplicate,
}

impl StockLedger {
    /// Moves the partition's event time to `at_ms` and evicts a few fill
    /// records whose retention has passed (a tombstone each). Returns the
    /// evictions.
    pub fn evict_finished(&mut self, at_ms: i64, retention_ms: i64) -> usize {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.fills.evict_finished(cutoff, EVICTIONS_PER_EVENT_MAX)
    }

    /// Before a `payment.completed` at `at_ms` is decided: forgets the
    /// order's fill record if its retention has passed, so a resubmitted
    /// order after the retention is decided afresh.
    pub fn forget_if_past_retention(
        &mut self,
        order: OrderId,
        at_ms: i64,
        retention_ms: i64,
    ) -> bool {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.fills.evict_if_finished_by(&OrderKey(order), cutoff)
    }

    /// Units of `sku` on hand, if it was ever stocked.
    pub fn on_hand(&self, sku: &Sku) -> Option<Quantity> {
        self.stock.get(&SkuKey(*sku)).map(|s| s.on_hand)
    }

    /// What Inventory decided for `order`.
    pub fn fill(&self, order: OrderId) -> Option<&FillRecord> {
        self.fills.get(&OrderKey(order))
    }

    /// `payment.completed`: take the units (`stock.updated`) or refuse (`stock.rejected`).
    pub fn apply_payment_completed(
        &mut self,
        paid: &ArchivedPaymentCompleted,
        at_ms: i64,
        out: &mut Outbox,
    ) -> Result<InventoryOutcome, Rejection> {
        let header = paid.header();
        let order_id = require_order(header, EventKind::PaymentCompleted)?;
        let amount = paid.amount();
        if amount.0 <= 0 {
            return Err(Rejection::user_data(format!(
                "payment.completed for order {} carries {amount}: a payment must be positive",
                order_id.0
            )));
        }
        let key = OrderKey(order_id);
        if let Some(record) = self.fills.get(&key).copied() {
            if record.cause == header.event_id() {
                return emit_fill_decision(paid, record.status, out);
            }
            return Err(Rejection::user_data(format!(
                "a second payment ({}) for order {}, already decided on payment {}",
                header.event_id(),
                order_id.0,
                record.cause
            )));
        }
        let sku = paid.sku();
        let quantity = paid.quantity();
        let status = if quantity.0 <= 0 {
            FillStatus::Rejected(StockRejectReason::InvalidQuantity)
        } else {
            match self.on_hand(&sku) {
                None => FillStatus::Rejected(StockRejectReason::UnknownSku),
                Some(on_hand) => match on_hand.checked_sub(quantity) {
                    Some(remaining) if remaining.0 >= 0 => FillStatus::Filled { remaining },
                    _ => FillStatus::Rejected(StockRejectReason::InsufficientStock),
                },
            }
        };
        let outcome = emit_fill_decision(paid, status, out)?;
        if let FillStatus::Filled { remaining } = status {
            self.stock
                .insert(SkuKey(sku), StockLevel { on_hand: remaining });
        }
        self.fills.insert(
            key,
            FillRecord {
                cause: header.event_id(),
                account: paid.account(),
                sku,
                quantity,
                amount,
                status,
                decided_at_ms: Some(at_ms),
            },
        );
        Ok(outcome)
    }

    /// `stock.replenished`: add the units once per event id.
    pub fn apply_stock_replenished(
        &mut self,
        replenished: &ArchivedStockReplenished,
    ) -> Result<InventoryOutcome, Rejection> {
        let id = replenished.header().event_id();
        let sku = replenished.sku();
        let quantity = replenished.quantity();
        if quantity.0 <= 0 {
            return Err(Rejection::user_data(format!(
                "stock.replenished for {sku} of {quantity} units: a replenishment must be positive"
            )));
        }
        if self.replenishments.get(&EventKey(id)).is_some() {
            return Ok(InventoryOutcome::Duplicate);
        }
        let on_hand = self.on_hand(&sku).unwrap_or(Quantity::ZERO);
        let stocked = on_hand.checked_add(quantity).ok_or_else(|| {
            Rejection::user_data(format!(
                "replenishing {sku} with {quantity} units overflows its {on_hand} on hand"
            ))
        })?;
        self.stock
            .insert(SkuKey(sku), StockLevel { on_hand: stocked });
        self.replenishments
            .insert(EventKey(id), ReplenishmentRecord { sku, quantity });
        Ok(InventoryOutcome::Replenished)
    }
}

/// Emits the event for `status` on the paid order and says which it was.
fn emit_fill_decision(
    paid: &ArchivedPaymentCompleted,
    status: FillStatus,
    out: &mut Outbox,
) -> Result<InventoryOutcome, Rejection> {
    let header = paid.header();
    let account = paid.account();
    let (event, outcome) = match status {
        FillStatus::Filled { remaining } => (
            Event::StockUpdated(StockUpdated {
                header: caused_header(header, EventKind::StockUpdated),
                account,
                sku: paid.sku(),
                quantity: paid.quantity(),
                remaining,
                amount: paid.amount(),
            }),
            InventoryOutcome::Filled,
        ),
        FillStatus::Rejected(reason) => (
            Event::StockRejected(StockRejected {
                header: caused_header(header, EventKind::StockRejected),
                account,
                sku: paid.sku(),
                quantity: paid.quantity(),
                amount: paid.amount(),
                reason,
            }),
            InventoryOutcome::Rejected(reason),
        ),
    };
    emit(out, &account_key(account), &event)?;
    Ok(outcome)
}

/// Inventory alone as a stage (see [`crate::flow::TradeFlow`] for the composite).
#[derive(Debug, Default)]
pub struct InventoryStage;

impl Stage for InventoryStage {
    type State = StockLedger;

    fn name(&self) -> &'static str {
        "inventory"
    }

    fn input_topics(&self) -> &[&'static str] {
        &INVENTORY_INPUTS
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        event: EventRef<'_>,
        ledger: &mut StockLedger,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        expect_topic(input, event.kind())?;
        let partitions = out.partitions();
        let applied = match event {
            EventRef::PaymentCompleted(paid) => {
                expect_partition(input, sku_key(&paid.sku()), partitions)?;
                ledger.forget_if_past_retention(
                    paid.header().order_id(),
                    input.timestamp_ms,
                    ORDER_RETENTION_DEFAULT_MS,
                );
                ledger
                    .apply_payment_completed(paid, input.timestamp_ms, out)
                    .map(drop)
            }
            EventRef::StockReplenished(replenished) => {
                expect_partition(input, sku_key(&replenished.sku()), partitions)?;
                ledger.apply_stock_replenished(replenished).map(drop)
            }
            other => Err(Rejection::user_data(format!(
                "inventory does not take {}",
                other.kind()
            ))),
        };
        applied?;
        ledger.evict_finished(input.timestamp_ms, ORDER_RETENTION_DEFAULT_MS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn status() -> impl Strategy<Value = FillStatus> {
        prop_oneof![
            any::<i64>().prop_map(|r| FillStatus::Filled {
                remaining: Quantity(r)
            }),
            Just(FillStatus::Rejected(StockRejectReason::InsufficientStock)),
            Just(FillStatus::Rejected(StockRejectReason::UnknownSku)),
            Just(FillStatus::Rejected(StockRejectReason::InvalidQuantity)),
        ]
    }

    proptest! {
        #[test]
        fn fill_records_round_trip(
            cause: u128, account: u64, quantity: i64, amount: i64, status in status(),
            sku in "[A-Z0-9._-]{1,16}", at_ms: i64,
        ) {
            let sku = Sku::new(&sku).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let record = FillRecord {
                cause: EventId(cause),
                account: AccountId(account),
                sku,
                quantity: Quantity(quantity),
                amount: Money(amount),
                status,
                decided_at_ms: Some(at_ms),
            };
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), 74);
            prop_assert_eq!(FillRecord::decode(&bytes), Ok(record));
            prop_assert!(FillRecord::decode(&bytes[..73]).is_err());
            // The layout before retention (66 bytes) still reads, kept for ever.
            let legacy = FillRecord { decided_at_ms: None, ..record };
            prop_assert_eq!(FillRecord::decode(&bytes[..66]), Ok(legacy));
            prop_assert_eq!(legacy.finished_at_ms(), None);
            let level = StockLevel { on_hand: Quantity(quantity) };
            bytes.clear();
            level.encode(&mut bytes);
            prop_assert_eq!(StockLevel::decode(&bytes), Ok(level));
            let replenished = ReplenishmentRecord { sku, quantity: Quantity(quantity) };
            bytes.clear();
            replenished.encode(&mut bytes);
            prop_assert_eq!(ReplenishmentRecord::decode(&bytes), Ok(replenished));
        }
    }
}
