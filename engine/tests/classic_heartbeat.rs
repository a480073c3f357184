//! The guard for `classic-heartbeat-timer.patch` in vendor/rdkafka-sys
//! (PATCHED.md): a classic-protocol group member heartbeats at its
//! `heartbeat.interval.ms`, also below one second. Unpatched librdkafka
//! 2.12.1 checks the heartbeat interval only when its main thread wakes for
//! something else (an op, or a timer: at least once a second), so a short
//! interval was stretched to the next wake-up, and the owners' registry (a
//! classic group, its heartbeat a third of `[ownership] session_ms`) had
//! less slack before a short session expired on a live node (docs/STATE.md,
//! "Take-over after `kill -9`").
//!
//! Counted from librdkafka's own `cgrp` debug lines on its mock cluster
//! (which speaks the classic group protocol), with a 50 ms interval for 3 s:
//! 59-60 heartbeats patched, 9 unpatched (three runs each, 2026-12-07). The
//! bound is a quarter of what the interval asks (15), so a slow machine does
//! not fail it and the old behaviour does not pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const HEARTBEAT_INTERVAL_MS: u64 = 50;
const WINDOW: Duration = Duration::from_secs(3);
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the heartbeats librdkafka reports sending.
#[derive(Clone, Default)]
struct HeartbeatCount(Arc<AtomicUsize>);

impl ClientContext for HeartbeatCount {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "HEARTBEAT" && log_message.contains("Heartbeat for group") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for HeartbeatCount {}

#[test]
fn a_classic_member_heartbeats_at_its_interval_below_one_second() {
    let mock = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
    mock.create_topic("registry", 1, 1).expect("mock topic");
    let count = HeartbeatCount::default();
    let consumer: BaseConsumer<HeartbeatCount> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "classic-heartbeat")
        .set("group.protocol", "classic")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS.to_string())
        .set("debug", "cgrp")
        // rust-rdkafka passes on only the levels the `log` crate enables,
        // none in a test without a logger.
        .set_log_level(RDKafkaLogLevel::Debug)
        .create_with_context(count.clone())
        .expect("consumer");
    consumer.subscribe(&["registry"]).expect("subscribe");

    let joined_by = Instant::now() + JOIN_TIMEOUT;
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < joined_by, "never joined the group");
        let _ = consumer.poll(Duration::from_millis(100));
    }

    // Paused, as the registry pauses its partition: nothing is fetched, so
    // no fetch wakes librdkafka's main thread and hides the bug.
    let assigned = consumer.assignment().expect("assignment");
    consumer.pause(&assigned).expect("pause");

    let before = count.0.load(Ordering::Relaxed);
    let started = Instant::now();
    // Polled as the registry polls (every 100 ms): serving the application
    // queue does not wake librdkafka's main thread, so it cannot hide the bug.
    while started.elapsed() < WINDOW {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let sent = count.0.load(Ordering::Relaxed) - before;
    let asked = (WINDOW.as_millis() as u64 / HEARTBEAT_INTERVAL_MS) as usize;
    println!("{sent} heartbeats in {WINDOW:?}, {asked} asked");
    assert!(
        sent >= asked / 4,
        "{sent} heartbeats in {WINDOW:?} at heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS} \
         (asked for {asked}; unpatched librdkafka sends about one a second)"
    );
}
