//! tradeflow's events and their two forms: the framed rkyv wire form read in
//! place on the hot path, and the JSON form for the edges.
//!
//! Bytes in, events out. `codecs` knows nothing about Kafka, glommio or
//! rdkafka; it runs on whichever core calls it and keeps no shared state (an
//! [`Encoder`] belongs to one shard).
//!
//! # Wire form
//! Every rkyv record value is a frame of tradeflow's own:
//!
//! | bytes | content |
//! |---|---|
//! | 0 | magic byte `0xF8` ([`RKYV_MAGIC`]; never Confluent's `0`) |
//! | 1 | framing version `1` ([`RKYV_FRAMING_VERSION`]) |
//! | 2 | kind code ([`EventKind::code`]) |
//! | 3 | schema version of the kind ([`EventSchema::version`]) |
//! | 4.. | rkyv archive of the event, exactly [`EventSchema::payload_bytes`] long |
//!
//! Bytes 2–3 are the type tag of the rkyv layout ([`EventSchema::rkyv_tag`]),
//! not a schema-registry id: registry ids appear only in Confluent frames
//! (magic `0`, [`avro`]). Frames written before this framing (magic `0`, a
//! 4-byte id of a fixed table) are read by [`decode_legacy`], never written.
//!
//! The archive format is pinned to little-endian, unaligned primitives (every
//! archived type has alignment 1), so a payload at any address, including
//! offset 4 inside an unaligned Kafka buffer, is validated (bytecheck) and
//! read where it lies.
//!
//! ```
//! use codecs::{decode, Encoder, Event, EventHeader, EventId, OrderId, AccountId,
//!              Sku, Quantity, PaymentCompleted, Money, TimestampNs, EventRef};
//!
//! let event = Event::PaymentCompleted(PaymentCompleted {
//!     header: EventHeader {
//!         event_id: EventId(7),
//!         order_id: OrderId(42),
//!         causation_id: EventId(6),
//!         created_at_ns: TimestampNs(1_700_000_000_000_000_000),
//!     },
//!     account: AccountId(1),
//!     sku: Sku::new("AAPL")?,
//!     quantity: Quantity(10),
//!     amount: Money(1_500_00),
//! });
//! let mut encoder = Encoder::new();
//! let frame = encoder.encode(&event)?;
//! let decoded = decode(frame)?;
//! assert_eq!(decoded.order_id(), OrderId(42));
//! if let EventRef::PaymentCompleted(paid) = decoded {
//!     assert_eq!(paid.amount(), Money(1_500_00));
//! }
//! assert_eq!(decoded.to_event(), event);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Evolution
//! A type tag names one (kind, version). New versions get new tags; older
//! ones stay readable forever. `order.created` has v1 and v2 (v2 adds
//! `time_in_force` and `tag`); [`OrderCreatedRef`] reads both through the same
//! accessors, so consumers need no version branches.

pub mod avro;
mod decode;
mod encode;
mod events;
#[doc(hidden)]
pub mod ids;
mod schema;
pub mod testing;
pub mod topics;
mod types;

pub use decode::{
    decode, decode_legacy, split_frame, split_legacy_frame, DecodeError, EventRef, OrderCreatedRef,
};
pub use encode::{encode_to_vec, EncodeError, Encoder};
pub use events::{
    AccountFunded, ArchivedAccountFunded, ArchivedEventHeader, ArchivedOrderAmended,
    ArchivedOrderCancelled, ArchivedOrderCreated, ArchivedOrderCreatedV1, ArchivedPaymentCompleted,
    ArchivedPaymentFailReason, ArchivedPaymentFailed, ArchivedPaymentRefunded,
    ArchivedStockRejectReason, ArchivedStockRejected, ArchivedStockReplenished,
    ArchivedStockUpdated, ArchivedTimeInForce, Event, EventHeader, EventKind, JsonError,
    OrderAmended, OrderCancelled, OrderCreated, OrderCreatedV1, PaymentCompleted,
    PaymentFailReason, PaymentFailed, PaymentRefunded, StockRejectReason, StockRejected,
    StockReplenished, StockUpdated, TimeInForce,
};
pub use schema::{
    largest_frame_bytes, write_frame_header, EventSchema, CONFLUENT_MAGIC_BYTE, FRAME_BYTES_MAX,
    FRAME_HEADER_BYTES, LEGACY_FRAME_HEADER_BYTES, LEGACY_MAGIC_BYTE, RKYV_FRAMING_VERSION,
    RKYV_MAGIC,
};
pub use types::{
    AccountId, ArchivedAccountId, ArchivedClientOrderId, ArchivedEventId, ArchivedMoney,
    ArchivedOrderId, ArchivedQuantity, ArchivedSku, ArchivedTag, ArchivedTimestampNs,
    ClientOrderId, EventId, Money, MoneyOverflow, OrderId, Quantity, Sku, Tag, TimestampNs,
    ToNative, ValueError,
};
