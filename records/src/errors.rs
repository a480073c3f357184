//! How librdkafka's errors are classed, for every client of the workspace:
//! transient (a leader election, a broker restarting, a full queue: asking
//! again later succeeds) or denied (the cluster's ACLs or credentials refused
//! it: asking again meets the same refusal).
//!
//! Owns: the two lists of error codes. The engine's port maps them to its
//! `PortError` (retry, roll back, restart or stop); the watermark loop retries
//! the transient ones.
//! Must never: class a refusal as transient (a denied client would retry
//! forever instead of stopping with what was refused).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Errors that end on their own: a request timed out, a broker is down or
/// restarting, a partition or a coordinator is moving, a queue is full.
pub fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
    )
}

/// Refusals by the cluster's authorizer or authentication: retrying meets
/// the same ACL.
pub const DENIED: [RDKafkaErrorCode; 6] = [
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::GroupAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
    RDKafkaErrorCode::SaslAuthenticationFailed,
    RDKafkaErrorCode::Authentication,
];

/// Whether `code` is one of the [`DENIED`] refusals.
pub fn is_denied(code: RDKafkaErrorCode) -> bool {
    DENIED.contains(&code)
}

/// Whether `error` ends on its own: a transaction error librdkafka calls
/// retriable, or any other error with a transient code ([`is_transient`]).
pub fn transient(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(t) => t.is_retriable(),
        other => other.rdkafka_error_code().is_some_and(is_transient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_refusal_is_transient() {
        for code in DENIED {
            assert!(is_denied(code), "{code:?}");
            assert!(!is_transient(code), "{code:?}");
            assert!(!transient(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
    }

    #[test]
    fn a_moving_leader_and_a_timeout_are_transient_a_missing_topic_is_not() {
        for code in [
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(transient(&KafkaError::MetadataFetch(code)), "{code:?}");
            assert!(!is_denied(code), "{code:?}");
        }
        assert!(!transient(&KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        // An error without a code (a client-side misuse) is not transient.
        assert!(!transient(&KafkaError::Canceled));
    }
}
