//! The schema id table and the Confluent wire-format frame around every payload.
//!
//! Owns the mapping (event kind, version) ↔ fixed `u32` schema id, the frame
//! layout (magic byte `0`, 4-byte big-endian schema id, then the rkyv archive)
//! and the size limits. Must never reuse or renumber a schema id: ids are
//! written into every record on every topic and into schema registries, so a
//! released id means the same bytes forever. New versions get new ids.

use crate::events::{
    ArchivedAccountFunded, ArchivedOrderAmended, ArchivedOrderCancelled, ArchivedOrderCreated,
    ArchivedOrderCreatedV1, ArchivedPaymentCompleted, ArchivedPaymentFailed,
    ArchivedPaymentRefunded, ArchivedStockRejected, ArchivedStockReplenished, ArchivedStockUpdated,
    EventKind,
};

/// First byte of every frame, as in Confluent's wire format.
pub const MAGIC_BYTE: u8 = 0;

/// Magic byte plus the big-endian `u32` schema id.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Largest frame `decode` looks at; anything longer is rejected before any
/// parsing. Leaves head-room over today's largest event so that a new version
/// can grow without moving the limit consumers size their buffers by.
pub const FRAME_BYTES_MAX: usize = 256;

/// Each (event kind, version) with its schema id; the discriminant is the id
/// written on the wire. Ids are `kind code × 100 + version`, so they read
/// naturally in logs and leave room for 99 versions per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum SchemaId {
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

impl SchemaId {
    /// Every schema this build can read, in id order.
    pub const ALL: [SchemaId; 11] = [
        SchemaId::OrderCreatedV1,
        SchemaId::OrderCreatedV2,
        SchemaId::OrderAmendedV1,
        SchemaId::OrderCancelledV1,
        SchemaId::PaymentCompletedV1,
        SchemaId::PaymentFailedV1,
        SchemaId::PaymentRefundedV1,
        SchemaId::StockUpdatedV1,
        SchemaId::StockRejectedV1,
        SchemaId::AccountFundedV1,
        SchemaId::StockReplenishedV1,
    ];

    /// The id as written in the frame.
    #[inline]
    pub const fn get(self) -> u32 {
        self as u32
    }

    /// The schema for a wire id, `None` if this build does not know it.
    #[inline]
    pub const fn from_u32(id: u32) -> Option<SchemaId> {
        Some(match id {
            101 => SchemaId::OrderCreatedV1,
            102 => SchemaId::OrderCreatedV2,
            201 => SchemaId::OrderAmendedV1,
            301 => SchemaId::OrderCancelledV1,
            401 => SchemaId::PaymentCompletedV1,
            501 => SchemaId::PaymentFailedV1,
            601 => SchemaId::PaymentRefundedV1,
            701 => SchemaId::StockUpdatedV1,
            801 => SchemaId::StockRejectedV1,
            901 => SchemaId::AccountFundedV1,
            1001 => SchemaId::StockReplenishedV1,
            _ => return None,
        })
    }

    /// The event kind this schema encodes.
    #[inline]
    pub const fn kind(self) -> EventKind {
        match self {
            SchemaId::OrderCreatedV1 | SchemaId::OrderCreatedV2 => EventKind::OrderCreated,
            SchemaId::OrderAmendedV1 => EventKind::OrderAmended,
            SchemaId::OrderCancelledV1 => EventKind::OrderCancelled,
            SchemaId::PaymentCompletedV1 => EventKind::PaymentCompleted,
            SchemaId::PaymentFailedV1 => EventKind::PaymentFailed,
            SchemaId::PaymentRefundedV1 => EventKind::PaymentRefunded,
            SchemaId::StockUpdatedV1 => EventKind::StockUpdated,
            SchemaId::StockRejectedV1 => EventKind::StockRejected,
            SchemaId::AccountFundedV1 => EventKind::AccountFunded,
            SchemaId::StockReplenishedV1 => EventKind::StockReplenished,
        }
    }

    /// The version of the kind's schema, starting at 1.
    #[inline]
    pub const fn version(self) -> u32 {
        self.get() % 100
    }

    /// The schema `Encoder::encode` writes for a kind: its newest version.
    #[inline]
    pub const fn latest(kind: EventKind) -> SchemaId {
        match kind {
            EventKind::OrderCreated => SchemaId::OrderCreatedV2,
            EventKind::OrderAmended => SchemaId::OrderAmendedV1,
            EventKind::OrderCancelled => SchemaId::OrderCancelledV1,
            EventKind::PaymentCompleted => SchemaId::PaymentCompletedV1,
            EventKind::PaymentFailed => SchemaId::PaymentFailedV1,
            EventKind::PaymentRefunded => SchemaId::PaymentRefundedV1,
            EventKind::StockUpdated => SchemaId::StockUpdatedV1,
            EventKind::StockRejected => SchemaId::StockRejectedV1,
            EventKind::AccountFunded => SchemaId::AccountFundedV1,
            EventKind::StockReplenished => SchemaId::StockReplenishedV1,
        }
    }

    /// Exact size of this schema's archive: every event is fixed-size, so any
    /// other payload length is malformed.
    #[inline]
    pub const fn payload_bytes(self) -> usize {
        use core::mem::size_of;
        match self {
            SchemaId::OrderCreatedV1 => size_of::<ArchivedOrderCreatedV1>(),
            SchemaId::OrderCreatedV2 => size_of::<ArchivedOrderCreated>(),
            SchemaId::OrderAmendedV1 => size_of::<ArchivedOrderAmended>(),
            SchemaId::OrderCancelledV1 => size_of::<ArchivedOrderCancelled>(),
            SchemaId::PaymentCompletedV1 => size_of::<ArchivedPaymentCompleted>(),
            SchemaId::PaymentFailedV1 => size_of::<ArchivedPaymentFailed>(),
            SchemaId::PaymentRefundedV1 => size_of::<ArchivedPaymentRefunded>(),
            SchemaId::StockUpdatedV1 => size_of::<ArchivedStockUpdated>(),
            SchemaId::StockRejectedV1 => size_of::<ArchivedStockRejected>(),
            SchemaId::AccountFundedV1 => size_of::<ArchivedAccountFunded>(),
            SchemaId::StockReplenishedV1 => size_of::<ArchivedStockReplenished>(),
        }
    }

    /// Exact size of a frame carrying this schema.
    #[inline]
    pub const fn frame_bytes(self) -> usize {
        FRAME_HEADER_BYTES + self.payload_bytes()
    }
}

impl core::fmt::Display for SchemaId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} v{} (id {})",
            self.kind().name(),
            self.version(),
            self.get()
        )
    }
}

/// The largest frame any known schema produces.
pub const fn largest_frame_bytes() -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < SchemaId::ALL.len() {
        let bytes = SchemaId::ALL[i].frame_bytes();
        if bytes > max {
            max = bytes;
        }
        i += 1;
    }
    max
}

// A limit below the largest event would make `decode` reject valid frames.
const _: () = assert!(largest_frame_bytes() <= FRAME_BYTES_MAX);
// Alignment 1 is what lets the payload sit at odd offset 5 behind the frame
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

/// Writes the 5-byte frame header for `schema` at the end of `out`.
#[inline]
pub fn write_frame_header(out: &mut Vec<u8>, schema: SchemaId) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema.get().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_follow_the_numbering_rule() {
        for schema in SchemaId::ALL {
            assert_eq!(SchemaId::from_u32(schema.get()), Some(schema));
            assert_eq!(schema.get() / 100, schema.kind().code());
            assert!(schema.version() >= 1);
            assert!(schema.frame_bytes() <= FRAME_BYTES_MAX);
        }
        for kind in EventKind::ALL {
            assert_eq!(SchemaId::latest(kind).kind(), kind);
        }
        assert_eq!(SchemaId::from_u32(0), None);
        assert_eq!(SchemaId::from_u32(103), None);
    }

    #[test]
    fn ids_are_sorted_and_unique() {
        assert!(SchemaId::ALL.windows(2).all(|w| w[0].get() < w[1].get()));
    }
}
