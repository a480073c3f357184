//! Reading a deployment's flow topics for the audit: every flow topic of a
//! namespace, from its beginning to its end when the read begins, as a
//! `read_committed` consumer, decoded (rkyv, or Confluent's Avro form
//! through the schema registry: `registry::values`) and fed to an [`Audit`]
//! under the topic's logical name.
//!
//! Owns: the namespace → topics → audit plumbing behind `loadgen audit` and
//! the audit at the end of `loadgen run`/`replay`. Must never: judge an
//! event itself (that is [`Audit`]'s), or read outside the namespace.

use audit::{Audit, AuditReport, Guarantee, StateSnapshot};
use codecs::topics::TopicNamespace;
use registry::values::ValueFormats;

use records::{MissingTopics, ReadError, Reader, ReaderSettings, TimeBounds};

use crate::record::READER_GROUP;

/// An audit of what a namespace's topics hold.
#[derive(Debug, Clone)]
pub struct TopicAudit {
    pub report: AuditReport,
    /// Records read from the flow's topics.
    pub records: u64,
    /// Records that are not events (poison inputs the stages dead-lettered;
    /// no part of the flow). A run that injected none must find none.
    pub undecodable: u64,
}

/// Reads every flow topic of `namespace`, decoding values as `values`
/// says, and audits it under `guarantee`.
pub fn audit_namespace(
    bootstrap: &str,
    client_properties: &[(String, String)],
    namespace: &TopicNamespace,
    values: &ValueFormats,
    guarantee: Guarantee,
) -> Result<TopicAudit, ReadError> {
    audit_namespace_with(
        bootstrap,
        client_properties,
        namespace,
        values,
        Audit::new(guarantee),
        None,
    )
}

/// Reads every flow topic of `namespace` into `audit` (made by the caller,
/// e.g. with [`Audit::expect_outcomes`]) and finishes it, comparing `state`
/// (the stages' balances and stock) if given.
pub fn audit_namespace_with(
    bootstrap: &str,
    client_properties: &[(String, String)],
    namespace: &TopicNamespace,
    values: &ValueFormats,
    mut audit: Audit,
    state: Option<&StateSnapshot>,
) -> Result<TopicAudit, ReadError> {
    let mut values = values.reader();
    let consumer = Reader::new(
        bootstrap,
        client_properties,
        ReaderSettings::new(READER_GROUP),
    )?;
    let ranges = consumer.ranges(&namespace.all(), TimeBounds::default(), MissingTopics::Fail)?;
    let mut undecodable = 0u64;
    let records = consumer.read_ranges(&ranges, &mut |message| {
        let decoded = message.payload().map(|p| values.decode(p));
        match (namespace.flow_topic(message.topic()), decoded) {
            (Some(topic), Some(Ok(event))) => audit.record(topic, &event),
            _ => undecodable += 1,
        }
    })?;
    Ok(TopicAudit {
        report: match state {
            Some(state) => audit.finish_with_state(state),
            None => audit.finish(),
        },
        records,
        undecodable,
    })
}
