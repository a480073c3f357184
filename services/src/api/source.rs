//! Where the API reads state: a [`StateSource`] answers for one partition,
//! or says the partition is not held here. The engine is one (its reads run
//! on the owning shard's thread through `Engine::query`); tests use fakes.
//!
//! Owns: the trait, `Owned` (here / another node / moving), and the
//! engine's implementation over `TradeFlowState`.
//! Must never: hand out references into a shard's state (every answer is a
//! copy made on the shard's thread), or block a shard: a read is one hash
//! lookup, and the caller bounds how many are in flight.
//!
//! Lives on: the API's blocking threads (calls block up to `QUERY_TIMEOUT_MS`).

use std::time::Duration;

use codecs::{AccountId, Money, OrderId, Quantity, Sku};
use engine::runtime::{Engine, ShardStatus};
use engine::PartitionId;

use super::QUERY_TIMEOUT_MS;
use crate::flow::TradeFlowState;
use crate::order::OrderRecord;

/// A read of one partition's state, and whether this node holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned<T> {
    /// A local shard owns the partition; this is its answer.
    Here(T),
    /// No local shard owns it while all shards run: another node does.
    OtherNode,
    /// No answer now, but it may come shortly: some shard is starting or
    /// restarting, or the local owner did not answer in time (busy in a
    /// commit that waits on a broker).
    Moving,
}

/// The in-memory state the API answers from. Calls block (at most about
/// `QUERY_TIMEOUT_MS`); the API runs them on blocking threads.
pub trait StateSource: Send + Sync + 'static {
    /// The Order stage's record of `order`, from `partition` (the account's).
    fn order(&self, partition: PartitionId, order: OrderId) -> Owned<Option<OrderRecord>>;
    /// Payment's balance of `account`, if it was ever funded.
    fn balance(&self, partition: PartitionId, account: AccountId) -> Owned<Option<Money>>;
    /// Inventory's units of `sku` on hand, if it was ever stocked.
    fn on_hand(&self, partition: PartitionId, sku: Sku) -> Owned<Option<Quantity>>;
}

impl StateSource for Engine {
    fn order(&self, partition: PartitionId, order: OrderId) -> Owned<Option<OrderRecord>> {
        read(self, partition, move |state| {
            state.orders.order(order).copied()
        })
    }

    fn balance(&self, partition: PartitionId, account: AccountId) -> Owned<Option<Money>> {
        read(self, partition, move |state| {
            state.accounts.balance(account)
        })
    }

    fn on_hand(&self, partition: PartitionId, sku: Sku) -> Owned<Option<Quantity>> {
        read(self, partition, move |state| state.stock.on_hand(&sku))
    }
}

fn read<T: Send + 'static>(
    engine: &Engine,
    partition: PartitionId,
    read: impl Fn(&TradeFlowState) -> T + Send + Clone + 'static,
) -> Owned<T> {
    let timeout = Duration::from_millis(QUERY_TIMEOUT_MS);
    match engine.query::<TradeFlowState, _, _>(partition, read, timeout) {
        Ok(Some(answer)) => Owned::Here(answer),
        // `query` answers None both when no shard owns the partition and
        // when the owner did not answer in time (a commit stuck on a broker
        // that is failing over); shard status and ownership separate a node
        // that is (re)starting or busy from one that does not own it.
        Ok(None) | Err(_) => {
            let all_running = engine
                .statuses()
                .iter()
                .all(|(_, status)| *status == ShardStatus::Running);
            if all_running && !engine.may_own(partition) {
                Owned::OtherNode
            } else {
                Owned::Moving
            }
        }
    }
}
