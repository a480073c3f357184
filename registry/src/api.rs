//! The Confluent Schema Registry REST API over axum.
//!
//! Owns: routes, request bodies, Confluent's response shapes, error JSON
//! (`{"error_code": 40401, "message": ...}`) and content type
//! (`application/vnd.schemaregistry.v1+json`), and the order of a write:
//! plan under the lock, append to Kafka, apply, answer.
//! Must never: answer a write Kafka has not acknowledged, hold the registry
//! lock across anything but the append of a write, or panic on a request:
//! every bad input is a 4xx with Confluent's code and a reason.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::model::{Change, CompatibilityLevel, Registration, Registry, RegistryError, VersionRef};
use crate::store::KafkaLog;

/// Confluent's response content type.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// One registry node: its state and its log.
#[derive(Debug)]
pub struct Node {
    registry: Mutex<Registry>,
    log: KafkaLog,
}

impl Node {
    /// A node serving `registry`, writing to `log`.
    pub fn new(log: KafkaLog, registry: Registry) -> Arc<Node> {
        Arc::new(Node {
            registry: Mutex::new(registry),
            log,
        })
    }

    /// Appends the changes, then applies them: the state never shows a change
    /// the log might not hold. The lock is held throughout so that ids and
    /// versions are planned against the state they are appended to.
    async fn write(
        &self,
        registry: &mut Registry,
        changes: Vec<Change>,
    ) -> Result<(), RegistryError> {
        for change in changes {
            self.log
                .append(&change)
                .await
                .map_err(|e| RegistryError::Store(e.to_string()))?;
            registry.apply(change)?;
        }
        Ok(())
    }
}

/// An answer in Confluent's content type.
fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

/// A refusal as Confluent words it.
struct ApiError(RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "registry request failed");
        } else {
            tracing::debug!(error = %self.0, "registry request refused");
        }
        reply(
            status,
            json!({"error_code": self.0.error_code(), "message": self.0.to_string()}),
        )
    }
}

type ApiResult = Result<Response, ApiError>;

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(format!("body: {e}")))
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaBody {
    /// The Avro text; other types and references are refused with 42201.
    fn avro(body: &[u8]) -> Result<String, RegistryError> {
        let body: SchemaBody = parse_body(body)?;
        if let Some(kind) = body.schema_type.as_deref() {
            if kind != "AVRO" {
                return Err(RegistryError::InvalidSchema(format!(
                    "schema type {kind} is not supported: this registry serves AVRO"
                )));
            }
        }
        if !body.references.is_empty() {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported".into(),
            ));
        }
        Ok(body.schema)
    }
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

/// Query parameters, read leniently: clients spell booleans `true`, `True`
/// or `1`, and an unknown parameter is ignored, as Confluent ignores it.
type Params = Query<HashMap<String, String>>;

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The router of every Confluent route this registry serves.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_compatibility),
        )
        .fallback(|| async {
            reply(
                StatusCode::NOT_FOUND,
                json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
            )
        })
        .with_state(node)
}

async fn list_subjects(State(node): State<Arc<Node>>) -> ApiResult {
    Ok(ok(json!(node.registry.lock().await.subjects())))
}

async fn schema_by_id(State(node): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult {
    let id: u32 = id.parse().map_err(|_| RegistryError::SchemaNotFound)?;
    let registry = node.registry.lock().await;
    let schema = registry.schema_by_id(id)?;
    Ok(ok(json!({"schema": schema.text})))
}

async fn list_versions(State(node): State<Arc<Node>>, Path(subject): Path<String>) -> ApiResult {
    Ok(ok(json!(node.registry.lock().await.versions(&subject)?)))
}

async fn register(
    State(node): State<Arc<Node>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let text = SchemaBody::avro(&body)?;
    let mut registry = node.registry.lock().await;
    let id = match registry.plan_register(&subject, &text)? {
        Registration::Existing { id } => id,
        Registration::New(value) => {
            let id = value.id;
            tracing::info!(%subject, version = value.version, id, "schema registered");
            node.write(&mut registry, vec![Change::Schema(value)])
                .await?;
            id
        }
    };
    Ok(ok(json!({"id": id})))
}

async fn lookup(
    State(node): State<Arc<Node>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let text = SchemaBody::avro(&body)?;
    let info = node.registry.lock().await.lookup(&subject, &text)?;
    Ok(ok(json!({
        "subject": info.subject, "version": info.version, "id": info.id, "schema": info.schema,
    })))
}

async fn get_version(
    State(node): State<Arc<Node>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let which = VersionRef::parse(&version)?;
    let info = node.registry.lock().await.version(&subject, which)?;
    Ok(ok(json!({
        "subject": info.subject, "version": info.version, "id": info.id, "schema": info.schema,
    })))
}

async fn get_version_schema(
    State(node): State<Arc<Node>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let which = VersionRef::parse(&version)?;
    let info = node.registry.lock().await.version(&subject, which)?;
    let schema: Value = serde_json::from_str(&info.schema)
        .map_err(|e| RegistryError::Store(format!("stored schema: {e}")))?;
    Ok(ok(schema))
}

async fn delete_version(
    State(node): State<Arc<Node>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let which = VersionRef::parse(&version)?;
    let mut registry = node.registry.lock().await;
    let (changes, versions) = registry.plan_delete(&subject, Some(which))?;
    node.write(&mut registry, changes).await?;
    Ok(ok(json!(versions.first().copied().unwrap_or_default())))
}

async fn delete_subject(State(node): State<Arc<Node>>, Path(subject): Path<String>) -> ApiResult {
    let mut registry = node.registry.lock().await;
    let (changes, versions) = registry.plan_delete(&subject, None)?;
    node.write(&mut registry, changes).await?;
    Ok(ok(json!(versions)))
}

fn parse_level(body: &[u8]) -> Result<CompatibilityLevel, RegistryError> {
    let body: ConfigBody = parse_body(body)?;
    CompatibilityLevel::parse(&body.compatibility.to_ascii_uppercase())
        .ok_or(RegistryError::InvalidCompatibilityLevel(body.compatibility))
}

async fn get_global_config(State(node): State<Arc<Node>>) -> ApiResult {
    let level = node.registry.lock().await.global_level();
    Ok(ok(json!({"compatibilityLevel": level.name()})))
}

async fn put_global_config(State(node): State<Arc<Node>>, body: Bytes) -> ApiResult {
    let level = parse_level(&body)?;
    let mut registry = node.registry.lock().await;
    let change = Change::Config {
        subject: None,
        level: Some(level),
    };
    node.write(&mut registry, vec![change]).await?;
    Ok(ok(json!({"compatibility": level.name()})))
}

async fn get_subject_config(
    State(node): State<Arc<Node>>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let registry = node.registry.lock().await;
    let level = match registry.subject_level(&subject) {
        Some(level) => level,
        None if flag(&params, "defaultToGlobal") => registry.global_level(),
        None => return Err(RegistryError::SubjectLevelNotConfigured(subject).into()),
    };
    Ok(ok(json!({"compatibilityLevel": level.name()})))
}

async fn put_subject_config(
    State(node): State<Arc<Node>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = parse_level(&body)?;
    let mut registry = node.registry.lock().await;
    let change = Change::Config {
        subject: Some(subject),
        level: Some(level),
    };
    node.write(&mut registry, vec![change]).await?;
    Ok(ok(json!({"compatibility": level.name()})))
}

async fn delete_subject_config(
    State(node): State<Arc<Node>>,
    Path(subject): Path<String>,
) -> ApiResult {
    let mut registry = node.registry.lock().await;
    let level = registry
        .subject_level(&subject)
        .ok_or_else(|| RegistryError::SubjectLevelNotConfigured(subject.clone()))?;
    let change = Change::Config {
        subject: Some(subject),
        level: None,
    };
    node.write(&mut registry, vec![change]).await?;
    Ok(ok(json!({"compatibilityLevel": level.name()})))
}

async fn test_compatibility(
    State(node): State<Arc<Node>>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let which = VersionRef::parse(&version)?;
    let text = SchemaBody::avro(&body)?;
    let problems = node
        .registry
        .lock()
        .await
        .test_compatibility(&subject, which, &text)?;
    let mut answer = json!({"is_compatible": problems.is_empty()});
    if flag(&params, "verbose") {
        answer["messages"] = json!(problems);
    }
    Ok(ok(answer))
}
