//! `loadgen`: drives tradeflow with open-loop load and reports latency the way
//! operators read it (HDR percentiles, corrected for coordinated omission).
//!
//! Owns: send schedules, latency recording and reports.
//! Must never: measure from the actual send time alone (a stalled system would
//! hide its own stall), or block the schedule on a slow reply (open loop).

pub mod latency;
pub mod ping;
