//! Avro bytes written by another implementation: fastavro (Python, the
//! library under confluent-kafka's AvroSerializer) encoded these datums from
//! the checked-in `.avsc` files. tradeflow must read them as the same events
//! and write the same bytes (Avro binary encoding is deterministic).
//!
//! Regenerate with `fastavro.schemaless_writer` on the same records if a
//! schema is ever versioned; never edit the hex by hand.

use codecs::avro::{latest_value_schema, PreparedSchema};
use codecs::{
    topics, AccountId, ClientOrderId, Event, EventHeader, EventId, Money, OrderCancelled,
    OrderCreated, OrderId, PaymentFailReason, PaymentFailed, Quantity, Sku, Tag, TimeInForce,
    TimestampNs,
};

fn header() -> EventHeader {
    EventHeader {
        event_id: EventId(0x5eed_0000_0000_0000_0000_0000_0000_002a),
        order_id: OrderId(77_000_001),
        causation_id: EventId::NONE,
        created_at_ns: TimestampNs(1_767_225_600_000_000_042),
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn golden() -> Vec<(&'static str, Event, Vec<u8>)> {
    let sku = Sku::new("AAPL").expect("sku");
    let h = "40356565643030303030303030303030303030303030303030303030303030326182b5b749403030303030303030303030303030303030303030303030303030303030303030d480d0dfbd94b98631d20f084141504c";
    vec![
        (
            topics::ORDER_CREATED,
            Event::OrderCreated(OrderCreated {
                header: header(),
                account: AccountId(1001),
                sku,
                quantity: Quantity(10),
                limit_price: Money(15_000),
                client_order_id: ClientOrderId::new("c-1").expect("id"),
                time_in_force: TimeInForce::Ioc,
                tag: Tag::new("desk-7").expect("tag"),
            }),
            hex(&format!("{h}14b0ea0106632d31020c6465736b2d37")),
        ),
        (
            // The union's second branch: index 1, zig-zag encoded as 02.
            topics::ORDER_UPDATED,
            Event::OrderCancelled(OrderCancelled {
                header: header(),
                account: AccountId(1001),
                sku,
            }),
            hex(&format!("02{h}")),
        ),
        (
            topics::PAYMENT_FAILED,
            Event::PaymentFailed(PaymentFailed {
                header: header(),
                account: AccountId(1001),
                sku,
                quantity: Quantity(10),
                amount: Money(-5),
                reason: PaymentFailReason::UnknownAccount,
            }),
            hex(&format!("{h}140902")),
        ),
    ]
}

#[test]
fn fastavro_bytes_read_as_the_same_events_and_are_written_identically() {
    for (topic, event, bytes) in golden() {
        let schema =
            PreparedSchema::new(latest_value_schema(topic).expect("schema")).expect("parses");
        assert_eq!(schema.decode(&bytes).expect("decodes"), event, "{topic}");
        assert_eq!(schema.encode(&event).expect("encodes"), bytes, "{topic}");
    }
}
