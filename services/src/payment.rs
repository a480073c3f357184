//! Payment: each account's cash, and what was debited for each order.
//!
//! Owns: the `AccountBook` (one per partition of the account-keyed topics:
//! balances, a payment record per order, the fundings applied) and its
//! rules: debit quantity × limit price on `order.created` if the account can
//! pay (`payment.completed`, keyed by sku for Inventory) or refuse
//! (`payment.failed`); refund once on `stock.rejected` (`payment.refunded`);
//! credit `account.funded` once per event id.
//! Must never: let a balance go negative, debit an order twice, refund an
//! order twice or refund one it never debited, or change state for an event
//! it rejects (every check runs before the first write, and events are
//! emitted before state changes so an encode failure leaves state alone).
//!
//! Replays. At-least-once redelivers records; a replayed input finds the
//! record it left and re-emits the same decision with the same event ids
//! (`ids::derived_event_id`), which downstream stages recognise. A second
//! `order.created` with a new event id but the same order id is a client's
//! retry (same client order id): absorbed, nothing emitted; with different
//! content it is a collision and is dead-lettered.
//!
//! Refund before debit. After a crash, a shard replays its inputs from the
//! committed offsets, and the order in which it interleaves its input topics
//! may differ from the first time: under at-least-once, the `stock.rejected`
//! for an order whose `payment.completed` escaped before the crash can be
//! read before the replayed `order.created`. It is dead-lettered (no debit
//! is recorded), and the flow heals itself: the replayed `order.created`
//! re-emits the same `payment.completed`, Inventory answers the duplicate
//! with the same `stock.rejected`, and that one is refunded. The dead letter
//! is then a harmless duplicate. Under exactly-once nothing escapes an
//! aborted transaction, so such a dead letter means a forged or misrouted
//! rejection.
//!
//! Lives on: the core of the shard that owns the partition.

use codecs::{
    AccountId, ArchivedAccountFunded, ArchivedStockRejected, Event, EventHeader, EventId,
    EventKind, Money, OrderCreatedRef, OrderId, PaymentCompleted, PaymentFailReason, PaymentFailed,
    PaymentRefunded, Quantity, Sku, ToNative,
};
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::{ChangelogStore, PartitionStores, Store, StoreValue};

use crate::ids::derived_event_id;
use crate::retention::{StreamClock, EVICTIONS_PER_EVENT_MAX, ORDER_RETENTION_DEFAULT_MS};
use crate::routing::{
    caused_header, emit, expect_partition, expect_topic, internal, require_order,
};
use crate::store_codec::{
    fail_reason_code, fail_reason_from, AccountKey, EventKey, OrderKey, ValueReader, ValueWriter,
};
use crate::topics::{account_key, sku_key, ACCOUNT_FUNDED, ORDER_CREATED, STOCK_REJECTED};

/// Changelog store names; service-prefixed so Payment's changelogs are the
/// same topics whether it runs alone or inside `TradeFlow`.
pub const ACCOUNTS_STORE: &str = "payment-accounts";
pub const PAYMENTS_STORE: &str = "payment-orders";
pub const FUNDINGS_STORE: &str = "payment-fundings";

/// The topics Payment reads, all keyed by account.
pub const PAYMENT_INPUTS: [&str; 3] = [ORDER_CREATED, STOCK_REJECTED, ACCOUNT_FUNDED];

/// One account's cash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    /// Never negative.
    pub balance: Money,
}

impl StoreValue for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        ValueWriter(out).money(self.balance);
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let balance = r.money()?;
        r.finish()?;
        Ok(Account { balance })
    }
}

/// Where an order stands with Payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// The amount was debited and `payment.completed` emitted.
    Debited,
    /// Payment refused the order and emitted `payment.failed`.
    Failed(PaymentFailReason),
    /// Debited, then refunded after a stock rejection.
    Refunded,
}

/// What Payment did for one order: the deduplication record for replays and
/// the amount a refund gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    pub account: AccountId,
    pub sku: Sku,
    pub quantity: Quantity,
    pub limit_price: Money,
    /// Debited, or the amount `payment.failed` reported (zero for an
    /// invalid order).
    pub amount: Money,
    pub status: PaymentStatus,
    /// The `order.created` event that was decided.
    pub decided_by: EventId,
    /// The `stock.rejected` event refunded; `NONE` if none.
    pub refund_cause: EventId,
    /// Timestamp (ms) of the `order.created` record decided: the record is
    /// evicted once the retention has passed after it. `None` for a record
    /// written before this field existed (82 bytes), which is kept.
    pub decided_at_ms: Option<i64>,
}

impl PaymentRecord {
    /// From when the record may be evicted (see `crate::retention`): its
    /// decision's event time. A refund may still come within the retention,
    /// so it must be longer than Inventory can lag behind Payment.
    pub fn finished_at_ms(&self) -> Option<i64> {
        self.decided_at_ms
    }
}

impl StoreValue for PaymentRecord {
    /// account 8 | sku 16 | quantity 8 | limit price 8 | amount 8 | status 1 |
    /// reason 1 | decided_by 16 | refund_cause 16 | decided_at_ms 8: 90 bytes
    /// (82 without `decided_at_ms`, the layout before retention; still read).
    fn encode(&self, out: &mut Vec<u8>) {
        let (status, reason) = match self.status {
            PaymentStatus::Debited => (0, 0),
            PaymentStatus::Failed(reason) => (1, fail_reason_code(reason)),
            PaymentStatus::Refunded => (2, 0),
        };
        ValueWriter(out)
            .account(self.account)
            .sku(&self.sku)
            .quantity(self.quantity)
            .money(self.limit_price)
            .money(self.amount)
            .u8(status)
            .u8(reason)
            .event_id(self.decided_by)
            .event_id(self.refund_cause);
        if let Some(at_ms) = self.decided_at_ms {
            ValueWriter(out).i64(at_ms);
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let account = r.account()?;
        let sku = r.sku()?;
        let quantity = r.quantity()?;
        let limit_price = r.money()?;
        let amount = r.money()?;
        let status = r.u8()?;
        let reason = r.u8()?;
        let status = match status {
            0 => PaymentStatus::Debited,
            1 => PaymentStatus::Failed(fail_reason_from(reason)?),
            2 => PaymentStatus::Refunded,
            _ => return Err("unknown payment status"),
        };
        let record = PaymentRecord {
            account,
            sku,
            quantity,
            limit_price,
            amount,
            status,
            decided_by: r.event_id()?,
            refund_cause: r.event_id()?,
            decided_at_ms: None,
        };
        let record = PaymentRecord {
            decided_at_ms: if r.is_done() { None } else { Some(r.i64()?) },
            ..record
        };
        r.finish()?;
        Ok(record)
    }
}

/// A funding applied, kept to recognise its event id if it comes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FundingRecord {
    pub account: AccountId,
    pub amount: Money,
}

impl StoreValue for FundingRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        ValueWriter(out).account(self.account).money(self.amount);
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = ValueReader::new(bytes);
        let record = FundingRecord {
            account: r.account()?,
            amount: r.money()?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Payment's state for one partition of the account-keyed topics. Payment
/// records are evicted once the retention has passed after their decision
/// (`crate::retention`); accounts are never evicted.
pub struct AccountBook {
    pub accounts: Store<AccountKey, Account>,
    pub payments: Store<OrderKey, PaymentRecord>,
    pub fundings: Store<EventKey, FundingRecord>,
    clock: StreamClock,
}

impl Default for AccountBook {
    fn default() -> Self {
        AccountBook {
            accounts: Store::new(ACCOUNTS_STORE),
            payments: Store::with_retention(PAYMENTS_STORE, PaymentRecord::finished_at_ms),
            fundings: Store::new(FUNDINGS_STORE),
            clock: StreamClock::default(),
        }
    }
}

impl PartitionStores for AccountBook {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.accounts);
        f(&mut self.payments);
        f(&mut self.fundings);
    }
}

/// What Payment did with one event; `TradeFlow` tells the Order stage about
/// the terminal ones when both run in the same shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// `payment.completed` emitted (first decision or a replay of it).
    Paid,
    /// `payment.failed` emitted: a terminal outcome.
    Failed {
        reason: PaymentFailReason,
        event: EventId,
    },
    /// `payment.refunded` emitted: a terminal outcome.
    Refunded { event: EventId },
    /// A funding was credited.
    Funded,
    /// Already applied; nothing emitted.
    Duplicate,
}

/// Payment's answer to an order: the amount to debit, or why not, with the
/// amount `payment.failed` reports.
type Decision = Result<Money, (PaymentFailReason, Money)>;

impl AccountBook {
    /// Moves the partition's event time to `at_ms` and evicts a few payment
    /// records whose retention has passed (a tombstone each). Returns the
    /// evictions.
    pub fn evict_finished(&mut self, at_ms: i64, retention_ms: i64) -> usize {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.payments
            .evict_finished(cutoff, EVICTIONS_PER_EVENT_MAX)
    }

    /// Before an `order.created` at `at_ms` is decided: forgets the order's
    /// payment record if its retention has passed, so the order is decided
    /// afresh (a resubmission after the retention is a new order).
    pub fn forget_if_past_retention(
        &mut self,
        order: OrderId,
        at_ms: i64,
        retention_ms: i64,
    ) -> bool {
        let cutoff = self.clock.advance(at_ms, retention_ms);
        self.payments.evict_if_finished_by(&OrderKey(order), cutoff)
    }

    /// The balance of `account`, if it was ever funded.
    pub fn balance(&self, account: AccountId) -> Option<Money> {
        self.accounts.get(&AccountKey(account)).map(|a| a.balance)
    }

    /// What Payment recorded for `order`.
    pub fn payment(&self, order: OrderId) -> Option<&PaymentRecord> {
        self.payments.get(&OrderKey(order))
    }

    /// Validates the order and checks the account, without changing anything.
    fn decide(&self, order: OrderCreatedRef<'_>) -> Decision {
        let quantity = order.quantity();
        let price = order.limit_price();
        if quantity.0 <= 0 || price.0 <= 0 {
            return Err((PaymentFailReason::InvalidOrder, Money::ZERO));
        }
        let amount = price
            .checked_mul_quantity(quantity)
            .map_err(|_| (PaymentFailReason::AmountOverflow, Money::ZERO))?;
        match self.balance(order.account()) {
            None => Err((PaymentFailReason::UnknownAccount, amount)),
            Some(balance) if balance < amount => {
                Err((PaymentFailReason::InsufficientFunds, amount))
            }
            Some(_) => Ok(amount),
        }
    }

    /// `order.created`: debit and emit `payment.completed`, or emit `payment.failed`.
    pub fn apply_order_created(
        &mut self,
        order: OrderCreatedRef<'_>,
        at_ms: i64,
        out: &mut Outbox,
    ) -> Result<PaymentOutcome, Rejection> {
        let header = order.header();
        let order_id = require_order(header, EventKind::OrderCreated)?;
        let key = OrderKey(order_id);
        let Some(record) = self.payments.get(&key).copied() else {
            let decision = self.decide(order);
            return self.record_decision(order, decision, at_ms, out);
        };
        if record.decided_by == header.event_id() {
            // A replay of the event already decided: the same outputs again.
            let decision = match record.status {
                PaymentStatus::Failed(reason) => Err((reason, record.amount)),
                PaymentStatus::Debited | PaymentStatus::Refunded => Ok(record.amount),
            };
            return emit_decision(order, decision, out);
        }
        if record.account == order.account()
            && record.sku == order.sku()
            && record.quantity == order.quantity()
            && record.limit_price == order.limit_price()
        {
            // A client's retry of the same order: decided once already.
            return Ok(PaymentOutcome::Duplicate);
        }
        Err(Rejection::user_data(format!(
            "order id {} already names another order (account {}, {} × {} at {})",
            order_id.0, record.account, record.sku, record.quantity, record.limit_price
        )))
    }

    /// Applies a fresh decision for `order`: emits it, then records it (and
    /// debits).
    fn record_decision(
        &mut self,
        order: OrderCreatedRef<'_>,
        decision: Decision,
        at_ms: i64,
        out: &mut Outbox,
    ) -> Result<PaymentOutcome, Rejection> {
        let header = order.header();
        let order_id = header.order_id();
        let account = order.account();
        let (status, amount) = match decision {
            Err((reason, amount)) => (PaymentStatus::Failed(reason), amount),
            Ok(amount) => (PaymentStatus::Debited, amount),
        };
        let debited = match decision {
            Err(_) => None,
            Ok(amount) => {
                let balance = self
                    .balance(account)
                    .ok_or_else(|| internal(format!("account {account} vanished mid-decision")))?;
                let debited = balance
                    .checked_sub(amount)
                    .map_err(|e| internal(format!("debiting account {account}: {e}")))?;
                Some(debited)
            }
        };
        let outcome = emit_decision(order, decision, out)?;
        if let Some(balance) = debited {
            self.accounts
                .insert(AccountKey(account), Account { balance });
        }
        self.payments.insert(
            OrderKey(order_id),
            PaymentRecord {
                account,
                sku: order.sku(),
                quantity: order.quantity(),
                limit_price: order.limit_price(),
                amount,
                status,
                decided_by: header.event_id(),
                refund_cause: EventId::NONE,
                decided_at_ms: Some(at_ms),
            },
        );
        Ok(outcome)
    }

    /// `stock.rejected`: refund the debited amount once and emit `payment.refunded`.
    pub fn apply_stock_rejected(
        &mut self,
        rejection: &ArchivedStockRejected,
        out: &mut Outbox,
    ) -> Result<PaymentOutcome, Rejection> {
        let header = rejection.header();
        let order_id = require_order(header, EventKind::StockRejected)?;
        let account = rejection.account();
        let amount = rejection.amount();
        if amount.0 <= 0 {
            return Err(Rejection::user_data(format!(
                "stock.rejected for order {} asks back {amount}, not a positive amount",
                order_id.0
            )));
        }
        let key = OrderKey(order_id);
        let Some(record) = self.payments.get(&key).copied() else {
            return Err(Rejection::user_data(format!(
                "stock.rejected for order {}, which Payment never debited (no payment recorded)",
                order_id.0
            )));
        };
        match record.status {
            PaymentStatus::Failed(reason) => Err(Rejection::user_data(format!(
                "stock.rejected for order {}, which Payment refused ({reason:?}) and never debited",
                order_id.0
            ))),
            PaymentStatus::Refunded if record.refund_cause == header.event_id() => {
                let refund = refund_event(&header.to_native(), &record);
                emit(out, &account_key(account), &refund)?;
                Ok(PaymentOutcome::Refunded {
                    event: refund.header().event_id,
                })
            }
            // Refund once: another rejection of the same payment changes nothing.
            PaymentStatus::Refunded => Ok(PaymentOutcome::Duplicate),
            PaymentStatus::Debited => {
                if record.account != account || record.amount != amount {
                    return Err(Rejection::user_data(format!(
                        "stock.rejected for order {} asks {amount} back to account {account}; \
                         Payment debited {} from account {}",
                        order_id.0, record.amount, record.account
                    )));
                }
                let paid = derived_event_id(record.decided_by, EventKind::PaymentCompleted);
                if header.causation_id() != paid {
                    return Err(Rejection::user_data(format!(
                        "stock.rejected for order {} names payment {}, but the order was paid by {paid}",
                        order_id.0,
                        header.causation_id()
                    )));
                }
                let balance = self.balance(account).ok_or_else(|| {
                    internal(format!(
                        "account {account} of debited order {} is missing",
                        order_id.0
                    ))
                })?;
                let credited = balance.checked_add(amount).map_err(|e| {
                    Rejection::user_data(format!("refunding {amount} to account {account}: {e}"))
                })?;
                let refund = refund_event(&header.to_native(), &record);
                emit(out, &account_key(account), &refund)?;
                self.accounts
                    .insert(AccountKey(account), Account { balance: credited });
                self.payments.insert(
                    key,
                    PaymentRecord {
                        status: PaymentStatus::Refunded,
                        refund_cause: header.event_id(),
                        ..record
                    },
                );
                Ok(PaymentOutcome::Refunded {
                    event: refund.header().event_id,
                })
            }
        }
    }

    /// `account.funded`: credit once per event id.
    pub fn apply_account_funded(
        &mut self,
        funded: &ArchivedAccountFunded,
    ) -> Result<PaymentOutcome, Rejection> {
        let id = funded.header().event_id();
        let account = funded.account();
        let amount = funded.amount();
        if amount.0 <= 0 {
            return Err(Rejection::user_data(format!(
                "account.funded for account {account} of {amount}: a funding must be positive"
            )));
        }
        if self.fundings.get(&EventKey(id)).is_some() {
            return Ok(PaymentOutcome::Duplicate);
        }
        let balance = self.balance(account).unwrap_or(Money::ZERO);
        let credited = balance.checked_add(amount).map_err(|e| {
            Rejection::user_data(format!("funding account {account} with {amount}: {e}"))
        })?;
        self.accounts
            .insert(AccountKey(account), Account { balance: credited });
        self.fundings
            .insert(EventKey(id), FundingRecord { account, amount });
        Ok(PaymentOutcome::Funded)
    }
}

/// Emits the event for `decision` on `order` and says which it was.
fn emit_decision(
    order: OrderCreatedRef<'_>,
    decision: Decision,
    out: &mut Outbox,
) -> Result<PaymentOutcome, Rejection> {
    let header = order.header();
    let sku = order.sku();
    match decision {
        Ok(amount) => {
            let paid = Event::PaymentCompleted(PaymentCompleted {
                header: caused_header(header, EventKind::PaymentCompleted),
                account: order.account(),
                sku,
                quantity: order.quantity(),
                amount,
            });
            emit(out, sku_key(&sku), &paid)?;
            Ok(PaymentOutcome::Paid)
        }
        Err((reason, amount)) => {
            let failed = Event::PaymentFailed(PaymentFailed {
                header: caused_header(header, EventKind::PaymentFailed),
                account: order.account(),
                sku,
                quantity: order.quantity(),
                amount,
                reason,
            });
            emit(out, &account_key(order.account()), &failed)?;
            Ok(PaymentOutcome::Failed {
                reason,
                event: failed.header().event_id,
            })
        }
    }
}

/// `payment.refunded` for the rejection whose header is `cause`, refunding
/// what `record` says (account, sku, quantity, amount).
fn refund_event(cause: &EventHeader, record: &PaymentRecord) -> Event {
    Event::PaymentRefunded(PaymentRefunded {
        header: EventHeader {
            event_id: derived_event_id(cause.event_id, EventKind::PaymentRefunded),
            order_id: cause.order_id,
            causation_id: cause.event_id,
            created_at_ns: cause.created_at_ns,
        },
        account: record.account,
        sku: record.sku,
        quantity: record.quantity,
        amount: record.amount,
    })
}

/// Payment alone as a stage (`tradeflow run --services payment` runs the same
/// rules inside [`crate::flow::TradeFlow`]).
#[derive(Debug, Default)]
pub struct PaymentStage;

impl Stage for PaymentStage {
    type State = AccountBook;

    fn name(&self) -> &'static str {
        "payment"
    }

    fn input_topics(&self) -> &[&'static str] {
        &PAYMENT_INPUTS
    }

    fn process(
        &mut self,
        input: &Input<'_>,
        event: codecs::EventRef<'_>,
        book: &mut AccountBook,
        out: &mut Outbox,
    ) -> Result<(), Rejection> {
        expect_topic(input, event.kind())?;
        let partitions = out.partitions();
        let applied = match event {
            codecs::EventRef::OrderCreated(order) => {
                expect_partition(input, &account_key(order.account()), partitions)?;
                book.forget_if_past_retention(
                    order.header().order_id(),
                    input.timestamp_ms,
                    ORDER_RETENTION_DEFAULT_MS,
                );
                book.apply_order_created(order, input.timestamp_ms, out)
                    .map(drop)
            }
            codecs::EventRef::StockRejected(rejection) => {
                expect_partition(input, &account_key(rejection.account()), partitions)?;
                book.apply_stock_rejected(rejection, out).map(drop)
            }
            codecs::EventRef::AccountFunded(funded) => {
                expect_partition(input, &account_key(funded.account()), partitions)?;
                book.apply_account_funded(funded).map(drop)
            }
            other => Err(Rejection::user_data(format!(
                "payment does not take {}",
                other.kind()
            ))),
        };
        applied?;
        book.evict_finished(input.timestamp_ms, ORDER_RETENTION_DEFAULT_MS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reason() -> impl Strategy<Value = PaymentFailReason> {
        prop_oneof![
            Just(PaymentFailReason::InsufficientFunds),
            Just(PaymentFailReason::UnknownAccount),
            Just(PaymentFailReason::AmountOverflow),
            Just(PaymentFailReason::InvalidOrder),
        ]
    }

    fn status() -> impl Strategy<Value = PaymentStatus> {
        prop_oneof![
            Just(PaymentStatus::Debited),
            reason().prop_map(PaymentStatus::Failed),
            Just(PaymentStatus::Refunded),
        ]
    }

    proptest! {
        #[test]
        fn payment_records_round_trip(
            account: u64, quantity: i64, price: i64, amount: i64, status in status(),
            decided: u128, cause: u128, sku in "[A-Z0-9._-]{1,16}", at_ms: i64,
        ) {
            let record = PaymentRecord {
                account: AccountId(account),
                sku: Sku::new(&sku).map_err(|e| TestCaseError::fail(e.to_string()))?,
                quantity: Quantity(quantity),
                limit_price: Money(price),
                amount: Money(amount),
                status,
                decided_by: EventId(decided),
                refund_cause: EventId(cause),
                decided_at_ms: Some(at_ms),
            };
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            prop_assert_eq!(bytes.len(), 90);
            prop_assert_eq!(PaymentRecord::decode(&bytes), Ok(record));
            prop_assert!(PaymentRecord::decode(&bytes[..89]).is_err());
            // The layout before retention (82 bytes) still reads, kept for ever.
            let legacy = PaymentRecord { decided_at_ms: None, ..record };
            prop_assert_eq!(PaymentRecord::decode(&bytes[..82]), Ok(legacy));
            prop_assert_eq!(legacy.finished_at_ms(), None);
            prop_assert!(PaymentRecord::decode(&bytes[..81]).is_err());
        }

        #[test]
        fn accounts_and_fundings_round_trip(account: u64, amount: i64) {
            let mut bytes = Vec::new();
            Account { balance: Money(amount) }.encode(&mut bytes);
            prop_assert_eq!(Account::decode(&bytes), Ok(Account { balance: Money(amount) }));
            let funding = FundingRecord { account: AccountId(account), amount: Money(amount) };
            bytes.clear();
            funding.encode(&mut bytes);
            prop_assert_eq!(FundingRecord::decode(&bytes), Ok(funding));
        }
    }

    #[test]
    fn unknown_status_bytes_are_an_error() {
        let record = PaymentRecord {
            account: AccountId(1),
            sku: Sku::new("A").unwrap_or_else(|e| panic!("{e}")),
            quantity: Quantity(1),
            limit_price: Money(1),
            amount: Money(1),
            status: PaymentStatus::Debited,
            decided_by: EventId(1),
            refund_cause: EventId::NONE,
            decided_at_ms: Some(1),
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        bytes[48] = 9;
        assert!(PaymentRecord::decode(&bytes).is_err());
    }
}
