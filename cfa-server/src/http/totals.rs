//! `/api/v1/totals`: live campaign totals, and the operator's refresh.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, json_response, parse_json};
use super::{AppState, amount_json, parse_id};
use crate::domain::money::Currency;
use crate::storage::CampaignTotals;
use crate::totals::refresh as rebuild;

/// The totals routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/totals/campaigns/{id}", get(show))
        .route("/api/v1/totals/refresh", post(refresh))
}

/// Totals on the wire (SPEC §3).
#[derive(Serialize)]
struct TotalsBody {
    campaign_id: Uuid,
    total_donations: i64,
    total_amount: Box<RawValue>,
    total_amount_minor: i64,
    unique_donors: i64,
    goal_amount: Box<RawValue>,
    goal_amount_minor: i64,
    currency: String,
    last_updated: DateTime<Utc>,
    data_source: &'static str,
    cache_age_seconds: f64,
}

fn body(t: &CampaignTotals, data_source: &'static str, cache_age_seconds: f64) -> TotalsBody {
    let currency = Currency::parse(&t.currency).unwrap_or(Currency::USD);
    TotalsBody {
        campaign_id: t.campaign_id,
        total_donations: t.completed_count,
        total_amount: amount_json(t.total_minor, currency),
        total_amount_minor: t.total_minor,
        unique_donors: t.unique_donors,
        goal_amount: amount_json(t.goal_minor, currency),
        goal_amount_minor: t.goal_minor,
        currency: t.currency.clone(),
        last_updated: t.last_updated,
        data_source,
        cache_age_seconds: (cache_age_seconds * 1000.0).round() / 1000.0,
    }
}

/// `GET /api/v1/totals/campaigns/{id}[?realtime=true]`: from the cache, else the read model;
/// with `realtime=true`, computed from the donations themselves.
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let realtime = match query.get("realtime").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::field("realtime", "must be true or false")),
    };
    let not_found = || ApiError::NotFound(format!("campaign {id} not found"));
    if realtime {
        let campaign = state.store.campaign(id).await?.ok_or_else(not_found)?;
        let (total_minor, completed_count, unique_donors) = state.store.realtime_totals(id).await?;
        let totals = CampaignTotals {
            campaign_id: id,
            total_minor,
            completed_count,
            unique_donors,
            goal_minor: campaign.goal_minor,
            currency: campaign.currency.code().to_string(),
            last_updated: crate::domain::now(),
            campaign_version: campaign.version,
        };
        return Ok(json_response(
            StatusCode::OK,
            &body(&totals, "realtime", 0.0),
        ));
    }
    if let Some((totals, cached_at)) = state.totals_cache.get(id).await {
        let age = cached_at.elapsed().as_secs_f64();
        return Ok(json_response(StatusCode::OK, &body(&totals, "cache", age)));
    }
    let generation = state.totals_cache.generation();
    let totals = match state.store.campaign_totals(id).await? {
        Some(totals) => totals,
        None => {
            // No event has reached the read model yet: a campaign with no donations.
            let campaign = state.store.campaign(id).await?.ok_or_else(not_found)?;
            CampaignTotals {
                campaign_id: id,
                total_minor: 0,
                completed_count: 0,
                unique_donors: 0,
                goal_minor: campaign.goal_minor,
                currency: campaign.currency.code().to_string(),
                last_updated: campaign.updated_at,
                campaign_version: campaign.version,
            }
        }
    };
    state.totals_cache.put(totals.clone(), generation).await;
    Ok(json_response(
        StatusCode::OK,
        &body(&totals, "read_model", 0.0),
    ))
}

#[derive(Deserialize)]
struct RefreshRequest {
    campaign_id: Option<Uuid>,
}

/// `POST /api/v1/totals/refresh` `{campaign_id?}` (operator): rebuilds the read model from the
/// donations and reports the drift corrected, campaign by campaign.
async fn refresh(
    State(state): State<AppState>,
    _operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshRequest { campaign_id: None }
    } else {
        parse_json::<RefreshRequest>(&body)?.value
    };
    if let Some(id) = request.campaign_id
        && state.store.campaign(id).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("campaign {id} not found")));
    }
    let drift = rebuild(
        state.store.as_ref(),
        state.totals_cache.as_ref(),
        request.campaign_id,
    )
    .await?;
    let corrected = drift.iter().filter(|d| d.corrected).count();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"campaigns": drift, "checked": drift.len(), "corrected": corrected}),
    ))
}
