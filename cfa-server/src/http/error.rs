//! One error type for every handler, rendered as `{"detail": …, "code": …}`, and the JSON body
//! extractor whose failures use the same format.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::idempotency::IdempotencyError;
use crate::storage::StoreError;
use crate::wire::JsonError;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, has the wrong type or an invalid value (422).
    #[error("{field}: {message}")]
    Validation {
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body is not JSON (400).
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is not declared as JSON (415).
    #[error("send the body as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is larger than allowed (413).
    #[error("request body is larger than the server accepts (server.body_limit_bytes)")]
    PayloadTooLarge,
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// A state change the life cycle forbids (400).
    #[error("{0}")]
    InvalidTransition(String),
    /// A refused business rule, with its own code (422).
    #[error("{message}")]
    Unprocessable {
        /// Stable code such as `campaign_closed`.
        code: &'static str,
        /// The field concerned.
        field: Option<&'static str>,
        /// Explanation.
        message: String,
    },
    /// A concurrent change won (409).
    #[error("{0}")]
    Conflict(String),
    /// Missing or wrong API key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Refused whoever asks from where it came (403): an operator endpoint or the sandbox asked
    /// from another host while they answer only this one.
    #[error("{0}")]
    Forbidden(String),
    /// A webhook whose signature does not verify (401).
    #[error("{0}")]
    InvalidSignature(String),
    /// A refund that is not allowed (400).
    #[error("{0}")]
    InvalidRefund(String),
    /// Idempotency-Key conflicts (409 in flight, 422 reused).
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// A backend is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests are waiting for the database (503 with `Retry-After`).
    #[error("{message}")]
    Overloaded {
        /// What was full, and when to retry.
        message: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// A bug (500). The message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// HTTP status and stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::InvalidTransition(_) => (StatusCode::BAD_REQUEST, "invalid_transition"),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "local_only"),
            ApiError::InvalidSignature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::InvalidRefund(_) => (StatusCode::BAD_REQUEST, "invalid_refund"),
            ApiError::Idempotency(IdempotencyError::InFlight) => {
                (StatusCode::CONFLICT, "idempotency_in_flight")
            }
            ApiError::Idempotency(IdempotencyError::Mismatch) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::Idempotency(IdempotencyError::Store(e)) => store_status(e),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
        StoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        StoreError::InvalidInput(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        StoreError::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                ApiError::Unavailable(format!("the database is unavailable: {m}"))
            }
            StoreError::Conflict(c) => ApiError::Conflict(format!(
                "a concurrent request changed the same record ({c}); retry"
            )),
            StoreError::InvalidInput(m) => ApiError::field("body", m),
            StoreError::Other(m) => ApiError::Internal(m),
        }
    }
}

/// The body of every error: what went wrong, a stable machine-readable code, and the field
/// concerned when there is one.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    detail: String,
    /// Stable and machine-readable: `validation_error`, `not_found`, `invalid_transition`,
    /// `invalid_refund`, `unauthorized`, `invalid_signature`, `conflict`,
    /// `idempotency_in_flight`, `idempotency_key_reused`, `rate_limited`,
    /// `backend_unavailable`, `overloaded`, …
    #[schema(example = "validation_error")]
    code: &'a str,
    /// The field concerned (422), as a dotted path.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// A refused amount: `validation_error`, or `currency_precision` when only the currency's
    /// lack of a minor unit refuses it (the currency may be the stored campaign's, so the
    /// request alone cannot be checked against it).
    pub fn amount(field: &'static str, e: crate::domain::money::AmountError) -> ApiError {
        match e {
            crate::domain::money::AmountError::WholeUnits(_) => ApiError::Unprocessable {
                code: "currency_precision",
                field: Some(field),
                message: e.to_string(),
            },
            crate::domain::money::AmountError::Invalid(m) => ApiError::field(field, m),
        }
    }
}

/// Whether an optional body was left out: nothing but whitespace, or JSON `null`.
pub fn absent_body(body: &[u8]) -> bool {
    let body = body.trim_ascii();
    body.is_empty() || body == b"null"
}

/// The message of a 5xx, kept out of the response and logged by the middleware.
#[derive(Clone, Debug)]
pub struct InternalMessage(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let field = match &self {
            ApiError::Validation { field, .. } => Some(field.as_str()),
            ApiError::Unprocessable { field, .. } => *field,
            _ => None,
        };
        let detail = match (&self, status.is_server_error()) {
            (ApiError::Unavailable(m), _) => m.clone(),
            (ApiError::Overloaded { message, .. }, _) => message.clone(),
            (_, true) => "internal error; the request id identifies it in the logs".to_string(),
            (_, false) => self.to_string(),
        };
        let body = ErrorBody {
            detail,
            code,
            field,
        };
        let mut response = json_response(status, &body);
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(InternalMessage(self.to_string()));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::Overloaded { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let ApiError::Idempotency(IdempotencyError::InFlight) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Serialises a value as compact JSON with the given status.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => ApiError::Internal(format!("serialising a response: {e}")).into_response(),
    }
}

/// A response whose body is already JSON bytes.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A JSON body: the typed value, and the parsed document (for fingerprints).
pub struct ApiJson<T> {
    /// The typed request.
    pub value: T,
    /// The same body as a JSON document.
    pub document: Value,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::MalformedJson(e.body_text()),
            })?;
        parse_json(&bytes)
    }
}

/// Parses and types a JSON body: syntax errors are 400, type and value errors 422 naming the
/// field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<ApiJson<T>, ApiError> {
    let value = crate::wire::object(bytes).map_err(|e| match e {
        JsonError::Malformed(m) => ApiError::MalformedJson(m),
        JsonError::Field { field, message } => ApiError::Validation { field, message },
    })?;
    // The document only feeds idempotency fingerprints. A number too large for serde_json's
    // `Value` (the handler refuses it with a 422 naming the field) falls back to the raw text.
    let document = serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
    Ok(ApiJson { value, document })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}
