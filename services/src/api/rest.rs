//! The REST server (axum): routes, JSON in and out, and the error body.
//! docs/openapi.yaml describes it and is served at `GET /openapi.yaml`.
//!
//! Owns: HTTP concerns only — the body limit, the content type, path
//! segments, status codes, the `Location` and `Retry-After` headers, and
//! the error body `{"error": {"code", "field", "message", "partition",
//! "retryable"}}`.
//! Must never: apply a rule of its own (rules live in `validate`, `ops` and
//! `auth`, shared with gRPC), parse a body before its size is checked, or
//! look at a `/v1` request before its caller is authenticated.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::auth::{Caller, Role};
use super::error::{ErrorCode, Reject};
use super::ops::OrderApi;
use super::validate::{
    account_of, amendment, funding, new_order, order_id_of, replenishment, sku_of, AmendInput,
    CreateOrderInput, TopUpInput,
};
use super::view::OrderView;
use super::REQUEST_BODY_BYTES_MAX;
use crate::observe::Observability;

/// The OpenAPI 3 document of this server.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// Seconds a client should wait before retrying a retryable error.
const RETRY_AFTER_S: &str = "1";

type ApiState = State<Arc<OrderApi>>;

/// Every route, the body limit and the JSON fallbacks; with `observability`,
/// also `/metrics`, `/health/*` and `/reports/hdr` and every request counted
/// (see `observe::http`), else just `/health/live`.
pub(crate) fn router(api: Arc<OrderApi>, observability: Option<&Observability>) -> Router {
    let api_for_guard = Arc::clone(&api);
    let router = Router::new()
        .route("/v1/orders", post(create_order))
        .route("/v1/accounts/{account}", get(get_account))
        .route("/v1/accounts/{account}/fundings", post(fund))
        .route("/v1/accounts/{account}/orders/{order_id}", get(get_order))
        .route(
            "/v1/accounts/{account}/orders/{order_id}/amend",
            post(amend),
        )
        .route(
            "/v1/accounts/{account}/orders/{order_id}/cancel",
            post(cancel),
        )
        .route("/v1/instruments/{sku}", get(get_instrument))
        .route("/v1/instruments/{sku}/replenishments", post(replenish))
        .route("/openapi.yaml", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(api);
    let router = match observability {
        Some(observability) => crate::observe::with_observability(router, observability),
        None => router.route("/health/live", get(live)),
    };
    if api_for_guard.auth().metrics_need_token() {
        router.layer(axum::middleware::from_fn_with_state(
            api_for_guard,
            guard_operational_routes,
        ))
    } else {
        router
    }
}

/// With `metrics = "token"`, `/metrics` and `/reports/hdr*` need a valid
/// token (any principal): they name partitions, topics and rates. Health
/// stays open so probes need no secret.
async fn guard_operational_routes(
    State(api): ApiState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path == "/metrics" || path == "/reports/hdr" || path.starts_with("/reports/hdr/") {
        if let Err(reject) = caller(&api, request.headers()) {
            return reject.into_response();
        }
    }
    next.run(request).await
}

/// Who sent the request: 401 when tokens are on and it has no valid one.
/// Every `/v1` handler calls this first, before looking at the path or the
/// body, so an unauthenticated client learns nothing about validation.
fn caller(api: &OrderApi, headers: &HeaderMap) -> Result<Caller, Reject> {
    api.auth()
        .authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error = json!({
            "code": self.code.as_str(),
            "field": self.field,
            "message": self.message,
            "retryable": self.code.is_retryable(),
        });
        if let (Some(partition), Some(object)) = (self.partition, error.as_object_mut()) {
            object.insert("partition".into(), json!(partition.0));
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if self.code == ErrorCode::Unauthenticated {
            // RFC 6750: a 401 names the scheme it wants.
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.code.is_retryable() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        response
    }
}

/// The body of a request: within the limit, JSON by its content type. An
/// empty body reads as `{}` where `empty_ok` (cancel takes no fields).
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<Bytes, Reject> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Reject::new(
                ErrorCode::BodyTooLarge,
                format!("the body is over {REQUEST_BODY_BYTES_MAX} bytes"),
            )
        } else {
            Reject::new(ErrorCode::MalformedJson, rejection.body_text())
        }
    })?;
    if body.is_empty() && empty_ok {
        return Ok(Bytes::from_static(b"{}"));
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
    if is_json {
        Ok(body)
    } else {
        Err(Reject::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be sent as Content-Type: application/json",
        ))
    }
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, Reject> {
    path.map(|Path(segments)| segments)
        .map_err(|rejection| Reject::new(ErrorCode::InvalidValue, rejection.body_text()))
}

#[derive(Serialize)]
struct CreatedBody {
    order_id: String,
    account: u64,
    duplicate: bool,
}

fn order_location(account: u64, order_id: u64) -> String {
    format!("/v1/accounts/{account}/orders/{order_id}")
}

async fn create_order(
    State(api): ApiState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Reject> {
    let caller = caller(&api, &headers)?;
    let body = json_body(&headers, body, false)?;
    let order = new_order(CreateOrderInput::from_json(&body)?)?;
    caller.may_act_for(order.account)?;
    let created = api.create_order(order).await?;
    // 202: Kafka holds the order; its outcome comes later (GET the
    // Location). 200: this node already held the same order.
    let status = if created.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let location = order_location(created.account.0, created.order_id.0);
    let body = CreatedBody {
        order_id: created.order_id.0.to_string(),
        account: created.account.0,
        duplicate: created.duplicate,
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn get_order(
    State(api): ApiState,
    segments: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<OrderView>, Reject> {
    let caller = caller(&api, &headers)?;
    let (account, order_id) = path(segments)?;
    let account = account_of(&account)?;
    caller.may_act_for(account)?;
    let order_id = order_id_of(&order_id)?;
    let record = api.order(account, order_id).await?;
    Ok(Json(OrderView::of(&record, order_id)))
}

async fn amend(
    State(api): ApiState,
    segments: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Reject> {
    let caller = caller(&api, &headers)?;
    let (account, order_id) = path(segments)?;
    let account = account_of(&account)?;
    caller.may_act_for(account)?;
    let order_id = order_id_of(&order_id)?;
    let body = json_body(&headers, body, false)?;
    let amendment = amendment(AmendInput::from_json(&body)?)?;
    request(&api, account, order_id, Some(amendment)).await
}

async fn cancel(
    State(api): ApiState,
    segments: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Reject> {
    let caller = caller(&api, &headers)?;
    let (account, order_id) = path(segments)?;
    let account = account_of(&account)?;
    caller.may_act_for(account)?;
    let order_id = order_id_of(&order_id)?;
    let body = json_body(&headers, body, true)?;
    super::validate::parse_object(&body, &[])?;
    request(&api, account, order_id, None).await
}

async fn request(
    api: &OrderApi,
    account: codecs::AccountId,
    order_id: codecs::OrderId,
    amendment: Option<(codecs::Quantity, codecs::Money)>,
) -> Result<Response, Reject> {
    let kind = api.request(account, order_id, amendment).await?;
    let body = json!({ "order_id": order_id.0.to_string(), "request": kind.as_str() });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn fund(
    State(api): ApiState,
    segments: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Reject> {
    let caller = caller(&api, &headers)?;
    let account = account_of(&path(segments)?)?;
    caller.may_act_for(account)?;
    caller.require(Role::Ops)?;
    let body = json_body(&headers, body, false)?;
    let funding = funding(TopUpInput::from_json(&body, "amount")?)?;
    let event_id = api.fund(account, funding).await?;
    let body = json!({ "event_id": event_id.to_string() });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn replenish(
    State(api): ApiState,
    segments: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Reject> {
    caller(&api, &headers)?.require(Role::Ops)?;
    let sku = sku_of(&path(segments)?)?;
    let body = json_body(&headers, body, false)?;
    let replenishment = replenishment(TopUpInput::from_json(&body, "quantity")?)?;
    let event_id = api.replenish(sku, replenishment).await?;
    let body = json!({ "event_id": event_id.to_string() });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_account(
    State(api): ApiState,
    segments: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Reject> {
    let caller = caller(&api, &headers)?;
    let account = account_of(&path(segments)?)?;
    caller.may_act_for(account)?;
    let balance = api.balance(account).await?;
    Ok(Json(json!({ "account": account.0, "balance": balance.0 })).into_response())
}

async fn get_instrument(
    State(api): ApiState,
    segments: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Reject> {
    caller(&api, &headers)?;
    let sku = sku_of(&path(segments)?)?;
    let on_hand = api.on_hand(sku).await?;
    Ok(Json(json!({ "sku": sku.as_str(), "on_hand": on_hand.0 })).into_response())
}

async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/yaml"))],
        OPENAPI_YAML,
    )
        .into_response()
}

async fn live() -> Response {
    Json(json!({ "status": "live" })).into_response()
}

async fn not_found() -> Reject {
    Reject::new(ErrorCode::NotFound, "no such route; see GET /openapi.yaml")
}

async fn method_not_allowed() -> Reject {
    Reject::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method; see GET /openapi.yaml",
    )
}
