//! `/sandbox/v1`: the built-in sandbox provider's own API, where a donor confirms an intent.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody, json_response};
use super::{AppState, IdempotencyKeyHeader, begin_idempotent, commit_response, replayed};
use crate::idempotency::Begin;
use crate::services::payments::provider::{PaymentProvider, ProviderError};
use crate::services::payments::sandbox::{ConfirmOutcome, Sandbox};
use crate::storage::SandboxIntent;

/// The sandbox routes (mounted only when `payments.sandbox` is on).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(confirm))
        .routes(routes!(capture))
}

/// What the sandbox answers with, for the document: `body` builds it.
const RECORD: &str = "The sandbox's record: `{payment_intent_id, amount_minor, currency, status, \
                      refunded_minor, status_at, created_at}`";

/// A caller the sandbox answers: anyone, unless it answers only this host
/// ([`crate::config::Settings::sandbox_local_only`]).
struct Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.settings.sandbox_local_only() && !super::auth::from_this_host(parts) {
            return Err(ApiError::Forbidden(
                "the sandbox payment provider answers only requests from the server's own host \
                 while payments.sandbox is unset on a public address; set payments.sandbox = true \
                 (CFA_PAYMENTS__SANDBOX=true) to open it to all, or false in production"
                    .into(),
            ));
        }
        Ok(Caller)
    }
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

/// The provider's record of an intent, as reconciliation reads it.
#[utoipa::path(
    get,
    path = "/sandbox/v1/intents/{id}",
    tag = "sandbox",
    operation_id = "show_sandbox_intent",
    params(("id" = String, Path, description = "The payment intent id (`pi_…`)")),
    responses(
        (status = 200, description = RECORD, body = serde_json::Value),
        (status = 404, description = "No such intent, or the sandbox is off (`payments.sandbox`)", body = ErrorBody),
    )
)]
async fn show(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sandbox = sandbox(&state)?;
    sandbox.fetch(&id).await.map_err(refused)?;
    let record = state
        .store
        .sandbox_intent(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no sandbox intent {id}")))?;
    Ok(json_response(StatusCode::OK, &body(&record)))
}

/// How the donor's confirmation turns out.
#[derive(Deserialize, ToSchema)]
#[schema(as = SandboxConfirm)]
struct Confirm {
    /// `succeed` (AUTHORIZED then CAPTURED), `decline` (FAILED) or `authorize_only`
    /// (AUTHORIZED; capture it later).
    #[schema(example = "succeed", value_type = super::params::SandboxOutcome)]
    outcome: String,
}

/// Confirms an intent as the donor would; signed webhooks follow.
///
/// Safe to retry: the same outcome again answers 202 with the same record and queues nothing
/// more; another outcome is 409, naming the one given. `Idempotency-Key` is honoured as on the
/// platform's own creating endpoints.
#[utoipa::path(
    post,
    path = "/sandbox/v1/intents/{id}/confirm",
    tag = "sandbox",
    operation_id = "confirm_sandbox_intent",
    params(("id" = String, Path, description = "The payment intent id (`pi_…`)"), IdempotencyKeyHeader),
    request_body = Confirm,
    responses(
        (status = 202, description = RECORD, body = serde_json::Value),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 404, description = "No such intent, or the sandbox is off", body = ErrorBody),
        (status = 409, description = "The intent was confirmed with another outcome, or cannot be confirmed in its state; or a request with this `Idempotency-Key` is in flight", body = ErrorBody),
        (status = 422, description = "`outcome` is not one of the three, or the `Idempotency-Key` was used for another request", body = ErrorBody),
    )
)]
async fn confirm(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: ApiJson<Confirm>,
) -> Result<Response, ApiError> {
    let outcome =
        ConfirmOutcome::parse(&request.value.outcome).map_err(|m| ApiError::field("outcome", m))?;
    let sandbox = sandbox(&state)?;
    let scope = format!("POST /sandbox/v1/intents/{id}/confirm");
    let mut owned = match begin_idempotent(&state, &headers, &scope, &request.document).await? {
        Begin::Replay(saved) => return Ok(replayed(saved)),
        Begin::Proceed(owned) => owned,
    };
    let record = match sandbox.confirm(owned.tx.as_mut(), &id, outcome).await {
        Ok(record) => record,
        Err(e) => return Ok(super::refuse(owned, refused(e)).await),
    };
    let response = commit_response(owned, StatusCode::ACCEPTED, &body(&record)).await?;
    sandbox.wake();
    Ok(response)
}

/// Captures an authorized-only intent; a signed webhook follows.
#[utoipa::path(
    post,
    path = "/sandbox/v1/intents/{id}/capture",
    tag = "sandbox",
    operation_id = "capture_sandbox_intent",
    params(("id" = String, Path, description = "The payment intent id (`pi_…`)")),
    responses(
        (status = 202, description = RECORD, body = serde_json::Value),
        (status = 404, description = "No such intent, or the sandbox is off", body = ErrorBody),
        (status = 409, description = "The intent is not authorized-only", body = ErrorBody),
    )
)]
async fn capture(
    _caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = sandbox(&state)?.capture(&id).await.map_err(refused)?;
    Ok(json_response(StatusCode::ACCEPTED, &body(&record)))
}
