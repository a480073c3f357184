//! The TOML file form of a core map: reading it and writing it (where a key
//! sits in the text is `position`'s).
//!
//! Owns: the serde shapes of the file (unknown keys rejected), `"a-b"` range
//! expansion, conversion of file values (any `i64`) into the typed sections
//! with keyed problems, [`NodeTuning::load`], [`NodeTuning::from_toml_str`]
//! and the writer behind [`NodeTuning::to_toml_string`].
//! Must never: decide cross-key rules (two shards on one core, overlapping
//! partitions, busy-poll vs client cores); those live in `validate.rs` so that
//! maps built in code obey exactly the same rules as maps read from files.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::{Key, Location, Problem, ProblemKind, TuningError};
use crate::ids::{runs, CoreId, NodeName, PartitionId};
use crate::limits::{
    CORES_MAX, NODE_SESSION_MS_DEFAULT, NODE_SESSION_MS_MAX, NODE_SESSION_MS_MIN,
    ORDER_RETENTION_MS_LIMIT, PARK_US_DEFAULT, PARTITIONS_MAX, STANDBY_REPLICAS_MAX,
};
use crate::model::{
    ApiAuth, ApiMetricsAccess, ApiSection, ApiTls, ChangelogLayout, ClientThreads, CommitPolicy,
    CommitTiming, Guarantee, IdleStrategy, NodeSection, NodeTuning, Origin, Ownership,
    OwnershipMode, RetryPolicy, RuntimeKnobs, Sections, ShardPlacement, StateSection,
};
use crate::position::key_at_offset;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    node: FileNode,
    ownership: FileOwnership,
    #[serde(default, rename = "shard")]
    shards: Vec<FileShard>,
    #[serde(default)]
    runtime: FileRuntime,
    #[serde(default)]
    commit: FileCommit,
    #[serde(default)]
    retry: FileRetry,
    // `[kafka]` (its `security` table) is read and checked by `security.rs`
    // (`KafkaSecurity::load`); the placement ignores it, and the writer
    // leaves it out.
    #[serde(default)]
    #[allow(dead_code)]
    kafka: Option<toml::Value>,
    #[serde(default)]
    api: FileApi,
    #[serde(default)]
    state: FileState,
    // `[wire]` is read and checked by `wire.rs` (`WireSettings::load`),
    // which knows the flow's topics from its caller; the writer leaves it out.
    #[serde(default)]
    #[allow(dead_code)]
    wire: Option<toml::Value>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    order_retention: Option<String>,
    standby_replicas: Option<i64>,
    changelog_layout: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    auth: Option<FileApiAuth>,
    tls: Option<FileApiTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiAuth {
    tokens_file: PathBuf,
    #[serde(default)]
    metrics: ApiMetricsAccess,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: String,
}

// Numbers are read as i64 and range-checked here, so that a negative core or a
// huge partition count is reported with its key and the valid range instead of
// serde's "expected usize".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOwnership {
    mode: OwnershipMode,
    partitions: i64,
    #[serde(default)]
    session_ms: Option<i64>,
    #[serde(default)]
    liveness_addr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShard {
    core: i64,
    #[serde(default)]
    partitions: Option<Vec<IdSpec>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRuntime {
    idle: Option<FileIdle>,
    park_us: Option<i64>,
    client_threads: Option<FileClientThreads>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FileIdle {
    BusyPoll,
    Park,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCommit {
    interval_ms: Option<i64>,
    on_drain: Option<bool>,
    guarantee: Option<Guarantee>,
    policy: Option<CommitTiming>,
    target_latency_ms: Option<i64>,
    min_interval_ms: Option<i64>,
    busy_percent_max: Option<i64>,
    transactions_per_s_max: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    attempts_max: Option<i64>,
    deadline_ms: Option<i64>,
    backoff_min_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
}

/// One entry of a partition or core list: `5` or `"8-15"` (or `"5"`).
enum IdSpec {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IdSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdSpecVisitor;
        impl Visitor<'_> for IdSpecVisitor {
            type Value = IdSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number like 5 or a range like \"8-15\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdSpec, E> {
                Ok(IdSpec::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdSpec, E> {
                Ok(IdSpec::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdSpec, E> {
                Ok(IdSpec::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(IdSpecVisitor)
    }
}

/// `"unpinned"`, `"shard-core"` or `{ cores = [...] }`. Hand-written rather
/// than `#[serde(untagged)]` so a typo gets "unknown variant, expected ..."
/// instead of "did not match any variant".
enum FileClientThreads {
    Unpinned,
    ShardCore,
    Cores(Vec<IdSpec>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClientCores {
    cores: Vec<IdSpec>,
}

const CLIENT_THREADS_NAMES: &[&str] = &["unpinned", "shard-core"];

impl<'de> Deserialize<'de> for FileClientThreads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClientThreadsVisitor;
        impl<'de> Visitor<'de> for ClientThreadsVisitor {
            type Value = FileClientThreads;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"unpinned\", \"shard-core\" or a table { cores = [...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileClientThreads, E> {
                match v {
                    "unpinned" => Ok(FileClientThreads::Unpinned),
                    "shard-core" => Ok(FileClientThreads::ShardCore),
                    other => Err(E::unknown_variant(other, CLIENT_THREADS_NAMES)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileClientThreads, A::Error> {
                let table =
                    FileClientCores::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileClientThreads::Cores(table.cores))
            }
        }
        deserializer.deserialize_any(ClientThreadsVisitor)
    }
}

/// Parses and validates `text`; `path` only labels errors.
pub(crate) fn parse(text: &str, path: Option<PathBuf>) -> Result<NodeTuning, TuningError> {
    let form: FileForm = toml::from_str(text).map_err(|error| {
        let offset = error.span().map(|span| span.start);
        let key = offset.and_then(|offset| key_at_offset(text, offset));
        TuningError::Syntax {
            path: path.clone(),
            at: offset.map(|offset| Location::of_offset(text, offset)),
            message: match key {
                Some(key) => format!("{key}: {}", error.message()),
                None => error.message().to_owned(),
            },
        }
    })?;
    let api = read_api(&form.api, path.as_deref());
    let mut state_problems = Vec::new();
    let state = read_state(&form.state, form.ownership.mode, &mut state_problems);
    let origin = Origin {
        path,
        text: Arc::from(text),
    };
    let (sections, mut read_problems) = into_sections(form);
    read_problems.extend(state_problems);
    let mut tuning = NodeTuning::build(sections, read_problems, Some(origin))?;
    tuning.api = api;
    tuning.state = state;
    Ok(tuning)
}

/// `[state]`, defaulted when absent; a retention that is not a duration in
/// range is reported under its key.
fn read_state(file: &FileState, mode: OwnershipMode, problems: &mut Vec<Problem>) -> StateSection {
    let mut state = StateSection::default();
    if let Some(value) = file.standby_replicas {
        let key = Key::at("state").dot("standby_replicas");
        match u32::try_from(value) {
            Ok(0) => {}
            Ok(n) if n <= STANDBY_REPLICAS_MAX && mode == OwnershipMode::ConsumerGroup => {
                state.standby_replicas = n;
            }
            Ok(n) if n <= STANDBY_REPLICAS_MAX => {
                problems.push(Problem::new(
                    key,
                    ProblemKind::StandbyInCoreMap { value: n },
                ));
            }
            _ => problems.push(Problem::new(
                key,
                ProblemKind::StandbyReplicasOutOfRange { value },
            )),
        }
    }
    if let Some(text) = &file.changelog_layout {
        match ChangelogLayout::parse(text) {
            Some(layout) => state.changelog_layout = layout,
            None => problems.push(Problem::new(
                Key::at("state").dot("changelog_layout"),
                ProblemKind::ChangelogLayout { text: text.clone() },
            )),
        }
    }
    if let Some(text) = &file.order_retention {
        match parse_retention_ms(text) {
            Some(ms) => state.order_retention_ms = ms,
            None => problems.push(Problem::new(
                Key::at("state").dot("order_retention"),
                ProblemKind::OrderRetention { text: text.clone() },
            )),
        }
    }
    state
}

/// `"24h"`, `"90m"`, `"30s"`, `"500ms"`, `"7d"` as milliseconds: a positive
/// whole number and a unit, at most `ORDER_RETENTION_MS_LIMIT`.
pub(crate) fn parse_retention_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let ms = number.checked_mul(unit_ms)?;
    (1..=ORDER_RETENTION_MS_LIMIT).contains(&ms).then_some(ms)
}

/// The largest unit that states `ms` exactly.
fn retention_text(ms: u64) -> String {
    for (unit, unit_ms) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % unit_ms == 0 {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

/// `[api]`, with relative paths taken from the core map's directory: a map
/// and its token file and certificates are deployed side by side, and the
/// process's working directory should not change which files it reads.
fn read_api(file: &FileApi, map: Option<&std::path::Path>) -> ApiSection {
    let base = map.and_then(std::path::Path::parent);
    let resolve = |path: &PathBuf| match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.clone(),
    };
    ApiSection {
        auth: file.auth.as_ref().map(|auth| ApiAuth {
            tokens_file: resolve(&auth.tokens_file),
            metrics: auth.metrics,
        }),
        tls: file.tls.as_ref().map(|tls| ApiTls {
            cert_file: resolve(&tls.cert_file),
            key_file: resolve(&tls.key_file),
        }),
    }
}

/// Converts file values into typed sections, reporting what the types cannot
/// hold (a negative core, a bad range, a bad name, `park_us` without parking).
/// Always returns sections, with stand-ins where a value could not be read,
/// so the typed rules still run and every problem is reported at once;
/// [`NodeTuning::build`] skips the keys reported here.
fn into_sections(form: FileForm) -> (Sections, Vec<Problem>) {
    let mut problems = Vec::new();

    let name = NodeName::new(form.node.name.clone()).unwrap_or_else(|reason| {
        problems.push(Problem::new(
            Key::at("node").dot("name"),
            ProblemKind::NodeName {
                name: form.node.name,
                reason,
            },
        ));
        NodeName::placeholder()
    });

    let count = u32::try_from(form.ownership.partitions)
        .ok()
        .filter(|c| (1..=PARTITIONS_MAX).contains(c));
    if count.is_none() {
        problems.push(Problem::new(
            Key::at("ownership").dot("partitions"),
            ProblemKind::PartitionCountOutOfRange {
                value: form.ownership.partitions,
            },
        ));
    }

    let session_ms = match form.ownership.session_ms {
        None => NODE_SESSION_MS_DEFAULT,
        Some(value) => match u32::try_from(value) {
            Ok(ms) if (NODE_SESSION_MS_MIN..=NODE_SESSION_MS_MAX).contains(&ms) => ms,
            _ => {
                problems.push(Problem::new(
                    Key::at("ownership").dot("session_ms"),
                    ProblemKind::NodeSessionOutOfRange { value },
                ));
                NODE_SESSION_MS_DEFAULT
            }
        },
    };

    let liveness_addr = match &form.ownership.liveness_addr {
        None => None,
        Some(text) => {
            let key = Key::at("ownership").dot("liveness_addr");
            match text.parse::<std::net::SocketAddr>() {
                Ok(addr) if form.ownership.mode == OwnershipMode::ConsumerGroup => Some(addr),
                Ok(_) => {
                    problems.push(Problem::new(key, ProblemKind::LivenessInCoreMap));
                    None
                }
                Err(_) => {
                    problems.push(Problem::new(
                        key,
                        ProblemKind::LivenessAddr { text: text.clone() },
                    ));
                    None
                }
            }
        }
    };

    let mut shards = Vec::with_capacity(form.shards.len());
    for (index, shard) in form.shards.into_iter().enumerate() {
        let key = Key::shard(index).dot("partitions");
        // With no valid count, ranges are clamped to the largest count allowed
        // and nothing is reported out of range: the count's problem says enough.
        let max = i64::from(count.unwrap_or(PARTITIONS_MAX)) - 1;
        let out_of_range =
            |partition| count.map(|count| ProblemKind::PartitionOutOfRange { partition, count });
        let mut partitions = Vec::new();
        for id in expand(
            shard.partitions.unwrap_or_default(),
            max,
            &key,
            &mut problems,
            out_of_range,
        ) {
            match i32::try_from(id) {
                Ok(id) => partitions.push(PartitionId(id)),
                Err(_) => {
                    if let Some(kind) = out_of_range(id) {
                        problems.push(Problem::new(key.clone(), kind));
                    }
                }
            }
        }
        let core = match usize::try_from(shard.core) {
            Ok(core) => CoreId(core),
            Err(_) => {
                problems.push(Problem::new(
                    Key::shard(index).dot("core"),
                    ProblemKind::CoreOutOfRange { core: shard.core },
                ));
                // Out of the CPU range, so it can collide with no real core.
                CoreId(CORES_MAX + index)
            }
        };
        shards.push(ShardPlacement { core, partitions });
    }

    let park_us_key = Key::at("runtime").dot("park_us");
    let idle = match (form.runtime.idle, form.runtime.park_us) {
        (Some(FileIdle::BusyPoll), park_us) => {
            if park_us.is_some() {
                problems.push(Problem::new(park_us_key, ProblemKind::ParkUsWithBusyPoll));
            }
            IdleStrategy::BusyPoll
        }
        (Some(FileIdle::Park) | None, None) => IdleStrategy::Park {
            park_us: PARK_US_DEFAULT,
        },
        (Some(FileIdle::Park) | None, Some(value)) => IdleStrategy::Park {
            park_us: u32::try_from(value).unwrap_or_else(|_| {
                problems.push(Problem::new(
                    park_us_key,
                    ProblemKind::ParkUsOutOfRange { value },
                ));
                PARK_US_DEFAULT
            }),
        },
    };

    let client_threads = match form.runtime.client_threads {
        None | Some(FileClientThreads::Unpinned) => ClientThreads::Unpinned,
        Some(FileClientThreads::ShardCore) => ClientThreads::ShardCore,
        Some(FileClientThreads::Cores(specs)) => {
            let key = Key::at("runtime").dot("client_threads").dot("cores");
            let max = i64::try_from(CORES_MAX).unwrap_or(i64::MAX) - 1;
            let out_of_range = |core| Some(ProblemKind::CoreOutOfRange { core });
            let mut cores = Vec::new();
            for id in expand(specs, max, &key, &mut problems, out_of_range) {
                match usize::try_from(id) {
                    Ok(id) => cores.push(CoreId(id)),
                    Err(_) => problems.push(Problem::new(
                        key.clone(),
                        ProblemKind::CoreOutOfRange { core: id },
                    )),
                }
            }
            ClientThreads::Cores(cores)
        }
    };

    let defaults = CommitPolicy::default();
    let guarantee = form.commit.guarantee.unwrap_or(defaults.guarantee);
    let interval_ms = match form.commit.interval_ms {
        None => defaults.interval_ms,
        Some(value) => u32::try_from(value).unwrap_or_else(|_| {
            problems.push(Problem::new(
                Key::at("commit").dot("interval_ms"),
                ProblemKind::CommitIntervalOutOfRange { value, guarantee },
            ));
            defaults.interval_ms
        }),
    };

    // Out-of-range values of the adaptive keys are reported by the typed
    // rules (validate.rs); one that does not even fit a u32 is reported here.
    let mut adaptive_key = |name: &'static str, value: Option<i64>, default: u32| match value {
        None => default,
        Some(value) => u32::try_from(value).unwrap_or_else(|_| {
            problems.push(Problem::new(
                Key::at("commit").dot(name),
                ProblemKind::CommitKeyOutOfRange {
                    value,
                    range: crate::validate::commit_key_range(name, interval_ms),
                },
            ));
            default
        }),
    };
    let target_latency_ms = adaptive_key(
        "target_latency_ms",
        form.commit.target_latency_ms,
        // A short interval left at its default target commits that often anyway.
        defaults.target_latency_ms.min(interval_ms).max(1),
    );
    let min_interval_ms = adaptive_key(
        "min_interval_ms",
        form.commit.min_interval_ms,
        defaults.min_interval_ms.min(interval_ms),
    );
    let busy_percent_max = adaptive_key(
        "busy_percent_max",
        form.commit.busy_percent_max,
        defaults.busy_percent_max,
    );
    let transactions_per_s_max = adaptive_key(
        "transactions_per_s_max",
        form.commit.transactions_per_s_max,
        defaults.transactions_per_s_max,
    );

    let retry = read_retry(&form.retry, &mut problems);

    let sections = (
        NodeSection { name },
        Ownership {
            mode: form.ownership.mode,
            // 0 stands in for a count that could not be read; it is reported
            // above, and the typed rules skip range checks without a count.
            partitions: count.unwrap_or(0),
            session_ms,
            liveness_addr,
        },
        shards,
        RuntimeKnobs {
            idle,
            client_threads,
        },
        CommitPolicy {
            interval_ms,
            on_drain: form.commit.on_drain.unwrap_or(defaults.on_drain),
            guarantee,
            timing: form.commit.policy.unwrap_or(defaults.timing),
            target_latency_ms,
            min_interval_ms,
            busy_percent_max,
            transactions_per_s_max,
        },
        retry,
    );
    (sections, problems)
}

/// `[retry]`, each key defaulted when absent. A value no `u32` holds is
/// reported here and stands in as 0, which every retry rule refuses on that
/// key, so [`NodeTuning::build`] neither repeats it nor relates it to the
/// other keys.
fn read_retry(file: &FileRetry, problems: &mut Vec<Problem>) -> RetryPolicy {
    let defaults = RetryPolicy::default();
    let mut read = |name: &'static str,
                    value: Option<i64>,
                    default: u32,
                    out_of_range: fn(i64) -> ProblemKind| {
        match value {
            None => default,
            Some(value) => u32::try_from(value).unwrap_or_else(|_| {
                problems.push(Problem::new(
                    Key::at("retry").dot(name),
                    out_of_range(value),
                ));
                0
            }),
        }
    };
    RetryPolicy {
        attempts_max: read(
            "attempts_max",
            file.attempts_max,
            defaults.attempts_max,
            |value| ProblemKind::RetryAttemptsOutOfRange { value },
        ),
        deadline_ms: read(
            "deadline_ms",
            file.deadline_ms,
            defaults.deadline_ms,
            |value| ProblemKind::RetryDeadlineOutOfRange { value },
        ),
        backoff_min_ms: read(
            "backoff_min_ms",
            file.backoff_min_ms,
            defaults.backoff_min_ms,
            |value| ProblemKind::RetryBackoffOutOfRange { value },
        ),
        backoff_max_ms: read(
            "backoff_max_ms",
            file.backoff_max_ms,
            defaults.backoff_max_ms,
            |value| ProblemKind::RetryBackoffOutOfRange { value },
        ),
    }
}

/// Expands numbers and `"a-b"` ranges, keeping the order given. Numbers pass
/// through as written (the typed rules range-check them); a range reaching
/// past `max` is reported as `out_of_range(last)` (unless that is `None`) and
/// clamped, so `"0-2000000000"` costs one problem, not two billion entries.
/// Duplicates are kept so the typed rules can name them.
fn expand(
    specs: Vec<IdSpec>,
    max: i64,
    key: &Key,
    problems: &mut Vec<Problem>,
    out_of_range: impl Fn(i64) -> Option<ProblemKind>,
) -> Vec<i64> {
    let mut out = Vec::new();
    for spec in specs {
        match spec {
            IdSpec::Number(n) => out.push(n),
            IdSpec::Text(text) => match parse_range(&text) {
                Some((first, last)) => {
                    if last > max {
                        if let Some(kind) = out_of_range(last) {
                            problems.push(Problem::new(key.clone(), kind));
                        }
                    }
                    out.extend(first..=last.min(max));
                }
                None => problems.push(Problem::new(key.clone(), ProblemKind::BadRange { text })),
            },
        }
    }
    out
}

/// `"8-15"` → (8, 15); `"5"` → (5, 5). `None` unless `first <= last`, both
/// non-negative.
fn parse_range(text: &str) -> Option<(i64, i64)> {
    let text = text.trim();
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text, text),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse::<i64>().ok()?, last.parse::<i64>().ok()?);
    (first <= last).then_some((first, last))
}

/// Writes `tuning` as a complete core map file (every optional key explicit).
pub(crate) fn write(tuning: &NodeTuning) -> String {
    // Writing to a String cannot fail; `let _ =` keeps that out of the API.
    let mut out = String::new();
    let _ = writeln!(out, "[node]");
    let _ = writeln!(out, "name = \"{}\"", tuning.node.name);
    let _ = writeln!(out);
    let _ = writeln!(out, "[ownership]");
    let _ = writeln!(out, "mode = \"{}\"", tuning.ownership.mode);
    let _ = writeln!(out, "partitions = {}", tuning.ownership.partitions);
    if tuning.ownership.session_ms != NODE_SESSION_MS_DEFAULT {
        let _ = writeln!(out, "session_ms = {}", tuning.ownership.session_ms);
    }
    if let Some(addr) = tuning.ownership.liveness_addr {
        let _ = writeln!(out, "liveness_addr = \"{addr}\"");
    }
    for shard in &tuning.shards {
        let _ = writeln!(out);
        let _ = writeln!(out, "[[shard]]");
        let _ = writeln!(out, "core = {}", shard.core);
        if tuning.ownership.mode == OwnershipMode::CoreMap {
            let _ = writeln!(
                out,
                "partitions = [{}]",
                list_text(shard.partitions.iter().map(|p| i64::from(p.0)))
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "[runtime]");
    match tuning.runtime.idle {
        IdleStrategy::BusyPoll => {
            let _ = writeln!(out, "idle = \"busy-poll\"");
        }
        IdleStrategy::Park { park_us } => {
            let _ = writeln!(out, "idle = \"park\"");
            let _ = writeln!(out, "park_us = {park_us}");
        }
    }
    let _ = match &tuning.runtime.client_threads {
        ClientThreads::Unpinned => writeln!(out, "client_threads = \"unpinned\""),
        ClientThreads::ShardCore => writeln!(out, "client_threads = \"shard-core\""),
        ClientThreads::Cores(cores) => writeln!(
            out,
            "client_threads = {{ cores = [{}] }}",
            list_text(cores.iter().map(|c| i64::try_from(c.0).unwrap_or(i64::MAX)))
        ),
    };
    let _ = writeln!(out);
    let _ = writeln!(out, "[commit]");
    let _ = writeln!(out, "interval_ms = {}", tuning.commit.interval_ms);
    let _ = writeln!(out, "on_drain = {}", tuning.commit.on_drain);
    let _ = writeln!(out, "guarantee = \"{}\"", tuning.commit.guarantee);
    let _ = writeln!(out, "policy = \"{}\"", tuning.commit.timing);
    let _ = writeln!(
        out,
        "target_latency_ms = {}",
        tuning.commit.target_latency_ms
    );
    let _ = writeln!(out, "min_interval_ms = {}", tuning.commit.min_interval_ms);
    let _ = writeln!(out, "busy_percent_max = {}", tuning.commit.busy_percent_max);
    let _ = writeln!(
        out,
        "transactions_per_s_max = {}",
        tuning.commit.transactions_per_s_max
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "[state]");
    let _ = writeln!(
        out,
        "order_retention = \"{}\"",
        retention_text(tuning.state.order_retention_ms)
    );
    if tuning.state.standby_replicas > 0 {
        let _ = writeln!(out, "standby_replicas = {}", tuning.state.standby_replicas);
    }
    if tuning.state.changelog_layout != ChangelogLayout::default() {
        let _ = writeln!(
            out,
            "changelog_layout = \"{}\"",
            tuning.state.changelog_layout
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "[retry]");
    let _ = writeln!(out, "attempts_max = {}", tuning.retry.attempts_max);
    let _ = writeln!(out, "deadline_ms = {}", tuning.retry.deadline_ms);
    let _ = writeln!(out, "backoff_min_ms = {}", tuning.retry.backoff_min_ms);
    let _ = writeln!(out, "backoff_max_ms = {}", tuning.retry.backoff_max_ms);
    if let Some(auth) = &tuning.api.auth {
        let _ = writeln!(out);
        let _ = writeln!(out, "[api.auth]");
        let _ = writeln!(out, "tokens_file = {}", toml_path(&auth.tokens_file));
        let _ = writeln!(out, "metrics = \"{}\"", auth.metrics);
    }
    if let Some(tls) = &tuning.api.tls {
        let _ = writeln!(out);
        let _ = writeln!(out, "[api.tls]");
        let _ = writeln!(out, "cert_file = {}", toml_path(&tls.cert_file));
        let _ = writeln!(out, "key_file = {}", toml_path(&tls.key_file));
    }
    out
}

/// A path as a TOML string (quoted and escaped by toml itself).
fn toml_path(path: &std::path::Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// `0, 1, "4-9", 12`: runs of three or more as quoted ranges, the rest as
/// numbers.
fn list_text(ids: impl IntoIterator<Item = i64>) -> String {
    let mut items = Vec::new();
    for (first, last) in runs(ids) {
        if last - first >= 2 {
            items.push(format!("\"{first}-{last}\""));
        } else {
            items.extend((first..=last).map(|id| id.to_string()));
        }
    }
    items.join(", ")
}

impl NodeTuning {
    /// Reads, parses and validates a core map file. The machine is not
    /// checked yet: call [`NodeTuning::validate_against`] on the node that
    /// runs it.
    pub fn load(path: impl AsRef<Path>) -> Result<NodeTuning, TuningError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TuningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let tuning = parse(&text, Some(path.to_path_buf()))?;
        tracing::debug!(
            path = %path.display(),
            node = %tuning.node.name,
            mode = %tuning.ownership.mode,
            shards = tuning.shards.len(),
            "core map loaded"
        );
        Ok(tuning)
    }

    /// Parses and validates a core map held in memory; errors carry line and
    /// column but no path.
    pub fn from_toml_str(text: &str) -> Result<NodeTuning, TuningError> {
        parse(text, None)
    }

    /// Writes the map back as TOML that [`NodeTuning::from_toml_str`] reads
    /// into an equal map, with every optional key spelled out and partition
    /// runs compressed to `"a-b"`.
    pub fn to_toml_string(&self) -> String {
        write(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_or_are_refused() {
        assert_eq!(parse_range("8-15"), Some((8, 15)));
        assert_eq!(parse_range(" 8 - 15 "), Some((8, 15)));
        assert_eq!(parse_range("5"), Some((5, 5)));
        assert_eq!(parse_range("15-8"), None);
        assert_eq!(parse_range("-3"), None);
        assert_eq!(parse_range("a-b"), None);
        assert_eq!(parse_range("1-2-3"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn lists_compress_runs_of_three_or_more() {
        assert_eq!(list_text([0, 2, 4]), "0, 2, 4");
        assert_eq!(list_text([0, 1, 5, 6, 7, 8]), "0, 1, \"5-8\"");
    }
}

#[cfg(test)]
mod syntax_tests {
    use super::*;

    const VALID: &str = "[node]\nname = \"n\"\n[ownership]\nmode = \"core-map\"\npartitions = 2\n[[shard]]\ncore = 0\npartitions = [0, 1]\n";

    fn syntax_error(text: &str) -> (Option<Location>, String) {
        match NodeTuning::from_toml_str(text) {
            Err(TuningError::Syntax { at, message, .. }) => (at, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn bad_syntax_reports_line_and_column() {
        let (at, message) = syntax_error(&format!("{VALID}[runtime\nidle = \"park\"\n"));
        assert_eq!(at.map(|at| at.line), Some(9), "{message}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (at, message) = syntax_error(&VALID.replace("core = 0", "core = \"zero\""));
        assert_eq!(at.map(|at| at.line), Some(7), "{message}");
        assert!(message.starts_with("shard[0].core: "), "{message}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let (at, message) = syntax_error(&format!("{VALID}[runtime]\nparkus = 5\n"));
        assert_eq!(at.map(|at| at.line), Some(10), "{message}");
        assert!(message.contains("parkus"), "{message}");
        let (_, message) = syntax_error(&format!("{VALID}[runtme]\n"));
        assert!(message.contains("runtme"), "{message}");
    }

    #[test]
    fn unknown_enum_values_list_the_choices() {
        let (_, message) = syntax_error(&format!("{VALID}[runtime]\nidle = \"spin\"\n"));
        assert!(message.contains("busy-poll"), "{message}");
        let (_, message) =
            syntax_error(&format!("{VALID}[runtime]\nclient_threads = \"pinned\"\n"));
        assert!(message.starts_with("runtime.client_threads: "), "{message}");
        assert!(message.contains("shard-core"), "{message}");
        let (_, message) = syntax_error(&format!(
            "{VALID}[runtime]\nclient_threads = {{ core = [1] }}\n"
        ));
        assert!(message.contains("cores"), "{message}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let (_, message) = syntax_error("[node]\nname = \"n\"\n");
        assert!(message.contains("ownership"), "{message}");
        let (_, message) = syntax_error(&VALID.replace("core = 0\n", ""));
        assert!(message.contains("core"), "{message}");
    }

    #[test]
    fn loading_reports_the_path() {
        let path =
            std::env::temp_dir().join(format!("tradeflow-tuning-{}-bad.toml", std::process::id()));
        std::fs::write(&path, format!("{VALID}[commit]\ninterval_ms = \"soon\"\n"))
            .expect("temp file written");
        let error = NodeTuning::load(&path).expect_err("refused");
        let _ = std::fs::remove_file(&path);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}:10:", path.display())),
            "{text}"
        );
        assert!(text.contains("commit.interval_ms"), "{text}");

        let missing = std::env::temp_dir().join("tradeflow-tuning-no-such-file.toml");
        assert!(matches!(
            NodeTuning::load(&missing),
            Err(TuningError::Read { .. })
        ));
    }

    #[test]
    fn written_maps_read_back_equal() {
        let tuning = NodeTuning::from_toml_str(VALID).expect("valid");
        let written = tuning.to_toml_string();
        let again = NodeTuning::from_toml_str(&written).expect("written maps are valid");
        assert_eq!(tuning, again, "{written}");
    }

    #[test]
    fn the_retry_section_is_written_in_full_and_reads_back_equal() {
        let tuning = NodeTuning::from_toml_str(&format!(
            "{VALID}[retry]\nbackoff_max_ms = 2000\nattempts_max = 4\n"
        ))
        .expect("valid");
        let written = tuning.to_toml_string();
        assert!(
            written.ends_with("\n[retry]\nattempts_max = 4\ndeadline_ms = 120000\nbackoff_min_ms = 100\nbackoff_max_ms = 2000\n"),
            "{written}"
        );
        let again = NodeTuning::from_toml_str(&written).expect("written maps are valid");
        assert_eq!(again.retry(), tuning.retry());
        assert_eq!(again, tuning, "{written}");
        // Maps differing only in their retry policy are different maps.
        let default = NodeTuning::from_toml_str(VALID).expect("valid");
        assert_ne!(default, tuning);
    }

    #[test]
    fn unknown_retry_keys_and_wrong_types_are_refused() {
        let (at, message) = syntax_error(&format!("{VALID}[retry]\nattempts = 3\n"));
        assert_eq!(at.map(|at| at.line), Some(10), "{message}");
        assert!(message.contains("attempts"), "{message}");
        assert!(message.contains("attempts_max"), "{message}");
        let (_, message) = syntax_error(&format!("{VALID}[retry]\nbackoff_ms = 100\n"));
        assert!(message.contains("backoff_ms"), "{message}");
        let (at, message) = syntax_error(&format!("{VALID}[retry]\ndeadline_ms = \"2m\"\n"));
        assert_eq!(at.map(|at| at.line), Some(10), "{message}");
        assert!(message.starts_with("retry.deadline_ms: "), "{message}");
        let (_, message) = syntax_error(&format!("{VALID}[retry]\nbackoff_min_ms = 1.5\n"));
        assert!(message.starts_with("retry.backoff_min_ms: "), "{message}");
    }

    #[test]
    fn the_changelog_layout_is_read_written_back_and_refused_under_its_key() {
        let default = NodeTuning::from_toml_str(VALID).expect("valid");
        assert_eq!(default.state().changelog_layout, ChangelogLayout::PerStore);
        assert!(!default.to_toml_string().contains("changelog_layout"));
        let per_store = NodeTuning::from_toml_str(&format!(
            "{VALID}[state]\nchangelog_layout = \"per-store\"\n"
        ))
        .expect("valid");
        assert_eq!(per_store, default);
        let shared =
            NodeTuning::from_toml_str(&format!("{VALID}[state]\nchangelog_layout = \"shared\"\n"))
                .expect("valid");
        assert_eq!(shared.state().changelog_layout, ChangelogLayout::Shared);
        let written = shared.to_toml_string();
        assert!(
            written.contains("changelog_layout = \"shared\"\n"),
            "{written}"
        );
        assert_eq!(
            NodeTuning::from_toml_str(&written).expect("reads back"),
            shared
        );
        for bad in ["\"Shared\"", "\"per_store\"", "\"\"", "1", "true"] {
            let error =
                NodeTuning::from_toml_str(&format!("{VALID}[state]\nchangelog_layout = {bad}\n"))
                    .expect_err(bad)
                    .to_string();
            assert!(error.contains("state.changelog_layout"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_liveness_address_is_read_written_back_and_refused_under_its_key() {
        const GROUP: &str = "[node]\nname = \"n\"\n[ownership]\nmode = \"consumer-group\"\npartitions = 4\n[[shard]]\ncore = 0\n";
        let none = NodeTuning::from_toml_str(GROUP).expect("valid");
        assert_eq!(none.ownership().liveness_addr, None);
        assert!(!none.to_toml_string().contains("liveness_addr"));
        let with = GROUP.replace(
            "partitions = 4\n",
            "partitions = 4\nliveness_addr = \"127.0.0.1:0\"\n",
        );
        let tuning = NodeTuning::from_toml_str(&with).expect("valid");
        assert_eq!(
            tuning.ownership().liveness_addr,
            Some("127.0.0.1:0".parse().expect("an address"))
        );
        let written = tuning.to_toml_string();
        assert!(
            written.contains("liveness_addr = \"127.0.0.1:0\"\n"),
            "{written}"
        );
        assert_eq!(
            NodeTuning::from_toml_str(&written).expect("reads back"),
            tuning
        );
        for bad in ["\"localhost:7070\"", "\"10.0.0.7\"", "\"\"", "7070"] {
            let error = NodeTuning::from_toml_str(&GROUP.replace(
                "partitions = 4\n",
                &format!("partitions = 4\nliveness_addr = {bad}\n"),
            ))
            .expect_err(bad)
            .to_string();
            assert!(error.contains("ownership.liveness_addr"), "{bad}: {error}");
        }
        let core_map = VALID.replace(
            "partitions = 2\n",
            "partitions = 2\nliveness_addr = \"127.0.0.1:0\"\n",
        );
        let error = NodeTuning::from_toml_str(&core_map)
            .expect_err("core map")
            .to_string();
        assert!(
            error.contains("ownership.liveness_addr") && error.contains("core-map"),
            "{error}"
        );
    }

    #[test]
    fn the_node_session_is_read_written_back_and_refused_out_of_range_under_its_key() {
        let default = NodeTuning::from_toml_str(VALID).expect("valid");
        assert_eq!(default.ownership().session_ms, NODE_SESSION_MS_DEFAULT);
        assert!(!default.to_toml_string().contains("session_ms"));
        let short = VALID.replace("partitions = 2\n", "partitions = 2\nsession_ms = 6000\n");
        let tuning = NodeTuning::from_toml_str(&short).expect("valid");
        assert_eq!(tuning.ownership().session_ms, 6_000);
        let written = tuning.to_toml_string();
        assert!(written.contains("session_ms = 6000\n"), "{written}");
        assert_eq!(
            NodeTuning::from_toml_str(&written).expect("reads back"),
            tuning
        );
        for bad in ["999", "300001", "-1", "0"] {
            let text = VALID.replace(
                "partitions = 2\n",
                &format!("partitions = 2\nsession_ms = {bad}\n"),
            );
            let error = NodeTuning::from_toml_str(&text).expect_err(bad).to_string();
            assert!(error.contains("ownership.session_ms: "), "{bad}: {error}");
            assert!(error.contains("group.min.session.timeout.ms"), "{error}");
        }
    }

    #[test]
    fn standby_replicas_are_read_in_group_mode_and_refused_in_core_map_mode_under_their_key() {
        const GROUP: &str = "[node]\nname = \"n\"\n[ownership]\nmode = \"consumer-group\"\npartitions = 4\n[[shard]]\ncore = 0\n";
        let default = NodeTuning::from_toml_str(GROUP).expect("valid");
        assert_eq!(default.state().standby_replicas, 0);
        assert!(!default.to_toml_string().contains("standby"));
        let tuning = NodeTuning::from_toml_str(&format!("{GROUP}[state]\nstandby_replicas = 1\n"))
            .expect("valid");
        assert_eq!(tuning.state().standby_replicas, 1);
        let written = tuning.to_toml_string();
        assert!(written.contains("standby_replicas = 1\n"), "{written}");
        assert_eq!(
            NodeTuning::from_toml_str(&written).expect("reads back"),
            tuning
        );
        assert_ne!(default, tuning);
        let zero = NodeTuning::from_toml_str(&format!("{VALID}[state]\nstandby_replicas = 0\n"))
            .expect("0 is today's behaviour in either mode");
        assert_eq!(zero, NodeTuning::from_toml_str(VALID).expect("valid"));
        let error = NodeTuning::from_toml_str(&format!("{VALID}[state]\nstandby_replicas = 1\n"))
            .expect_err("core-map mode")
            .to_string();
        assert!(error.contains("state.standby_replicas: "), "{error}");
        assert!(error.contains("consumer-group"), "{error}");
        for bad in ["-1", "9", "4294967296"] {
            let error =
                NodeTuning::from_toml_str(&format!("{GROUP}[state]\nstandby_replicas = {bad}\n"))
                    .expect_err(bad)
                    .to_string();
            assert!(error.contains("state.standby_replicas: "), "{bad}: {error}");
            assert!(error.contains("out of range"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_state_section_reads_retentions_and_names_the_key_of_a_bad_one() {
        let tuning = NodeTuning::from_toml_str(VALID).expect("valid");
        assert_eq!(tuning.state().order_retention_ms, 24 * 3_600_000);
        let tuning =
            NodeTuning::from_toml_str(&format!("{VALID}[state]\norder_retention = \"90m\"\n"))
                .expect("valid");
        assert_eq!(tuning.state().order_retention_ms, 90 * 60_000);
        let written = tuning.to_toml_string();
        assert!(
            written.contains("[state]\norder_retention = \"90m\"\n"),
            "{written}"
        );
        assert_eq!(
            NodeTuning::from_toml_str(&written).expect("reads back"),
            tuning
        );
        assert_ne!(NodeTuning::from_toml_str(VALID).expect("valid"), tuning);
        for bad in [
            "0h",
            "24",
            "1y",
            "-1h",
            "h",
            "99999999999999999999d",
            "3651d",
        ] {
            let error = NodeTuning::from_toml_str(&format!(
                "{VALID}[state]\norder_retention = \"{bad}\"\n"
            ))
            .expect_err(bad)
            .to_string();
            assert!(error.contains("state.order_retention: "), "{bad}: {error}");
            assert!(
                error.contains(&format!("{bad:?} is not a retention")),
                "{error}"
            );
        }
        assert_eq!(parse_retention_ms("500ms"), Some(500));
        assert_eq!(parse_retention_ms("3650d"), Some(ORDER_RETENTION_MS_LIMIT));
        assert_eq!(retention_text(1_500), "1500ms");
        assert_eq!(retention_text(2 * 86_400_000), "2d");
        let (_, message) = syntax_error(&format!("{VALID}[state]\nretention = \"1h\"\n"));
        assert!(
            message.starts_with("state.retention: ") || message.contains("unknown field"),
            "{message}"
        );
    }

    #[test]
    fn the_api_section_resolves_paths_beside_the_map_and_reads_back_equal() {
        let text = format!(
            "{VALID}[api.auth]\ntokens_file = \"tokens.toml\"\nmetrics = \"token\"\n\n\
             [api.tls]\ncert_file = \"/etc/tf/cert.pem\"\nkey_file = \"key.pem\"\n"
        );
        let tuning = parse(&text, Some(PathBuf::from("/etc/tf/node.toml"))).expect("valid");
        let auth = tuning.api().auth.clone().expect("[api.auth]");
        assert_eq!(auth.tokens_file, PathBuf::from("/etc/tf/tokens.toml"));
        assert_eq!(auth.metrics, ApiMetricsAccess::Token);
        let tls = tuning.api().tls.clone().expect("[api.tls]");
        assert_eq!(tls.cert_file, PathBuf::from("/etc/tf/cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/tf/key.pem"));
        let again = NodeTuning::from_toml_str(&tuning.to_toml_string()).expect("written");
        assert_eq!(again, tuning);
        // Absent, the API is open and plaintext; unknown keys are refused.
        assert_eq!(
            NodeTuning::from_toml_str(VALID).expect("valid").api(),
            &ApiSection::default()
        );
        let (_, message) = syntax_error(&format!("{VALID}[api.auth]\ntoken_file = \"t\"\n"));
        assert!(message.contains("token_file"), "{message}");
        let (_, message) = syntax_error(&format!(
            "{VALID}[api.auth]\ntokens_file = \"t\"\nmetrics = \"ops\"\n"
        ));
        assert!(message.contains("metrics"), "{message}");
    }
}
