//! Reading a topic to its end and publishing records and waiting for their
//! acknowledgements, outside any shard: the reader and publisher the
//! services (`tradeflow audit`, `dlq`, the registry) and tools use.
//! Must never: join a consumer group or commit offsets (it reads by
//! assignment), or hand out an rdkafka type.

use super::*;

/// One record read by [`read_to_end`].
#[derive(Clone, Copy, Debug)]
pub struct ReadRecord<'a> {
    pub topic: &'a str,
    pub partition: PartitionId,
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Record headers as (name, value) pairs.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Reads every partition of `topics` from the beginning to its end at the time
/// of the call, as a `read_committed` consumer outside any group, handing each
/// record to `visit`. For audits, dead-letter inspection and tests; never on
/// a shard's data path. Returns the number of records read.
pub fn read_to_end(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topics: &[&str],
    visit: &mut dyn FnMut(&ReadRecord<'_>),
) -> Result<u64, PortError> {
    let timeout = Duration::from_millis(KAFKA_CALL_TIMEOUT_MS);
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in client_properties {
        config.set(key, value);
    }
    let reader: BaseConsumer<EndAwareContext> = config
        .set("group.id", "tradeflow-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("max.partition.fetch.bytes", RESTORE_FETCH_BYTES.to_string())
        .create_with_context(EndAwareContext)
        .map_err(|e| kafka_error("creating a reader", e))?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = BTreeSet::new();
    // Where each partition ends: its end when the read began. An EOF at or
    // past it finishes the partition; the end is not asked again at each
    // EOF (a round trip per partition, and on librdkafka's mock cluster a
    // query made while the reader fetches waited out its whole 30 s timeout,
    // twice, at the end of every `tradeflow demo`).
    let mut ends = BTreeMap::new();
    for topic in topics {
        let metadata = reader
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| kafka_error("reading metadata", e))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = watermarks_retrying(&reader, topic, p.id())?;
                if high > low {
                    assignment
                        .add_partition_offset(topic, p.id(), KafkaOffset::Beginning)
                        .map_err(|e| kafka_error("assigning", e))?;
                    remaining.insert((topic.to_string(), p.id()));
                    ends.insert((topic.to_string(), p.id()), high);
                }
            }
        }
    }
    if remaining.is_empty() {
        return Ok(0);
    }
    reader
        .assign(&assignment)
        .map_err(|e| kafka_error("assigning", e))?;
    let mut count = 0u64;
    let mut last_progress = Instant::now();
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    while !remaining.is_empty() {
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // EOF carries only the partition number; look up which
                // topic's position reached its end.
                let positions = reader.position().map_err(|e| kafka_error("position", e))?;
                for element in positions.elements() {
                    if element.partition() != partition {
                        continue;
                    }
                    let key = (element.topic().to_string(), partition);
                    if let (KafkaOffset::Offset(position), Some(end)) =
                        (element.offset(), ends.get(&key))
                    {
                        if position >= *end {
                            remaining.remove(&key);
                        }
                    }
                }
            }
            Some(Err(e)) => warn!(error = %e, "read error (retrying)"),
            Some(Ok(message)) => {
                last_progress = Instant::now();
                headers.clear();
                if let Some(h) = message.headers() {
                    use rdkafka::message::Headers;
                    for header in h.iter() {
                        headers.push((
                            header.key.to_string(),
                            header.value.unwrap_or_default().to_vec(),
                        ));
                    }
                }
                let borrowed: Vec<(&str, &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                visit(&ReadRecord {
                    topic: message.topic(),
                    partition: PartitionId(message.partition()),
                    offset: Offset(message.offset()),
                    key: message.key(),
                    payload: message.payload(),
                    headers: &borrowed,
                });
                count += 1;
            }
        }
        if last_progress.elapsed() > Duration::from_millis(RESTORE_STALL_TIMEOUT_MS) {
            return Err(PortError::Kafka {
                op: "reading to the end",
                message: format!("no progress; still reading {remaining:?}"),
                retryable: true,
            });
        }
    }
    Ok(count)
}

/// Sends `records` with an idempotent `acks=all` producer and waits until every
/// one is acknowledged. For tools (dead-letter replay), never for shards.
pub fn publish_and_wait(
    bootstrap: &str,
    client_properties: &[(String, String)],
    records: &[OutRecord<'_>],
) -> Result<u64, PortError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in client_properties {
        config.set(key, value);
    }
    let failures = Arc::new(AtomicU64::new(0));
    let (reason_tx, reasons) = crossbeam_channel::bounded(16);
    let producer: BaseProducer<ShardProducerContext> = config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(ShardProducerContext {
            failures: Arc::clone(&failures),
            last_failure: reason_tx,
        })
        .map_err(|e| kafka_error("creating a publisher", e))?;
    for record in records {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(record.topic)
            .partition(record.partition.0)
            .headers(headers);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(payload) = record.payload {
            base = base.payload(payload);
        }
        producer
            .send(base)
            .map_err(|(e, _)| kafka_error("publishing", e))?;
        producer.poll(Duration::ZERO);
    }
    await_deliveries(
        &producer,
        Duration::from_millis(KAFKA_CALL_TIMEOUT_MS),
        None,
    )?;
    let failed = failures.load(Ordering::Acquire);
    if failed > 0 {
        let reason = reasons.try_recv().ok();
        let message = format!(
            "{failed} record(s) not delivered, e.g. {}",
            reason.as_ref().map(|r| r.text.as_str()).unwrap_or_default()
        );
        return Err(if reason.is_some_and(|r| r.denied) {
            PortError::NotAuthorized {
                op: "publishing",
                message,
            }
        } else {
            PortError::Kafka {
                op: "publishing",
                message,
                retryable: true,
            }
        });
    }
    Ok(records.len() as u64)
}
