//! The middleware every request passes through, and the answers for requests no route takes.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::{ApiError, InternalMessage, json_response};

/// The header a request id is set in, taken from the caller or generated.
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Logs each request once, with its route template, status and duration, and the hidden message
/// of a 5xx; counts it in the request metrics (by route template, never the raw path).
///
/// The request runs in a `request` span whose parent is the caller's W3C `traceparent`, if it
/// sent one; events written to the outbox while handling it carry that span's context on.
pub(super) async fn log_requests(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    // Cheap clones (reference-counted); formatted only if a line is actually written.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request.headers().get(&REQUEST_ID).cloned();
    let route_str = route.as_ref().map_or("unmatched", |r| r.as_str());
    // Probes (the gateway checks each upstream every few seconds) and scrapes would bury the
    // traces that matter: they get no span. Neither do the other requests that need no database
    // turn (cached totals reads, the documents, the assets) unless the caller sends a trace
    // context to continue: answered from memory, they have nothing to trace, and a span costs
    // a cached read about a tenth of its time.
    let probe =
        matches!(route_str, "/health" | "/ready" | "/metrics") || route_str.ends_with("/health");
    let untraced = route.is_some()
        && !request.headers().contains_key("traceparent")
        && !super::admission::needs_a_turn(&method, route_str, request.uri().query());
    let span = if probe || untraced {
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
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // The donor pages answer errors with a page of their own.
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
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

/// A panicking handler answers like any other failure: a JSON 500, its detail kept out of the
/// body.
pub(super) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

/// The fallback of a process without the gateway role: an unknown path is a JSON 404.
pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// axum's bare 405, in the JSON shape of every other error.
pub(super) async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"detail": "method not allowed on this endpoint", "code": "method_not_allowed"}),
    )
}
