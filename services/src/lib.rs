//! tradeflow's services: Order, Payment and Inventory as engine stages, and the
//! `tradeflow` binary that runs them.
//!
//! Owns: the trade-flow rules and the process entry points.
//! Must never: see rdkafka or glommio types directly; those stay in the engine.

pub mod topics;
