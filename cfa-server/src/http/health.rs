//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::json_response;

/// `/health`, `/ready` and the seed's per-service health aliases (served, not documented
/// separately: `/health` names them).
pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(version));
    for service in crate::config::SERVICES {
        router = router.route(&format!("/api/v1/{service}/health"), get(health));
    }
    router
}

/// Liveness: the process is up.
///
/// The seed's per-service aliases `/api/v1/donations/health`, `/api/v1/payments/health`,
/// `/api/v1/totals/health` and `/api/v1/notifications/health` answer the same.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value))
)]
async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The build: its version and the git revision it was built from.
///
/// Open, like `/health`; load reports and the operator CLI record which build they ran against.
#[utoipa::path(
    get,
    path = "/version",
    tag = "health",
    operation_id = "version",
    responses((status = 200, description = "`{\"version\": \"0.1.0\", \"git_revision\": \"<40 hex digits, -dirty when built from a modified checkout, or unknown>\"}`", body = serde_json::Value))
)]
async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "git_revision": env!("CFA_GIT_REVISION"),
        }),
    )
}

/// Readiness: every backend answers; the body says which one does not.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready or degraded: `{status: \"ready\" | \"degraded\", \
            checks: {database, bus, cache: {status, backend}}, warnings: [...]}`. A broker or \
            cache that is down is `degraded`: donations are still taken. `warnings` says when \
            operator endpoints are open, unsigned webhooks are accepted or the sandbox provider \
            is public.",
            body = serde_json::Value),
        (status = 503, description = "The database is down: the same body with `status: \
            \"unavailable\"` and the failing check's `error`.", body = serde_json::Value),
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "up", "backend": state.store.backend().as_str()}),
        Err(e) => {
            json!({"status": "down", "backend": state.store.backend().as_str(), "error": e.to_string()})
        }
    };
    let bus = match state.bus.check().await {
        Ok(()) => json!({"status": "up", "backend": state.bus.name()}),
        Err(e) => json!({"status": "down", "backend": state.bus.name(), "error": e.to_string()}),
    };
    // The broker being down delays events but loses none (the outbox keeps them): degraded,
    // still ready to take donations.
    let bus_up = bus["status"] == "up";
    let cache = match &state.replays.fast {
        None => json!({"status": "up", "backend": "in-process"}),
        Some(redis) if redis.ping().await => json!({"status": "up", "backend": "redis"}),
        Some(_) => {
            json!({"status": "down", "backend": "redis", "detail": "serving from the database"})
        }
    };
    let bus_up = bus_up && cache["status"] == "up";
    let database_up = database["status"] == "up";
    let mut warnings = Vec::new();
    if state.settings.auth.api_keys.is_empty() {
        warnings
            .push("operator endpoints are open: no auth.api_keys configured (development default)");
    }
    if state.sandbox.is_some() && !state.settings.server.listen.ip().is_loopback() {
        warnings.push(
            "the sandbox payment provider is on and public: anyone can confirm a payment \
             (payments.sandbox = true)",
        );
    }
    if state.settings.payments.allow_unsigned_webhooks {
        warnings.push("unsigned webhooks are accepted (payments.allow_unsigned_webhooks = true)");
    }
    let body = json!({
        "status": match (database_up, bus_up) {
            (false, _) => "unavailable",
            (true, false) => "degraded",
            (true, true) => "ready",
        },
        "checks": {
            "database": database,
            "bus": bus,
            "cache": cache,
        },
        "warnings": warnings,
    });
    let status = if database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}
