//! A measured session against a running flow, as `loadgen run` and
//! `loadgen replay` perform it: a schedule driven open-loop into the
//! namespace's topics ([`crate::drive`]), every report file written
//! ([`crate::report`]), then the invariant audit of every flow topic of the
//! namespace ([`crate::audit_read`]) unless turned off — against the
//! scenario's plan of outcomes and the engines' state read through their
//! Order API ([`crate::state`]) when the session has them.
//!
//! Owns: the order of those steps, what the report says about the flow, and
//! the schedules of `run` (a synthetic scenario) and `replay` (a traffic
//! file). Must never: measure (that is `drive`'s), judge the run itself
//! (that is the audit's), or print: callers decide what reaches a terminal.

use std::path::PathBuf;
use std::time::Duration;

use codecs::{AccountId, Sku};

use audit::{Audit, DeservedOutcomes, Guarantee};

use crate::audit_read::{audit_namespace_with, TopicAudit};
use crate::drive::{
    drive_with, DriveConfig, DriveError, DriveOptions, DriveReport, ScheduledRecord,
};
use crate::report::{
    AuditSummary, FlowSummary, Percentiles, Report, ReportError, RunInfo, StageSummary, Summary,
};
use crate::state::{read_state, StateReadError};
use crate::synth::{self, SynthConfig, SynthError};
use records::ReadError;

/// Longest a state read keeps retrying a key no engine answers for yet.
pub const STATE_READ_WAIT_MS: u64 = 60_000;

/// What a session is, for the report: the tool and where it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLabel {
    /// e.g. `loadgen run`.
    pub tool: String,
    pub command_line: Vec<String>,
    pub version: String,
    pub commit: String,
    pub host: String,
}

impl RunLabel {
    /// A label for `tool` in this process: its command line, this crate's
    /// version, the source commit ([`commit`]) and the host name.
    pub fn here(tool: &str) -> RunLabel {
        RunLabel {
            tool: tool.to_string(),
            command_line: std::env::args().collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: commit(),
            host: host(),
        }
    }
}

/// The source commit: `TRADEFLOW_COMMIT` if set, else `git describe` of the
/// working directory, else `unknown`.
pub fn commit() -> String {
    if let Ok(commit) = std::env::var("TRADEFLOW_COMMIT") {
        return commit;
    }
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's host name, or `unknown`.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Everything a session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub drive: DriveConfig,
    pub options: DriveOptions,
    /// Where the report files go (created if missing).
    pub out_dir: PathBuf,
    /// The audit at the end, under this guarantee; `None` turns it off.
    pub audit: Option<Guarantee>,
    /// The outcome each order deserves (a synthetic scenario's plan,
    /// [`crate::synth::deserved_outcomes`]): the audit compares every order
    /// with it. `None` for traffic without a plan (a replayed recording).
    pub deserved: Option<DeservedOutcomes>,
    /// Whether the schedule sends records that are not events (a replayed
    /// recording may carry poison inputs): otherwise a record the audit
    /// cannot decode fails the session.
    pub poison_sent: bool,
    /// Where to read the stages' balances and stock after the drive (the
    /// engines' Order APIs), for the audit to compare with the events.
    pub state: Option<StateSource>,
    pub label: RunLabel,
}

/// The engines whose Order API holds the state, and the keys to read.
#[derive(Debug, Clone)]
pub struct StateSource {
    /// `host:port` of each engine's REST server.
    pub addrs: Vec<String>,
    pub accounts: Vec<AccountId>,
    pub skus: Vec<Sku>,
}

/// What a session measured and found.
#[derive(Debug)]
pub struct SessionOutcome {
    pub drive: DriveReport,
    /// What `summary.json` holds.
    pub summary: Summary,
    /// The percentile table for stdout, with achieved vs offered.
    pub table: String,
    /// `None` when the audit was turned off.
    pub audit: Option<TopicAudit>,
    /// The session's `poison_sent`.
    pub poison_sent: bool,
}

impl SessionOutcome {
    /// Every order reached its outcome, none twice, every outcome decoded,
    /// and the audit (if run) passed and found no record it could not
    /// decode that the schedule did not send.
    pub fn passed(&self) -> bool {
        self.drive.missing == 0
            && self.drive.duplicate_outcomes == 0
            && self.drive.undecodable == 0
            && self
                .audit
                .as_ref()
                .is_none_or(|a| a.report.passed() && (self.poison_sent || a.undecodable == 0))
    }
}

/// Why a session could not complete (a failed audit is an outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("driving the flow: {0}")]
    Drive(#[from] DriveError),
    #[error("writing the report: {0}")]
    Report(#[from] ReportError),
    #[error("auditing the namespace's topics: {0}")]
    Audit(#[from] ReadError),
    #[error("the scenario: {0}")]
    Synth(#[from] SynthError),
    #[error("reading the engines' state: {0}")]
    State(#[from] StateReadError),
}

/// Drives `schedule` into the flow, writes the report, audits.
pub fn run_session<S, E>(
    config: &SessionConfig,
    schedule: S,
) -> Result<SessionOutcome, SessionError>
where
    S: IntoIterator<Item = Result<ScheduledRecord, E>>,
    S::IntoIter: Send + 'static,
    E: std::fmt::Display,
{
    let drive = drive_with(&config.drive, &config.options, schedule)?;
    // The flow has drained: the engines' state is final.
    let state = match &config.state {
        Some(source) => Some(read_state(
            &source.addrs,
            &source.accounts,
            &source.skus,
            Duration::from_millis(STATE_READ_WAIT_MS),
        )?),
        None => None,
    };
    let audit = match config.audit {
        Some(guarantee) => {
            let mut audit = Audit::new(guarantee);
            if let Some(plan) = &config.deserved {
                audit = audit.expect_outcomes(plan.clone());
            }
            Some(audit_namespace_with(
                &config.drive.bootstrap,
                &config.drive.client_properties,
                &config.drive.namespace,
                &config.options.values,
                audit,
                state.as_ref(),
            )?)
        }
        None => None,
    };
    let flow = FlowSummary {
        namespace: config.drive.namespace.name().to_string(),
        records_sent: drive.events_sent,
        orders_sent: drive.orders_sent,
        filled: drive.filled,
        rejected_funds: drive.rejected_funds,
        rejected_stock_refunded: drive.refunded,
        missing: drive.missing,
        duplicate_outcomes: drive.duplicate_outcomes,
        pending_orders_max: config.options.pending_orders_max as u64,
        pending_wait_max_ms: drive.pending_wait_max.as_secs_f64() * 1e3,
        stages: drive
            .stages
            .named()
            .iter()
            .map(|(stage, span, histogram)| StageSummary {
                stage: stage.to_string(),
                span: span.to_string(),
                latency_us: Percentiles::of(histogram),
            })
            .collect(),
        audit: audit.as_ref().map(|a| AuditSummary {
            passed: a.report.passed(),
            guarantee: match a.report.guarantee {
                Guarantee::ExactlyOnce => "exactly-once",
                Guarantee::AtLeastOnce => "at-least-once",
            }
            .to_string(),
            records: a.records,
            orders_accepted: a.report.orders.accepted,
            violations: a.report.violation_count,
        }),
    };
    let label = &config.label;
    let run = RunInfo {
        tool: label.tool.clone(),
        command_line: label.command_line.clone(),
        version: label.version.clone(),
        commit: label.commit.clone(),
        host: label.host.clone(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        started: drive.started,
        duration: drive.elapsed,
        offered_rate_per_s: drive.offered_order_rate_per_s(),
        achieved_rate_per_s: drive.achieved_order_rate_per_s(),
        sent: drive.orders_sent,
        received: drive.outcomes,
    };
    let report = Report {
        run: &run,
        total: &drive.latency,
        intervals: &drive.intervals,
        flow: Some(&flow),
    };
    let summary = report.write_to(&config.out_dir)?;
    let table = report.table();
    Ok(SessionOutcome {
        drive,
        summary,
        table,
        audit,
        poison_sent: config.poison_sent,
    })
}

/// A synthetic scenario as a streamed schedule, with its length in records.
/// Order ids are the services' own (`codecs::ids::order_id_for`).
pub fn synth_schedule(
    config: &SynthConfig,
) -> Result<
    (
        u64,
        impl Iterator<Item = Result<ScheduledRecord, SynthError>> + Send + 'static,
    ),
    SynthError,
> {
    let scenario = synth::generate(config, codecs::ids::order_id_for as fn(_, &_) -> _)?;
    let len = scenario.len();
    let schedule = scenario.filter_map(|record| match record {
        Ok(record) => ScheduledRecord::from_traffic(record.t_ns, record).map(Ok),
        Err(e) => Some(Err(e)),
    });
    Ok((len, schedule))
}
