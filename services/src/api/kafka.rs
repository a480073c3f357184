//! The API's Kafka producer: librdkafka's `FutureProducer`, idempotent with
//! `acks=all`, awaited on the API's tokio runtime.
//!
//! Owns: the producer's settings and turning a delivery report into
//! `Ok`/`PublishError`.
//! Must never: run on a shard's core (it lives on the API's runtime and
//! librdkafka's own threads), or let configuration weaken durability:
//! `acks=all` and `enable.idempotence=true` are set after the user's
//! properties so they always win.
//!
//! This is the one place in `services` that sees rdkafka types: the API is
//! an edge outside the shards, as the engine's adapter is inside them.

use std::time::Duration;

use codecs::topics::TopicNamespace;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::error::ApiError;
use super::publish::{OutgoingRecord, PublishError, PublishFuture, Publisher};
use super::DELIVERY_TIMEOUT_MS;

/// Publishes the API's events to Kafka.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    /// The deployment's topic namespace: records carry logical topic names
    /// up to here, the edge that talks to Kafka.
    namespace: TopicNamespace,
}

impl KafkaPublisher {
    /// A producer for `bootstrap` with `properties` (security, tuning) that
    /// writes the flow's topics of `namespace`.
    pub fn new(
        bootstrap: &str,
        properties: &[(String, String)],
        namespace: TopicNamespace,
    ) -> Result<Self, ApiError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (key, value) in properties {
            config.set(key, value);
        }
        config
            // An answer waits for the record anyway; batching would only
            // add latency to every request.
            .set("linger.ms", "0")
            // Durable before we say so, and retries that neither duplicate
            // nor reorder records of a key.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", DELIVERY_TIMEOUT_MS.to_string());
        let producer = config
            .create()
            .map_err(|e| ApiError::Producer(e.to_string()))?;
        Ok(KafkaPublisher {
            producer,
            namespace,
        })
    }
}

impl Publisher for KafkaPublisher {
    fn publish(&self, record: OutgoingRecord) -> PublishFuture<'_> {
        Box::pin(async move {
            // The partition is chosen by the API (murmur2, as the Java
            // clients and the engine do), not by librdkafka's default
            // partitioner, whose hash differs.
            let topic = self.namespace.physical(record.topic);
            let to_send = FutureRecord::to(&topic)
                .partition(record.partition.0)
                .key(&record.key)
                .payload(&record.payload);
            // Queue-full waits count against the same budget as delivery.
            self.producer
                .send(
                    to_send,
                    Timeout::After(Duration::from_millis(DELIVERY_TIMEOUT_MS)),
                )
                .await
                .map(drop)
                .map_err(|(e, _)| PublishError::NotAcknowledged(e.to_string()))
        })
    }
}
