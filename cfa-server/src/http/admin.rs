//! `/api/v1/admin`: operator views — dead letters (and replaying one), the outbox, recent
//! webhook deliveries (and replaying one), and counts for dashboards. All need the operator key.
//!
//! Dead letters live in two places: outbox rows the relay set aside after too many failed
//! deliveries (`outbox:<row id>`), and, when the bus keeps dead letters (RabbitMQ does), messages
//! a consumer gave up on (`<consumer>:<event id>`, in that consumer's dead-letter queue).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Operator;
use super::error::{ApiError, ErrorBody, json_response};
use super::{AppState, PageParams};
use crate::services::payments::webhooks;

/// The admin routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(replay))
        .routes(routes!(outbox))
        .routes(routes!(webhooks))
        .routes(routes!(replay_webhook))
        .routes(routes!(stats))
}

/// The outbox: pending rows, the age of the oldest, sent and dead rows.
#[utoipa::path(
    get,
    path = "/api/v1/admin/outbox",
    tag = "admin",
    operation_id = "outbox_status",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "`{pending, oldest_pending_at, oldest_pending_age_seconds, \
            sent, dead, bus}`: the relay's backlog", body = serde_json::Value),
        (status = 401, description = "No valid operator key", body = ErrorBody),
    )
)]
async fn outbox(State(state): State<AppState>, _operator: Operator) -> Result<Response, ApiError> {
    let stats = state.store.outbox_stats().await?;
    let now = crate::domain::now();
    let oldest_age_seconds = stats
        .oldest_pending
        .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "pending": stats.pending,
            "oldest_pending_at": stats.oldest_pending,
            "oldest_pending_age_seconds": oldest_age_seconds,
            "sent": stats.sent,
            "dead": stats.dead,
            "bus": state.bus.name(),
        }),
    ))
}

/// Received webhook deliveries, newest first, with their outcomes.
#[utoipa::path(
    get,
    path = "/api/v1/admin/webhooks",
    tag = "admin",
    operation_id = "list_webhooks",
    params(PageParams),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "A bare array of `{id, received_at, payment_intent_id, \
            event_id, status, outcome, status_code, response, replay_of, replayable}`; `id` is \
            the delivery's deduplication key", body = Vec<serde_json::Value>),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 422, description = "`limit` or `offset` is invalid", body = ErrorBody),
    )
)]
async fn webhooks(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, offset) = super::page(&query)?;
    let records = state.store.recent_webhooks(limit, offset).await?;
    let list: Vec<_> = records
        .iter()
        .map(|r| {
            let request: Value = serde_json::from_slice(&r.request).unwrap_or(Value::Null);
            json!({
                "id": r.dedup_key,
                "received_at": r.received_at,
                "payment_intent_id": r.payment_intent_id,
                "event_id": r.event_id,
                "status": request.get("status").cloned().unwrap_or(Value::Null),
                "outcome": r.outcome,
                "status_code": r.status_code,
                "response": serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
                "replay_of": r.replay_of,
                "replayable": !r.request.is_empty(),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &list))
}

/// Applies a stored webhook delivery again.
///
/// The stored request goes through the same checks as any webhook, as a new delivery
/// (`replay:<id>:<uuid>`): the state machine decides, so a replay never applies an event twice.
/// The answer is the new outcome, as for a delivery.
#[utoipa::path(
    post,
    path = "/api/v1/admin/webhooks/{id}/replay",
    tag = "admin",
    operation_id = "replay_webhook",
    params(("id" = String, Path, description = "The delivery's deduplication key, as listed")),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "`processed` or `ignored`, as for a delivery", body = serde_json::Value),
        (status = 400, description = "`rejected`, as for a delivery", body = serde_json::Value),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such delivery, or one kept without its request", body = ErrorBody),
    )
)]
async fn replay_webhook(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reply = webhooks::replay(state.store.as_ref(), &id).await?;
    state.webhook_answered(&reply);
    Ok(super::payments::webhook_reply(reply))
}

/// Counts for dashboards.
///
/// Campaigns, donations by status, webhook outcomes and notifications by status, plus the
/// outbox.
#[utoipa::path(
    get,
    path = "/api/v1/admin/stats",
    tag = "admin",
    operation_id = "admin_stats",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "`{campaigns, donations: {STATUS: n}, donations_total, \
            webhooks: {outcome: n}, notifications: {STATUS: n}, outbox: {pending, sent, dead, \
            oldest_pending_at}, at}`", body = serde_json::Value),
        (status = 401, description = "No valid operator key", body = ErrorBody),
    )
)]
async fn stats(State(state): State<AppState>, _operator: Operator) -> Result<Response, ApiError> {
    let stats = state.store.admin_stats().await?;
    let outbox = state.store.outbox_stats().await?;
    let mut body = serde_json::to_value(&stats).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["donations_total"] = json!(stats.donations.values().sum::<i64>());
    body["outbox"] = json!({"pending": outbox.pending, "sent": outbox.sent, "dead": outbox.dead, "oldest_pending_at": outbox.oldest_pending});
    body["at"] = json!(crate::domain::now());
    Ok(json_response(StatusCode::OK, &body))
}

/// Dead letters: outbox rows and broker messages that were given up on.
///
/// Outbox rows set aside after `outbox.max_attempts` (`outbox:<row>`), and with RabbitMQ the
/// messages in the consumers' dead-letter queues (`<consumer>:<event id>`).
#[utoipa::path(
    get,
    path = "/api/v1/admin/dead-letters",
    tag = "admin",
    operation_id = "list_dead_letters",
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "A bare array of `{id, source: \"outbox\" | \"broker\", \
            event_id, event_type, attempts, last_error, consumer?}`", body = Vec<serde_json::Value>),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 503, description = "RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>, _operator: Operator) -> Result<Response, ApiError> {
    let outbox: Vec<_> = state
        .store
        .dead_outbox(100)
        .await?
        .into_iter()
        .map(|(row, error)| {
            json!({
                "id": format!("outbox:{}", row.id),
                "source": "outbox",
                "event_id": row.event.event_id,
                "event_type": row.event.event_type,
                "attempts": row.attempts,
                "last_error": error,
            })
        })
        .collect();
    let mut broker = Vec::new();
    if let Some(dead_letters) = state.bus.dead_letters() {
        broker = dead_letters
            .list(&state.consumers, 100)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .into_iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect();
    }
    let mut all = outbox;
    all.extend(broker.into_iter().map(|mut d| {
        d["source"] = json!("broker");
        d
    }));
    Ok(json_response(StatusCode::OK, &all))
}

/// Replays a dead letter: delivers it again.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/{id}/replay",
    tag = "admin",
    operation_id = "replay_dead_letter",
    params(("id" = String, Path, pattern = "^(outbox:[0-9]{1,18}|(?!outbox:)[^:]+:.+)$", description = "`outbox:<row>` or `<consumer>:<event id>`")),
    security(("operator_key" = [])),
    responses(
        (status = 202, description = "`{id, status: \"replayed\"}`", body = serde_json::Value),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 422, description = "The id has neither form", body = ErrorBody),
        (status = 503, description = "RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
async fn replay(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (source, rest) = id
        .split_once(':')
        .ok_or_else(|| ApiError::field("id", "must be outbox:<row> or <consumer>:<event id>"))?;
    let replayed = if source == "outbox" {
        let row: i64 = rest
            .parse()
            .map_err(|_| ApiError::field("id", "outbox:<row> needs a row number"))?;
        let revived = state.store.revive_outbox(row).await?;
        state.outbox_written();
        revived
    } else {
        let known = state.consumers.contains(&source);
        let Some(dead_letters) = state.bus.dead_letters().filter(|_| known) else {
            return Err(ApiError::NotFound(format!("no dead letter {id}")));
        };
        dead_letters
            .replay(source, rest)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
    };
    if !replayed {
        return Err(ApiError::NotFound(format!("no dead letter {id}")));
    }
    tracing::info!(%id, "dead letter replayed by an operator");
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"id": id, "status": "replayed"}),
    ))
}
