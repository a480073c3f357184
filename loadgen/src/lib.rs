//! `loadgen`: drives tradeflow with open-loop load and reports latency the way
//! operators read it (HDR percentiles, corrected for coordinated omission).
//! The traffic itself — scenarios, the traffic file format, replay pacing and
//! the open-loop driver — is the `traffic` crate's (shared with `tradeflow
//! demo`), re-exported here under its old paths (`loadgen::drive`,
//! `loadgen::synth`, `loadgen::traffic`, ...).
//!
//! | module | owns |
//! |---|---|
//! | [`report`] | percentile table, `.hgrm` (written by the `hdr` crate), `.hlog`, SVG plots, `summary.json` |
//! | [`progress`] | the progress bar (hidden when quiet or not on a terminal); the driver's [`drive::DriveProgress`] |
//! | [`ping`] | open-loop produce → consume round trips through one topic |
//! | [`audit_read`] | a namespace's flow topics read (the `records` crate's reader) and fed to the invariant audit (the `audit` crate) |
//! | [`record`] | capturing a range of topics into a traffic file (the `records` crate's range reader) |
//! | [`session`] | `run`/`replay`: drive a schedule, write the report, audit |
//! | [`state`] | balances and stock read through the engines' Order API, for the audit to compare |
//! | [`api`] | `loadgen api`: the Order API under concurrent clients, each request timed from its intended send time |
//! | [`drive`], [`synth`], [`traffic`], [`flow`], [`latency`], [`interval`] | re-exported from the `traffic` crate |
//!
//! Owns: the `loadgen` CLI, its reports and plots, its progress bar.
//! Must never: measure from the actual send time alone (a stalled system would
//! hide its own stall), or block the schedule on a slow reply (open loop).

pub mod api;
pub mod audit_read;
pub mod ping;
pub mod progress;
pub mod record;
pub mod report;
pub mod session;
pub mod state;

/// The traffic file format and replay (`loadgen::traffic::TrafficReader`,
/// `loadgen::traffic::replay`): the `traffic` crate.
pub use traffic;
pub use traffic::{drive, flow, interval, latency, synth};
