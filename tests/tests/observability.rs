//! Observability against the real single-broker cluster: an engine on fresh
//! topics serves `/metrics`, `/health/*` and `/reports/hdr` through the same
//! server `tradeflow run` uses; the counters move as records flow, consumer
//! lag drains to zero, every metric the Grafana dashboard queries is in the
//! scrape, and readiness is false while a non-empty changelog is being
//! restored and true after. A restore does not end while a transaction that
//! wrote to its changelog is undecided.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codecs::{
    encode_to_vec, AccountFunded, AccountId, Event, EventHeader, EventId, EventRef, Money,
    TimestampNs,
};
use engine::kafka::{ensure_topics, Guarantee, KafkaSettings, Ownership, TopicSpec};
use engine::runtime::{Engine, NodeKnobs, ShardPlan};
use engine::sim::tally::FundingTally;
use engine::stage::{Input, Outbox, Rejection, Stage};
use engine::store::{
    ChangelogSink, ChangelogStore, PartitionStores, Store, StoreCodecError, StoreEntries,
};
use engine::telemetry::RECORD_TIMING_SAMPLE_EVERY;
use engine::topics::{changelog_topic, dead_letter_topic};
use engine::{PartitionId, ShardId};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use services::observe::{self, Observability, ObserveServer};
use tradeflow_tests::TestKnobs;
use tradeflow_tests::{unique_topic, KafkaCluster};

/// How long a test waits for something to happen before it gives up (a bound
/// on a wait, never an assertion on how fast it was).
const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 4;

fn settings(cluster: &KafkaCluster, application_id: &str) -> KafkaSettings {
    KafkaSettings {
        bootstrap: cluster.bootstrap().to_string(),
        application_id: application_id.to_string(),
        guarantee: Guarantee::ExactlyOnce,
        client_properties: vec![("broker.address.family".into(), "v4".into())],
        linger_ms: 1,
        fetch_wait_max_ms: 10,
        namespace: codecs::topics::TopicNamespace::none(),
    }
}

fn knobs() -> NodeKnobs {
    TestKnobs::default()
        .validated()
        .expect("the tests' knobs pass the core map's rules")
}

fn plan(application_id: &str, shard: u16, partitions: &[i32]) -> ShardPlan {
    ShardPlan {
        shard: ShardId(shard),
        core: None,
        ownership: Ownership::Static(partitions.iter().map(|p| PartitionId(*p)).collect()),
        transactional_id: format!("{application_id}-node-{shard}"),
    }
}

/// One HTTP/1.1 GET against the observability server: status and body.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: tradeflow\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(
            rest.get(..size)
                .ok_or_else(|| anyhow::anyhow!("short chunk"))?,
        );
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

/// One scraped sample: metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the Prometheus text format (the subset the encoder writes).
fn parse(text: &str) -> anyhow::Result<Vec<(Series, f64)>> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?;
        let value: f64 = value.parse()?;
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}');
                let mut map = BTreeMap::new();
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .ok_or_else(|| anyhow::anyhow!("bad label {pair:?} in {line:?}"))?;
                    map.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), map)
            }
        };
        out.push(((name, labels), value));
    }
    Ok(out)
}

struct Scrape(Vec<(Series, f64)>);

impl Scrape {
    fn take(addr: SocketAddr) -> anyhow::Result<Scrape> {
        let (status, body) = get(addr, "/metrics")?;
        anyhow::ensure!(status == 200, "/metrics answered {status}: {body}");
        Ok(Scrape(parse(&body)?))
    }

    /// Sum of every sample of `name` whose labels include `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a (Series, f64)> + 'a {
        self.0.iter().filter(move |((n, _), _)| n == name)
    }

    fn names(&self) -> BTreeSet<&str> {
        self.0.iter().map(|((n, _), _)| n.as_str()).collect()
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every `tradeflow_*` metric name a dashboard's queries use.
fn dashboard_metrics(file: &str) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_root().join(file))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    anyhow::ensure!(!exprs.is_empty(), "{file} has no queries");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("tradeflow_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    Ok(names)
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn producer(cluster: &KafkaCluster) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(cluster
        .client_config()
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?)
}

fn start_observing(engine: &Engine) -> anyhow::Result<ObserveServer> {
    let observability = Observability::new(Some(engine.telemetry()))?;
    Ok(observe::spawn("127.0.0.1:0".parse()?, observability)?)
}

fn wait_until<T>(
    what: &str,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(found) = probe()? {
            return Ok(found);
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "gave up after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_follow_the_records_lag_drains_and_the_dashboard_finds_every_metric() -> anyhow::Result<()>
{
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic: &'static str = Box::leak(unique_topic("observe").into_boxed_str());
    let echo: &'static str = Box::leak(format!("{topic}.echo").into_boxed_str());
    let application_id = unique_topic("observe-app");
    let settings = settings(&cluster, &application_id);
    ensure_topics(
        &settings,
        &[
            TopicSpec::stream(topic, PARTITIONS, 1),
            TopicSpec::stream(echo, PARTITIONS, 1),
            TopicSpec::stream(dead_letter_topic(topic), PARTITIONS, 1),
            TopicSpec::changelog(changelog_topic(&application_id, "tallies"), PARTITIONS, 1),
        ],
    )?;
    let engine = Engine::start(
        settings,
        vec![
            plan(&application_id, 0, &[0, 2]),
            plan(&application_id, 1, &[1, 3]),
        ],
        knobs(),
        PARTITIONS,
        move |_| FundingTally::echoing(topic, echo),
    )?;
    let server = start_observing(&engine)?;
    let addr = server.addr();

    let (status, body) = get(addr, "/health/live")?;
    assert_eq!(status, 200, "{body}");
    wait_until("/health/ready", || {
        let (status, _) = get(addr, "/health/ready")?;
        Ok((status == 200).then_some(()))
    })?;
    let before = Scrape::take(addr)?;
    assert_eq!(before.sum("tradeflow_records_in_total", &[]), 0.0);
    assert_eq!(before.sum("tradeflow_shard_ready", &[]), 2.0);

    // Fundings stamped with their creation time, over 300 accounts, and
    // three records with a wrong magic byte.
    const FUNDINGS: u64 = 2_000;
    const POISON: u64 = 3;
    let producer = producer(&cluster)?;
    let mut accounts = BTreeSet::new();
    for i in 0..FUNDINGS {
        let account = (i * 7919) % 300;
        accounts.insert(account);
        let event = Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: EventId(u128::from(i) + 1),
                created_at_ns: TimestampNs(now_ns()),
                ..EventHeader::default()
            },
            account: AccountId(account),
            amount: Money(1 + (i % 50) as i64),
        });
        let payload = encode_to_vec(&event)?;
        let key = account.to_be_bytes();
        producer
            .send(BaseRecord::to(topic).key(&key[..]).payload(&payload))
            .map_err(|(e, _)| e)?;
    }
    for i in 0..POISON {
        let key = i.to_be_bytes();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key[..])
                    .payload(&[7u8, 0, 0, 0, 1][..]),
            )
            .map_err(|(e, _)| e)?;
    }
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;

    // Counters reach the totals, and every partition's lag is reported and 0.
    let total = (FUNDINGS + POISON) as f64;
    let drained = wait_until("every record counted and lag at zero", || {
        let scrape = Scrape::take(addr)?;
        let lags: Vec<f64> = scrape
            .series("tradeflow_consumer_lag_records")
            .map(|(_, v)| *v)
            .collect();
        let done = scrape.sum("tradeflow_records_in_total", &[]) == total
            && lags.len() == PARTITIONS as usize
            && lags.iter().all(|lag| *lag == 0.0);
        Ok(done.then_some(scrape))
    })?;
    assert_eq!(
        drained.sum("tradeflow_records_out_total", &[]),
        FUNDINGS as f64,
        "each funding echoed once"
    );
    assert!(drained.sum("tradeflow_commits_total", &[]) > 0.0);
    assert_eq!(
        drained.sum(
            "tradeflow_dead_letters_total",
            &[("reason", "wrong_magic"), ("class", "user-data")]
        ),
        POISON as f64
    );
    assert_eq!(
        drained.sum("tradeflow_dead_letters_total", &[]),
        POISON as f64
    );
    // One record in RECORD_TIMING_SAMPLE_EVERY is timed, counted per shard
    // from its start; poison records are processed records too.
    let sampled: u64 = drained
        .series("tradeflow_records_in_total")
        .map(|(_, n)| *n as u64 / RECORD_TIMING_SAMPLE_EVERY)
        .sum();
    assert!(sampled > 0);
    assert_eq!(
        drained.sum(
            "tradeflow_process_duration_seconds_count",
            &[("input", topic)]
        ),
        sampled as f64,
        "every sampled record timed"
    );
    assert_eq!(
        drained.sum(
            "tradeflow_end_to_end_latency_seconds_count",
            &[("input", topic)]
        ),
        FUNDINGS as f64,
        "every decoded event's end-to-end latency"
    );
    assert_eq!(
        drained.sum(
            "tradeflow_process_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        sampled as f64
    );
    assert_eq!(
        drained.sum("tradeflow_state_entries", &[("store", "tallies")]),
        accounts.len() as f64
    );
    assert!(drained.sum("tradeflow_state_bytes", &[("store", "tallies")]) > 0.0);
    assert!(
        drained.sum(
            "tradeflow_api_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ) >= 1.0,
        "earlier scrapes were counted"
    );
    for ((_, labels), _) in drained.series("tradeflow_consumer_lag_records") {
        assert_eq!(labels.get("topic").map(String::as_str), Some(topic));
    }

    // Every metric the dashboard queries is in the scrape.
    let names = drained.names();
    let wanted = dashboard_metrics("deploy/grafana/tradeflow.json")?;
    let missing: Vec<_> = wanted
        .iter()
        .filter(|name| !names.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the scrape lacks: {missing:?}"
    );
    println!("dashboard queries {} metrics, all scraped", wanted.len());

    let (status, table) = get(addr, "/reports/hdr")?;
    assert_eq!(status, 200, "{table}");
    assert!(table.contains(topic), "{table}");
    let (status, hgrm) = get(addr, &format!("/reports/hdr/end_to_end--{topic}.hgrm"))?;
    assert_eq!(status, 200, "{hgrm}");
    assert!(
        hgrm.contains(&format!("Total count    = {:>12}", FUNDINGS)),
        "{hgrm}"
    );

    let telemetry = engine.telemetry();
    server.stop()?;
    engine.shutdown()?;
    // The shards' final reports reached the hub before they stopped.
    let last = telemetry.snapshot(Duration::from_secs(10))?;
    let records_in: u64 = last.shards.iter().map(|s| s.counters.records_in).sum();
    assert_eq!(records_in, FUNDINGS + POISON);
    println!("{}", observe::report::table(&last));
    Ok(())
}

/// Closed while the restore test wants its shard held inside a restore.
static RESTORE_GATE_OPEN: AtomicBool = AtomicBool::new(false);

/// A store of one stage that processes nothing; with `GATED` its restore
/// waits at the gate, so a test can look at the process while the restore
/// is certainly in progress (the store is then named "gated", else "plain").
struct TestStore<const GATED: bool>(Store<u64, u64>);

impl<const GATED: bool> ChangelogStore for TestStore<GATED> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn dirty_len(&self) -> usize {
        self.0.dirty_len()
    }
    fn write_dirty(&mut self, sink: &mut ChangelogSink<'_>) {
        self.0.write_dirty(sink)
    }
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreCodecError> {
        while GATED && !RESTORE_GATE_OPEN.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.0.apply(key, value)
    }
    fn len(&self) -> usize {
        ChangelogStore::len(&self.0)
    }
    fn dump(&self) -> StoreEntries {
        self.0.dump()
    }
    fn keep_undo(&mut self, on: bool) {
        self.0.keep_undo(on)
    }
    fn forget_undo(&mut self) {
        self.0.forget_undo()
    }
    fn undo(&mut self) -> usize {
        self.0.undo()
    }
}

struct TestState<const GATED: bool> {
    store: TestStore<GATED>,
}

impl<const GATED: bool> Default for TestState<GATED> {
    fn default() -> Self {
        TestState {
            store: TestStore(Store::new(if GATED { "gated" } else { "plain" })),
        }
    }
}

impl<const GATED: bool> PartitionStores for TestState<GATED> {
    fn for_each_store(&mut self, f: &mut dyn FnMut(&mut dyn ChangelogStore)) {
        f(&mut self.store);
    }
}

/// A stage that only owns its test store; its input stays empty.
struct TestStage<const GATED: bool> {
    topics: [&'static str; 1],
}

impl<const GATED: bool> Stage for TestStage<GATED> {
    type State = TestState<GATED>;

    fn name(&self) -> &'static str {
        if GATED {
            "gated"
        } else {
            "plain"
        }
    }

    fn input_topics(&self) -> &[&'static str] {
        &self.topics
    }

    fn process(
        &mut self,
        _input: &Input<'_>,
        _event: EventRef<'_>,
        _state: &mut TestState<GATED>,
        _out: &mut Outbox,
    ) -> Result<(), Rejection> {
        Ok(())
    }
}

#[test]
fn readiness_is_false_while_a_changelog_restores_and_true_after() -> anyhow::Result<()> {
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic: &'static str = Box::leak(unique_topic("observe-restore").into_boxed_str());
    let application_id = unique_topic("observe-restore-app");
    let changelog = changelog_topic(&application_id, "gated");
    let settings = settings(&cluster, &application_id);
    ensure_topics(
        &settings,
        &[
            TopicSpec::stream(topic, 1, 1),
            TopicSpec::stream(dead_letter_topic(topic), 1, 1),
            TopicSpec::changelog(changelog.clone(), 1, 1),
        ],
    )?;
    const ENTRIES: u64 = 200;
    let producer = producer(&cluster)?;
    for key in 0..ENTRIES {
        let (k, v) = (key.to_be_bytes(), (key * 3).to_le_bytes());
        producer
            .send(
                BaseRecord::to(&changelog)
                    .partition(0)
                    .key(&k[..])
                    .payload(&v[..]),
            )
            .map_err(|(e, _)| e)?;
    }
    tradeflow_tests::flush(&producer, Duration::from_secs(30))?;

    RESTORE_GATE_OPEN.store(false, Ordering::Release);
    let engine = Engine::start(
        settings,
        vec![plan(&application_id, 0, &[0])],
        knobs(),
        1,
        move |_| TestStage::<true> { topics: [topic] },
    )?;
    let server = start_observing(&engine)?;
    let addr = server.addr();

    // The shard is inside the restore once it has counted the first record,
    // which then waits at the gate. "restoring" alone is not enough: the
    // shard reports it before it reads the changelog's watermarks and
    // fetches, which on a loaded machine takes longer than one poll here.
    let (status, body) = wait_until("the restore's first record", || {
        let (status, body) = get(addr, "/health/ready")?;
        let json: serde_json::Value = serde_json::from_str(&body)?;
        let restoring = json["shards"][0]["reason"] == "restoring";
        let counted = Scrape::take(addr)?.sum("tradeflow_restored_records_total", &[]) >= 1.0;
        Ok((restoring && counted).then_some((status, json)))
    })?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["shards"][0]["restoring_partitions"], 1, "{body}");
    assert_eq!(get(addr, "/health/live")?.0, 200);
    let during = Scrape::take(addr)?;
    assert_eq!(during.sum("tradeflow_shard_ready", &[]), 0.0);
    assert_eq!(
        during.sum("tradeflow_restore_partitions_in_progress", &[]),
        1.0
    );
    assert!(during.sum("tradeflow_restored_records_total", &[]) >= 1.0);

    RESTORE_GATE_OPEN.store(true, Ordering::Release);
    wait_until("/health/ready after the restore", || {
        let (status, _) = get(addr, "/health/ready")?;
        Ok((status == 200).then_some(()))
    })?;
    let after = wait_until("the restore's report", || {
        let scrape = Scrape::take(addr)?;
        Ok((scrape.sum("tradeflow_restores_total", &[]) == 1.0).then_some(scrape))
    })?;
    assert_eq!(after.sum("tradeflow_shard_ready", &[]), 1.0);
    assert_eq!(
        after.sum("tradeflow_restore_partitions_in_progress", &[]),
        0.0
    );
    assert_eq!(
        after.sum("tradeflow_restored_records_total", &[]),
        ENTRIES as f64
    );
    assert_eq!(
        after.sum("tradeflow_state_entries", &[("store", "gated")]),
        ENTRIES as f64
    );
    assert_eq!(
        after.sum("tradeflow_restore_duration_seconds_count", &[]),
        1.0
    );
    server.stop()?;
    engine.shutdown()?;
    Ok(())
}

/// The previous owner of a partition may have just committed its last
/// transaction while the commit markers are not yet written to the
/// changelog: a `read_committed` reader then sees the end before that
/// transaction's state changes, although the group's committed offsets
/// already include its inputs. A restore that stopped there lost the
/// transaction's effects (the rebalance fault test's lost debits). Here the
/// transaction is held open on purpose: the restore must not finish until it
/// is decided, and must then include it.
#[test]
fn a_restore_waits_for_a_transaction_still_open_on_its_changelog() -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, Producer};
    tradeflow_tests::init_logging();
    let cluster = KafkaCluster::single()?;
    let topic: &'static str = Box::leak(unique_topic("observe-undecided").into_boxed_str());
    let application_id = unique_topic("observe-undecided-app");
    let changelog = changelog_topic(&application_id, "plain");
    let settings = settings(&cluster, &application_id);
    ensure_topics(
        &settings,
        &[
            TopicSpec::stream(topic, 1, 1),
            TopicSpec::stream(dead_letter_topic(topic), 1, 1),
            TopicSpec::changelog(changelog.clone(), 1, 1),
        ],
    )?;
    let writer: BaseProducer = cluster
        .client_config()
        .set(
            "transactional.id",
            format!("{application_id}-previous-owner"),
        )
        .create()?;
    let timeout = Duration::from_secs(30);
    writer.init_transactions(timeout)?;
    let send = |from: u64, to: u64| -> anyhow::Result<()> {
        for key in from..to {
            let (k, v) = (key.to_be_bytes(), (key * 3).to_le_bytes());
            writer
                .send(
                    BaseRecord::to(&changelog)
                        .partition(0)
                        .key(&k[..])
                        .payload(&v[..]),
                )
                .map_err(|(e, _)| e)?;
        }
        Ok(())
    };
    const DECIDED: u64 = 100;
    const UNDECIDED: u64 = 50;
    writer.begin_transaction()?;
    send(0, DECIDED)?;
    writer.commit_transaction(timeout)?;
    writer.begin_transaction()?;
    send(DECIDED, DECIDED + UNDECIDED)?;
    // Every record of the open transaction is on the broker (the high
    // watermark is past them) before the engine starts.
    while writer.in_flight_count() > 0 {
        writer.poll(Duration::from_millis(1));
    }

    let engine = Engine::start(
        settings,
        vec![plan(&application_id, 0, &[0])],
        knobs(),
        1,
        move |_| TestStage::<false> { topics: [topic] },
    )?;
    let server = start_observing(&engine)?;
    let addr = server.addr();
    // The decided records are read; the restore then waits for the open
    // transaction, however long it stays open.
    wait_until("the decided records to be restored", || {
        let scrape = Scrape::take(addr)?;
        Ok((scrape.sum("tradeflow_restored_records_total", &[]) >= DECIDED as f64).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = get(addr, "/health/ready")?;
    assert_eq!(
        status, 503,
        "the restore ended with a transaction undecided: {body}"
    );
    let during = Scrape::take(addr)?;
    assert_eq!(
        during.sum("tradeflow_restore_partitions_in_progress", &[]),
        1.0
    );
    assert_eq!(
        during.sum("tradeflow_restored_records_total", &[]),
        DECIDED as f64
    );

    writer.commit_transaction(timeout)?;
    wait_until("/health/ready after the transaction's commit", || {
        let (status, _) = get(addr, "/health/ready")?;
        Ok((status == 200).then_some(()))
    })?;
    let after = wait_until("the restore's report", || {
        let scrape = Scrape::take(addr)?;
        Ok((scrape.sum("tradeflow_restores_total", &[]) == 1.0).then_some(scrape))
    })?;
    assert_eq!(
        after.sum("tradeflow_state_entries", &[("store", "plain")]),
        (DECIDED + UNDECIDED) as f64,
        "the restore must include the transaction it waited for"
    );
    server.stop()?;
    engine.shutdown()?;
    Ok(())
}
