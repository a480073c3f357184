//! The rkyv frame around every payload, and the (event kind, schema
//! version) tags of the rkyv layouts it carries.
//!
//! Owns [`EventSchema`] (one event kind at one schema version: its archived
//! layout, its exact size, and the type tag that names it inside an rkyv
//! frame), the frame layout (magic byte [`RKYV_MAGIC`], framing version
//! [`RKYV_FRAMING_VERSION`], kind code, schema version, then the rkyv
//! archive) and the size limits; plus the pre-upgrade frame
//! ([`LEGACY_MAGIC_BYTE`] `0` + a 4-byte id of a fixed table), kept only so
//! that such records still in topics are read, never written.
//!
//! The type tag is not a schema-registry id: registry ids live only in
//! Confluent frames (`codecs::avro`), whose magic byte `0` no rkyv frame
//! starts with. Must never reuse a (kind, version) tag for another layout:
//! tags are written into every rkyv record on every topic, so a released tag
//! means the same bytes forever. New versions get new tags.

use crate::events::{
    ArchivedAccountFunded, ArchivedOrderAmended, ArchivedOrderCancelled, ArchivedOrderCreated,
    ArchivedOrderCreatedV1, ArchivedPaymentCompleted, ArchivedPaymentFailed,
    ArchivedPaymentRefunded, ArchivedStockRejected, ArchivedStockReplenished, ArchivedStockUpdated,
    EventKind,
};

/// First byte of every rkyv frame. Not `0`, the magic byte of Confluent's
/// wire format (Avro, Protobuf and JSON Schema alike), so no rkyv frame can
/// be taken for a registry-framed record or the other way round; not ASCII
/// and never valid in UTF-8, so no text or JSON value starts with it either.
pub const RKYV_MAGIC: u8 = 0xF8;

/// Second byte of every rkyv frame: the layout of the header itself. A
/// reader refuses a framing version it does not know instead of guessing.
pub const RKYV_FRAMING_VERSION: u8 = 1;

/// Magic byte, framing version, kind code, schema version.
pub const FRAME_HEADER_BYTES: usize = 4;

/// First byte of Confluent's wire format (magic `0`, the registry's 4-byte
/// big-endian schema id, the datum), and of the frames tradeflow wrote
/// before [`RKYV_MAGIC`] existed (the same five bytes, with an id of the
/// fixed table [`EventSchema::legacy_id`] instead of a registry id).
pub const CONFLUENT_MAGIC_BYTE: u8 = 0;

/// The magic byte of a pre-upgrade (legacy) rkyv frame: Confluent's.
pub const LEGACY_MAGIC_BYTE: u8 = CONFLUENT_MAGIC_BYTE;

/// Header of a legacy frame: magic `0` and the big-endian table id.
pub const LEGACY_FRAME_HEADER_BYTES: usize = 5;

/// Largest frame `decode` looks at; anything longer is rejected before any
/// parsing. Leaves head-room over today's largest event so that a new version
/// can grow without moving the limit consumers size their buffers by.
pub const FRAME_BYTES_MAX: usize = 256;

/// One event kind at one schema version: an archived layout. Inside an rkyv
/// frame it is named by its type tag, the pair ([`EventKind::code`],
/// [`EventSchema::version`]), one byte each; in Avro it names the record
/// schema of that version (`codecs::avro`), whose registry id is the
/// registry's business. The discriminant is the pre-upgrade table id
/// (`kind code × 100 + version`), used only to read legacy frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum EventSchema {
    /// `order.created` version 1: no time in force, no tag (read as GTC, empty).
    OrderCreatedV1 = 101,
    /// `order.created` version 2: adds `time_in_force` and `tag`.
    OrderCreatedV2 = 102,
    /// `order.amended` version 1.
    OrderAmendedV1 = 201,
    /// `order.cancelled` version 1.
    OrderCancelledV1 = 301,
    /// `payment.completed` version 1.
    PaymentCompletedV1 = 401,
    /// `payment.failed` version 1.
    PaymentFailedV1 = 501,
    /// `payment.refunded` version 1.
    PaymentRefundedV1 = 601,
    /// `stock.updated` version 1.
    StockUpdatedV1 = 701,
    /// `stock.rejected` version 1.
    StockRejectedV1 = 801,
    /// `account.funded` version 1.
    AccountFundedV1 = 901,
    /// `stock.replenished` version 1.
    StockReplenishedV1 = 1001,
}

impl EventSchema {
    /// Every schema this build can read, in id order.
    pub const ALL: [EventSchema; 11] = [
        EventSchema::OrderCreatedV1,
        EventSchema::OrderCreatedV2,
        EventSchema::OrderAmendedV1,
        EventSchema::OrderCancelledV1,
        EventSchema::PaymentCompletedV1,
        EventSchema::PaymentFailedV1,
        EventSchema::PaymentRefundedV1,
        EventSchema::StockUpdatedV1,
        EventSchema::StockRejectedV1,
        EventSchema::AccountFundedV1,
        EventSchema::StockReplenishedV1,
    ];

    /// The id the fixed table gave this schema before the rkyv framing had a
    /// magic byte of its own (`kind code × 100 + version`): what a legacy
    /// frame carries after its magic byte `0`. Never written any more.
    #[inline]
    pub const fn legacy_id(self) -> u32 {
        self as u32
    }

    /// The schema a legacy frame's table id names, `None` if the table had
    /// no such id.
    #[inline]
    pub const fn from_legacy_id(id: u32) -> Option<EventSchema> {
        Some(match id {
            101 => EventSchema::OrderCreatedV1,
            102 => EventSchema::OrderCreatedV2,
            201 => EventSchema::OrderAmendedV1,
            301 => EventSchema::OrderCancelledV1,
            401 => EventSchema::PaymentCompletedV1,
            501 => EventSchema::PaymentFailedV1,
            601 => EventSchema::PaymentRefundedV1,
            701 => EventSchema::StockUpdatedV1,
            801 => EventSchema::StockRejectedV1,
            901 => EventSchema::AccountFundedV1,
            1001 => EventSchema::StockReplenishedV1,
            _ => return None,
        })
    }

    /// The type tag written in an rkyv frame: (kind code, schema version).
    #[inline]
    pub const fn rkyv_tag(self) -> [u8; 2] {
        // Kind codes and versions are small (checked below at compile time).
        [self.kind().code() as u8, self.version() as u8]
    }

    /// The schema an rkyv frame's type tag names, `None` if this build does
    /// not know it (a newer producer, or not a tradeflow frame).
    #[inline]
    pub const fn from_rkyv_tag(kind: u8, version: u8) -> Option<EventSchema> {
        Some(match (kind, version) {
            (1, 1) => EventSchema::OrderCreatedV1,
            (1, 2) => EventSchema::OrderCreatedV2,
            (2, 1) => EventSchema::OrderAmendedV1,
            (3, 1) => EventSchema::OrderCancelledV1,
            (4, 1) => EventSchema::PaymentCompletedV1,
            (5, 1) => EventSchema::PaymentFailedV1,
            (6, 1) => EventSchema::PaymentRefundedV1,
            (7, 1) => EventSchema::StockUpdatedV1,
            (8, 1) => EventSchema::StockRejectedV1,
            (9, 1) => EventSchema::AccountFundedV1,
            (10, 1) => EventSchema::StockReplenishedV1,
            _ => return None,
        })
    }

    /// The schema a whole rkyv frame header names, read as one big-endian
    /// word (magic, framing version, kind code, version); `None` for any
    /// other header. `decode`'s hot path: one match instead of three checks.
    #[inline]
    pub const fn from_rkyv_header(header: u32) -> Option<EventSchema> {
        const fn h(kind: u8, version: u8) -> u32 {
            u32::from_be_bytes([RKYV_MAGIC, RKYV_FRAMING_VERSION, kind, version])
        }
        const H_1_1: u32 = h(1, 1);
        const H_1_2: u32 = h(1, 2);
        const H_2_1: u32 = h(2, 1);
        const H_3_1: u32 = h(3, 1);
        const H_4_1: u32 = h(4, 1);
        const H_5_1: u32 = h(5, 1);
        const H_6_1: u32 = h(6, 1);
        const H_7_1: u32 = h(7, 1);
        const H_8_1: u32 = h(8, 1);
        const H_9_1: u32 = h(9, 1);
        const H_10_1: u32 = h(10, 1);
        Some(match header {
            H_1_1 => EventSchema::OrderCreatedV1,
            H_1_2 => EventSchema::OrderCreatedV2,
            H_2_1 => EventSchema::OrderAmendedV1,
            H_3_1 => EventSchema::OrderCancelledV1,
            H_4_1 => EventSchema::PaymentCompletedV1,
            H_5_1 => EventSchema::PaymentFailedV1,
            H_6_1 => EventSchema::PaymentRefundedV1,
            H_7_1 => EventSchema::StockUpdatedV1,
            H_8_1 => EventSchema::StockRejectedV1,
            H_9_1 => EventSchema::AccountFundedV1,
            H_10_1 => EventSchema::StockReplenishedV1,
            _ => return None,
        })
    }

    /// The event kind this schema encodes.
    #[inline]
    pub const fn kind(self) -> EventKind {
        match self {
            EventSchema::OrderCreatedV1 | EventSchema::OrderCreatedV2 => EventKind::OrderCreated,
            EventSchema::OrderAmendedV1 => EventKind::OrderAmended,
            EventSchema::OrderCancelledV1 => EventKind::OrderCancelled,
            EventSchema::PaymentCompletedV1 => EventKind::PaymentCompleted,
            EventSchema::PaymentFailedV1 => EventKind::PaymentFailed,
            EventSchema::PaymentRefundedV1 => EventKind::PaymentRefunded,
            EventSchema::StockUpdatedV1 => EventKind::StockUpdated,
            EventSchema::StockRejectedV1 => EventKind::StockRejected,
            EventSchema::AccountFundedV1 => EventKind::AccountFunded,
            EventSchema::StockReplenishedV1 => EventKind::StockReplenished,
        }
    }

    /// The version of the kind's schema, starting at 1.
    #[inline]
    pub const fn version(self) -> u32 {
        self.legacy_id() % 100
    }

    /// The schema `Encoder::encode` writes for a kind: its newest version.
    #[inline]
    pub const fn latest(kind: EventKind) -> EventSchema {
        match kind {
            EventKind::OrderCreated => EventSchema::OrderCreatedV2,
            EventKind::OrderAmended => EventSchema::OrderAmendedV1,
            EventKind::OrderCancelled => EventSchema::OrderCancelledV1,
            EventKind::PaymentCompleted => EventSchema::PaymentCompletedV1,
            EventKind::PaymentFailed => EventSchema::PaymentFailedV1,
            EventKind::PaymentRefunded => EventSchema::PaymentRefundedV1,
            EventKind::StockUpdated => EventSchema::StockUpdatedV1,
            EventKind::StockRejected => EventSchema::StockRejectedV1,
            EventKind::AccountFunded => EventSchema::AccountFundedV1,
            EventKind::StockReplenished => EventSchema::StockReplenishedV1,
        }
    }

    /// Exact size of this schema's archive: every event is fixed-size, so any
    /// other payload length is malformed.
    #[inline]
    pub const fn payload_bytes(self) -> usize {
        use core::mem::size_of;
        match self {
            EventSchema::OrderCreatedV1 => size_of::<ArchivedOrderCreatedV1>(),
            EventSchema::OrderCreatedV2 => size_of::<ArchivedOrderCreated>(),
            EventSchema::OrderAmendedV1 => size_of::<ArchivedOrderAmended>(),
            EventSchema::OrderCancelledV1 => size_of::<ArchivedOrderCancelled>(),
            EventSchema::PaymentCompletedV1 => size_of::<ArchivedPaymentCompleted>(),
            EventSchema::PaymentFailedV1 => size_of::<ArchivedPaymentFailed>(),
            EventSchema::PaymentRefundedV1 => size_of::<ArchivedPaymentRefunded>(),
            EventSchema::StockUpdatedV1 => size_of::<ArchivedStockUpdated>(),
            EventSchema::StockRejectedV1 => size_of::<ArchivedStockRejected>(),
            EventSchema::AccountFundedV1 => size_of::<ArchivedAccountFunded>(),
            EventSchema::StockReplenishedV1 => size_of::<ArchivedStockReplenished>(),
        }
    }

    /// Exact size of a frame carrying this schema.
    #[inline]
    pub const fn frame_bytes(self) -> usize {
        FRAME_HEADER_BYTES + self.payload_bytes()
    }
}

impl core::fmt::Display for EventSchema {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} v{}", self.kind().name(), self.version())
    }
}

/// The largest frame any known schema produces.
pub const fn largest_frame_bytes() -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < EventSchema::ALL.len() {
        let bytes = EventSchema::ALL[i].frame_bytes();
        if bytes > max {
            max = bytes;
        }
        i += 1;
    }
    max
}

// A limit below the largest event would make `decode` reject valid frames.
const _: () = assert!(largest_frame_bytes() <= FRAME_BYTES_MAX);
// Alignment 1 is what lets the payload sit at offset 4 behind the frame
// header, inside an unaligned Kafka buffer, and still be read in place.
const _: () = {
    use core::mem::align_of;
    assert!(align_of::<ArchivedOrderCreatedV1>() == 1);
    assert!(align_of::<ArchivedOrderCreated>() == 1);
    assert!(align_of::<ArchivedOrderAmended>() == 1);
    assert!(align_of::<ArchivedOrderCancelled>() == 1);
    assert!(align_of::<ArchivedPaymentCompleted>() == 1);
    assert!(align_of::<ArchivedPaymentFailed>() == 1);
    assert!(align_of::<ArchivedPaymentRefunded>() == 1);
    assert!(align_of::<ArchivedStockUpdated>() == 1);
    assert!(align_of::<ArchivedStockRejected>() == 1);
    assert!(align_of::<ArchivedAccountFunded>() == 1);
    assert!(align_of::<ArchivedStockReplenished>() == 1);
};

// Every type tag fits its two bytes.
const _: () = {
    let mut i = 0;
    while i < EventSchema::ALL.len() {
        assert!(EventSchema::ALL[i].kind().code() <= u8::MAX as u32);
        assert!(EventSchema::ALL[i].version() <= u8::MAX as u32);
        i += 1;
    }
};

/// Writes the 4-byte rkyv frame header for `schema` at the end of `out`.
#[inline]
pub fn write_frame_header(out: &mut Vec<u8>, schema: EventSchema) {
    let [kind, version] = schema.rkyv_tag();
    out.extend_from_slice(&[RKYV_MAGIC, RKYV_FRAMING_VERSION, kind, version]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_legacy_ids_round_trip() {
        for schema in EventSchema::ALL {
            let [kind, version] = schema.rkyv_tag();
            assert_eq!(EventSchema::from_rkyv_tag(kind, version), Some(schema));
            let header = u32::from_be_bytes([RKYV_MAGIC, RKYV_FRAMING_VERSION, kind, version]);
            assert_eq!(EventSchema::from_rkyv_header(header), Some(schema));
            assert_eq!(EventSchema::from_rkyv_header(header ^ 0x0100_0000), None);
            assert_eq!(EventSchema::from_rkyv_header(header ^ 0x0001_0000), None);
            assert_eq!(u32::from(kind), schema.kind().code());
            assert_eq!(
                EventSchema::from_legacy_id(schema.legacy_id()),
                Some(schema)
            );
            assert_eq!(schema.legacy_id() / 100, schema.kind().code());
            assert!(schema.version() >= 1);
            assert!(schema.frame_bytes() <= FRAME_BYTES_MAX);
        }
        for kind in EventKind::ALL {
            assert_eq!(EventSchema::latest(kind).kind(), kind);
        }
        assert_eq!(EventSchema::from_rkyv_tag(0, 1), None);
        assert_eq!(EventSchema::from_rkyv_tag(1, 3), None);
        assert_eq!(EventSchema::from_legacy_id(0), None);
        assert_eq!(EventSchema::from_legacy_id(103), None);
    }

    #[test]
    fn tags_are_sorted_and_unique() {
        assert!(EventSchema::ALL
            .windows(2)
            .all(|w| w[0].rkyv_tag() < w[1].rkyv_tag()));
    }

    #[test]
    fn an_rkyv_frame_never_starts_like_a_confluent_frame() {
        let mut header = Vec::new();
        write_frame_header(&mut header, EventSchema::OrderCreatedV2);
        assert_eq!(header, [RKYV_MAGIC, RKYV_FRAMING_VERSION, 1, 2]);
        assert_ne!(RKYV_MAGIC, CONFLUENT_MAGIC_BYTE);
        assert!(!RKYV_MAGIC.is_ascii());
        assert!(core::str::from_utf8(&[RKYV_MAGIC]).is_err());
    }
}
