//! The topics of the trade flow, named as in the seed documents
//! (`<producing service>.<entity>.<event>`), and the key each one is
//! partitioned by: the key of the state that consumes it.
//!
//! Owns: topic names and record keys, so services, loadgen, audit and docs agree.
//! They are part of the wire contract, like schema ids: names, not Kafka
//! clients, so `codecs` still knows nothing about Kafka itself.
//! Must never: hold topic settings (partitions, replication: see the engine's
//! `kafka::ensure_topics`) or any routing logic beyond "which key".

use crate::{AccountId, EventKind, Sku};

/// Orders accepted by the Order API. Key: account (Payment's state).
pub const ORDER_CREATED: &str = "order-service.order.created";
/// Amendments and cancellations from the Order API. Key: account.
pub const ORDER_UPDATED: &str = "order-service.order.updated";
/// Cash debited for an order. Key: sku (Inventory's state).
pub const PAYMENT_COMPLETED: &str = "payment-service.payment.completed";
/// The account could not pay. Key: account (the Order stage's state).
pub const PAYMENT_FAILED: &str = "payment-service.payment.failed";
/// Cash returned after a stock rejection (compensation). Key: account.
pub const PAYMENT_REFUNDED: &str = "payment-service.payment.refunded";
/// Units taken for a paid order: the order is filled. Key: account.
pub const STOCK_UPDATED: &str = "inventory-service.stock.updated";
/// Not enough stock for a paid order. Key: account (Payment refunds).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_has_a_topic_of_the_flow() {
        for kind in EventKind::ALL {
            assert!(ALL.contains(&topic_of(kind)), "{kind:?}");
        }
    }
}
