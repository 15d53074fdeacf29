//! The outbox relay: claims undelivered rows, publishes them in order, marks them sent.
//!
//! Rows are claimed with a lease (and `SKIP LOCKED` on PostgreSQL), so several relays can run at
//! once without publishing the same row twice in normal operation, and a relay that dies leaves
//! its rows to another once the lease runs out. The lease is short (`outbox.lease_seconds`, 15 s)
//! and renewed while a publish is in flight ([`crate::lease::renewing`]), so a slow broker does
//! not hand the rows to a second relay, and a dead relay delays them by seconds. A failed publish stops the batch (so later events
//! do not overtake it), gives the row back with the error recorded, and backs off exponentially.
//! [`Relay::deliver_batch`] is public so tests drive the relay by hand.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::OutboxSettings;
use crate::domain::event::EventEnvelope;
use crate::messaging::bus::EventBus;
use crate::storage::{Store, StoreError};

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published and marked sent.
    pub delivered: usize,
    /// Rows given back after a failed publish.
    pub failed: usize,
    /// Rows set aside as dead letters (counted in `failed` too).
    pub dead: usize,
}

/// Delivers outbox rows to the bus.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    id: String,
    settings: OutboxSettings,
}

impl Relay {
    /// A relay with a unique id (used as the lease holder).
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn EventBus>, settings: OutboxSettings) -> Relay {
        Relay {
            store,
            bus,
            id: format!("relay-{}", uuid::Uuid::new_v4()),
            settings,
        }
    }

    /// Claims one batch, publishes it in order and marks what was published as sent.
    pub async fn deliver_batch(&self) -> Result<BatchReport, StoreError> {
        let now = crate::domain::now();
        let lease = Duration::from_secs(self.settings.lease_seconds);
        let term = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(15));
        let mut rows = self
            .store
            .claim_outbox(&self.id, self.settings.batch_size, now, now + term)
            .await?;
        let mut report = BatchReport {
            claimed: rows.len(),
            ..BatchReport::default()
        };
        // One `relay` span per event, child of the span that wrote it; the bus carries the relay
        // span on, so the consumer's span is its child.
        let spans: Vec<tracing::Span> = rows
            .iter()
            .map(|r| {
                let span = tracing::info_span!(
                    "relay",
                    otel.name = %format_args!("relay {}", r.event.event_type),
                    otel.kind = "producer",
                    outbox_id = r.id,
                    event_id = %r.event.event_id,
                    bus = self.bus.name(),
                    otel.status_code = tracing::field::Empty,
                );
                crate::telemetry::set_parent(&span, r.event.trace_context.traceparent.as_deref());
                span
            })
            .collect();
        for (row, span) in rows.iter_mut().zip(&spans) {
            if let Some(traceparent) = crate::telemetry::traceparent_of(span) {
                row.event.trace_context.traceparent = Some(traceparent);
            }
        }
        let events: Vec<&EventEnvelope> = rows.iter().map(|r| &r.event).collect();
        let (store, id) = (&self.store, self.id.as_str());
        let renew = move || async move {
            store
                .renew_outbox_claims(id, crate::domain::now() + term)
                .await
                .map(drop)
        };
        let (published, error) =
            crate::lease::renewing(lease, self.bus.publish_batch(&events), renew).await;
        let sent: Vec<i64> = rows[..published].iter().map(|r| r.id).collect();
        let failure = error.and_then(|e| rows.get(published).map(|r| (r.id, e.to_string())));
        self.store
            .mark_outbox_sent(&self.id, &sent, crate::domain::now())
            .await?;
        report.delivered = sent.len();
        if let Some((failed_id, error)) = failure {
            // The failed row and everything after it go back, so order is kept; a row that has
            // failed too often is set aside as a dead letter so it stops holding the rest back.
            for (row, span) in rows.iter().zip(&spans).filter(|(r, _)| r.id >= failed_id) {
                let (why, dead_at) = if row.id == failed_id {
                    let dead = row.attempts >= self.settings.max_attempts;
                    span.record("otel.status_code", "ERROR");
                    // Logged in the event's relay span, so the line carries the event's trace.
                    span.in_scope(|| {
                        if dead {
                            tracing::error!(outbox_id = row.id, event_id = %row.event.event_id, event_type = %row.event.event_type, attempts = row.attempts, %error, "outbox event set aside as a dead letter after its last attempt");
                        } else {
                            tracing::warn!(outbox_id = row.id, attempts = row.attempts, %error, "publishing an outbox event failed; it will be retried");
                        }
                    });
                    if dead {
                        report.dead += 1;
                    }
                    (error.as_str(), dead.then(crate::domain::now))
                } else {
                    ("not attempted: an earlier event failed", None)
                };
                self.store
                    .release_outbox(&self.id, row.id, why, dead_at)
                    .await?;
                report.failed += 1;
            }
        }
        Ok(report)
    }

    /// Runs until cancelled: delivers batches while there is work, waits for `wake` or the poll
    /// interval when idle, and backs off after failures.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let mut backoff = poll;
        tracing::info!(relay = %self.id, bus = self.bus.name(), "outbox relay started");
        loop {
            // After a failure the relay waits out its back-off even if new rows arrive.
            let (wait, wakeable) = match self.deliver_batch().await {
                Ok(report) if report.failed > 0 => {
                    backoff = (backoff * 2).min(max_backoff);
                    (backoff, false)
                }
                Ok(report) if report.claimed > 0 => {
                    backoff = poll;
                    (Duration::ZERO, true)
                }
                Ok(_) => {
                    backoff = poll;
                    (poll, true)
                }
                Err(err) => {
                    backoff = (backoff * 2).min(max_backoff);
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot reach the database");
                    (backoff, false)
                }
            };
            if cancel.is_cancelled() {
                break;
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified(), if wakeable => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(relay = %self.id, "outbox relay stopped");
    }
}
