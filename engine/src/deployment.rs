//! From a validated core map (`tuning::NodeTuning`) to what the runtime starts:
//! one `ShardPlan` per configured core, the runtime knobs, and the topics the
//! node's stages need, created or checked before any shard runs.
//!
//! Owns: the Kafka identities derived from the node (group instance ids,
//! transactional ids), the topic plan of a set of stages (`topic_plan`), the
//! start-up topic checks, and the start-up claim of the node's partitions in
//! the owners' registry ([`claim_partitions`]: a node refuses to start while
//! another live node claims one of its partitions), with the node's
//! liveness beacon when the core map names `liveness_addr`.
//! Must never: start shard threads or process records; `runtime` does that.

use tuning::{Machine, NodeKnobs, NodeTuning, OwnershipMode, TuningError};

use crate::ids::ShardId;
use crate::kafka::registry::{
    register, Claim, Registration, RegistryError, REGISTRY_SESSION_TIMEOUT_MS,
};
use crate::kafka::{
    ensure_topics, shard_transactional_id, topic_records, KafkaSettings, Ownership, TopicError,
    TopicSpec,
};
use crate::liveness::{Beacon, PeerIdentity};
use codecs::topics::TopicNamespace;

use crate::changelog::{changelog_topics, other_layout, ChangelogLayout};
use crate::runtime::ShardPlan;
use crate::topics::dead_letter_topic;

/// How this node reaches Kafka; everything else comes from the core map.
/// Its `Debug` redacts secret client properties.
#[derive(Clone)]
pub struct KafkaConnection {
    pub bootstrap: String,
    pub application_id: String,
    /// librdkafka properties passed through (security, tuning).
    pub client_properties: Vec<(String, String)>,
    pub linger_ms: u32,
    pub fetch_wait_max_ms: u32,
    /// Prefix of the flow's topics, so deployments can share a cluster.
    pub namespace: TopicNamespace,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnection")
            .field("bootstrap", &self.bootstrap)
            .field("application_id", &self.application_id)
            .field(
                "client_properties",
                &tuning::security::redacted_properties(&self.client_properties),
            )
            .field("linger_ms", &self.linger_ms)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Everything `runtime::Engine::start` needs for one node.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub settings: KafkaSettings,
    pub shards: Vec<ShardPlan>,
    /// The map's own knobs, validated with it.
    pub knobs: NodeKnobs,
    pub partitions: i32,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Tuning(#[from] TuningError),
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(
        "state.changelog_layout = \"{layout}\", but changelog topic {topic} of the \"{other}\" \
         layout holds {records} record(s) of this application's state, which the \"{layout}\" \
         layout never reads: starting would lose that state. Keep state.changelog_layout = \
         \"{other}\", or move the state over and delete {topic} first"
    )]
    ChangelogLayout {
        layout: ChangelogLayout,
        other: ChangelogLayout,
        topic: String,
        records: u64,
    },
    #[error("ownership.partitions = {0} does not fit a Kafka partition count")]
    PartitionCount(u32),
    #[error(
        "client property {key} belongs to the classic group protocol, but ownership.mode = \
         \"consumer-group\" uses KIP-848's consumer protocol (Kafka 4.0 or later), whose session \
         and heartbeat the broker sets (group.consumer.session.timeout.ms, \
         group.consumer.heartbeat.interval.ms): remove {key}, or add the client property \
         group.protocol=classic (eager rebalances: every partition is restored at each one)"
    )]
    ClassicGroupProperty { key: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "ownership.liveness_addr = \"{bind}\": the liveness beacon cannot listen there: {source}"
    )]
    Liveness {
        bind: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to start: node {other} (process {process}, {mode}) is live in the owners' \
         registry of {application} and may process partition(s) {partitions:?} that this node \
         would own; stop it first, or give the nodes disjoint core maps (a node killed without \
         leaving stays listed for its ownership.session_ms, {REGISTRY_SESSION_TIMEOUT_MS} ms by \
         default)"
    )]
    OwnedElsewhere {
        application: String,
        other: String,
        process: u32,
        mode: String,
        partitions: Vec<i32>,
    },
}

/// Turns a core map into shard plans for this machine, after validating it
/// against the machine's cores.
pub fn plan_node(
    tuning: &NodeTuning,
    machine: &Machine,
    connection: &KafkaConnection,
) -> Result<NodePlan, DeploymentError> {
    tuning.validate_against(machine)?;
    let partitions = i32::try_from(tuning.ownership().partitions)
        .map_err(|_| DeploymentError::PartitionCount(tuning.ownership().partitions))?;
    let node = &tuning.node().name;
    let application_id = &connection.application_id;
    let shards: Vec<ShardPlan> = tuning
        .shards()
        .iter()
        .enumerate()
        .map(|(index, placement)| ShardPlan {
            shard: ShardId(index as u16),
            core: Some(placement.core.0),
            ownership: match tuning.ownership().mode {
                OwnershipMode::CoreMap => Ownership::Static(placement.partitions.clone()),
                OwnershipMode::ConsumerGroup => Ownership::Group {
                    instance_id: node.instance_id(placement.core),
                },
            },
            // One transactional id per node and core: the shard restarted on
            // that core fences the one it replaces.
            transactional_id: shard_transactional_id(
                application_id,
                &node.instance_id(placement.core),
            ),
        })
        .collect();
    let knobs = tuning.knobs();
    let settings = KafkaSettings {
        bootstrap: connection.bootstrap.clone(),
        application_id: application_id.clone(),
        guarantee: knobs.commit().guarantee,
        client_properties: connection.client_properties.clone(),
        linger_ms: connection.linger_ms,
        fetch_wait_max_ms: connection.fetch_wait_max_ms,
        namespace: connection.namespace.clone(),
    };
    if tuning.ownership().mode == OwnershipMode::ConsumerGroup {
        if let Some(key) = settings.classic_only_group_property() {
            return Err(DeploymentError::ClassicGroupProperty {
                key: key.to_string(),
            });
        }
    }
    Ok(NodePlan {
        settings,
        shards,
        knobs,
        partitions,
    })
}

/// Registers this node's claim in the owners' registry of its application
/// and refuses (`OwnedElsewhere`) when another live node may process one of
/// the partitions this node would own: a core-map node whose map shares a
/// partition, or any consumer-group node beside a core-map node (the group
/// may hand it any partition). Consumer-group nodes beside each other are
/// the group's to arbitrate. Members with this node's name are its own
/// restarts (or a killed predecessor not yet expired) and are ignored; two
/// live processes under one node name share transactional ids, so the later
/// fences the earlier. Hold the `Registration` as long as the shards run.
pub fn claim_partitions(
    settings: &KafkaSettings,
    tuning: &NodeTuning,
    replication: i32,
) -> Result<Registration, DeploymentError> {
    let node = tuning.node().name.as_str().to_string();
    let partitions = match tuning.ownership().mode {
        OwnershipMode::CoreMap => {
            let mut owned: Vec<i32> = tuning
                .shards()
                .iter()
                .flat_map(|shard| shard.partitions.iter().map(|p| p.0))
                .collect();
            owned.sort_unstable();
            owned.dedup();
            Some(owned)
        }
        OwnershipMode::ConsumerGroup => None,
    };
    let mut claim = Claim {
        node: node.clone(),
        process: std::process::id(),
        mode: match tuning.ownership().mode {
            OwnershipMode::CoreMap => "core-map",
            OwnershipMode::ConsumerGroup => "consumer-group",
        }
        .to_string(),
        partitions,
        shards: Some((
            settings.guarantee,
            tuning.shards().iter().map(|shard| shard.core.0).collect(),
        )),
        liveness: None,
    };
    // The beacon listens before the claim names it, and before any shard
    // joins the group: a peer that finds its address refusing connections
    // after a verified link knows this process is gone.
    let beacon = match tuning.ownership().liveness_addr {
        Some(bind) => {
            let beacon = Beacon::start(
                bind,
                PeerIdentity {
                    application: settings.application_id.clone(),
                    node: node.clone(),
                    process: claim.process,
                },
                tuning
                    .shards()
                    .iter()
                    .map(|shard| tuning.node().name.instance_id(shard.core))
                    .collect(),
            )
            .map_err(|source| DeploymentError::Liveness { bind, source })?;
            claim.liveness = Some(beacon.addr());
            Some(beacon)
        }
        None => None,
    };
    let session_ms = u64::from(tuning.ownership().session_ms);
    let (mut registration, others) = register(settings, &claim, replication, session_ms)?;
    if let Some(beacon) = beacon {
        registration.keep_beacon(beacon);
    }
    for other in others.iter().filter(|o| o.node != node) {
        let shared = conflict(&claim, other);
        if !shared.is_empty() {
            return Err(DeploymentError::OwnedElsewhere {
                application: settings.application_id.clone(),
                other: other.node.clone(),
                process: other.process,
                mode: other.mode.clone(),
                partitions: shared,
            });
        }
    }
    Ok(registration)
}

/// Partitions both `mine` and `other` may process.
fn conflict(mine: &Claim, other: &Claim) -> Vec<i32> {
    match (&mine.partitions, &other.partitions) {
        (Some(a), Some(b)) => a.iter().copied().filter(|p| b.contains(p)).collect(),
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => Vec::new(),
    }
}

/// The topics a set of stages reads and writes, by logical name:
/// [`prepare_topics`] puts the settings' namespace in front.
#[derive(Clone, Debug, Default)]
pub struct FlowTopics<'a> {
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub stores: Vec<&'a str>,
    /// `[state] changelog_layout`: a compacted changelog per store, or one
    /// shared by every store (see `crate::changelog`).
    pub changelog_layout: ChangelogLayout,
}

impl FlowTopics<'_> {
    /// The logical changelog topics of the flow's stores under its layout.
    pub fn changelogs(&self, application_id: &str) -> Vec<String> {
        changelog_topics(self.changelog_layout, application_id, &self.stores)
    }
}

/// The topics a process with `application_id` in `namespace` needs for
/// `flow`, by physical name: inputs and outputs, one dead-letter topic per
/// input, the compacted changelogs (one per store, or one shared by every
/// store: `[state] changelog_layout`), all with `partitions`
/// partitions. One list, so `tradeflow run` (which creates them) and
/// `tradeflow plan` (which prints them as Strimzi resources) never disagree.
pub fn topic_plan(
    namespace: &TopicNamespace,
    application_id: &str,
    flow: &FlowTopics<'_>,
    partitions: i32,
    replication: i32,
) -> Vec<TopicSpec> {
    let mut specs: Vec<TopicSpec> = Vec::new();
    let mut add = |spec: TopicSpec| {
        if !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec);
        }
    };
    for topic in flow.inputs.iter().chain(&flow.outputs) {
        add(TopicSpec::stream(
            namespace.physical(topic),
            partitions,
            replication,
        ));
    }
    for topic in &flow.inputs {
        add(TopicSpec::stream(
            dead_letter_topic(&namespace.physical(topic)),
            partitions,
            replication,
        ));
    }
    for changelog in flow.changelogs(application_id) {
        add(TopicSpec::changelog(
            namespace.physical(&changelog),
            partitions,
            replication,
        ));
    }
    // The owners' registry's topic (one partition, no records): made by
    // `claim_partitions` when missing, listed here so operators who create
    // topics first (Strimzi) and the ACLs know it.
    add(TopicSpec::stream(
        namespace.physical(&crate::kafka::registry::registry_topic(application_id)),
        1,
        replication,
    ));
    specs
}

/// Creates what is missing of [`topic_plan`] — inputs, outputs, the
/// compacted changelogs of the flow's layout, one dead-letter topic per
/// input — all with `partitions` partitions, and fails naming the topic
/// when an existing one has another count (co-partitioning would silently
/// break).
///
/// First it refuses a layout switch that would lose state: when a changelog
/// topic of the *other* layout holds records, the node would never read
/// them, so it fails with [`DeploymentError::ChangelogLayout`], naming
/// `state.changelog_layout` and the topic, and creates nothing.
pub fn prepare_topics(
    settings: &KafkaSettings,
    flow: &FlowTopics<'_>,
    partitions: i32,
    replication: i32,
) -> Result<(), DeploymentError> {
    let other = other_layout(flow.changelog_layout);
    let other_topics: Vec<String> = changelog_topics(other, &settings.application_id, &flow.stores)
        .iter()
        .map(|t| settings.namespace.physical(t))
        .collect();
    for (topic, records) in topic_records(settings, &other_topics)? {
        if records > 0 {
            return Err(DeploymentError::ChangelogLayout {
                layout: flow.changelog_layout,
                other,
                topic,
                records,
            });
        }
    }
    let specs = topic_plan(
        &settings.namespace,
        &settings.application_id,
        flow,
        partitions,
        replication,
    );
    ensure_topics(settings, &specs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{Guarantee, CLASSIC_ONLY_GROUP_PROPERTIES};
    use tuning::RetryPolicy;

    fn claim(node: &str, partitions: Option<Vec<i32>>) -> Claim {
        Claim {
            node: node.into(),
            process: 1,
            mode: if partitions.is_some() {
                "core-map"
            } else {
                "consumer-group"
            }
            .into(),
            partitions,
            shards: None,
            liveness: None,
        }
    }

    #[test]
    fn claims_conflict_where_two_nodes_may_process_one_partition() {
        let full = claim("a", Some(vec![0, 1, 2, 3]));
        let upper = claim("b", Some(vec![2, 3, 4]));
        let lower = claim("c", Some(vec![0, 1]));
        let group = claim("d", None);
        assert_eq!(conflict(&upper, &full), vec![2, 3]);
        assert_eq!(conflict(&full, &upper), vec![2, 3]);
        assert!(conflict(&upper, &lower).is_empty());
        assert_eq!(conflict(&lower, &group), vec![0, 1]);
        assert_eq!(conflict(&group, &lower), vec![0, 1]);
        assert!(conflict(&group, &claim("e", None)).is_empty());
    }

    fn connection() -> KafkaConnection {
        KafkaConnection {
            bootstrap: "127.0.0.1:19092".into(),
            application_id: "tradeflow".into(),
            client_properties: Vec::new(),
            linger_ms: 0,
            fetch_wait_max_ms: 5,
            namespace: TopicNamespace::none(),
        }
    }

    #[test]
    fn a_core_map_becomes_static_plans_with_fencing_ids() -> Result<(), DeploymentError> {
        let tuning = NodeTuning::from_toml_str(
            r#"
            [node]
            name = "node-a"
            [ownership]
            mode = "core-map"
            partitions = 4
            [[shard]]
            core = 0
            partitions = [0, 2]
            [[shard]]
            core = 1
            partitions = [1, 3]
            "#,
        )?;
        let plan = plan_node(&tuning, &Machine::with_cores(2), &connection())?;
        assert_eq!(plan.partitions, 4);
        assert_eq!(plan.shards.len(), 2);
        assert_eq!(plan.shards[1].core, Some(1));
        assert_eq!(
            plan.shards[1].ownership,
            Ownership::Static(vec![tuning::PartitionId(1), tuning::PartitionId(3)])
        );
        assert_eq!(plan.shards[1].transactional_id, "tradeflow-node-a-1");
        assert_eq!(plan.settings.guarantee, Guarantee::ExactlyOnce);
        Ok(())
    }

    #[test]
    fn a_core_the_machine_lacks_is_refused() -> Result<(), TuningError> {
        let tuning = NodeTuning::from_toml_str(
            r#"
            [node]
            name = "node-a"
            [ownership]
            mode = "core-map"
            partitions = 2
            [[shard]]
            core = 5
            partitions = [0, 1]
            "#,
        )?;
        let error = plan_node(&tuning, &Machine::with_cores(2), &connection())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("shard[0].core"), "{error}");
        Ok(())
    }

    #[test]
    fn group_mode_members_get_static_instance_ids() -> Result<(), DeploymentError> {
        let tuning = NodeTuning::from_toml_str(
            r#"
            [node]
            name = "node-b"
            [ownership]
            mode = "consumer-group"
            partitions = 8
            [[shard]]
            core = 0
            [commit]
            guarantee = "at-least-once"
            "#,
        )?;
        let plan = plan_node(&tuning, &Machine::with_cores(2), &connection())?;
        assert_eq!(
            plan.shards[0].ownership,
            Ownership::Group {
                instance_id: "node-b-0".into()
            }
        );
        assert_eq!(plan.settings.guarantee, Guarantee::AtLeastOnce);
        assert!(plan.settings.consumer_group_protocol());
        Ok(())
    }

    #[test]
    fn a_consumer_group_node_refuses_classic_group_properties_unless_classic(
    ) -> Result<(), DeploymentError> {
        let text = "[node]\nname = \"n\"\n[ownership]\nmode = \"consumer-group\"\n\
                    partitions = 2\n[[shard]]\ncore = 0\n";
        let tuning = NodeTuning::from_toml_str(text)?;
        let with = |properties: &[(&str, &str)]| KafkaConnection {
            client_properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..connection()
        };
        for key in CLASSIC_ONLY_GROUP_PROPERTIES {
            let error = plan_node(&tuning, &Machine::with_cores(1), &with(&[(key, "6000")]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.contains("group.protocol=classic"), "{error}");
        }
        // Asked for, the classic protocol takes its own session.
        let classic = with(&[
            ("group.protocol", "classic"),
            ("session.timeout.ms", "6000"),
        ]);
        let plan = plan_node(&tuning, &Machine::with_cores(1), &classic)?;
        assert!(!plan.settings.consumer_group_protocol());
        // A core-map node joins no group: the property is its own business.
        let core_map = NodeTuning::from_toml_str(
            "[node]\nname = \"n\"\n[ownership]\nmode = \"core-map\"\npartitions = 2\n\
             [[shard]]\ncore = 0\npartitions = [0, 1]\n",
        )?;
        plan_node(
            &core_map,
            &Machine::with_cores(1),
            &with(&[("session.timeout.ms", "6000")]),
        )?;
        Ok(())
    }

    #[test]
    fn the_retry_section_becomes_the_runtime_retry_policy() -> Result<(), DeploymentError> {
        let tuning = NodeTuning::from_toml_str(
            r#"
            [node]
            name = "node-a"
            [ownership]
            mode = "consumer-group"
            partitions = 2
            [[shard]]
            core = 0
            [retry]
            attempts_max = 3
            deadline_ms = 45000
            backoff_min_ms = 250
            backoff_max_ms = 4000
            "#,
        )?;
        let plan = plan_node(&tuning, &Machine::with_cores(1), &connection())?;
        assert_eq!(
            plan.knobs.retry(),
            RetryPolicy {
                attempts_max: 3,
                deadline_ms: 45_000,
                backoff_min_ms: 250,
                backoff_max_ms: 4_000,
            }
        );
        Ok(())
    }

    #[test]
    fn a_map_without_a_retry_section_keeps_the_runtime_defaults() -> Result<(), DeploymentError> {
        let tuning = NodeTuning::from_toml_str(
            r#"
            [node]
            name = "node-a"
            [ownership]
            mode = "consumer-group"
            partitions = 2
            [[shard]]
            core = 0
            "#,
        )?;
        let plan = plan_node(&tuning, &Machine::with_cores(1), &connection())?;
        // The tuning crate holds the one set of defaults the runtime uses.
        assert_eq!(plan.knobs.retry(), RetryPolicy::default());
        assert_eq!(plan.knobs, NodeKnobs::default());
        Ok(())
    }

    /// The exactly-once interval limit is derived from the transaction
    /// timeout the shards' producers set: one constant, in `tuning::limits`.
    #[test]
    fn the_transaction_timeout_the_shards_set_is_the_one_the_limits_derive_from(
    ) -> Result<(), TuningError> {
        use tuning::limits::EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX;
        assert_eq!(
            crate::kafka::TRANSACTION_TIMEOUT_MS,
            tuning::limits::TRANSACTION_TIMEOUT_MS
        );
        // A transaction open for the longest interval and then the whole
        // commit call still ends before the broker aborts it.
        assert!(
            u64::from(EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX) + crate::kafka::KAFKA_CALL_TIMEOUT_MS
                <= crate::kafka::TRANSACTION_TIMEOUT_MS
        );
        // And the limit is the one validation applies to an exactly-once map.
        let commit = |interval_ms| tuning::CommitPolicy {
            interval_ms,
            ..tuning::CommitPolicy::default()
        };
        let knobs = |interval_ms| {
            NodeKnobs::new(
                tuning::RuntimeKnobs::default(),
                commit(interval_ms),
                RetryPolicy::default(),
                tuning::StateSection::default(),
            )
        };
        knobs(EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX)?;
        let refused = knobs(EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX + 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("commit.interval_ms"), "{refused}");
        Ok(())
    }
}
