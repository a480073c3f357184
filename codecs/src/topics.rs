//! The topics of the trade flow, named as in the seed documents
//! (`<producing service>.<entity>.<event>`), and the key each one is
//! partitioned by: the key of the state that consumes it.
//!
//! Owns: topic names and record keys, so services, loadgen, audit and docs agree.
//! They are part of the wire contract, like schema ids: names, not Kafka
//! clients, so `codecs` still knows nothing about Kafka itself.
//! Must never: hold topic settings (partitions, replication: see the engine's
//! `kafka::ensure_topics`) or any routing logic beyond "which key".
//!
//! The constants are *logical* names. A deployment may put a
//! [`TopicNamespace`] in front of them (`desk-a.order-service.order.created`)
//! so that several deployments, or several test runs, share one cluster
//! without reading each other's events; stages always see logical names and
//! only the edges that talk to Kafka translate.

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

/// The longest namespace prefix accepted: Kafka caps topic names at 249
/// characters, and the longest flow topic plus `.dlq` needs 39 of them.
pub const NAMESPACE_MAX_LEN: usize = 200;

/// Why a topic namespace was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNamespaceError {
    #[error("topic namespace {0:?} is longer than {NAMESPACE_MAX_LEN} characters")]
    TooLong(String),
    #[error(
        "topic namespace {namespace:?} has {found:?}: Kafka topic names allow only \
         ASCII letters, digits, '.', '_' and '-'"
    )]
    BadCharacter { namespace: String, found: char },
}

/// A deployment's topic namespace: a prefix put in front of every flow topic
/// (`<namespace>.<logical name>`), empty by default so a plain deployment
/// uses the seed's names unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TopicNamespace {
    /// `"<namespace>."`, or empty for the default namespace.
    prefix: String,
}

impl TopicNamespace {
    /// The default namespace: topics carry their logical names.
    pub fn none() -> Self {
        Self::default()
    }

    /// A namespace named `name` (an empty name is the default namespace).
    pub fn new(name: &str) -> Result<Self, TopicNamespaceError> {
        if name.len() > NAMESPACE_MAX_LEN {
            return Err(TopicNamespaceError::TooLong(name.to_string()));
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNamespaceError::BadCharacter {
                namespace: name.to_string(),
                found,
            });
        }
        let prefix = if name.is_empty() {
            String::new()
        } else {
            format!("{name}.")
        };
        Ok(Self { prefix })
    }

    /// The namespace's name, empty for the default one.
    pub fn name(&self) -> &str {
        self.prefix.strip_suffix('.').unwrap_or("")
    }

    /// True for the default namespace.
    pub fn is_default(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The Kafka topic that holds logical topic `logical` in this namespace.
    pub fn physical(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// The logical name of Kafka topic `physical`, if it is in this namespace.
    pub fn logical<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical.strip_prefix(self.prefix.as_str())
    }

    /// The logical flow topic (one of [`ALL`]) that Kafka topic `physical`
    /// holds in this namespace, as the `'static` constant.
    pub fn flow_topic(&self, physical: &str) -> Option<&'static str> {
        let logical = self.logical(physical)?;
        ALL.iter().copied().find(|t| *t == logical)
    }

    /// Every flow topic of this namespace, in the order of [`ALL`].
    pub fn all(&self) -> Vec<String> {
        ALL.iter().map(|t| self.physical(t)).collect()
    }
}

impl std::fmt::Display for TopicNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_default() {
            f.write_str("(default)")
        } else {
            f.write_str(self.name())
        }
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

    #[test]
    fn the_default_namespace_keeps_the_seed_names() {
        let ns = TopicNamespace::none();
        assert_eq!(ns.physical(ORDER_CREATED), ORDER_CREATED);
        assert_eq!(ns.flow_topic(STOCK_UPDATED), Some(STOCK_UPDATED));
        assert_eq!(ns.all(), ALL.map(String::from).to_vec());
        assert_eq!(TopicNamespace::new("").as_ref(), Ok(&ns));
    }

    #[test]
    fn a_namespace_prefixes_and_strips() {
        let ns = TopicNamespace::new("desk-a").expect("valid");
        let physical = ns.physical(PAYMENT_FAILED);
        assert_eq!(physical, "desk-a.payment-service.payment.failed");
        assert_eq!(ns.logical(&physical), Some(PAYMENT_FAILED));
        assert_eq!(ns.flow_topic(&physical), Some(PAYMENT_FAILED));
        assert_eq!(ns.flow_topic(PAYMENT_FAILED), None, "outside the namespace");
        assert_eq!(ns.flow_topic("desk-a.other"), None, "not a flow topic");
        assert_eq!(ns.name(), "desk-a");
    }

    #[test]
    fn a_bad_namespace_is_refused_with_the_reason() {
        assert_eq!(
            TopicNamespace::new("desk a"),
            Err(TopicNamespaceError::BadCharacter {
                namespace: "desk a".into(),
                found: ' '
            })
        );
        assert!(matches!(
            TopicNamespace::new(&"x".repeat(NAMESPACE_MAX_LEN + 1)),
            Err(TopicNamespaceError::TooLong(_))
        ));
    }
}
