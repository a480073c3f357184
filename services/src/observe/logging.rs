//! Logs for people and for central aggregation: `tracing` events as
//! human-readable lines, or as one JSON object per line (Fluentd, Elastic,
//! Loki) carrying the fields of the spans they happened in — a shard's
//! events carry `shard`, `service` and `core`; a restore's also `partition`.
//!
//! Owns: the process's one `tracing` subscriber and its format.
//! Must never: be installed twice (the second install is refused), or log per
//! record on a shard's hot path (the engine logs at rebalances, restores,
//! dead letters and failures).

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's
    /// fields at the top level, `span` (the innermost) and `spans` (all).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the subscriber: `RUST_LOG` picks what is logged (default
/// `default_filter`), `format` how. Returns false if one was installed already.
pub fn init(format: LogFormat, default_filter: &str) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
            .is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print_alike() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
