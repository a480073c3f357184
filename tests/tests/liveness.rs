//! A node whose process dies is noticed through its liveness beacon, on the
//! real single broker (`engine::liveness`, `engine::kafka::registry`): the
//! node that stays removes the dead node's group member at once and fences
//! its transactional id, instead of waiting out the sessions.
//!
//! node-b runs in a child process (this test binary, run again): it
//! registers in the owners' registry with a beacon and a 60 s session,
//! joins the application's consumer group as the static member `node-b-0`
//! (consumer protocol), opens a transaction under node-b's shard
//! transactional id with a record in it, and waits. node-a registers in
//! this process and watches node-b's beacon. Then node-b is killed with
//! `kill -9`. Asserted:
//! - node-b's member leaves the group before the group's session
//!   (`group.consumer.session.timeout.ms`, 6 s on the test broker) could
//!   have expired it: it was removed, not timed out (a 10x margin: the
//!   removal takes tens of ms);
//! - the record behind node-b's open transaction becomes readable under
//!   `read_committed`, and the open one never does, before 40 s, while
//!   node-b's transaction timeout and registry session are 60 s: only the
//!   fence on its death can have ended it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::kafka::group_admin::describe_consumer_group;
use engine::kafka::registry::{register, Claim, REGISTRY_SESSION_TIMEOUT_MS};
use engine::kafka::{
    ensure_topics, group_member_id, shard_transactional_id, Guarantee, KafkaSettings, TopicSpec,
};
use engine::liveness::{note_group_member, Beacon, PeerIdentity};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use tradeflow_tests::{flush, unique_topic, CommittedReader, KafkaCluster};

/// Longer than the test waits: neither node-b's transaction timeout nor
/// its registration's expiry can pass for what its death caused.
const NODE_B_TIMEOUTS_MS: u64 = 60_000;
const GIVE_UP_AFTER: Duration = Duration::from_secs(40);
/// Set in the child: `<bootstrap> <application id> <topic>`.
const CHILD_ENV: &str = "TRADEFLOW_LIVENESS_TEST_NODE_B";
const TEST_NAME: &str = "a_dead_nodes_member_is_removed_and_its_transaction_fenced_at_once";

fn settings(bootstrap: &str, application_id: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap: bootstrap.to_string(),
        application_id: application_id.to_string(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 0,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    }
}

fn claim(node: &str, liveness: Option<SocketAddr>) -> Claim {
    Claim {
        node: node.into(),
        process: std::process::id(),
        mode: "consumer-group".into(),
        partitions: None,
        shards: Some((Guarantee::ExactlyOnce, vec![0])),
        liveness,
    }
}

/// The consumer protocol's group session of the test broker.
fn group_session() -> Duration {
    let ms = std::env::var("TRADEFLOW_KAFKA_GROUP_SESSION_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(6_000);
    Duration::from_millis(ms)
}

#[test]
fn a_dead_nodes_member_is_removed_and_its_transaction_fenced_at_once() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return run_node_b(&spec);
    }
    let cluster = KafkaCluster::single()?;
    let topic = unique_topic("liveness");
    let application_id = unique_topic("liveness-app");
    let settings = settings(cluster.bootstrap(), &application_id);
    ensure_topics(&settings, &[TopicSpec::stream(topic.as_str(), 2, 1)])?;

    let mut node_b = Command::new(std::env::current_exe()?)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{} {application_id} {topic}", cluster.bootstrap()),
        )
        .stdout(Stdio::piped())
        .spawn()?;
    let node_b_pid = node_b.id();
    let stdout = node_b
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("node-b's stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next_word = |word: &str| -> anyhow::Result<String> {
        for line in lines.by_ref() {
            let line = line?;
            eprintln!("node-b| {line}");
            // The harness may have started the line ("test ... ").
            if let Some((_, rest)) = line.split_once(word) {
                return Ok(rest.trim().to_string());
            }
        }
        anyhow::bail!("node-b ended before saying {word}")
    };
    let member_id = next_word("REGISTERED")?;

    // node-a: registered, so it lists node-b and watches its beacon.
    let (node_a, others) = register(
        &settings,
        &claim("node-a", None),
        1,
        REGISTRY_SESSION_TIMEOUT_MS,
    )?;
    assert!(
        others
            .iter()
            .any(|c| c.node == "node-b" && c.liveness.is_some()),
        "node-a lists node-b with its beacon: {others:?}"
    );
    next_word("WATCHED")?;
    let listed = describe_consumer_group(&settings, &application_id, Duration::from_secs(10))?;
    assert!(
        listed
            .iter()
            .any(|m| m.member_id == member_id && m.instance_id.as_deref() == Some("node-b-0")),
        "node-b-0 is a member of the group before the kill: {listed:?}"
    );

    // Assigned and connected before the clock starts: the time is the
    // fence's, not the reader's start-up.
    let reader = CommittedReader::new(&cluster, &topic, 0)?;
    assert!(reader
        .keys(1, Instant::now() + Duration::from_secs(2))
        .is_empty());

    // kill -9: no goodbye, no leaving the group.
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", &node_b_pid.to_string()])
        .status()?;
    let _ = node_b.wait();
    let mut removed_after = None;
    while killed.elapsed() < GIVE_UP_AFTER {
        let members = describe_consumer_group(&settings, &application_id, Duration::from_secs(5))?;
        if !members.iter().any(|m| m.member_id == member_id) {
            removed_after = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let removed_after =
        removed_after.ok_or_else(|| anyhow::anyhow!("node-b-0 stayed in the group"))?;
    println!("node-b-0 left the group {removed_after:?} after kill -9");
    assert!(
        removed_after < group_session(),
        "node-b-0 left the group {removed_after:?} after the kill, not before the group's \
         {:?} session: it timed out instead of being removed",
        group_session()
    );

    let read = reader.keys(1, killed + GIVE_UP_AFTER);
    let waited = killed.elapsed();
    drop(node_a);
    assert_eq!(
        read,
        ["after"],
        "{waited:?} after the kill the record behind node-b's open transaction was still \
         unreadable (or the aborted record was read)"
    );
    println!("node-b's open transaction aborted {waited:?} after kill -9");
    Ok(())
}

/// node-b, in the child process: registers with a beacon, joins the group,
/// leaves a transaction open, says when node-a watches it, and waits to be
/// killed.
fn run_node_b(spec: &str) -> anyhow::Result<()> {
    let mut fields = spec.split(' ');
    let (Some(bootstrap), Some(application_id), Some(topic)) =
        (fields.next(), fields.next(), fields.next())
    else {
        anyhow::bail!("{CHILD_ENV}={spec:?}");
    };
    let settings = settings(bootstrap, application_id);
    let client = || {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4");
        config
    };
    let member: BaseConsumer = client()
        .set("group.id", application_id)
        .set("group.protocol", "consumer")
        .set("group.instance.id", "node-b-0")
        .set("enable.auto.commit", "false")
        .create()?;
    let member_id =
        group_member_id(&member).ok_or_else(|| anyhow::anyhow!("no member id drawn"))?;
    note_group_member("node-b-0", &member_id);
    member.subscribe(&[topic])?;

    let beacon = Beacon::start(
        "127.0.0.1:0".parse()?,
        PeerIdentity {
            application: application_id.to_string(),
            node: "node-b".into(),
            process: std::process::id(),
        },
        vec!["node-b-0".into()],
    )?;
    let (_registration, _) = register(
        &settings,
        &claim("node-b", Some(beacon.addr())),
        1,
        NODE_B_TIMEOUTS_MS,
    )?;

    // node-b's shard on core 0, with its transaction open; a plain record
    // behind it.
    let producer: ThreadedProducer<DefaultProducerContext> = client()
        .set(
            "transactional.id",
            shard_transactional_id(application_id, "node-b-0"),
        )
        .set("transaction.timeout.ms", NODE_B_TIMEOUTS_MS.to_string())
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key("open")
                .payload("never committed"),
        )
        .map_err(|(e, _)| e)?;
    flush(&producer, Duration::from_secs(10))?;
    let plain: ThreadedProducer<DefaultProducerContext> = client().create()?;
    plain
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key("after")
                .payload("plain"),
        )
        .map_err(|(e, _)| e)?;
    flush(&plain, Duration::from_secs(10))?;

    // Member of the group (assigned a partition) before node-a may kill it.
    let joined = Instant::now();
    while member.assignment()?.count() == 0 {
        anyhow::ensure!(
            joined.elapsed() < GIVE_UP_AFTER,
            "node-b-0 was never assigned"
        );
        let _ = member.poll(Duration::from_millis(50));
    }
    println!("REGISTERED {member_id}");
    while beacon.watchers() == 0 {
        anyhow::ensure!(
            joined.elapsed() < GIVE_UP_AFTER,
            "node-a never watched node-b"
        );
        let _ = member.poll(Duration::from_millis(20));
    }
    println!("WATCHED");
    loop {
        let _ = member.poll(Duration::from_millis(100));
    }
}

/// The removal on a secured cluster (`scripts/kafka up --secure`: SASL_SSL,
/// SCRAM-SHA-512, an authorizer): `group_admin` connects as the client
/// properties ask (TLS with their CA file, the SCRAM login), describes the
/// group and removes a live member by instance and member id; the member
/// named with a wrong member id is refused as replaced, and a wrong
/// password is a login error, not a removal.
#[test]
fn a_member_is_removed_over_sasl_ssl() -> anyhow::Result<()> {
    use engine::kafka::group_admin::{remove_group_members, GroupAdminError, GroupMember, Removal};
    tradeflow_tests::init_logging();
    let cluster = tradeflow_tests::SecureCluster::ensure()?;
    let properties = cluster.admin_properties()?;
    let application_id = unique_topic("liveness-secure-app");
    let topic = unique_topic("liveness-secure");
    let mut settings = settings(cluster.bootstrap(), &application_id);
    settings.client_properties = properties.clone();
    ensure_topics(&settings, &[TopicSpec::stream(topic.as_str(), 2, 1)])?;

    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap());
    for (key, value) in &properties {
        config.set(key, value);
    }
    let member: BaseConsumer = config
        .set("group.id", &application_id)
        .set("group.protocol", "consumer")
        .set("group.instance.id", "node-s-0")
        .set("enable.auto.commit", "false")
        .create()?;
    let member_id = group_member_id(&member).ok_or_else(|| anyhow::anyhow!("no member id"))?;
    member.subscribe(&[topic.as_str()])?;
    let joined = Instant::now();
    while member.assignment()?.count() == 0 {
        anyhow::ensure!(
            joined.elapsed() < GIVE_UP_AFTER,
            "node-s-0 was never assigned"
        );
        let _ = member.poll(Duration::from_millis(50));
    }

    let listed = describe_consumer_group(&settings, &application_id, Duration::from_secs(10))?;
    assert!(
        listed.iter().any(|m| m.member_id == member_id),
        "the member is described over SASL_SSL: {listed:?}"
    );
    let wrong = GroupMember {
        instance_id: "node-s-0".into(),
        member_id: "not-its-member-id".into(),
    };
    let right = GroupMember {
        instance_id: "node-s-0".into(),
        member_id: member_id.clone(),
    };
    let outcomes = remove_group_members(
        &settings,
        &application_id,
        std::slice::from_ref(&wrong),
        "tradeflow test: the wrong member id",
        Duration::from_secs(10),
    )?;
    assert_eq!(outcomes, vec![(wrong, Removal::Replaced)]);
    let outcomes = remove_group_members(
        &settings,
        &application_id,
        std::slice::from_ref(&right),
        "tradeflow test: removed over SASL_SSL",
        Duration::from_secs(10),
    )?;
    assert_eq!(outcomes, vec![(right.clone(), Removal::Removed)]);

    let mut refused = settings.clone();
    for (key, value) in &mut refused.client_properties {
        if key == "sasl.password" {
            *value = "not-the-password".into();
        }
    }
    match remove_group_members(
        &refused,
        &application_id,
        &[right],
        "tradeflow test: a wrong password",
        Duration::from_secs(3),
    ) {
        Err(GroupAdminError::Login { reason, .. }) => {
            assert!(reason.contains("Authentication"), "{reason}")
        }
        other => panic!("a wrong password must not remove anything: {other:?}"),
    }
    Ok(())
}
