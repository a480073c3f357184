//! The engine against the real single-broker cluster: shards own disjoint
//! partitions, state survives a stop and restart through the changelog, and a
//! partition that moves (core-map edit, or a second engine joining the group)
//! takes its state along without losing an update. The restart and the
//! standby take-over run in both changelog layouts (a changelog per store,
//! and one shared by every store); a node refuses to start in one layout
//! while the other's changelog holds the application's state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use codecs::{encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, Money};
use engine::changelog::ChangelogLayout;
use engine::deployment::{prepare_topics, DeploymentError, FlowTopics};
use engine::kafka::{topic_records, Guarantee, KafkaSettings, Ownership};
use engine::partitioner::partition_for;
use engine::runtime::{Engine, ShardPlan};
use engine::sim::tally::{FundingTally, Tally};
use engine::store::StoreValue;
use engine::topics::{changelog_topic, shared_changelog_topic};
use engine::{PartitionId, ShardId};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use tradeflow_tests::{unique_topic, KafkaCluster};

const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(90);

/// One test's topic and application id, never shared with another run.
struct Deployment {
    cluster: KafkaCluster,
    topic: &'static str,
    echo: &'static str,
    application_id: String,
    guarantee: Guarantee,
    /// The group's protocol and its own client properties.
    group_properties: Vec<(String, String)>,
    /// `[state] standby_replicas` (`TestKnobs::standby_replicas`) of the engines it starts.
    standby_replicas: u32,
    /// `[state] changelog_layout` of its topics and engines.
    changelog_layout: ChangelogLayout,
}

impl Deployment {
    fn new(name: &str, guarantee: Guarantee) -> anyhow::Result<Self> {
        Self::with_layout(name, guarantee, ChangelogLayout::PerStore)
    }

    fn with_layout(
        name: &str,
        guarantee: Guarantee,
        changelog_layout: ChangelogLayout,
    ) -> anyhow::Result<Self> {
        tradeflow_tests::init_logging();
        let cluster = KafkaCluster::single()?;
        // Stages name their input topics with 'static strs; a test's topic lives
        // for the whole test process anyway.
        let topic: &'static str = Box::leak(unique_topic(name).into_boxed_str());
        let echo: &'static str = Box::leak(format!("{topic}.echo").into_boxed_str());
        let application_id = unique_topic(&format!("{name}-app"));
        let deployment = Deployment {
            cluster,
            topic,
            echo,
            application_id,
            guarantee,
            // The classic protocol, whose static members that leave are
            // noticed after this long; the tests of the consumer protocol
            // (the default) replace these.
            group_properties: vec![
                ("group.protocol".into(), "classic".into()),
                ("session.timeout.ms".into(), "6000".into()),
            ],
            standby_replicas: 0,
            changelog_layout,
        };
        deployment.prepare_topics(changelog_layout)?;
        Ok(deployment)
    }

    /// `prepare_topics` for the tally stage under `layout`: the input, its
    /// dead letters, the echo topic and the layout's changelog.
    fn prepare_topics(&self, layout: ChangelogLayout) -> Result<(), DeploymentError> {
        prepare_topics(
            &self.settings(),
            &FlowTopics {
                inputs: vec![self.topic],
                outputs: vec![self.echo],
                stores: vec!["tallies"],
                changelog_layout: layout,
            },
            PARTITIONS,
            1,
        )
    }

    /// Records in the per-store changelog and in the shared one (0 for a
    /// topic that does not exist).
    fn changelog_records(&self) -> anyhow::Result<(u64, u64)> {
        let per_store = changelog_topic(&self.application_id, "tallies");
        let shared = shared_changelog_topic(&self.application_id);
        let found = topic_records(&self.settings(), &[per_store.clone(), shared.clone()])?;
        let records = |topic: &str| {
            found
                .iter()
                .find(|(t, _)| t == topic)
                .map_or(0, |(_, records)| *records)
        };
        Ok((records(&per_store), records(&shared)))
    }

    fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap: self.cluster.bootstrap().to_string(),
            application_id: self.application_id.clone(),
            guarantee: self.guarantee,
            client_properties: [("broker.address.family".to_string(), "v4".to_string())]
                .into_iter()
                .chain(self.group_properties.iter().cloned())
                .collect(),
            linger_ms: 1,
            fetch_wait_max_ms: 10,
            namespace: codecs::topics::TopicNamespace::none(),
        }
    }

    fn start(&self, plans: Vec<ShardPlan>) -> anyhow::Result<Engine> {
        self.start_with(plans, 100, true)
    }

    /// Starts `plans` committing at least every `commit_interval_ms` (and
    /// on drain if `commit_on_drain`), with knobs validated like a core
    /// map's.
    fn start_with(
        &self,
        plans: Vec<ShardPlan>,
        commit_interval_ms: u32,
        commit_on_drain: bool,
    ) -> anyhow::Result<Engine> {
        let (topic, echo) = (self.topic, self.echo);
        let knobs = tradeflow_tests::TestKnobs {
            guarantee: self.guarantee,
            commit_interval_ms,
            commit_on_drain,
            standby_replicas: self.standby_replicas,
            changelog_layout: self.changelog_layout,
            ..tradeflow_tests::TestKnobs::default()
        }
        .validated()?;
        Ok(Engine::start(
            self.settings(),
            plans,
            knobs,
            PARTITIONS,
            move |_| FundingTally::echoing(topic, echo),
        )?)
    }

    fn static_plan(&self, shard: u16, core: usize, partitions: &[i32]) -> ShardPlan {
        ShardPlan {
            shard: ShardId(shard),
            core: Some(core),
            ownership: Ownership::Static(partitions.iter().map(|p| PartitionId(*p)).collect()),
            transactional_id: format!("{}-node-{core}", self.application_id),
        }
    }

    fn group_plan(&self, node: &str, shard: u16) -> ShardPlan {
        ShardPlan {
            shard: ShardId(shard),
            core: None,
            ownership: Ownership::Group {
                instance_id: format!("{node}-{shard}"),
            },
            transactional_id: format!("{}-{node}-{shard}", self.application_id),
        }
    }

    /// Produces `count` fundings over `accounts` accounts with librdkafka's
    /// Java-compatible partitioner; returns account → (sum, count).
    fn fund(
        &self,
        first_event: u128,
        count: u64,
        accounts: u64,
    ) -> anyhow::Result<BTreeMap<u64, (i64, u64)>> {
        let producer: ThreadedProducer<DefaultProducerContext> = self
            .cluster
            .client_config()
            .set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        let mut reference = BTreeMap::new();
        for i in 0..count {
            let account = (i * 7919) % accounts;
            let amount = 1 + (i % 97) as i64;
            let event = Event::AccountFunded(AccountFunded {
                header: EventHeader {
                    event_id: EventId(first_event + u128::from(i)),
                    ..EventHeader::default()
                },
                account: AccountId(account),
                amount: Money(amount),
            });
            let payload = encode_to_vec(&event)?;
            let key = account.to_be_bytes();
            producer
                .send(BaseRecord::to(self.topic).key(&key[..]).payload(&payload))
                .map_err(|(e, _)| e)?;
            let entry: &mut (i64, u64) = reference.entry(account).or_default();
            entry.0 += amount;
            entry.1 += 1;
        }
        tradeflow_tests::flush(&producer, Duration::from_secs(30))?;
        Ok(reference)
    }
}

/// Tallies by account across engines, checking each lives in the partition its
/// key hashes to, and that no partition's state is held by two shards at once.
/// A shard's dump holds exactly the partitions it owns at that moment.
fn tallies(engines: &[&Engine]) -> anyhow::Result<BTreeMap<u64, (i64, u64)>> {
    let mut out = BTreeMap::new();
    let mut holder: BTreeMap<PartitionId, ShardId> = BTreeMap::new();
    for (engine_index, engine) in engines.iter().enumerate() {
        for (shard, dump) in engine.dump(Duration::from_secs(10))? {
            for ((partition, _store), entries) in dump {
                if let Some(other) = holder.insert(partition, shard) {
                    anyhow::bail!(
                        "{partition} held by {other} and by {shard} of engine {engine_index} \
                         (a rebalance between two dumps, or two owners)"
                    );
                }
                for (key, value) in entries {
                    let account = u64::from_be_bytes(key.as_slice().try_into()?);
                    anyhow::ensure!(
                        partition_for(&key, PARTITIONS) == partition,
                        "account {account} is in {partition}, its key hashes elsewhere"
                    );
                    let tally = Tally::decode(&value).map_err(anyhow::Error::msg)?;
                    anyhow::ensure!(
                        out.insert(account, (tally.sum, tally.count)).is_none(),
                        "account {account} lives on two shards"
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Waits until the engines' state equals `reference`. Snapshots taken during a
/// rebalance may disagree with each other; only the converged state counts.
fn wait_for(
    engines: &[&Engine],
    reference: &BTreeMap<u64, (i64, u64)>,
) -> anyhow::Result<BTreeMap<u64, (i64, u64)>> {
    let started = Instant::now();
    loop {
        let last = match tallies(engines) {
            Ok(seen) if &seen == reference => return Ok(seen),
            Ok(seen) => {
                let expected: u64 = reference.values().map(|v| v.1).sum();
                let got: u64 = seen.values().map(|v| v.1).sum();
                format!("{got} of {expected} fundings applied")
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() > WAIT {
            anyhow::bail!("after {WAIT:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a rebalance has split the partitions between two engines.
fn wait_for_split(first: &Engine, second: &Engine) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let a = first.stats(Duration::from_secs(10))?[0].2.len();
        let b = second.stats(Duration::from_secs(10))?[0].2.len();
        if a > 0 && b > 0 && a + b == PARTITIONS as usize {
            println!(
                "after {:?}: node-a owns {a} partitions, node-b owns {b}",
                started.elapsed()
            );
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < WAIT, "no rebalance: a={a} b={b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn merge(a: &mut BTreeMap<u64, (i64, u64)>, b: BTreeMap<u64, (i64, u64)>) {
    for (k, (sum, count)) in b {
        let e = a.entry(k).or_default();
        e.0 += sum;
        e.1 += count;
    }
}

#[test]
fn two_shards_own_disjoint_partitions_and_a_restart_restores_equal_state() -> anyhow::Result<()> {
    a_restart_restores_equal_state(Deployment::new("two-shards", Guarantee::ExactlyOnce)?)
}

#[test]
fn in_a_shared_changelog_a_restart_restores_equal_state() -> anyhow::Result<()> {
    a_restart_restores_equal_state(Deployment::with_layout(
        "two-shards-shared",
        Guarantee::ExactlyOnce,
        ChangelogLayout::Shared,
    )?)
}

/// Two shards own disjoint partitions; a restart restores state equal to
/// the state before the stop; then the state is in the layout's changelog
/// only, and preparing the topics in the other layout is refused, naming
/// the key and the topic that holds the state.
fn a_restart_restores_equal_state(deployment: Deployment) -> anyhow::Result<()> {
    let reference = deployment.fund(1, 4_000, 300)?;
    let engine = deployment.start(vec![
        deployment.static_plan(0, 0, &[0, 2]),
        deployment.static_plan(1, 1, &[1, 3]),
    ])?;
    if !engine.wait_running(WAIT) {
        let statuses = engine.statuses();
        anyhow::bail!(
            "shards did not start: {statuses:?}: {:?}",
            engine.shutdown().err()
        );
    }
    wait_for(&[&engine], &reference)?;
    // A point query runs on the owning shard's thread against its state.
    for (&account, &(sum, count)) in reference.iter().take(20) {
        let partition = partition_for(&account.to_be_bytes(), PARTITIONS);
        let answer = engine.query(
            partition,
            move |state: &engine::sim::tally::TallyState| state.tallies.get(&account).copied(),
            Duration::from_secs(5),
        )?;
        let tally = answer
            .flatten()
            .ok_or_else(|| anyhow::anyhow!("no tally for {account}"))?;
        assert_eq!((tally.sum, tally.count), (sum, count));
    }
    let before = engine.dump(Duration::from_secs(10))?;
    let stats = engine.shutdown()?;
    println!("first run: {stats:?}");

    let restarted = deployment.start(vec![
        deployment.static_plan(0, 0, &[0, 2]),
        deployment.static_plan(1, 1, &[1, 3]),
    ])?;
    anyhow::ensure!(
        restarted.wait_running(WAIT),
        "restart did not finish restoring"
    );
    let after = restarted.dump(Duration::from_secs(10))?;
    let restored: Vec<_> = restarted.stats(Duration::from_secs(10))?;
    restarted.shutdown()?;
    assert_eq!(
        before, after,
        "restored stores differ from the stores before the stop"
    );
    let restored_records: u64 = restored.iter().map(|(_, s, _)| s.restored_records).sum();
    println!(
        "restart restored {restored_records} changelog records into {} accounts",
        reference.len()
    );
    assert!(restored_records > 0);
    let (per_store, shared) = deployment.changelog_records()?;
    let (holder, other) = match deployment.changelog_layout {
        ChangelogLayout::PerStore => {
            assert!(per_store > 0 && shared == 0, "{per_store} / {shared}");
            (
                changelog_topic(&deployment.application_id, "tallies"),
                ChangelogLayout::Shared,
            )
        }
        ChangelogLayout::Shared => {
            assert!(shared > 0 && per_store == 0, "{per_store} / {shared}");
            (
                shared_changelog_topic(&deployment.application_id),
                ChangelogLayout::PerStore,
            )
        }
    };
    let refused = deployment
        .prepare_topics(other)
        .expect_err("a layout switch over existing state is refused");
    let message = refused.to_string();
    assert!(
        matches!(refused, DeploymentError::ChangelogLayout { ref topic, .. } if *topic == holder),
        "{message}"
    );
    assert!(message.contains("state.changelog_layout"), "{message}");
    assert!(message.contains(&holder), "{message}");
    // Refused before anything was created: the other layout's topic is
    // still absent (or, for the shared one, still empty).
    assert_eq!(deployment.changelog_records()?, (per_store, shared));
    // The same layout starts as before.
    deployment.prepare_topics(deployment.changelog_layout)?;
    Ok(())
}

#[test]
fn moving_partitions_in_the_core_map_moves_their_state() -> anyhow::Result<()> {
    let deployment = Deployment::new("core-map-move", Guarantee::ExactlyOnce)?;
    let mut reference = deployment.fund(1, 2_000, 200)?;
    let one_core = deployment.start(vec![deployment.static_plan(0, 0, &[0, 1, 2, 3])])?;
    wait_for(&[&one_core], &reference)?;
    one_core.shutdown()?;

    // Edit the core map: partitions 2 and 3 move to a second core.
    let two_cores = deployment.start(vec![
        deployment.static_plan(0, 0, &[0, 1]),
        deployment.static_plan(1, 1, &[2, 3]),
    ])?;
    merge(&mut reference, deployment.fund(10_000, 2_000, 200)?);
    wait_for(&[&two_cores], &reference)?;
    let stats = two_cores.stats(Duration::from_secs(10))?;
    two_cores.shutdown()?;
    let moved = stats
        .iter()
        .find(|(id, _, _)| *id == ShardId(1))
        .ok_or_else(|| anyhow::anyhow!("shard 1 missing"))?;
    println!(
        "shard 1 took partitions {:?} and restored {} records",
        moved.2, moved.1.restored_records
    );
    assert!(
        moved.1.restored_records > 0,
        "the new owner restored from the changelog"
    );
    Ok(())
}

#[test]
fn a_second_engine_joining_the_group_takes_partitions_with_their_state() -> anyhow::Result<()> {
    let deployment = Deployment::new("group-join", Guarantee::AtLeastOnce)?;
    let mut reference = deployment.fund(1, 2_000, 200)?;
    let first = deployment.start(vec![deployment.group_plan("node-a", 0)])?;
    wait_for(&[&first], &reference)?;

    let second = deployment.start(vec![deployment.group_plan("node-b", 0)])?;
    wait_for_split(&first, &second)?;
    merge(&mut reference, deployment.fund(10_000, 2_000, 200)?);
    wait_for(&[&first, &second], &reference)?;
    let second_stats = second.stats(Duration::from_secs(10))?;
    assert!(
        second_stats[0].1.restored_records > 0,
        "node-b restored its partitions from the changelog"
    );
    second.shutdown()?;
    first.shutdown()?;
    Ok(())
}

#[test]
fn exactly_once_outputs_stay_single_across_a_rebalance_mid_stream() -> anyhow::Result<()> {
    outputs_stay_single_across_a_rebalance_mid_stream(Deployment::new(
        "group-eos",
        Guarantee::ExactlyOnce,
    )?)
}

/// The same under KIP-848's consumer protocol: node-a keeps two partitions
/// with uncommitted work when node-b joins, so it rolls its transaction back
/// in memory and reads the kept partitions again from their committed
/// offsets, without restoring them.
#[test]
fn exactly_once_outputs_stay_single_across_an_incremental_rebalance_mid_stream(
) -> anyhow::Result<()> {
    let mut deployment = Deployment::new("group-eos-kip848", Guarantee::ExactlyOnce)?;
    deployment.group_properties = vec![("group.protocol".into(), "consumer".into())];
    outputs_stay_single_across_a_rebalance_mid_stream(deployment)
}

fn outputs_stay_single_across_a_rebalance_mid_stream(deployment: Deployment) -> anyhow::Result<()> {
    // Long commit intervals and no commit on drain keep work uncommitted for
    // seconds, so the revocation is sure to find an open transaction with
    // outputs in it.
    // (The longest interval exactly-once allows, 5 s: beyond the 3 s
    // heartbeat that tells node-a of the rebalance.)
    let slow_commits = (tuning::limits::EXACTLY_ONCE_COMMIT_INTERVAL_MS_MAX, false);
    let mut reference = deployment.fund(1, 2_000, 250)?;
    let first = deployment.start_with(
        vec![deployment.group_plan("node-a", 0)],
        slow_commits.0,
        slow_commits.1,
    )?;
    let started = Instant::now();
    while tallies(&[&first])
        .map(|t| t.values().map(|v| v.1).sum::<u64>())
        .unwrap_or(0)
        == 0
    {
        anyhow::ensure!(started.elapsed() < WAIT, "node-a processed nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = deployment.start_with(
        vec![deployment.group_plan("node-b", 0)],
        slow_commits.0,
        slow_commits.1,
    )?;
    wait_for_split(&first, &second)?;
    merge(&mut reference, deployment.fund(100_000, 2_000, 250)?);
    wait_for(&[&first, &second], &reference)?;
    let total: u64 = reference.values().map(|v| v.1).sum();
    let node_a = first.stats(Duration::from_secs(10))?;
    println!(
        "node-a: {} restores, {} roll-backs, owns {:?}",
        node_a[0].1.restores, node_a[0].1.rollbacks, node_a[0].2
    );
    if deployment
        .group_properties
        .iter()
        .any(|(k, v)| k == "group.protocol" && v == "consumer")
    {
        assert_eq!(
            node_a[0].1.restores, PARTITIONS as u64,
            "node-a restored nothing after its first assignment"
        );
    }
    second.shutdown()?;
    first.shutdown()?;

    let echoed = tradeflow_tests::consume_all(
        &deployment.cluster,
        deployment.echo,
        total as usize + 1,
        Duration::from_secs(15),
    )?;
    let mut ids = std::collections::BTreeSet::new();
    for record in &echoed {
        let event = codecs::decode(&record.value).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            ids.insert(event.event_id()),
            "event {:?} was output twice under exactly-once",
            event.event_id()
        );
    }
    println!(
        "{} inputs, {} committed outputs, all distinct",
        total,
        echoed.len()
    );
    assert_eq!(
        echoed.len() as u64,
        total,
        "every input output exactly once"
    );
    Ok(())
}

/// Under KIP-848's consumer protocol (the broker's range assignor, sticky and
/// incremental) a node joining takes only the partitions it gets: the first
/// node keeps the others, with their state, and restores nothing; when the
/// second node leaves, the first restores only the partitions it gets back.
#[test]
fn under_the_consumer_protocol_a_node_joining_and_leaving_restores_only_what_moves(
) -> anyhow::Result<()> {
    let mut deployment = Deployment::new("group-kip848", Guarantee::ExactlyOnce)?;
    // The session timeout is the broker's (group.consumer.session.timeout.ms).
    deployment.group_properties = vec![("group.protocol".into(), "consumer".into())];
    let mut reference = deployment.fund(1, 2_000, 200)?;
    let first = deployment.start(vec![deployment.group_plan("node-a", 0)])?;
    wait_for(&[&first], &reference)?;
    let restores = |engine: &Engine| -> anyhow::Result<(u64, Vec<PartitionId>)> {
        let stats = engine.stats(Duration::from_secs(10))?;
        Ok((stats[0].1.restores, stats[0].2.clone()))
    };
    let (alone, owned) = restores(&first)?;
    assert_eq!(owned.len(), PARTITIONS as usize);
    assert_eq!(
        alone, PARTITIONS as u64,
        "one restore per partition at the start"
    );

    let second = deployment.start(vec![deployment.group_plan("node-b", 0)])?;
    wait_for_split(&first, &second)?;
    merge(&mut reference, deployment.fund(10_000, 2_000, 200)?);
    wait_for(&[&first, &second], &reference)?;
    let (after_join, kept) = restores(&first)?;
    let (joined, taken) = restores(&second)?;
    println!(
        "node-b joined: node-a kept {kept:?} with {} new restores, node-b restored {joined} for {taken:?}",
        after_join - alone
    );
    assert_eq!(
        after_join, alone,
        "node-a restored nothing for the partitions it kept"
    );
    assert_eq!(
        joined,
        taken.len() as u64,
        "node-b restored only what it took"
    );

    let left = Instant::now();
    second.shutdown()?;
    let started = Instant::now();
    while restores(&first)?.1.len() < PARTITIONS as usize {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "node-b's partitions never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    merge(&mut reference, deployment.fund(20_000, 1_000, 200)?);
    wait_for(&[&first], &reference)?;
    let (after_leave, _) = restores(&first)?;
    println!(
        "node-b left: node-a got {:?} back after {:?} and restored {} partitions",
        taken,
        left.elapsed(),
        after_leave - after_join
    );
    assert_eq!(
        after_leave - after_join,
        taken.len() as u64,
        "node-a restored only the partitions it got back"
    );
    first.shutdown()?;
    Ok(())
}

/// Standby replicas (issue #15 item 5), under the consumer protocol: while
/// node-b owns two partitions node-a keeps warm copies of them (their lag is
/// on node-a's metrics); when node-b leaves, node-a takes them over and
/// restores only the tail after its copies, not the changelogs node-b
/// restored in full when it joined, and the state is the reference.
#[test]
fn with_a_standby_replica_a_node_taking_partitions_over_restores_only_the_tail(
) -> anyhow::Result<()> {
    a_standby_take_over_restores_only_the_tail(Deployment::new("standby", Guarantee::ExactlyOnce)?)
}

#[test]
fn in_a_shared_changelog_a_standby_take_over_restores_only_the_tail() -> anyhow::Result<()> {
    a_standby_take_over_restores_only_the_tail(Deployment::with_layout(
        "standby-shared",
        Guarantee::ExactlyOnce,
        ChangelogLayout::Shared,
    )?)
}

fn a_standby_take_over_restores_only_the_tail(mut deployment: Deployment) -> anyhow::Result<()> {
    deployment.group_properties = vec![("group.protocol".into(), "consumer".into())];
    deployment.standby_replicas = 1;
    let mut reference = deployment.fund(1, 4_000, 400)?;
    let first = deployment.start(vec![deployment.group_plan("node-a", 0)])?;
    wait_for(&[&first], &reference)?;
    let restored = |engine: &Engine| -> anyhow::Result<(u64, Vec<PartitionId>)> {
        let stats = engine.stats(Duration::from_secs(10))?;
        Ok((stats[0].1.restored_records, stats[0].2.clone()))
    };
    let second = deployment.start(vec![deployment.group_plan("node-b", 0)])?;
    wait_for_split(&first, &second)?;
    // node-b restored its partitions in full; more state arrives after.
    let (restored_by_b, mut taken) = restored(&second)?;
    taken.sort();
    merge(&mut reference, deployment.fund(10_000, 4_000, 400)?);
    wait_for(&[&first, &second], &reference)?;
    // node-a's copies of node-b's partitions catch up (lag 0 once read).
    let started = Instant::now();
    let lag = loop {
        let lag = first
            .telemetry()
            .snapshot(Duration::from_secs(10))?
            .standby_lag;
        let copied: Vec<PartitionId> = lag.iter().map(|l| l.partition).collect();
        if copied == taken && lag.iter().all(|l| l.offsets_behind == 0) {
            break lag;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "node-a's copies never caught up with {taken:?}: {lag:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (before, _) = restored(&first)?;
    let left = Instant::now();
    second.shutdown()?;
    let shut_down = left.elapsed();
    while restored(&first)?.1.len() < PARTITIONS as usize {
        anyhow::ensure!(left.elapsed() < WAIT, "node-b's partitions never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = left.elapsed();
    let (after, _) = restored(&first)?;
    println!(
        "node-b left (its shutdown took {shut_down:?}): node-a owned {taken:?} again \
         {took:?} after the shutdown began, restoring {} changelog records from its copies \
         (lag before: {lag:?}); node-b had restored {restored_by_b} records for them when it \
         joined",
        after - before
    );
    assert!(
        after - before < restored_by_b,
        "the take-over restored the tail, not the whole changelogs"
    );
    merge(&mut reference, deployment.fund(20_000, 1_000, 400)?);
    wait_for(&[&first], &reference)?;
    first.shutdown()?;
    Ok(())
}
