//! Deterministic identifiers: the id of every event a stage emits, and the id
//! of an order, as pure functions of what caused them.
//!
//! Owns: `derived_event_id` (output event id = f(input event id, output kind))
//! and `order_id_for` (order id = f(account, client order id)), and the small
//! stable hash behind both.
//! Must never: use randomness, time, addresses or a hasher whose output can
//! change between builds or runs (std's `RandomState`, `DefaultHasher`): these
//! ids are part of the wire contract. A replay must produce byte-identical
//! events so downstream stages and the audit can deduplicate them, and a
//! client retrying a create must get the same order. Changing the function
//! changes ids across a deploy; treat it like a schema change.
//!
//! Lives on: any core; no state.

use crate::{AccountId, ClientOrderId, EventId, EventKind, OrderId};

/// Domain-separation seeds, so an order id and an event id built from the
/// same words never coincide by construction.
const EVENT_ID_HIGH_SEED: u64 = 0x7472_6164_6566_6c77; // "tradeflw"
const EVENT_ID_LOW_SEED: u64 = 0x6576_656e_7449_6430; // "eventId0"
const ORDER_ID_SEED: u64 = 0x6f72_6465_7249_6430; // "orderId0"

/// SplitMix64's finalizer: a bijection on u64 with full avalanche.
///
/// Wrapping multiplication is the point of a hash; nothing here is money.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable, seeded, word-at-a-time hash. Not cryptographic: ids only need
/// to be well spread and reproducible, and inputs come from our own events.
struct StableHash(u64);

impl StableHash {
    const fn new(seed: u64) -> Self {
        StableHash(mix64(seed))
    }

    fn word(&mut self, word: u64) {
        // The golden-ratio increment keeps a zero word from leaving the state
        // unchanged.
        self.0 = mix64(self.0 ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// The id of the event of `kind` that a stage emits because of event `cause`.
///
/// A replayed input yields the same output id, so a duplicate delivered under
/// at-least-once is recognisably the same event. Never `EventId::NONE`.
pub fn derived_event_id(cause: EventId, kind: EventKind) -> EventId {
    let high_word = (cause.0 >> 64) as u64;
    let low_word = cause.0 as u64;
    let hash = |seed| {
        let mut h = StableHash::new(seed);
        h.word(high_word);
        h.word(low_word);
        h.word(u64::from(kind.code()));
        h.finish()
    };
    let id = (u128::from(hash(EVENT_ID_HIGH_SEED)) << 64) | u128::from(hash(EVENT_ID_LOW_SEED));
    // 2^-128 odds, but NONE means "no event" and must never name one.
    EventId(if id == 0 { 1 } else { id })
}

/// The order id of the order `account` submits under `client_order_id`.
///
/// Submitting the same client order id twice names the same order, which is
/// what makes creates idempotent: Payment and the Order stage see the second
/// `order.created` as a duplicate of the first. Different accounts may reuse
/// client order ids freely. Never `OrderId::NONE`.
///
/// Two different orders colliding on 64 bits is possible in principle (about
/// even odds after 2^32 orders); the stages detect it (same id, different
/// content) and dead-letter the second rather than mixing the two.
pub fn order_id_for(account: AccountId, client_order_id: &ClientOrderId) -> OrderId {
    let mut h = StableHash::new(ORDER_ID_SEED);
    h.word(account.0);
    for chunk in client_order_id.as_padded_bytes().chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h.word(u64::from_le_bytes(word));
    }
    let id = h.finish();
    OrderId(if id == 0 { 1 } else { id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_distinct_and_never_none() {
        let cause = EventId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let paid = derived_event_id(cause, EventKind::PaymentCompleted);
        assert_eq!(paid, derived_event_id(cause, EventKind::PaymentCompleted));
        assert_ne!(paid, derived_event_id(cause, EventKind::PaymentFailed));
        assert_ne!(
            paid,
            derived_event_id(EventId(cause.0 + 1), EventKind::PaymentCompleted)
        );
        assert!(!derived_event_id(EventId::NONE, EventKind::PaymentFailed).is_none());
        // Pinned: the function is part of the wire contract (see the module doc).
        assert_eq!(
            derived_event_id(EventId(1), EventKind::PaymentCompleted).to_string(),
            "ceec53a2d463438c1e175d90b9a9734f"
        );
        assert_eq!(
            order_id_for(
                AccountId(1),
                &ClientOrderId::new("a").unwrap_or_else(|e| panic!("{e}"))
            )
            .0,
            16_083_622_622_777_279_315
        );
    }

    #[test]
    fn same_client_order_id_same_order_other_account_other_order() -> Result<(), crate::ValueError>
    {
        let cl = ClientOrderId::new("cl-1")?;
        let a = order_id_for(AccountId(7), &cl);
        assert_eq!(a, order_id_for(AccountId(7), &ClientOrderId::new("cl-1")?));
        assert_ne!(a, order_id_for(AccountId(8), &cl));
        assert_ne!(a, order_id_for(AccountId(7), &ClientOrderId::new("cl-2")?));
        assert!(!a.is_none());
        Ok(())
    }

    #[test]
    fn ten_thousand_orders_do_not_collide() -> Result<(), crate::ValueError> {
        let mut seen = std::collections::HashSet::new();
        for account in 0..100u64 {
            for n in 0..100u32 {
                let cl = ClientOrderId::new(&format!("c{n}"))?;
                assert!(seen.insert(order_id_for(AccountId(account), &cl)));
            }
        }
        Ok(())
    }
}
