//! `records`: reading Kafka topics outside any consumer group and publishing
//! records with their acknowledgements awaited — the one reader and publisher
//! that the engine's tools (`engine::kafka::read_to_end`, `publish_and_wait`),
//! the services (`tradeflow audit`, `tradeflow dlq`), the load generator
//! (`record`, `audit`, the driver's start), the schema registry and the test
//! harness share, with one watermark retry loop and one call timeout.
//!
//! | module | owns |
//! |---|---|
//! | [`errors`] | which librdkafka errors end on their own (transient) and which are refusals (denied) |
//! | [`watermarks`] | a partition's watermarks, asked with the workspace's one retry loop |
//! | [`read`] | `read_committed` reads by assignment: topics to their end, or fixed offset ranges |
//! | [`publish`] | waiting for acknowledgements, and publishing a batch and waiting for it |
//!
//! Owns: [`KAFKA_CALL_TIMEOUT_MS`], the workspace's one timeout of a blocking
//! Kafka call.
//! Must never: join a consumer group or commit offsets (reads are by
//! assignment, so a tool never moves a deployment's groups), read past the end
//! it took when a read began, or run on a shard's data path (the shard's port
//! is `engine::kafka`: it knows transactions, rebalances and the input order,
//! this crate knows none of them).

pub mod errors;
pub mod publish;
pub mod read;
pub mod watermarks;

pub use errors::{is_denied, is_transient, transient};
pub use publish::{
    await_acknowledgements, flush, flush_threaded, publish_and_wait, Publish, PublishError,
    Unacknowledged,
};
pub use read::{
    client_config, partitions, EndAware, MissingTopics, PartitionRange, ReadError, ReadRecord,
    Reader, ReaderSettings, TimeBounds,
};
pub use watermarks::{watermarks, Patience, Retry};

/// How long one blocking Kafka call (metadata, watermarks, offsets for times,
/// a flush, a transaction step) may take before it counts as failed: the
/// workspace's one value. The engine's `transaction.timeout.ms`
/// (`tuning::limits::TRANSACTION_TIMEOUT_MS`, 35 s) is this plus the longest
/// exactly-once commit interval (5 s), which the engine asserts at compile
/// time: a shard's commit call may take this long within one transaction.
pub const KAFKA_CALL_TIMEOUT_MS: u64 = 30_000;

/// Records per partition librdkafka may hold fetched ahead of a reader of
/// whole topics (`queued.min.messages`, its maximum): a restore, a standby,
/// an audit. Its default, 100 000, is less than one 16 MiB fetch of
/// changelog records (some 300 000), so every fetch crossed it; memory stays
/// bounded by `queued.max.messages.kbytes` (64 MiB).
pub const QUEUED_RECORDS_MAX: u32 = 10_000_000;
/// How long librdkafka postpones a partition's next fetch once its local
/// queue is over a threshold (`fetch.queue.backoff.ms`). Its default is
/// 1 000 ms, and it is a fixed sleep: the fetch is not retried when the
/// reader drains the queue (2.12.1 `rd_kafka_toppar_fetch_backoff`,
/// `rdkafka_fetcher.c`), so a reader that crossed the threshold sat idle
/// for up to a second per fetch: 0.5 s of a 1 M-key restore, 2.1 s of an
/// uncompressed one. A reader that keeps up re-checks every millisecond.
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 1;

#[cfg(test)]
mod mock_tests;
