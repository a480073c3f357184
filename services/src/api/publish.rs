//! The seam between the API and Kafka: a [`Publisher`] takes one encoded
//! record and resolves once Kafka acknowledged it, or says why not.
//!
//! Owns: the `Publisher` trait, the record it takes, and `PublishError`.
//! Must never: resolve `Ok` before the record is acknowledged (the API's
//! 202 promises the event is durable in Kafka), or retry on its own in a
//! way that could reorder two records of one key (the Kafka implementation
//! relies on librdkafka's idempotent producer for retries).

use std::future::Future;
use std::pin::Pin;

use engine::PartitionId;

/// One event, encoded, with its topic, key and the partition its key hashes
/// to (`partitioner::partition_for`, the partition the owning shard checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub topic: &'static str,
    pub partition: PartitionId,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Why a record was not acknowledged. Retrying the request is safe: creates
/// are idempotent on the client order id, fundings and replenishments on
/// their idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("kafka did not acknowledge the event: {0}")]
    NotAcknowledged(String),
}

/// What `publish` returns: a boxed future, so the trait stays object-safe
/// and tests can swap in a recording publisher.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Publishes records and waits for their acknowledgement.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, record: OutgoingRecord) -> PublishFuture<'_>;
}
