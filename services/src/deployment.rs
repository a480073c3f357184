//! The trade flow's deployment plan: which processes a deployment runs (the
//! whole flow in one process per node, or one workload per service), every
//! topic they use and the least-privilege Kafka access of each, and the plan
//! printed as Strimzi `KafkaTopic` and `KafkaUser` resources
//! (`tradeflow plan --emit strimzi`).
//!
//! Owns: `Topology`, `DeploymentPlan`, the default application id of a
//! process (which `tradeflow run` uses too, so the plan names the groups,
//! changelogs and transactional ids the processes really use), the topics
//! the Order API publishes to, and the Strimzi rendering.
//! Must never: talk to Kafka or Kubernetes; it describes, `run` and the
//! operator act.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use codecs::topics::TopicNamespace;
use engine::access::{process_acls, AclRule, ProcessAccess};
use engine::changelog::ChangelogLayout;
use engine::deployment::{topic_plan, FlowTopics};
use engine::kafka::TopicSpec;
use engine::Stage;

use crate::flow::{Service, ServiceSet, TradeFlow};
use crate::topics::{ACCOUNT_FUNDED, ORDER_CREATED, ORDER_UPDATED, STOCK_REPLENISHED};

/// The logical topics the Order API publishes its commands to: orders
/// (created, amended, cancelled), account top-ups and stock replenishments.
pub const API_PUBLISHES: [&str; 4] = [
    ORDER_CREATED,
    ORDER_UPDATED,
    ACCOUNT_FUNDED,
    STOCK_REPLENISHED,
];

/// The Strimzi API version the resources are written for (Strimzi 0.49 and
/// later; the only one from Strimzi 1.0 on).
pub const STRIMZI_API_VERSION: &str = "kafka.strimzi.io/v1";

/// How the flow's services are spread over processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One process per node runs order, payment and inventory, and the API.
    Node,
    /// One workload per service; the order workload serves the API.
    PerService,
}

impl Topology {
    pub const fn name(self) -> &'static str {
        match self {
            Topology::Node => "node",
            Topology::PerService => "per-service",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Topology {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, PlanError> {
        match s {
            "node" => Ok(Topology::Node),
            "per-service" => Ok(Topology::PerService),
            other => Err(PlanError::Topology(other.to_string())),
        }
    }
}

/// Why a plan cannot be made or printed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown topology {0:?}; choose node or per-service")]
    Topology(String),
    #[error(
        "{what} {name:?} is not a Kubernetes resource name (lowercase letters, digits, '-' \
         and '.', starting and ending with a letter or digit, at most 253)"
    )]
    ResourceName { what: &'static str, name: String },
    #[error("topics {0:?} and {1:?} map to the same Kubernetes resource name")]
    ResourceNameClash(String, String),
}

/// `application.id` of a process running `services` in `namespace`:
/// `tradeflow` for the whole flow, `tradeflow-<services>` for part of it,
/// with `<namespace>-` in front for a named namespace.
pub fn default_application_id(namespace: &TopicNamespace, services: ServiceSet) -> String {
    let base = if services == ServiceSet::ALL {
        "tradeflow".to_string()
    } else {
        format!("tradeflow-{}", services.to_string().replace(',', "-"))
    };
    // Groups, changelogs and transactional ids are per deployment too.
    if namespace.is_default() {
        base
    } else {
        format!("{}-{base}", namespace.name())
    }
}

/// One kind of process of the deployment (a Deployment or StatefulSet in the
/// Helm chart), with what Kafka must let it do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// `node`, or the service's name.
    pub name: String,
    pub services: ServiceSet,
    /// Whether it serves the Order API (REST and gRPC).
    pub api: bool,
    /// Also its Kafka user (`KafkaUser` name, SCRAM username).
    pub application_id: String,
    pub acls: Vec<AclRule>,
}

/// Every topic and every process of one deployment.
#[derive(Clone, Debug)]
pub struct DeploymentPlan {
    pub namespace: TopicNamespace,
    pub topology: Topology,
    pub partitions: i32,
    /// `-1`: the cluster's default replication factor.
    pub replication: i32,
    /// In the order `tradeflow run` prepares them, each once.
    pub topics: Vec<TopicSpec>,
    pub workloads: Vec<Workload>,
}

/// The plan of a deployment in `namespace` with `partitions` partitions per
/// topic (the core map's `ownership.partitions`).
pub fn plan(
    namespace: &TopicNamespace,
    topology: Topology,
    partitions: i32,
    replication: i32,
    changelog_layout: ChangelogLayout,
) -> DeploymentPlan {
    plan_access(
        namespace,
        topology,
        partitions,
        replication,
        TopicCreation::Prepared,
        changelog_layout,
    )
}

/// Who creates the deployment's topics, which decides whether the
/// processes' principals need `Create` on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCreation {
    /// An operator (Strimzi's topic operator, an admin) creates them first;
    /// the processes find them and need no `Create`.
    Prepared,
    /// Each process creates what it misses at start-up (`tradeflow run`
    /// tries), so it needs `Create` on exactly those topics.
    ByProcesses,
}

/// As [`plan`], with the processes' access granted for `creation`.
pub fn plan_access(
    namespace: &TopicNamespace,
    topology: Topology,
    partitions: i32,
    replication: i32,
    creation: TopicCreation,
    changelog_layout: ChangelogLayout,
) -> DeploymentPlan {
    let processes: Vec<(String, ServiceSet, bool)> = match topology {
        Topology::Node => vec![("node".to_string(), ServiceSet::ALL, true)],
        Topology::PerService => Service::ALL
            .into_iter()
            .map(|s| {
                (
                    s.name().to_string(),
                    ServiceSet::only(s),
                    s == Service::Order,
                )
            })
            .collect(),
    };
    let mut topics: Vec<TopicSpec> = Vec::new();
    let mut workloads = Vec::new();
    for (name, services, api) in processes {
        let application_id = default_application_id(namespace, services);
        let stages = TradeFlow::new(services);
        let flow = FlowTopics {
            inputs: stages.input_topics().to_vec(),
            outputs: stages.output_topics(),
            stores: stages.store_names(),
            changelog_layout,
        };
        let mut process_topics =
            topic_plan(namespace, &application_id, &flow, partitions, replication);
        // The API's commands are inputs of some workload; in a per-service
        // plan every one is, so this adds nothing there.
        if api {
            process_topics.extend(
                API_PUBLISHES
                    .iter()
                    .map(|t| TopicSpec::stream(namespace.physical(t), partitions, replication)),
            );
        }
        for spec in process_topics {
            if !topics.iter().any(|t| t.name == spec.name) {
                topics.push(spec);
            }
        }
        let acls = process_acls(&ProcessAccess {
            namespace,
            application_id: &application_id,
            flow: &flow,
            also_writes: if api { &API_PUBLISHES } else { &[] },
            creates_topics: creation == TopicCreation::ByProcesses,
        });
        workloads.push(Workload {
            name,
            services,
            api,
            application_id,
            acls,
        });
    }
    DeploymentPlan {
        namespace: namespace.clone(),
        topology,
        partitions,
        replication,
        topics,
        workloads,
    }
}

/// A Kubernetes object name for a Kafka topic: lowercase, with every
/// character a name cannot hold turned into `-`.
pub fn topic_resource_name(topic: &str) -> Result<String, PlanError> {
    let mapped: String = topic
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    check_resource_name("topic", trimmed)?;
    Ok(trimmed.to_string())
}

fn check_resource_name(what: &'static str, name: &str) -> Result<(), PlanError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(PlanError::ResourceName {
            what,
            name: name.to_string(),
        })
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The plan as Strimzi resources for the Kafka cluster named `cluster`: one
/// `KafkaTopic` per topic (partitions, replicas, compaction for changelogs)
/// and one `KafkaUser` per workload (SCRAM-SHA-512, `simple` authorization
/// with exactly the workload's ACLs). Deterministic: the same plan prints
/// the same bytes.
pub fn strimzi_yaml(plan: &DeploymentPlan, cluster: &str) -> Result<String, PlanError> {
    check_resource_name("Kafka cluster", cluster)?;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Generated by `tradeflow plan --emit strimzi` (topology {}, namespace {}, \
         {} partitions, replication {}): edit the plan, not this file.",
        plan.topology,
        plan.namespace,
        plan.partitions,
        if plan.replication < 0 {
            "cluster default".to_string()
        } else {
            plan.replication.to_string()
        }
    );
    let mut names: Vec<(String, &str)> = Vec::new();
    for topic in &plan.topics {
        let name = topic_resource_name(&topic.name)?;
        if let Some((_, other)) = names.iter().find(|(n, _)| *n == name) {
            return Err(PlanError::ResourceNameClash(
                other.to_string(),
                topic.name.clone(),
            ));
        }
        names.push((name.clone(), &topic.name));
        let _ = writeln!(out, "---");
        let _ = writeln!(out, "apiVersion: {STRIMZI_API_VERSION}");
        let _ = writeln!(out, "kind: KafkaTopic");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", quoted(&name));
        let _ = writeln!(out, "  labels:");
        let _ = writeln!(out, "    strimzi.io/cluster: {}", quoted(cluster));
        let _ = writeln!(out, "    app.kubernetes.io/part-of: tradeflow");
        let _ = writeln!(out, "spec:");
        let _ = writeln!(out, "  topicName: {}", quoted(&topic.name));
        let _ = writeln!(out, "  partitions: {}", topic.partitions);
        if topic.replication > 0 {
            let _ = writeln!(out, "  replicas: {}", topic.replication);
        }
        if !topic.config.is_empty() {
            let _ = writeln!(out, "  config:");
            for (key, value) in &topic.config {
                let _ = writeln!(out, "    {}: {}", quoted(key), quoted(value));
            }
        }
    }
    for workload in &plan.workloads {
        write_kafka_user(&mut out, workload, cluster)?;
    }
    Ok(out)
}

/// Only the plan's `KafkaUser` resources (`tradeflow acls --emit strimzi`).
pub fn strimzi_users_yaml(plan: &DeploymentPlan, cluster: &str) -> Result<String, PlanError> {
    check_resource_name("Kafka cluster", cluster)?;
    let mut out = format!(
        "# Generated by `tradeflow acls --emit strimzi` (topology {}, namespace {}): edit the \
         plan, not this file.\n",
        plan.topology, plan.namespace
    );
    for workload in &plan.workloads {
        write_kafka_user(&mut out, workload, cluster)?;
    }
    Ok(out)
}

/// The plan's ACLs as `kafka-acls.sh` commands (`tradeflow acls --emit
/// kafka-acls`), one per resource, for the cluster at `$BOOTSTRAP` with the
/// admin's client settings in `$ADMIN_CONFIG`. `principal` names each
/// workload's Kafka principal (`User:<name>`). Names are single-quoted;
/// topic, group and transactional-id names here never hold a quote
/// (`TopicNamespace` and application ids refuse them).
pub fn kafka_acls_script(plan: &DeploymentPlan, principal: &dyn Fn(&Workload) -> String) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `tradeflow acls --emit kafka-acls` (topology {}, namespace {}): the \
         least-privilege ACLs of each workload.\n# Set BOOTSTRAP and ADMIN_CONFIG (an admin's \
         client properties) and run with sh.",
        plan.topology, plan.namespace
    );
    for workload in &plan.workloads {
        let principal = principal(workload);
        let _ = writeln!(
            out,
            "# workload {}: services {}{}, application.id {}, principal {}",
            workload.name,
            workload.services,
            if workload.api { " + Order API" } else { "" },
            workload.application_id,
            principal
        );
        for rule in &workload.acls {
            let operations: String = rule
                .operations
                .iter()
                .map(|o| format!(" --operation {}", o.name()))
                .collect();
            let resource = match rule.resource {
                engine::access::AclResource::Topic => "--topic",
                engine::access::AclResource::Group => "--group",
                engine::access::AclResource::TransactionalId => "--transactional-id",
            };
            let pattern = match rule.pattern {
                engine::access::PatternType::Literal => "literal",
                engine::access::PatternType::Prefix => "prefixed",
            };
            let _ = writeln!(
                out,
                "kafka-acls.sh --bootstrap-server \"$BOOTSTRAP\" --command-config \"$ADMIN_CONFIG\" \
                 --add --allow-principal '{principal}' --allow-host '*'{operations} {resource} '{}' \
                 --resource-pattern-type {pattern}",
                rule.name
            );
        }
    }
    out
}

/// One workload's `KafkaUser`: SCRAM-SHA-512 and exactly its ACLs.
fn write_kafka_user(out: &mut String, workload: &Workload, cluster: &str) -> Result<(), PlanError> {
    {
        check_resource_name("application id (the KafkaUser)", &workload.application_id)?;
        let _ = writeln!(out, "---");
        let _ = writeln!(
            out,
            "# {} workload: services {}{}",
            workload.name,
            workload.services,
            if workload.api {
                " and the Order API"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "apiVersion: {STRIMZI_API_VERSION}");
        let _ = writeln!(out, "kind: KafkaUser");
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  name: {}", quoted(&workload.application_id));
        let _ = writeln!(out, "  labels:");
        let _ = writeln!(out, "    strimzi.io/cluster: {}", quoted(cluster));
        let _ = writeln!(out, "    app.kubernetes.io/part-of: tradeflow");
        let _ = writeln!(
            out,
            "    app.kubernetes.io/component: {}",
            quoted(&workload.name)
        );
        let _ = writeln!(out, "spec:");
        let _ = writeln!(out, "  authentication:");
        let _ = writeln!(out, "    type: scram-sha-512");
        let _ = writeln!(out, "  authorization:");
        let _ = writeln!(out, "    type: simple");
        let _ = writeln!(out, "    acls:");
        for rule in &workload.acls {
            let operations: Vec<&str> = rule.operations.iter().map(|o| o.name()).collect();
            let _ = writeln!(out, "      - resource:");
            let _ = writeln!(out, "          type: {}", rule.resource.strimzi_name());
            let _ = writeln!(out, "          name: {}", quoted(&rule.name));
            let _ = writeln!(
                out,
                "          patternType: {}",
                rule.pattern.strimzi_name()
            );
            let _ = writeln!(out, "        operations: [{}]", operations.join(", "));
            let _ = writeln!(out, "        host: \"*\"");
        }
    }
    Ok(())
}

/// The plan as text: topics with their settings, then each workload's ACLs.
pub fn plan_text(plan: &DeploymentPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "deployment: topology {}, namespace {}, {} partitions per topic, replication {}",
        plan.topology, plan.namespace, plan.partitions, plan.replication
    );
    let _ = writeln!(out, "topics ({}):", plan.topics.len());
    for topic in &plan.topics {
        let config: Vec<String> = topic
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} partitions={} replication={} {}",
            topic.name,
            topic.partitions,
            topic.replication,
            config.join(" ")
        );
    }
    for workload in &plan.workloads {
        let _ = writeln!(
            out,
            "workload {}: services {}{}, user and application.id {}",
            workload.name,
            workload.services,
            if workload.api { " + Order API" } else { "" },
            workload.application_id
        );
        for rule in &workload.acls {
            let operations: Vec<&str> = rule.operations.iter().map(|o| o.name()).collect();
            let _ = writeln!(
                out,
                "  allow {} on {} {} ({})",
                operations.join(","),
                rule.resource.strimzi_name(),
                rule.name,
                rule.pattern.strimzi_name()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::ALL;
    use codecs::EventKind;
    use engine::access::{AclOperation, AclResource};

    fn topic_names(plan: &DeploymentPlan) -> Vec<&str> {
        plan.topics.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn a_shared_changelog_plan_holds_one_compacted_changelog_for_every_store() {
        let plan = plan(
            &TopicNamespace::none(),
            Topology::Node,
            24,
            3,
            ChangelogLayout::Shared,
        );
        let changelogs: Vec<&TopicSpec> = plan
            .topics
            .iter()
            .filter(|t| t.name.ends_with("-changelog"))
            .collect();
        assert_eq!(changelogs.len(), 1, "{changelogs:?}");
        assert_eq!(changelogs[0].name, "tradeflow-changelog");
        assert_eq!(changelogs[0].partitions, 24);
        assert_eq!(
            changelogs[0].config,
            vec![("cleanup.policy".to_string(), "compact".to_string())]
        );
        let yaml = strimzi_yaml(&plan, "tradeflow").unwrap_or_default();
        assert!(
            yaml.contains("  topicName: \"tradeflow-changelog\"\n"),
            "{yaml}"
        );
        assert!(!yaml.contains("topicName: \"tradeflow-order-orders-changelog\""));
    }

    #[test]
    fn the_node_plan_holds_every_flow_topic_its_dead_letters_and_changelogs() {
        let plan = plan(
            &TopicNamespace::none(),
            Topology::Node,
            24,
            3,
            ChangelogLayout::PerStore,
        );
        let names = topic_names(&plan);
        for topic in ALL {
            assert!(names.contains(&topic), "{topic} missing from {names:?}");
        }
        let inputs = TradeFlow::new(ServiceSet::ALL).input_topics().len();
        let dead_letters = names.iter().filter(|n| n.ends_with(".dlq")).count();
        assert_eq!(dead_letters, inputs);
        let changelogs: Vec<&TopicSpec> = plan
            .topics
            .iter()
            .filter(|t| t.name.ends_with("-changelog"))
            .collect();
        assert_eq!(changelogs.len(), 7);
        assert!(changelogs.iter().all(|t| t.name.starts_with("tradeflow-")
            && t.config == vec![("cleanup.policy".to_string(), "compact".to_string())]));
        // Every topic is co-partitioned but the owners' registry's, which
        // has one partition and carries no records.
        assert!(plan
            .topics
            .iter()
            .all(|t| (t.partitions == 24 || t.name == "tradeflow-owners") && t.replication == 3));
        assert!(names.contains(&"tradeflow-owners"), "{names:?}");
        assert_eq!(plan.workloads.len(), 1);
        assert_eq!(plan.workloads[0].application_id, "tradeflow");
    }

    #[test]
    fn per_service_workloads_own_their_groups_and_only_their_topics() {
        let namespace = TopicNamespace::new("desk-a").unwrap_or_default();
        let plan = plan(
            &namespace,
            Topology::PerService,
            8,
            3,
            ChangelogLayout::PerStore,
        );
        let ids: Vec<&str> = plan
            .workloads
            .iter()
            .map(|w| w.application_id.as_str())
            .collect();
        assert_eq!(
            ids,
            vec![
                "desk-a-tradeflow-order",
                "desk-a-tradeflow-payment",
                "desk-a-tradeflow-inventory"
            ]
        );
        let payment = &plan.workloads[1];
        let writes = |name: &str| {
            payment.acls.iter().any(|r| {
                r.resource == AclResource::Topic
                    && r.name == name
                    && r.operations.contains(&AclOperation::Write)
            })
        };
        assert!(writes("desk-a.payment-service.payment.completed"));
        // Payment neither writes orders nor stock.
        assert!(!writes("desk-a.order-service.order.created"));
        assert!(!writes("desk-a.inventory-service.stock.updated"));
        // Only the order workload serves the API and writes its commands.
        assert!(plan.workloads[0].acls.iter().any(|r| {
            r.name == "desk-a.inventory-service.stock.replenished"
                && r.operations.contains(&AclOperation::Write)
        }));
        // Every workload's changelogs are its own: named after its
        // application id, readable and writable by it alone.
        let changelog = "desk-a.desk-a-tradeflow-payment-payment-accounts-changelog";
        assert!(plan.topics.iter().any(|t| t.name == changelog));
        for (index, workload) in plan.workloads.iter().enumerate() {
            let has = workload.acls.iter().any(|r| r.name == changelog);
            assert_eq!(has, index == 1, "{}", workload.name);
        }
    }

    #[test]
    fn every_command_the_api_builds_goes_to_a_topic_the_api_may_write() {
        for kind in [
            EventKind::OrderCreated,
            EventKind::OrderAmended,
            EventKind::OrderCancelled,
            EventKind::AccountFunded,
            EventKind::StockReplenished,
        ] {
            let topic = crate::topics::topic_of(kind);
            assert!(API_PUBLISHES.contains(&topic), "{kind:?} -> {topic}");
        }
    }

    #[test]
    fn strimzi_output_names_each_topic_and_user_once() -> Result<(), PlanError> {
        let plan = plan(
            &TopicNamespace::none(),
            Topology::PerService,
            12,
            3,
            ChangelogLayout::PerStore,
        );
        let yaml = strimzi_yaml(&plan, "tradeflow")?;
        let topics = yaml.matches("kind: KafkaTopic").count();
        let users = yaml.matches("kind: KafkaUser").count();
        assert_eq!(topics, plan.topics.len());
        assert_eq!(users, 3);
        assert!(yaml.contains("  topicName: \"tradeflow-order-payment-accounts-changelog\"\n"));
        assert!(yaml.contains("    \"cleanup.policy\": \"compact\"\n"));
        assert!(yaml.contains("    type: scram-sha-512\n"));
        assert_eq!(yaml, strimzi_yaml(&plan, "tradeflow")?, "deterministic");
        Ok(())
    }

    #[test]
    fn names_kubernetes_cannot_hold_are_mapped_or_refused() {
        assert_eq!(
            topic_resource_name("Desk_A.order-service.order.created"),
            Ok("desk-a.order-service.order.created".to_string())
        );
        let plan = plan(
            &TopicNamespace::new("Desk_A").unwrap_or_default(),
            Topology::Node,
            1,
            1,
            ChangelogLayout::PerStore,
        );
        let error = strimzi_yaml(&plan, "tradeflow").err();
        assert!(
            matches!(error, Some(PlanError::ResourceName { ref name, .. }) if name == "Desk_A-tradeflow"),
            "{error:?}"
        );
        assert!(strimzi_yaml(&plan, "Not_A_Name").is_err());
    }

    #[test]
    fn topologies_parse_by_name() {
        assert_eq!("node".parse::<Topology>(), Ok(Topology::Node));
        assert_eq!("per-service".parse::<Topology>(), Ok(Topology::PerService));
        assert!("pods".parse::<Topology>().is_err());
    }
}
