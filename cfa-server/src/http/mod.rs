//! The HTTP layer: handlers that translate between JSON and the domain, and the middleware
//! every request passes through.
//!
//! # Layout
//! - this module: [`AppState`], [`app`] (the served router with its middleware) and the list of
//!   routes each role serves.
//! - [`error`]: [`error::ApiError`] and the JSON body extractor.
//! - [`admin`]: dead letters for operators.
//! - [`auth`]: the operator-key extractor.
//! - [`health`]: `/health`, `/ready` and the per-service aliases.
//! - [`campaigns`], [`donations`], [`payments`], [`totals`], [`notifications`]: the resources.
//! - [`sandbox`]: the built-in sandbox provider's API.
//! - [`mod@openapi`]: the OpenAPI document and `GET /api/v1/openapi.json`; [`docs`]: the
//!   document browsable at `/docs` (Swagger UI, embedded).
//! - `metrics`: `GET /metrics` and the gauges read at scrape time.
//! - [`idempotent`]: the `Idempotency-Key` header, replays and refusals.
//! - [`params`]: paging, path ids and amounts, parsed and written the same way everywhere.
//! - `middleware`: request ids, logging and metrics, JSON errors, panics, fallbacks.
//!
//! Each resource's `router()` is a [`utoipa_axum`] router whose routes are registered from their
//! `#[utoipa::path]` annotations, so every route served is in the OpenAPI document
//! ([`openapi()`], served at `GET /api/v1/openapi.json` and printed by `cfa-server openapi`).

pub mod admin;
pub mod admission;
pub mod auth;
pub mod campaigns;
pub mod docs;
pub mod donations;
pub mod error;
pub mod health;
pub mod idempotent;
pub mod metrics;
mod middleware;
pub mod notifications;
pub mod openapi;
pub mod params;
pub mod payments;
pub mod sandbox;
pub mod serve;
pub mod totals;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

// The handlers reach these as `super::NAME`; they moved into their own files, not out of reach.
pub use idempotent::{IdempotencyKeyHeader, begin_idempotent, commit_response, refuse, replayed};
pub use openapi::openapi;
pub use params::{PageParams, amount_json, page, parse_id};

use crate::config::{Role, Secret, Settings};
use crate::idempotency::{self, InFlightGate};
use crate::messaging::bus::EventBus;
use crate::services::notifications::{HistoryLinks, Mailer};
use crate::services::payments::ReconcileStats;
use crate::services::payments::provider::PaymentProvider;
use crate::services::payments::sandbox::Sandbox;
use crate::services::totals::TotalsCache;
use crate::storage::Store;
use middleware::REQUEST_ID;

/// What every handler can reach: [`AppParts`] behind one `Arc`, so the clone each extractor and
/// middleware takes is one reference count, not one per part (measured: cloning and dropping
/// the parts one by one was about 6 % of a cached totals read).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state of an application made of `parts`.
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
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
    /// The viewers of live totals (the stream and the pages), fed by the totals consumer.
    pub live: Arc<crate::services::live::LiveTotals>,
    /// Signs and checks donor history links.
    pub history_links: HistoryLinks,
    /// Where notifications go.
    pub mailer: Arc<dyn Mailer>,
    /// Wakes the notification sender.
    pub mail_wake: Arc<Notify>,
    /// The queue in front of the database.
    pub admission: Arc<admission::Admission>,
    /// The currencies of the campaigns donations were taken for.
    pub currencies: Arc<crate::services::donations::CampaignCurrencies>,
    /// Failed readiness probes in a row, per degradable backend.
    pub readiness: Arc<health::Readiness>,
}

impl AppState {
    /// Tells the relay that new outbox rows are committed.
    pub fn outbox_written(&self) {
        self.outbox_wake.notify_one();
    }

    /// After a webhook: wakes the relay if it moved a payment, and has a payment it overtook (a
    /// capture before its authorization) reconciled with the provider at once.
    pub fn webhook_answered(&self, reply: &crate::services::payments::webhooks::Reply) {
        if reply.processed {
            self.outbox_written();
        }
        if let (Some(payment), Some(provider)) = (reply.reconcile, &self.provider) {
            crate::services::payments::Reconciler::new(
                self.store.clone(),
                provider.clone(),
                self.reconcile.clone(),
                Duration::ZERO,
            )
            .reconcile_soon(payment, self.outbox_wake.clone());
        }
    }

    /// Tells the sandbox that webhooks were queued.
    pub fn sandbox_wake(&self) {
        if let Some(sandbox) = &self.sandbox {
            sandbox.wake();
        }
    }
}

/// The routes of a process that runs the roles `runs` accepts, with the OpenAPI document of
/// exactly those routes. [`app`] and [`openapi()`] both start here, so what is served and what is
/// documented come from one list (only the seed's per-service health aliases are served without
/// an entry of their own; `/health` names them).
fn api(runs: impl Fn(Role) -> bool) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::default()
        .merge(health::router())
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(metrics::metrics_text));
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

/// The whole API with its middleware.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let server = &settings.server;
    let (mut router, _) = api(|role| server.runs(role)).split_for_parts();
    router = router.merge(docs::router());
    // The donor pages (HTML, not in the OpenAPI document) go where payments are taken: their
    // form asks the payment provider for an intent, and the checkout page is the sandbox's. In a
    // split deployment the gateway sends them to the payment service.
    if server.runs(Role::Payment) {
        router = router.merge(crate::pages::router());
    }
    // Applied around the fallback too, so the gateway's proxied requests are limited.
    let rate_limits = state
        .limits
        .clone()
        .map(|l| axum::middleware::from_fn_with_state(l, crate::gateway::limits::limit));
    // Routes served here win; the gateway sends everything else to the upstreams.
    router = match &state.gateway {
        Some(gateway) => router.fallback_service(
            Router::new()
                .fallback(crate::gateway::proxy)
                .with_state(gateway.clone()),
        ),
        None => router.fallback(middleware::not_found),
    };
    // After routing (so the route template is known), before the handler: the gateway's
    // fallback needs no database turn.
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.admission.clone(),
        admission::admit,
    ));
    if let Some(rate_limits) = rate_limits {
        router = router.layer(rate_limits);
    }
    router
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(from_fn(middleware::log_requests))
                .layer(from_fn(middleware::json_errors))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(settings.server.request_timeout_seconds),
                ))
                .layer(DefaultBodyLimit::max(settings.server.body_limit_bytes)),
        )
}
