//! Golden vectors for the Kafka Streams peer (`benches/kstreams/`), which
//! decodes and encodes the framed rkyv layout in Java.
//!
//! This test writes, from the real codecs, one rkyv frame (magic 0xF8,
//! framing version 1, kind code, schema version, archive) of every schema with the
//! event's JSON form beside it, and derived event ids for a few causes, and
//! compares the text with the copy committed under
//! `benches/kstreams/src/test/resources/golden-frames.txt`. The Java test
//! (`mvn test` in `benches/kstreams`) reads that copy, decodes every frame,
//! checks every field against the JSON, re-encodes and compares the bytes, and
//! recomputes every id. So a change of the wire layout or of the id function
//! fails here until the copy is regenerated, and then fails in Java until the
//! Java codec follows.
//!
//! Regenerate with `TRADEFLOW_BLESS=1 cargo test -p codecs --test java_golden`.

use std::fmt::Write as _;
use std::path::PathBuf;

use codecs::ids::derived_event_id;
use codecs::testing::sample_events;
use codecs::{
    AccountFunded, AccountId, Encoder, Event, EventHeader, EventId, EventKind, EventSchema, Money,
    OrderId, PaymentFailReason, PaymentFailed, StockRejectReason, StockRejected, TimestampNs,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn golden_text() -> String {
    let mut events = sample_events();
    // Every enum value once more, and extreme numbers, so no byte of the
    // layout is only ever seen as zero.
    let base = match events.iter().find_map(|e| match e {
        Event::PaymentFailed(f) => Some(*f),
        _ => None,
    }) {
        Some(f) => f,
        None => panic!("sample_events has a payment.failed"),
    };
    for (i, reason) in [
        PaymentFailReason::UnknownAccount,
        PaymentFailReason::AmountOverflow,
        PaymentFailReason::InvalidOrder,
    ]
    .into_iter()
    .enumerate()
    {
        events.push(Event::PaymentFailed(PaymentFailed {
            header: EventHeader {
                event_id: EventId(u128::MAX - i as u128),
                ..base.header
            },
            reason,
            amount: Money(i64::MIN + i as i64),
            ..base
        }));
    }
    let rejected = match events.iter().find_map(|e| match e {
        Event::StockRejected(r) => Some(*r),
        _ => None,
    }) {
        Some(r) => r,
        None => panic!("sample_events has a stock.rejected"),
    };
    for reason in [
        StockRejectReason::UnknownSku,
        StockRejectReason::InvalidQuantity,
    ] {
        events.push(Event::StockRejected(StockRejected {
            reason,
            quantity: codecs::Quantity(-1),
            ..rejected
        }));
    }
    events.push(Event::AccountFunded(AccountFunded {
        header: EventHeader {
            event_id: EventId(0x8000_0000_0000_0000_0000_0000_0000_0001),
            order_id: OrderId::NONE,
            causation_id: EventId::NONE,
            created_at_ns: TimestampNs(u64::MAX),
        },
        account: AccountId(u64::MAX),
        amount: Money(i64::MAX),
    }));

    let mut out = String::from(
        "# Written by codecs/tests/java_golden.rs from the real codecs; do not edit.\n\
         # frame <kind code>.<schema version> <frame hex> <event JSON>\n\
         # id <cause hex> <kind code> <derived event id hex>\n",
    );
    let mut encoder = Encoder::new();
    for event in &events {
        let mut schemas = vec![EventSchema::latest(event.kind())];
        if let Event::OrderCreated(order) = event {
            let mut v1 = *order;
            v1.time_in_force = codecs::TimeInForce::Gtc;
            v1.tag = codecs::Tag::EMPTY;
            let v1 = Event::OrderCreated(v1);
            let frame = match encoder.encode_as(&v1, EventSchema::OrderCreatedV1) {
                Ok(f) => f.to_vec(),
                Err(e) => panic!("v1 encode: {e}"),
            };
            let json = match v1.to_json() {
                Ok(j) => j,
                Err(e) => panic!("json: {e}"),
            };
            let _ = writeln!(out, "frame 1.1 {} {json}", hex(&frame));
            schemas.clear();
            schemas.push(EventSchema::OrderCreatedV2);
        }
        for schema in schemas {
            let frame = match encoder.encode_as(event, schema) {
                Ok(f) => f.to_vec(),
                Err(e) => panic!("encode {event:?}: {e}"),
            };
            let json = match event.to_json() {
                Ok(j) => j,
                Err(e) => panic!("json: {e}"),
            };
            let [kind, version] = schema.rkyv_tag();
            let _ = writeln!(out, "frame {kind}.{version} {} {json}", hex(&frame));
        }
    }
    let causes = [
        EventId(1),
        EventId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        EventId(u128::MAX),
        EventId(0x5eed_0000_0000_0001_0000_0000_0000_002a),
    ];
    for cause in causes {
        for kind in EventKind::ALL {
            let _ = writeln!(
                out,
                "id {cause} {} {}",
                kind.code(),
                derived_event_id(cause, kind)
            );
        }
    }
    out
}

#[test]
fn java_golden_vectors_match_the_codecs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/kstreams/src/test/resources/golden-frames.txt");
    let text = golden_text();
    if std::env::var_os("TRADEFLOW_BLESS").is_some() {
        if let Err(e) = std::fs::write(&path, &text) {
            panic!("writing {}: {e}", path.display());
        }
        return;
    }
    let committed = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => panic!(
            "reading {}: {e} (regenerate with TRADEFLOW_BLESS=1)",
            path.display()
        ),
    };
    assert!(
        committed == text,
        "{} is stale: the wire layout or the id function changed. Regenerate with \
         TRADEFLOW_BLESS=1 cargo test -p codecs --test java_golden, then make \
         benches/kstreams' codec follow (mvn -f benches/kstreams test).",
        path.display()
    );
}
