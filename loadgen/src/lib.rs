//! `loadgen`: drives tradeflow with open-loop load and reports latency the way
//! operators read it (HDR percentiles, corrected for coordinated omission).
//!
//! | module | owns |
//! |---|---|
//! | [`latency`] | whole-run corrected/uncorrected histograms |
//! | [`interval`] | per-interval rotation on the measuring thread, the interval log |
//! | [`report`] | percentile table, `.hgrm` (written by the `hdr` crate), `.hlog`, SVG plots, `summary.json` |
//! | [`progress`] | the progress bar (hidden when quiet or not on a terminal) |
//! | [`ping`] | open-loop produce → consume round trips through one topic |
//! | [`drive`] | open-loop orders against a running flow, timed to their `read_committed` outcomes |
//! | [`traffic`] | the traffic file format, replay pacing and id rewriting |
//! | [`synth`] | seeded synthetic scenarios as traffic |
//! | [`flow`] | the flow's topics and keys (`codecs::topics`) and which key a record gets |
//! | [`audit_read`] | a namespace's flow topics read (the `records` crate's reader) and fed to the invariant audit (the `audit` crate) |
//! | [`record`] | capturing a range of topics into a traffic file (the `records` crate's range reader) |
//! | [`session`] | `run`/`replay`: drive a schedule, write the report, audit |
//! | [`state`] | balances and stock read through the engines' Order API, for the audit to compare |
//!
//! Owns: send schedules, latency recording and reports.
//! Must never: measure from the actual send time alone (a stalled system would
//! hide its own stall), or block the schedule on a slow reply (open loop).

pub mod api;
pub mod audit_read;
pub mod drive;
pub mod flow;
pub mod interval;
pub mod latency;
pub mod ping;
pub mod progress;
pub mod record;
pub mod report;
pub mod session;
pub mod state;
pub mod synth;
pub mod traffic;
