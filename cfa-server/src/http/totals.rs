//! `/api/v1/totals`: live campaign totals, and the operator's refresh.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ErrorBody, json_bytes, json_response, parse_json};
use super::{AppState, amount_json, parse_id};
use crate::domain::money::Currency;
use crate::services::totals::{Entry, Source, current, refresh as rebuild};
use crate::storage::CampaignTotals;

/// The totals routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(stream))
        .routes(routes!(refresh))
}

/// Totals on the wire (SPEC §3).
#[derive(Serialize, ToSchema)]
#[schema(as = CampaignTotals)]
struct TotalsBody {
    campaign_id: Uuid,
    /// Completed donations, not counting fully refunded ones.
    total_donations: i64,
    /// The sum, net of refunds, as a decimal number.
    #[schema(value_type = f64)]
    total_amount: Box<RawValue>,
    total_amount_minor: i64,
    unique_donors: i64,
    /// The campaign's goal, as a decimal number.
    #[schema(value_type = f64)]
    goal_amount: Box<RawValue>,
    goal_amount_minor: i64,
    #[schema(example = "USD")]
    currency: String,
    last_updated: DateTime<Utc>,
    /// `cache`, `read_model` or `realtime` (computed from the donations).
    #[schema(example = "read_model")]
    data_source: &'static str,
    /// How old the cached figures are; 0 unless `data_source` is `cache`.
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
        cache_age_seconds: rounded_age(cache_age_seconds),
    }
}

/// A campaign's totals: completed donations net of refunds.
///
/// Served from the cache, else the read model; with `realtime=true`, computed from the
/// donations themselves, which scans them all: an operator's tool (it needs the key whenever
/// keys are configured), not something the public can make the database do in a loop.
#[utoipa::path(
    get,
    path = "/api/v1/totals/campaigns/{id}",
    tag = "totals",
    operation_id = "campaign_totals",
    params(
        ("id" = Uuid, Path, description = "The campaign id"),
        ("realtime" = Option<bool>, Query, description = "Operator: compute from the donations table"),
    ),
    security((), ("operator_key" = [])),
    responses(
        (status = 200, description = "The campaign's totals", body = TotalsBody),
        (status = 401, description = "`realtime=true` without a valid operator key", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 422, description = "The id is not a UUID, or `realtime` is not a boolean", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    operator: Result<Operator, ApiError>,
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
        operator?;
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
    let found = current(state.store.as_ref(), state.totals_cache.as_ref(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(match &found.source {
        Source::Cache(entry) => cached(entry),
        Source::ReadModel => json_response(StatusCode::OK, &body(&found.totals, "read_model", 0.0)),
    })
}

/// A cached entry's answer: its figures are serialised once per entry, and a read adds only
/// their age, which comes last.
fn cached(entry: &Entry) -> Response {
    let age = entry.at.elapsed().as_secs_f64();
    let prefix = entry.rendered(|totals| Bytes::from(ageless(totals)));
    match with_age(&prefix, age) {
        Some(whole) => json_bytes(StatusCode::OK, whole),
        None => json_response(StatusCode::OK, &body(&entry.totals, "cache", age)),
    }
}

/// The body of cached totals up to the value of `cache_age_seconds`; empty if it cannot be
/// cut there.
fn ageless(totals: &CampaignTotals) -> Vec<u8> {
    let Ok(mut whole) = serde_json::to_vec(&body(totals, "cache", 0.0)) else {
        return Vec::new();
    };
    if !whole.ends_with(br#""cache_age_seconds":0.0}"#) {
        return Vec::new();
    }
    whole.truncate(whole.len() - b"0.0}".len());
    whole
}

/// `ageless` completed with an age, as [`body`] rounds and serialises it.
fn with_age(ageless: &[u8], age_seconds: f64) -> Option<Vec<u8>> {
    if ageless.is_empty() {
        return None;
    }
    let mut whole = Vec::with_capacity(ageless.len() + 8);
    whole.extend_from_slice(ageless);
    serde_json::to_writer(&mut whole, &rounded_age(age_seconds)).ok()?;
    whole.push(b'}');
    Some(whole)
}

/// An age in seconds to the millisecond, as the body shows it.
fn rounded_age(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// A campaign's totals as server-sent events, as they change.
///
/// The first event carries the current totals; each change the totals consumer applies sends
/// another (`event: totals`, the same JSON as `GET /api/v1/totals/campaigns/{id}`, with
/// `data_source: "live"`). The figures are read once per change for all viewers of the
/// campaign, and the stream takes no admission turn. A comment line every 15 s keeps idle
/// proxies from closing it; it ends when the server shuts down (`EventSource` reconnects).
#[utoipa::path(
    get,
    path = "/api/v1/totals/campaigns/{id}/stream",
    tag = "totals",
    operation_id = "campaign_totals_stream",
    params(("id" = Uuid, Path, description = "The campaign id")),
    responses(
        (status = 200, description = "`text/event-stream` of `event: totals` events whose data is the campaign's totals", content_type = "text/event-stream", body = TotalsBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
        (status = 503, description = "The server is shutting down", body = ErrorBody),
    )
)]
async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Subscribe before the first read, so a change between the two is not lost.
    let updates = state
        .live
        .subscribe(id)
        .ok_or_else(|| ApiError::Unavailable("the server is shutting down".into()))?;
    let first = current(state.store.as_ref(), state.totals_cache.as_ref(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("campaign {id} not found")))?;
    let first = sse_event(&first.totals);
    let updates = futures::stream::unfold(updates, |mut updates| async move {
        loop {
            match updates.recv().await {
                Ok(totals) => return Some((sse_event(&totals), updates)),
                // A slow viewer skips what it missed: only the newest figures matter.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let events = futures::stream::once(std::future::ready(first)).chain(updates);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

fn sse_event(totals: &CampaignTotals) -> Result<Event, Infallible> {
    let data = serde_json::to_string(&body(totals, "live", 0.0)).unwrap_or_default();
    Ok(Event::default().event("totals").data(data))
}

/// Which totals to rebuild.
#[derive(Deserialize, ToSchema)]
#[schema(as = TotalsRefreshRequest)]
struct RefreshRequest {
    /// One campaign; every campaign by default.
    #[schema(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    campaign_id: Option<Uuid>,
}

/// Rebuilds the totals read model from the donations (operator).
///
/// Reports the drift it corrected, campaign by campaign. An empty body rebuilds every campaign.
#[utoipa::path(
    post,
    path = "/api/v1/totals/refresh",
    tag = "totals",
    operation_id = "refresh_totals",
    request_body(content = Option<RefreshRequest>, description = "Optional: `{campaign_id?}`, or no body at all"),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "`{campaigns: [{campaign_id, before, after, corrected}], \
            checked, corrected}`", body = serde_json::Value),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 422, description = "`campaign_id` is not a UUID", body = ErrorBody),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    _operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let request = if super::error::absent_body(&body) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_read_answers_the_same_bytes_as_serialising_it_whole() {
        let totals = CampaignTotals {
            campaign_id: Uuid::nil(),
            total_minor: 123_450,
            completed_count: 12,
            unique_donors: 9,
            goal_minor: 500_000,
            currency: "JPY".into(),
            last_updated: Utc::now(),
            campaign_version: 3,
        };
        let ageless = ageless(&totals);
        assert!(!ageless.is_empty());
        for age in [0.0, 0.0004, 0.008, 0.0125, 1.0, 59.999_6, 86_400.25] {
            let whole = serde_json::to_vec(&body(&totals, "cache", age)).expect("serialised");
            assert_eq!(
                String::from_utf8(with_age(&ageless, age).expect("completed")),
                String::from_utf8(whole),
                "age {age}"
            );
        }
    }
}
