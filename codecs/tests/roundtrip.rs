//! Property tests: the JSON form, the owned value and the rkyv wire form agree
//! for arbitrary events (JSON ↔ value ↔ rkyv, in both directions).

use codecs::{
    decode, AccountFunded, AccountId, ClientOrderId, Encoder, Event, EventHeader, EventId,
    EventKind, EventSchema, Money, OrderAmended, OrderCancelled, OrderCreated, OrderId,
    PaymentCompleted, PaymentFailReason, PaymentFailed, PaymentRefunded, Quantity, Sku,
    StockRejectReason, StockRejected, StockReplenished, StockUpdated, Tag, TimeInForce,
    TimestampNs,
};
use proptest::prelude::*;

fn sku() -> impl Strategy<Value = Sku> {
    "[A-Z0-9._-]{1,16}".prop_map(|s| Sku::new(&s).expect("regex matches the sku alphabet"))
}

fn client_order_id() -> impl Strategy<Value = ClientOrderId> {
    "[!-~]{1,32}".prop_map(|s| ClientOrderId::new(&s).expect("regex matches the id alphabet"))
}

fn tag() -> impl Strategy<Value = Tag> {
    "[A-Za-z0-9._-]{0,16}".prop_map(|s| Tag::new(&s).expect("regex matches the tag alphabet"))
}

fn header(kind: EventKind) -> impl Strategy<Value = EventHeader> {
    let order_id = if kind.is_order_scoped() {
        (1..=u64::MAX).prop_map(OrderId).boxed()
    } else {
        Just(OrderId::NONE).boxed()
    };
    (1..=u128::MAX, order_id, any::<u128>(), any::<u64>()).prop_map(
        |(event_id, order_id, causation, created)| EventHeader {
            event_id: EventId(event_id),
            order_id,
            causation_id: EventId(causation),
            created_at_ns: TimestampNs(created),
        },
    )
}

fn account() -> impl Strategy<Value = AccountId> {
    any::<u64>().prop_map(AccountId)
}
fn money() -> impl Strategy<Value = Money> {
    any::<i64>().prop_map(Money)
}
fn quantity() -> impl Strategy<Value = Quantity> {
    any::<i64>().prop_map(Quantity)
}
fn time_in_force() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok),
        Just(TimeInForce::Day),
    ]
}
fn fail_reason() -> impl Strategy<Value = PaymentFailReason> {
    prop_oneof![
        Just(PaymentFailReason::InsufficientFunds),
        Just(PaymentFailReason::UnknownAccount),
        Just(PaymentFailReason::AmountOverflow),
        Just(PaymentFailReason::InvalidOrder),
    ]
}
fn reject_reason() -> impl Strategy<Value = StockRejectReason> {
    prop_oneof![
        Just(StockRejectReason::InsufficientStock),
        Just(StockRejectReason::UnknownSku),
        Just(StockRejectReason::InvalidQuantity),
    ]
}

/// Any encodable event of any kind, with extreme values included.
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            header(EventKind::OrderCreated),
            account(),
            sku(),
            quantity(),
            money(),
            client_order_id(),
            time_in_force(),
            tag()
        )
            .prop_map(
                |(header, account, sku, quantity, limit_price, coid, tif, tag)| {
                    Event::OrderCreated(OrderCreated {
                        header,
                        account,
                        sku,
                        quantity,
                        limit_price,
                        client_order_id: coid,
                        time_in_force: tif,
                        tag,
                    })
                }
            ),
        (
            header(EventKind::OrderAmended),
            account(),
            sku(),
            quantity(),
            money()
        )
            .prop_map(|(header, account, sku, quantity, limit_price)| {
                Event::OrderAmended(OrderAmended {
                    header,
                    account,
                    sku,
                    quantity,
                    limit_price,
                })
            }),
        (header(EventKind::OrderCancelled), account(), sku()).prop_map(|(header, account, sku)| {
            Event::OrderCancelled(OrderCancelled {
                header,
                account,
                sku,
            })
        }),
        (
            header(EventKind::PaymentCompleted),
            account(),
            sku(),
            quantity(),
            money()
        )
            .prop_map(|(header, account, sku, quantity, amount)| {
                Event::PaymentCompleted(PaymentCompleted {
                    header,
                    account,
                    sku,
                    quantity,
                    amount,
                })
            }),
        (
            header(EventKind::PaymentFailed),
            account(),
            sku(),
            quantity(),
            money(),
            fail_reason()
        )
            .prop_map(|(header, account, sku, quantity, amount, reason)| {
                Event::PaymentFailed(PaymentFailed {
                    header,
                    account,
                    sku,
                    quantity,
                    amount,
                    reason,
                })
            }),
        (
            header(EventKind::PaymentRefunded),
            account(),
            sku(),
            quantity(),
            money()
        )
            .prop_map(|(header, account, sku, quantity, amount)| {
                Event::PaymentRefunded(PaymentRefunded {
                    header,
                    account,
                    sku,
                    quantity,
                    amount,
                })
            }),
        (
            header(EventKind::StockUpdated),
            account(),
            sku(),
            quantity(),
            quantity(),
            money()
        )
            .prop_map(|(header, account, sku, quantity, remaining, amount)| {
                Event::StockUpdated(StockUpdated {
                    header,
                    account,
                    sku,
                    quantity,
                    remaining,
                    amount,
                })
            }),
        (
            header(EventKind::StockRejected),
            account(),
            sku(),
            quantity(),
            money(),
            reject_reason()
        )
            .prop_map(|(header, account, sku, quantity, amount, reason)| {
                Event::StockRejected(StockRejected {
                    header,
                    account,
                    sku,
                    quantity,
                    amount,
                    reason,
                })
            }),
        (header(EventKind::AccountFunded), account(), money()).prop_map(
            |(header, account, amount)| Event::AccountFunded(AccountFunded {
                header,
                account,
                amount
            })
        ),
        (header(EventKind::StockReplenished), sku(), quantity()).prop_map(
            |(header, sku, quantity)| Event::StockReplenished(StockReplenished {
                header,
                sku,
                quantity
            })
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn value_json_value(event in event()) {
        let json = event.to_json().expect("serializes");
        prop_assert_eq!(Event::from_json(json.as_bytes()).expect("parses"), event);
    }

    #[test]
    fn value_rkyv_value(event in event()) {
        let mut encoder = Encoder::new();
        let frame = encoder.encode(&event).expect("encodes");
        let decoded = decode(frame).expect("decodes");
        prop_assert_eq!(decoded.kind(), event.kind());
        prop_assert_eq!(decoded.schema(), EventSchema::latest(event.kind()));
        prop_assert_eq!(decoded.event_id(), event.header().event_id);
        prop_assert_eq!(decoded.order_id(), event.header().order_id);
        prop_assert_eq!(decoded.causation_id(), event.header().causation_id);
        prop_assert_eq!(decoded.created_at_ns(), event.header().created_at_ns);
        prop_assert_eq!(decoded.account(), event.account());
        prop_assert_eq!(decoded.sku(), event.sku());
        prop_assert_eq!(decoded.to_event(), event);
    }

    #[test]
    fn json_value_rkyv_value_json(event in event()) {
        // Start from text, as a traffic file or a dead-letter dump would.
        let json = event.to_json().expect("serializes");
        let parsed = Event::from_json(json.as_bytes()).expect("parses");
        let frame = codecs::encode_to_vec(&parsed).expect("encodes");
        let back = decode(&frame).expect("decodes").to_event();
        prop_assert_eq!(back.to_json().expect("serializes"), json);
    }

    #[test]
    fn value_avro_value(event in event()) {
        // Every event round-trips, unsigned ids above i64::MAX included (their
        // 64 bits ride in the long), framed as Confluent frames it.
        let schema = avro_schema(&event);
        let datum = codecs::avro::encode_datum(&schema, &event).expect("encodes");
        let framed = codecs::avro::frame(7, &datum);
        let (id, datum) = codecs::avro::unframe(&framed).expect("framed");
        prop_assert_eq!(id, 7);
        prop_assert_eq!(codecs::avro::decode_datum(&schema, datum).expect("decodes"), event);
    }

    #[test]
    fn rkyv_value_rkyv_is_byte_identical(event in event()) {
        let frame = codecs::encode_to_vec(&event).expect("encodes");
        let again = codecs::encode_to_vec(&decode(&frame).expect("decodes").to_event())
            .expect("encodes");
        prop_assert_eq!(again, frame);
    }
}

fn avro_schema(event: &Event) -> codecs::avro::ValueSchema {
    codecs::avro::latest_value_schema(codecs::topics::topic_of(event.kind()))
        .expect("every topic has an Avro schema")
}

/// Every u64 field at u64::MAX: the bits of an unsigned id above i64::MAX
/// must come back from Avro as the same u64, in every event kind.
#[test]
fn unsigned_fields_at_u64_max_round_trip_through_avro() {
    fn max_out(v: &mut serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            for (name, field) in m.iter_mut() {
                if matches!(name.as_str(), "order_id" | "account" | "created_at_ns") {
                    *field = serde_json::json!(u64::MAX);
                } else {
                    max_out(field);
                }
            }
        }
    }
    for event in codecs::testing::sample_events() {
        let mut json = serde_json::to_value(event).expect("serializes");
        max_out(&mut json);
        let event: Event = serde_json::from_value(json).expect("still an event");
        let schema = avro_schema(&event);
        let datum = codecs::avro::encode_datum(&schema, &event).expect("encodes");
        assert_eq!(
            codecs::avro::decode_datum(&schema, &datum).expect("decodes"),
            event,
            "{}",
            schema.subject()
        );
    }
}

#[test]
fn json_shape_is_stable() {
    let event = codecs::testing::sample_events()[5];
    let json = event.to_json().expect("serializes");
    assert_eq!(
        json,
        concat!(
            r#"{"type":"payment.completed","header":{"event_id":"5eed0000000000000000000000000006","#,
            r#""order_id":77000001,"causation_id":"00000000000000000000000000000003","#,
            r#""created_at_ns":1767225600000000006},"account":1001,"sku":"AAPL","quantity":10,"#,
            r#""amount":189500}"#
        )
    );
}
