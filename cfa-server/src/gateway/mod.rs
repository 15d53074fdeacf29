//! The gateway role and the limits every process applies at its front door.
//!
//! # Layout
//! - this module: [`Gateway`], the proxy to the upstream replicas of each service.
//! - [`limits`]: rate limits per client IP and per API key.
//!
//! The gateway role: routes `/api/v1/<service>/…` (and `/sandbox/…`) to that service's upstream
//! replicas.
//!
//! Round robin over the upstreams that are healthy (an active `/ready` check: reachable and not
//! draining) and whose circuit breaker is closed (it opens after `gateway.failure_threshold`
//! consecutive failures; after `gateway.open_seconds` the upstream takes requests again on
//! probation, where its first success closes the breaker and its first failure opens it again),
//! then the others, since a health verdict may be a check old. A request refused a connection never reached its upstream: that upstream
//! leaves the rotation until its health check passes, and the request goes on to the next one
//! without using up a retry. One that may have reached it is retried (`gateway.retries`) only if
//! it is safe to repeat (GET, HEAD, PUT, DELETE, OPTIONS, or a POST carrying an
//! `Idempotency-Key`). The request id and the W3C trace context are forwarded, every hop-by-hop
//! header is dropped both ways (those a `Connection` header names too), repeated headers are
//! kept, the client's address is appended to `X-Forwarded-For` and `X-Forwarded-Proto` is set;
//! rate limits, body limit and timeouts are the ones every process applies.

pub mod client;
pub mod limits;
mod outgoing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::config::GatewaySettings;
use crate::http::error::ApiError;
use outgoing::{Outgoing, relay_response};

/// One upstream replica.
pub struct Upstream {
    base: String,
    healthy: AtomicBool,
    failures: AtomicU32,
    open_until: std::sync::Mutex<Option<Instant>>,
}

impl Upstream {
    fn available(&self) -> bool {
        let open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        self.healthy.load(Ordering::Relaxed) && open.is_none_or(|until| Instant::now() >= until)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failed(&self, threshold: u32, open_for: Duration) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= threshold {
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + open_for);
            tracing::warn!(upstream = %self.base, failures, "circuit breaker open");
        }
    }
}

/// The upstreams of every service.
pub struct Gateway {
    services: Vec<(String, Vec<Arc<Upstream>>, AtomicUsize)>,
    client: reqwest::Client,
    settings: GatewaySettings,
    body_limit: usize,
    /// The proxies whose `X-Forwarded-Proto` is believed (`gateway.trusted_proxies`).
    trusted: Vec<ipnet::IpNet>,
}

impl Gateway {
    /// A gateway over the configured upstreams (all assumed healthy until checked), refusing
    /// bodies over `body_limit` bytes itself.
    pub fn new(settings: &GatewaySettings, body_limit: usize) -> Arc<Gateway> {
        let services = settings
            .upstreams
            .iter()
            .map(|(service, urls)| {
                let upstreams = urls
                    .iter()
                    .map(|u| {
                        Arc::new(Upstream {
                            base: u.trim_end_matches('/').to_string(),
                            healthy: AtomicBool::new(true),
                            failures: AtomicU32::new(0),
                            open_until: std::sync::Mutex::new(None),
                        })
                    })
                    .collect();
                (service.clone(), upstreams, AtomicUsize::new(0))
            })
            .collect();
        Arc::new(Gateway {
            services,
            client: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            settings: settings.clone(),
            body_limit,
            // Checked when the configuration was loaded.
            trusted: settings.trusted_networks().unwrap_or_default(),
        })
    }

    /// The service a path belongs to. The donor pages (and the sandbox's own API) go to the
    /// payment service, which serves them: a page's form creates the donation and its payment
    /// intent in one step, and the checkout page is the sandbox provider's.
    fn service_of(path: &str) -> Option<&'static str> {
        let page = path == "/"
            || path == "/history"
            || ["/campaigns/", "/checkout/", "/donations/", "/assets/"]
                .iter()
                .any(|prefix| path.starts_with(prefix));
        if page || path.starts_with("/sandbox/") {
            return Some("payments");
        }
        let segment = path.strip_prefix("/api/v1/")?.split('/').next()?;
        match segment {
            "donations" | "campaigns" | "admin" => Some("donations"),
            "payments" => Some("payments"),
            "totals" => Some("totals"),
            "notifications" => Some("notifications"),
            _ => None,
        }
    }

    /// Whether an upstream should be in the rotation: it answers `/ready` within 2 s and is not
    /// draining (shutting down after SIGTERM). A replica whose database is down still answers
    /// `503 unavailable` and stays in: it can still serve cached totals, and every replica
    /// shares that database anyway.
    async fn probe(&self, upstream: &Upstream) -> bool {
        let reply = self
            .client
            .get(format!("{}/ready", upstream.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match reply {
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => !r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|body| body["status"] == "draining"),
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Probes every upstream's `/ready` every `gateway.health_interval_ms` until cancelled.
    pub async fn check_health(self: Arc<Self>, cancel: CancellationToken) {
        let every = Duration::from_millis(self.settings.health_interval_ms);
        loop {
            for (_, upstreams, _) in &self.services {
                for upstream in upstreams {
                    let ok = self.probe(upstream).await;
                    if upstream.healthy.swap(ok, Ordering::Relaxed) != ok {
                        tracing::warn!(upstream = %upstream.base, healthy = ok, "upstream health changed");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

fn safe_to_repeat(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    ) || (*method == Method::POST && headers.contains_key("idempotency-key"))
}

/// Marks a response the gateway forwarded, with the service it went to, so the request metrics
/// label it `forwarded:<service>` (bounded, like a route template).
#[derive(Clone, Copy, Debug)]
pub struct Forwarded(pub &'static str);

/// Forwards one request to its service.
pub async fn proxy(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let service = outgoing::normalise(request.uri().path())
        .as_deref()
        .and_then(Gateway::service_of);
    let mut response = forward(&gateway, request).await;
    if let Some(service) = service {
        response.extensions_mut().insert(Forwarded(service));
    }
    response
}

async fn forward(gateway: &Gateway, request: Request) -> Response {
    let Some(path) = outgoing::normalise(request.uri().path()) else {
        return ApiError::NotFound("no such endpoint".into()).into_response();
    };
    let Some(service) = Gateway::service_of(&path) else {
        return ApiError::NotFound("no such endpoint".into()).into_response();
    };
    let Some((_, upstreams, next)) = gateway.services.iter().find(|(s, _, _)| s == service) else {
        return ApiError::Unavailable(format!("no upstream is configured for {service}"))
            .into_response();
    };
    let outgoing = match Outgoing::read(request, &path, gateway.body_limit, &gateway.trusted).await
    {
        Ok(outgoing) => outgoing,
        Err(refused) => return refused,
    };
    let repeatable = safe_to_repeat(&outgoing.parts.method, &outgoing.parts.headers);
    let threshold = gateway.settings.failure_threshold;
    let open_for = Duration::from_secs(gateway.settings.open_seconds);
    let mut tries = 0;
    let mut last_error = String::from("every upstream is down or its circuit breaker is open");
    for upstream in rotation(upstreams, next) {
        if tries > gateway.settings.retries {
            break;
        }
        match outgoing.to(&gateway.client, upstream).send().await {
            // The upstream's own back-pressure: it is healthy, and the client is told when to
            // come back. Neither a failure for the breaker nor a reason to load another replica.
            Ok(response) if overloaded(&response) => {
                upstream.succeeded();
                return relay_response(response).await;
            }
            Ok(response) if response.status().is_server_error() && repeatable => {
                tries += 1;
                upstream.failed(threshold, open_for);
                last_error = format!("{} answered {}", upstream.base, response.status());
            }
            Ok(response) => {
                if response.status().is_server_error() {
                    upstream.failed(threshold, open_for);
                } else {
                    upstream.succeeded();
                }
                return relay_response(response).await;
            }
            Err(e) => {
                upstream.failed(threshold, open_for);
                last_error = format!("{}: {e}", upstream.base);
                if e.is_connect() {
                    // Nothing listens there: out of the rotation until its health check passes,
                    // and the request, never sent, goes to the next upstream without using up
                    // a retry.
                    if upstream.healthy.swap(false, Ordering::Relaxed) {
                        tracing::warn!(upstream = %upstream.base, healthy = false, "upstream health changed");
                    }
                    continue;
                }
                tries += 1;
                if !repeatable {
                    return ApiError::Unavailable(format!(
                        "the upstream failed after the request may have reached it; retry with an Idempotency-Key ({last_error})"
                    ))
                    .into_response();
                }
            }
        }
    }
    ApiError::Unavailable(format!("{service}: {last_error}")).into_response()
}

/// Whether an upstream answered `503 overloaded` (admission control): a 503 with `Retry-After`.
/// A 503 for a backend that is down carries none.
fn overloaded(response: &reqwest::Response) -> bool {
    response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        && response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER)
}

/// The order to try a service's upstreams in: those that look available first, in round-robin
/// order, then the rest. A health verdict can be up to one check old, and a gateway that believes
/// everything is down still tries rather than refusing outright (as nginx does).
fn rotation<'a>(upstreams: &'a [Arc<Upstream>], next: &AtomicUsize) -> Vec<&'a Arc<Upstream>> {
    let start = next.fetch_add(1, Ordering::Relaxed);
    let n = upstreams.len();
    let rotated = (0..n).map(|i| &upstreams[(start + i) % n]);
    rotated
        .clone()
        .filter(|u| u.available())
        .chain(rotated.filter(|u| !u.available()))
        .collect()
}
