//! `traffic`: order traffic for a running flow — seeded synthetic
//! scenarios, the traffic file format and replay pacing, and the open-loop
//! driver that sends a schedule and times each order to its `read_committed`
//! outcome. Shared by `loadgen` (its CLI, reports and plots, progress bar)
//! and `tradeflow demo`, so that the engine's binary drives its quick start
//! without linking the load generator's reporting (plotters, indicatif).
//!
//! | module | owns |
//! |---|---|
//! | (root) | the traffic file format: [`Header`], [`Record`], [`Payload`], [`TrafficReader`], [`TrafficWriter`] |
//! | [`replay`] | replay pacing (original, `--speedup`, `--rate`) and id rewriting |
//! | [`synth`] | seeded synthetic scenarios as traffic, and the outcomes they deserve |
//! | [`flow`] | the flow's topics and keys (`codecs::topics`) and which key a record gets |
//! | [`drive`] | open-loop orders against a running flow, timed to their `read_committed` outcomes |
//! | [`latency`] | whole-run corrected/uncorrected histograms |
//! | [`interval`] | per-interval rotation on the measuring thread, the interval log |
//!
//! Owns: send schedules and the latency they measure.
//! Must never: measure from the actual send time alone (a stalled system
//! would hide its own stall), block the schedule on a slow reply (open
//! loop), draw on a terminal (the driver reports progress through
//! [`drive::DriveProgress`]), or depend on the engine or the services (it
//! drives a flow from outside, as a client would).

pub mod drive;
mod file;
pub mod flow;
pub mod interval;
pub mod latency;
pub mod synth;

pub use file::*;
