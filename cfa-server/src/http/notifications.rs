//! `/api/v1/notifications`: what was sent to donors, or is waiting to be (operator).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, json_response};
use super::{AppState, page};

/// The notification routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/notifications", get(list))
}

/// `GET /api/v1/notifications?donation_id=&status=&limit=&offset=`
async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page(&query)?;
    let donation_id = query
        .get("donation_id")
        .map(|d| Uuid::parse_str(d))
        .transpose()
        .map_err(|_| ApiError::field("donation_id", "must be a UUID"))?;
    let status = match query.get("status").map(|s| s.to_ascii_uppercase()) {
        None => None,
        Some(s) if ["PENDING", "SENT", "DEAD"].contains(&s.as_str()) => Some(s),
        Some(_) => return Err(ApiError::field("status", "must be PENDING, SENT or DEAD")),
    };
    let rows = state
        .store
        .notifications(donation_id, status.as_deref(), limit, offset)
        .await?;
    let body: Vec<_> = rows
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "event_id": n.event_id,
                "kind": n.kind,
                "donation_id": n.donation_id,
                "recipient": n.recipient,
                "subject": n.subject,
                "status": n.status,
                "attempts": n.attempts,
                "last_error": n.last_error,
                "next_attempt_at": n.next_attempt_at,
                "created_at": n.created_at,
                "sent_at": n.sent_at,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &body))
}
