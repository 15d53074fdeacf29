//! `/api/v1/admin`: operator views — dead letters (and replaying one), the outbox, recent
//! webhook deliveries (and replaying one), and counts for dashboards. All need the operator key.
//!
//! Dead letters live in two places: outbox rows the relay set aside after too many failed
//! deliveries (`outbox:<row id>`), and, with RabbitMQ, messages a consumer gave up on
//! (`<consumer>:<event id>`, in that consumer's dead-letter queue).

use axum::Router;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Operator;
use super::error::{ApiError, json_response};
use crate::messaging::rabbit;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/dead-letters", get(list))
        .route("/api/v1/admin/dead-letters/{id}/replay", post(replay))
        .route("/api/v1/admin/outbox", get(outbox))
        .route("/api/v1/admin/webhooks", get(webhooks))
        .route("/api/v1/admin/webhooks/{id}/replay", post(replay_webhook))
        .route("/api/v1/admin/stats", get(stats))
}

/// `GET /api/v1/admin/outbox`: pending rows, the age of the oldest, sent and dead rows.
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

/// `GET /api/v1/admin/webhooks?limit=&offset=`: received webhook deliveries, newest first, with
/// their outcomes.
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

/// `POST /api/v1/admin/webhooks/{id}/replay`: applies a stored delivery's request again, as a
/// new delivery (`replay:<id>:<uuid>`), through the same checks as any webhook: the state machine
/// decides, so a replay never applies an event twice. Answers with the new outcome.
async fn replay_webhook(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(record) = state.store.webhook_record(&id).await? else {
        return Err(ApiError::NotFound(format!("no webhook delivery {id}")));
    };
    if record.request.is_empty() {
        return Err(ApiError::NotFound(format!(
            "webhook delivery {id} was received before requests were kept; it cannot be replayed"
        )));
    }
    let key = format!("replay:{id}:{}", uuid::Uuid::new_v4());
    tracing::info!(%id, replay = %key, "webhook replayed by an operator");
    super::payments::apply_webhook(&state, key, &record.request, Some(id)).await
}

/// `GET /api/v1/admin/stats`: counts of campaigns, donations by status, webhook outcomes and
/// notifications by status, plus the outbox.
async fn stats(State(state): State<AppState>, _operator: Operator) -> Result<Response, ApiError> {
    let stats = state.store.admin_stats().await?;
    let outbox = state.store.outbox_stats().await?;
    let mut body = serde_json::to_value(&stats).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["donations_total"] = json!(stats.donations.values().sum::<i64>());
    body["outbox"] = json!({"pending": outbox.pending, "sent": outbox.sent, "dead": outbox.dead, "oldest_pending_at": outbox.oldest_pending});
    body["at"] = json!(crate::domain::now());
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/v1/admin/dead-letters`
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
    if !state.settings.amqp.url.0.is_empty() {
        let names: Vec<&str> = state.consumers.to_vec();
        broker = rabbit::dead_letters(&state.settings.amqp, &names, 100)
            .await
            .map_err(|e| ApiError::Unavailable(format!("RabbitMQ: {e}")))?
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

/// `POST /api/v1/admin/dead-letters/{id}/replay`
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
        if state.settings.amqp.url.0.is_empty() || !state.consumers.contains(&source) {
            return Err(ApiError::NotFound(format!("no dead letter {id}")));
        }
        rabbit::replay(&state.settings.amqp, source, rest)
            .await
            .map_err(|e| ApiError::Unavailable(format!("RabbitMQ: {e}")))?
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
