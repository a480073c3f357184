//! The owners' registry: the live nodes of one application and the
//! partitions each claims, kept by Kafka's group coordinator. Every node
//! joins the group `<application.id>.owners` (subscribed to the one-partition
//! topic `<application.id>-owners`, which carries no records) with a
//! `client.id` that names the node, its process, its ownership mode and the
//! partitions it claims; the coordinator drops a member when it leaves or
//! its session times out. A node that finds a live member of another node
//! claiming one of its partitions refuses to start.
//!
//! A claim also names the node's guarantee and cores, from which its shards'
//! transactional ids follow. The thread that keeps a registration alive
//! watches the other members: when every process of another node has left
//! (its session timed out after a `kill -9`, or it shut down), it **fences
//! that node's transactional ids** (`init_transactions` under each id), so
//! the transaction coordinator aborts what the departed node left open at
//! once instead of after `transaction.timeout.ms`. Until then nobody can
//! read past that transaction under `read_committed`: not the node taking
//! over its partitions, whose restore waits for it (docs/STATE.md,
//! "Take-over after kill -9"), nor the readers of its outputs.
//!
//! A claim may name the node's liveness beacon (`crate::liveness`). The
//! thread then watches every listed process of another node that names
//! one, a thread each: when a watch finds the process gone (not stalled,
//! not unreachable: gone), it removes that process's members from the
//! application's group (`group_admin`), fences its transactional ids, and
//! has this node's own members ask for their assignment, all within
//! milliseconds instead of after the sessions.
//!
//! Owns: the registry consumer, the thread that keeps it alive (polls it)
//! and fences departed nodes, the liveness watches of other nodes, and
//! reading the other members' claims. Must never: consume the flow's
//! topics, decide ownership itself (`deployment` compares the claims),
//! fence or remove its own node's ids or members (a restarted process of
//! this node fences its predecessor itself, at its own start), or act on a
//! process its watch did not find gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use tracing::{debug, info, warn};

use super::group_admin::{remove_group_members, GroupMember, Removal};
use super::{
    ensure_topics, kafka_error, shard_producer_ids, shard_transactional_id, Guarantee,
    KafkaSettings, TopicError, TopicSpec, KAFKA_CALL_TIMEOUT_MS, TRANSACTION_TIMEOUT_MS,
};
use crate::liveness::{watch_peer, PeerEnd, PeerIdentity};
use crate::port::PortError;

/// `session.timeout.ms` of a registration by default: how long a node killed
/// without leaving stays in the registry (and blocks another node's claim).
/// A core map sets its own (`[ownership] session_ms`).
pub const REGISTRY_SESSION_TIMEOUT_MS: u64 = tuning::limits::NODE_SESSION_MS_DEFAULT as u64;
/// Longest wait between a registration's heartbeats (librdkafka's default);
/// a shorter session heartbeats three times within it.
const REGISTRY_HEARTBEAT_MS_MAX: u64 = 3_000;
/// How long a registration waits to see itself in the registry (retrying
/// a coordinator that is still loading).
pub const REGISTRY_JOIN_TIMEOUT_MS: u64 = 60_000;
/// How long one listing of the registry may take, at most; never longer
/// than the session (see `register`).
const REGISTRY_LIST_TIMEOUT_MS: u64 = 5_000;
/// How often the registry thread polls its consumer (heartbeats and
/// rebalances run in librdkafka's threads; polling serves their callbacks).
const REGISTRY_POLL_MS: u64 = 100;
/// Prefix of every registry `client.id`.
const CLIENT_ID_PREFIX: &str = "tradeflow-owner:";
/// How often the registry thread lists the members to find departed nodes
/// (one DescribeGroups request) when nothing tells it sooner. An expired
/// registration makes the coordinator rebalance the registry, and the
/// thread lists right after that rebalance (`RegistryContext`), so this is
/// the bound for a departure the rebalance did not show.
const DEPARTURE_CHECK_MS: u64 = 1_000;

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
    /// The guarantee its shards run under and their cores: what its
    /// transactional ids are made of. `None` from a claim that does not say
    /// (written before claims carried it): such a node is never fenced.
    pub shards: Option<(Guarantee, Vec<usize>)>,
    /// Where the node's liveness beacon listens (`crate::liveness`), if it
    /// runs one: the other nodes watch it to act on its death at once.
    /// Only a claim that names its shards can name it.
    pub liveness: Option<SocketAddr>,
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
        let shards = match &self.shards {
            Some((guarantee, cores)) => format!(
                ":{}:{}",
                guarantee.as_str(),
                cores
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => String::new(),
        };
        // An address's colons would split the field: `_` stands for them
        // (no socket address contains one).
        let liveness = match (&self.shards, self.liveness) {
            (Some(_), Some(addr)) => format!(":{}", addr.to_string().replace(':', "_")),
            _ => String::new(),
        };
        format!(
            "{CLIENT_ID_PREFIX}{}:{}:{}:{partitions}{shards}{liveness}",
            self.node, self.process, self.mode
        )
    }

    /// Every transactional id the node's shards use in `application_id`
    /// (none when the claim does not say).
    pub fn transactional_ids(&self, application_id: &str) -> Vec<String> {
        let Some((guarantee, cores)) = &self.shards else {
            return Vec::new();
        };
        cores
            .iter()
            .flat_map(|core| {
                let base = shard_transactional_id(application_id, &format!("{}-{core}", self.node));
                shard_producer_ids(&base, *guarantee)
            })
            .collect()
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
        let shards = match (fields.next(), fields.next()) {
            (None, _) => None,
            (Some(guarantee), Some(cores)) => {
                let guarantee: Guarantee = guarantee.parse().ok()?;
                let cores = match cores {
                    "" => Vec::new(),
                    list => list
                        .split(',')
                        .map(|c| c.parse().ok())
                        .collect::<Option<Vec<usize>>>()?,
                };
                Some((guarantee, cores))
            }
            (Some(_), None) => return None,
        };
        let liveness = match fields.next() {
            None => None,
            Some(addr) => Some(addr.replace('_', ":").parse().ok()?),
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Claim {
            node,
            process,
            mode,
            partitions,
            shards,
            liveness,
        })
    }
}

/// The other nodes of the registry as last listed, by name, and what to
/// fence when one of them leaves.
struct DepartureWatch {
    own_node: String,
    /// The last claim seen of each other node.
    seen: BTreeMap<String, Claim>,
}

impl DepartureWatch {
    fn new(own_node: &str, others: &[Claim]) -> Self {
        let mut watch = DepartureWatch {
            own_node: own_node.to_string(),
            seen: BTreeMap::new(),
        };
        let _ = watch.departed(others);
        watch
    }

    /// Takes a new listing of the other members; returns the claims of the
    /// nodes listed before that have no live process any more. A node
    /// restarted under the same name is listed again and is not departed.
    fn departed(&mut self, live: &[Claim]) -> Vec<Claim> {
        let mut now: BTreeMap<String, Claim> = BTreeMap::new();
        for claim in live.iter().filter(|c| c.node != self.own_node) {
            now.insert(claim.node.clone(), claim.clone());
        }
        let gone = self
            .seen
            .iter()
            .filter(|(node, _)| !now.contains_key(*node))
            .map(|(_, claim)| claim.clone())
            .collect();
        self.seen = now;
        gone
    }
}

/// How soon a fence asks again while the coordinator aborts the fenced
/// id's open transaction (a round of markers on loopback takes a few ms).
const FENCE_RETRY_BACKOFF_MS: u32 = 20;

/// How long removing a dead node's group members may take.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The liveness watches this node keeps on the other nodes' beacons: one
/// thread per listed process that names a beacon, for as long as the
/// registry lists it.
struct LivenessWatches {
    own_node: String,
    settings: KafkaSettings,
    stop: Arc<AtomicBool>,
    /// The watch of every process by node and process id: kept while the
    /// process is listed (a watch that ended is not started again) or its
    /// watch still runs (a listing in the middle of a rebalance may miss a
    /// member that is there: its watch goes on, and is not doubled).
    watched: BTreeMap<(String, u32), Option<JoinHandle<()>>>,
}

impl LivenessWatches {
    /// Starts a watch for every newly listed process with a beacon; forgets
    /// the processes no longer listed.
    fn follow(&mut self, live: &[Claim]) {
        let listed: BTreeSet<(String, u32)> = live
            .iter()
            .filter(|c| c.node != self.own_node && c.liveness.is_some())
            .map(|c| (c.node.clone(), c.process))
            .collect();
        self.watched.retain(|key, watch| {
            listed.contains(key) || watch.as_ref().is_some_and(|w| !w.is_finished())
        });
        for claim in live {
            let Some(addr) = claim.liveness else { continue };
            let key = (claim.node.clone(), claim.process);
            if claim.node == self.own_node || self.watched.contains_key(&key) {
                continue;
            }
            let (settings, stop, watched) =
                (self.settings.clone(), Arc::clone(&self.stop), claim.clone());
            let spawned = std::thread::Builder::new()
                .name("tf-watch".into())
                .spawn(move || watch_and_evict(&settings, &watched, addr, &stop));
            if let Err(e) = &spawned {
                warn!(error = %e, node = %claim.node, "starting a liveness watch; its death is noticed when its sessions expire");
            }
            self.watched.insert(key, spawned.ok());
        }
    }
}

/// Watches `claim`'s beacon at `addr`; when its process dies, removes its
/// shards' group members (their partitions are reassigned now, not after
/// the group's session) and fences its transactional ids (its open
/// transaction is aborted now, not after its registration expires).
fn watch_and_evict(settings: &KafkaSettings, claim: &Claim, addr: SocketAddr, stop: &AtomicBool) {
    let identity = PeerIdentity {
        application: settings.application_id.clone(),
        node: claim.node.clone(),
        process: claim.process,
    };
    let (members, restarted) = match watch_peer(addr, &identity, stop) {
        PeerEnd::Died { members, restarted } => (members, restarted),
        PeerEnd::Left => {
            debug!(node = %claim.node, process = claim.process, "a node said goodbye on its liveness link");
            return;
        }
        PeerEnd::LostTrack(why) => {
            info!(node = %claim.node, process = claim.process, %addr, %why,
                "not following a node's liveness beacon: its death is noticed when its sessions expire");
            return;
        }
    };
    let died = Instant::now();
    // A restarted process of the node fenced its predecessor's transactions
    // at its own start, under the same ids: fencing them now would fence it.
    let ids = if restarted {
        Vec::new()
    } else {
        claim.transactional_ids(&settings.application_id)
    };
    warn!(node = %claim.node, process = claim.process, members = members.len(), ids = ids.len(), restarted,
        "a node's process died: removing its group members and fencing its transactional ids now");
    let fencing = (!ids.is_empty()).then(|| {
        let (settings, node) = (settings.clone(), claim.node.clone());
        std::thread::Builder::new()
            .name("tf-fence".into())
            .spawn(move || fence(&settings, &node, &ids))
    });
    let members: Vec<GroupMember> = members
        .into_iter()
        .map(|(instance_id, member_id)| GroupMember {
            instance_id,
            member_id,
        })
        .collect();
    if !members.is_empty() {
        let reason = format!(
            "tradeflow: process {} of node {} died (its liveness link closed and its address \
             refuses connections)",
            claim.process, claim.node
        );
        match remove_group_members(
            settings,
            &settings.application_id,
            &members,
            &reason,
            REMOVAL_TIMEOUT,
        ) {
            Ok(outcomes) => {
                if outcomes.iter().any(|(_, r)| *r == Removal::Removed) {
                    // This node's own members ask for their new partitions
                    // now, not at their next heartbeat.
                    crate::liveness::note_peer_death();
                }
                for (member, removal) in outcomes {
                    match removal {
                        Removal::Removed => {
                            info!(node = %claim.node, instance_id = %member.instance_id,
                            took_ms = died.elapsed().as_millis() as u64,
                            "removed a dead node's group member: its partitions are reassigned now")
                        }
                        Removal::NotMember => {
                            info!(node = %claim.node, instance_id = %member.instance_id,
                            "a dead node's group member had already left the group")
                        }
                        Removal::Replaced => {
                            info!(node = %claim.node, instance_id = %member.instance_id,
                            "a dead node's group instance id is held by another member now; left alone")
                        }
                        Removal::Refused(why) => {
                            warn!(node = %claim.node, instance_id = %member.instance_id, %why,
                            "the coordinator refused to remove a dead node's group member; its session decides")
                        }
                    }
                }
            }
            Err(e) => warn!(node = %claim.node, error = %e,
                "could not remove a dead node's group members; their session decides"),
        }
    }
    match fencing.map(|spawned| spawned.map(JoinHandle::join)) {
        Some(Ok(Err(_))) => warn!(node = %claim.node, "a fencing thread panicked"),
        Some(Ok(Ok(()))) => {}
        Some(Err(e)) => {
            warn!(node = %claim.node, error = %e, "starting a fencing thread; fencing here");
            fence(
                settings,
                &claim.node,
                &claim.transactional_ids(&settings.application_id),
            );
        }
        None => {}
    }
}

/// Fences `ids`: `init_transactions` under each makes the coordinator
/// abort the open transaction of the id's last producer (and refuse that
/// producer from then on). Runs on its own thread: each call may wait for
/// the abort's markers. The ids are fenced side by side, one thread each:
/// one fence took about a second (a new client's connections, then the
/// coordinator's abort), and a restore waiting for a departed node's
/// transaction waited for them one after another.
fn fence(settings: &KafkaSettings, node: &str, ids: &[String]) {
    std::thread::scope(|scope| {
        for id in ids {
            let spawned = std::thread::Builder::new()
                .name("tf-fence".into())
                .spawn_scoped(scope, move || fence_one(settings, node, id));
            if let Err(e) = spawned {
                warn!(error = %e, transactional_id = %id, "starting a fencing thread; fencing here");
                fence_one(settings, node, id);
            }
        }
    });
}

fn fence_one(settings: &KafkaSettings, node: &str, id: &str) {
    let started = Instant::now();
    let producer: Result<BaseProducer, _> = settings
        .base()
        .set("transactional.id", id)
        .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string())
        // The coordinator answers CONCURRENT_TRANSACTIONS while it aborts
        // what the id left open; the fence asks again after this
        // (init-pid-retry-backoff.patch, vendor/rdkafka-sys/PATCHED.md).
        .set("retry.backoff.ms", FENCE_RETRY_BACKOFF_MS.to_string())
        .create();
    let result = producer.and_then(|p| {
        // A fresh client that asks for its transaction coordinator while no
        // broker connection is up is refused ("No brokers available") and
        // asks again on librdkafka's 500 ms coordinator query timer: one
        // fence in three took 515-530 ms that way (librdkafka's debug log,
        // `eos,broker`). The first metadata request goes through the
        // bootstrap connection, which librdkafka then drops for the
        // brokers the answer names; the second brings one of those up.
        // With both, 15 of 15 fences took 13.5-18 ms on loopback.
        let (_, topic) = names(settings);
        for _ in 0..2 {
            if let Err(e) = p
                .client()
                .fetch_metadata(Some(&topic), Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))
            {
                debug!(error = %e, "connecting a fence's producer");
            }
        }
        p.init_transactions(Duration::from_millis(KAFKA_CALL_TIMEOUT_MS))
    });
    match result {
        Ok(()) => info!(
            node,
            transactional_id = %id,
            took_ms = started.elapsed().as_millis() as u64,
            "fenced a departed node's transactional id: its open transaction, if any, is aborted"
        ),
        Err(e) => warn!(
            node,
            transactional_id = %id,
            error = %e,
            "could not fence a departed node's transactional id; its open transaction ends at transaction.timeout.ms"
        ),
    }
}

/// The claims of the registry's live members other than `client_id`.
fn list_others(
    consumer: &BaseConsumer<RegistryContext>,
    group: &str,
    client_id: &str,
    timeout: Duration,
) -> Result<(Vec<Claim>, bool), KafkaError> {
    let listed = consumer.fetch_group_list(Some(group), timeout)?;
    let members: Vec<String> = listed
        .groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.client_id().to_string()))
        .collect();
    let listed_self = members.iter().any(|m| m == client_id);
    Ok((
        members
            .iter()
            .filter(|m| *m != client_id)
            .filter_map(|m| Claim::parse(m))
            .collect(),
        listed_self,
    ))
}

/// The registry member reads nothing: the partition it is given is paused
/// at once, so it never fetches (or resets offsets on) the registry topic,
/// and librdkafka's client errors about that topic are logged at debug
/// level (membership is what matters, and a lost one shows in the listing).
/// Every rebalance raises `rebalanced`: the members changed (one joined, or
/// one left or expired), so the registry thread lists them now rather than
/// at its next periodic check.
#[derive(Default)]
struct RegistryContext {
    rebalanced: Arc<AtomicBool>,
}

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
            self.rebalanced.store(true, Ordering::Release);
        }
    }
}

/// This process's membership of the registry: kept alive by a thread until
/// dropped, when the consumer closes and leaves the group.
pub struct Registration {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// This node's liveness beacon, which the claim names: it lives as long
    /// as the registration, and says goodbye after the registration left.
    beacon: Option<crate::liveness::Beacon>,
}

impl Registration {
    /// Keeps `beacon` (the one the claim names) for the registration's life.
    pub fn keep_beacon(&mut self, beacon: crate::liveness::Beacon) {
        self.beacon = Some(beacon);
    }
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
///
/// `session_ms` is how long the registration outlives this process if it is
/// killed without leaving (`[ownership] session_ms`): the other nodes fence
/// it after that. The broker must allow it (`group.min.session.timeout.ms`).
pub fn register(
    settings: &KafkaSettings,
    claim: &Claim,
    replication: i32,
    session_ms: u64,
) -> Result<(Registration, Vec<Claim>), RegistryError> {
    let (group, topic) = names(settings);
    ensure_topics(
        settings,
        &[TopicSpec::stream(topic.as_str(), 1, replication)],
    )?;
    let client_id = claim.client_id();
    // The thread does not poll while it lists, and librdkafka leaves the
    // group of a consumer that goes `max.poll.interval.ms` (three sessions)
    // without a poll: with a 1.5 s session and a 5 s listing, a live node
    // whose coordinator was slow to answer left its registration (`MAXPOLL
    // ... leaving group`) and the other nodes fenced it. A listing that
    // times out is tried again at the next check.
    let list_timeout = Duration::from_millis(REGISTRY_LIST_TIMEOUT_MS.min(session_ms));
    let consumer: BaseConsumer<RegistryContext> = settings
        .base()
        .set("group.id", &group)
        // Its own session timeout needs the classic protocol, whatever the
        // shards' groups use.
        .set("group.protocol", "classic")
        .set("client.id", &client_id)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", session_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_ms / 3)
                .clamp(1, REGISTRY_HEARTBEAT_MS_MAX)
                .to_string(),
        )
        // Also the classic protocol's rebalance timeout: how long a
        // rebalance waits for a member that does not rejoin (one killed in
        // the middle of it). The thread polls between listings, each bounded
        // by `list_timeout` below, well inside it.
        .set("max.poll.interval.ms", (session_ms * 3).to_string())
        .create_with_context(RegistryContext::default())
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
        match list_others(&consumer, &group, &client_id, list_timeout) {
            Ok((others, true)) => break others,
            Ok((_, false)) => {}
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "listing the owners' registry; retrying");
            }
            Err(e) => return Err(kafka_error("listing the owners' registry", e).into()),
        }
        if Instant::now() >= deadline {
            return Err(RegistryError::NotVisible { group });
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let mut watch = DepartureWatch::new(&claim.node, &others);
    let mut watches = LivenessWatches {
        own_node: claim.node.clone(),
        settings: settings.clone(),
        stop: Arc::clone(&stop),
        watched: BTreeMap::new(),
    };
    watches.follow(&others);
    let fencing = settings.clone();
    let thread = std::thread::Builder::new()
        .name("tf-registry".into())
        .spawn(move || {
            let mut next_check = Instant::now() + Duration::from_millis(DEPARTURE_CHECK_MS);
            while !stopping.load(Ordering::Acquire) {
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(REGISTRY_POLL_MS)) {
                    debug!(error = %e, "owners' registry");
                }
                let rebalanced = consumer.context().rebalanced.swap(false, Ordering::AcqRel);
                if !rebalanced && Instant::now() < next_check {
                    continue;
                }
                next_check = Instant::now() + Duration::from_millis(DEPARTURE_CHECK_MS);
                match list_others(&consumer, &group, &client_id, list_timeout) {
                    // A listing without this member is a coordinator in
                    // the middle of a change: it says nothing of the others.
                    Ok((live, true)) => {
                        watches.follow(&live);
                        for gone in watch.departed(&live) {
                            let ids = gone.transactional_ids(&fencing.application_id);
                            if ids.is_empty() {
                                continue;
                            }
                            info!(node = %gone.node, ids = ids.len(), "a node left the owners' registry; fencing its transactional ids");
                            let settings = fencing.clone();
                            // Detached: the fence may wait for markers, and
                            // this thread keeps the registration alive.
                            let spawned = std::thread::Builder::new()
                                .name("tf-fence".into())
                                .spawn(move || fence(&settings, &gone.node, &ids));
                            if let Err(e) = spawned {
                                warn!(error = %e, "starting a fencing thread");
                            }
                        }
                    }
                    Ok((_, false)) => {}
                    Err(e) => debug!(error = %e, "listing the owners' registry"),
                }
            }
            consumer.unsubscribe();
        })
        .map_err(RegistryError::Thread)?;
    Ok((
        Registration {
            stop,
            thread: Some(thread),
            beacon: None,
        },
        others,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(node: &str, shards: Option<(Guarantee, Vec<usize>)>) -> Claim {
        Claim {
            node: node.into(),
            process: 4242,
            mode: "consumer-group".into(),
            partitions: None,
            shards,
            liveness: None,
        }
    }

    #[test]
    fn a_claim_reads_back_from_its_client_id() {
        let shards = [
            None,
            Some((Guarantee::ExactlyOnce, vec![0, 1])),
            Some((Guarantee::AtLeastOnce, vec![3])),
            Some((Guarantee::ExactlyOnce, Vec::new())),
        ];
        let beacons: [Option<SocketAddr>; 3] = [
            None,
            Some("10.0.0.7:7070".parse().expect("v4")),
            Some("[fe80::1]:0".parse().expect("v6")),
        ];
        for partitions in [Some(vec![0, 2, 3]), Some(Vec::new()), None] {
            for shards in shards.clone() {
                for liveness in beacons {
                    let claim = Claim {
                        node: "node-a".into(),
                        process: 4242,
                        mode: "core-map".into(),
                        partitions: partitions.clone(),
                        // Only a claim with shards can name a beacon.
                        liveness: liveness.filter(|_| shards.is_some()),
                        shards: shards.clone(),
                    };
                    assert_eq!(Claim::parse(&claim.client_id()), Some(claim));
                }
            }
        }
        // A claim of a release before claims carried the shards.
        assert_eq!(
            Claim::parse("tradeflow-owner:a:7:consumer-group:any"),
            Some(Claim {
                node: "a".into(),
                process: 7,
                mode: "consumer-group".into(),
                partitions: None,
                shards: None,
                liveness: None,
            })
        );
        assert_eq!(Claim::parse("rdkafka"), None);
        assert_eq!(Claim::parse("tradeflow-owner:a:x:core-map:1"), None);
        assert_eq!(
            Claim::parse("tradeflow-owner:a:1:core-map:1:exactly-once"),
            None
        );
        assert_eq!(Claim::parse("tradeflow-owner:a:1:core-map:1:maybe:0"), None);
        assert_eq!(
            Claim::parse("tradeflow-owner:a:1:core-map:1:exactly-once:x"),
            None
        );
        assert_eq!(
            Claim::parse("tradeflow-owner:a:1:any:1:exactly-once:0:9"),
            None
        );
        assert_eq!(
            Claim::parse("tradeflow-owner:a:1:any:1:exactly-once:0:1.2.3.4_5:x"),
            None
        );
    }

    #[test]
    fn a_claim_names_the_transactional_ids_its_shards_use() {
        let eos = claim("node-b", Some((Guarantee::ExactlyOnce, vec![0, 1])));
        assert_eq!(
            eos.transactional_ids("desk-a-tradeflow"),
            [
                "desk-a-tradeflow-node-b-0",
                "desk-a-tradeflow-node-b-0-alt",
                "desk-a-tradeflow-node-b-1",
                "desk-a-tradeflow-node-b-1-alt",
            ]
        );
        let alos = claim("node-b", Some((Guarantee::AtLeastOnce, vec![2])));
        assert_eq!(
            alos.transactional_ids("tf"),
            ["tf-node-b-2-state", "tf-node-b-2-state-alt"]
        );
        assert!(claim("node-b", None).transactional_ids("tf").is_empty());
    }

    #[test]
    fn a_node_departs_when_none_of_its_processes_is_listed() {
        let b = claim("node-b", Some((Guarantee::ExactlyOnce, vec![0])));
        let c = claim("node-c", Some((Guarantee::ExactlyOnce, vec![0])));
        let mut own = claim("node-a", Some((Guarantee::ExactlyOnce, vec![0])));
        own.process = 1;
        let mut watch = DepartureWatch::new("node-a", &[b.clone(), c.clone(), own.clone()]);
        assert!(watch.departed(&[b.clone(), c.clone()]).is_empty());
        // node-b restarted: a new process under the same name is listed.
        let mut b2 = b.clone();
        b2.process = 9;
        assert!(watch.departed(&[b2.clone(), c.clone()]).is_empty());
        // node-c's registration expired; this node's own earlier process
        // leaving is never a departure.
        assert_eq!(watch.departed(&[b2.clone()]), vec![c.clone()]);
        assert!(watch.departed(&[b2.clone()]).is_empty());
        assert_eq!(watch.departed(&[]), vec![b2]);
        // A node first seen after the start is watched too.
        assert!(watch.departed(std::slice::from_ref(&c)).is_empty());
        assert_eq!(watch.departed(&[]), vec![c]);
    }
}
