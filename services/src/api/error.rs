//! Errors of the Order API: why a request was refused ([`Reject`], with a
//! stable machine-readable [`ErrorCode`]), and why the API itself could not
//! start or stopped ([`ApiError`]).
//!
//! Owns: the list of error codes and, for each, its HTTP status and gRPC
//! code, so REST, gRPC and docs/openapi.yaml agree.
//! Must never: change a code's spelling (clients match on it) or put
//! internal detail a client cannot act on into a message.

use std::net::SocketAddr;

use engine::PartitionId;

/// Why a request was refused. The spelling (`as_str`) is the API contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // --- the request's shape (400) ---
    /// The body is not JSON, or not a JSON object.
    MalformedJson,
    /// A field the operation does not define.
    UnknownField,
    /// A field given twice in one object.
    DuplicateField,
    /// A required field is absent.
    MissingField,
    /// A field or path parameter of the wrong type or out of its range.
    InvalidValue,
    /// The sku breaks the symbol rules (1-16 bytes of `[A-Z0-9._-]`).
    MalformedSku,
    /// The client order id breaks its rules (1-32 printable ASCII, no spaces).
    MalformedClientOrderId,
    /// The idempotency key breaks the client order id rules.
    MalformedIdempotencyKey,
    // --- the request's meaning (422) ---
    NonPositiveQuantity,
    NonPositivePrice,
    NonPositiveAmount,
    /// quantity × limit price does not fit `i64` minor units.
    AmountOverflow,
    /// Not an instrument this deployment trades (see `InstrumentPolicy`).
    UnknownInstrument,
    // --- transport (4xx) ---
    /// Over `REQUEST_BODY_BYTES_MAX`.
    BodyTooLarge,
    /// A body that is not `application/json`.
    UnsupportedMediaType,
    /// No such route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    // --- who is calling (401, 403) ---
    /// No bearer token, not `Bearer <token>`, or not a token in force.
    Unauthenticated,
    /// The token may not act for this account.
    AccountForbidden,
    /// The operation needs a role the token lacks (`ops`).
    RoleRequired,
    // --- state (404, 409) ---
    OrderNotFound,
    AccountNotFound,
    InstrumentNotFound,
    /// The client order id already names an order with other content.
    ClientOrderIdConflict,
    // --- where the state lives (421, 503) ---
    /// Another node owns the partition holding this state.
    PartitionElsewhere,
    /// No shard owns the partition right now (starting, restarting).
    PartitionUnavailable,
    // --- ours (503, 500) ---
    /// Kafka did not acknowledge the event in time; nothing is promised.
    PublishFailed,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::MalformedJson,
        ErrorCode::UnknownField,
        ErrorCode::DuplicateField,
        ErrorCode::MissingField,
        ErrorCode::InvalidValue,
        ErrorCode::MalformedSku,
        ErrorCode::MalformedClientOrderId,
        ErrorCode::MalformedIdempotencyKey,
        ErrorCode::NonPositiveQuantity,
        ErrorCode::NonPositivePrice,
        ErrorCode::NonPositiveAmount,
        ErrorCode::AmountOverflow,
        ErrorCode::UnknownInstrument,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthenticated,
        ErrorCode::AccountForbidden,
        ErrorCode::RoleRequired,
        ErrorCode::OrderNotFound,
        ErrorCode::AccountNotFound,
        ErrorCode::InstrumentNotFound,
        ErrorCode::ClientOrderIdConflict,
        ErrorCode::PartitionElsewhere,
        ErrorCode::PartitionUnavailable,
        ErrorCode::PublishFailed,
        ErrorCode::Internal,
    ];

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::DuplicateField => "duplicate_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::MalformedSku => "malformed_sku",
            ErrorCode::MalformedClientOrderId => "malformed_client_order_id",
            ErrorCode::MalformedIdempotencyKey => "malformed_idempotency_key",
            ErrorCode::NonPositiveQuantity => "non_positive_quantity",
            ErrorCode::NonPositivePrice => "non_positive_price",
            ErrorCode::NonPositiveAmount => "non_positive_amount",
            ErrorCode::AmountOverflow => "amount_overflow",
            ErrorCode::UnknownInstrument => "unknown_instrument",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AccountForbidden => "account_forbidden",
            ErrorCode::RoleRequired => "role_required",
            ErrorCode::OrderNotFound => "order_not_found",
            ErrorCode::AccountNotFound => "account_not_found",
            ErrorCode::InstrumentNotFound => "instrument_not_found",
            ErrorCode::ClientOrderIdConflict => "client_order_id_conflict",
            ErrorCode::PartitionElsewhere => "partition_elsewhere",
            ErrorCode::PartitionUnavailable => "partition_unavailable",
            ErrorCode::PublishFailed => "publish_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status REST answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedJson
            | ErrorCode::UnknownField
            | ErrorCode::DuplicateField
            | ErrorCode::MissingField
            | ErrorCode::InvalidValue
            | ErrorCode::MalformedSku
            | ErrorCode::MalformedClientOrderId
            | ErrorCode::MalformedIdempotencyKey => 400,
            ErrorCode::NonPositiveQuantity
            | ErrorCode::NonPositivePrice
            | ErrorCode::NonPositiveAmount
            | ErrorCode::AmountOverflow
            | ErrorCode::UnknownInstrument => 422,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::NotFound
            | ErrorCode::OrderNotFound
            | ErrorCode::AccountNotFound
            | ErrorCode::InstrumentNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::AccountForbidden | ErrorCode::RoleRequired => 403,
            ErrorCode::ClientOrderIdConflict => 409,
            ErrorCode::PartitionElsewhere => 421,
            ErrorCode::PartitionUnavailable | ErrorCode::PublishFailed => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The gRPC status code.
    pub const fn grpc_code(self) -> tonic::Code {
        match self.http_status() {
            400 | 415 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            413 => tonic::Code::OutOfRange,
            404 => tonic::Code::NotFound,
            405 => tonic::Code::Unimplemented,
            409 => tonic::Code::AlreadyExists,
            421 => tonic::Code::FailedPrecondition,
            503 => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        }
    }

    /// Whether the same request may succeed later unchanged (the state is
    /// moving, or Kafka was slow); the client's fault otherwise.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::PartitionUnavailable | ErrorCode::PublishFailed
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the code, the field it concerns (if one), a message
/// for humans, and for ownership errors the partition holding the state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Reject {
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
    pub partition: Option<PartitionId>,
}

impl Reject {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Reject {
            code,
            field: None,
            message: message.into(),
            partition: None,
        }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Reject {
            field: Some(field.into()),
            ..Reject::new(code, message)
        }
    }

    pub fn missing(field: &'static str) -> Self {
        Reject::field(
            ErrorCode::MissingField,
            field,
            format!("{field} is required"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Reject::new(ErrorCode::Internal, message)
    }

    /// The state lives in `partition`, which this node does not hold now.
    pub fn not_here(partition: PartitionId, elsewhere: bool) -> Self {
        let (code, message) = if elsewhere {
            (
                ErrorCode::PartitionElsewhere,
                format!(
                    "partition {} is owned by another node; ask that node",
                    partition.0
                ),
            )
        } else {
            (
                ErrorCode::PartitionUnavailable,
                format!(
                    "partition {} has no running owner on this node right now; retry shortly",
                    partition.0
                ),
            )
        };
        Reject {
            partition: Some(partition),
            ..Reject::new(code, message)
        }
    }
}

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the API's Kafka producer: {0}")]
    Producer(String),
    #[error("starting the API runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("REST server: {0}")]
    Rest(#[source] std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error("order API authentication: {0}")]
    Auth(#[from] super::auth::AuthError),
    #[error("order API TLS: {0}")]
    Tls(String),
    #[error("the API thread panicked")]
    Panicked,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_4xx_unless_ours() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            let status = code.http_status();
            let ours = matches!(
                code,
                ErrorCode::PartitionUnavailable | ErrorCode::PublishFailed | ErrorCode::Internal
            );
            assert_eq!(ours, status >= 500, "{text} → {status}");
        }
    }

    #[test]
    fn every_code_is_documented_in_the_openapi_document() {
        let document = include_str!("../../../docs/openapi.yaml");
        for code in ErrorCode::ALL {
            assert!(
                document.contains(&format!("- {}", code.as_str())),
                "docs/openapi.yaml does not list {code}"
            );
        }
    }
}
