//! Helpers shared by this crate's tests, its fuzz target and the benches.
//!
//! Owns the property every decoder input must satisfy ([`exercise_decode`]
//! for frames, [`exercise_json`] for JSON) so that `cargo fuzz` and the
//! stable proptest runs check exactly the same thing, and a fixed set of sample events. Not part of the stable API; must
//! never be called on the data path (it panics on a broken property, which is
//! what a fuzzer needs).

use crate::decode::{decode, decode_legacy, EventRef};
use crate::encode::{EncodeError, Encoder};
use crate::events::{
    AccountFunded, Event, EventHeader, OrderAmended, OrderCancelled, OrderCreated,
    PaymentCompleted, PaymentFailReason, PaymentFailed, PaymentRefunded, StockRejectReason,
    StockRejected, StockReplenished, StockUpdated, TimeInForce,
};
use crate::schema::{EventSchema, FRAME_HEADER_BYTES, LEGACY_MAGIC_BYTE};
use crate::types::{
    AccountId, ClientOrderId, EventId, Money, OrderId, Quantity, Sku, Tag, TimestampNs,
};

/// Feeds arbitrary bytes to `decode` and `decode_legacy`; whatever either
/// accepts must read fully, re-encode to the very same bytes (in its
/// framing), and survive a JSON round trip; no bytes are both. Panics if
/// not. Returns whether the bytes decoded.
pub fn exercise_decode(bytes: &[u8]) -> bool {
    if let Ok(event) = decode_legacy(bytes) {
        assert!(
            decode(bytes).is_err(),
            "a frame is rkyv or legacy, not both"
        );
        let owned = event.to_event();
        let frame = match Encoder::new().encode_as(&owned, event.schema()) {
            Ok(frame) => frame.to_vec(),
            Err(
                EncodeError::MissingEventId { .. }
                | EncodeError::MissingOrderId { .. }
                | EncodeError::UnexpectedOrderId { .. },
            ) => return true,
            Err(other) => panic!("decoded legacy event does not re-encode: {other}"),
        };
        assert_eq!(
            legacy_frame(&frame).as_deref(),
            Some(bytes),
            "legacy decode→encode changed the bytes"
        );
        return true;
    }
    let Ok(event) = decode(bytes) else {
        return false;
    };
    let _ = read_every_field(event);
    let owned = event.to_event();
    let mut encoder = Encoder::new();
    match encoder.encode_as(&owned, event.schema()) {
        // The archive has no padding and every byte is validated, so a frame
        // that decodes has exactly one encoding.
        Ok(again) => assert_eq!(again, bytes, "decode→encode changed the bytes"),
        // The encoder also checks ids the decoder leaves to consumers.
        Err(
            EncodeError::MissingEventId { .. }
            | EncodeError::MissingOrderId { .. }
            | EncodeError::UnexpectedOrderId { .. },
        ) => {}
        Err(other) => panic!("decoded event does not re-encode: {other}"),
    }
    let json = owned.to_json().expect("an event always serializes");
    let back = Event::from_json(json.as_bytes()).expect("an event's own JSON parses");
    assert_eq!(back, owned, "JSON round trip changed the event");
    true
}

/// The legacy form (magic `0`, the pre-upgrade table id, the same archive)
/// of an rkyv frame, as tradeflow wrote it before the rkyv magic byte: for
/// tests of the upgrade path, since nothing writes it any more. `None` if
/// `frame` is no valid rkyv frame.
pub fn legacy_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let schema: EventSchema = decode(frame).ok()?.schema();
    let mut legacy = Vec::with_capacity(frame.len() + 1);
    legacy.push(LEGACY_MAGIC_BYTE);
    legacy.extend_from_slice(&schema.legacy_id().to_be_bytes());
    legacy.extend_from_slice(frame.get(FRAME_HEADER_BYTES..)?);
    Some(legacy)
}

/// Feeds arbitrary bytes to `Event::from_json` (REST bodies, traffic
/// files); whatever parses must serialize, parse back equal, and, when the
/// encoder accepts its header, survive JSON → frame → JSON unchanged. Panics
/// if not. Returns whether the bytes parsed.
pub fn exercise_json(bytes: &[u8]) -> bool {
    let Ok(event) = Event::from_json(bytes) else {
        return false;
    };
    let json = event.to_json().expect("a parsed event serializes");
    let again = Event::from_json(json.as_bytes()).expect("own JSON parses");
    assert_eq!(again, event, "JSON round trip changed the event");
    if let Ok(frame) = crate::encode::encode_to_vec(&event) {
        assert!(exercise_decode(&frame), "an encoded event must decode");
        let back = decode(&frame).expect("just decoded").to_event();
        assert_eq!(back, event, "JSON → frame → event changed the event");
        let legacy = legacy_frame(&frame).expect("a valid frame has a legacy form");
        assert!(exercise_decode(&legacy), "its legacy form must decode");
        let back = decode_legacy(&legacy).expect("just decoded").to_event();
        assert_eq!(back, event, "legacy frame → event changed the event");
    }
    true
}

/// Reads every field of a decoded event in place and folds them into a
/// checksum, so neither the compiler nor a test can skip a read.
pub fn read_every_field(event: EventRef<'_>) -> u64 {
    let h = event.header();
    let mut sum = (h.event_id().0 as u64)
        ^ h.order_id().0
        ^ (h.causation_id().0 as u64).rotate_left(7)
        ^ h.created_at_ns().0.rotate_left(13)
        ^ event.kind().code() as u64;
    let mix = |sum: &mut u64, v: u64| *sum = sum.rotate_left(5) ^ v;
    let sku = |sku: Sku| sku.as_padded_bytes()[0] as u64 + sku.as_str().len() as u64;
    match event {
        EventRef::OrderCreated(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.limit_price().0 as u64);
            mix(&mut sum, e.client_order_id_str().len() as u64);
            mix(&mut sum, e.time_in_force() as u64);
            mix(&mut sum, e.tag().as_str().len() as u64);
        }
        EventRef::OrderAmended(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.limit_price().0 as u64);
        }
        EventRef::OrderCancelled(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
        }
        EventRef::PaymentCompleted(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.amount().0 as u64);
        }
        EventRef::PaymentFailed(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.amount().0 as u64);
            mix(&mut sum, e.reason() as u64);
        }
        EventRef::PaymentRefunded(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.amount().0 as u64);
        }
        EventRef::StockUpdated(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.remaining().0 as u64);
            mix(&mut sum, e.amount().0 as u64);
        }
        EventRef::StockRejected(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
            mix(&mut sum, e.amount().0 as u64);
            mix(&mut sum, e.reason() as u64);
        }
        EventRef::AccountFunded(e) => {
            mix(&mut sum, e.account().0);
            mix(&mut sum, e.amount().0 as u64);
        }
        EventRef::StockReplenished(e) => {
            mix(&mut sum, sku(e.sku()));
            mix(&mut sum, e.quantity().0 as u64);
        }
    }
    sum
}

/// The same checksum over an owned event, for comparing decoders that produce
/// owned values (serde_json, bincode) with the in-place reader.
pub fn read_every_owned_field(event: &Event) -> u64 {
    // Encoding then decoding here would make the comparison circular; read the
    // owned fields directly, mirroring `read_every_field`.
    let h = event.header();
    let mut sum = (h.event_id.0 as u64)
        ^ h.order_id.0
        ^ (h.causation_id.0 as u64).rotate_left(7)
        ^ h.created_at_ns.0.rotate_left(13)
        ^ event.kind().code() as u64;
    let mix = |sum: &mut u64, v: u64| *sum = sum.rotate_left(5) ^ v;
    let sku = |sku: Sku| sku.as_padded_bytes()[0] as u64 + sku.as_str().len() as u64;
    match event {
        Event::OrderCreated(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.limit_price.0 as u64);
            mix(&mut sum, e.client_order_id.as_str().len() as u64);
            mix(&mut sum, e.time_in_force as u64);
            mix(&mut sum, e.tag.as_str().len() as u64);
        }
        Event::OrderAmended(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.limit_price.0 as u64);
        }
        Event::OrderCancelled(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
        }
        Event::PaymentCompleted(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.amount.0 as u64);
        }
        Event::PaymentFailed(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.amount.0 as u64);
            mix(&mut sum, e.reason as u64);
        }
        Event::PaymentRefunded(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.amount.0 as u64);
        }
        Event::StockUpdated(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.remaining.0 as u64);
            mix(&mut sum, e.amount.0 as u64);
        }
        Event::StockRejected(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
            mix(&mut sum, e.amount.0 as u64);
            mix(&mut sum, e.reason as u64);
        }
        Event::AccountFunded(e) => {
            mix(&mut sum, e.account.0);
            mix(&mut sum, e.amount.0 as u64);
        }
        Event::StockReplenished(e) => {
            mix(&mut sum, sku(e.sku));
            mix(&mut sum, e.quantity.0 as u64);
        }
    }
    sum
}

/// One event of every kind, as one order's flow plus funding and stocking.
pub fn sample_events() -> Vec<Event> {
    let sku = Sku::new("AAPL").expect("valid sku");
    let account = AccountId(1_001);
    let order_id = OrderId(77_000_001);
    let header = |id: u128, order_id: OrderId, cause: u128| EventHeader {
        event_id: EventId(0x5eed_0000_0000_0000_0000_0000_0000_0000 | id),
        order_id,
        causation_id: EventId(cause),
        created_at_ns: TimestampNs(1_767_225_600_000_000_000 + id as u64),
    };
    vec![
        Event::AccountFunded(AccountFunded {
            header: header(1, OrderId::NONE, 0),
            account,
            amount: Money(10_000_000),
        }),
        Event::StockReplenished(StockReplenished {
            header: header(2, OrderId::NONE, 0),
            sku,
            quantity: Quantity(500),
        }),
        Event::OrderCreated(OrderCreated {
            header: header(3, order_id, 0),
            account,
            sku,
            quantity: Quantity(10),
            limit_price: Money(18_950),
            client_order_id: ClientOrderId::new("client-0001-order-000042").expect("valid id"),
            time_in_force: TimeInForce::Ioc,
            tag: Tag::new("algo-7").expect("valid tag"),
        }),
        Event::OrderAmended(OrderAmended {
            header: header(4, order_id, 3),
            account,
            sku,
            quantity: Quantity(12),
            limit_price: Money(19_000),
        }),
        Event::OrderCancelled(OrderCancelled {
            header: header(5, order_id, 4),
            account,
            sku,
        }),
        Event::PaymentCompleted(PaymentCompleted {
            header: header(6, order_id, 3),
            account,
            sku,
            quantity: Quantity(10),
            amount: Money(189_500),
        }),
        Event::PaymentFailed(PaymentFailed {
            header: header(7, order_id, 3),
            account,
            sku,
            quantity: Quantity(10),
            amount: Money(189_500),
            reason: PaymentFailReason::InsufficientFunds,
        }),
        Event::StockUpdated(StockUpdated {
            header: header(8, order_id, 6),
            account,
            sku,
            quantity: Quantity(10),
            remaining: Quantity(490),
            amount: Money(189_500),
        }),
        Event::StockRejected(StockRejected {
            header: header(9, order_id, 6),
            account,
            sku,
            quantity: Quantity(10),
            amount: Money(189_500),
            reason: StockRejectReason::InsufficientStock,
        }),
        Event::PaymentRefunded(PaymentRefunded {
            header: header(10, order_id, 9),
            account,
            sku,
            quantity: Quantity(10),
            amount: Money(189_500),
        }),
    ]
}
