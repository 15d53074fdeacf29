//! The outbox relay: claims undelivered rows, publishes them in order, marks them sent.
//!
//! Rows are claimed with a lease (and `SKIP LOCKED` on PostgreSQL), so several relays can run at
//! once without publishing the same row twice in normal operation, and a relay that dies leaves
//! its rows to another once the lease runs out. The lease is short (`outbox.lease_seconds`, 15 s)
//! and renewed while a publish is in flight ([`crate::lease::renewing`]), so a slow broker does
//! not hand the rows to a second relay, and a dead relay delays them by seconds. A failed publish
//! stops the batch (so later events do not overtake it), gives the row back with the error
//! recorded, and backs off exponentially with jitter.
//!
//! Only a failure of the event itself (a consumer refused it, it cannot be encoded) counts as an
//! attempt; after `outbox.max_attempts` of those it is set aside as a dead letter. A bus or
//! consumer database that cannot be reached is waited out for as long as it lasts and uses up
//! nothing, so an outage never makes dead letters. [`Relay::deliver_batch`] is public so tests
//! drive the relay by hand.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::OutboxSettings;
use crate::domain::event::EventEnvelope;
use crate::messaging::bus::{BusError, EventBus};
use crate::storage::{GivenBack, OutboxRow, Store, StoreError};

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
    /// Whether the failure was the event's own (an attempt counted) rather than an outage.
    pub poison: bool,
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
        report.delivered = sent.len();
        let given_back = match error {
            Some(e) => {
                report.poison = e.poison;
                self.give_back(&rows[published..], &spans[published..], &e)
            }
            None => Vec::new(),
        };
        report.failed = given_back.len();
        report.dead = given_back.iter().filter(|g| g.dead_at.is_some()).count();
        self.store
            .settle_outbox(&self.id, &sent, crate::domain::now(), &given_back)
            .await?;
        Ok(report)
    }

    /// The rows to give back after the first of `rows` failed with `error`: it and everything
    /// after it, so order is kept. Only the failed row's own failure counts as an attempt, and
    /// only when it is the event's fault; a row that has failed too often is set aside as a dead
    /// letter so it stops holding the rest back.
    fn give_back(
        &self,
        rows: &[OutboxRow],
        spans: &[tracing::Span],
        error: &BusError,
    ) -> Vec<GivenBack> {
        rows.iter()
            .zip(spans)
            .enumerate()
            .map(|(i, (row, span))| {
                if i > 0 {
                    return GivenBack {
                        id: row.id,
                        error: "not attempted: an earlier event failed".into(),
                        attempted: false,
                        dead_at: None,
                    };
                }
                let dead = self.failed(row, span, error);
                GivenBack {
                    id: row.id,
                    error: error.message.clone(),
                    attempted: error.poison,
                    dead_at: dead.then(crate::domain::now),
                }
            })
            .collect()
    }

    /// Records a failed publish in the event's span and says whether it was the event's last
    /// attempt.
    fn failed(&self, row: &OutboxRow, span: &tracing::Span, error: &BusError) -> bool {
        let attempts = row.attempts + i32::from(error.poison);
        let dead = error.poison && attempts >= self.settings.max_attempts;
        span.record("otel.status_code", "ERROR");
        // Logged in the event's relay span, so the line carries the event's trace.
        span.in_scope(|| {
            if dead {
                tracing::error!(outbox_id = row.id, event_id = %row.event.event_id, event_type = %row.event.event_type, attempts, error = %error.message, "outbox event set aside as a dead letter after its last attempt");
            } else if error.poison {
                tracing::warn!(outbox_id = row.id, attempts, error = %error.message, "publishing an outbox event failed; it will be retried");
            } else {
                tracing::warn!(outbox_id = row.id, error = %error.message, "the bus cannot take events now; waiting for it without using up an attempt");
            }
        });
        dead
    }

    /// Runs until cancelled: delivers batches while there is work, waits for `wake` or the poll
    /// interval when idle, and backs off after failures.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let fresh_backoff = || {
            use backon::BackoffBuilder as _;
            backon::ExponentialBuilder::default()
                .with_min_delay(poll)
                .with_max_delay(max_backoff)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = fresh_backoff();
        tracing::info!(relay = %self.id, bus = self.bus.name(), "outbox relay started");
        loop {
            // After a failure the relay waits out its back-off even if new rows arrive.
            let (wait, wakeable) = match self.deliver_batch().await {
                Ok(report) if report.failed > 0 => (backoff.next().unwrap_or(max_backoff), false),
                Ok(report) => {
                    backoff = fresh_backoff();
                    let idle = if report.claimed > 0 {
                        Duration::ZERO
                    } else {
                        poll
                    };
                    (idle, true)
                }
                Err(err) => {
                    let wait = backoff.next().unwrap_or(max_backoff);
                    tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "outbox relay cannot reach the database");
                    (wait, false)
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
