//! Traffic files: recorded or synthetic Kafka traffic that `loadgen` replays
//! (the crate root re-exports this module's items: `traffic::Record`, ...).
//!
//! # Format: `tradeflow-traffic` version 1, JSON Lines
//! Line 1 is a header object, every further line one record, in send order:
//!
//! ```text
//! {"format":"tradeflow-traffic","version":1,"source":"loadgen synth --seed 7","epoch_unix_ns":null,"records":3}
//! {"t_ns":0,"topic":"payment-service.account.funded","key":"0000000000000001","event":{"type":"account.funded",...}}
//! {"t_ns":1000000,"topic":"order-service.order.created","partition":3,"key":"0000000000000001","event":{...}}
//! {"t_ns":2000000,"topic":"order-service.order.created","key":null,"value":"00000000650102"}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `t_ns` | send time, nanoseconds after the first record (non-decreasing through the file) |
//! | `topic` | Kafka topic |
//! | `partition` | optional; absent means "let the producer's partitioner choose by key" |
//! | `key` | record key as lower-case hex, or `null` for a record without key |
//! | `event` | the value as a tradeflow event in codecs' JSON edge form ([`codecs::Event::to_json`]) |
//! | `value` | instead of `event`: the raw value bytes as hex, for records that are not valid events (poison records replay as poison) |
//!
//! Readers ignore header and record fields they do not know; a change that
//! alters the meaning of a known field bumps `version`, and readers refuse
//! versions they do not know.
//!
//! # Why JSON Lines and not a binary form
//! - Operators read, grep, diff, cut and hand-edit traffic (drop a poison
//!   record, retime a burst) with ordinary tools; `zstd` or `gzip` compress it
//!   5–10× if size matters.
//! - The file outlives wire versions: the event JSON is the stable edge form
//!   that `codecs` validates on read, so a file recorded today replays after
//!   the rkyv archive layout or schema ids change. A binary dump of frames
//!   would pin the replay to one wire version.
//! - Parsing costs ~1 µs per record (serde_json), far below the per-send cost
//!   of a Kafka produce, and the reader runs ahead of the send schedule.
//!
//! Must never: hold more than one record in memory while reading or writing
//! (files may be larger than memory), accept a line longer than
//! [`TRAFFIC_LINE_BYTES_MAX`], or reorder records.

pub mod replay;

use std::io::{BufRead, Read as _, Write};

use codecs::{Event, EventHeader, TimestampNs};
use serde::{Deserialize, Serialize};

/// `format` field of the header line.
pub const TRAFFIC_FORMAT: &str = "tradeflow-traffic";
/// The version this code writes and the only one it reads.
pub const TRAFFIC_VERSION: u32 = 1;
/// Longest line accepted, bytes (an event's JSON is a few hundred bytes).
pub const TRAFFIC_LINE_BYTES_MAX: usize = 64 * 1024;

/// Why a traffic file could not be written or read. Read errors name the
/// 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the file is empty: a traffic file starts with a header line")]
    Empty,
    #[error("line 1: not a traffic header: {reason}")]
    Header { reason: String },
    #[error("line 1: format is {found:?}, expected {TRAFFIC_FORMAT:?}")]
    Format { found: String },
    #[error(
        "line 1: version {found} is not supported (this loadgen reads version {TRAFFIC_VERSION})"
    )]
    Version { found: u32 },
    #[error("line {line}: {reason}")]
    Record { line: u64, reason: String },
    #[error("line {line}: longer than {TRAFFIC_LINE_BYTES_MAX} bytes")]
    LineTooLong { line: u64 },
    #[error("line {line}: t_ns {t_ns} is before the previous record's {previous_t_ns}; records must be in send order")]
    OutOfOrder {
        line: u64,
        t_ns: u64,
        previous_t_ns: u64,
    },
    #[error("record {index}: {reason}")]
    Write { index: u64, reason: String },
}

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`TRAFFIC_FORMAT`].
    pub format: String,
    /// [`TRAFFIC_VERSION`] when written by this code.
    pub version: u32,
    /// What produced the file: a command line, a cluster and time range.
    #[serde(default)]
    pub source: String,
    /// Wall-clock time of `t_ns = 0`, nanoseconds since the Unix epoch, if known.
    #[serde(default)]
    pub epoch_unix_ns: Option<u64>,
    /// How many records follow, if the writer knew it up front (advisory).
    #[serde(default)]
    pub records: Option<u64>,
}

impl Header {
    /// A version-1 header.
    pub fn new(source: impl Into<String>) -> Header {
        Header {
            format: TRAFFIC_FORMAT.to_string(),
            version: TRAFFIC_VERSION,
            source: source.into(),
            epoch_unix_ns: None,
            records: None,
        }
    }
}

/// A record's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A tradeflow event (sent in the wire form, encoded at send time).
    Event(Event),
    /// Bytes that are not a valid event, sent as they are.
    Raw(Vec<u8>),
}

/// One record of traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Send time, nanoseconds after the file's first record.
    pub t_ns: u64,
    pub topic: String,
    /// `None`: the producer's partitioner chooses by key.
    pub partition: Option<i32>,
    /// `None`: a record without key.
    pub key: Option<Vec<u8>>,
    pub payload: Payload,
}

impl Record {
    /// The event, if the payload is one.
    pub fn event(&self) -> Option<&Event> {
        match &self.payload {
            Payload::Event(event) => Some(event),
            Payload::Raw(_) => None,
        }
    }
}

/// A record line as it is on disk.
#[derive(Serialize, Deserialize)]
struct Line {
    t_ns: u64,
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    key: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Hex>,
}

/// Bytes as lower-case hex in JSON.
struct Hex(Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        from_hex(&text).map(Hex).map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Bytes of a hex string (either case).
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("hex of odd length {}", text.len()));
    }
    let digit = |c: u8, at: usize| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("not a hex digit at {at}: {:?}", char::from(c))),
        }
    };
    text.as_bytes()
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| Ok(digit(pair[0], 2 * i)? << 4 | digit(pair[1], 2 * i + 1)?))
        .collect()
}

/// Writes a traffic file record by record.
#[derive(Debug)]
pub struct TrafficWriter<W: Write> {
    out: W,
    written: u64,
    last_t_ns: u64,
    line: Vec<u8>,
}

impl<W: Write> TrafficWriter<W> {
    /// Writes the header line.
    pub fn new(mut out: W, header: &Header) -> Result<Self, TrafficError> {
        let mut line = serde_json::to_vec(header).map_err(|e| TrafficError::Header {
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        out.write_all(&line)
            .map_err(|source| TrafficError::Io { line: 1, source })?;
        Ok(TrafficWriter {
            out,
            written: 0,
            last_t_ns: 0,
            line,
        })
    }

    /// Appends one record; its `t_ns` must not be before the previous one's.
    pub fn write(&mut self, record: &Record) -> Result<(), TrafficError> {
        let index = self.written;
        if record.t_ns < self.last_t_ns {
            return Err(TrafficError::Write {
                index,
                reason: format!(
                    "t_ns {} is before the previous record's {}",
                    record.t_ns, self.last_t_ns
                ),
            });
        }
        let (event, value) = match &record.payload {
            Payload::Event(event) => (Some(*event), None),
            Payload::Raw(bytes) => (None, Some(Hex(bytes.clone()))),
        };
        let line = Line {
            t_ns: record.t_ns,
            topic: record.topic.clone(),
            partition: record.partition,
            key: record.key.clone().map(Hex),
            event,
            value,
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &line).map_err(|e| TrafficError::Write {
            index,
            reason: e.to_string(),
        })?;
        if self.line.len() > TRAFFIC_LINE_BYTES_MAX {
            return Err(TrafficError::Write {
                index,
                reason: format!(
                    "line of {} bytes exceeds {TRAFFIC_LINE_BYTES_MAX}",
                    self.line.len()
                ),
            });
        }
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(|source| TrafficError::Io {
                line: index + 2,
                source,
            })?;
        self.written += 1;
        self.last_t_ns = record.t_ns;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W, TrafficError> {
        self.out.flush().map_err(|source| TrafficError::Io {
            line: self.written + 1,
            source,
        })?;
        Ok(self.out)
    }
}

/// Reads a traffic file one record at a time (bounded memory: one line).
#[derive(Debug)]
pub struct TrafficReader<R: BufRead> {
    input: R,
    header: Header,
    /// 1-based number of the last line read.
    line: u64,
    last_t_ns: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> TrafficReader<R> {
    /// Reads and checks the header line.
    pub fn new(mut input: R) -> Result<Self, TrafficError> {
        let mut buf = Vec::new();
        if !read_line(&mut input, &mut buf, 1)? {
            return Err(TrafficError::Empty);
        }
        let header: Header = serde_json::from_slice(&buf).map_err(|e| TrafficError::Header {
            reason: e.to_string(),
        })?;
        if header.format != TRAFFIC_FORMAT {
            return Err(TrafficError::Format {
                found: header.format,
            });
        }
        if header.version != TRAFFIC_VERSION {
            return Err(TrafficError::Version {
                found: header.version,
            });
        }
        Ok(TrafficReader {
            input,
            header,
            line: 1,
            last_t_ns: 0,
            buf,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn next_record(&mut self) -> Result<Option<Record>, TrafficError> {
        loop {
            self.line += 1;
            if !read_line(&mut self.input, &mut self.buf, self.line)? {
                return Ok(None);
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = self.line;
            let parsed: Line =
                serde_json::from_slice(&self.buf).map_err(|e| TrafficError::Record {
                    line,
                    reason: e.to_string(),
                })?;
            let payload = match (parsed.event, parsed.value) {
                (Some(event), None) => Payload::Event(event),
                (None, Some(Hex(bytes))) => Payload::Raw(bytes),
                (Some(_), Some(_)) => {
                    return Err(TrafficError::Record {
                        line,
                        reason: "has both \"event\" and \"value\"; a record has one".into(),
                    })
                }
                (None, None) => {
                    return Err(TrafficError::Record {
                        line,
                        reason: "has neither \"event\" nor \"value\"".into(),
                    })
                }
            };
            if parsed.t_ns < self.last_t_ns {
                return Err(TrafficError::OutOfOrder {
                    line,
                    t_ns: parsed.t_ns,
                    previous_t_ns: self.last_t_ns,
                });
            }
            self.last_t_ns = parsed.t_ns;
            return Ok(Some(Record {
                t_ns: parsed.t_ns,
                topic: parsed.topic,
                partition: parsed.partition,
                key: parsed.key.map(|Hex(bytes)| bytes),
                payload,
            }));
        }
    }
}

impl<R: BufRead> Iterator for TrafficReader<R> {
    type Item = Result<Record, TrafficError>;

    /// The next record; after the first error, `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads one line (without its newline) into `buf`; false at the end of input.
fn read_line<R: BufRead>(
    input: &mut R,
    buf: &mut Vec<u8>,
    line: u64,
) -> Result<bool, TrafficError> {
    buf.clear();
    let limit = (TRAFFIC_LINE_BYTES_MAX + 1) as u64;
    let read = input
        .by_ref()
        .take(limit)
        .read_until(b'\n', buf)
        .map_err(|source| TrafficError::Io { line, source })?;
    if read == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > TRAFFIC_LINE_BYTES_MAX {
        return Err(TrafficError::LineTooLong { line });
    }
    Ok(true)
}

/// Sets `created_at_ns`, which the end-to-end latency is measured from; the
/// sender stamps it with the intended send time as wall-clock time.
pub fn stamp_created_at(event: &mut Event, at: TimestampNs) {
    header_mut(event).created_at_ns = at;
}

/// The header of any event, for rewriting.
pub fn header_mut(event: &mut Event) -> &mut EventHeader {
    match event {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codecs::{AccountFunded, AccountId, EventHeader, EventId, Money, OrderId, TimestampNs};

    fn funded(id: u128, account: u64) -> Event {
        Event::AccountFunded(AccountFunded {
            header: EventHeader {
                event_id: EventId(id),
                order_id: OrderId::NONE,
                causation_id: EventId::NONE,
                created_at_ns: TimestampNs(5),
            },
            account: AccountId(account),
            amount: Money(100_000),
        })
    }

    fn sample() -> Vec<Record> {
        vec![
            Record {
                t_ns: 0,
                topic: "payment-service.account.funded".into(),
                partition: None,
                key: Some(1u64.to_be_bytes().to_vec()),
                payload: Payload::Event(funded(1, 1)),
            },
            Record {
                t_ns: 1_000,
                topic: "payment-service.account.funded".into(),
                partition: Some(3),
                key: None,
                payload: Payload::Event(funded(2, 2)),
            },
            Record {
                t_ns: 1_000,
                topic: "order-service.order.created".into(),
                partition: None,
                key: Some(b"\x00\xffpoison".to_vec()),
                payload: Payload::Raw(vec![0, 0, 0, 0, 0x65, 1, 2]),
            },
        ]
    }

    fn write(records: &[Record]) -> Result<Vec<u8>, TrafficError> {
        let mut header = Header::new("test");
        header.records = Some(records.len() as u64);
        let mut writer = TrafficWriter::new(Vec::new(), &header)?;
        for record in records {
            writer.write(record)?;
        }
        writer.finish()
    }

    #[test]
    fn records_round_trip() -> Result<(), TrafficError> {
        let records = sample();
        let bytes = write(&records)?;
        let reader = TrafficReader::new(&bytes[..])?;
        assert_eq!(reader.header().source, "test");
        assert_eq!(reader.header().records, Some(3));
        let back = reader.collect::<Result<Vec<_>, _>>()?;
        assert_eq!(back, records);
        Ok(())
    }

    #[test]
    fn the_format_is_what_the_doc_says() -> Result<(), TrafficError> {
        let bytes = write(&sample())?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                r#"{"format":"tradeflow-traffic","version":1,"source":"test","epoch_unix_ns":null,"records":3}"#
            )
        );
        let first = lines.next().unwrap_or_default();
        assert!(
            first.starts_with(r#"{"t_ns":0,"topic":"payment-service.account.funded","key":"0000000000000001","event":{"type":"account.funded""#),
            "{first}"
        );
        let poison = lines.nth(1).unwrap_or_default();
        assert!(
            poison.ends_with(r#""key":"00ff706f69736f6e","value":"00000000650102"}"#),
            "{poison}"
        );
        Ok(())
    }

    #[test]
    fn bad_input_names_its_line() -> Result<(), TrafficError> {
        let good = write(&sample())?;
        let text = String::from_utf8_lossy(&good).into_owned();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = r#"{"t_ns":5,"topic":"x","key":"zz","event":null}"#;
        let bad = lines.join("\n");
        let result: Result<Vec<_>, _> = TrafficReader::new(bad.as_bytes())?.collect();
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("line 3: "), "{message}");

        let mut lines: Vec<&str> = text.lines().collect();
        lines[3] = r#"{"t_ns":999,"topic":"x","key":null,"value":"00"}"#;
        let unordered = lines.join("\n");
        let result: Result<Vec<_>, _> = TrafficReader::new(unordered.as_bytes())?.collect();
        assert!(
            matches!(
                result,
                Err(TrafficError::OutOfOrder {
                    line: 4,
                    t_ns: 999,
                    previous_t_ns: 1_000
                })
            ),
            "{result:?}"
        );

        let wrong_version = r#"{"format":"tradeflow-traffic","version":2}"#;
        assert!(matches!(
            TrafficReader::new(wrong_version.as_bytes()),
            Err(TrafficError::Version { found: 2 })
        ));
        assert!(matches!(
            TrafficReader::new(&b""[..]),
            Err(TrafficError::Empty)
        ));
        assert!(matches!(
            TrafficReader::new(&b"{\"format\":\"pcap\",\"version\":1}\n"[..]),
            Err(TrafficError::Format { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_line_too_long_is_refused_without_reading_it_whole() -> Result<(), TrafficError> {
        let mut bytes = write(&sample()[..1])?;
        bytes.extend(std::iter::repeat_n(b' ', TRAFFIC_LINE_BYTES_MAX * 3));
        let result: Result<Vec<_>, _> = TrafficReader::new(&bytes[..])?.collect();
        assert!(
            matches!(result, Err(TrafficError::LineTooLong { line: 3 })),
            "{result:?}"
        );
        Ok(())
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Ok(bytes));
        assert!(from_hex("abc").is_err());
        assert!(from_hex("0g").is_err());
        assert_eq!(from_hex("ABcd"), Ok(vec![0xab, 0xcd]));
    }
}
