//! `/api/v1/admin`: operator views — dead letters, and replaying one.
//!
//! Dead letters live in two places: outbox rows the relay set aside after too many failed
//! deliveries (`outbox:<row id>`), and, with RabbitMQ, messages a consumer gave up on
//! (`<consumer>:<event id>`, in that consumer's dead-letter queue).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use super::auth::Operator;
use super::error::{ApiError, json_response};
use crate::messaging::rabbit;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/dead-letters", get(list))
        .route("/api/v1/admin/dead-letters/{id}/replay", post(replay))
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
