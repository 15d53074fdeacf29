//! `/api/v1/notifications`: what was sent to donors, or is waiting to be (operator).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ErrorBody, json_response};
use super::{AppState, PageParams, page};

/// The notification routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Notifications sent to donors or waiting to be, with their attempts (operator).
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    operation_id = "list_notifications",
    params(
        ("donation_id" = Option<Uuid>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only this donation's notifications"),
        ("status" = Option<super::params::NotificationStatusName>, Query, description = "`PENDING`, `SENT` or `DEAD`"),
        PageParams,
    ),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "A bare array of `{id, event_id, kind, donation_id, \
            recipient, subject, status, attempts, last_error, next_attempt_at, created_at, \
            sent_at}`; `kind` is `receipt`, `failure` or `refund`", body = Vec<serde_json::Value>),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid", body = ErrorBody),
    )
)]
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
        Some(s) if crate::storage::NOTIFICATION_STATUSES.contains(&s.as_str()) => Some(s),
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
