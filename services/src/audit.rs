//! The invariant audit as the services use it: the `audit` crate (which
//! re-derives every figure from the events and knows no stage), re-exported,
//! plus the adapters that put the stages' stores into its plain-map
//! [`StateSnapshot`].
//!
//! Owns: [`StateSnapshotExt`] (stage state → snapshot) and the conversions
//! of the Order stage's status to the audit's [`OrderState`]. Must never:
//! check an invariant here — a check that used a stage's types could trust
//! the stage; checks belong in the `audit` crate, over events.

pub use ::audit::*;

use crate::inventory::StockLedger;
use crate::order::{OrderBook, OrderOutcome, OrderStatus};
use crate::payment::AccountBook;

/// Adds the stages' stores to a [`StateSnapshot`], one partition at a time.
pub trait StateSnapshotExt {
    /// Adds one partition's balances (Payment).
    fn add_accounts(&mut self, book: &AccountBook);
    /// Adds one partition's stock (Inventory).
    fn add_stock(&mut self, ledger: &StockLedger);
    /// Adds one partition's order statuses (Order).
    fn add_orders(&mut self, book: &OrderBook);
}

impl StateSnapshotExt for StateSnapshot {
    fn add_accounts(&mut self, book: &AccountBook) {
        let balances = self.balances_mut();
        for (key, account) in book.accounts.iter() {
            balances.insert(key.0, account.balance);
        }
    }

    fn add_stock(&mut self, ledger: &StockLedger) {
        let on_hand = self.on_hand_mut();
        for (key, level) in ledger.stock.iter() {
            on_hand.insert(key.0, level.on_hand);
        }
    }

    fn add_orders(&mut self, book: &OrderBook) {
        let statuses = self.order_status_mut();
        for (key, record) in book.orders.iter() {
            statuses.insert(key.0, record.status().into());
        }
    }
}

impl From<OrderOutcome> for Outcome {
    fn from(outcome: OrderOutcome) -> Self {
        match outcome {
            OrderOutcome::Filled => Outcome::Filled,
            OrderOutcome::RejectedFunds(reason) => Outcome::RejectedFunds(reason),
            OrderOutcome::RejectedStockRefunded => Outcome::RejectedStockRefunded,
        }
    }
}

impl From<OrderStatus> for OrderState {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::NotYetAccepted => OrderState::NotYetAccepted,
            OrderStatus::Accepted => OrderState::Accepted,
            OrderStatus::Done(outcome) => OrderState::Done(outcome.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use codecs::PaymentFailReason;

    use super::*;

    #[test]
    fn every_order_status_has_its_audit_state() {
        let reason = PaymentFailReason::UnknownAccount;
        for (status, state) in [
            (OrderStatus::NotYetAccepted, OrderState::NotYetAccepted),
            (OrderStatus::Accepted, OrderState::Accepted),
            (
                OrderStatus::Done(OrderOutcome::Filled),
                OrderState::Done(Outcome::Filled),
            ),
            (
                OrderStatus::Done(OrderOutcome::RejectedFunds(reason)),
                OrderState::Done(Outcome::RejectedFunds(reason)),
            ),
            (
                OrderStatus::Done(OrderOutcome::RejectedStockRefunded),
                OrderState::Done(Outcome::RejectedStockRefunded),
            ),
        ] {
            assert_eq!(OrderState::from(status), state);
        }
    }
}
