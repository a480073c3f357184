//! `ping`: open-loop produce → consume round trips through a Kafka topic, the
//! floor under every end-to-end latency tradeflow can reach on a given cluster.
//!
//! Owns: one producer thread that sends on a fixed schedule and one consumer
//! that timestamps each record's return and feeds an
//! [`IntervalRecorder`](crate::interval::IntervalRecorder) (whole-run and
//! per-interval histograms for the report).
//! Must never: wait for a reply before the next scheduled send (closed loop), or
//! count a record from an earlier run (each run stamps its own id).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::interval::{IntervalError, IntervalLog, IntervalRecorder, INTERVAL_MS_DEFAULT};
use crate::latency::{LatencyError, LatencyRecorder};
use crate::progress::{Progress, PROGRESS_UPDATE_MS};

/// Bytes of the record a ping sends: run id, sequence, intended and actual send time.
const PING_BYTES: usize = 32;
/// How long the consumer waits for stragglers after the last scheduled send.
const DRAIN_GRACE_MS: u64 = 10_000;

/// What to ping and how hard.
#[derive(Debug, Clone)]
pub struct PingConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub replication: i32,
    pub rate_per_s: u64,
    pub duration: Duration,
    /// Extra librdkafka properties for both clients (for example security settings).
    pub client_properties: Vec<(String, String)>,
}

/// How a ping run is observed, beside what it sends ([`PingConfig`]).
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Length of one interval of the interval log.
    pub interval: Duration,
    /// Counts replies received out of those scheduled.
    pub progress: Progress,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            interval: Duration::from_millis(INTERVAL_MS_DEFAULT),
            progress: Progress::hidden(),
        }
    }
}

/// What a ping run measured.
#[derive(Debug)]
pub struct PingReport {
    pub sent: u64,
    pub received: u64,
    pub offered_rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    /// The whole run's histograms.
    pub latency: LatencyRecorder,
    /// Per-interval histograms, from the run's epoch (the first scheduled send).
    pub intervals: IntervalLog,
    /// Wall-clock time of the epoch.
    pub started: SystemTime,
    /// From the epoch to the end of measuring.
    pub elapsed: Duration,
}

/// Why a ping run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {0}: {1:?}")]
    CreateTopic(String, RDKafkaErrorCode),
    #[error("topic {0} has no partitions in the cluster's metadata")]
    NoPartitions(String),
    #[error("rate must be at least 1 record/s")]
    ZeroRate,
    #[error(transparent)]
    Latency(#[from] LatencyError),
    #[error(transparent)]
    Interval(#[from] IntervalError),
    #[error("the warm-up record never came back from topic {0} (30 s)")]
    WarmUp(String),
    #[error("the producer thread panicked")]
    ProducerPanicked,
}

impl PingConfig {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
        config
    }
}

/// Runs one ping: creates the topic if missing, starts reading at its end, sends
/// `rate_per_s × duration` records on schedule and times each one's return.
pub fn run(config: &PingConfig) -> Result<PingReport, PingError> {
    run_with(config, &PingOptions::default())
}

/// [`run`], observed as `options` say.
pub fn run_with(config: &PingConfig, options: &PingOptions) -> Result<PingReport, PingError> {
    if config.rate_per_s == 0 {
        return Err(PingError::ZeroRate);
    }
    ensure_topic(config)?;
    let consumer = reader_at_end(config)?;

    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let total = config
        .rate_per_s
        .saturating_mul(config.duration.as_secs().max(1));
    let sent = Arc::new(AtomicU64::new(0));

    let producer: BaseProducer = config
        .client_config()
        .set("linger.ms", "0")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    warm_up(&producer, &consumer, &config.topic, run_id)?;
    let mut recorder = IntervalRecorder::new(options.interval)?;
    let progress = &options.progress;
    progress.set_total(total);
    let started = SystemTime::now();
    let epoch = Instant::now();
    let interval_ns = 1_000_000_000 / config.rate_per_s;
    let topic = config.topic.clone();
    let sent_by_producer = Arc::clone(&sent);
    let sender = std::thread::Builder::new()
        .name("ping-send".into())
        .spawn(move || -> Result<(), rdkafka::error::KafkaError> {
            let mut payload = [0u8; PING_BYTES];
            for seq in 0..total {
                let intended_ns = seq * interval_ns;
                // Open loop: sleep only while the next send is not yet due; a late
                // loop sends immediately and the lateness counts as latency.
                loop {
                    let now_ns = epoch.elapsed().as_nanos() as u64;
                    if now_ns >= intended_ns {
                        break;
                    }
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_nanos((intended_ns - now_ns).min(500_000)));
                }
                let key = (seq % 1024).to_be_bytes();
                loop {
                    let actual_ns = epoch.elapsed().as_nanos() as u64;
                    payload[0..8].copy_from_slice(&run_id.to_be_bytes());
                    payload[8..16].copy_from_slice(&seq.to_be_bytes());
                    payload[16..24].copy_from_slice(&intended_ns.to_be_bytes());
                    payload[24..32].copy_from_slice(&actual_ns.to_be_bytes());
                    match producer.send(BaseRecord::to(&topic).key(&key).payload(&payload)) {
                        Ok(()) => break,
                        Err((e, _))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(1));
                        }
                        Err((e, _)) => return Err(e),
                    }
                }
                sent_by_producer.fetch_add(1, Ordering::Release);
                producer.poll(Duration::ZERO);
            }
            Ok(records::flush(&producer, Duration::from_secs(30))?)
        })
        .map_err(|_| PingError::ProducerPanicked)?;

    let mut received = 0u64;
    let mut progress_at_ns = 0u64;
    let deadline = config.duration + Duration::from_millis(DRAIN_GRACE_MS);
    while received < total && epoch.elapsed() < deadline {
        let polled = consumer.poll(Duration::from_millis(100));
        let now_ns = epoch.elapsed().as_nanos() as u64;
        if now_ns >= progress_at_ns {
            progress.set(received);
            progress_at_ns = now_ns + PROGRESS_UPDATE_MS * 1_000_000;
        }
        let Some(result) = polled else {
            // Nothing came back: still close finished intervals, so a stall
            // shows as empty intervals.
            recorder.tick(now_ns)?;
            continue;
        };
        let message = result?;
        let Some(bytes) = message.payload().filter(|p| p.len() == PING_BYTES) else {
            continue;
        };
        let field = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_be_bytes(word)
        };
        if field(0) != run_id {
            continue;
        }
        recorder.record(
            now_ns,
            now_ns.saturating_sub(field(2)),
            now_ns.saturating_sub(field(3)),
        )?;
        received += 1;
    }
    let elapsed = epoch.elapsed();
    let recorded = recorder.finish(elapsed.as_nanos() as u64)?;
    progress.set(received);
    progress.finish();
    sender.join().map_err(|_| PingError::ProducerPanicked)??;
    Ok(PingReport {
        sent: sent.load(Ordering::Acquire),
        received,
        offered_rate_per_s: config.rate_per_s as f64,
        achieved_rate_per_s: received as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: recorded.total,
        intervals: recorded.intervals,
        started,
        elapsed,
    })
}

/// One unmeasured round trip, so that connection set-up, the idempotent
/// producer's id and the consumer's first fetch are not charged to the run.
fn warm_up(
    producer: &BaseProducer,
    consumer: &BaseConsumer,
    topic: &str,
    run_id: u64,
) -> Result<(), PingError> {
    let marker = run_id.wrapping_add(1).to_be_bytes();
    producer
        .send(BaseRecord::to(topic).key(&marker[..]).payload(&marker[..]))
        .map_err(|(e, _)| e)?;
    records::flush(producer, Duration::from_secs(30)).map_err(rdkafka::error::KafkaError::from)?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            if message?.payload() == Some(&marker[..]) {
                return Ok(());
            }
        }
    }
    Err(PingError::WarmUp(topic.to_string()))
}

fn ensure_topic(config: &PingConfig) -> Result<(), PingError> {
    // Look before creating: an existing topic needs no admin request (and some
    // clusters, librdkafka's mock among them, do not answer CreateTopics).
    let probe: BaseConsumer = config.client_config().create()?;
    let metadata = probe.fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in block_on(admin.create_topics([&topic], &options))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(PingError::CreateTopic(name, code)),
        }
    }
    Ok(())
}

/// A consumer assigned to every partition at its current high watermark, so it
/// sees exactly the records sent after this call.
fn reader_at_end(config: &PingConfig) -> Result<BaseConsumer, PingError> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", "loadgen-ping")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut partitions = Vec::new();
    let started = Instant::now();
    while partitions.is_empty() && started.elapsed() < Duration::from_secs(30) {
        let metadata = consumer.fetch_metadata(Some(&config.topic), Duration::from_secs(5))?;
        partitions = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if partitions.is_empty() {
        return Err(PingError::NoPartitions(config.topic.clone()));
    }
    let mut ends = HashMap::new();
    for partition in &partitions {
        let (_, high) = records::watermarks(
            &consumer,
            &config.topic,
            *partition,
            records::Patience::NEW_TOPIC,
        )?;
        ends.insert(*partition, high);
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, high) in ends {
        assignment.add_partition_offset(&config.topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}
