//! The HTTP layer: handlers that translate between JSON and the domain, and the middleware
//! every request passes through.
//!
//! # Layout
//! - [`error`]: [`error::ApiError`] and the JSON body extractor.
//! - [`admin`]: dead letters for operators.
//! - [`auth`]: the operator-key extractor.
//! - [`health`]: `/health`, `/ready` and the per-service aliases.
//! - [`campaigns`], [`donations`], [`payments`], [`totals`]: the resources.
//! - [`sandbox`]: the built-in sandbox provider's API.
//!
//! Each resource's `router()` is a [`utoipa_axum`] router whose routes are registered from their
//! `#[utoipa::path]` annotations, so every route served is in the OpenAPI document ([`openapi`],
//! served at `GET /api/v1/openapi.json` and printed by `cfa-server openapi`).

pub mod admin;
pub mod auth;
pub mod campaigns;
pub mod donations;
pub mod error;
pub mod health;
pub mod notifications;
pub mod payments;
pub mod sandbox;
pub mod totals;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::config::{Role, Secret, Settings};
use crate::domain::money::Currency;
use crate::idempotency::{self, Begin, IdempotencyKey, IdempotentRequest, InFlightGate};
use crate::messaging::bus::EventBus;
use crate::services::notifications::{HistoryLinks, Mailer};
use crate::services::payments::ReconcileStats;
use crate::services::payments::provider::PaymentProvider;
use crate::services::payments::sandbox::Sandbox;
use crate::services::totals::TotalsCache;
use crate::storage::{IdempotencyRecord, Store};
use error::{ApiError, InternalMessage, json_response};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The effective configuration.
    pub settings: Arc<Settings>,
    /// Idempotency keys in flight in this process.
    pub gate: Arc<InFlightGate>,
    /// Wakes the relay when a transaction wrote to the outbox.
    pub outbox_wake: Arc<Notify>,
    /// The bus the relay publishes to (in-process or RabbitMQ).
    pub bus: Arc<dyn EventBus>,
    /// The gateway's upstreams, when this process runs the gateway role (split mode).
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
    /// Rate limits, when on.
    pub limits: Option<Arc<crate::gateway::limits::RateLimits>>,
    /// Where idempotent replays are looked up first (Redis, if configured).
    pub replays: idempotency::Replays,
    /// The names of the consumers (their queues, with RabbitMQ).
    pub consumers: Arc<Vec<&'static str>>,
    /// The payment provider, if one is configured.
    pub provider: Option<Arc<dyn PaymentProvider>>,
    /// The built-in sandbox provider, when it is on.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Secrets webhooks may be signed with (configured or generated).
    pub webhook_secrets: Arc<Vec<Secret>>,
    /// What reconciliation did.
    pub reconcile: Arc<ReconcileStats>,
    /// The totals cache.
    pub totals_cache: Arc<dyn TotalsCache>,
    /// Signs and checks donor history links.
    pub history_links: HistoryLinks,
    /// Where notifications go.
    pub mailer: Arc<dyn Mailer>,
    /// Wakes the notification sender.
    pub mail_wake: Arc<Notify>,
}

impl AppState {
    /// Tells the relay that new outbox rows are committed.
    pub fn outbox_written(&self) {
        self.outbox_wake.notify_one();
    }

    /// Tells the sandbox that webhooks were queued.
    pub fn sandbox_wake(&self) {
        if let Some(sandbox) = &self.sandbox {
            sandbox.wake();
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes of a process that runs the roles `runs` accepts, with the OpenAPI document of
/// exactly those routes. `app` and [`openapi`] both start here, so what is served and what is
/// documented come from one list (only the seed's per-service health aliases are served without
/// an entry of their own; `/health` names them).
fn api(runs: impl Fn(Role) -> bool) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::default()
        .merge(health::router())
        .routes(routes!(openapi_json))
        .routes(routes!(metrics_text));
    if runs(Role::Donation) {
        router = router
            .merge(campaigns::router())
            .merge(donations::router())
            .merge(admin::router());
    }
    if runs(Role::Payment) {
        router = router.merge(payments::router()).merge(sandbox::router());
    }
    if runs(Role::Totals) {
        router = router.merge(totals::router());
    }
    if runs(Role::Notification) {
        router = router.merge(notifications::router());
    }
    router
}

/// The OpenAPI document of the whole platform, every role included: behind the gateway a client
/// sees all of it, whichever process answers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::tag::TagBuilder;
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder};

    let mut document = api(|_| true).into_openapi();
    document.info = InfoBuilder::new()
        .title("CareForAll API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Campaigns, donations, payments and their provider webhooks, live totals, donor \
             notifications and operator views. Bodies are compact JSON; amounts are decimal \
             numbers with at most two decimals, and responses also carry the integer \
             `amount_minor`. Errors are `{detail, code, field?}`. Operator endpoints need \
             `Authorization: Bearer <key>` whenever `auth.api_keys` is configured. Every \
             `/api/v1` endpoint may also answer 429 (rate limited, with `Retry-After`) and 503 \
             (a backend is down).",
        ))
        .build();
    let components = document
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        "operator_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An operator key from `auth.api_keys`."))
                .build(),
        ),
    );
    document.tags = Some(
        [
            ("campaigns", "Fundraising campaigns (donation service)."),
            (
                "donations",
                "Donations, donor history and the operator's status override (donation service).",
            ),
            (
                "payments",
                "Payment intents, provider webhooks and refunds (payment service).",
            ),
            (
                "sandbox",
                "The built-in sandbox payment provider, where a donor confirms an intent.",
            ),
            ("totals", "Live campaign totals (totals service)."),
            (
                "notifications",
                "Receipts and other mail to donors (notification service).",
            ),
            (
                "admin",
                "Operator views: outbox, dead letters, webhook deliveries, counts.",
            ),
            ("health", "Liveness, readiness and this document."),
        ]
        .into_iter()
        .map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        })
        .collect(),
    );
    document
}

/// The document, serialised once: it depends only on the code.
static OPENAPI_JSON: LazyLock<bytes::Bytes> = LazyLock::new(|| {
    serde_json::to_vec(&openapi())
        .expect("an OpenAPI document serialises to JSON")
        .into()
});

/// This OpenAPI document, generated from the handlers' types.
///
/// Open (no key) in every process; behind the gateway it describes every service.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value))
)]
async fn openapi_json() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON.clone(),
    )
        .into_response()
}

/// The whole API with its middleware.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let server = &settings.server;
    let (mut router, _) = api(|role| server.runs(role)).split_for_parts();
    // Applied around the fallback too, so the gateway's proxied requests are limited.
    let rate_limits = state
        .limits
        .clone()
        .map(|l| middleware::from_fn_with_state(l, crate::gateway::limits::limit));
    // Routes served here win; the gateway sends everything else to the upstreams.
    router = match &state.gateway {
        Some(gateway) => router.fallback_service(
            Router::new()
                .fallback(crate::gateway::proxy)
                .with_state(gateway.clone()),
        ),
        None => router.fallback(not_found),
    };
    if let Some(rate_limits) = rate_limits {
        router = router.layer(rate_limits);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn(log_requests))
                .layer(middleware::from_fn(json_errors))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(settings.server.request_timeout_seconds),
                ))
                .layer(DefaultBodyLimit::max(settings.server.body_limit_bytes)),
        )
}

/// `GET /metrics`: Prometheus text format; the outbox gauges are read from the database now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format (version 0.0.4): request, donation, webhook and outbox metrics, each with a `service` label", content_type = "text/plain", body = String))
)]
async fn metrics_text(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    scrape_gauges(&state).await;
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
    let own = crate::metrics::consumers_of(&state.settings.server);
    if !state.settings.amqp.url.0.is_empty()
        && bus_up
        && !own.is_empty()
        && let Ok(Ok(counts)) = tokio::time::timeout(
            bound,
            crate::messaging::rabbit::dead_letter_counts(&state.settings.amqp, &own),
        )
        .await
    {
        for (consumer, count) in counts {
            crate::metrics::dead_letters(&consumer, count);
        }
    }
}

/// Logs each request once, with its route template, status and duration, and the hidden message
/// of a 5xx; counts it in the request metrics (by route template, never the raw path).
///
/// The request runs in a `request` span whose parent is the caller's W3C `traceparent`, if it
/// sent one; events written to the outbox while handling it carry that span's context on.
async fn log_requests(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    // Cheap clones (reference-counted); formatted only if a line is actually written.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request.headers().get(&REQUEST_ID).cloned();
    let route_str = route.as_ref().map_or("unmatched", |r| r.as_str());
    // Probes (the gateway checks each upstream every few seconds) and scrapes would bury the
    // traces that matter: they get no span.
    let probe =
        matches!(route_str, "/health" | "/ready" | "/metrics") || route_str.ends_with("/health");
    let span = if probe {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {route_str}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route_str,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    };
    crate::telemetry::set_parent(
        &span,
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let _entered = span.enter();
    let forwarded = response
        .extensions()
        .get::<crate::gateway::Forwarded>()
        .copied();
    let metric_route = match (&route, forwarded) {
        (Some(route), _) => std::borrow::Cow::Borrowed(route.as_str()),
        (None, Some(crate::gateway::Forwarded(service))) => format!("forwarded:{service}").into(),
        (None, None) => "unmatched".into(),
    };
    crate::metrics::request(
        &metric_route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let failure = response.extensions().get::<InternalMessage>();
    if failure.is_some() || tracing::enabled!(tracing::Level::DEBUG) {
        let request_id = request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match failure {
            Some(InternalMessage(message)) => {
                tracing::error!(%method, route = route_str, status, elapsed_ms, request_id, error = %message, "request failed")
            }
            None => {
                tracing::debug!(%method, route = route_str, status, elapsed_ms, request_id, "request")
            }
        }
    }
    response
}

/// Turns the few error responses that do not come from [`ApiError`] (axum's own path and query
/// rejections, the timeout layer) into the same JSON shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    let code = match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let mut rebuilt = json_response(status, &serde_json::json!({"detail": detail, "code": code}));
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"detail": "method not allowed on this endpoint", "code": "method_not_allowed"}),
    )
}

/// Formats minor units as the JSON decimal the API carries (`25.50`).
pub fn amount_json(minor: i64, currency: Currency) -> Box<RawValue> {
    RawValue::from_string(currency.format_minor(minor))
        .expect("a formatted decimal is a valid JSON number")
}

/// `limit` and `offset` of a list, as [`page`] reads them; for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "describes the query to the OpenAPI document; `page` parses it"
)]
pub struct PageParams {
    /// How many items, from 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
    /// How many items to skip.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// The `Idempotency-Key` header of a creating request; for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "describes the header to the OpenAPI document; `begin_idempotent` reads it"
)]
pub struct IdempotencyKeyHeader {
    /// Makes a retry safe: a retry with the same key and request gets the saved answer byte for
    /// byte (`Idempotent-Replayed: true`); the same key with another request is 422
    /// `idempotency_key_reused`; while the first is in flight, 409 `idempotency_in_flight`.
    /// Kept 24 hours.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// Parses an id from the path.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::field("id", format!("must be a UUID, got {raw:?}")))
}

/// `limit` (1–100, default 50) and `offset` (default 0) of a list.
pub fn page(query: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let limit = match query.get("limit") {
        None => 50,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::field("limit", "must be an integer from 1 to 100")),
        },
    };
    let offset = match query.get("offset") {
        None => 0,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => return Err(ApiError::field("offset", "must be a non-negative integer")),
        },
    };
    Ok((limit, offset))
}

/// Starts a creating request: replays or refuses it if its `Idempotency-Key` says so, otherwise
/// opens the transaction the effect goes into.
pub async fn begin_idempotent(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
    document: &Value,
) -> Result<Begin, ApiError> {
    let request = match headers.get("idempotency-key") {
        None => None,
        Some(raw) => {
            let raw = raw
                .to_str()
                .map_err(|_| ApiError::field("Idempotency-Key", "must be visible ASCII"))?;
            let key =
                IdempotencyKey::parse(raw).map_err(|m| ApiError::field("Idempotency-Key", m))?;
            Some(IdempotentRequest::new(scope, key, document))
        }
    };
    Ok(idempotency::begin(state.store.as_ref(), &state.gate, &state.replays, request).await?)
}

/// Answers a request refused after it took its idempotency key: a business refusal (404, 400,
/// 422) is saved with the key so a retry gets the same answer; anything else (a conflict, a
/// backend down) is not, so the retry can succeed.
pub async fn refuse(owned: idempotency::Owned, error: ApiError) -> Response {
    let (status, _) = error.status_and_code();
    let saved = matches!(status.as_u16(), 400 | 404 | 422);
    let response = error.into_response();
    if !saved {
        if let Err(e) = owned.tx.rollback().await {
            tracing::warn!(error = %e, "rolling back a refused request failed");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Err(e) = owned.save_refusal(status.as_u16(), &bytes).await {
        tracing::warn!(error = %e, "could not save a refusal under its idempotency key");
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Saves a successful outcome with its idempotency key, commits, and answers with exactly the
/// bytes that were saved, so a replay cannot differ from the original.
pub async fn commit_response<T: serde::Serialize>(
    owned: idempotency::Owned,
    status: StatusCode,
    body: &T,
) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    owned.save(status.as_u16(), &bytes).await?;
    Ok(error::json_bytes(status, bytes))
}

/// The saved response of an earlier request with the same key, byte for byte.
pub fn replayed(saved: IdempotencyRecord) -> Response {
    let status = StatusCode::from_u16(saved.status_code).unwrap_or(StatusCode::OK);
    let mut response = error::json_bytes(status, saved.body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
