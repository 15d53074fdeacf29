//! `GET /metrics`: the Prometheus scrape, with the gauges only a scrape can set (read from the
//! backends at that moment rather than counted as things happen).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::config::Role;
use crate::services::CONSUMERS;

/// `GET /metrics`: Prometheus text format; the outbox gauges are read from the database now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format (version 0.0.4): request, donation, webhook and outbox metrics and the standard `process_*` ones (CPU, memory, open file descriptors, start time), each with a `service` label", content_type = "text/plain", body = String))
)]
pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    if state.settings.metrics.listen.is_some() {
        return ApiError::NotFound("/metrics is served on metrics.listen".into()).into_response();
    }
    scrape(State(state)).await
}

/// The router of a separate metrics listener (`metrics.listen`): `/metrics` alone.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Response {
    scrape_gauges(&state).await;
    crate::metrics::collect_process();
    let body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// Sets the gauges read at scrape time: the outbox backlog, the backends' health, the totals
/// cache's hit ratio (totals role) and the dead-letter queues of this process's consumers. Each
/// check is bounded at two seconds, so a sick backend cannot stall a scrape past Prometheus's
/// timeout; it shows as `backend_up 0`.
async fn scrape_gauges(state: &AppState) {
    let bound = Duration::from_secs(2);
    let stats = tokio::time::timeout(bound, state.store.outbox_stats()).await;
    let database_up = matches!(stats, Ok(Ok(_)));
    if let Ok(Ok(stats)) = stats {
        let age = stats.oldest_pending.map_or(0.0, |t| {
            (crate::domain::now() - t).num_milliseconds().max(0) as f64 / 1000.0
        });
        crate::metrics::outbox(stats.pending, age, stats.dead);
    }
    crate::metrics::backend("database", database_up);
    let bus_up = matches!(
        tokio::time::timeout(bound, state.bus.check()).await,
        Ok(Ok(()))
    );
    crate::metrics::backend("bus", bus_up);
    let cache_up = match &state.replays.fast {
        None => true,
        Some(redis) => tokio::time::timeout(bound, redis.ping())
            .await
            .unwrap_or(false),
    };
    crate::metrics::backend("cache", cache_up);
    if state.settings.server.runs(Role::Totals) {
        let (hits, misses) = state.totals_cache.counts();
        crate::metrics::cache_ratio("totals", hits, misses);
    }
    // Only this process's consumers, so a sum over a split deployment counts each queue once.
    let own: Vec<&str> = CONSUMERS
        .iter()
        .filter(|c| state.settings.server.runs(c.role))
        .map(|c| c.name)
        .collect();
    if bus_up
        && !own.is_empty()
        && let Some(dead_letters) = state.bus.dead_letters()
        && let Ok(Ok(counts)) = tokio::time::timeout(bound, dead_letters.counts(&own)).await
    {
        for (consumer, count) in counts {
            crate::metrics::dead_letters(&consumer, count);
        }
    }
}
