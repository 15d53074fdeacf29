//! The HTTP side of idempotency keys: reading the `Idempotency-Key` header, and answering with
//! what was saved under it, so every creating handler replays and refuses the same way.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::error::{self, ApiError};
use crate::gateway::client::KnownKeys;
use crate::idempotency::{self, Begin, IdempotencyKey, IdempotentRequest};
use crate::storage::IdempotencyRecord;

/// The `Idempotency-Key` header of a creating request; for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "describes the header to the OpenAPI document; `begin_idempotent` reads it"
)]
pub struct IdempotencyKeyHeader {
    /// Makes a retry safe: a retry with the same key and request gets the saved answer byte for
    /// byte (`Idempotent-Replayed: true`); the same key with another request is 422
    /// `idempotency_key_reused`; while the first is in flight, 409 `idempotency_in_flight`.
    /// Kept 24 hours.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

/// Starts a creating request: replays or refuses it if its `Idempotency-Key` says so, otherwise
/// opens the transaction the effect goes into.
///
/// A key belongs to the endpoint and to whoever sent it: an operator's keys are scoped by their
/// verified API key, so two integrations that both number their requests `1, 2, 3` never see
/// each other's answers nor block each other; anonymous donors share the public scope, where
/// keys are meant to be random.
pub async fn begin_idempotent(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
    document: &Value,
) -> Result<Begin, ApiError> {
    let request = match headers.get("idempotency-key") {
        None => None,
        Some(raw) => {
            let raw = raw
                .to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))?;
            let key =
                IdempotencyKey::parse(raw).map_err(|m| ApiError::field("Idempotency-Key", m))?;
            let scope = match KnownKeys::new(&state.settings.auth.api_keys).verified(headers) {
                Some(who) => format!("{scope} key:{who}"),
                None => scope.to_string(),
            };
            Some(IdempotentRequest::new(&scope, key, document))
        }
    };
    Ok(idempotency::begin(state.store.as_ref(), &state.gate, &state.replays, request).await?)
}

/// Answers a request refused after it took its idempotency key: a business refusal (404, 400,
/// 422) is saved with the key so a retry gets the same answer; anything else (a conflict, a
/// backend down) is not, so the retry can succeed.
pub async fn refuse(owned: idempotency::Owned, error: ApiError) -> Response {
    let (status, _) = error.status_and_code();
    let saved = matches!(status.as_u16(), 400 | 404 | 422);
    let response = error.into_response();
    if !saved {
        if let Err(e) = owned.abandon().await {
            tracing::warn!(error = %e, "rolling back a refused request failed");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Err(e) = owned.save_refusal(status.as_u16(), &bytes).await {
        tracing::warn!(error = %e, "could not save a refusal under its idempotency key");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Saves a successful outcome with its idempotency key, commits, and answers with exactly the
/// bytes that were saved, so a replay cannot differ from the original.
pub async fn commit_response<T: serde::Serialize>(
    owned: idempotency::Owned,
    status: StatusCode,
    body: &T,
) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    owned.save(status.as_u16(), &bytes).await?;
    Ok(error::json_bytes(status, bytes))
}

/// The saved response of an earlier request with the same key, byte for byte.
pub fn replayed(saved: IdempotencyRecord) -> Response {
    let status = StatusCode::from_u16(saved.status_code).unwrap_or(StatusCode::OK);
    let mut response = error::json_bytes(status, saved.body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
