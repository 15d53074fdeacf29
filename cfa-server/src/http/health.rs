//! Liveness and readiness.
//!
//! The database is checked on every `/ready` and reported down at once: nothing works without
//! it. The broker and the cache are only degraded when down (donations are still taken), and a
//! single probe that misses its deadline, e.g. a 50 ms Redis ping under CPU load, says little:
//! they are reported down only after [`FAILURES_BEFORE_DOWN`] failed probes in a row
//! ([`Readiness`]), so `/ready` does not flap between `ready` and `degraded`.
//!
//! From the shutdown signal until the process exits `/ready` answers `503` `draining`, so a load
//! balancer stops sending new requests while the ones in flight finish
//! (`server.shutdown_delay_seconds` keeps accepting for that long first).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::json_response;

/// Failed probes in a row after which `/ready` reports the broker or the cache down.
pub const FAILURES_BEFORE_DOWN: u32 = 3;

/// Consecutive failed probes of the backends `/ready` reports as degraded, whichever requests
/// ran them.
#[derive(Debug, Default)]
pub struct Readiness {
    bus: Streak,
    cache: Streak,
    draining: AtomicBool,
}

impl Readiness {
    /// From now on `/ready` answers `503` `draining`: the process is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the process is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Failed probes in a row.
#[derive(Debug, Default)]
struct Streak(AtomicU32);

impl Streak {
    /// Records one probe; answers how many have failed in a row, this one included (0 after a
    /// success).
    fn record(&self, ok: bool) -> u32 {
        if ok {
            self.0.store(0, Ordering::Relaxed);
            return 0;
        }
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            })
            .unwrap_or_default();
        before.saturating_add(1)
    }
}

/// A degradable backend's check: `up`, or `down` only after [`FAILURES_BEFORE_DOWN`] failed
/// probes in a row; a failure short of that is shown (`failed_probes`, `last_error`) but still
/// `up`.
fn degradable_check(backend: &str, error: Option<String>, failed_in_a_row: u32) -> Value {
    let Some(error) = error else {
        return json!({"status": "up", "backend": backend});
    };
    if failed_in_a_row < FAILURES_BEFORE_DOWN {
        json!({"status": "up", "backend": backend, "failed_probes": failed_in_a_row, "last_error": error})
    } else {
        json!({"status": "down", "backend": backend, "failed_probes": failed_in_a_row, "error": error})
    }
}

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
    responses((status = 200, description = "`{\"status\": \"healthy\", \"service\": \"all\" | \"donation+payment…\", \"version\": \"0.1.0\"}`: the process is up; `service` names the roles it runs", body = serde_json::Value))
)]
async fn health(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "status": "healthy",
            "service": crate::metrics::service(&state.settings.server),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
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
        (status = 200, description = "Healthy or degraded: `{status: \"healthy\" | \"degraded\", \
            checks: {database, bus, cache: {status, backend}}, warnings: [...]}`. A broker or \
            cache that is down is `degraded`: donations are still taken. It counts as down after \
            3 failed probes in a row; a failure short of that shows on a check still `up` as \
            `failed_probes` and `last_error`. `warnings` says when \
            operator endpoints are open, unsigned webhooks are accepted or the sandbox provider \
            is public.",
            body = serde_json::Value),
        (status = 503, description = "The database is down: the same body with `status: \
            \"unavailable\"` and the failing check's `error`. Or the process is shutting down \
            (from SIGTERM until it exits): `{status: \"draining\", detail}`; send new requests \
            elsewhere.", body = serde_json::Value),
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.draining() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "draining",
                "detail": "shutting down: finishing the requests in flight; send new ones elsewhere",
            }),
        );
    }
    let database = match state.store.ping().await {
        Ok(()) => json!({"status": "up", "backend": state.store.backend().as_str()}),
        Err(e) => {
            json!({"status": "down", "backend": state.store.backend().as_str(), "error": e.to_string()})
        }
    };
    // The broker being down delays events but loses none (the outbox keeps them), and without
    // the cache everything is served from the database: degraded, still ready to take donations.
    let bus_error = state.bus.check().await.err().map(|e| e.to_string());
    let failed = state.readiness.bus.record(bus_error.is_none());
    let bus = degradable_check(state.bus.name(), bus_error, failed);
    let cache = match &state.replays.fast {
        None => json!({"status": "up", "backend": "in-process"}),
        Some(redis) => {
            let error = (!redis.ping().await).then(|| {
                "no answer within redis.timeout_ms; serving from the database".to_string()
            });
            let failed = state.readiness.cache.record(error.is_none());
            degradable_check("redis", error, failed)
        }
    };
    let bus_up = bus["status"] == "up" && cache["status"] == "up";
    let database_up = database["status"] == "up";
    let mut warnings = Vec::new();
    if state.settings.operators_local_only() {
        warnings.push(
            "operator endpoints answer only this host: no auth.api_keys configured \
             (CFA_AUTH__API_KEYS)",
        );
    } else if state.settings.auth.api_keys.is_empty() {
        warnings
            .push("operator endpoints are open: no auth.api_keys configured (development default)");
    }
    if state.sandbox.is_some() && state.settings.sandbox_local_only() {
        warnings.push(
            "the sandbox payment provider answers only this host (payments.sandbox unset on a \
             public address)",
        );
    } else if state.sandbox.is_some() && !state.settings.server.listen.ip().is_loopback() {
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
            (true, true) => "healthy",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_down_only_after_three_failed_probes_in_a_row() {
        let readiness = Readiness::default();
        let status = |ok: bool| {
            let failed = readiness.cache.record(ok);
            let error = (!ok).then(|| "timed out".to_string());
            degradable_check("redis", error, failed)["status"].clone()
        };
        assert_eq!(status(false), "up", "one slow answer is not an outage");
        assert_eq!(status(false), "up");
        assert_eq!(status(true), "up");
        assert_eq!(status(false), "up", "a success starts the count again");
        assert_eq!(status(false), "up");
        assert_eq!(status(false), "down", "the third failure in a row");
        assert_eq!(status(false), "down");
        assert_eq!(status(true), "up", "back as soon as it answers");
    }

    #[test]
    fn a_failure_short_of_an_outage_is_still_shown() {
        let check = degradable_check("rabbitmq", Some("connection reset".into()), 1);
        assert_eq!(
            check,
            json!({"status": "up", "backend": "rabbitmq", "failed_probes": 1, "last_error": "connection reset"})
        );
        let check = degradable_check("rabbitmq", None, 0);
        assert_eq!(check, json!({"status": "up", "backend": "rabbitmq"}));
    }
}
