//! Encoding owned events into framed rkyv records.
//!
//! Owns `Encoder`, which validates an event and writes frame header plus
//! archive into one buffer it reuses, and `EncodeError`. Must never allocate
//! in steady state (the buffer is sized to `FRAME_BYTES_MAX` up front and rkyv
//! needs no scratch space for fixed-size events) and never write a frame that
//! `decode` would reject.

use rkyv::api::low::LowSerializer;
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;

use crate::events::{Event, EventKind};
use crate::schema::{write_frame_header, EventSchema, FRAME_BYTES_MAX};

/// Why an event was not encoded. All variants are the caller's bug or choice,
/// not a transient condition: retrying the same call fails the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Every event needs a non-zero id: consumers deduplicate on it.
    #[error("{kind} has no event id")]
    MissingEventId {
        /// Kind of the event.
        kind: EventKind,
    },
    /// An order-scoped event has `OrderId::NONE`.
    #[error("{kind} belongs to an order but has no order id")]
    MissingOrderId {
        /// Kind of the event.
        kind: EventKind,
    },
    /// Funding and replenishment belong to no order; a non-zero order id there
    /// is a mix-up that the audit would count twice.
    #[error("{kind} belongs to no order but carries an order id")]
    UnexpectedOrderId {
        /// Kind of the event.
        kind: EventKind,
    },
    /// `encode_as` was asked to write an event under another kind's schema.
    #[error("{kind} cannot be written as {schema}")]
    SchemaKindMismatch {
        /// Requested schema.
        schema: EventSchema,
        /// Kind of the event.
        kind: EventKind,
    },
    /// The event uses a field the requested (older) version lacks; writing it
    /// would silently drop the value.
    #[error("{schema} cannot carry the event's {field}")]
    NotRepresentable {
        /// Requested schema.
        schema: EventSchema,
        /// The field that would be lost.
        field: &'static str,
    },
    /// rkyv refused to serialize. Unreachable for the fixed-size events here;
    /// kept so a future event shape cannot turn into a panic.
    #[error("{schema} archive could not be written")]
    Archive {
        /// Requested schema.
        schema: EventSchema,
    },
}

/// Writes events as framed records into one reused buffer. One per shard (or
/// per producing task); not shared across cores.
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder whose buffer already holds the largest frame, so no call
    /// ever allocates.
    pub fn new() -> Self {
        Encoder {
            buf: Vec::with_capacity(FRAME_BYTES_MAX),
        }
    }

    /// Validates `event` and writes it with its kind's newest schema. The
    /// returned slice is valid until the next call.
    #[inline]
    pub fn encode(&mut self, event: &Event) -> Result<&[u8], EncodeError> {
        self.encode_as(event, EventSchema::latest(event.kind()))
    }

    /// Like `encode`, under a chosen schema version, e.g. an older one while
    /// some consumers are not yet upgraded.
    pub fn encode_as(&mut self, event: &Event, schema: EventSchema) -> Result<&[u8], EncodeError> {
        validate(event)?;
        let kind = event.kind();
        if schema.kind() != kind {
            return Err(EncodeError::SchemaKindMismatch { schema, kind });
        }
        self.buf.clear();
        write_frame_header(&mut self.buf, schema);
        let buf = &mut self.buf;
        let archived = match (event, schema) {
            (Event::OrderCreated(e), EventSchema::OrderCreatedV1) => {
                let v1 = e.to_v1().ok_or(EncodeError::NotRepresentable {
                    schema,
                    field: "time_in_force or tag",
                })?;
                archive(&v1, buf)
            }
            (Event::OrderCreated(e), _) => archive(e, buf),
            (Event::OrderAmended(e), _) => archive(e, buf),
            (Event::OrderCancelled(e), _) => archive(e, buf),
            (Event::PaymentCompleted(e), _) => archive(e, buf),
            (Event::PaymentFailed(e), _) => archive(e, buf),
            (Event::PaymentRefunded(e), _) => archive(e, buf),
            (Event::StockUpdated(e), _) => archive(e, buf),
            (Event::StockRejected(e), _) => archive(e, buf),
            (Event::AccountFunded(e), _) => archive(e, buf),
            (Event::StockReplenished(e), _) => archive(e, buf),
        };
        archived.map_err(|Failure| EncodeError::Archive { schema })?;
        // The decoder demands this exact length; a mismatch would mean the
        // schema table and the structs disagree, which would corrupt topics.
        assert_eq!(
            self.buf.len(),
            schema.frame_bytes(),
            "{schema} archive size disagrees with the schema table"
        );
        Ok(&self.buf)
    }
}

/// Appends the archive of `value` to `buf`.
#[inline]
fn archive<T>(value: &T, buf: &mut Vec<u8>) -> Result<(), Failure>
where
    T: for<'w, 'a> rkyv::Serialize<LowSerializer<&'w mut Vec<u8>, SubAllocator<'a>, Failure>>,
{
    // Fixed-size events need no scratch space, so an empty allocator suffices
    // and keeps encoding allocation-free; if one ever did, this fails instead.
    rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(value, buf, SubAllocator::empty())
        .map(|_| ())
}

/// The checks `decode` cannot make but consumers rely on.
fn validate(event: &Event) -> Result<(), EncodeError> {
    let kind = event.kind();
    let header = event.header();
    if header.event_id.is_none() {
        return Err(EncodeError::MissingEventId { kind });
    }
    match (kind.is_order_scoped(), header.order_id.is_none()) {
        (true, true) => Err(EncodeError::MissingOrderId { kind }),
        (false, false) => Err(EncodeError::UnexpectedOrderId { kind }),
        _ => Ok(()),
    }
}

/// Encodes into a fresh `Vec`, for tests and the cold edges. The hot path
/// keeps an `Encoder`.
pub fn encode_to_vec(event: &Event) -> Result<Vec<u8>, EncodeError> {
    Encoder::new().encode(event).map(<[u8]>::to_vec)
}
