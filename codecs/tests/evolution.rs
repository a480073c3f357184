//! Schema evolution: `order.created` v1 and v2 side by side. Version-1 bytes
//! (frozen below, as an old producer wrote them) still decode, and one piece
//! of consumer code reads both versions. The frames written before the rkyv
//! magic byte (magic 0, table ids 101/102) are frozen too and still read
//! through `decode_legacy`.

use codecs::testing::{legacy_frame, sample_events};
use codecs::{
    decode, decode_legacy, EncodeError, Encoder, Event, EventRef, EventSchema, Money, OrderCreated,
    OrderCreatedRef, Tag, TimeInForce,
};

/// Consumer code as Payment would write it: no version branches.
fn order_cost(frame: &[u8]) -> (Money, TimeInForce, String) {
    let EventRef::OrderCreated(order) = decode(frame).expect("valid frame") else {
        panic!("not an order.created");
    };
    let cost = order
        .limit_price()
        .checked_mul_quantity(order.quantity())
        .expect("sample cost fits");
    (cost, order.time_in_force(), order.tag().as_str().to_owned())
}

fn sample_order() -> OrderCreated {
    sample_events()
        .into_iter()
        .find_map(|e| match e {
            Event::OrderCreated(o) => Some(o),
            _ => None,
        })
        .expect("samples hold an order.created")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("golden is hex"))
        .collect()
}

/// `order.created` v1 exactly as the v1 encoder wrote it, in the legacy
/// framing (magic 0, table id 101). Never edit: if this stops decoding,
/// records already on topics stop decoding too.
const ORDER_CREATED_V1_LEGACY: &str = "
    0000000065
    0300000000000000000000000000ed5e 41ed960400000000
    00000000000000000000000000000000 0300faed51728618
    e903000000000000 4141504c000000000000000000000000
    0a00000000000000 064a000000000000
    636c69656e742d303030312d6f726465722d3030303034320000000000000000";

/// `order.created` v2 (Ioc, tag "algo-7") as written before the rkyv magic
/// byte (magic 0, table id 102). Never edit.
const ORDER_CREATED_V2_LEGACY: &str = "
    0000000066
    0300000000000000000000000000ed5e 41ed960400000000
    00000000000000000000000000000000 0300faed51728618
    e903000000000000 4141504c000000000000000000000000
    0a00000000000000 064a000000000000
    636c69656e742d303030312d6f726465722d3030303034320000000000000000
    01 616c676f2d3700000000000000000000";

/// `order.created` v1 in the rkyv framing (magic 0xF8, framing version 1,
/// kind 1, version 1). Never edit.
const ORDER_CREATED_V1_GOLDEN: &str = "
    f8010101
    0300000000000000000000000000ed5e 41ed960400000000
    00000000000000000000000000000000 0300faed51728618
    e903000000000000 4141504c000000000000000000000000
    0a00000000000000 064a000000000000
    636c69656e742d303030312d6f726465722d3030303034320000000000000000";

/// `order.created` v2 as written today (Ioc, tag "algo-7"). Never edit.
const ORDER_CREATED_V2_GOLDEN: &str = "
    f8010102
    0300000000000000000000000000ed5e 41ed960400000000
    00000000000000000000000000000000 0300faed51728618
    e903000000000000 4141504c000000000000000000000000
    0a00000000000000 064a000000000000
    636c69656e742d303030312d6f726465722d3030303034320000000000000000
    01 616c676f2d3700000000000000000000";

#[test]
fn frozen_v1_bytes_still_decode() {
    let mut expected = sample_order();
    expected.time_in_force = TimeInForce::Gtc;
    expected.tag = Tag::EMPTY;
    let frame = unhex(ORDER_CREATED_V1_GOLDEN);
    let event = decode(&frame).expect("v1 golden decodes");
    assert_eq!(event.schema(), EventSchema::OrderCreatedV1);
    assert_eq!(event.to_event(), Event::OrderCreated(expected));
    let legacy = unhex(ORDER_CREATED_V1_LEGACY);
    let event = decode_legacy(&legacy).expect("legacy v1 decodes");
    assert_eq!(event.schema(), EventSchema::OrderCreatedV1);
    assert_eq!(event.to_event(), Event::OrderCreated(expected));
    assert!(decode(&legacy).is_err(), "magic 0 is never an rkyv frame");
}

#[test]
fn legacy_frames_carry_the_same_archive_behind_the_old_header() {
    for (golden, legacy) in [
        (ORDER_CREATED_V1_GOLDEN, ORDER_CREATED_V1_LEGACY),
        (ORDER_CREATED_V2_GOLDEN, ORDER_CREATED_V2_LEGACY),
    ] {
        assert_eq!(legacy_frame(&unhex(golden)), Some(unhex(legacy)));
        assert_eq!(
            decode_legacy(&unhex(legacy)).expect("legacy").to_event(),
            decode(&unhex(golden)).expect("rkyv").to_event()
        );
    }
}

#[test]
fn today_encoder_writes_the_golden_bytes() {
    let mut encoder = Encoder::new();
    let order = sample_order();
    let v2 = encoder
        .encode(&Event::OrderCreated(order))
        .expect("encodes")
        .to_vec();
    assert_eq!(hex(&v2), hex(&unhex(ORDER_CREATED_V2_GOLDEN)));
    let mut v1_order = order;
    v1_order.time_in_force = TimeInForce::Gtc;
    v1_order.tag = Tag::EMPTY;
    let v1 = encoder
        .encode_as(&Event::OrderCreated(v1_order), EventSchema::OrderCreatedV1)
        .expect("a GTC untagged order fits v1");
    assert_eq!(hex(v1), hex(&unhex(ORDER_CREATED_V1_GOLDEN)));
}

#[test]
fn one_consumer_reads_both_versions() {
    let v1 = unhex(ORDER_CREATED_V1_GOLDEN);
    let v2 = unhex(ORDER_CREATED_V2_GOLDEN);
    assert_eq!(
        order_cost(&v1),
        (Money(189_500), TimeInForce::Gtc, String::new())
    );
    assert_eq!(
        order_cost(&v2),
        (Money(189_500), TimeInForce::Ioc, "algo-7".to_owned())
    );
    // Shared fields read the same through OrderCreatedRef whatever the version.
    let (a, b) = match (decode(&v1), decode(&v2)) {
        (Ok(EventRef::OrderCreated(a)), Ok(EventRef::OrderCreated(b))) => (a, b),
        other => panic!("unexpected {other:?}"),
    };
    assert!(matches!(a, OrderCreatedRef::V1(_)));
    assert!(matches!(b, OrderCreatedRef::V2(_)));
    assert_eq!(a.client_order_id_str(), b.client_order_id_str());
    assert_eq!(a.account(), b.account());
    assert_eq!(a.sku(), b.sku());
    assert_eq!(a.header().event_id(), b.header().event_id());
    assert!(
        EventSchema::OrderCreatedV2.payload_bytes() > EventSchema::OrderCreatedV1.payload_bytes()
    );
}

#[test]
fn old_version_refuses_what_it_cannot_carry() {
    let mut encoder = Encoder::new();
    let order = sample_order();
    assert_eq!(
        encoder
            .encode_as(&Event::OrderCreated(order), EventSchema::OrderCreatedV1)
            .err(),
        Some(EncodeError::NotRepresentable {
            schema: EventSchema::OrderCreatedV1,
            field: "time_in_force or tag",
        })
    );
    assert_eq!(
        encoder
            .encode_as(&Event::OrderCreated(order), EventSchema::PaymentCompletedV1)
            .err(),
        Some(EncodeError::SchemaKindMismatch {
            schema: EventSchema::PaymentCompletedV1,
            kind: codecs::EventKind::OrderCreated,
        })
    );
}

#[test]
fn encoder_validates_headers() {
    let mut encoder = Encoder::new();
    let mut order = sample_order();
    order.header.event_id = codecs::EventId::NONE;
    assert!(matches!(
        encoder.encode(&Event::OrderCreated(order)),
        Err(EncodeError::MissingEventId { .. })
    ));
    let mut order = sample_order();
    order.header.order_id = codecs::OrderId::NONE;
    assert!(matches!(
        encoder.encode(&Event::OrderCreated(order)),
        Err(EncodeError::MissingOrderId { .. })
    ));
    let Event::AccountFunded(mut funded) = sample_events()[0] else {
        panic!("sample 0 is account.funded");
    };
    funded.header.order_id = codecs::OrderId(5);
    assert!(matches!(
        encoder.encode(&Event::AccountFunded(funded)),
        Err(EncodeError::UnexpectedOrderId { .. })
    ));
}
