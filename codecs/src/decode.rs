//! Decoding untrusted frames into validated, borrowed, archived events.
//!
//! Owns `decode` (rkyv frames), `decode_legacy` (the pre-upgrade frames:
//! magic `0` and a table id), the `EventRef` view they return and
//! `DecodeError`. Must never panic on any input, never allocate, and never
//! copy the payload: the frame is checked (length, magic byte, framing
//! version, type tag, exact payload size) and the archive validated in place
//! by bytecheck, then read where it lies. Never decides whether a record with
//! magic `0` is Confluent's or legacy: that is the readers' choice
//! (`engine::wire`, docs/SCHEMAS.md). Every way
//! bytes can be wrong has its own error variant, because the dead-letter path
//! records the reason and operators act on it.

use rkyv::api::low::LowValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Failure;
use rkyv::Portable;

use crate::events::{
    ArchivedAccountFunded, ArchivedEventHeader, ArchivedOrderAmended, ArchivedOrderCancelled,
    ArchivedOrderCreated, ArchivedOrderCreatedV1, ArchivedPaymentCompleted, ArchivedPaymentFailed,
    ArchivedPaymentRefunded, ArchivedStockRejected, ArchivedStockReplenished, ArchivedStockUpdated,
    Event, EventKind, OrderCreated, TimeInForce,
};
use crate::schema::{
    EventSchema, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, LEGACY_FRAME_HEADER_BYTES, LEGACY_MAGIC_BYTE,
    RKYV_FRAMING_VERSION, RKYV_MAGIC,
};
use crate::types::{
    AccountId, ClientOrderId, EventId, Money, OrderId, Quantity, Sku, Tag, TimestampNs, ToNative,
};

/// Why a frame is not a valid event. All variants mean a poison record: the
/// same bytes fail the same way every time, so never retry; send the record to
/// the dead-letter topic with [`DecodeError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no value bytes at all (e.g. a tombstone).
    #[error("empty frame")]
    Empty,
    /// Longer than any event can be; rejected before any parsing.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversize {
        /// Frame length in bytes.
        len: usize,
        /// `FRAME_BYTES_MAX`.
        max: usize,
    },
    /// Shorter than the frame header (4 bytes; 5 for a legacy frame).
    #[error("frame of {len} bytes is shorter than the {header}-byte header")]
    TruncatedHeader {
        /// Frame length in bytes.
        len: usize,
        /// The header length of the framing read.
        header: usize,
    },
    /// The first byte is neither the rkyv magic byte nor, where the reader
    /// takes them, Confluent's `0`.
    #[error(
        "magic byte is {byte:#04x}: neither a tradeflow rkyv frame (0xf8) \
         nor Confluent's wire format (0x00)"
    )]
    WrongMagic {
        /// The byte found.
        byte: u8,
    },
    /// An rkyv frame whose framing version this build does not know (a
    /// newer producer).
    #[error("rkyv framing version {version} is unknown (this build reads version 1)")]
    UnknownFraming {
        /// The version found.
        version: u8,
    },
    /// The (kind code, schema version) type tag is not one this build can
    /// read (a newer producer).
    #[error("unknown rkyv type tag: kind code {kind}, schema version {version}")]
    UnknownType {
        /// The kind code found.
        kind: u8,
        /// The schema version found.
        version: u8,
    },
    /// A legacy frame (magic `0`) whose 4-byte id is not in the pre-upgrade
    /// table.
    #[error("legacy frame: unknown table id {id}")]
    UnknownLegacyId {
        /// The id found.
        id: u32,
    },
    /// The payload is shorter than its schema's fixed size.
    #[error("{schema} payload is {len} bytes, expected {expected}")]
    TruncatedPayload {
        /// Schema named by the frame.
        schema: EventSchema,
        /// Payload length found.
        len: usize,
        /// The schema's payload size.
        expected: usize,
    },
    /// The payload is longer than its schema's fixed size.
    #[error("{schema} payload is {len} bytes, expected {expected}")]
    TrailingBytes {
        /// Schema named by the frame.
        schema: EventSchema,
        /// Payload length found.
        len: usize,
        /// The schema's payload size.
        expected: usize,
    },
    /// The payload has the right size but bytecheck rejected it: an invalid
    /// enum tag, or an ill-formed SKU, client order id or tag.
    #[error("{schema} payload failed validation")]
    CorruptArchive {
        /// Schema named by the frame.
        schema: EventSchema,
    },
}

impl DecodeError {
    /// A stable snake_case code, for dead-letter headers and metric labels.
    pub const fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::TruncatedHeader { .. } => "truncated_header",
            DecodeError::WrongMagic { .. } => "wrong_magic",
            DecodeError::UnknownFraming { .. } => "unknown_framing",
            DecodeError::UnknownType { .. } | DecodeError::UnknownLegacyId { .. } => {
                "unknown_schema"
            }
            DecodeError::TruncatedPayload { .. } => "truncated_payload",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::CorruptArchive { .. } => "corrupt_archive",
        }
    }

    /// The schema the frame named, when the header was readable and known.
    pub const fn schema(&self) -> Option<EventSchema> {
        match self {
            DecodeError::TruncatedPayload { schema, .. }
            | DecodeError::TrailingBytes { schema, .. }
            | DecodeError::CorruptArchive { schema } => Some(*schema),
            _ => None,
        }
    }
}

/// Checks the rkyv frame header and returns the schema and the payload
/// behind it, without looking at the payload. Enough to route or count
/// records by type.
#[inline]
pub fn split_frame(frame: &[u8]) -> Result<(EventSchema, &[u8]), DecodeError> {
    match frame {
        [] => Err(DecodeError::Empty),
        _ if frame.len() > FRAME_BYTES_MAX => Err(DecodeError::Oversize {
            len: frame.len(),
            max: FRAME_BYTES_MAX,
        }),
        [magic, framing, kind, version, payload @ ..] => {
            // The whole header as one word: one match, as cheap as the old
            // single id, and the specific error only off the hot path.
            match EventSchema::from_rkyv_header(u32::from_be_bytes([
                *magic, *framing, *kind, *version,
            ])) {
                Some(schema) => Ok((schema, payload)),
                None => Err(header_error(*magic, *framing, *kind, *version)),
            }
        }
        // A short frame that already shows a wrong magic byte says more than "short".
        [magic, ..] if *magic != RKYV_MAGIC => Err(DecodeError::WrongMagic { byte: *magic }),
        _ => Err(DecodeError::TruncatedHeader {
            len: frame.len(),
            header: FRAME_HEADER_BYTES,
        }),
    }
}

/// What is wrong with a 4-byte rkyv header that names no known type.
#[cold]
#[inline(never)]
fn header_error(magic: u8, framing: u8, kind: u8, version: u8) -> DecodeError {
    if magic != RKYV_MAGIC {
        DecodeError::WrongMagic { byte: magic }
    } else if framing != RKYV_FRAMING_VERSION {
        DecodeError::UnknownFraming { version: framing }
    } else {
        DecodeError::UnknownType { kind, version }
    }
}

const _: () = assert!(
    FRAME_HEADER_BYTES == 4,
    "split_frame's pattern reads 4 header bytes"
);

/// Like [`split_frame`], for a legacy frame: magic `0`, the big-endian id of
/// the pre-upgrade table ([`EventSchema::legacy_id`]), the same archive.
#[inline]
pub fn split_legacy_frame(frame: &[u8]) -> Result<(EventSchema, &[u8]), DecodeError> {
    match frame {
        [] => Err(DecodeError::Empty),
        _ if frame.len() > FRAME_BYTES_MAX => Err(DecodeError::Oversize {
            len: frame.len(),
            max: FRAME_BYTES_MAX,
        }),
        [magic, id0, id1, id2, id3, payload @ ..] => {
            if *magic != LEGACY_MAGIC_BYTE {
                return Err(DecodeError::WrongMagic { byte: *magic });
            }
            let id = u32::from_be_bytes([*id0, *id1, *id2, *id3]);
            let schema =
                EventSchema::from_legacy_id(id).ok_or(DecodeError::UnknownLegacyId { id })?;
            Ok((schema, payload))
        }
        [magic, ..] if *magic != LEGACY_MAGIC_BYTE => Err(DecodeError::WrongMagic { byte: *magic }),
        _ => Err(DecodeError::TruncatedHeader {
            len: frame.len(),
            header: LEGACY_FRAME_HEADER_BYTES,
        }),
    }
}

const _: () = assert!(
    LEGACY_FRAME_HEADER_BYTES == 5,
    "split_legacy_frame's pattern reads 5 header bytes"
);

/// Validates `payload` as a `T` in place.
#[inline]
fn access<T>(schema: EventSchema, payload: &[u8]) -> Result<&T, DecodeError>
where
    T: Portable + for<'a> CheckBytes<LowValidator<'a, Failure>>,
{
    // `Failure` carries no message, so a rejected archive costs no allocation
    // either; the variant already says what the dead-letter record needs.
    rkyv::api::low::access::<T, Failure>(payload)
        .map_err(|Failure| DecodeError::CorruptArchive { schema })
}

/// Decodes one rkyv frame: checks the frame, validates the archive in place
/// and returns a borrowed view of it. No allocation, no copy; works at any
/// alignment. A record whose first byte is not [`RKYV_MAGIC`] is refused
/// (`WrongMagic`), Confluent's magic `0` included.
#[inline]
pub fn decode(frame: &[u8]) -> Result<EventRef<'_>, DecodeError> {
    let (schema, payload) = split_frame(frame)?;
    decode_payload(schema, payload)
}

/// Decodes a legacy frame (magic `0`, a pre-upgrade table id, the same
/// archive), as written before the rkyv framing had a magic byte of its own.
/// Same checks and cost as [`decode`]. Whether a record with magic `0` is
/// legacy or Confluent's is for the caller to decide (docs/SCHEMAS.md,
/// "Records written before the rkyv magic byte").
#[inline]
pub fn decode_legacy(frame: &[u8]) -> Result<EventRef<'_>, DecodeError> {
    let (schema, payload) = split_legacy_frame(frame)?;
    decode_payload(schema, payload)
}

#[inline]
fn decode_payload(schema: EventSchema, payload: &[u8]) -> Result<EventRef<'_>, DecodeError> {
    let expected = schema.payload_bytes();
    // rkyv finds the root at `len - size_of::<T>()` and would ignore leading
    // junk; fixed-size events let us demand the exact length instead.
    if payload.len() < expected {
        return Err(DecodeError::TruncatedPayload {
            schema,
            len: payload.len(),
            expected,
        });
    }
    if payload.len() > expected {
        return Err(DecodeError::TrailingBytes {
            schema,
            len: payload.len(),
            expected,
        });
    }
    Ok(match schema {
        EventSchema::OrderCreatedV1 => {
            EventRef::OrderCreated(OrderCreatedRef::V1(access(schema, payload)?))
        }
        EventSchema::OrderCreatedV2 => {
            EventRef::OrderCreated(OrderCreatedRef::V2(access(schema, payload)?))
        }
        EventSchema::OrderAmendedV1 => EventRef::OrderAmended(access(schema, payload)?),
        EventSchema::OrderCancelledV1 => EventRef::OrderCancelled(access(schema, payload)?),
        EventSchema::PaymentCompletedV1 => EventRef::PaymentCompleted(access(schema, payload)?),
        EventSchema::PaymentFailedV1 => EventRef::PaymentFailed(access(schema, payload)?),
        EventSchema::PaymentRefundedV1 => EventRef::PaymentRefunded(access(schema, payload)?),
        EventSchema::StockUpdatedV1 => EventRef::StockUpdated(access(schema, payload)?),
        EventSchema::StockRejectedV1 => EventRef::StockRejected(access(schema, payload)?),
        EventSchema::AccountFundedV1 => EventRef::AccountFunded(access(schema, payload)?),
        EventSchema::StockReplenishedV1 => EventRef::StockReplenished(access(schema, payload)?),
    })
}

/// `order.created` of any version, read through one set of accessors so that
/// consumer code is the same for all versions. Fields a version lacks read as
/// the value that version implied.
#[derive(Debug, Clone, Copy)]
pub enum OrderCreatedRef<'a> {
    /// Version 1 bytes.
    V1(&'a ArchivedOrderCreatedV1),
    /// Version 2 bytes.
    V2(&'a ArchivedOrderCreated),
}

impl<'a> OrderCreatedRef<'a> {
    /// The wire schema the record was written with.
    #[inline]
    pub const fn schema(self) -> EventSchema {
        match self {
            OrderCreatedRef::V1(_) => EventSchema::OrderCreatedV1,
            OrderCreatedRef::V2(_) => EventSchema::OrderCreatedV2,
        }
    }
    /// The common header, in place.
    #[inline]
    pub fn header(self) -> &'a ArchivedEventHeader {
        match self {
            OrderCreatedRef::V1(e) => e.header(),
            OrderCreatedRef::V2(e) => e.header(),
        }
    }
    /// The paying account.
    #[inline]
    pub fn account(self) -> AccountId {
        match self {
            OrderCreatedRef::V1(e) => e.account(),
            OrderCreatedRef::V2(e) => e.account(),
        }
    }
    /// The instrument.
    #[inline]
    pub fn sku(self) -> Sku {
        match self {
            OrderCreatedRef::V1(e) => e.sku(),
            OrderCreatedRef::V2(e) => e.sku(),
        }
    }
    /// Units wanted.
    #[inline]
    pub fn quantity(self) -> Quantity {
        match self {
            OrderCreatedRef::V1(e) => e.quantity(),
            OrderCreatedRef::V2(e) => e.quantity(),
        }
    }
    /// Limit price per unit, minor units.
    #[inline]
    pub fn limit_price(self) -> Money {
        match self {
            OrderCreatedRef::V1(e) => e.limit_price(),
            OrderCreatedRef::V2(e) => e.limit_price(),
        }
    }
    /// The client's idempotency key, as text in place.
    #[inline]
    pub fn client_order_id_str(self) -> &'a str {
        match self {
            OrderCreatedRef::V1(e) => e.client_order_id.as_str(),
            OrderCreatedRef::V2(e) => e.client_order_id.as_str(),
        }
    }
    /// The client's idempotency key.
    #[inline]
    pub fn client_order_id(self) -> ClientOrderId {
        match self {
            OrderCreatedRef::V1(e) => e.client_order_id(),
            OrderCreatedRef::V2(e) => e.client_order_id(),
        }
    }
    /// Time in force; `Gtc` for v1, which had no other.
    #[inline]
    pub fn time_in_force(self) -> TimeInForce {
        match self {
            OrderCreatedRef::V1(_) => TimeInForce::Gtc,
            OrderCreatedRef::V2(e) => e.time_in_force(),
        }
    }
    /// Order tag; empty for v1.
    #[inline]
    pub fn tag(self) -> Tag {
        match self {
            OrderCreatedRef::V1(_) => Tag::EMPTY,
            OrderCreatedRef::V2(e) => e.tag(),
        }
    }
    /// The owned, current-version form.
    pub fn to_native(self) -> OrderCreated {
        match self {
            OrderCreatedRef::V1(e) => e.to_native().into(),
            OrderCreatedRef::V2(e) => e.to_native(),
        }
    }
}

/// A decoded event, borrowed from the frame it was read from. `Copy` and two
/// words wide; accessors read the archive in place.
#[derive(Debug, Clone, Copy)]
pub enum EventRef<'a> {
    /// `order.created`, any version.
    OrderCreated(OrderCreatedRef<'a>),
    /// `order.amended`.
    OrderAmended(&'a ArchivedOrderAmended),
    /// `order.cancelled`.
    OrderCancelled(&'a ArchivedOrderCancelled),
    /// `payment.completed`.
    PaymentCompleted(&'a ArchivedPaymentCompleted),
    /// `payment.failed`.
    PaymentFailed(&'a ArchivedPaymentFailed),
    /// `payment.refunded`.
    PaymentRefunded(&'a ArchivedPaymentRefunded),
    /// `stock.updated`.
    StockUpdated(&'a ArchivedStockUpdated),
    /// `stock.rejected`.
    StockRejected(&'a ArchivedStockRejected),
    /// `account.funded`.
    AccountFunded(&'a ArchivedAccountFunded),
    /// `stock.replenished`.
    StockReplenished(&'a ArchivedStockReplenished),
}

impl<'a> EventRef<'a> {
    /// The event's kind.
    #[inline]
    pub const fn kind(self) -> EventKind {
        match self {
            EventRef::OrderCreated(_) => EventKind::OrderCreated,
            EventRef::OrderAmended(_) => EventKind::OrderAmended,
            EventRef::OrderCancelled(_) => EventKind::OrderCancelled,
            EventRef::PaymentCompleted(_) => EventKind::PaymentCompleted,
            EventRef::PaymentFailed(_) => EventKind::PaymentFailed,
            EventRef::PaymentRefunded(_) => EventKind::PaymentRefunded,
            EventRef::StockUpdated(_) => EventKind::StockUpdated,
            EventRef::StockRejected(_) => EventKind::StockRejected,
            EventRef::AccountFunded(_) => EventKind::AccountFunded,
            EventRef::StockReplenished(_) => EventKind::StockReplenished,
        }
    }

    /// The wire schema the record was written with.
    #[inline]
    pub const fn schema(self) -> EventSchema {
        match self {
            EventRef::OrderCreated(o) => o.schema(),
            other => EventSchema::latest(other.kind()),
        }
    }

    /// The common header, in place.
    #[inline]
    pub fn header(self) -> &'a ArchivedEventHeader {
        match self {
            EventRef::OrderCreated(e) => e.header(),
            EventRef::OrderAmended(e) => e.header(),
            EventRef::OrderCancelled(e) => e.header(),
            EventRef::PaymentCompleted(e) => e.header(),
            EventRef::PaymentFailed(e) => e.header(),
            EventRef::PaymentRefunded(e) => e.header(),
            EventRef::StockUpdated(e) => e.header(),
            EventRef::StockRejected(e) => e.header(),
            EventRef::AccountFunded(e) => e.header(),
            EventRef::StockReplenished(e) => e.header(),
        }
    }

    /// The event's id.
    #[inline]
    pub fn event_id(self) -> EventId {
        self.header().event_id()
    }

    /// The order the event belongs to (`OrderId::NONE` for funding and
    /// replenishment).
    #[inline]
    pub fn order_id(self) -> OrderId {
        self.header().order_id()
    }

    /// The causing event's id (`EventId::NONE` if none).
    #[inline]
    pub fn causation_id(self) -> EventId {
        self.header().causation_id()
    }

    /// When the producer created the event.
    #[inline]
    pub fn created_at_ns(self) -> TimestampNs {
        self.header().created_at_ns()
    }

    /// Payment's routing key; `None` for replenishment.
    #[inline]
    pub fn account(self) -> Option<AccountId> {
        Some(match self {
            EventRef::OrderCreated(e) => e.account(),
            EventRef::OrderAmended(e) => e.account(),
            EventRef::OrderCancelled(e) => e.account(),
            EventRef::PaymentCompleted(e) => e.account(),
            EventRef::PaymentFailed(e) => e.account(),
            EventRef::PaymentRefunded(e) => e.account(),
            EventRef::StockUpdated(e) => e.account(),
            EventRef::StockRejected(e) => e.account(),
            EventRef::AccountFunded(e) => e.account(),
            EventRef::StockReplenished(_) => return None,
        })
    }

    /// Inventory's routing key; `None` for funding.
    #[inline]
    pub fn sku(self) -> Option<Sku> {
        Some(match self {
            EventRef::OrderCreated(e) => e.sku(),
            EventRef::OrderAmended(e) => e.sku(),
            EventRef::OrderCancelled(e) => e.sku(),
            EventRef::PaymentCompleted(e) => e.sku(),
            EventRef::PaymentFailed(e) => e.sku(),
            EventRef::PaymentRefunded(e) => e.sku(),
            EventRef::StockUpdated(e) => e.sku(),
            EventRef::StockRejected(e) => e.sku(),
            EventRef::AccountFunded(_) => return None,
            EventRef::StockReplenished(e) => e.sku(),
        })
    }

    /// Copies the event out into its owned form (current version for
    /// `order.created`). For the JSON edge, tests and state that outlives the
    /// record; the hot path reads in place instead.
    pub fn to_event(self) -> Event {
        match self {
            EventRef::OrderCreated(e) => Event::OrderCreated(e.to_native()),
            EventRef::OrderAmended(e) => Event::OrderAmended(e.to_native()),
            EventRef::OrderCancelled(e) => Event::OrderCancelled(e.to_native()),
            EventRef::PaymentCompleted(e) => Event::PaymentCompleted(e.to_native()),
            EventRef::PaymentFailed(e) => Event::PaymentFailed(e.to_native()),
            EventRef::PaymentRefunded(e) => Event::PaymentRefunded(e.to_native()),
            EventRef::StockUpdated(e) => Event::StockUpdated(e.to_native()),
            EventRef::StockRejected(e) => Event::StockRejected(e.to_native()),
            EventRef::AccountFunded(e) => Event::AccountFunded(e.to_native()),
            EventRef::StockReplenished(e) => Event::StockReplenished(e.to_native()),
        }
    }
}

impl From<EventRef<'_>> for Event {
    fn from(event: EventRef<'_>) -> Event {
        event.to_event()
    }
}
