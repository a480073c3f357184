//! Least-privilege Kafka access of one engine process: the ACLs its principal
//! needs, derived from the same topic plan and Kafka identities the process
//! uses (`deployment::topic_plan`, the consumer group, the restore group and
//! the transactional-id prefix the `kafka` adapter sets).
//!
//! Owns: the ACL model (`AclRule`, `AclResource`, `PatternType`,
//! `AclOperation`) and `process_acls`, the one place that says what a process
//! may do. `tradeflow plan --emit strimzi` prints it as Strimzi `KafkaUser`
//! resources; a generator of plain Kafka ACLs (`kafka-acls`) reads the same
//! rules.
//! Must never: talk to Kafka, or grant anything cluster-wide: every rule names
//! a topic, group or transactional id of this process.

use codecs::topics::TopicNamespace;

use crate::changelog::{changelog_topics, other_layout};
use crate::deployment::{topic_plan, FlowTopics};
use crate::kafka::registry::{registry_group, registry_topic};
use crate::topics::dead_letter_topic;

/// What kind of Kafka resource a rule is about, as Kafka's ACLs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclResource {
    Topic,
    Group,
    TransactionalId,
}

impl AclResource {
    /// Strimzi's `KafkaUser` spelling (`spec.authorization.acls[].resource.type`).
    pub const fn strimzi_name(self) -> &'static str {
        match self {
            AclResource::Topic => "topic",
            AclResource::Group => "group",
            AclResource::TransactionalId => "transactionalId",
        }
    }
}

/// Whether a rule's name is the whole resource name or a prefix of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal,
    Prefix,
}

impl PatternType {
    /// Strimzi's spelling (`resource.patternType`).
    pub const fn strimzi_name(self) -> &'static str {
        match self {
            PatternType::Literal => "literal",
            PatternType::Prefix => "prefix",
        }
    }
}

/// Kafka ACL operations a process needs; nothing broader is ever granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclOperation {
    Read,
    Write,
    Create,
    Describe,
}

impl AclOperation {
    /// Kafka's and Strimzi's spelling.
    pub const fn name(self) -> &'static str {
        match self {
            AclOperation::Read => "Read",
            AclOperation::Write => "Write",
            AclOperation::Create => "Create",
            AclOperation::Describe => "Describe",
        }
    }
}

/// One allow rule: these operations on the resources this name matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclRule {
    pub resource: AclResource,
    pub name: String,
    pub pattern: PatternType,
    /// Sorted, without duplicates.
    pub operations: Vec<AclOperation>,
}

/// What one engine process is, as far as Kafka's authorizer cares.
#[derive(Clone, Debug)]
pub struct ProcessAccess<'a> {
    /// The deployment's topic namespace.
    pub namespace: &'a TopicNamespace,
    /// `application.id`: consumer group, changelog and transactional-id prefix.
    pub application_id: &'a str,
    /// The stages' topics by logical name (what `prepare_topics` is given).
    pub flow: &'a FlowTopics<'a>,
    /// Logical topics the process writes outside its stages (the Order API's
    /// commands).
    pub also_writes: &'a [&'a str],
    /// Whether the process creates its topics at start-up (`tradeflow run`
    /// always tries; under an operator that manages topics it finds them).
    pub creates_topics: bool,
}

/// The consumer group a process's restore consumers use (see `kafka`).
pub fn restore_group(application_id: &str) -> String {
    format!("{application_id}-restore")
}

/// The transactional-id prefix of a process: every shard's id is
/// `<application.id>-<node>-<core>` (and `…-state` under at-least-once).
pub fn transactional_id_prefix(application_id: &str) -> String {
    format!("{application_id}-")
}

/// The least-privilege rules of one process: read (and describe) its inputs;
/// write its outputs, the API's commands and one dead-letter topic per
/// input; read and write its changelogs (restore and commit); its consumer
/// and restore groups; transactions under its own prefix; and, where it
/// creates its topics, `Create` on exactly those topics. Rules come out in a
/// stable order (resource, then name) so generated files diff cleanly.
pub fn process_acls(process: &ProcessAccess<'_>) -> Vec<AclRule> {
    use AclOperation::{Create, Describe, Read, Write};
    let namespace = process.namespace;
    let mut rules: Vec<AclRule> = Vec::new();
    let mut grant =
        |resource: AclResource, name: String, pattern, operations: &[AclOperation]| match rules
            .iter_mut()
            .find(|r| r.resource == resource && r.name == name && r.pattern == pattern)
        {
            Some(rule) => rule.operations.extend_from_slice(operations),
            None => rules.push(AclRule {
                resource,
                name,
                pattern,
                operations: operations.to_vec(),
            }),
        };
    let topic = AclResource::Topic;
    let literal = PatternType::Literal;
    for input in &process.flow.inputs {
        grant(topic, namespace.physical(input), literal, &[Read, Describe]);
        grant(
            topic,
            dead_letter_topic(&namespace.physical(input)),
            literal,
            &[Write, Describe],
        );
    }
    for output in process.flow.outputs.iter().chain(process.also_writes) {
        grant(
            topic,
            namespace.physical(output),
            literal,
            &[Write, Describe],
        );
    }
    for changelog in process.flow.changelogs(process.application_id) {
        grant(
            topic,
            namespace.physical(&changelog),
            literal,
            &[Read, Write, Describe],
        );
    }
    // The other layout's changelogs: `prepare_topics` reads their extent at
    // start, to refuse a layout switch that would lose state.
    for changelog in changelog_topics(
        other_layout(process.flow.changelog_layout),
        process.application_id,
        &process.flow.stores,
    ) {
        grant(topic, namespace.physical(&changelog), literal, &[Describe]);
    }
    // The owners' registry: every node subscribes to its one-partition topic
    // in its own group (it carries no records; the membership is the point).
    grant(
        topic,
        namespace.physical(&registry_topic(process.application_id)),
        literal,
        &[Read, Describe],
    );
    if process.creates_topics {
        // Exactly the topics `prepare_topics` would create, nothing else.
        for spec in topic_plan(namespace, process.application_id, process.flow, 1, -1) {
            grant(topic, spec.name, literal, &[Create]);
        }
    }
    grant(
        AclResource::Group,
        process.application_id.to_string(),
        literal,
        &[Read, Describe],
    );
    grant(
        AclResource::Group,
        restore_group(process.application_id),
        literal,
        &[Read, Describe],
    );
    grant(
        AclResource::Group,
        registry_group(process.application_id),
        literal,
        &[Read, Describe],
    );
    grant(
        AclResource::TransactionalId,
        transactional_id_prefix(process.application_id),
        PatternType::Prefix,
        &[Write, Describe],
    );
    for rule in &mut rules {
        rule.operations.sort_unstable();
        rule.operations.dedup();
    }
    rules.sort_by(|a, b| (a.resource, &a.name).cmp(&(b.resource, &b.name)));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule<'a>(rules: &'a [AclRule], resource: AclResource, name: &str) -> Option<&'a AclRule> {
        rules
            .iter()
            .find(|r| r.resource == resource && r.name == name)
    }

    fn flow() -> FlowTopics<'static> {
        FlowTopics {
            inputs: vec!["orders.in"],
            outputs: vec!["payments.out"],
            stores: vec!["accounts"],
            changelog_layout: Default::default(),
        }
    }

    #[test]
    fn a_process_reads_its_inputs_and_writes_its_outputs_and_dead_letters() {
        let namespace = TopicNamespace::none();
        let flow = flow();
        let rules = process_acls(&ProcessAccess {
            namespace: &namespace,
            application_id: "tradeflow",
            flow: &flow,
            also_writes: &[],
            creates_topics: false,
        });
        let input = rule(&rules, AclResource::Topic, "orders.in").map(|r| &r.operations);
        assert_eq!(
            input,
            Some(&vec![AclOperation::Read, AclOperation::Describe])
        );
        let output = rule(&rules, AclResource::Topic, "payments.out").map(|r| &r.operations);
        assert_eq!(
            output,
            Some(&vec![AclOperation::Write, AclOperation::Describe])
        );
        let dlq = rule(&rules, AclResource::Topic, "orders.in.dlq").map(|r| &r.operations);
        assert_eq!(
            dlq,
            Some(&vec![AclOperation::Write, AclOperation::Describe])
        );
        let changelog =
            rule(&rules, AclResource::Topic, "tradeflow-accounts-changelog").map(|r| &r.operations);
        assert_eq!(
            changelog,
            Some(&vec![
                AclOperation::Read,
                AclOperation::Write,
                AclOperation::Describe
            ])
        );
        // Nothing it does not use: no Create without topic creation, no
        // wildcard topic, no write to an input.
        assert!(rules
            .iter()
            .all(|r| !r.operations.contains(&AclOperation::Create)));
        assert!(rules
            .iter()
            .filter(|r| r.resource == AclResource::Topic)
            .all(|r| r.pattern == PatternType::Literal && r.name != "*"));
        // The other layout's changelog: described only (the start-up check
        // of a layout switch reads its extent).
        let shared = rule(&rules, AclResource::Topic, "tradeflow-changelog").map(|r| &r.operations);
        assert_eq!(shared, Some(&vec![AclOperation::Describe]));
        // Inputs, their dead letters, the output, the changelog and the
        // other layout's, the owners' registry topic; the consumer, restore
        // and registry groups; the transactional ids.
        assert_eq!(rules.len(), 10, "{rules:#?}");
        let registry = rule(&rules, AclResource::Topic, "tradeflow-owners").map(|r| &r.operations);
        assert_eq!(
            registry,
            Some(&vec![AclOperation::Read, AclOperation::Describe])
        );
    }

    #[test]
    fn the_shared_layout_reads_and_writes_one_changelog_and_describes_the_per_store_ones() {
        let namespace = TopicNamespace::none();
        let flow = FlowTopics {
            stores: vec!["accounts", "orders"],
            changelog_layout: crate::changelog::ChangelogLayout::Shared,
            ..flow()
        };
        let rules = process_acls(&ProcessAccess {
            namespace: &namespace,
            application_id: "tradeflow",
            flow: &flow,
            also_writes: &[],
            creates_topics: true,
        });
        let shared = rule(&rules, AclResource::Topic, "tradeflow-changelog").map(|r| &r.operations);
        assert_eq!(
            shared,
            Some(&vec![
                AclOperation::Read,
                AclOperation::Write,
                AclOperation::Create,
                AclOperation::Describe
            ])
        );
        for store in ["accounts", "orders"] {
            let name = format!("tradeflow-{store}-changelog");
            let per_store = rule(&rules, AclResource::Topic, &name).map(|r| &r.operations);
            assert_eq!(per_store, Some(&vec![AclOperation::Describe]), "{name}");
        }
    }

    #[test]
    fn groups_and_transactions_are_the_processs_own() {
        let namespace = TopicNamespace::none();
        let flow = flow();
        let rules = process_acls(&ProcessAccess {
            namespace: &namespace,
            application_id: "tradeflow-payment",
            flow: &flow,
            also_writes: &[],
            creates_topics: false,
        });
        assert!(rule(&rules, AclResource::Group, "tradeflow-payment").is_some());
        assert!(rule(&rules, AclResource::Group, "tradeflow-payment-restore").is_some());
        assert!(rule(&rules, AclResource::Group, "tradeflow-payment.owners").is_some());
        let transactions = rule(&rules, AclResource::TransactionalId, "tradeflow-payment-");
        assert_eq!(
            transactions.map(|r| r.pattern),
            Some(PatternType::Prefix),
            "{rules:#?}"
        );
    }

    #[test]
    fn a_namespace_prefixes_topics_and_creation_is_granted_per_topic() {
        let namespace = TopicNamespace::new("desk-a").unwrap_or_default();
        let flow = flow();
        let rules = process_acls(&ProcessAccess {
            namespace: &namespace,
            application_id: "desk-a-tradeflow",
            flow: &flow,
            also_writes: &["commands.in"],
            creates_topics: true,
        });
        let created: Vec<&str> = rules
            .iter()
            .filter(|r| r.operations.contains(&AclOperation::Create))
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            created,
            vec![
                "desk-a.desk-a-tradeflow-accounts-changelog",
                "desk-a.desk-a-tradeflow-owners",
                "desk-a.orders.in",
                "desk-a.orders.in.dlq",
                "desk-a.payments.out",
            ]
        );
        let command = rule(&rules, AclResource::Topic, "desk-a.commands.in").map(|r| &r.operations);
        assert_eq!(
            command,
            Some(&vec![AclOperation::Write, AclOperation::Describe])
        );
        assert!(rules
            .iter()
            .filter(|r| r.resource == AclResource::Topic)
            .all(|r| r.name.starts_with("desk-a.")));
    }
}
