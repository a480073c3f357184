//! The engine's face of the `records` crate (the workspace's one reader and
//! publisher outside shards): reading topics to their end and publishing
//! records and waiting for their acknowledgements, in the engine's types
//! ([`ReadRecord`], `OutRecord`, `PortError`), for the services
//! (`tradeflow audit`, `dlq`) and tools.
//! Must never: join a consumer group or commit offsets (it reads by
//! assignment), hand out an rdkafka type, or hold a loop of its own (the
//! reading, the watermark retries and the waiting are the `records` crate's).

use super::*;

/// One record read by [`read_to_end`].
#[derive(Clone, Copy, Debug)]
pub struct ReadRecord<'a> {
    pub topic: &'a str,
    pub partition: PartitionId,
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Record headers as (name, value) pairs.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// How the engine's reader reads: large fetches, as a restore's, and the
/// restore's patience with a stalled partition and with watermarks (a
/// leader moving, not a topic missing: a missing topic has nothing to read).
fn reader_settings() -> ::records::ReaderSettings {
    ::records::ReaderSettings {
        fetch_bytes: RESTORE_FETCH_BYTES,
        stall: Duration::from_millis(RESTORE_STALL_TIMEOUT_MS),
        patience: ::records::Patience {
            within: Duration::from_millis(RESTORE_STALL_TIMEOUT_MS),
            retry: ::records::Retry::Transient,
        },
        ..::records::ReaderSettings::new("tradeflow-reader")
    }
}

/// A read's failure as the port's error: librdkafka's errors mapped as the
/// port maps them (refusals, retryable or not), a stall retryable.
fn read_error(error: ::records::ReadError) -> PortError {
    match error {
        ::records::ReadError::Kafka { op, source } => kafka_error(op, source),
        other => PortError::Kafka {
            op: "reading to the end",
            message: other.to_string(),
            retryable: true,
        },
    }
}

/// Reads every partition of `topics` from the beginning to its end at the time
/// of the call, as a `read_committed` consumer outside any group, handing each
/// record to `visit`; a topic that does not exist has nothing to read. For
/// audits, dead-letter inspection and tests; never on a shard's data path.
/// Returns the number of records read.
pub fn read_to_end(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topics: &[&str],
    visit: &mut dyn FnMut(&ReadRecord<'_>),
) -> Result<u64, PortError> {
    let reader = ::records::Reader::new(bootstrap, client_properties, reader_settings())
        .map_err(read_error)?;
    reader
        .read_to_end(topics, &mut |record| {
            let headers: Vec<(&str, &[u8])> = record.headers().collect();
            visit(&ReadRecord {
                topic: record.topic(),
                partition: PartitionId(record.partition()),
                offset: Offset(record.offset()),
                key: record.key(),
                payload: record.payload(),
                headers: &headers,
            });
        })
        .map_err(read_error)
}

/// Sends `records` with an idempotent `acks=all` producer and waits until every
/// one is acknowledged. For tools (dead-letter replay), never for shards.
pub fn publish_and_wait(
    bootstrap: &str,
    client_properties: &[(String, String)],
    records: &[OutRecord<'_>],
) -> Result<u64, PortError> {
    let batch: Vec<::records::Publish<'_>> = records
        .iter()
        .map(|record| ::records::Publish {
            topic: record.topic,
            partition: Some(record.partition.0),
            key: record.key,
            payload: record.payload,
            headers: record.headers,
        })
        .collect();
    ::records::publish_and_wait(bootstrap, client_properties, &batch).map_err(|e| match e {
        ::records::PublishError::Kafka { op, source } => kafka_error(op, source),
        ::records::PublishError::NotDelivered { denied: true, .. } => PortError::NotAuthorized {
            op: "publishing",
            message: e.to_string(),
        },
        ::records::PublishError::NotDelivered { .. } => PortError::Kafka {
            op: "publishing",
            message: e.to_string(),
            retryable: true,
        },
        ::records::PublishError::Unacknowledged(_) => PortError::Kafka {
            op: "awaiting deliveries",
            message: e.to_string(),
            retryable: true,
        },
    })
}
