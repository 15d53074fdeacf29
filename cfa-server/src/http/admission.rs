//! Admission control: requests that need the database take a turn from a fixed number of slots
//! (by default the pool's size), so they never race for a connection and fail after the pool's
//! `acquire_timeout` with a misleading "database unavailable". The rest wait in a first-come,
//! first-served queue (tokio's semaphore is fair). Only when that queue is full, or a request has
//! waited `admission.queue_timeout_seconds`, is it refused: `503 overloaded` with `Retry-After`,
//! which a client can tell apart from `503 backend_unavailable` (the database is down).
//!
//! With `admission.max_event_lag_seconds`, new donations also wait while the event pipeline is
//! that far behind (the oldest undelivered outbox event, read every quarter second), within the
//! same deadline: intake slows to what the relay and consumers apply, and totals stay that
//! fresh, at the price of donors told to come back. Off by default.
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
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::config::Settings;
use crate::storage::Store;

/// The slots and the queue of one process.
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
    retry_after: u64,
    /// When new donations wait for the event pipeline.
    pipeline: Option<Arc<Pipeline>>,
}

/// How far behind the event pipeline is, and how far it may be before new donations wait.
struct Pipeline {
    max_lag: Duration,
    lag: watch::Sender<Duration>,
}

impl Pipeline {
    /// Waits until the pipeline is no more than `max_lag` behind, or refuses at `deadline`.
    async fn caught_up(&self, deadline: Instant) -> Result<(), Refusal> {
        let mut lag = self.lag.subscribe();
        let caught_up = lag.wait_for(|lag| *lag <= self.max_lag);
        match tokio::time::timeout_at(deadline, caught_up).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Refusal::EventLag),
        }
    }
}

/// Why a request was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    QueueFull,
    Deadline,
    EventLag,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue_full",
            Refusal::Deadline => "deadline",
            Refusal::EventLag => "event_lag",
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
            pipeline: admission.max_event_lag().map(|max_lag| {
                Arc::new(Pipeline {
                    max_lag,
                    lag: watch::channel(Duration::ZERO).0,
                })
            }),
        })
    }

    /// When new donations wait for the event pipeline: the task that keeps its lag current,
    /// reading the oldest undelivered event's time every quarter second (a failed read counts as
    /// no lag: the database's own failures answer for themselves).
    pub fn watch_pipeline(
        &self,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let pipeline = self.pipeline.clone()?;
        Some(async move {
            loop {
                let lag = match store.oldest_pending_outbox().await {
                    Ok(Some(at)) => (crate::domain::now() - at).to_std().unwrap_or_default(),
                    Ok(None) | Err(_) => Duration::ZERO,
                };
                pipeline.lag.send_replace(lag);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        })
    }

    /// Runs `next` once a slot is free (and, for a new donation, once the event pipeline is
    /// close enough behind), or refuses.
    async fn run(&self, request: Request, next: Next, new_donation: bool) -> Response {
        let deadline = Instant::now() + self.queue_timeout;
        if new_donation
            && let Some(pipeline) = &self.pipeline
            && let Err(refusal) = pipeline.caught_up(deadline).await
        {
            return self.refuse(refusal);
        }
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match self.wait(deadline).await {
                Ok(slot) => slot,
                Err(refusal) => return self.refuse(refusal),
            },
        };
        let response = next.run(request).await;
        drop(slot);
        response
    }

    async fn wait(&self, deadline: Instant) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let _in_queue = InQueue(&self.waiting);
        if queued > self.max_queued {
            return Err(Refusal::QueueFull);
        }
        crate::metrics::admission_waiting(queued);
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
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
            Refusal::EventLag => format!(
                "the server is overloaded: new donations wait while its events are more than {} s \
                 behind, and they were for {} s; retry after {} s",
                self.pipeline.as_ref().map_or(0, |p| p.max_lag.as_secs()),
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
    let new_donation = request.method() == Method::POST
        && matches!(template, "/api/v1/donations" | "/campaigns/{id}/donate");
    admission.run(request, next, new_donation).await
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
            pipeline: None,
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
