//! `/api/v1/campaigns`: create, idempotent create-or-update with a client-chosen id, list, show.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, ErrorBody, json_response};
use super::{
    AppState, IdempotencyKeyHeader, PageParams, amount_json, begin_idempotent, commit_response,
    page, parse_id, replayed,
};
use crate::domain::campaign::{Campaign, CampaignStatus, parse_title};
use crate::domain::money::{Currency, MAX_GOAL_MAJOR};
use crate::idempotency::Begin;
use crate::services::campaigns::{self, CampaignDraft, CampaignError, PutOutcome};

/// The campaign routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, put))
}

/// Body of `POST` and `PUT`. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[schema(as = CampaignRequest)]
struct CampaignRequest {
    /// The campaign's title: 1 to 200 characters, no control characters; surrounding spaces
    /// are trimmed.
    #[schema(
        example = "Clean water for Kibera",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    title: String,
    /// The goal, a decimal number with at most as many decimals as the currency has (two for
    /// most, none for `JPY` and `KRW`), > 0 and ≤ 1,000,000,000.
    #[schema(value_type = f64, example = 5000.00, exclusive_minimum = 0, maximum = 1_000_000_000, multiple_of = 0.01)]
    goal_amount: Box<RawValue>,
    /// ISO 4217 code; `USD` by default. Fixed once the campaign exists.
    #[schema(value_type = Option<super::params::CurrencyCode>, example = "USD")]
    currency: Option<String>,
    /// `ACTIVE` (the default) or `CLOSED`.
    #[schema(value_type = Option<super::params::CampaignStatusName>, example = "ACTIVE")]
    status: Option<String>,
}

/// A campaign on the wire.
#[derive(Serialize, ToSchema)]
#[schema(as = Campaign)]
pub struct CampaignBody {
    id: Uuid,
    title: String,
    /// The goal as a decimal number (`5000.00`).
    #[schema(value_type = f64)]
    goal_amount: Box<RawValue>,
    /// The goal in minor units (cents).
    goal_amount_minor: i64,
    #[schema(example = "USD")]
    currency: &'static str,
    /// `ACTIVE` or `CLOSED`.
    #[schema(example = "ACTIVE")]
    status: &'static str,
    /// 1 at creation, +1 per change.
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Campaign> for CampaignBody {
    fn from(c: &Campaign) -> Self {
        CampaignBody {
            id: c.id,
            title: c.title.clone(),
            goal_amount: amount_json(c.goal_minor, c.currency),
            goal_amount_minor: c.goal_minor,
            currency: c.currency.code(),
            status: c.status.as_str(),
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Parses a request into a draft; the goal is checked in the currency named (USD by default)
/// before anything is written, so a request with a bad field saves nothing under its key.
fn draft(req: &CampaignRequest) -> Result<CampaignDraft, ApiError> {
    let title = parse_title(&req.title).map_err(|m| ApiError::field("title", m))?;
    let currency = req
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(|m| ApiError::field("currency", m))?;
    currency
        .unwrap_or(Currency::USD)
        .parse_amount(req.goal_amount.get(), MAX_GOAL_MAJOR)
        .map_err(|e| ApiError::amount("goal_amount", e))?;
    let status = req
        .status
        .as_deref()
        .map(CampaignStatus::parse)
        .transpose()
        .map_err(|m| ApiError::field("status", m))?;
    Ok(CampaignDraft {
        title,
        goal_amount: req.goal_amount.get().to_string(),
        currency,
        status,
    })
}

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::InvalidGoal(e) => ApiError::amount("goal_amount", e),
            CampaignError::CurrencyImmutable(_) => ApiError::Unprocessable {
                code: "currency_immutable",
                field: Some("currency"),
                message: e.to_string(),
            },
            CampaignError::ChangedConcurrently => ApiError::Conflict(e.to_string()),
            CampaignError::Store(e) => e.into(),
        }
    }
}

/// Creates a campaign with a server-chosen id (operator).
#[utoipa::path(
    post,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    operation_id = "create_campaign",
    params(IdempotencyKeyHeader),
    request_body = CampaignRequest,
    security(("operator_key" = [])),
    responses(
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 201, description = "The new campaign", body = CampaignBody),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still in flight", body = ErrorBody),
        (status = 422, description = "A field is invalid (named in `field`), or the `Idempotency-Key` was used for another request", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    _operator: Operator,
    headers: HeaderMap,
    body: ApiJson<CampaignRequest>,
) -> Result<Response, ApiError> {
    let draft = draft(&body.value)?;
    let mut owned =
        match begin_idempotent(&state, &headers, "POST /api/v1/campaigns", &body.document).await? {
            Begin::Replay(saved) => return Ok(replayed(saved)),
            Begin::Proceed(owned) => owned,
        };
    let campaign = match campaigns::create(owned.tx.as_mut(), draft).await {
        Ok(campaign) => campaign,
        Err(e) => return Ok(super::refuse(owned, e.into()).await),
    };
    let response =
        commit_response(owned, StatusCode::CREATED, &CampaignBody::from(&campaign)).await?;
    state.outbox_written();
    Ok(response)
}

/// Creates the campaign with this client-chosen id, or updates it (operator).
///
/// Idempotent: sending the same body again changes nothing and publishes no event. The
/// currency cannot change once the campaign exists.
#[utoipa::path(
    put,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "put_campaign",
    params(("id" = Uuid, Path, description = "The campaign id, chosen by the client")),
    request_body = CampaignRequest,
    security(("operator_key" = [])),
    responses(
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 200, description = "The campaign was updated, or already so", body = CampaignBody),
        (status = 201, description = "The campaign was created", body = CampaignBody),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 409, description = "The campaign changed concurrently; retry", body = ErrorBody),
        (status = 422, description = "A field is invalid, or the currency would change (`currency_immutable`)", body = ErrorBody),
    )
)]
async fn put(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    body: ApiJson<CampaignRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let draft = draft(&body.value)?;
    let (outcome, campaign) = campaigns::put(state.store.as_ref(), id, draft).await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated | PutOutcome::Unchanged => StatusCode::OK,
    };
    state.outbox_written();
    Ok(json_response(status, &CampaignBody::from(&campaign)))
}

/// Lists campaigns, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    operation_id = "list_campaigns",
    params(
        ("status" = Option<super::params::CampaignStatusName>, Query, description = "`ACTIVE` or `CLOSED`"),
        PageParams,
    ),
    responses(
        (status = 200, description = "A bare array of campaigns", body = Vec<CampaignBody>),
        (status = 422, description = "A query parameter is invalid", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page(&query)?;
    let status = query
        .get("status")
        .map(|s| CampaignStatus::parse(s))
        .transpose()
        .map_err(|m| ApiError::field("status", m))?;
    let campaigns = state.store.campaigns(status, limit, offset).await?;
    let bodies: Vec<CampaignBody> = campaigns.iter().map(CampaignBody::from).collect();
    Ok(json_response(StatusCode::OK, &bodies))
}

/// Shows one campaign.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "show_campaign",
    params(("id" = Uuid, Path, description = "The campaign id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
    )
)]
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let campaign = state
        .store
        .campaign(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &CampaignBody::from(&campaign),
    ))
}
