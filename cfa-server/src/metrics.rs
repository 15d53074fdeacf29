//! Prometheus metrics (the `metrics` facade, rendered by metrics-exporter-prometheus) at
//! `GET /metrics`. Every metric is listed, with its meaning, in `docs/OBSERVABILITY.md`.
//!
//! One recorder per process, installed when the application is built. Every series carries the
//! process's `service` label (`all` for the all-in-one, else its roles joined with `+`) as a
//! global label, so a split deployment's processes can be told apart. Request metrics are
//! labelled by route template (`/api/v1/donations/{id}`), never the raw path, so their
//! cardinality stays bounded. Every metric is described and given a value when the application
//! is built, so it appears before its first event. Durations are histograms in seconds, with
//! millisecond buckets for request handling and second buckets for lags.

use std::sync::OnceLock;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{Role, ServerSettings};
use crate::domain::donation::DonationStatus;
use crate::domain::payment::PaymentStatus;
use crate::services::CONSUMERS;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The `process_*` metrics (CPU seconds, resident memory, open file descriptors, start time),
/// read from the operating system at each scrape, named as every Prometheus client library names
/// them.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Buckets for request and processing durations, in seconds (1 ms to 10 s).
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for event lags, in seconds (10 ms to 5 min): a healthy relay delivers in well under a
/// second; a broker outage shows as minutes.
const LAG_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process's recorder, once [`register`] installed it; `None` before, or if another
/// recorder was installed first (an embedding program's own).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

fn install(service: &str) -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .add_global_label("service", service)
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            &DURATION_BUCKETS,
        )
        .ok()?
        .set_buckets_for_metric(Matcher::Full("consumer_lag".into()), &LAG_BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

fn process_collector() -> &'static metrics_process::Collector {
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Reads the `process_*` metrics now (at each scrape).
pub fn collect_process() {
    process_collector().collect();
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

/// Installs the recorder labelled with `service` (the first call in a process wins), describes
/// every metric and gives each a value, so all appear from the first scrape; `gateway` is the
/// payment provider's name.
pub fn register(server: &ServerSettings, gateway: &'static str) {
    let service = &service(server);
    HANDLE.get_or_init(|| install(service));
    describe();
    process_collector().describe();
    collect_process();
    gauge!("up").set(1.0);
    for status in DonationStatus::ALL {
        counter!("donation_created_total", "status" => status.as_str()).absolute(0);
    }
    for outcome in [
        "processed",
        "ignored",
        "rejected",
        "not_found",
        "invalid_signature",
    ] {
        for hit in ["false", "true"] {
            counter!("webhook_processed_total", "outcome" => outcome, "idempotency_hit" => hit)
                .absolute(0);
        }
    }
    for cache in ["redis", "database"] {
        counter!("idempotency_cache_hits_total", "cache" => cache).absolute(0);
    }
    for kind in ["receipt", "failure", "refund"] {
        for status in ["sent", "retry", "dead", "suppressed"] {
            counter!("notifications_sent_total", "type" => kind, "status" => status).absolute(0);
        }
    }
    for status in PaymentStatus::ALL {
        if status != PaymentStatus::Initiated {
            counter!("payment_processed_total", "status" => status.as_str(), "gateway" => gateway)
                .absolute(0);
        }
    }
    // A histogram registered before its first sample is rendered with a zero count.
    let _ = histogram!("donation_creation_duration_seconds");
    let _ = histogram!("payment_processing_duration_seconds");
    // Only the consumers this process runs report their lag and dead letters, so a sum over a
    // split deployment's processes counts each queue once.
    for consumer in CONSUMERS.iter().filter(|c| server.runs(c.role)) {
        let _ = histogram!("consumer_lag", "consumer" => consumer.name);
        gauge!("dead_letters", "consumer" => consumer.name).set(0.0);
    }
    if server.runs(Role::Totals) {
        // No lookups yet: not a number, rather than a ratio of 0 that would drag averages down.
        gauge!("cache_hit_ratio", "cache" => "totals").set(f64::NAN);
    }
    for name in ["outbox_pending", "outbox_oldest_age_seconds", "outbox_dead"] {
        gauge!(name).set(0.0);
    }
    for backend in ["database", "bus", "cache"] {
        gauge!("backend_up", "backend" => backend).set(1.0);
    }
    gauge!("admission_waiting").set(0.0);
    for name in [
        "sqlite_commits_total",
        "sqlite_committed_transactions_total",
    ] {
        counter!(name).absolute(0);
    }
    for reason in ["queue_full", "deadline", "event_lag"] {
        counter!("admission_refused_total", "reason" => reason).absolute(0);
    }
}

fn describe() {
    describe_gauge!("up", "1 while the process serves");
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_counter!(
        "donation_created_total",
        "Donations by the status they reached: PENDING when created, then COMPLETED, FAILED or REFUNDED"
    );
    describe_histogram!(
        "donation_creation_duration_seconds",
        Unit::Seconds,
        "Time to create a donation (validation, transaction with its outbox event, commit)"
    );
    describe_counter!(
        "payment_processed_total",
        "Payments moved by a provider webhook, by the status reached and the gateway"
    );
    describe_histogram!(
        "payment_processing_duration_seconds",
        Unit::Seconds,
        "Time to apply one provider webhook (claim, transition, outbox event, commit)"
    );
    describe_counter!(
        "webhook_processed_total",
        "Payment webhooks answered, by outcome and whether the answer was a stored replay"
    );
    describe_counter!(
        "idempotency_cache_hits_total",
        "Requests answered with the stored response of an earlier one with the same Idempotency-Key, by where it was found"
    );
    describe_gauge!(
        "cache_hit_ratio",
        "Share of reads answered from the cache since start (totals: in-process and Redis levels together)"
    );
    describe_counter!(
        "notifications_sent_total",
        "E-mail attempts by notification type and result (sent, retry, dead)"
    );
    describe_gauge!(
        "outbox_pending",
        "Outbox events not yet delivered to the bus"
    );
    describe_gauge!(
        "outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest undelivered outbox event (0 when none)"
    );
    describe_gauge!(
        "outbox_dead",
        "Outbox events set aside after too many failed deliveries"
    );
    describe_histogram!(
        "consumer_lag",
        Unit::Seconds,
        "Time from an event's commit to a consumer having processed it, by consumer"
    );
    describe_gauge!(
        "dead_letters",
        "Messages in a consumer's RabbitMQ dead-letter queue (always 0 on the in-process bus)"
    );
    describe_gauge!(
        "admission_waiting",
        "Requests waiting for a turn at the database (admission control)"
    );
    describe_counter!(
        "admission_refused_total",
        "Requests answered 503 overloaded, by reason (queue_full, deadline, event_lag)"
    );
    describe_more();
    describe_gauge!(
        "backend_up",
        "1 if the backend (database, bus, cache) answered its last check, else 0"
    );
}

/// Counts one answered request.
pub fn request(route: &str, status: u16, seconds: f64) {
    let route = route.to_string();
    counter!("http_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!("http_request_duration_seconds", "route" => route).record(seconds);
}

/// Counts a donation reaching `status` (PENDING: created).
pub fn donation(status: DonationStatus) {
    counter!("donation_created_total", "status" => status.as_str()).increment(1);
}

/// Records the time a donation creation took.
pub fn donation_creation(seconds: f64) {
    histogram!("donation_creation_duration_seconds").record(seconds);
}

/// Counts a payment moved to `status` by a webhook of `gateway`.
pub fn payment(status: PaymentStatus, gateway: &str) {
    counter!("payment_processed_total", "status" => status.as_str(), "gateway" => gateway.to_string())
        .increment(1);
}

/// Records the time applying one webhook took.
pub fn payment_processing(seconds: f64) {
    histogram!("payment_processing_duration_seconds").record(seconds);
}

/// Counts one answered webhook.
pub fn webhook(outcome: &str, replay: bool) {
    counter!(
        "webhook_processed_total",
        "outcome" => outcome.to_string(),
        "idempotency_hit" => if replay { "true" } else { "false" }
    )
    .increment(1);
}

/// Counts a stored response replayed from `cache` (`redis` or `database`).
pub fn idempotency_hit(cache: &'static str) {
    counter!("idempotency_cache_hits_total", "cache" => cache).increment(1);
}

/// Sets a cache's hit ratio from its hit and miss counts (NaN before the first lookup).
pub fn cache_ratio(cache: &'static str, hits: u64, misses: u64) {
    let lookups = hits + misses;
    let ratio = if lookups == 0 {
        f64::NAN
    } else {
        hits as f64 / lookups as f64
    };
    gauge!("cache_hit_ratio", "cache" => cache).set(ratio);
}

/// Counts one e-mail attempt.
pub fn notification(kind: &str, status: &'static str) {
    counter!("notifications_sent_total", "type" => kind.to_string(), "status" => status)
        .increment(1);
}

/// Sets the outbox gauges (at scrape time, from the database).
pub fn outbox(pending: i64, oldest_age_seconds: f64, dead: i64) {
    gauge!("outbox_pending").set(pending as f64);
    gauge!("outbox_oldest_age_seconds").set(oldest_age_seconds);
    gauge!("outbox_dead").set(dead as f64);
}

/// Records how long after its commit `consumer` finished an event.
pub fn consumer_lag(consumer: &'static str, seconds: f64) {
    histogram!("consumer_lag", "consumer" => consumer).record(seconds);
}

/// Sets the number of messages in a consumer's dead-letter queue.
pub fn dead_letters(consumer: &str, count: u32) {
    gauge!("dead_letters", "consumer" => consumer.to_string()).set(f64::from(count));
}

/// Sets whether a backend answered its last check.
pub fn backend(backend: &'static str, up: bool) {
    gauge!("backend_up", "backend" => backend).set(if up { 1.0 } else { 0.0 });
}

/// Sets the number of requests waiting for a turn at the database.
pub fn admission_waiting(waiting: usize) {
    gauge!("admission_waiting").set(waiting as f64);
}

/// Counts a request refused with `503 overloaded`.
pub fn admission_refused(reason: &'static str) {
    counter!("admission_refused_total", "reason" => reason).increment(1);
}

/// Counts one SQLite commit and the write transactions it held (group commit).
pub fn group_commit(transactions: usize) {
    counter!("sqlite_commits_total").increment(1);
    counter!("sqlite_committed_transactions_total").increment(transactions as u64);
}

fn describe_more() {
    describe_counter!(
        "sqlite_commits_total",
        "Commits of the embedded SQLite database's writer connection (each one waits for the disk)"
    );
    describe_counter!(
        "sqlite_committed_transactions_total",
        "Write transactions those commits held: divided by sqlite_commits_total, the mean group commit"
    );
    describe_counter!(
        "totals_stream_reads_total",
        "Database reads made for live totals viewers: one per change of a watched campaign"
    );
    describe_counter!(
        "totals_stream_events_total",
        "Totals events sent to live viewers (one per viewer per change)"
    );
}

/// Counts one read made for a watched campaign's viewers, and the events it fed.
pub fn totals_stream(viewers: usize) {
    counter!("totals_stream_reads_total").increment(1);
    counter!("totals_stream_events_total").increment(viewers as u64);
}
