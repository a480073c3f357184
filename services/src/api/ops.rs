//! The API's operations, independent of transport: REST and gRPC both parse
//! into `validate`'s inputs and call these.
//!
//! Owns: what each operation checks against state (instrument known,
//! client order id reuse, the order an amend or cancel names), which event
//! it publishes on which topic under which key and partition, the ids of
//! those events, and routing reads to the partition that holds the state.
//! Must never: publish before every check passed, answer before the
//! publisher resolved, or read state other than through the
//! [`StateSource`] (bounded by `QUERIES_IN_FLIGHT_MAX`).
//!
//! # Event ids
//! Client-originated events start a flow, so their ids are fresh: a random
//! 128-bit base per process plus a counter. Fundings and replenishments
//! given an `idempotency_key` get an id derived from it instead, so a retry
//! is the same event and Payment or Inventory applies it once (they
//! deduplicate on the event id). A create needs no such key: its order id
//! is `order_id_for(account, client_order_id)` and the stages absorb a
//! second create of the same order.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use codecs::{
    encode_to_vec, AccountFunded, AccountId, ClientOrderId, Event, EventHeader, EventId, Money,
    OrderAmended, OrderCancelled, OrderCreated, OrderId, Quantity, Sku, StockReplenished, Tag,
    TimeInForce, TimestampNs,
};
use engine::partitioner::partition_for;
use engine::PartitionId;
use tokio::sync::Semaphore;

use super::error::{ErrorCode, Reject};
use super::publish::{OutgoingRecord, Publisher};
use super::source::{Owned, StateSource};
use super::validate::{NewOrder, TopUp};
use super::{ApiConfig, InstrumentPolicy, QUERIES_IN_FLIGHT_MAX};
use crate::ids::order_id_for;
use crate::order::OrderRecord;
use crate::topics::{account_key, sku_key, topic_of};

/// High words of ids derived from idempotency keys ("fundkey0",
/// "replkey0"): they keep the two kinds apart from each other, and from the
/// random ids only by 2^-64 odds, which is the point of 128 bits.
const FUNDING_KEY_TAG: u64 = 0x6675_6e64_6b65_7930;
const REPLENISH_KEY_TAG: u64 = 0x7265_706c_6b65_7930;

/// What a create did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Created {
    pub order_id: OrderId,
    pub account: AccountId,
    /// This node already held the same order: nothing was published.
    pub duplicate: bool,
}

/// Amend or cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Amend,
    Cancel,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Amend => "amend",
            RequestKind::Cancel => "cancel",
        }
    }
}

/// Fresh event ids: a random base per process, then a counter.
struct EventIds {
    base: u128,
    next: AtomicU64,
}

impl EventIds {
    fn new() -> Self {
        // RandomState is seeded from the OS's randomness; two hashes of it
        // make a 128-bit base without a new dependency. Time and pid guard
        // against a platform where it is not random.
        let seed = RandomState::new();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let high = seed.hash_one((nanos, std::process::id(), 1u8));
        let low = seed.hash_one((nanos, std::process::id(), 2u8));
        EventIds {
            base: (u128::from(high) << 64) | u128::from(low),
            next: AtomicU64::new(0),
        }
    }

    fn fresh(&self) -> EventId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = self.base.wrapping_add(u128::from(n));
        EventId(if id == 0 { 1 } else { id })
    }
}

fn now_ns() -> TimestampNs {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    TimestampNs(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The operations, shared by both servers.
pub(crate) struct OrderApi {
    source: Arc<dyn StateSource>,
    publisher: Arc<dyn Publisher>,
    partitions: i32,
    instruments: InstrumentPolicy,
    queries: Semaphore,
    ids: EventIds,
    /// Who may call; off unless a token file is configured.
    auth: super::auth::Auth,
    /// The published topics written as Avro, with their registry ids (the
    /// core map's `[wire.value_format]`); the others are rkyv.
    wire: engine::wire::WireFormats,
}

impl OrderApi {
    pub fn new(
        config: &ApiConfig,
        source: Arc<dyn StateSource>,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        OrderApi {
            source,
            publisher,
            partitions: config.partitions.max(1),
            instruments: config.instruments.clone(),
            queries: Semaphore::new(QUERIES_IN_FLIGHT_MAX),
            ids: EventIds::new(),
            auth: super::auth::Auth::off(),
            wire: config.wire.clone(),
        }
    }

    /// The same operations behind `auth` (see `auth`; off by default).
    pub fn with_auth(mut self, auth: super::auth::Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn auth(&self) -> &super::auth::Auth {
        &self.auth
    }

    fn account_partition(&self, account: AccountId) -> PartitionId {
        partition_for(&account_key(account), self.partitions)
    }

    fn sku_partition(&self, sku: &Sku) -> PartitionId {
        partition_for(sku_key(sku), self.partitions)
    }

    /// Runs a blocking read of the state source on a blocking thread, at
    /// most `QUERIES_IN_FLIGHT_MAX` at once.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn StateSource) -> Owned<T> + Send + 'static,
    ) -> Result<Owned<T>, Reject> {
        let _permit = self
            .queries
            .acquire()
            .await
            .map_err(|_| Reject::internal("the query limiter closed"))?;
        let source = Arc::clone(&self.source);
        tokio::task::spawn_blocking(move || read(source.as_ref()))
            .await
            .map_err(|e| Reject::internal(format!("state read failed: {e}")))
    }

    /// A read that must be answered here: ownership errors otherwise.
    async fn read_here<T: Send + 'static>(
        &self,
        partition: PartitionId,
        read: impl FnOnce(&dyn StateSource) -> Owned<T> + Send + 'static,
    ) -> Result<T, Reject> {
        match self.read(read).await? {
            Owned::Here(answer) => Ok(answer),
            Owned::OtherNode => Err(Reject::not_here(partition, true)),
            Owned::Moving => Err(Reject::not_here(partition, false)),
        }
    }

    async fn publish(
        &self,
        event: &Event,
        key: Vec<u8>,
        partition: PartitionId,
    ) -> Result<(), Reject> {
        let topic = topic_of(event.kind());
        let encoding = |e: String| Reject::internal(format!("encoding {}: {e}", event.kind()));
        // Validated as rkyv either way: Avro records obey the same rules.
        let rkyv = encode_to_vec(event).map_err(|e| encoding(e.to_string()))?;
        let payload = match self.wire.writer(topic) {
            None => rkyv,
            Some(avro) => codecs::avro::frame(
                avro.registry_id,
                &avro
                    .schema
                    .encode(event)
                    .map_err(|e| encoding(e.to_string()))?,
            ),
        };
        let record = OutgoingRecord {
            topic,
            partition,
            key,
            payload,
        };
        self.publisher
            .publish(record)
            .await
            .map_err(|e| Reject::new(ErrorCode::PublishFailed, e.to_string()))
    }

    fn header(&self, order: OrderId) -> EventHeader {
        EventHeader {
            event_id: self.ids.fresh(),
            order_id: order,
            causation_id: EventId::NONE,
            created_at_ns: now_ns(),
        }
    }

    /// Refuses an instrument the policy does not know (see `InstrumentPolicy`).
    async fn check_instrument(&self, sku: Sku, replenishing: bool) -> Result<(), Reject> {
        let unknown = || {
            Reject::field(
                ErrorCode::UnknownInstrument,
                "sku",
                format!("{sku} is not an instrument this deployment trades"),
            )
        };
        match &self.instruments {
            InstrumentPolicy::AnyWellFormed => Ok(()),
            InstrumentPolicy::Listed(listed) => {
                if listed.contains(&sku) {
                    Ok(())
                } else {
                    Err(unknown())
                }
            }
            // A replenishment is what makes an instrument known.
            InstrumentPolicy::Inventory if replenishing => Ok(()),
            InstrumentPolicy::Inventory => {
                let partition = self.sku_partition(&sku);
                match self.read(move |s| s.on_hand(partition, sku)).await? {
                    Owned::Here(Some(_)) => Ok(()),
                    Owned::Here(None) => Err(unknown()),
                    // Not ours to tell: Inventory rejects an unknown sku and
                    // Payment refunds, so accepting is safe.
                    Owned::OtherNode | Owned::Moving => Ok(()),
                }
            }
        }
    }

    /// Create: publish `order.created` unless this node already holds the
    /// same order (then nothing is published) or the client order id names
    /// another one (409).
    pub async fn create_order(&self, order: NewOrder) -> Result<Created, Reject> {
        let order_id = order_id_for(order.account, &order.client_order_id);
        let partition = self.account_partition(order.account);
        // Both reads at once: they usually go to different shards.
        let (instrument, existing) = tokio::join!(
            self.check_instrument(order.sku, false),
            self.read(move |s| s.order(partition, order_id)),
        );
        instrument?;
        let existing = match existing? {
            Owned::Here(record) => record.filter(OrderRecord::is_created),
            // The owner absorbs a repeat; no need to know here.
            Owned::OtherNode | Owned::Moving => None,
        };
        if let Some(record) = existing {
            return if same_order(&record, &order) {
                Ok(Created {
                    order_id,
                    account: order.account,
                    duplicate: true,
                })
            } else {
                Err(Reject::field(
                    ErrorCode::ClientOrderIdConflict,
                    "client_order_id",
                    format!(
                        "client order id {} of account {} already names order {} ({} × {} at {})",
                        order.client_order_id,
                        order.account,
                        order_id.0,
                        record.sku,
                        record.quantity,
                        record.limit_price
                    ),
                ))
            };
        }
        let event = Event::OrderCreated(OrderCreated {
            header: self.header(order_id),
            account: order.account,
            sku: order.sku,
            quantity: order.quantity,
            limit_price: order.limit_price,
            client_order_id: order.client_order_id,
            time_in_force: TimeInForce::Gtc,
            tag: Tag::EMPTY,
        });
        self.publish(&event, account_key(order.account).to_vec(), partition)
            .await?;
        Ok(Created {
            order_id,
            account: order.account,
            duplicate: false,
        })
    }

    /// The order as this node's Order stage knows it.
    pub async fn order(
        &self,
        account: AccountId,
        order_id: OrderId,
    ) -> Result<OrderRecord, Reject> {
        let partition = self.account_partition(account);
        let record = self
            .read_here(partition, move |s| s.order(partition, order_id))
            .await?;
        match record {
            Some(record) if record.account == account => Ok(record),
            _ => Err(Reject::field(
                ErrorCode::OrderNotFound,
                "order_id",
                format!("account {account} has no order {}", order_id.0),
            )),
        }
    }

    /// Amend or cancel: a request on an order this node holds (its sku
    /// comes from the record), published on `order.updated`.
    pub async fn request(
        &self,
        account: AccountId,
        order_id: OrderId,
        request: Option<(Quantity, Money)>,
    ) -> Result<RequestKind, Reject> {
        let record = self.order(account, order_id).await?;
        let header = self.header(order_id);
        let (event, kind) = match request {
            Some((quantity, limit_price)) => (
                Event::OrderAmended(OrderAmended {
                    header,
                    account,
                    sku: record.sku,
                    quantity,
                    limit_price,
                }),
                RequestKind::Amend,
            ),
            None => (
                Event::OrderCancelled(OrderCancelled {
                    header,
                    account,
                    sku: record.sku,
                }),
                RequestKind::Cancel,
            ),
        };
        let partition = self.account_partition(account);
        self.publish(&event, account_key(account).to_vec(), partition)
            .await?;
        Ok(kind)
    }

    /// Fund: publish `account.funded`; returns the event id.
    pub async fn fund(&self, account: AccountId, funding: TopUp) -> Result<EventId, Reject> {
        let event_id = match funding.idempotency_key {
            Some(key) => keyed_event_id(FUNDING_KEY_TAG, account, &key),
            None => self.ids.fresh(),
        };
        let event = Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id,
                ..self.header(OrderId::NONE)
            },
            account,
            amount: Money(funding.amount),
        });
        let partition = self.account_partition(account);
        self.publish(&event, account_key(account).to_vec(), partition)
            .await?;
        Ok(event_id)
    }

    /// Replenish: publish `stock.replenished`; returns the event id.
    pub async fn replenish(&self, sku: Sku, replenishment: TopUp) -> Result<EventId, Reject> {
        self.check_instrument(sku, true).await?;
        let event_id = match replenishment.idempotency_key {
            Some(key) => {
                // Scope the key to the instrument: the sku as a client order
                // id (its alphabet is a subset) hashed into an account word.
                let scope = ClientOrderId::new(sku.as_str())
                    .map_err(|e| Reject::internal(format!("sku {sku} as a key scope: {e}")))?;
                let scope = AccountId(order_id_for(AccountId(0), &scope).0);
                keyed_event_id(REPLENISH_KEY_TAG, scope, &key)
            }
            None => self.ids.fresh(),
        };
        let event = Event::StockReplenished(StockReplenished {
            header: EventHeader {
                event_id,
                ..self.header(OrderId::NONE)
            },
            sku,
            quantity: Quantity(replenishment.amount),
        });
        let partition = self.sku_partition(&sku);
        self.publish(&event, sku_key(&sku).to_vec(), partition)
            .await?;
        Ok(event_id)
    }

    /// An account's balance.
    pub async fn balance(&self, account: AccountId) -> Result<Money, Reject> {
        let partition = self.account_partition(account);
        self.read_here(partition, move |s| s.balance(partition, account))
            .await?
            .ok_or_else(|| {
                Reject::field(
                    ErrorCode::AccountNotFound,
                    "account",
                    format!("account {account} was never funded"),
                )
            })
    }

    /// An instrument's units on hand.
    pub async fn on_hand(&self, sku: Sku) -> Result<Quantity, Reject> {
        let partition = self.sku_partition(&sku);
        self.read_here(partition, move |s| s.on_hand(partition, sku))
            .await?
            .ok_or_else(|| {
                Reject::field(
                    ErrorCode::InstrumentNotFound,
                    "sku",
                    format!("{sku} was never stocked"),
                )
            })
    }
}

/// Whether `record` is the order `order` would create (a client's retry).
fn same_order(record: &OrderRecord, order: &NewOrder) -> bool {
    record.account == order.account
        && record.sku == order.sku
        && record.quantity == order.quantity
        && record.limit_price == order.limit_price
        && record.client_order_id == Some(order.client_order_id)
}

/// The event id of a keyed funding or replenishment: `tag` in the high
/// word, the stable `order_id_for` hash of (scope, key) in the low word.
fn keyed_event_id(tag: u64, scope: AccountId, key: &ClientOrderId) -> EventId {
    EventId((u128::from(tag) << 64) | u128::from(order_id_for(scope, key).0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_and_keyed_ids_stable() -> Result<(), codecs::ValueError> {
        let ids = EventIds::new();
        let a = ids.fresh();
        assert_ne!(a, ids.fresh());
        assert!(!a.is_none());
        assert_ne!(EventIds::new().fresh(), a);
        let key = ClientOrderId::new("k-1")?;
        let funded = keyed_event_id(FUNDING_KEY_TAG, AccountId(7), &key);
        assert_eq!(funded, keyed_event_id(FUNDING_KEY_TAG, AccountId(7), &key));
        assert_ne!(funded, keyed_event_id(FUNDING_KEY_TAG, AccountId(8), &key));
        assert_ne!(
            funded,
            keyed_event_id(REPLENISH_KEY_TAG, AccountId(7), &key)
        );
        Ok(())
    }
}
