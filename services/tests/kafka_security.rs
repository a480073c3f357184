//! The trade flow on a secured Kafka (`scripts/kafka up --secure`): SASL_SSL
//! only, SCRAM-SHA-512 users, `StandardAuthorizer` with
//! `allow.everyone.if.no.acl.found=false`. Each service runs in its own
//! process as its own principal, with exactly the ACLs `tradeflow acls`
//! generates from the deployment's topic plan, and the flow passes the audit.
//! Then the refusals: a wrong password, a principal writing a topic it does
//! not own, a client without TLS.
//!
//! Real broker, no mocks. Each test uses its own topic namespace, so reruns
//! on a cluster that is still up never see each other's records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use engine::kafka::{Guarantee, KafkaSettings};
use engine::port::{OutRecord, PortError};
use engine::PartitionId;
use loadgen::drive::{drive, schedule, DriveConfig};
use loadgen::synth::{generate, SynthConfig};
use services::deployment::Topology;
use services::flow::{Service, ServiceSet};
use tradeflow_tests::SecureCluster;

const WAIT: Duration = Duration::from_secs(90);
/// Partitions per topic: few, so the secured run stays short.
const PARTITIONS: i32 = 2;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = tradeflow_tests::wait_or_kill(&mut self.0, WAIT);
    }
}

fn unique_namespace(prefix: &str) -> anyhow::Result<TopicNamespace> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    Ok(TopicNamespace::new(&format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    ))?)
}

fn work_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tradeflow-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A one-shard core map over every partition, with `security` appended.
fn core_map(dir: &Path, name: &str, security: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"{name}\"\n[ownership]\nmode = \"core-map\"\npartitions = {PARTITIONS}\n\
             [[shard]]\ncore = 0\npartitions = [\"0-{}\"]\n[commit]\ninterval_ms = 100\n\
             on_drain = true\n[retry]\nattempts_max = 2\n{security}",
            PARTITIONS - 1
        ),
    )?;
    Ok(path)
}

/// One HTTP/1.1 GET, the whole answer as text.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn tradeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tradeflow"))
}

/// `tradeflow acls` for one workload of the per-service topology, as
/// kafka-acls.sh lines.
fn generated_acls(
    config: &Path,
    namespace: &TopicNamespace,
    workload: &str,
) -> anyhow::Result<String> {
    let output = tradeflow()
        .args(["acls", "--config"])
        .arg(config)
        .args([
            "--namespace",
            namespace.name(),
            "--topology",
            "per-service",
            "--workload",
            workload,
            "--emit",
            "kafka-acls",
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "tradeflow acls failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Every topic of the per-service deployment, made by the admin: the
/// services' principals get no Create (least privilege).
fn create_topics(cluster: &SecureCluster, namespace: &TopicNamespace) -> anyhow::Result<()> {
    let plan = services::deployment::plan(
        namespace,
        Topology::PerService,
        PARTITIONS,
        1,
        Default::default(),
    );
    engine::kafka::ensure_topics(
        &KafkaSettings {
            bootstrap: cluster.bootstrap().to_string(),
            application_id: "admin".into(),
            guarantee: Guarantee::ExactlyOnce,
            client_properties: cluster.admin_properties()?,
            linger_ms: 0,
            fetch_wait_max_ms: 5,
            namespace: namespace.clone(),
        },
        &plan.topics,
    )?;
    Ok(())
}

fn user_of(service: Service) -> String {
    format!("tradeflow-{}", service.name())
}

#[test]
fn the_flow_runs_over_sasl_ssl_as_three_least_privileged_principals_and_passes_the_audit(
) -> anyhow::Result<()> {
    let cluster = SecureCluster::ensure()?;
    let namespace = unique_namespace("secure-flow")?;
    let dir = work_dir("secure-flow")?;
    create_topics(&cluster, &namespace)?;

    let rest = "127.0.0.1:18481";
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for service in [Service::Payment, Service::Inventory, Service::Order] {
        let user = user_of(service);
        let config = core_map(&dir, service.name(), &cluster.security_section(&user))?;
        let acls = generated_acls(&config, &namespace, service.name())?;
        // The principal comes from the core map's username.
        assert!(acls.contains(&format!("'User:{user}'")), "{acls}");
        assert!(!acls.contains("--operation All"), "{acls}");
        cluster.apply_acls(&acls)?;

        let log_path = dir.join(format!("{}.log", service.name()));
        let log = std::fs::File::create(&log_path)?;
        logs.push(log_path);
        let mut command = tradeflow();
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--bootstrap", cluster.bootstrap(), "--replication", "1"])
            .args([
                "--services",
                service.name(),
                "--namespace",
                namespace.name(),
            ])
            .args(["--report-dir"])
            .arg(dir.join(format!("{}-report", service.name())))
            // Verbose, so the check below sees every line that could leak.
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if service == Service::Order {
            command.args(["--rest-addr", rest, "--grpc-addr", "127.0.0.1:0"]);
        } else {
            command.args(["--no-api", "--rest-addr", "127.0.0.1:0"]);
        }
        nodes.push(Node(command.spawn()?));
    }
    let started = Instant::now();
    while std::net::TcpStream::connect(rest).is_err() {
        for node in &mut nodes {
            if let Some(status) = node.0.try_wait()? {
                let mut text = String::new();
                for log in &logs {
                    text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
                }
                anyhow::bail!("a service process exited ({status}) before the flow ran:\n{text}");
            }
        }
        anyhow::ensure!(started.elapsed() < WAIT, "the order process never came up");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The load generator stands in for the API's clients; it writes the
    // commands and reads the outcomes as the admin.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let scenario = generate(
        &SynthConfig {
            seed: run_id,
            run_id: Some(run_id),
            accounts: 30,
            instruments: 6,
            orders: 300,
            rate_per_s: 200,
            fail_funds_share: 0.05,
            fail_stock_share: 0.05,
            ..SynthConfig::default()
        },
        codecs::ids::order_id_for,
    )?;
    let report = drive(
        &DriveConfig {
            bootstrap: cluster.bootstrap().to_string(),
            client_properties: cluster.admin_properties()?,
            drain_timeout: WAIT,
            namespace: namespace.clone(),
        },
        schedule(scenario)?,
    )?;
    println!(
        "secured flow: {} orders, {} filled, {} rejected for funds, {} refunded, {} missing, {} duplicate outcomes",
        report.orders_sent,
        report.filled,
        report.rejected_funds,
        report.refunded,
        report.missing,
        report.duplicate_outcomes
    );
    assert_eq!(report.missing, 0, "orders without an outcome");
    assert_eq!(report.duplicate_outcomes, 0);
    assert!(report.filled > 0 && report.rejected_funds > 0 && report.refunded > 0);

    // The audit, over SASL_SSL too, with the admin's core map.
    let admin_map = core_map(&dir, "admin", &cluster.security_section("admin"))?;
    let audit = tradeflow()
        .args(["audit", "--bootstrap", cluster.bootstrap(), "--namespace"])
        .arg(namespace.name())
        .arg("--kafka-config")
        .arg(&admin_map)
        .output()?;
    let audit_text = String::from_utf8_lossy(&audit.stdout);
    println!("{audit_text}");
    assert!(
        audit.status.success(),
        "the audit failed: {audit_text}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    // What the order process serves on /metrics, and what --help prints.
    let metrics = http_get(rest, "/metrics")?;
    assert!(metrics.contains("200 OK"), "{metrics}");
    let help = tradeflow().args(["run", "--help"]).output()?;
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    drop(nodes);

    // No password reached a log line (at info level), /metrics or --help.
    for service in Service::ALL {
        let password = std::fs::read_to_string(cluster.password_file(&user_of(service)))?;
        assert!(
            !metrics.contains(password.trim()),
            "/metrics holds a password"
        );
        assert!(!help.contains(password.trim()), "--help holds a password");
        for log in &logs {
            let text = std::fs::read_to_string(log)?;
            assert!(
                !text.contains(password.trim()),
                "{} holds {}'s password",
                log.display(),
                user_of(service)
            );
        }
    }
    Ok(())
}

#[test]
fn a_wrong_password_is_refused_with_a_clear_error_and_nothing_is_processed() -> anyhow::Result<()> {
    let cluster = SecureCluster::ensure()?;
    let namespace = unique_namespace("secure-badpw")?;
    let dir = work_dir("secure-badpw")?;
    create_topics(&cluster, &namespace)?;
    let wrong = dir.join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n")?;
    let security = format!(
        "[kafka.security]\nprotocol = \"SASL_SSL\"\nusername = \"tradeflow-payment\"\n\
         password_file = {:?}\nca_file = {:?}\n",
        wrong.display().to_string(),
        cluster.ca_file().display().to_string()
    );
    let config = core_map(&dir, "badpw", &security)?;
    let log_path = dir.join("badpw.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let mut child = tradeflow()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--bootstrap", cluster.bootstrap(), "--replication", "1"])
        .args(["--services", "payment", "--namespace", namespace.name()])
        .args(["--no-api", "--rest-addr", "127.0.0.1:0", "--report-dir"])
        .arg(dir.join("report"))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    let status = tradeflow_tests::wait_or_kill(&mut child, WAIT)?
        .ok_or_else(|| anyhow::anyhow!("still running {WAIT:?} after a wrong password"))?;
    let output = std::fs::read_to_string(&log_path)?;
    println!(
        "wrong password: {status} after {:.1} s: {output}",
        started.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "ran with a wrong password");
    assert!(
        output.contains("uthentication"),
        "the error does not say authentication failed: {output}"
    );
    assert!(!output.contains("not-the-password"), "{output}");
    // Nothing was processed: no output topic of payment holds a record.
    let admin = cluster.admin_properties()?;
    let mut read = 0u64;
    let topics = [namespace.physical(services::topics::PAYMENT_COMPLETED)];
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    engine::kafka::read_to_end(cluster.bootstrap(), &admin, &topics, &mut |_| read += 1)?;
    assert_eq!(read, 0);
    Ok(())
}

#[test]
fn the_payment_principal_writing_an_inventory_topic_is_denied_not_retried() -> anyhow::Result<()> {
    let cluster = SecureCluster::ensure()?;
    let namespace = unique_namespace("secure-deny")?;
    let dir = work_dir("secure-deny")?;
    create_topics(&cluster, &namespace)?;
    let config = core_map(
        &dir,
        "payment",
        &cluster.security_section("tradeflow-payment"),
    )?;
    cluster.apply_acls(&generated_acls(&config, &namespace, "payment")?)?;
    let properties = tuning::KafkaSecurity::load(&config)?
        .ok_or_else(|| anyhow::anyhow!("no [kafka.security]"))?
        .client_properties()?;

    // Its own output: allowed.
    let own = namespace.physical(services::topics::PAYMENT_COMPLETED);
    fn record(topic: &str) -> OutRecord<'_> {
        OutRecord {
            topic,
            partition: PartitionId(0),
            key: Some(b"k"),
            payload: Some(b"not an event: never read by a stage"),
            headers: &[],
        }
    }
    engine::kafka::publish_and_wait(cluster.bootstrap(), &properties, &[record(&own)])?;

    // Inventory's output: denied, as a not-authorized error (which stops a
    // shard for good instead of restarting it), within one call.
    let foreign = namespace.physical(services::topics::STOCK_UPDATED);
    let started = Instant::now();
    let error =
        engine::kafka::publish_and_wait(cluster.bootstrap(), &properties, &[record(&foreign)])
            .err()
            .ok_or_else(|| anyhow::anyhow!("the payment principal wrote {foreign}"))?;
    println!(
        "denied after {:.1} s: {error}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        matches!(error, PortError::NotAuthorized { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let text = error.to_string();
    assert!(text.contains("uthorization"), "{text}");
    assert!(text.contains("tradeflow acls"), "{text}");
    Ok(())
}

#[test]
fn a_client_without_tls_cannot_connect() -> anyhow::Result<()> {
    let cluster = SecureCluster::ensure()?;
    let password = std::fs::read_to_string(cluster.password_file("admin"))?;
    // Plaintext, and SCRAM with the right password but without TLS: the
    // listener speaks TLS first, so neither gets a metadata answer.
    let plaintext = vec![
        ("security.protocol".to_string(), "PLAINTEXT".to_string()),
        ("broker.address.family".into(), "v4".into()),
        ("socket.timeout.ms".into(), "5000".into()),
    ];
    let sasl_plaintext = vec![
        (
            "security.protocol".to_string(),
            "SASL_PLAINTEXT".to_string(),
        ),
        ("sasl.mechanism".into(), "SCRAM-SHA-512".into()),
        ("sasl.username".into(), "admin".into()),
        ("sasl.password".into(), password.trim().to_string()),
        ("broker.address.family".into(), "v4".into()),
        ("socket.timeout.ms".into(), "5000".into()),
    ];
    for (what, properties) in [("PLAINTEXT", plaintext), ("SASL_PLAINTEXT", sasl_plaintext)] {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap());
        for (key, value) in &properties {
            config.set(key, value);
        }
        let probe: rdkafka::consumer::BaseConsumer = config.create()?;
        // A TLS listener answers nothing a plaintext client understands: it
        // never gets metadata, however long it waits (5 s here).
        let answer =
            rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(5));
        assert!(answer.is_err(), "{what} got metadata");
    }
    // The same admin over SASL_SSL is answered (the refusals above are TLS's).
    engine::kafka::partition_count(
        cluster.bootstrap(),
        &cluster.admin_properties()?,
        "anything",
    )?;
    Ok(())
}

#[test]
fn the_secured_core_map_still_loads_as_a_placement() -> anyhow::Result<()> {
    // [kafka] sits beside the placement; the placement's reader accepts it.
    let cluster_free = "[kafka.security]\nprotocol = \"SSL\"\n";
    let dir = work_dir("secure-map")?;
    let config = core_map(&dir, "ssl", cluster_free)?;
    let tuning = tuning::NodeTuning::load(&config)?;
    assert_eq!(tuning.ownership().partitions, PARTITIONS as u32);
    let security = tuning::KafkaSecurity::load(&config)?;
    assert_eq!(
        security.map(|s| s.protocol),
        Some(tuning::security::SecurityProtocol::Ssl)
    );
    let _ = ServiceSet::ALL;
    Ok(())
}

#[test]
fn a_shard_denied_a_write_stops_the_node_with_a_clear_error_instead_of_restarting(
) -> anyhow::Result<()> {
    let cluster = SecureCluster::ensure()?;
    let namespace = unique_namespace("secure-shard-deny")?;
    let dir = work_dir("secure-shard-deny")?;
    create_topics(&cluster, &namespace)?;
    let config = core_map(
        &dir,
        "payment",
        &cluster.security_section("tradeflow-payment"),
    )?;
    // Payment's generated ACLs less Write on its outcome topics (it still
    // sees them): the first order it decides is a write the cluster refuses.
    let acls: String = generated_acls(&config, &namespace, "payment")?
        .lines()
        .map(|l| {
            if l.contains(".payment.completed'") || l.contains(".payment.failed'") {
                format!("{}\n", l.replace("--operation Write ", ""))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    cluster.apply_acls(&acls)?;
    let log_path = dir.join("payment.log");
    let log = std::fs::File::create(&log_path)?;
    let mut node = Node(
        tradeflow()
            .args(["run", "--config"])
            .arg(&config)
            .args(["--bootstrap", cluster.bootstrap(), "--replication", "1"])
            .args(["--services", "payment", "--namespace", namespace.name()])
            .args(["--no-api", "--rest-addr", "127.0.0.1:0", "--report-dir"])
            .arg(dir.join("report"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?,
    );
    // An order from an unfunded account: payment decides "failed" at once.
    let order = services::testing::EventFactory::new().order(7, "deny-1", "SKU1", 1, 100);
    let payload = codecs::encode_to_vec(&order)?;
    let key = services::testing::record_key(&order);
    let topic = namespace.physical(services::topics::ORDER_CREATED);
    let started = Instant::now();
    engine::kafka::publish_and_wait(
        cluster.bootstrap(),
        &cluster.admin_properties()?,
        &[OutRecord {
            topic: &topic,
            partition: engine::partitioner::partition_for(&key, PARTITIONS),
            key: Some(&key),
            payload: Some(&payload),
            headers: &[],
        }],
    )?;
    let status = tradeflow_tests::wait_or_kill(&mut node.0, WAIT)?
        .ok_or_else(|| anyhow::anyhow!("the node kept running {WAIT:?} after a denied write"))?;
    let output = std::fs::read_to_string(&log_path)?;
    println!(
        "denied shard write: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("not authorized by the Kafka cluster"),
        "no clear refusal in the node's output: {output}"
    );
    // Stopped, not restarted: no restart was attempted.
    assert!(
        !output.contains("restarting from its last commit"),
        "the shard was restarted: {output}"
    );
    Ok(())
}
