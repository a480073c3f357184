//! Drives a running tradeflow with scheduled events and measures end-to-end
//! latency: order accepted (its intended send time) → its terminal outcome
//! visible to a `read_committed` consumer.
//!
//! Owns: the open-loop sender (every event goes at its intended time; a late
//! sender sends at once and the lateness counts), the outcome reader that
//! matches each terminal event to its order, and the latency recorders.
//! Must never: wait for an outcome before sending the next event (closed
//! loop), or time an order from when it was actually sent alone (that hides
//! stalls: both figures are kept, corrected and uncorrected).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codecs::topics::{TopicNamespace, PAYMENT_FAILED, PAYMENT_REFUNDED, STOCK_UPDATED};
use codecs::{encode_to_vec, Event, EventKind, OrderId, TimestampNs};
use crossbeam_channel::Sender;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::latency::{LatencyError, LatencyRecorder};

/// Topics whose events end an order: filled, rejected for funds, refunded.
pub const OUTCOME_TOPICS: [&str; 3] = [STOCK_UPDATED, PAYMENT_FAILED, PAYMENT_REFUNDED];
/// How long the reader waits for outstanding outcomes after the last send.
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// One event of a schedule: when to send it (ns after the start), where, and what.
#[derive(Clone, Debug)]
pub struct ScheduledEvent {
    pub at_ns: u64,
    pub topic: &'static str,
    pub key: Vec<u8>,
    pub event: Event,
}

/// The events of a scenario or traffic file as a schedule: records that carry
/// an event on one of the flow's topics, each at its intended time (raw or
/// foreign records are left out: `drive` times orders of the flow).
pub fn schedule<E>(
    records: impl IntoIterator<Item = Result<crate::traffic::Record, E>>,
) -> Result<Vec<ScheduledEvent>, E> {
    let mut schedule = Vec::new();
    for record in records {
        let record = record?;
        let (Some(event), Some(topic)) = (
            record.event().cloned(),
            codecs::topics::ALL.iter().find(|t| **t == record.topic),
        ) else {
            continue;
        };
        schedule.push(ScheduledEvent {
            at_ns: record.t_ns,
            topic,
            key: record.key.clone().unwrap_or_default(),
            event,
        });
    }
    Ok(schedule)
}

/// Where to send and how long to wait for the end.
#[derive(Clone, Debug)]
pub struct DriveConfig {
    pub bootstrap: String,
    pub client_properties: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// The deployment's topic namespace: schedules name topics logically.
    pub namespace: TopicNamespace,
}

/// What a run measured.
#[derive(Debug)]
pub struct DriveReport {
    pub events_sent: u64,
    pub orders_sent: u64,
    pub outcomes: u64,
    pub filled: u64,
    pub rejected_funds: u64,
    pub refunded: u64,
    /// Orders sent that saw no outcome before the drain timeout.
    pub missing: u64,
    /// Outcomes seen twice for the same order (read_committed: a bug).
    pub duplicate_outcomes: u64,
    pub send_elapsed: Duration,
    pub latency: LatencyRecorder,
}

impl DriveReport {
    /// Orders per second that reached an outcome, over the sending time.
    pub fn achieved_orders_per_s(&self) -> f64 {
        self.outcomes as f64 / self.send_elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoding {kind:?}: {source}")]
    Encode {
        kind: EventKind,
        source: codecs::EncodeError,
    },
    #[error(transparent)]
    Latency(#[from] LatencyError),
    #[error("the sender thread failed: {0}")]
    Sender(String),
}

/// An order and the wall-clock time it was actually sent, in ns.
type SentOrder = (OrderId, u64);

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn client(config: &DriveConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap);
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client
}

/// A `read_committed` reader of the outcome topics, positioned at their
/// current ends so it sees exactly this run's outcomes.
fn outcome_reader(config: &DriveConfig) -> Result<BaseConsumer, DriveError> {
    let reader: BaseConsumer = client(config)
        .set("group.id", "loadgen-outcomes")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in OUTCOME_TOPICS {
        let topic = config.namespace.physical(topic);
        let topic = topic.as_str();
        let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                // A just-created topic's leader may not answer yet: retry briefly.
                let started = Instant::now();
                let high = loop {
                    match reader.fetch_watermarks(topic, p.id(), Duration::from_secs(10)) {
                        Ok((_, high)) => break high,
                        Err(_) if started.elapsed() < Duration::from_secs(30) => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                assignment.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
            }
        }
    }
    reader.assign(&assignment)?;
    Ok(reader)
}

/// Sends `schedule` open-loop and times every order's outcome.
pub fn drive(
    config: &DriveConfig,
    schedule: Vec<ScheduledEvent>,
) -> Result<DriveReport, DriveError> {
    let reader = outcome_reader(config)?;
    let producer: BaseProducer = client(config)
        // The engine places keys with Java's murmur2; librdkafka's default
        // (CRC32) would put an account's events in other partitions than the
        // ones its state lives in.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()?;
    // The sender tells the reader when each order actually left.
    let (sent_tx, sent_rx) = crossbeam_channel::unbounded::<SentOrder>();
    let namespace = config.namespace.clone();
    let start_wall_ns = wall_ns();
    let start = Instant::now();
    let sender = std::thread::Builder::new()
        .name("loadgen-send".into())
        .spawn(move || {
            send_schedule(
                producer,
                &namespace,
                schedule,
                start,
                start_wall_ns,
                sent_tx,
            )
        })
        .map_err(|e| DriveError::Sender(e.to_string()))?;

    let mut latency = LatencyRecorder::new()?;
    let mut actual_send_ns: HashMap<OrderId, u64> = HashMap::new();
    let mut done: HashMap<OrderId, EventKind> = HashMap::new();
    let mut report = DriveReport {
        events_sent: 0,
        orders_sent: 0,
        outcomes: 0,
        filled: 0,
        rejected_funds: 0,
        refunded: 0,
        missing: 0,
        duplicate_outcomes: 0,
        send_elapsed: Duration::ZERO,
        latency: LatencyRecorder::new()?,
    };
    let mut sender_result = None;
    let mut sender = Some(sender);
    let mut drain_started: Option<Instant> = None;
    loop {
        while let Ok((order, actual)) = sent_rx.try_recv() {
            actual_send_ns.insert(order, actual);
        }
        if sender.as_ref().is_some_and(|s| s.is_finished()) {
            if let Some(handle) = sender.take() {
                sender_result = Some(
                    handle
                        .join()
                        .map_err(|_| DriveError::Sender("panicked".into()))?,
                );
                drain_started = Some(Instant::now());
                report.send_elapsed = start.elapsed();
                while let Ok((order, actual)) = sent_rx.try_recv() {
                    actual_send_ns.insert(order, actual);
                }
            }
        }
        if let Some(Ok((events, _))) = &sender_result {
            if done.len() >= actual_send_ns.len() && *events > 0 {
                break;
            }
        }
        if drain_started.is_some_and(|d| d.elapsed() > config.drain_timeout) {
            break;
        }
        let Some(message) = reader.poll(Duration::from_millis(20)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            // librdkafka reports a lost broker connection here and reconnects by
            // itself; a run that rides out a broker failure must not end on it.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown
                    )
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        let now = wall_ns();
        let Some(Ok(event)) = message.payload().map(codecs::decode) else {
            continue;
        };
        let order = event.order_id();
        if !actual_send_ns.contains_key(&order) {
            // An outcome can overtake the sender's note; pick the note up first.
            while let Ok((o, actual)) = sent_rx.try_recv() {
                actual_send_ns.insert(o, actual);
            }
            if !actual_send_ns.contains_key(&order) {
                continue;
            }
        }
        if done.insert(order, event.kind()).is_some() {
            report.duplicate_outcomes += 1;
            continue;
        }
        report.outcomes += 1;
        match event.kind() {
            EventKind::StockUpdated => report.filled += 1,
            EventKind::PaymentFailed => report.rejected_funds += 1,
            EventKind::PaymentRefunded => report.refunded += 1,
            _ => {}
        }
        // Outputs carry their order's created_at_ns: its intended send time.
        let intended = event.created_at_ns().0;
        let actual = actual_send_ns.get(&order).copied().unwrap_or(intended);
        latency.record(now.saturating_sub(intended), now.saturating_sub(actual));
    }
    if let Some(handle) = sender.take() {
        sender_result = Some(
            handle
                .join()
                .map_err(|_| DriveError::Sender("panicked".into()))?,
        );
    }
    let (events, orders) = match sender_result {
        Some(Ok(counts)) => counts,
        Some(Err(e)) => return Err(e),
        None => (0, 0),
    };
    if report.send_elapsed.is_zero() {
        report.send_elapsed = start.elapsed();
    }
    report.events_sent = events;
    report.orders_sent = orders;
    report.missing = actual_send_ns
        .keys()
        .filter(|o| !done.contains_key(o))
        .count() as u64;
    report.latency = latency;
    Ok(report)
}

/// The sender thread: returns (events sent, orders sent).
fn send_schedule(
    producer: BaseProducer,
    namespace: &TopicNamespace,
    schedule: Vec<ScheduledEvent>,
    start: Instant,
    start_wall_ns: u64,
    sent: Sender<SentOrder>,
) -> Result<(u64, u64), DriveError> {
    let mut events = 0u64;
    let mut orders = 0u64;
    // Built once: the send loop must not allocate a topic name per event.
    let physical: Vec<(&str, String)> = codecs::topics::ALL
        .iter()
        .map(|t| (*t, namespace.physical(t)))
        .collect();
    for mut item in schedule {
        let topic = physical
            .iter()
            .find(|(logical, _)| *logical == item.topic)
            .map_or(item.topic, |(_, physical)| physical.as_str());
        loop {
            let now = start.elapsed().as_nanos() as u64;
            if now >= item.at_ns {
                break;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_nanos((item.at_ns - now).min(200_000)));
        }
        let is_order = item.event.kind() == EventKind::OrderCreated;
        // Latency is measured from when the event was due, not when it left.
        set_created_at(&mut item.event, TimestampNs(start_wall_ns + item.at_ns));
        let payload = encode_to_vec(&item.event).map_err(|source| DriveError::Encode {
            kind: item.event.kind(),
            source,
        })?;
        loop {
            let record = BaseRecord::to(topic).key(&item.key).payload(&payload);
            match producer.send(record) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if is_order {
            orders += 1;
            let _ = sent.send((item.event.header().order_id, wall_ns()));
        }
        events += 1;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    Ok((events, orders))
}

fn set_created_at(event: &mut Event, at: TimestampNs) {
    let header = match event {
        Event::OrderCreated(e) => &mut e.header,
        Event::OrderAmended(e) => &mut e.header,
        Event::OrderCancelled(e) => &mut e.header,
        Event::PaymentCompleted(e) => &mut e.header,
        Event::PaymentFailed(e) => &mut e.header,
        Event::PaymentRefunded(e) => &mut e.header,
        Event::StockUpdated(e) => &mut e.header,
        Event::StockRejected(e) => &mut e.header,
        Event::AccountFunded(e) => &mut e.header,
        Event::StockReplenished(e) => &mut e.header,
    };
    header.created_at_ns = at;
}
