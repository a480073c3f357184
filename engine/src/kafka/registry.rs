//! The owners' registry: the live nodes of one application and the
//! partitions each claims, kept by Kafka's group coordinator. Every node
//! joins the group `<application.id>.owners` (subscribed to the one-partition
//! topic `<application.id>-owners`, which carries no records) with a
//! `client.id` that names the node, its process, its ownership mode and the
//! partitions it claims; the coordinator drops a member when it leaves or
//! its session times out. A node that finds a live member of another node
//! claiming one of its partitions refuses to start.
//!
//! Owns: the registry consumer, the thread that keeps it alive (polls it),
//! and reading the other members' claims. Must never: consume the flow's
//! topics or decide ownership itself (`deployment` compares the claims).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use tracing::{debug, warn};

use super::{ensure_topics, kafka_error, KafkaSettings, TopicError, TopicSpec};
use crate::port::PortError;

/// `session.timeout.ms` of a registration: how long a node killed without
/// leaving stays in the registry (and blocks another node's claim).
pub const REGISTRY_SESSION_TIMEOUT_MS: u64 = 10_000;
/// How long a registration waits to see itself in the registry (retrying
/// a coordinator that is still loading).
pub const REGISTRY_JOIN_TIMEOUT_MS: u64 = 60_000;
/// How long one listing of the registry may take.
const REGISTRY_LIST_TIMEOUT_MS: u64 = 5_000;
/// How often the registry thread polls its consumer (heartbeats and
/// rebalances run in librdkafka's threads; polling serves their callbacks).
const REGISTRY_POLL_MS: u64 = 100;
/// Prefix of every registry `client.id`.
const CLIENT_ID_PREFIX: &str = "tradeflow-owner:";

/// What a live member of the registry claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The node's name.
    pub node: String,
    /// The node's process id (a restarted node is another process).
    pub process: u32,
    /// `core-map` or `consumer-group`.
    pub mode: String,
    /// Partitions it owns by core map; `None` for a group member, which may
    /// be given any partition.
    pub partitions: Option<Vec<i32>>,
}

impl Claim {
    /// The `client.id` carrying this claim.
    fn client_id(&self) -> String {
        let partitions = match &self.partitions {
            Some(list) => list
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            None => "any".to_string(),
        };
        format!(
            "{CLIENT_ID_PREFIX}{}:{}:{}:{partitions}",
            self.node, self.process, self.mode
        )
    }

    /// The claim a registry `client.id` carries; `None` for anything else.
    fn parse(client_id: &str) -> Option<Claim> {
        let mut fields = client_id.strip_prefix(CLIENT_ID_PREFIX)?.split(':');
        let node = fields.next()?.to_string();
        let process = fields.next()?.parse().ok()?;
        let mode = fields.next()?.to_string();
        let partitions = match fields.next()? {
            "any" => None,
            "" => Some(Vec::new()),
            list => Some(
                list.split(',')
                    .map(|p| p.parse().ok())
                    .collect::<Option<Vec<i32>>>()?,
            ),
        };
        Some(Claim {
            node,
            process,
            mode,
            partitions,
        })
    }
}

/// The registry member reads nothing: the partition it is given is paused
/// at once, so it never fetches (or resets offsets on) the registry topic,
/// and librdkafka's client errors about that topic are logged at debug
/// level (membership is what matters, and a lost one shows in the listing).
struct RegistryContext;

impl ClientContext for RegistryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "owners' registry client");
    }
}

impl ConsumerContext for RegistryContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            if let Err(e) = consumer.pause(list) {
                debug!(error = %e, "pausing the owners' registry partition");
            }
        }
    }
}

/// This process's membership of the registry: kept alive by a thread until
/// dropped, when the consumer closes and leaves the group.
pub struct Registration {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Kafka(#[from] PortError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(
        "this node did not appear in the owners' registry {group} within {0} ms",
        REGISTRY_JOIN_TIMEOUT_MS
    )]
    NotVisible { group: String },
    #[error("starting the registry thread: {0}")]
    Thread(std::io::Error),
}

/// The registry's consumer group of an application (its ACLs name it too).
pub fn registry_group(application_id: &str) -> String {
    format!("{application_id}.owners")
}

/// The registry's one-partition topic of an application, before the
/// namespace (the deployment's topic plan and ACLs name it too).
pub fn registry_topic(application_id: &str) -> String {
    format!("{application_id}-owners")
}

/// The registry's group and (physical) topic for `settings`' application.
fn names(settings: &KafkaSettings) -> (String, String) {
    (
        registry_group(&settings.application_id),
        settings
            .namespace
            .physical(&registry_topic(&settings.application_id)),
    )
}

/// Joins the registry with `claim` and returns, once this member is listed,
/// the claims of every other live member. Two nodes registering at once
/// each see the other by the time the later one reads the list.
pub fn register(
    settings: &KafkaSettings,
    claim: &Claim,
    replication: i32,
) -> Result<(Registration, Vec<Claim>), RegistryError> {
    let (group, topic) = names(settings);
    ensure_topics(
        settings,
        &[TopicSpec::stream(topic.as_str(), 1, replication)],
    )?;
    let client_id = claim.client_id();
    let consumer: BaseConsumer<RegistryContext> = settings
        .base()
        .set("group.id", &group)
        // Its own session timeout needs the classic protocol, whatever the
        // shards' groups use.
        .set("group.protocol", "classic")
        .set("client.id", &client_id)
        .set("enable.auto.commit", "false")
        .set(
            "session.timeout.ms",
            REGISTRY_SESSION_TIMEOUT_MS.to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (REGISTRY_SESSION_TIMEOUT_MS * 3).to_string(),
        )
        .create_with_context(RegistryContext)
        .map_err(|e| kafka_error("creating the registry consumer", e))?;
    // A topic just created may not be in every broker's metadata yet; a
    // subscription to it would log an error. Wait until it is.
    let deadline = Instant::now() + Duration::from_millis(REGISTRY_JOIN_TIMEOUT_MS);
    while Instant::now() < deadline {
        let known = consumer
            .fetch_metadata(
                Some(&topic),
                Duration::from_millis(REGISTRY_LIST_TIMEOUT_MS),
            )
            .is_ok_and(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            });
        if known {
            break;
        }
        std::thread::sleep(Duration::from_millis(REGISTRY_POLL_MS));
    }
    consumer
        .subscribe(&[topic.as_str()])
        .map_err(|e| kafka_error("joining the owners' registry", e))?;
    let others = loop {
        // Serves the join: librdkafka joins on its own threads, and a poll
        // delivers what it needs from this one.
        let _ = consumer.poll(Duration::from_millis(REGISTRY_POLL_MS));
        // A coordinator still loading (a broker just started or failed
        // over) answers with a retryable error: ask again until the deadline.
        let listed = match consumer.fetch_group_list(
            Some(&group),
            Duration::from_millis(REGISTRY_LIST_TIMEOUT_MS),
        ) {
            Ok(listed) => Some(listed),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "listing the owners' registry; retrying");
                None
            }
            Err(e) => return Err(kafka_error("listing the owners' registry", e).into()),
        };
        let members: Vec<String> = listed
            .iter()
            .flat_map(|l| l.groups().iter())
            .flat_map(|g| g.members().iter().map(|m| m.client_id().to_string()))
            .collect();
        if members.contains(&client_id) {
            break members
                .iter()
                .filter(|m| **m != client_id)
                .filter_map(|m| Claim::parse(m))
                .collect();
        }
        if Instant::now() >= deadline {
            return Err(RegistryError::NotVisible { group });
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tf-registry".into())
        .spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(REGISTRY_POLL_MS)) {
                    debug!(error = %e, "owners' registry");
                }
            }
            consumer.unsubscribe();
        })
        .map_err(RegistryError::Thread)?;
    Ok((
        Registration {
            stop,
            thread: Some(thread),
        },
        others,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_reads_back_from_its_client_id() {
        for partitions in [Some(vec![0, 2, 3]), Some(Vec::new()), None] {
            let claim = Claim {
                node: "node-a".into(),
                process: 4242,
                mode: "core-map".into(),
                partitions,
            };
            assert_eq!(Claim::parse(&claim.client_id()), Some(claim));
        }
        assert_eq!(Claim::parse("rdkafka"), None);
        assert_eq!(Claim::parse("tradeflow-owner:a:x:core-map:1"), None);
    }
}
