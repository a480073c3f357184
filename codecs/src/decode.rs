//! Decoding untrusted frames into validated, borrowed, archived events.
//!
//! Owns `decode`, the `EventRef` view it returns and `DecodeError`. Must never
//! panic on any input, never allocate, and never copy the payload: the frame
//! is checked (length, magic byte, schema id, exact payload size) and the
//! archive validated in place by bytecheck, then read where it lies. Every way
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
use crate::schema::{SchemaId, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, MAGIC_BYTE};
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
    /// Shorter than the 5-byte frame header.
    #[error("frame of {len} bytes is shorter than the 5-byte header")]
    TruncatedHeader {
        /// Frame length in bytes.
        len: usize,
    },
    /// The first byte is not the Confluent magic byte `0`.
    #[error("magic byte is {byte:#04x}, expected 0x00")]
    WrongMagic {
        /// The byte found.
        byte: u8,
    },
    /// The schema id is not one this build can read (a newer producer, or
    /// another application's topic).
    #[error("unknown schema id {id}")]
    UnknownSchema {
        /// The id found.
        id: u32,
    },
    /// The payload is shorter than its schema's fixed size.
    #[error("{schema} payload is {len} bytes, expected {expected}")]
    TruncatedPayload {
        /// Schema named by the frame.
        schema: SchemaId,
        /// Payload length found.
        len: usize,
        /// The schema's payload size.
        expected: usize,
    },
    /// The payload is longer than its schema's fixed size.
    #[error("{schema} payload is {len} bytes, expected {expected}")]
    TrailingBytes {
        /// Schema named by the frame.
        schema: SchemaId,
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
        schema: SchemaId,
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
            DecodeError::UnknownSchema { .. } => "unknown_schema",
            DecodeError::TruncatedPayload { .. } => "truncated_payload",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::CorruptArchive { .. } => "corrupt_archive",
        }
    }

    /// The schema the frame named, when the header was readable and known.
    pub const fn schema(&self) -> Option<SchemaId> {
        match self {
            DecodeError::TruncatedPayload { schema, .. }
            | DecodeError::TrailingBytes { schema, .. }
            | DecodeError::CorruptArchive { schema } => Some(*schema),
            _ => None,
        }
    }
}

/// Checks the frame header and returns the schema and the payload behind it,
/// without looking at the payload. Enough to route or count records by type.
#[inline]
pub fn split_frame(frame: &[u8]) -> Result<(SchemaId, &[u8]), DecodeError> {
    match frame {
        [] => Err(DecodeError::Empty),
        _ if frame.len() > FRAME_BYTES_MAX => Err(DecodeError::Oversize {
            len: frame.len(),
            max: FRAME_BYTES_MAX,
        }),
        [magic, id0, id1, id2, id3, payload @ ..] => {
            if *magic != MAGIC_BYTE {
                return Err(DecodeError::WrongMagic { byte: *magic });
            }
            let id = u32::from_be_bytes([*id0, *id1, *id2, *id3]);
            let schema = SchemaId::from_u32(id).ok_or(DecodeError::UnknownSchema { id })?;
            Ok((schema, payload))
        }
        // A short frame that already shows a wrong magic byte says more than "short".
        [magic, ..] if *magic != MAGIC_BYTE => Err(DecodeError::WrongMagic { byte: *magic }),
        _ => Err(DecodeError::TruncatedHeader { len: frame.len() }),
    }
}

const _: () = assert!(
    FRAME_HEADER_BYTES == 5,
    "split_frame's pattern reads 5 header bytes"
);

/// Validates `payload` as a `T` in place.
#[inline]
fn access<T>(schema: SchemaId, payload: &[u8]) -> Result<&T, DecodeError>
where
    T: Portable + for<'a> CheckBytes<LowValidator<'a, Failure>>,
{
    // `Failure` carries no message, so a rejected archive costs no allocation
    // either; the variant already says what the dead-letter record needs.
    rkyv::api::low::access::<T, Failure>(payload)
        .map_err(|Failure| DecodeError::CorruptArchive { schema })
}

/// Decodes one framed record: checks the frame, validates the archive in
/// place and returns a borrowed view of it. No allocation, no copy; works at
/// any alignment.
#[inline]
pub fn decode(frame: &[u8]) -> Result<EventRef<'_>, DecodeError> {
    let (schema, payload) = split_frame(frame)?;
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
        SchemaId::OrderCreatedV1 => {
            EventRef::OrderCreated(OrderCreatedRef::V1(access(schema, payload)?))
        }
        SchemaId::OrderCreatedV2 => {
            EventRef::OrderCreated(OrderCreatedRef::V2(access(schema, payload)?))
        }
        SchemaId::OrderAmendedV1 => EventRef::OrderAmended(access(schema, payload)?),
        SchemaId::OrderCancelledV1 => EventRef::OrderCancelled(access(schema, payload)?),
        SchemaId::PaymentCompletedV1 => EventRef::PaymentCompleted(access(schema, payload)?),
        SchemaId::PaymentFailedV1 => EventRef::PaymentFailed(access(schema, payload)?),
        SchemaId::PaymentRefundedV1 => EventRef::PaymentRefunded(access(schema, payload)?),
        SchemaId::StockUpdatedV1 => EventRef::StockUpdated(access(schema, payload)?),
        SchemaId::StockRejectedV1 => EventRef::StockRejected(access(schema, payload)?),
        SchemaId::AccountFundedV1 => EventRef::AccountFunded(access(schema, payload)?),
        SchemaId::StockReplenishedV1 => EventRef::StockReplenished(access(schema, payload)?),
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
    pub const fn schema(self) -> SchemaId {
        match self {
            OrderCreatedRef::V1(_) => SchemaId::OrderCreatedV1,
            OrderCreatedRef::V2(_) => SchemaId::OrderCreatedV2,
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
    pub const fn schema(self) -> SchemaId {
        match self {
            EventRef::OrderCreated(o) => o.schema(),
            other => SchemaId::latest(other.kind()),
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
