//! The flow's topic names and record keys as the driver sends them:
//! `codecs::topics` (part of the wire contract), plus the rule that picks a
//! record's key from its event.
//!
//! Owns: [`key_of`]. Must never: hold a topic name or key encoding of its own —
//! those live in `codecs::topics`.

pub use codecs::topics::*;
use codecs::EventKind;

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
    fn keys_are_the_consuming_states() -> Result<(), codecs::ValueError> {
        use codecs::{AccountFunded, Event, EventHeader, Quantity, StockReplenished};
        let sku = codecs::Sku::new("SYM0001")?;
        let funded = Event::AccountFunded(AccountFunded {
            header: EventHeader::default(),
            account: codecs::AccountId(7),
            amount: codecs::Money(1),
        });
        let stocked = Event::StockReplenished(StockReplenished {
            header: EventHeader::default(),
            sku,
            quantity: Quantity(1),
        });
        assert_eq!(key_of(&funded), account_key(codecs::AccountId(7)));
        assert_eq!(key_of(&stocked), sku_key(&sku));
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
