//! Dead-letter inspection and replay: what `tradeflow dlq list` and
//! `tradeflow dlq replay` do.
//!
//! Owns: reading `<topic>.dlq` back into [`DeadLetter`]s (the cause from the
//! headers the engine wrote, the original decoded where it still decodes), and
//! sending chosen ones back to their source topic after a fix.
//! Must never: change a record's bytes on replay (the stages decide again, with
//! the same ids, so a replayed record is processed once), or delete anything
//! from a dead-letter topic (it is the record of what happened).

use std::fmt;

use engine::kafka::{partition_count, publish_and_wait, read_to_end, ReadRecord};
use engine::partitioner::partition_for;
use engine::stage::dlq_headers;
use engine::topics::dead_letter_topic;
use engine::{OutRecord, PartitionId};

/// Header a replayed record carries: `<dlq topic>/<partition>/<offset>`.
pub const REPLAYED_FROM_HEADER: &str = "tradeflow.replayed-from";

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Kafka(#[from] engine::PortError),
    #[error("dead letter {dlq}/{partition}/{offset} has no {header} header; it was not written by tradeflow")]
    MissingHeader {
        dlq: String,
        partition: i32,
        offset: i64,
        header: &'static str,
    },
    #[error("--offset {0}: expected PARTITION:OFFSET")]
    BadOffset(String),
    #[error(
        "dead letter {dlq}/{partition}/{offset} names {header:?} as its source, which \
         {dlq} does not dead-letter for; it was not written by this deployment"
    )]
    ForeignSource {
        dlq: String,
        partition: i32,
        offset: i64,
        header: String,
    },
}

/// One record of a dead-letter topic, with its cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub dlq_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub class: String,
    pub reason: String,
    pub original_topic: String,
    pub original_partition: String,
    pub original_offset: String,
    pub service: String,
    pub attempts: String,
}

impl DeadLetter {
    /// The Kafka topic this dead letter came from, to send it back to. The
    /// header holds the name the stage saw (logical, without the
    /// deployment's topic namespace); the dead-letter topic `<source>.dlq`
    /// holds the physical one, so the source is that, checked against the
    /// header.
    pub fn source_topic(&self) -> Result<String, DlqError> {
        if self.original_topic.is_empty() {
            return Err(DlqError::MissingHeader {
                dlq: self.dlq_topic.clone(),
                partition: self.partition,
                offset: self.offset,
                header: dlq_headers::TOPIC,
            });
        }
        match self.dlq_topic.strip_suffix(".dlq") {
            Some(source)
                if source == self.original_topic
                    || source
                        .strip_suffix(self.original_topic.as_str())
                        .is_some_and(|namespace| namespace.ends_with('.')) =>
            {
                Ok(source.to_string())
            }
            _ => Err(DlqError::ForeignSource {
                dlq: self.dlq_topic.clone(),
                partition: self.partition,
                offset: self.offset,
                header: self.original_topic.clone(),
            }),
        }
    }

    fn from_record(record: &ReadRecord<'_>) -> DeadLetter {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        DeadLetter {
            dlq_topic: record.topic.to_string(),
            partition: record.partition.0,
            offset: record.offset.0,
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec),
            class: header(dlq_headers::CLASS),
            reason: header(dlq_headers::REASON),
            original_topic: header(dlq_headers::TOPIC),
            original_partition: header(dlq_headers::PARTITION),
            original_offset: header(dlq_headers::OFFSET),
            service: header(dlq_headers::SERVICE),
            attempts: header(dlq_headers::ATTEMPTS),
        }
    }

    /// The original event in its JSON form, when the bytes still decode.
    pub fn event_json(&self) -> Option<String> {
        let event = codecs::decode(self.payload.as_deref()?).ok()?;
        event.to_event().to_json().ok()
    }

    /// A machine-readable form for scripts (one JSON object per record).
    pub fn to_json(&self) -> String {
        let payload_hex = self
            .payload
            .as_deref()
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>());
        serde_json::json!({
            "dlq": { "topic": self.dlq_topic, "partition": self.partition, "offset": self.offset },
            "error": { "class": self.class, "reason": self.reason, "service": self.service, "attempts": self.attempts },
            "original": { "topic": self.original_topic, "partition": self.original_partition, "offset": self.original_offset },
            "event": self.event_json().and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok()),
            "payload_hex": payload_hex,
        })
        .to_string()
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}/{}/{}  {} [{}] from {}/{}/{} by {} (attempts {})",
            self.dlq_topic,
            self.partition,
            self.offset,
            self.reason,
            self.class,
            self.original_topic,
            self.original_partition,
            self.original_offset,
            self.service,
            self.attempts
        )?;
        match (self.event_json(), &self.payload) {
            (Some(json), _) => writeln!(f, "    event {json}"),
            (None, Some(bytes)) => {
                let shown: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
                let more = if bytes.len() > 32 { "…" } else { "" };
                writeln!(f, "    {} bytes {shown}{more}", bytes.len())
            }
            (None, None) => writeln!(f, "    no value"),
        }
    }
}

/// `topic` as given (a source topic or its dead-letter topic) → the dead-letter topic.
pub fn dlq_topic_of(topic: &str) -> String {
    if topic.ends_with(".dlq") {
        topic.to_string()
    } else {
        dead_letter_topic(topic)
    }
}

/// Every dead letter of `topic`, oldest first per partition.
pub fn list(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topic: &str,
) -> Result<Vec<DeadLetter>, DlqError> {
    let dlq = dlq_topic_of(topic);
    let mut letters = Vec::new();
    read_to_end(
        bootstrap,
        client_properties,
        &[dlq.as_str()],
        &mut |record| {
            letters.push(DeadLetter::from_record(record));
        },
    )?;
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

/// Which dead letters to replay; every given condition must hold.
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    pub reason_contains: Option<String>,
    pub class: Option<String>,
    /// Exact dead letters as (partition, offset).
    pub offsets: Vec<(i32, i64)>,
}

impl ReplayFilter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.reason_contains
            .as_deref()
            .is_none_or(|s| letter.reason.contains(s))
            && self.class.as_deref().is_none_or(|c| letter.class == c)
            && (self.offsets.is_empty()
                || self.offsets.contains(&(letter.partition, letter.offset)))
    }
}

/// Parses `PARTITION:OFFSET`.
pub fn parse_offset(text: &str) -> Result<(i32, i64), DlqError> {
    let (p, o) = text
        .split_once(':')
        .ok_or_else(|| DlqError::BadOffset(text.to_string()))?;
    Ok((
        p.trim()
            .parse()
            .map_err(|_| DlqError::BadOffset(text.to_string()))?,
        o.trim()
            .parse()
            .map_err(|_| DlqError::BadOffset(text.to_string()))?,
    ))
}

/// What a replay did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub considered: u64,
    pub replayed: u64,
    pub targets: Vec<(String, i32, i32, i64)>,
}

/// Sends the dead letters of `topic` that `filter` selects back to their
/// original topic, unchanged, in the partition their key belongs to (as the
/// engine places keys: a record dead-lettered for arriving on the wrong
/// partition lands on the right one), each marked with where it came from.
pub fn replay(
    bootstrap: &str,
    client_properties: &[(String, String)],
    topic: &str,
    filter: &ReplayFilter,
    dry_run: bool,
) -> Result<ReplaySummary, DlqError> {
    let letters = list(bootstrap, client_properties, topic)?;
    let mut summary = ReplaySummary {
        considered: letters.len() as u64,
        ..ReplaySummary::default()
    };
    let mut chosen = Vec::new();
    for letter in letters.iter().filter(|l| filter.matches(l)) {
        let source = letter.source_topic()?;
        let partitions = partition_count(bootstrap, client_properties, &source)?;
        let partition = match (&letter.key, partitions > 0) {
            (Some(key), true) => partition_for(key, partitions).0,
            _ => letter.original_partition.parse().unwrap_or(0),
        };
        summary
            .targets
            .push((source.clone(), partition, letter.partition, letter.offset));
        chosen.push((letter, source, partition));
    }
    if dry_run || chosen.is_empty() {
        return Ok(summary);
    }
    let origins: Vec<String> = chosen
        .iter()
        .map(|(l, _, _)| format!("{}/{}/{}", l.dlq_topic, l.partition, l.offset))
        .collect();
    let headers: Vec<[(&str, &[u8]); 1]> = origins
        .iter()
        .map(|o| [(REPLAYED_FROM_HEADER, o.as_bytes())])
        .collect();
    let records: Vec<OutRecord<'_>> = chosen
        .iter()
        .zip(&headers)
        .map(|((letter, source, partition), headers)| OutRecord {
            topic: source,
            partition: PartitionId(*partition),
            key: letter.key.as_deref(),
            payload: letter.payload.as_deref(),
            headers,
        })
        .collect();
    summary.replayed = publish_and_wait(bootstrap, client_properties, &records)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, class: &str, partition: i32, offset: i64) -> DeadLetter {
        DeadLetter {
            dlq_topic: "t.dlq".into(),
            partition,
            offset,
            key: None,
            payload: Some(vec![1, 2, 3]),
            class: class.into(),
            reason: reason.into(),
            original_topic: "t".into(),
            original_partition: partition.to_string(),
            original_offset: "9".into(),
            service: "payment".into(),
            attempts: "1".into(),
        }
    }

    #[test]
    fn a_dead_letter_goes_back_to_its_namespaced_source() {
        let plain = letter("r", "user-data", 0, 1);
        assert_eq!(plain.source_topic().ok().as_deref(), Some("t"));
        let namespaced = DeadLetter {
            dlq_topic: "desk-a.t.dlq".into(),
            ..plain.clone()
        };
        assert_eq!(namespaced.source_topic().ok().as_deref(), Some("desk-a.t"));
        let foreign = DeadLetter {
            dlq_topic: "desk-at.dlq".into(),
            ..plain.clone()
        };
        assert!(matches!(
            foreign.source_topic(),
            Err(DlqError::ForeignSource { .. })
        ));
        let headerless = DeadLetter {
            original_topic: String::new(),
            ..plain
        };
        assert!(matches!(
            headerless.source_topic(),
            Err(DlqError::MissingHeader { .. })
        ));
    }

    #[test]
    fn filters_combine_reason_class_and_offsets() {
        let bad_magic = letter("magic byte is 0x07, expected 0x00", "user-data", 0, 4);
        let misrouted = letter("misrouted: key belongs to partition 2", "user-data", 1, 7);
        let any = ReplayFilter::default();
        assert!(any.matches(&bad_magic) && any.matches(&misrouted));
        let by_reason = ReplayFilter {
            reason_contains: Some("misrouted".into()),
            ..ReplayFilter::default()
        };
        assert!(!by_reason.matches(&bad_magic) && by_reason.matches(&misrouted));
        let by_offset = ReplayFilter {
            offsets: vec![(0, 4)],
            ..ReplayFilter::default()
        };
        assert!(by_offset.matches(&bad_magic) && !by_offset.matches(&misrouted));
        let by_class = ReplayFilter {
            class: Some("internal".into()),
            ..ReplayFilter::default()
        };
        assert!(!by_class.matches(&bad_magic));
    }

    #[test]
    fn offsets_parse_or_say_what_is_wrong() {
        assert_eq!(parse_offset("3:120").ok(), Some((3, 120)));
        assert!(parse_offset("3-120").is_err());
        assert!(parse_offset("x:1").is_err());
    }

    #[test]
    fn undecodable_letters_print_their_bytes() {
        let text = letter("empty frame", "user-data", 0, 1).to_string();
        assert!(text.contains("3 bytes 010203"), "{text}");
        assert!(letter("r", "c", 0, 1)
            .to_json()
            .contains("\"payload_hex\":\"010203\""));
    }

    #[test]
    fn topics_resolve_to_their_dead_letter_topic() {
        assert_eq!(
            dlq_topic_of("order-service.order.created"),
            "order-service.order.created.dlq"
        );
        assert_eq!(
            dlq_topic_of("order-service.order.created.dlq"),
            "order-service.order.created.dlq"
        );
    }
}
