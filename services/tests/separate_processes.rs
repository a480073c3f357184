//! Each service in its own process, against the real single broker: three
//! `tradeflow run --services <one>` processes (each with its own
//! `application.id`, scaled on its own) carry a synthetic scenario — orders
//! that fill, orders without funds (rejected), orders without stock (rejected
//! and refunded), amends and cancels — and every order reaches exactly one
//! outcome, seen by a `read_committed` consumer. An order created through the
//! order process's REST API is filled and reads back through it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::drive::{drive, schedule, DriveConfig};
use loadgen::synth::{generate, SynthConfig};
use services::flow::{Service, ServiceSet, TradeFlow};
use tradeflow_tests::{unique_topic, KafkaCluster};

const WAIT: Duration = Duration::from_secs(60);

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        // Bounded: a hung engine is killed, not waited for.
        let _ = tradeflow_tests::wait_or_kill(&mut self.0, WAIT);
    }
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn each_service_in_its_own_process_carries_the_whole_flow() -> anyhow::Result<()> {
    let cluster = KafkaCluster::single()?;
    let partitions = match cluster
        .partition_leaders(codecs::topics::ORDER_CREATED)
        .map(|l| l.len())
    {
        Ok(n) if n > 0 => i32::try_from(n)?,
        _ => 4,
    };
    let dir = std::env::temp_dir().join(format!("tradeflow-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("split.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"split\"\n[ownership]\nmode = \"core-map\"\npartitions = {partitions}\n\
             [[shard]]\ncore = 0\npartitions = [\"0-{}\"]\n[commit]\ninterval_ms = 100\non_drain = true\n",
            partitions - 1
        ),
    )?;
    // The flow's topics exist before any process or reader looks for them.
    let all = TradeFlow::new(ServiceSet::ALL);
    engine::deployment::prepare_topics(
        &engine::kafka::KafkaSettings {
            bootstrap: cluster.bootstrap().to_string(),
            application_id: "split".into(),
            guarantee: engine::kafka::Guarantee::ExactlyOnce,
            client_properties: Vec::new(),
            linger_ms: 0,
            fetch_wait_max_ms: 5,
            namespace: codecs::topics::TopicNamespace::none(),
        },
        &engine::deployment::FlowTopics {
            inputs: engine::Stage::input_topics(&all).to_vec(),
            outputs: all.output_topics(),
            stores: Vec::new(),
            changelog_layout: Default::default(),
        },
        partitions,
        1,
    )?;
    let rest = "127.0.0.1:18381";
    let mut nodes = Vec::new();
    for service in [Service::Payment, Service::Inventory, Service::Order] {
        let set = ServiceSet::only(service);
        let application_id = unique_topic(&format!("split-{set}"));
        let inputs = engine::Stage::input_topics(&TradeFlow::new(set)).to_vec();
        // The flow's topics hold other runs' records; start where they end.
        cluster.start_group_at_end(&application_id, &inputs, partitions)?;
        let log = std::fs::File::create(dir.join(format!("{set}.log")))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tradeflow"));
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--bootstrap", cluster.bootstrap(), "--replication", "1"])
            .args([
                "--services",
                &set.to_string(),
                "--application-id",
                &application_id,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if service == Service::Order {
            command.args(["--rest-addr", rest, "--grpc-addr", "127.0.0.1:0"]);
        } else {
            // Metrics and health still listen: on any free port.
            command.args(["--no-api", "--rest-addr", "127.0.0.1:0"]);
        }
        nodes.push(Node(command.spawn()?));
    }
    let started = Instant::now();
    while http(rest, "GET", "/health/live", "").is_err() {
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "the order process's API never came up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let scenario = generate(
        &SynthConfig {
            seed: run_id,
            run_id: Some(run_id),
            accounts: 60,
            instruments: 8,
            orders: 900,
            rate_per_s: 300,
            fail_funds_share: 0.05,
            fail_stock_share: 0.05,
            ..SynthConfig::default()
        },
        codecs::ids::order_id_for,
    )?;
    let report = drive(
        &DriveConfig {
            bootstrap: cluster.bootstrap().to_string(),
            client_properties: vec![("broker.address.family".into(), "v4".into())],
            drain_timeout: WAIT,
            namespace: codecs::topics::TopicNamespace::none(),
        },
        schedule(scenario)?,
    )?;
    println!(
        "separate processes: {} orders, {} filled, {} rejected for funds, {} rejected for stock and \
         refunded, {} missing, {} duplicate outcomes; p50 {:.1} ms, p99 {:.1} ms",
        report.orders_sent,
        report.filled,
        report.rejected_funds,
        report.refunded,
        report.missing,
        report.duplicate_outcomes,
        report.latency.corrected.value_at_quantile(0.5) as f64 / 1e6,
        report.latency.corrected.value_at_quantile(0.99) as f64 / 1e6,
    );
    assert_eq!(report.missing, 0, "orders without an outcome");
    assert_eq!(report.duplicate_outcomes, 0);
    assert!(report.filled > 0 && report.rejected_funds > 0 && report.refunded > 0);

    // Through the order process's API: fund, stock, create, read back filled.
    let account = run_id % 1_000_000_000 + 7;
    let sku = format!("S{:X}", run_id % 0x0FFF_FFFF);
    let funded = http(
        rest,
        "POST",
        &format!("/v1/accounts/{account}/fundings"),
        r#"{"amount": 100000}"#,
    )?;
    assert!(funded.starts_with("HTTP/1.1 202"), "{funded}");
    let stocked = http(
        rest,
        "POST",
        &format!("/v1/instruments/{sku}/replenishments"),
        r#"{"quantity": 10}"#,
    )?;
    assert!(stocked.starts_with("HTTP/1.1 202"), "{stocked}");
    std::thread::sleep(Duration::from_secs(2));
    let created = http(
        rest,
        "POST",
        "/v1/orders",
        &format!(
            r#"{{"account": {account}, "sku": "{sku}", "quantity": 2, "limit_price": 500, "client_order_id": "split-1"}}"#
        ),
    )?;
    assert!(
        created.contains("202") || created.contains("200"),
        "{created}"
    );
    let order_id = created
        .split("\"order_id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no order id in {created}"))?
        .to_string();
    let started = Instant::now();
    loop {
        let status = http(
            rest,
            "GET",
            &format!("/v1/accounts/{account}/orders/{order_id}"),
            "",
        )?;
        if status.contains("\"status\":\"filled\"") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "the API order never filled: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(nodes);
    Ok(())
}
