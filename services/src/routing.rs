//! The checks every stage makes before it touches state, and the one way
//! stages emit events: on the flow's topic for the event's kind, keyed by the
//! state that consumes it, with a header derived from the causing event.
//!
//! Owns: "did this event arrive where its key says it lives" (topic and
//! partition), the derived header of an output event, and turning encode
//! failures into `Rejection`s.
//! Must never: decide a business outcome, or let a record whose key belongs
//! to another partition reach a store: the state for a key lives in exactly
//! one partition, and a misrouted record would split it in two.
//!
//! Lives on: the core of the shard processing the record.

use codecs::{ArchivedEventHeader, Event, EventHeader, EventKind, EventRef, OrderId};
use engine::partitioner::partition_for;
use engine::stage::{ErrorClass, Input, Outbox, Rejection};

use crate::ids::derived_event_id;
use crate::topics::{account_key, sku_key, topic_of};

/// Rejects an event of `kind` that arrived on a topic other than its own
/// (`topics::topic_of`): a producer wrote it to the wrong place.
pub(crate) fn expect_topic(input: &Input<'_>, kind: EventKind) -> Result<(), Rejection> {
    let expected = topic_of(kind);
    if input.topic_name == expected {
        Ok(())
    } else {
        Err(Rejection::user_data(format!(
            "{kind} belongs on {expected}, not on {}",
            input.topic_name
        )))
    }
}

/// Rejects an event whose routing key (`key`, as `topics` builds it) belongs
/// to another partition than the one it arrived on.
pub(crate) fn expect_partition(
    input: &Input<'_>,
    key: &[u8],
    partitions: i32,
) -> Result<(), Rejection> {
    let home = partition_for(key, partitions);
    if home == input.partition {
        Ok(())
    } else {
        Err(Rejection::user_data(format!(
            "event keyed for {home} arrived on {} of {}: its producer did not partition \
             by the flow's key (topics::account_key / topics::sku_key)",
            input.partition, input.topic_name,
        )))
    }
}

/// Rejects an event that arrived on another partition than its key's: the
/// sku for `payment.completed` and `stock.replenished` (Inventory's state),
/// the account for everything else (Payment's and the Order stage's).
pub(crate) fn expect_home_partition(
    input: &Input<'_>,
    event: EventRef<'_>,
    partitions: i32,
) -> Result<(), Rejection> {
    match event {
        EventRef::PaymentCompleted(e) => expect_partition(input, sku_key(&e.sku()), partitions),
        EventRef::StockReplenished(e) => expect_partition(input, sku_key(&e.sku()), partitions),
        other => match other.account() {
            Some(account) => expect_partition(input, &account_key(account), partitions),
            None => Err(Rejection::user_data(format!(
                "{} has neither account nor sku to route by",
                other.kind()
            ))),
        },
    }
}

/// The order an order-scoped event belongs to; `OrderId::NONE` is a broken rule.
pub(crate) fn require_order(
    header: &ArchivedEventHeader,
    kind: EventKind,
) -> Result<OrderId, Rejection> {
    let order = header.order_id();
    if order.is_none() {
        Err(Rejection::user_data(format!("{kind} without an order id")))
    } else {
        Ok(order)
    }
}

/// The header of the `kind` event a stage emits because of `cause`: a
/// deterministic id, the same order, the cause as causation, and the cause's
/// creation time carried forward (a replay then emits byte-identical events,
/// and the time an order was accepted reaches its terminal event, from which
/// the loadgen measures end-to-end latency).
pub(crate) fn caused_header(cause: &ArchivedEventHeader, kind: EventKind) -> EventHeader {
    EventHeader {
        event_id: derived_event_id(cause.event_id(), kind),
        order_id: cause.order_id(),
        causation_id: cause.event_id(),
        created_at_ns: cause.created_at_ns(),
    }
}

/// Emits `event` on its kind's topic, keyed by `key`.
pub(crate) fn emit(out: &mut Outbox, key: &[u8], event: &Event) -> Result<(), Rejection> {
    out.emit(topic_of(event.kind()), key, event)
        .map_err(|e| Rejection {
            // Stages only build events from validated values; failing to
            // encode one is our bug, not the producer's.
            class: ErrorClass::Internal,
            reason: format!("encoding {}: {e}", event.kind()),
        })
}

/// A broken invariant of our own state (a debited order whose account is
/// missing): dead-lettered as internal so operators see it is not bad input.
pub(crate) fn internal(reason: String) -> Rejection {
    Rejection {
        class: ErrorClass::Internal,
        reason,
    }
}
