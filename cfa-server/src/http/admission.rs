//! Admission control: requests that need the database take a turn from a fixed number of slots
//! (by default the pool's size), so they never race for a connection and fail after the pool's
//! `acquire_timeout` with a misleading "database unavailable". The rest wait in a first-come,
//! first-served queue (tokio's semaphore is fair). Only when that queue is full, or a request has
//! waited `admission.queue_timeout_seconds`, is it refused: `503 overloaded` with `Retry-After`,
//! which a client can tell apart from `503 backend_unavailable` (the database is down).
//!
//! Probes, the scrape, the OpenAPI document, cached totals reads, the live totals stream and the
//! pages' embedded assets need no database turn: a burst of donations never makes `/health` or a
//! campaign's totals wait, and a thousand open streams never hold the database's turns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::config::Settings;

/// The slots and the queue of one process.
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
    retry_after: u64,
}

/// Why a request was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    QueueFull,
    Deadline,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::Deadline => "deadline",
        }
    }
}

/// Leaves the queue however the wait ends (admitted, refused, or the client went away).
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        crate::metrics::admission_waiting(now);
    }
}

impl Admission {
    /// The admission of a process configured by `settings`.
    pub fn new(settings: &Settings) -> Arc<Admission> {
        let admission = &settings.admission;
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(admission.in_flight(
                settings.database.pool_size(),
                settings.database.is_sqlite(),
            ))),
            waiting: AtomicUsize::new(0),
            max_queued: admission.max_queued,
            queue_timeout: admission.queue_timeout(),
            retry_after: admission.retry_after_seconds,
        })
    }

    /// Runs `next` once a slot is free, or refuses.
    async fn run(&self, request: Request, next: Next) -> Response {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match self.wait().await {
                Ok(slot) => slot,
                Err(refusal) => return self.refuse(refusal),
            },
        };
        let response = next.run(request).await;
        drop(slot);
        response
    }

    async fn wait(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let _in_queue = InQueue(&self.waiting);
        if queued > self.max_queued {
            return Err(Refusal::QueueFull);
        }
        crate::metrics::admission_waiting(queued);
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed; a closed one would mean shutting down.
            Ok(Err(_)) | Err(_) => Err(Refusal::Deadline),
        }
    }

    fn refuse(&self, refusal: Refusal) -> Response {
        crate::metrics::admission_refused(refusal.as_str());
        let message = match refusal {
            Refusal::QueueFull => format!(
                "the server is overloaded: {} requests are already waiting for the database; \
                 retry after {} s",
                self.max_queued, self.retry_after
            ),
            Refusal::Deadline => format!(
                "the server is overloaded: the request waited {} s for the database; retry \
                 after {} s",
                self.queue_timeout.as_secs(),
                self.retry_after
            ),
        };
        ApiError::Overloaded {
            message,
            retry_after: self.retry_after,
        }
        .into_response()
    }
}

/// Whether a request of `method` on the route `template` (with `query`) needs a database turn.
pub(crate) fn needs_a_turn(method: &Method, template: &str, query: Option<&str>) -> bool {
    let probe = matches!(
        template,
        "/health" | "/ready" | "/version" | "/metrics" | "/api/v1/openapi.json"
    ) || template.ends_with("/health")
        || template.starts_with(super::docs::PATH);
    let cached_totals = method == Method::GET
        && template == "/api/v1/totals/campaigns/{id}"
        && !query.is_some_and(|q| q.contains("realtime=true"));
    // A stream lives as long as its viewer: it must not hold a turn all that time. Its first
    // read is a cached totals read; later ones are the consumer's, one per change.
    let stream =
        template == "/api/v1/totals/campaigns/{id}/stream" || template.starts_with("/assets/");
    !(probe || cached_totals || stream)
}

/// The middleware: applied to the routes (not the gateway's fallback), after routing.
pub(super) async fn admit(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    if !needs_a_turn(request.method(), template, request.uri().query()) {
        return next.run(request).await;
    }
    admission.run(request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    /// A route whose handler holds its slot until `release` is notified.
    fn held(admission: Arc<Admission>, release: Arc<Notify>) -> Router {
        Router::new()
            .route(
                "/api/v1/donations",
                post(move || {
                    let release = release.clone();
                    async move { release.notified().await }
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(admission, admit))
    }

    fn admission(queued: usize, timeout: Duration) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
            max_queued: queued,
            queue_timeout: timeout,
            retry_after: 3,
        })
    }

    async fn call(app: &Router) -> axum::response::Response {
        let request = Request::post("/api/v1/donations")
            .body(Body::empty())
            .expect("request");
        app.clone().oneshot(request).await.expect("answered")
    }

    /// Sends a request that takes the only slot, and returns once it holds it.
    async fn occupy(
        app: &Router,
        admission: &Admission,
    ) -> tokio::task::JoinHandle<axum::response::Response> {
        let first = tokio::spawn({
            let app = app.clone();
            async move { call(&app).await }
        });
        while admission.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        first
    }

    async fn until_waiting(admission: &Admission, n: usize) {
        while admission.waiting.load(Ordering::Acquire) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_told_overloaded_and_when_to_retry() {
        let admission = admission(1, Duration::from_secs(60));
        let release = Arc::new(Notify::new());
        let app = held(admission.clone(), release.clone());
        let first = occupy(&app, &admission).await;
        let second = tokio::spawn({
            let app = app.clone();
            async move { call(&app).await }
        });
        until_waiting(&admission, 1).await;
        let third = call(&app).await;
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(third.headers()["retry-after"], "3");
        let body = axum::body::to_bytes(third.into_body(), 4096)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["code"], "overloaded");
        release.notify_one();
        assert_eq!(first.await.expect("first").status(), StatusCode::OK);
        release.notify_one();
        assert_eq!(
            second.await.expect("second").status(),
            StatusCode::OK,
            "the queued one got its turn"
        );
    }

    #[tokio::test]
    async fn a_request_that_waits_too_long_is_told_overloaded() {
        let admission = admission(10, Duration::from_millis(20));
        let release = Arc::new(Notify::new());
        let app = held(admission.clone(), release.clone());
        let first = occupy(&app, &admission).await;
        let late = call(&app).await;
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(late.headers().contains_key("retry-after"));
        assert_eq!(
            admission.waiting.load(Ordering::Acquire),
            0,
            "left the queue"
        );
        release.notify_one();
        assert_eq!(first.await.expect("first").status(), StatusCode::OK);
    }

    #[test]
    fn probes_and_cached_totals_never_queue() {
        for template in ["/health", "/ready", "/api/v1/donations/health", "/metrics"] {
            assert!(!needs_a_turn(&Method::GET, template, None), "{template}");
        }
        let totals = "/api/v1/totals/campaigns/{id}";
        assert!(!needs_a_turn(&Method::GET, totals, None));
        assert!(needs_a_turn(&Method::GET, totals, Some("realtime=true")));
        let stream = "/api/v1/totals/campaigns/{id}/stream";
        assert!(
            !needs_a_turn(&Method::GET, stream, None),
            "a stream holds no turn"
        );
        assert!(
            needs_a_turn(&Method::GET, "/campaigns/{id}", None),
            "pages read the database"
        );
        assert!(needs_a_turn(&Method::POST, "/api/v1/donations", None));
        assert!(needs_a_turn(&Method::GET, "/api/v1/donations/{id}", None));
    }
}
