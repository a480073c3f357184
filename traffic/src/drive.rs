//! Drives a running tradeflow with scheduled records and measures end-to-end
//! latency: order accepted (its intended send time) → its terminal outcome
//! visible to a `read_committed` consumer.
//!
//! Owns: the open-loop sender (every record goes at its intended time; a late
//! sender sends at once and the lateness counts), the bound on orders awaiting
//! their outcome, the outcome reader that matches each terminal event to its
//! order, and the latency recording (whole run and per interval).
//! Fundings and replenishments are acknowledged before the next order goes
//! out (the order spends them; see `send_schedule`).
//! Must never: wait for an outcome before sending the next record while fewer
//! than [`DriveOptions::pending_orders_max`] orders are pending (closed loop),
//! or time an order from when it was actually sent alone (that hides stalls:
//! both figures are kept, corrected and uncorrected).
//!
//! # Per-stage latencies
//! Beside the outcome topics the reader follows the intermediate decisions
//! (`payment.completed`, `stock.rejected`), and splits each order's path at
//! the Kafka timestamps the engine's producer stamped (`CreateTime`,
//! milliseconds, the same machine's clock): order due → Payment decided →
//! Inventory decided → refunded → outcome visible to a `read_committed`
//! reader ([`StageLatencies`]). A stage's time includes the hand-over before
//! it (the previous stage's commit, the fetch), which is where a flow's time
//! goes.
//!
//! # Corrected and uncorrected, and the pending-order bound
//! Each outcome is timed twice: from the order's intended send time
//! (corrected for coordinated omission) and from when it actually left
//! (uncorrected). The two differ only when the sender is late. A real client
//! has a bounded number of orders in flight (a gateway's pending-order table,
//! wrk2's connections); so does this one: with `pending_orders_max` orders
//! without an outcome, the sender waits for one to finish. When the flow
//! stalls, the sender is held back, the orders it sends afterwards leave late,
//! and only the corrected figure shows the stall to those orders — the
//! uncorrected one is what a measurement that coordinates with the system
//! under test would report. The default bound is far above any in-flight
//! count a healthy flow reaches, so it only bites on a stall.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codecs::topics::{
    TopicNamespace, ALL, PAYMENT_COMPLETED, PAYMENT_FAILED, PAYMENT_REFUNDED, STOCK_REJECTED,
    STOCK_UPDATED,
};
use codecs::{EventKind, OrderId, TimestampNs};
use crossbeam_channel::{SendTimeoutError, Sender};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::interval::{IntervalError, IntervalLog, IntervalRecorder, INTERVAL_MS_DEFAULT};
use crate::latency::{LatencyError, LatencyRecorder, HISTOGRAM_SIGFIG, LATENCY_NS_MAX};
use crate::{stamp_created_at, Payload};
use registry::values::{ValueError, ValueFormats, ValueWriter};

/// How long the sender waits for its records' acknowledgements: the
/// fundings before the first order that spends them, and everything at the end.
const SEND_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Topics whose events end an order: filled, rejected for funds, refunded.
pub const OUTCOME_TOPICS: [&str; 3] = [STOCK_UPDATED, PAYMENT_FAILED, PAYMENT_REFUNDED];
/// Intermediate decisions the reader also follows, for per-stage latencies.
pub const DECISION_TOPICS: [&str; 2] = [PAYMENT_COMPLETED, STOCK_REJECTED];
/// Nanoseconds per millisecond (Kafka timestamps are milliseconds).
const NS_PER_MS: u64 = 1_000_000;
/// How long the reader waits for outstanding outcomes after the last send.
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Orders without an outcome before the sender waits (see the module doc).
pub const PENDING_ORDERS_MAX_DEFAULT: usize = 100_000;

/// One record of a schedule: when to send it (ns after the start), to which
/// of the flow's (logical) topics, with what key and value.
#[derive(Clone, Debug)]
pub struct ScheduledRecord {
    pub at_ns: u64,
    pub topic: &'static str,
    pub key: Vec<u8>,
    /// An event (encoded at send time, stamped with its intended time) or
    /// raw bytes sent as they are (poison records stay poison).
    pub payload: Payload,
}

impl ScheduledRecord {
    /// The record of a traffic file at intended time `at_ns`, if its topic is
    /// one of the flow's (logical names).
    pub fn from_traffic(at_ns: u64, record: crate::Record) -> Option<ScheduledRecord> {
        let topic = ALL.iter().copied().find(|t| *t == record.topic)?;
        Some(ScheduledRecord {
            at_ns,
            topic,
            key: record.key.unwrap_or_default(),
            payload: record.payload,
        })
    }
}

/// The records of a scenario or traffic file as a schedule, each at its
/// recorded time: records on one of the flow's topics (records on other
/// topics are left out: `drive` sends into the flow).
pub fn schedule<E>(
    records: impl IntoIterator<Item = Result<crate::Record, E>>,
) -> Result<Vec<ScheduledRecord>, E> {
    let mut schedule = Vec::new();
    for record in records {
        let record = record?;
        if let Some(scheduled) = ScheduledRecord::from_traffic(record.t_ns, record) {
            schedule.push(scheduled);
        }
    }
    Ok(schedule)
}

/// Where to send and how long to wait for the end.
#[derive(Clone, Debug)]
pub struct DriveConfig {
    pub bootstrap: String,
    pub client_properties: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// The deployment's topic namespace: schedules name topics logically;
    /// records go to, and outcomes are read from, `<namespace>.<logical>`.
    pub namespace: TopicNamespace,
}

/// How often the measuring loop tells its [`DriveProgress`] how far it got.
pub const PROGRESS_UPDATE_MS: u64 = 100;

/// Where a drive reports how far it got, from its measuring thread: cheap
/// calls, at most every [`PROGRESS_UPDATE_MS`] and once at the end. The
/// driver draws nothing itself (loadgen's progress bar implements this; a
/// library caller may ignore it with [`NoProgress`]).
pub trait DriveProgress: Send + Sync + std::fmt::Debug {
    /// `sent` records of the schedule are sent and `outcomes` orders have
    /// their terminal outcome.
    fn update(&self, sent: u64, outcomes: u64);
    /// The drive ended (its last [`Self::update`] came just before).
    fn finish(&self) {}
    /// The caller is about to print its report: stop drawing.
    fn close(&self) {}
}

/// A drive's progress told to nobody.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl DriveProgress for NoProgress {
    fn update(&self, _sent: u64, _outcomes: u64) {}
}

/// How a drive runs beyond where it sends ([`DriveConfig`]).
#[derive(Clone, Debug)]
pub struct DriveOptions {
    /// Orders without an outcome before the sender waits for one (see the
    /// module doc); at least 1.
    pub pending_orders_max: usize,
    /// Length of one interval of the interval log.
    pub interval: Duration,
    /// Told how many records are sent and how many outcomes are read, at
    /// most every [`PROGRESS_UPDATE_MS`] (loadgen draws its progress bar
    /// from it); nothing by default.
    pub progress: Arc<dyn DriveProgress>,
    /// The form each topic's records are written in, and how records read
    /// are decoded (rkyv first, Avro through the registry): rkyv only by
    /// default.
    pub values: ValueFormats,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            pending_orders_max: PENDING_ORDERS_MAX_DEFAULT,
            interval: Duration::from_millis(INTERVAL_MS_DEFAULT),
            progress: Arc::new(NoProgress),
            values: ValueFormats::default(),
        }
    }
}

/// Where each order's time went, stage by stage (see the module doc), in
/// nanoseconds at millisecond resolution.
#[derive(Debug, Clone)]
pub struct StageLatencies {
    /// Order due → Payment's decision produced (`payment.completed`/`failed`).
    pub payment: Histogram<u64>,
    /// Payment's `payment.completed` → Inventory's decision produced
    /// (`stock.updated`/`rejected`).
    pub inventory: Histogram<u64>,
    /// `stock.rejected` → Payment's `payment.refunded` produced.
    pub refund: Histogram<u64>,
    /// Terminal outcome produced → seen by a `read_committed` reader.
    pub visible: Histogram<u64>,
}

impl StageLatencies {
    fn new() -> Result<Self, LatencyError> {
        let histogram = || Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG);
        Ok(StageLatencies {
            payment: histogram()?,
            inventory: histogram()?,
            refund: histogram()?,
            visible: histogram()?,
        })
    }

    /// The stages with what they span, in flow order.
    pub fn named(&self) -> [(&'static str, &'static str, &Histogram<u64>); 4] {
        [
            ("payment", "order due → payment decided", &self.payment),
            (
                "inventory",
                "payment.completed → stock decided",
                &self.inventory,
            ),
            ("refund", "stock.rejected → payment.refunded", &self.refund),
            (
                "visible",
                "outcome produced → read_committed visible",
                &self.visible,
            ),
        ]
    }
}

/// The Kafka timestamps of one order's steps, gathered as they are read
/// (topics arrive in any order) and split into stages at the end.
#[derive(Debug, Clone, Copy, Default)]
struct OrderSteps {
    /// The order's intended send time (its `created_at_ns`), wall-clock ns.
    intended_ns: u64,
    payment_ms: Option<i64>,
    inventory_ms: Option<i64>,
    refund_ms: Option<i64>,
    /// The terminal outcome's timestamp, and when the reader saw it (wall ns).
    outcome: Option<(i64, u64)>,
}

impl OrderSteps {
    fn record_into(&self, stages: &mut StageLatencies) {
        let ns = |ms: i64| u64::try_from(ms).unwrap_or(0).saturating_mul(NS_PER_MS);
        let record = |h: &mut Histogram<u64>, from_ns: u64, to_ns: u64| {
            h.saturating_record(to_ns.saturating_sub(from_ns).max(1));
        };
        if let Some(payment) = self.payment_ms {
            record(&mut stages.payment, self.intended_ns, ns(payment));
            if let Some(inventory) = self.inventory_ms {
                record(&mut stages.inventory, ns(payment), ns(inventory));
                if let Some(refund) = self.refund_ms {
                    record(&mut stages.refund, ns(inventory), ns(refund));
                }
            }
        }
        if let Some((produced, seen_ns)) = self.outcome {
            record(&mut stages.visible, ns(produced), seen_ns);
        }
    }
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
    /// Records on the outcome and decision topics that are not events. Only
    /// the engine writes there, so any is a bug (`passed` fails on it).
    pub undecodable: u64,
    /// From the epoch to the last send.
    pub send_elapsed: Duration,
    /// The whole run's histograms.
    pub latency: LatencyRecorder,
    /// Per-interval histograms from the epoch (the schedule's time 0).
    pub intervals: IntervalLog,
    /// Wall-clock time of the epoch.
    pub started: SystemTime,
    /// From the epoch to the end of measuring (sending plus draining).
    pub elapsed: Duration,
    /// Intended time of the first and the last order, ns after the epoch.
    pub orders_intended_ns: Option<(u64, u64)>,
    /// When the last outcome was seen, ns after the epoch.
    pub last_outcome_ns: u64,
    /// Longest time the sender waited for a pending order to finish.
    pub pending_wait_max: Duration,
    /// Where the orders' time went, stage by stage.
    pub stages: StageLatencies,
}

impl DriveReport {
    /// Orders per second that reached an outcome, over the whole sending
    /// time (set-up records included).
    pub fn achieved_orders_per_s(&self) -> f64 {
        self.outcomes as f64 / self.send_elapsed.as_secs_f64().max(1e-9)
    }

    /// Orders per second the schedule offered: orders over the span of their
    /// intended times.
    pub fn offered_order_rate_per_s(&self) -> f64 {
        match self.orders_intended_ns {
            Some((first, last)) if last > first => {
                (self.orders_sent.saturating_sub(1)) as f64 / ((last - first) as f64 / 1e9)
            }
            _ => self.orders_sent as f64,
        }
    }

    /// Outcomes per second, from the first order's intended time to the last
    /// outcome: comparable with [`Self::offered_order_rate_per_s`].
    pub fn achieved_order_rate_per_s(&self) -> f64 {
        let first = self.orders_intended_ns.map_or(0, |(first, _)| first);
        let span_ns = self.last_outcome_ns.saturating_sub(first);
        if span_ns == 0 {
            return 0.0;
        }
        self.outcomes as f64 / (span_ns as f64 / 1e9)
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist: is tradeflow running in this namespace?")]
    NoSuchTopic(String),
    #[error(transparent)]
    Read(#[from] records::ReadError),
    #[error(transparent)]
    Unacknowledged(#[from] records::Unacknowledged),
    #[error("encoding {kind:?}: {source}")]
    Encode { kind: EventKind, source: ValueError },
    #[error(transparent)]
    Latency(#[from] LatencyError),
    #[error(transparent)]
    Interval(#[from] IntervalError),
    #[error("the schedule: {0}")]
    Schedule(String),
    #[error("{pending} orders waited {waited:?} for an outcome: the flow stopped answering")]
    Stalled { pending: usize, waited: Duration },
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
    records::client_config(&config.bootstrap, &config.client_properties)
}

/// A `read_committed` reader of the outcome and decision topics, positioned
/// at their current ends so it sees exactly this run's outcomes.
fn outcome_reader(config: &DriveConfig) -> Result<BaseConsumer, DriveError> {
    let namespace = &config.namespace;
    let reader: BaseConsumer = client(config)
        .set("group.id", "loadgen-outcomes")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for logical in OUTCOME_TOPICS.iter().chain(&DECISION_TOPICS) {
        let topic = namespace.physical(logical);
        let partitions = match records::partitions(&reader, &topic) {
            Err(records::ReadError::NoSuchTopic(topic)) => {
                return Err(DriveError::NoSuchTopic(topic))
            }
            found => found?,
        };
        for partition in partitions {
            let (_, high) =
                records::watermarks(&reader, &topic, partition, records::Patience::NEW_TOPIC)?;
            assignment.add_partition_offset(&topic, partition, Offset::Offset(high))?;
        }
    }
    reader.assign(&assignment)?;
    Ok(reader)
}

/// Sends `schedule` open-loop and times every order's outcome, with the
/// default options.
pub fn drive(
    config: &DriveConfig,
    schedule: Vec<ScheduledRecord>,
) -> Result<DriveReport, DriveError> {
    drive_with(
        config,
        &DriveOptions::default(),
        schedule.into_iter().map(Ok::<_, std::convert::Infallible>),
    )
}

/// What the sender thread hands back: (records sent, orders sent, first and
/// last order's intended ns, longest wait for a pending order).
type SenderResult = Result<(u64, u64, Option<(u64, u64)>, Duration), DriveError>;

/// Sends a streamed schedule (records in non-decreasing `at_ns`) open-loop,
/// as `options` say, and times every order's outcome. A schedule error stops
/// the sender and fails the run.
pub fn drive_with<S, E>(
    config: &DriveConfig,
    options: &DriveOptions,
    schedule: S,
) -> Result<DriveReport, DriveError>
where
    S: IntoIterator<Item = Result<ScheduledRecord, E>>,
    S::IntoIter: Send + 'static,
    E: std::fmt::Display,
{
    let namespace = &config.namespace;
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
    let topics: Vec<String> = ALL.iter().map(|t| namespace.physical(t)).collect();
    // The sender tells the reader when each order actually left; the reader
    // hands back a permit per outcome. Notes are bounded by the permits.
    let (sent_tx, sent_rx) = crossbeam_channel::unbounded::<SentOrder>();
    let (permit_tx, permit_rx) =
        crossbeam_channel::bounded::<()>(options.pending_orders_max.max(1));
    let sent_records = Arc::new(AtomicU64::new(0));
    let mut recorder = IntervalRecorder::new(options.interval)?;
    let started = SystemTime::now();
    let start_wall_ns = wall_ns();
    let start = Instant::now();
    let sender = {
        let sent_records = Arc::clone(&sent_records);
        let values = options.values.writer();
        let drain_timeout = config.drain_timeout;
        let schedule = schedule
            .into_iter()
            .map(|item| item.map_err(|e| DriveError::Schedule(e.to_string())));
        std::thread::Builder::new()
            .name("loadgen-send".into())
            .spawn(move || {
                send_schedule(SendContext {
                    producer,
                    topics,
                    values,
                    start,
                    start_wall_ns,
                    sent: sent_tx,
                    permits: permit_tx,
                    drain_timeout,
                    sent_records,
                    schedule,
                })
            })
            .map_err(|e| DriveError::Sender(e.to_string()))?
    };

    let progress = &options.progress;
    let mut progress_at_ns = 0u64;
    let mut actual_send_ns: HashMap<OrderId, u64> = HashMap::new();
    let mut done: HashMap<OrderId, EventKind> = HashMap::new();
    let mut steps: HashMap<OrderId, OrderSteps> = HashMap::new();
    let mut counts = Counts::default();
    let mut last_outcome_ns = 0u64;
    let mut sender_result: Option<SenderResult> = None;
    let mut sender = Some(sender);
    let mut drain_started: Option<Instant> = None;
    let mut send_elapsed = Duration::ZERO;
    let mut values = options.values.reader();
    loop {
        let now_ns = start.elapsed().as_nanos() as u64;
        if now_ns >= progress_at_ns {
            progress.update(sent_records.load(Ordering::Relaxed), counts.outcomes);
            progress_at_ns = now_ns + PROGRESS_UPDATE_MS * 1_000_000;
        }
        while let Ok((order, actual)) = sent_rx.try_recv() {
            actual_send_ns.insert(order, actual);
        }
        if sender.as_ref().is_some_and(|s| s.is_finished()) {
            if let Some(handle) = sender.take() {
                let result = handle
                    .join()
                    .map_err(|_| DriveError::Sender("panicked".into()))?;
                if let Err(e) = result {
                    return Err(e);
                }
                sender_result = Some(result);
                drain_started = Some(Instant::now());
                send_elapsed = start.elapsed();
                while let Ok((order, actual)) = sent_rx.try_recv() {
                    actual_send_ns.insert(order, actual);
                }
            }
        }
        if sender_result.is_some() && done.len() >= actual_send_ns.len() {
            break;
        }
        if drain_started.is_some_and(|d| d.elapsed() > config.drain_timeout) {
            break;
        }
        let Some(message) = reader.poll(Duration::from_millis(20)) else {
            // Nothing came back: still close finished intervals, so a stall
            // shows as empty intervals.
            recorder.tick(start.elapsed().as_nanos() as u64)?;
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
        let now_ns = start.elapsed().as_nanos() as u64;
        let Some(Ok(event)) = message.payload().map(|p| values.decode(p)) else {
            counts.undecodable += 1;
            continue;
        };
        let order = event.header().order_id;
        if !actual_send_ns.contains_key(&order) {
            // An outcome can overtake the sender's note; pick the note up first.
            while let Ok((o, actual)) = sent_rx.try_recv() {
                actual_send_ns.insert(o, actual);
            }
            if !actual_send_ns.contains_key(&order) {
                continue;
            }
        }
        let produced_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        let order_steps = steps.entry(order).or_default();
        order_steps.intended_ns = event.header().created_at_ns.0;
        match event.kind() {
            EventKind::PaymentCompleted => {
                order_steps.payment_ms = order_steps.payment_ms.or(produced_ms);
                continue;
            }
            EventKind::StockRejected => {
                order_steps.inventory_ms = order_steps.inventory_ms.or(produced_ms);
                continue;
            }
            EventKind::PaymentFailed => {
                order_steps.payment_ms = order_steps.payment_ms.or(produced_ms)
            }
            EventKind::StockUpdated => {
                order_steps.inventory_ms = order_steps.inventory_ms.or(produced_ms)
            }
            EventKind::PaymentRefunded => {
                order_steps.refund_ms = order_steps.refund_ms.or(produced_ms)
            }
            _ => continue,
        }
        if order_steps.outcome.is_none() {
            order_steps.outcome = produced_ms.map(|ms| (ms, now));
        }
        if done.insert(order, event.kind()).is_some() {
            counts.duplicate_outcomes += 1;
            continue;
        }
        // One order fewer pending: the sender may send another.
        let _ = permit_rx.try_recv();
        counts.outcome(event.kind());
        last_outcome_ns = now_ns;
        // Outputs carry their order's created_at_ns: its intended send time.
        let intended = event.header().created_at_ns.0;
        let actual = actual_send_ns.get(&order).copied().unwrap_or(intended);
        recorder.record(
            now_ns,
            now.saturating_sub(intended),
            now.saturating_sub(actual),
        )?;
    }
    // Unblocks a sender still waiting for a permit (it then fails the run).
    drop(permit_rx);
    if let Some(handle) = sender.take() {
        let result = handle
            .join()
            .map_err(|_| DriveError::Sender("panicked".into()))?;
        sender_result = Some(result);
        send_elapsed = start.elapsed();
    }
    let (events, orders, orders_intended_ns, pending_wait_max) = match sender_result {
        Some(result) => result?,
        None => (0, 0, None, Duration::ZERO),
    };
    let elapsed = start.elapsed();
    let recorded = recorder.finish(elapsed.as_nanos() as u64)?;
    let mut stages = StageLatencies::new()?;
    for order_steps in steps.values() {
        order_steps.record_into(&mut stages);
    }
    progress.update(events, counts.outcomes);
    progress.finish();
    Ok(DriveReport {
        events_sent: events,
        orders_sent: orders,
        outcomes: counts.outcomes,
        filled: counts.filled,
        rejected_funds: counts.rejected_funds,
        refunded: counts.refunded,
        missing: actual_send_ns
            .keys()
            .filter(|o| !done.contains_key(o))
            .count() as u64,
        duplicate_outcomes: counts.duplicate_outcomes,
        undecodable: counts.undecodable,
        send_elapsed,
        latency: recorded.total,
        intervals: recorded.intervals,
        started,
        elapsed,
        orders_intended_ns,
        last_outcome_ns,
        pending_wait_max,
        stages,
    })
}

/// Outcomes seen so far.
#[derive(Debug, Default)]
struct Counts {
    outcomes: u64,
    filled: u64,
    rejected_funds: u64,
    refunded: u64,
    duplicate_outcomes: u64,
    undecodable: u64,
}

impl Counts {
    fn outcome(&mut self, kind: EventKind) {
        self.outcomes += 1;
        match kind {
            EventKind::StockUpdated => self.filled += 1,
            EventKind::PaymentFailed => self.rejected_funds += 1,
            EventKind::PaymentRefunded => self.refunded += 1,
            _ => {}
        }
    }
}

/// Everything the sender thread owns.
struct SendContext<I> {
    producer: BaseProducer,
    /// Physical topic of each of `codecs::topics::ALL`, in that order.
    topics: Vec<String>,
    /// Encodes each event in its topic's form.
    values: ValueWriter,
    start: Instant,
    start_wall_ns: u64,
    sent: Sender<SentOrder>,
    permits: Sender<()>,
    drain_timeout: Duration,
    sent_records: Arc<AtomicU64>,
    schedule: I,
}

/// The sender thread.
fn send_schedule<I>(context: SendContext<I>) -> SenderResult
where
    I: Iterator<Item = Result<ScheduledRecord, DriveError>>,
{
    let SendContext {
        producer,
        topics,
        mut values,
        start,
        start_wall_ns,
        sent,
        permits,
        drain_timeout,
        sent_records,
        schedule,
    } = context;
    let mut events = 0u64;
    let mut orders = 0u64;
    let mut orders_intended_ns: Option<(u64, u64)> = None;
    let mut pending_wait_max = Duration::ZERO;
    // Fundings and replenishments sent but maybe not in the log yet.
    let mut reference_unacknowledged = false;
    for item in schedule {
        let mut item = item?;
        loop {
            let now = start.elapsed().as_nanos() as u64;
            if now >= item.at_ns {
                break;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_nanos((item.at_ns - now).min(200_000)));
        }
        let order = match &item.payload {
            Payload::Event(event) if event.kind() == EventKind::OrderCreated => {
                Some(event.header().order_id)
            }
            _ => None,
        };
        if order.is_some() && reference_unacknowledged {
            // The funding an order spends must be in the log before the
            // order: records of different topics and partitions carry no
            // order between them (librdkafka sends each partition's batch
            // when it is ready), and an engine reading both can only order
            // what the broker already holds; an order appended ahead of its
            // account's funding is rightly rejected (UnknownAccount), and
            // the audit then reports the scenario's plan broken.
            records::flush(&producer, SEND_FLUSH_TIMEOUT)?;
            reference_unacknowledged = false;
        }
        if order.is_some() {
            // At most `pending_orders_max` orders without an outcome: wait for
            // one to finish. The wait makes this order late, which its
            // corrected latency shows and its uncorrected one does not.
            let waiting = Instant::now();
            loop {
                match permits.send_timeout((), Duration::from_millis(1)) {
                    Ok(()) => break,
                    Err(SendTimeoutError::Timeout(())) => {
                        producer.poll(Duration::ZERO);
                        if waiting.elapsed() > drain_timeout {
                            return Err(DriveError::Stalled {
                                pending: permits.len(),
                                waited: waiting.elapsed(),
                            });
                        }
                    }
                    Err(SendTimeoutError::Disconnected(())) => {
                        return Err(DriveError::Sender(
                            "the outcome reader stopped while orders were pending".into(),
                        ))
                    }
                }
            }
            pending_wait_max = pending_wait_max.max(waiting.elapsed());
        }
        let topic = topic_index(item.topic)
            .and_then(|i| topics.get(i))
            .ok_or_else(|| DriveError::Schedule(format!("{} is not a flow topic", item.topic)))?;
        let payload: &[u8] = match &mut item.payload {
            Payload::Event(event) => {
                // Latency is measured from when the event was due, not when it left.
                stamp_created_at(event, TimestampNs(start_wall_ns + item.at_ns));
                let kind = event.kind();
                values
                    .encode(item.topic, event)
                    .map_err(|source| DriveError::Encode { kind, source })?
            }
            Payload::Raw(bytes) => bytes,
        };
        loop {
            // The note goes before the record: an outcome the reader meets
            // before its order's note is taken for another run's and
            // skipped, and a sender preempted between the send and a note
            // sent after it lost an order that way (CI: "lost 1"). A retry
            // after a full queue sends a newer note; the reader keeps the
            // last.
            if let Some(order) = order {
                let _ = sent.send((order, wall_ns()));
            }
            let record = BaseRecord::to(topic).key(&item.key).payload(payload);
            match producer.send(record) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if matches!(&item.payload, Payload::Event(event)
            if matches!(event.kind(), EventKind::AccountFunded | EventKind::StockReplenished))
        {
            reference_unacknowledged = true;
        }
        if order.is_some() {
            orders += 1;
            orders_intended_ns = Some(match orders_intended_ns {
                None => (item.at_ns, item.at_ns),
                Some((first, _)) => (first, item.at_ns),
            });
        }
        events += 1;
        sent_records.store(events, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
    }
    records::flush(&producer, SEND_FLUSH_TIMEOUT)?;
    Ok((events, orders, orders_intended_ns, pending_wait_max))
}

fn topic_index(topic: &str) -> Option<usize> {
    ALL.iter().position(|t| *t == topic)
}
