//! The events of the trade flow, owned and archived, and their JSON form.
//!
//! Owns one struct per event kind (the owned value is also the source of its
//! rkyv archive), the closed `Event` enum, `EventKind`, the frozen older wire
//! versions, and in-place accessors on the archived forms. Must never grow a
//! heap field (`String`, `Vec`, `Box`): events are fixed-size so decoding is a
//! bounds check plus bytecheck, with no allocation and no pointer chasing.
//! Changing a field of a released struct changes its wire form: add a new
//! version beside it instead (see `OrderCreatedV1`).
//!
//! Every event carries what its consumer needs to act without a lookup, e.g.
//! `StockRejected` carries the account and amount so Payment can refund.

use serde::{Deserialize, Serialize};

use crate::types::{
    AccountId, ClientOrderId, EventId, Money, OrderId, Quantity, Sku, Tag, TimestampNs, ToNative,
};

/// Fields every event starts with.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
)]
#[rkyv(derive(Debug))]
pub struct EventHeader {
    /// Unique id of this event (consumers deduplicate on it).
    pub event_id: EventId,
    /// The order this event belongs to; `OrderId::NONE` for funding and
    /// replenishment.
    pub order_id: OrderId,
    /// The event that caused this one, for tracing a flow; `EventId::NONE` for
    /// events that start one (an order from a client, a funding).
    pub causation_id: EventId,
    /// When the producer created the event, nanoseconds since the Unix epoch.
    pub created_at_ns: TimestampNs,
}

impl ArchivedEventHeader {
    /// See [`EventHeader::event_id`].
    #[inline]
    pub fn event_id(&self) -> EventId {
        self.event_id.to_native()
    }
    /// See [`EventHeader::order_id`].
    #[inline]
    pub fn order_id(&self) -> OrderId {
        self.order_id.to_native()
    }
    /// See [`EventHeader::causation_id`].
    #[inline]
    pub fn causation_id(&self) -> EventId {
        self.causation_id.to_native()
    }
    /// See [`EventHeader::created_at_ns`].
    #[inline]
    pub fn created_at_ns(&self) -> TimestampNs {
        self.created_at_ns.to_native()
    }
}

impl ToNative for ArchivedEventHeader {
    type Native = EventHeader;
    #[inline]
    fn to_native(&self) -> EventHeader {
        EventHeader {
            event_id: self.event_id(),
            order_id: self.order_id(),
            causation_id: self.causation_id(),
            created_at_ns: self.created_at_ns(),
        }
    }
}

/// Declares a field-less enum that is archived as one validated tag byte.
/// Variants are append-only: their order is their wire value.
macro_rules! wire_enum {
    (
        $(#[$doc:meta])*
        $name:ident, $archived:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            Serialize,
            Deserialize,
            rkyv::Archive,
            rkyv::Serialize,
        )]
        #[serde(rename_all = "snake_case")]
        #[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl ToNative for $archived {
            type Native = $name;
            #[inline]
            fn to_native(&self) -> $name {
                match self {
                    $($archived::$variant => $name::$variant,)+
                }
            }
        }
    };
}

wire_enum!(
    /// How long an order may wait for its fill. Added in `order.created` v2;
    /// v1 orders read as `Gtc`, the behaviour v1 had.
    TimeInForce,
    ArchivedTimeInForce {
        /// Good till cancelled.
        Gtc,
        /// Immediate or cancel: fill what can be filled now.
        Ioc,
        /// Fill or kill: fill all now or nothing.
        Fok,
        /// Good for the trading day.
        Day,
    }
);

#[expect(
    clippy::derivable_impls,
    reason = "wire_enum's derive list is shared with enums that have no default"
)]
impl Default for TimeInForce {
    fn default() -> Self {
        TimeInForce::Gtc
    }
}

wire_enum!(
    /// Why Payment refused an order.
    PaymentFailReason,
    ArchivedPaymentFailReason {
        /// The account's balance is below quantity × limit price.
        InsufficientFunds,
        /// No such account has ever been funded.
        UnknownAccount,
        /// Quantity × limit price overflows `i64` minor units.
        AmountOverflow,
        /// The order breaks a domain rule (e.g. quantity or price not positive).
        InvalidOrder,
    }
);

wire_enum!(
    /// Why Inventory refused a paid order.
    StockRejectReason,
    ArchivedStockRejectReason {
        /// Fewer units on hand than the order's quantity.
        InsufficientStock,
        /// The SKU has never been stocked.
        UnknownSku,
        /// The quantity breaks a domain rule (not positive).
        InvalidQuantity,
    }
);

/// Generates in-place accessors on an archived event and its conversion back
/// to the owned struct from one field list, so the two cannot drift apart (a
/// field missing from the list fails to compile in the struct literal).
macro_rules! archived_event {
    ($owned:ident, $archived:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        impl $archived {
            /// The common header, in place.
            #[inline]
            pub fn header(&self) -> &ArchivedEventHeader {
                &self.header
            }
            $(
                #[doc = concat!("Reads `", stringify!($field), "` in place (a copy of its few bytes).")]
                #[inline]
                pub fn $field(&self) -> $ty {
                    ToNative::to_native(&self.$field)
                }
            )*
        }

        impl ToNative for $archived {
            type Native = $owned;
            fn to_native(&self) -> $owned {
                $owned {
                    header: self.header.to_native(),
                    $($field: self.$field(),)*
                }
            }
        }
    };
}

/// Derives shared by every event struct: value semantics, serde (the JSON
/// edge form) and rkyv (the wire form; the archive gets `Debug`).
macro_rules! event_struct {
    ($(#[$doc:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            Serialize,
            Deserialize,
            rkyv::Archive,
            rkyv::Serialize,
        )]
        #[rkyv(derive(Debug))]
        pub struct $name { $($body)* }
    };
}

event_struct!(
    /// A client's order was accepted by the Order service (current version, v2).
    pub struct OrderCreated {
        /// Common header; `order_id` is the new order's id.
        pub header: EventHeader,
        /// The paying account.
        pub account: AccountId,
        /// The instrument bought.
        pub sku: Sku,
        /// Units wanted.
        pub quantity: Quantity,
        /// Highest price per unit the client pays, minor units.
        pub limit_price: Money,
        /// The client's idempotency key.
        pub client_order_id: ClientOrderId,
        /// Added in v2; absent in v1 JSON and bytes, read as `Gtc`.
        #[serde(default)]
        pub time_in_force: TimeInForce,
        /// Added in v2; absent in v1 JSON and bytes, read as empty.
        #[serde(default)]
        pub tag: Tag,
    }
);
archived_event!(
    OrderCreated,
    ArchivedOrderCreated {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        limit_price: Money,
        client_order_id: ClientOrderId,
        time_in_force: TimeInForce,
        tag: Tag,
    }
);

event_struct!(
    /// `order.created` version 1, frozen: kept to read old records and to write
    /// for consumers not yet upgraded. New code builds `OrderCreated`.
    pub struct OrderCreatedV1 {
        /// Common header.
        pub header: EventHeader,
        /// The paying account.
        pub account: AccountId,
        /// The instrument bought.
        pub sku: Sku,
        /// Units wanted.
        pub quantity: Quantity,
        /// Highest price per unit, minor units.
        pub limit_price: Money,
        /// The client's idempotency key.
        pub client_order_id: ClientOrderId,
    }
);
archived_event!(
    OrderCreatedV1,
    ArchivedOrderCreatedV1 {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        limit_price: Money,
        client_order_id: ClientOrderId,
    }
);

impl From<OrderCreatedV1> for OrderCreated {
    fn from(v1: OrderCreatedV1) -> Self {
        OrderCreated {
            header: v1.header,
            account: v1.account,
            sku: v1.sku,
            quantity: v1.quantity,
            limit_price: v1.limit_price,
            client_order_id: v1.client_order_id,
            time_in_force: TimeInForce::Gtc,
            tag: Tag::EMPTY,
        }
    }
}

impl OrderCreated {
    /// The v1 form, if nothing v2 added would be lost (GTC and no tag).
    pub fn to_v1(&self) -> Option<OrderCreatedV1> {
        (self.time_in_force == TimeInForce::Gtc && self.tag == Tag::EMPTY).then_some(
            OrderCreatedV1 {
                header: self.header,
                account: self.account,
                sku: self.sku,
                quantity: self.quantity,
                limit_price: self.limit_price,
                client_order_id: self.client_order_id,
            },
        )
    }
}

event_struct!(
    /// The client changed an open order's quantity or limit price (published
    /// on the order-updated stream with `OrderCancelled`).
    pub struct OrderAmended {
        /// Common header.
        pub header: EventHeader,
        /// The order's account.
        pub account: AccountId,
        /// The order's instrument.
        pub sku: Sku,
        /// New quantity.
        pub quantity: Quantity,
        /// New limit price, minor units.
        pub limit_price: Money,
    }
);
archived_event!(
    OrderAmended,
    ArchivedOrderAmended {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        limit_price: Money,
    }
);

event_struct!(
    /// The client cancelled an open order.
    pub struct OrderCancelled {
        /// Common header.
        pub header: EventHeader,
        /// The order's account.
        pub account: AccountId,
        /// The order's instrument.
        pub sku: Sku,
    }
);
archived_event!(
    OrderCancelled,
    ArchivedOrderCancelled {
        account: AccountId,
        sku: Sku,
    }
);

event_struct!(
    /// Payment debited the order's cost; Inventory now takes the units.
    pub struct PaymentCompleted {
        /// Common header.
        pub header: EventHeader,
        /// The debited account.
        pub account: AccountId,
        /// The instrument bought.
        pub sku: Sku,
        /// Units paid for.
        pub quantity: Quantity,
        /// Amount debited, minor units.
        pub amount: Money,
    }
);
archived_event!(
    PaymentCompleted,
    ArchivedPaymentCompleted {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        amount: Money,
    }
);

event_struct!(
    /// Payment refused the order (terminal outcome: rejected for funds).
    pub struct PaymentFailed {
        /// Common header.
        pub header: EventHeader,
        /// The account.
        pub account: AccountId,
        /// The instrument.
        pub sku: Sku,
        /// Units ordered.
        pub quantity: Quantity,
        /// Amount that could not be debited, minor units.
        pub amount: Money,
        /// Why.
        pub reason: PaymentFailReason,
    }
);
archived_event!(
    PaymentFailed,
    ArchivedPaymentFailed {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        amount: Money,
        reason: PaymentFailReason,
    }
);

event_struct!(
    /// Payment gave the money back after Inventory rejected the order
    /// (terminal outcome: rejected for stock and refunded).
    pub struct PaymentRefunded {
        /// Common header.
        pub header: EventHeader,
        /// The credited account.
        pub account: AccountId,
        /// The instrument.
        pub sku: Sku,
        /// Units that were not delivered.
        pub quantity: Quantity,
        /// Amount credited back, minor units.
        pub amount: Money,
    }
);
archived_event!(
    PaymentRefunded,
    ArchivedPaymentRefunded {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        amount: Money,
    }
);

event_struct!(
    /// Inventory took the units (terminal outcome: filled).
    pub struct StockUpdated {
        /// Common header.
        pub header: EventHeader,
        /// The buying account.
        pub account: AccountId,
        /// The instrument.
        pub sku: Sku,
        /// Units taken.
        pub quantity: Quantity,
        /// Units of the SKU left on hand afterwards.
        pub remaining: Quantity,
        /// Value of the fill, minor units (what the audit sums as filled value).
        pub amount: Money,
    }
);
archived_event!(
    StockUpdated,
    ArchivedStockUpdated {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        remaining: Quantity,
        amount: Money,
    }
);

event_struct!(
    /// Inventory refused a paid order; Payment refunds `amount` to `account`.
    pub struct StockRejected {
        /// Common header.
        pub header: EventHeader,
        /// The account to refund.
        pub account: AccountId,
        /// The instrument.
        pub sku: Sku,
        /// Units ordered.
        pub quantity: Quantity,
        /// Amount to refund, minor units.
        pub amount: Money,
        /// Why.
        pub reason: StockRejectReason,
    }
);
archived_event!(
    StockRejected,
    ArchivedStockRejected {
        account: AccountId,
        sku: Sku,
        quantity: Quantity,
        amount: Money,
        reason: StockRejectReason,
    }
);

event_struct!(
    /// Cash was paid into an account.
    pub struct AccountFunded {
        /// Common header; `order_id` is `OrderId::NONE`.
        pub header: EventHeader,
        /// The credited account.
        pub account: AccountId,
        /// Amount credited, minor units.
        pub amount: Money,
    }
);
archived_event!(
    AccountFunded,
    ArchivedAccountFunded {
        account: AccountId,
        amount: Money,
    }
);

event_struct!(
    /// Units of an instrument were added to the desk's inventory.
    pub struct StockReplenished {
        /// Common header; `order_id` is `OrderId::NONE`.
        pub header: EventHeader,
        /// The instrument.
        pub sku: Sku,
        /// Units added.
        pub quantity: Quantity,
    }
);
archived_event!(
    StockReplenished,
    ArchivedStockReplenished {
        sku: Sku,
        quantity: Quantity,
    }
);

/// The kind of an event, independent of its wire version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `order.created`
    OrderCreated,
    /// `order.amended`
    OrderAmended,
    /// `order.cancelled`
    OrderCancelled,
    /// `payment.completed`
    PaymentCompleted,
    /// `payment.failed`
    PaymentFailed,
    /// `payment.refunded`
    PaymentRefunded,
    /// `stock.updated`
    StockUpdated,
    /// `stock.rejected`
    StockRejected,
    /// `account.funded`
    AccountFunded,
    /// `stock.replenished`
    StockReplenished,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 10] = [
        EventKind::OrderCreated,
        EventKind::OrderAmended,
        EventKind::OrderCancelled,
        EventKind::PaymentCompleted,
        EventKind::PaymentFailed,
        EventKind::PaymentRefunded,
        EventKind::StockUpdated,
        EventKind::StockRejected,
        EventKind::AccountFunded,
        EventKind::StockReplenished,
    ];

    /// The dotted name, as in the JSON `type` field. (Topic names are the
    /// engine's business: amended and cancelled share the order-updated topic.)
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order.created",
            EventKind::OrderAmended => "order.amended",
            EventKind::OrderCancelled => "order.cancelled",
            EventKind::PaymentCompleted => "payment.completed",
            EventKind::PaymentFailed => "payment.failed",
            EventKind::PaymentRefunded => "payment.refunded",
            EventKind::StockUpdated => "stock.updated",
            EventKind::StockRejected => "stock.rejected",
            EventKind::AccountFunded => "account.funded",
            EventKind::StockReplenished => "stock.replenished",
        }
    }

    /// The kind with this dotted name.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind's number: the first byte of its rkyv type tag (and of its
    /// pre-upgrade table ids, `code × 100 + version`).
    pub const fn code(self) -> u32 {
        match self {
            EventKind::OrderCreated => 1,
            EventKind::OrderAmended => 2,
            EventKind::OrderCancelled => 3,
            EventKind::PaymentCompleted => 4,
            EventKind::PaymentFailed => 5,
            EventKind::PaymentRefunded => 6,
            EventKind::StockUpdated => 7,
            EventKind::StockRejected => 8,
            EventKind::AccountFunded => 9,
            EventKind::StockReplenished => 10,
        }
    }

    /// True if events of this kind belong to an order (non-zero `order_id`);
    /// funding and replenishment do not.
    pub const fn is_order_scoped(self) -> bool {
        !matches!(self, EventKind::AccountFunded | EventKind::StockReplenished)
    }
}

impl core::fmt::Display for EventKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Any event, owned. Its serde form is the JSON edge form:
/// `{"type": "order.created", "header": {...}, "account": 7, ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// See [`OrderCreated`].
    #[serde(rename = "order.created")]
    OrderCreated(OrderCreated),
    /// See [`OrderAmended`].
    #[serde(rename = "order.amended")]
    OrderAmended(OrderAmended),
    /// See [`OrderCancelled`].
    #[serde(rename = "order.cancelled")]
    OrderCancelled(OrderCancelled),
    /// See [`PaymentCompleted`].
    #[serde(rename = "payment.completed")]
    PaymentCompleted(PaymentCompleted),
    /// See [`PaymentFailed`].
    #[serde(rename = "payment.failed")]
    PaymentFailed(PaymentFailed),
    /// See [`PaymentRefunded`].
    #[serde(rename = "payment.refunded")]
    PaymentRefunded(PaymentRefunded),
    /// See [`StockUpdated`].
    #[serde(rename = "stock.updated")]
    StockUpdated(StockUpdated),
    /// See [`StockRejected`].
    #[serde(rename = "stock.rejected")]
    StockRejected(StockRejected),
    /// See [`AccountFunded`].
    #[serde(rename = "account.funded")]
    AccountFunded(AccountFunded),
    /// See [`StockReplenished`].
    #[serde(rename = "stock.replenished")]
    StockReplenished(StockReplenished),
}

/// A JSON text that is not a valid event (syntax, unknown `type`, missing or
/// ill-formed field).
#[derive(Debug, thiserror::Error)]
#[error("invalid event JSON: {0}")]
pub struct JsonError(#[from] serde_json::Error);

impl Event {
    /// The event's kind.
    pub const fn kind(&self) -> EventKind {
        match self {
            Event::OrderCreated(_) => EventKind::OrderCreated,
            Event::OrderAmended(_) => EventKind::OrderAmended,
            Event::OrderCancelled(_) => EventKind::OrderCancelled,
            Event::PaymentCompleted(_) => EventKind::PaymentCompleted,
            Event::PaymentFailed(_) => EventKind::PaymentFailed,
            Event::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Event::StockUpdated(_) => EventKind::StockUpdated,
            Event::StockRejected(_) => EventKind::StockRejected,
            Event::AccountFunded(_) => EventKind::AccountFunded,
            Event::StockReplenished(_) => EventKind::StockReplenished,
        }
    }

    /// The common header.
    pub const fn header(&self) -> &EventHeader {
        match self {
            Event::OrderCreated(e) => &e.header,
            Event::OrderAmended(e) => &e.header,
            Event::OrderCancelled(e) => &e.header,
            Event::PaymentCompleted(e) => &e.header,
            Event::PaymentFailed(e) => &e.header,
            Event::PaymentRefunded(e) => &e.header,
            Event::StockUpdated(e) => &e.header,
            Event::StockRejected(e) => &e.header,
            Event::AccountFunded(e) => &e.header,
            Event::StockReplenished(e) => &e.header,
        }
    }

    /// The account the event concerns, Payment's routing key; `None` for
    /// replenishment.
    pub const fn account(&self) -> Option<AccountId> {
        match self {
            Event::OrderCreated(e) => Some(e.account),
            Event::OrderAmended(e) => Some(e.account),
            Event::OrderCancelled(e) => Some(e.account),
            Event::PaymentCompleted(e) => Some(e.account),
            Event::PaymentFailed(e) => Some(e.account),
            Event::PaymentRefunded(e) => Some(e.account),
            Event::StockUpdated(e) => Some(e.account),
            Event::StockRejected(e) => Some(e.account),
            Event::AccountFunded(e) => Some(e.account),
            Event::StockReplenished(_) => None,
        }
    }

    /// The instrument the event concerns, Inventory's routing key; `None` for
    /// funding.
    pub const fn sku(&self) -> Option<Sku> {
        match self {
            Event::OrderCreated(e) => Some(e.sku),
            Event::OrderAmended(e) => Some(e.sku),
            Event::OrderCancelled(e) => Some(e.sku),
            Event::PaymentCompleted(e) => Some(e.sku),
            Event::PaymentFailed(e) => Some(e.sku),
            Event::PaymentRefunded(e) => Some(e.sku),
            Event::StockUpdated(e) => Some(e.sku),
            Event::StockRejected(e) => Some(e.sku),
            Event::AccountFunded(_) => None,
            Event::StockReplenished(e) => Some(e.sku),
        }
    }

    /// The JSON edge form (one line, no trailing newline).
    pub fn to_json(&self) -> Result<String, JsonError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses the JSON edge form, validating every field (SKU alphabet, id
    /// widths). Domain rules are not checked: a negative quantity parses.
    pub fn from_json(json: &[u8]) -> Result<Event, JsonError> {
        Ok(serde_json::from_slice(json)?)
    }
}

macro_rules! event_from {
    ($($variant:ident),+) => {
        $(impl From<$variant> for Event {
            fn from(e: $variant) -> Event {
                Event::$variant(e)
            }
        })+
    };
}
event_from!(
    OrderCreated,
    OrderAmended,
    OrderCancelled,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    StockUpdated,
    StockRejected,
    AccountFunded,
    StockReplenished
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_match_serde_tags() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::from_name("order.updated"), None);
    }

    #[test]
    fn v1_json_without_v2_fields_reads_with_defaults() {
        let json = br#"{"type":"order.created",
            "header":{"event_id":"0000000000000000000000000000002a","order_id":9,
                      "causation_id":"00000000000000000000000000000000","created_at_ns":5},
            "account":7,"sku":"AAPL","quantity":3,"limit_price":1500,"client_order_id":"c-1"}"#;
        let event = Event::from_json(json).expect("v1-shaped JSON parses");
        let Event::OrderCreated(order) = event else {
            panic!("wrong kind: {event:?}");
        };
        assert_eq!(order.time_in_force, TimeInForce::Gtc);
        assert_eq!(order.tag, Tag::EMPTY);
        assert_eq!(order.header.event_id, EventId(42));
        assert_eq!(order.sku.as_str(), "AAPL");
    }

    #[test]
    fn json_rejects_ill_formed_fields() {
        let bad_sku = br#"{"type":"stock.replenished",
            "header":{"event_id":"0000000000000000000000000000002a","order_id":0,
                      "causation_id":"00000000000000000000000000000000","created_at_ns":5},
            "sku":"aapl","quantity":3}"#;
        assert!(Event::from_json(bad_sku).is_err());
        assert!(Event::from_json(br#"{"type":"order.updated"}"#).is_err());
        assert!(Event::from_json(b"").is_err());
    }
}
