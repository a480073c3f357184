//! The quick start as a newcomer runs it: `tradeflow demo` on librdkafka's
//! in-process cluster (no broker needed), with its embedded schema registry.
//! While the demo runs, the registry answers like Confluent's: every value
//! schema of the flow is registered under `<topic>-value`, registering one
//! again gives back the same id (no new version), and each id serves a schema
//! this build reads. At the end the demo reports every order decided.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codecs::topics::TopicNamespace;
use registry::client::{register_value_schemas, value_schema_by_id, ValueSchemaLookup};

/// Every topic of the flow with an Avro value schema.
const FLOW_TOPICS: [&str; 9] = [
    "order-service.order.created",
    "order-service.order.updated",
    "payment-service.account.funded",
    "payment-service.payment.completed",
    "payment-service.payment.failed",
    "payment-service.payment.refunded",
    "inventory-service.stock.replenished",
    "inventory-service.stock.updated",
    "inventory-service.stock.rejected",
];

#[test]
fn the_demo_serves_the_flows_schemas_and_decides_every_order() -> anyhow::Result<()> {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tradeflow"))
        .args(["demo", "--rate", "300", "--duration-s", "2"])
        .args(["--schema-registry-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = demo.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            let _ = lines_tx.send(line);
        }
    });

    // The registry's address, from the line the demo prints at start.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let url = loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if let Some(rest) = line.strip_prefix("schema registry (Confluent REST API) at ") {
            break rest
                .split(':')
                .take(3)
                .collect::<Vec<_>>()
                .join(":")
                .to_string();
        }
        seen.push(line);
    };
    anyhow::ensure!(url.starts_with("http://127.0.0.1:"), "registry at {url}");

    // Registering the flow's schemas again is a no-op: the same ids come back.
    let first = register_value_schemas(&url, &TopicNamespace::none(), &FLOW_TOPICS)?;
    let again = register_value_schemas(&url, &TopicNamespace::none(), &FLOW_TOPICS)?;
    assert_eq!(first.len(), FLOW_TOPICS.len());
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(
            (&a.subject, a.id),
            (&b.subject, b.id),
            "a second registration moved an id"
        );
        match value_schema_by_id(&url, a.id)? {
            ValueSchemaLookup::Readable(schema) => {
                assert_eq!(schema.value_schema().subject(), a.subject)
            }
            other => panic!("id {} of {}: {other:?}", a.id, a.subject),
        }
    }
    assert!(matches!(
        value_schema_by_id(&url, 999_999)?,
        ValueSchemaLookup::NotRegistered
    ));

    let status = loop {
        if let Some(status) = demo.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            anyhow::bail!("the demo did not finish within its deadline");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    seen.extend(lines.try_iter());
    assert!(status.success(), "demo exit status {status}");
    let orders = seen
        .iter()
        .find(|l| l.starts_with("orders: "))
        .ok_or_else(|| anyhow::anyhow!("no orders line in {seen:#?}"))?;
    assert!(orders.ends_with(", 0 missing"), "{orders}");
    Ok(())
}

/// The demo's commit flags pass the rules of a core map's `[commit]`
/// section: a bad one is refused before anything starts, naming the key as a
/// bad core map would, and an interval at-least-once allows is refused under
/// exactly-once only.
#[test]
fn the_demos_flags_are_validated_like_a_core_map() -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let output = Command::new(env!("CARGO_BIN_EXE_tradeflow"))
            .arg("demo")
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let (passed, stderr) = run(&["--commit-interval-ms", "9000"])?;
    assert!(!passed, "an exactly-once interval of 9 s was accepted");
    assert!(
        stderr.contains("commit.interval_ms: 9000 is out of range; under exactly-once"),
        "{stderr}"
    );
    assert!(!stderr.contains("mock cluster"), "refused late: {stderr}");
    let (passed, stderr) = run(&["--commit-interval-ms", "0", "--guarantee", "at-least-once"])?;
    assert!(!passed, "a zero interval was accepted");
    assert!(
        stderr.contains("commit.interval_ms: 0 is out of range; under at-least-once"),
        "{stderr}"
    );
    Ok(())
}
