//! tradeflow's services: Order, Payment and Inventory as engine stages, the
//! Order API (REST and gRPC) in front of them, and the `tradeflow` binary
//! that runs them.
//!
//! Owns: the trade-flow rules, the process entry points, and what a process
//! shows operators (`observe`: metrics, health, HDR reports, logs).
//! Must never: see rdkafka or glommio types directly; those stay in the
//! engine. The one exception is the Order API's producer (`api`'s `kafka`
//! module), which runs on the API's own threads, outside every shard.

pub mod api;
pub mod audit;
pub mod deployment;
pub mod dlq;
pub mod flow;
/// Deterministic ids live with the wire format; re-exported here.
pub use codecs::ids;
pub mod inventory;
pub mod observe;
pub mod order;
pub mod payment;
pub mod retention;
mod routing;
pub mod store_codec;
#[doc(hidden)]
pub mod testing;
pub mod wire;
/// The flow's topics and keys live with the wire format; re-exported here.
pub use codecs::topics;
