//! `tradeflow registry`: a Confluent Schema Registry compatible REST server,
//! durable in a compacted Kafka topic, holding the Avro schemas of the flow.
//!
//! A crate of its own, not a module of `services`: it is a separate process
//! role with its own storage and API that neither the engine nor the services
//! need to link, it builds and tests without the engine, and `codecs` stays
//! free of Kafka (it gives the schemas; this crate serves them).
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | subjects, versions, ids, levels; compatibility by apache-avro |
//! | [`store`] | the `_schemas` topic: read to the end at start, append per change |
//! | [`api`] | the REST routes, Confluent's shapes and error codes |
//! | [`client`] | a node registering the schemas it writes, at start |
//! | [`values`] | the flow's values in rkyv or Confluent's Avro form, per topic, as clients outside the engine write and read them (loadgen, `tradeflow audit`) |
//!
//! Runs on a tokio runtime of its own, never on an engine shard's core.
//!
//! **Architecture invariant:** every node's state is the log applied in order,
//! so nodes that read `_schemas` to its end serve the same ids.
//! **Architecture invariant:** compatibility is decided by
//! `apache_avro::schema_compatibility::SchemaCompatibility`, never by rules
//! written here.

pub mod api;
pub mod client;
pub mod model;
pub mod store;
pub mod values;

use std::net::SocketAddr;

pub use api::{router, Node, CONTENT_TYPE};
pub use model::{CompatibilityLevel, Registry, RegistryError};
pub use store::{KafkaLog, StoreConfig, StoreError, DEFAULT_TOPIC};

/// Why the registry could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("schemas log: {0}")]
    Store(#[from] StoreError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Reads the log, then binds `addr`; returns the bound address (a port of 0
/// picks a free one) and the server future, which runs until `shutdown`.
pub async fn bind(
    config: &StoreConfig,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let (log, registry) = KafkaLog::open(config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr, source })?;
    let app = router(Node::new(log, registry));
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    };
    Ok((bound, server))
}
