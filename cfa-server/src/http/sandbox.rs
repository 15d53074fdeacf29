//! `/sandbox/v1`: the built-in sandbox provider's own API, where a donor confirms an intent.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ApiJson, json_response};
use crate::payments::provider::{ConfirmOutcome, PaymentProvider, ProviderError, Sandbox};
use crate::storage::SandboxIntent;

/// The sandbox routes (mounted only when `payments.sandbox` is on).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/v1/intents/{id}", get(show))
        .route("/sandbox/v1/intents/{id}/confirm", post(confirm))
        .route("/sandbox/v1/intents/{id}/capture", post(capture))
}

fn sandbox(state: &AppState) -> Result<&Sandbox, ApiError> {
    state
        .sandbox
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("the sandbox provider is off (payments.sandbox)".into()))
}

fn body(record: &SandboxIntent) -> serde_json::Value {
    json!({
        "payment_intent_id": record.payment_intent_id,
        "amount_minor": record.amount_minor,
        "currency": record.currency,
        "status": record.status,
        "refunded_minor": record.refunded_minor,
        "status_at": record.status_at,
        "created_at": record.created_at,
    })
}

fn refused(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Refused(m) if m.starts_with("no sandbox intent") => ApiError::NotFound(m),
        ProviderError::Refused(m) => ApiError::Conflict(m),
        ProviderError::Store(e) => e.into(),
    }
}

/// `GET /sandbox/v1/intents/{id}`: the provider's record, as reconciliation sees it.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let sandbox = sandbox(&state)?;
    sandbox.fetch(&id).await.map_err(refused)?;
    let record = state
        .store
        .sandbox_intent(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no sandbox intent {id}")))?;
    Ok(json_response(StatusCode::OK, &body(&record)))
}

#[derive(Deserialize)]
struct Confirm {
    outcome: String,
}

/// `POST /sandbox/v1/intents/{id}/confirm` `{"outcome": "succeed" | "decline" | "authorize_only"}`
async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: ApiJson<Confirm>,
) -> Result<Response, ApiError> {
    let outcome =
        ConfirmOutcome::parse(&request.value.outcome).map_err(|m| ApiError::field("outcome", m))?;
    let record = sandbox(&state)?
        .confirm(&id, outcome)
        .await
        .map_err(refused)?;
    Ok(json_response(StatusCode::ACCEPTED, &body(&record)))
}

/// `POST /sandbox/v1/intents/{id}/capture`: captures an authorized-only intent.
async fn capture(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = sandbox(&state)?.capture(&id).await.map_err(refused)?;
    Ok(json_response(StatusCode::ACCEPTED, &body(&record)))
}
