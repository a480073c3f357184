//! A partition's low and high watermarks, asked with the workspace's one
//! retry loop: right after a topic is created, or while a leader moves, the
//! broker that answers may not know the partition or lead it yet, and such an
//! answer ends on its own.
//!
//! Owns: [`watermarks`] (the loop) and [`Patience`] (which errors it waits
//! out, and for how long).
//! Must never: retry a refusal by the cluster's ACLs ([`crate::is_denied`]:
//! it would never end), or wait longer than its patience plus one call.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use crate::errors::{is_denied, transient};
use crate::KAFKA_CALL_TIMEOUT_MS;

/// How long a topic created a moment ago may answer without a leader
/// before a tool gives up on it (its leader election is asynchronous).
pub const TOPIC_READY_TIMEOUT_MS: u64 = 30_000;

/// The pause between two tries.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Which failed watermark queries are asked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Only errors that end on their own ([`crate::transient`]): a leader
    /// election, a broker restarting. For topics known to exist (a shard's
    /// changelogs, a start-up check), where an unknown topic is an answer.
    Transient,
    /// Any error but a refusal: a topic created a moment ago may be unknown
    /// to the broker that answers for a while (tools and tests that create
    /// a topic and read it at once).
    AnyButDenied,
}

/// How long, and through which errors, a watermark query keeps asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    /// No try starts after this much time since the first.
    pub within: Duration,
    pub retry: Retry,
}

impl Patience {
    /// A tool's or a test's patience with a topic that may have been created
    /// a moment ago: any error but a refusal, for [`TOPIC_READY_TIMEOUT_MS`].
    pub const NEW_TOPIC: Patience = Patience {
        within: Duration::from_millis(TOPIC_READY_TIMEOUT_MS),
        retry: Retry::AnyButDenied,
    };

    /// Whether a query that failed with `error`, `elapsed` after the first
    /// try began, is asked again.
    pub fn retries(&self, error: &KafkaError, elapsed: Duration) -> bool {
        if elapsed > self.within {
            return false;
        }
        match self.retry {
            Retry::Transient => transient(error),
            Retry::AnyButDenied => !error.rdkafka_error_code().is_some_and(is_denied),
        }
    }
}

/// The (low, high) watermarks of `topic`'s `partition`, asked through
/// `consumer` (each try waits up to [`KAFKA_CALL_TIMEOUT_MS`]) and asked
/// again every [`RETRY_PAUSE`] while `patience` allows.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    patience: Patience,
) -> Result<(i64, i64), KafkaError> {
    let started = Instant::now();
    loop {
        match consumer.fetch_watermarks(
            topic,
            partition,
            Duration::from_millis(KAFKA_CALL_TIMEOUT_MS),
        ) {
            Ok(marks) => return Ok(marks),
            Err(e) if patience.retries(&e, started.elapsed()) => {
                match patience.retry {
                    Retry::Transient => {
                        tracing::warn!(error = %e, topic, partition, "reading watermarks; retrying")
                    }
                    Retry::AnyButDenied => {
                        tracing::debug!(error = %e, topic, partition, "reading watermarks; retrying")
                    }
                }
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    fn failed(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MetadataFetch(code)
    }

    #[test]
    fn transient_patience_waits_out_a_moving_leader_not_a_missing_topic() {
        let patience = Patience {
            within: Duration::from_secs(30),
            retry: Retry::Transient,
        };
        let now = Duration::from_secs(1);
        assert!(patience.retries(&failed(RDKafkaErrorCode::NotLeaderForPartition), now));
        assert!(patience.retries(&failed(RDKafkaErrorCode::LeaderNotAvailable), now));
        assert!(!patience.retries(&failed(RDKafkaErrorCode::UnknownTopicOrPartition), now));
        assert!(!patience.retries(&failed(RDKafkaErrorCode::TopicAuthorizationFailed), now));
    }

    #[test]
    fn patience_with_any_error_waits_out_a_new_topic_but_never_a_refusal() {
        let patience = Patience {
            within: Duration::from_secs(30),
            retry: Retry::AnyButDenied,
        };
        let now = Duration::from_secs(1);
        assert!(patience.retries(&failed(RDKafkaErrorCode::UnknownTopicOrPartition), now));
        assert!(patience.retries(&failed(RDKafkaErrorCode::NotLeaderForPartition), now));
        assert!(!patience.retries(&failed(RDKafkaErrorCode::TopicAuthorizationFailed), now));
        assert!(!patience.retries(&failed(RDKafkaErrorCode::SaslAuthenticationFailed), now));
    }

    #[test]
    fn no_error_is_retried_once_patience_is_spent() {
        for retry in [Retry::Transient, Retry::AnyButDenied] {
            let patience = Patience {
                within: Duration::from_secs(30),
                retry,
            };
            let error = failed(RDKafkaErrorCode::NotLeaderForPartition);
            assert!(patience.retries(&error, Duration::from_secs(30)));
            assert!(!patience.retries(&error, Duration::from_millis(30_001)));
        }
    }
}
