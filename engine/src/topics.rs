//! Names of the topics the engine derives from others, in one place, so that the
//! engine, the tools and the docs agree.
//!
//! Must never: hold topic settings or talk to Kafka (see `kafka::admin`).

/// `<application.id>-<store>-changelog`, as Kafka Streams names it: compacted,
/// one partition per input partition.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// `<application.id>-changelog`: the one compacted changelog every store of
/// the application shares under `[state] changelog_layout = "shared"` (see
/// `crate::changelog`), one partition per input partition.
pub fn shared_changelog_topic(application_id: &str) -> String {
    format!("{application_id}-changelog")
}

/// `<topic>.dlq`: where records of `topic` that cannot be processed go, with
/// the cause in their headers.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_streams_and_the_dlq_convention() {
        assert_eq!(
            changelog_topic("tradeflow", "accounts"),
            "tradeflow-accounts-changelog"
        );
        assert_eq!(shared_changelog_topic("tradeflow"), "tradeflow-changelog");
        assert_eq!(
            dead_letter_topic("order-service.order.created"),
            "order-service.order.created.dlq"
        );
    }
}
