//! Waiting until a producer's records are acknowledged, and publishing a
//! batch of records with an idempotent `acks=all` producer and waiting for
//! every acknowledgement (dead-letter replay, seeding, tests).
//!
//! Owns: [`await_acknowledgements`], the one loop that waits for a
//! producer's in-flight count to reach zero (in 1 ms slices: rdkafka 0.39's
//! `flush` polls in 100 ms slices, so a flush with a record in flight took at
//! least 100 ms), and [`publish_and_wait`] with the failure it reports.
//! Must never: open a transaction or stand in for a shard's producer (the
//! shard's port waits on librdkafka's queue itself, inside its
//! transactions), or report a batch published before every record of it was
//! acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};

use crate::errors::is_denied;
use crate::read::client_config;
use crate::KAFKA_CALL_TIMEOUT_MS;

/// Records still unacknowledged when the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{in_flight} record(s) still in flight after {waited:?}")]
pub struct Unacknowledged {
    pub in_flight: i32,
    pub waited: Duration,
}

impl From<Unacknowledged> for KafkaError {
    /// As rdkafka's own `flush` reports a timeout.
    fn from(_: Unacknowledged) -> Self {
        KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)
    }
}

/// Waits until `in_flight()` is zero, calling `serve` between two looks
/// (serving the delivery reports, or sleeping while another thread serves
/// them), or fails after `timeout`.
pub fn await_acknowledgements(
    in_flight: impl Fn() -> i32,
    timeout: Duration,
    mut serve: impl FnMut(),
) -> Result<(), Unacknowledged> {
    let started = Instant::now();
    loop {
        let left = in_flight();
        if left <= 0 {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(Unacknowledged {
                in_flight: left,
                waited: timeout,
            });
        }
        serve();
    }
}

/// Serves `producer`'s delivery reports in 1 ms slices until none is in
/// flight, or fails after `timeout`. Use instead of `Producer::flush`.
pub fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), Unacknowledged> {
    await_acknowledgements(
        || producer.in_flight_count(),
        timeout,
        || {
            producer.poll(Duration::from_millis(1));
        },
    )
}

/// Waits, looking every millisecond, until every record handed to
/// `producer` is acknowledged (its own thread serves the delivery reports),
/// or fails after `timeout`.
pub fn flush_threaded<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    timeout: Duration,
) -> Result<(), Unacknowledged> {
    await_acknowledgements(
        || producer.in_flight_count(),
        timeout,
        || std::thread::sleep(Duration::from_millis(1)),
    )
}

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The physical topic.
    pub topic: &'a str,
    /// `None`: the producer's partitioner chooses (by key).
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    /// `None` writes a tombstone.
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Why [`publish_and_wait`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    /// The cluster answered, and refused or lost some records.
    #[error("{failed} record(s) not delivered, e.g. {reason}")]
    NotDelivered {
        failed: u64,
        /// The first failure: topic, partition and error.
        reason: String,
        /// The first failure was a refusal by the cluster's ACLs or
        /// credentials ([`crate::is_denied`]): publishing again meets it.
        denied: bool,
    },
    #[error(transparent)]
    Unacknowledged(#[from] Unacknowledged),
}

/// The first delivery failure, as the delivery callback saw it.
#[derive(Debug)]
struct DeliveryFailure {
    text: String,
    denied: bool,
}

/// Counts failed deliveries and keeps the first one's reason.
#[derive(Debug, Default)]
struct Acknowledgements {
    failures: AtomicU64,
    first_failure: OnceLock<DeliveryFailure>,
}

impl ClientContext for Acknowledgements {}

impl ProducerContext for Acknowledgements {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, message)) = result {
            self.failures.fetch_add(1, Ordering::AcqRel);
            let _ = self.first_failure.set(DeliveryFailure {
                text: format!("{} partition {}: {e}", message.topic(), message.partition()),
                denied: e.rdkafka_error_code().is_some_and(is_denied),
            });
        }
    }
}

/// Sends `records` with an idempotent `acks=all` producer and waits up to
/// [`KAFKA_CALL_TIMEOUT_MS`] until every one is acknowledged. Returns the
/// number of records published.
pub fn publish_and_wait(
    bootstrap: &str,
    properties: &[(String, String)],
    records: &[Publish<'_>],
) -> Result<u64, PublishError> {
    let producer: BaseProducer<Acknowledgements> = client_config(bootstrap, properties)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(Acknowledgements::default())
        .map_err(|source| PublishError::Kafka {
            op: "creating a publisher",
            source,
        })?;
    for record in records {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(record.topic).headers(headers);
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(payload) = record.payload {
            base = base.payload(payload);
        }
        producer
            .send(base)
            .map_err(|(source, _)| PublishError::Kafka {
                op: "publishing",
                source,
            })?;
        producer.poll(Duration::ZERO);
    }
    flush(&producer, Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))?;
    let acknowledgements = producer.context();
    let failed = acknowledgements.failures.load(Ordering::Acquire);
    if failed > 0 {
        let first = acknowledgements.first_failure.get();
        return Err(PublishError::NotDelivered {
            failed,
            reason: first.map(|f| f.text.clone()).unwrap_or_default(),
            denied: first.is_some_and(|f| f.denied),
        });
    }
    Ok(records.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn waiting_ends_when_nothing_is_in_flight() {
        let in_flight = Cell::new(3);
        let mut served = 0;
        let waited = await_acknowledgements(
            || in_flight.get(),
            Duration::from_secs(60),
            || {
                served += 1;
                in_flight.set(in_flight.get() - 1);
            },
        );
        assert_eq!(waited, Ok(()));
        assert_eq!(served, 3, "served until the count reached zero, no longer");
    }

    #[test]
    fn waiting_fails_with_what_is_still_in_flight_after_the_timeout() {
        let timeout = Duration::from_millis(20);
        let started = Instant::now();
        let waited = await_acknowledgements(
            || 2,
            timeout,
            || std::thread::sleep(Duration::from_millis(1)),
        );
        assert_eq!(
            waited,
            Err(Unacknowledged {
                in_flight: 2,
                waited: timeout
            })
        );
        assert!(started.elapsed() >= timeout);
        assert_eq!(
            KafkaError::from(Unacknowledged {
                in_flight: 2,
                waited: timeout
            })
            .rdkafka_error_code(),
            Some(RDKafkaErrorCode::OperationTimedOut)
        );
    }

    #[test]
    fn nothing_in_flight_serves_nothing() {
        let waited = await_acknowledgements(|| 0, Duration::ZERO, || panic!("nothing to serve"));
        assert_eq!(waited, Ok(()));
    }
}
