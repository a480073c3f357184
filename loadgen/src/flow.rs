//! The flow's topic names and record keys as the loadgen sends them: a copy of
//! `services::topics`, checked against it by a test.
//!
//! Why a copy: `tradeflow-services` depends on this crate (its `tradeflow demo`
//! runs [`crate::ping`]), so this crate cannot depend on it back — Cargo refuses
//! the cycle. A dev-dependency may close the loop, so the test
//! `flow_agrees_with_services_topics` compares every name, every event kind's
//! topic and both key encodings with the services' own functions. When the
//! topics move somewhere both crates can depend on, replace this module with a
//! re-export.
//!
//! Must never: hold a name or key rule that `services::topics` does not.

use codecs::{AccountId, EventKind, Sku};

/// Orders accepted by the Order API. Key: account.
pub const ORDER_CREATED: &str = "order-service.order.created";
/// Amendments and cancellations. Key: account.
pub const ORDER_UPDATED: &str = "order-service.order.updated";
/// Cash debited for an order. Key: sku.
pub const PAYMENT_COMPLETED: &str = "payment-service.payment.completed";
/// The account could not pay. Key: account.
pub const PAYMENT_FAILED: &str = "payment-service.payment.failed";
/// Cash returned after a stock rejection. Key: account.
pub const PAYMENT_REFUNDED: &str = "payment-service.payment.refunded";
/// Units taken for a paid order. Key: account.
pub const STOCK_UPDATED: &str = "inventory-service.stock.updated";
/// Not enough stock for a paid order. Key: account.
pub const STOCK_REJECTED: &str = "inventory-service.stock.rejected";
/// Cash added to an account. Key: account.
pub const ACCOUNT_FUNDED: &str = "payment-service.account.funded";
/// Units added to an instrument's stock. Key: sku.
pub const STOCK_REPLENISHED: &str = "inventory-service.stock.replenished";

/// Every topic of the flow, in the order of the flow.
pub const ALL: [&str; 9] = [
    ORDER_CREATED,
    ORDER_UPDATED,
    PAYMENT_COMPLETED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    STOCK_UPDATED,
    STOCK_REJECTED,
    ACCOUNT_FUNDED,
    STOCK_REPLENISHED,
];

/// The topic an event of `kind` is published to.
pub fn topic_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::OrderCreated => ORDER_CREATED,
        EventKind::OrderAmended | EventKind::OrderCancelled => ORDER_UPDATED,
        EventKind::PaymentCompleted => PAYMENT_COMPLETED,
        EventKind::PaymentFailed => PAYMENT_FAILED,
        EventKind::PaymentRefunded => PAYMENT_REFUNDED,
        EventKind::StockUpdated => STOCK_UPDATED,
        EventKind::StockRejected => STOCK_REJECTED,
        EventKind::AccountFunded => ACCOUNT_FUNDED,
        EventKind::StockReplenished => STOCK_REPLENISHED,
    }
}

/// The record key of an account-keyed topic.
pub fn account_key(account: AccountId) -> [u8; 8] {
    account.0.to_be_bytes()
}

/// The record key of a sku-keyed topic: the symbol's bytes, as written.
pub fn sku_key(sku: &Sku) -> &[u8] {
    sku.as_str().as_bytes()
}

/// Whether records of `kind` are keyed by sku (Inventory's state) rather than account.
pub fn keyed_by_sku(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::PaymentCompleted | EventKind::StockReplenished
    )
}

/// The record key of `event` on its topic.
pub fn key_of(event: &codecs::Event) -> Vec<u8> {
    match (keyed_by_sku(event.kind()), event.account(), event.sku()) {
        (true, _, Some(sku)) => sku_key(&sku).to_vec(),
        (_, Some(account), _) => account_key(account).to_vec(),
        (_, None, Some(sku)) => sku_key(&sku).to_vec(),
        (_, None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_agrees_with_services_topics() -> Result<(), codecs::ValueError> {
        use services::topics;
        assert_eq!(ALL, topics::ALL);
        for kind in EventKind::ALL {
            assert_eq!(topic_of(kind), topics::topic_of(kind), "{kind:?}");
        }
        for account in [AccountId(0), AccountId(1), AccountId(u64::MAX)] {
            assert_eq!(account_key(account), topics::account_key(account));
        }
        for symbol in ["A", "SYM0001", "BRK.B", "ABCDEFGHIJKLMNOP"] {
            let sku = Sku::new(symbol)?;
            assert_eq!(sku_key(&sku), topics::sku_key(&sku));
        }
        Ok(())
    }

    #[test]
    fn keys_follow_the_consuming_state() {
        // Inventory consumes payment.completed and stock.replenished: keyed by sku.
        for kind in EventKind::ALL {
            let by_sku = matches!(topic_of(kind), PAYMENT_COMPLETED | STOCK_REPLENISHED);
            assert_eq!(keyed_by_sku(kind), by_sku, "{kind:?}");
        }
    }
}
