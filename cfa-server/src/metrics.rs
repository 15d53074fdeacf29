//! Prometheus metrics (the `metrics` facade, rendered by metrics-exporter-prometheus) at
//! `GET /metrics`.
//!
//! One recorder per process, installed on first use. Request metrics are labelled by route
//! template (`/api/v1/donations/{id}`), never the raw path, so their cardinality stays bounded;
//! every process labels its series with its `service` (`all` for the all-in-one, else its roles).
//! Metrics are described and given a zero value when the application is built, so they appear
//! before their first event. Durations are histograms in seconds.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::ServerSettings;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets for request and processing durations, in seconds (1 ms to 10 s).
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder (installed on first call); `None` if another recorder was installed
/// first (an embedding program's own).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The `service` label of this process: `all`, or its roles joined with `+`.
pub fn service(server: &ServerSettings) -> String {
    if server.roles.is_empty() {
        "all".into()
    } else {
        server
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Describes every metric and gives each a zero value, so all appear from the first scrape.
pub fn register(service: &str) {
    let _ = handle();
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_counter!(
        "donation_created_total",
        "Donations created, by their initial status"
    );
    describe_counter!(
        "webhook_processed_total",
        "Payment webhooks answered, by outcome and whether the answer was a replay"
    );
    describe_gauge!(
        "outbox_pending",
        "Outbox events not yet delivered to the bus"
    );
    describe_gauge!(
        "outbox_oldest_age_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest undelivered outbox event (0 when none)"
    );
    describe_gauge!("up", "1 while the process serves");
    let s = service.to_string();
    gauge!("up", "service" => s.clone()).set(1.0);
    counter!("donation_created_total", "service" => s.clone(), "status" => "PENDING").absolute(0);
    for outcome in ["processed", "ignored", "rejected", "not_found", "malformed"] {
        for hit in ["false", "true"] {
            counter!("webhook_processed_total", "service" => s.clone(), "outcome" => outcome, "idempotency_hit" => hit)
                .absolute(0);
        }
    }
    gauge!("outbox_pending", "service" => s.clone()).set(0.0);
    gauge!("outbox_oldest_age_seconds", "service" => s).set(0.0);
}

/// Counts one answered request.
pub fn request(service: &str, route: &str, status: u16, seconds: f64) {
    let (service, route) = (service.to_string(), route.to_string());
    counter!("http_requests_total", "service" => service.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram_request(service, route, seconds);
}

fn histogram_request(service: String, route: String, seconds: f64) {
    metrics::histogram!("http_request_duration_seconds", "service" => service, "route" => route)
        .record(seconds);
}

/// Counts one created donation.
pub fn donation_created(service: &str) {
    counter!("donation_created_total", "service" => service.to_string(), "status" => "PENDING")
        .increment(1);
}

/// Counts one answered webhook.
pub fn webhook(service: &str, outcome: &str, replay: bool) {
    counter!(
        "webhook_processed_total",
        "service" => service.to_string(),
        "outcome" => outcome.to_string(),
        "idempotency_hit" => if replay { "true" } else { "false" }
    )
    .increment(1);
}

/// Sets the outbox gauges (at scrape time, from the database).
pub fn outbox(service: &str, pending: i64, oldest_age_seconds: f64) {
    gauge!("outbox_pending", "service" => service.to_string()).set(pending as f64);
    gauge!("outbox_oldest_age_seconds", "service" => service.to_string()).set(oldest_age_seconds);
}
