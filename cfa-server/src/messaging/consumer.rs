//! Consumers: handlers of events with exactly-once effects over at-least-once delivery.
//!
//! A handler writes an inbox row `(consumer, event_id)` in the transaction of its effect; a
//! redelivered event finds the row and changes nothing. [`run`] feeds a handler from the
//! in-process bus and acknowledges only after the handler's transaction committed; a failure is
//! negatively acknowledged, so the relay delivers the event again after its back-off.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::event::EventEnvelope;
use crate::http::donations::donation_event_of_type;
use crate::messaging::bus::Delivery;
use crate::storage::{Store, StoreError};

/// Something that reacts to events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Its inbox name.
    fn name(&self) -> &'static str;
    /// The topics it listens to (`payment`, `donation`).
    fn topics(&self) -> &'static [&'static str];
    /// Applies one event; returns an error to have it delivered again.
    async fn handle(&self, event: &EventEnvelope) -> Result<(), String>;
}

/// Feeds deliveries to a handler until the channel closes or `cancel` fires.
pub async fn run(
    handler: Arc<dyn Handler>,
    mut deliveries: mpsc::Receiver<Delivery>,
    cancel: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = cancel.cancelled() => return,
            next = deliveries.recv() => match next {
                Some(d) => d,
                None => return,
            },
        };
        let span = consume_span(handler.as_ref(), &delivery.event);
        match process(handler.as_ref(), &delivery.event, &span).await {
            Ok(()) => delivery.ack(),
            Err(reason) => {
                let _entered = span.enter();
                tracing::warn!(consumer = handler.name(), event_id = %delivery.event.event_id, event_type = %delivery.event.event_type, %reason, "event handling failed; it will be redelivered");
                delivery.nack(reason);
            }
        }
    }
}

/// The `consume` span of `handler` processing `event`: a child of the span that published the
/// event (so the trace goes on from the request that caused it).
pub fn consume_span(handler: &dyn Handler, event: &EventEnvelope) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format_args!("consume {}", event.event_type),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        consumer = handler.name(),
        event_id = %event.event_id,
        event_type = %event.event_type,
    );
    crate::telemetry::set_parent(&span, event.trace_context.traceparent.as_deref());
    span
}

/// Has `handler` process one event in `span` (see [`consume_span`]), marks the span failed if it
/// fails and measures the consumer's lag if it succeeds. Both buses deliver through here; they
/// log a failure in `span`, so the line carries the event's trace.
pub async fn process(
    handler: &dyn Handler,
    event: &EventEnvelope,
    span: &tracing::Span,
) -> Result<(), String> {
    let result = handler.handle(event).instrument(span.clone()).await;
    match &result {
        Ok(()) => {
            let lag = (crate::domain::now() - event.occurred_at).num_milliseconds();
            crate::metrics::consumer_lag(handler.name(), lag.max(0) as f64 / 1000.0);
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

/// Keeps donations in step with their payments: records the intent, completes, fails and
/// refunds them.
pub struct DonationStatusConsumer {
    store: Arc<dyn Store>,
}

impl DonationStatusConsumer {
    /// The consumer over a store.
    pub fn new(store: Arc<dyn Store>) -> DonationStatusConsumer {
        DonationStatusConsumer { store }
    }

    async fn apply(&self, event: &EventEnvelope) -> Result<(), StoreError> {
        let payload = &event.payload;
        let Some(donation_id) = payload["donation_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            tracing::warn!(event_id = %event.event_id, "payment event without a donation id; ignored");
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        let now = crate::domain::now();
        if !tx.insert_inbox(self.name(), event.event_id, now).await? {
            return Ok(()); // already processed: a redelivery
        }
        if event.event_type == "payment.initiated" {
            if let Some(intent) = payload["payment_intent_id"].as_str() {
                tx.set_donation_payment_intent(donation_id, intent, now)
                    .await?;
            }
            return tx.commit().await;
        }
        let Some(donation) = tx.donation_for_update(donation_id).await? else {
            tracing::warn!(%donation_id, event_id = %event.event_id, "payment event for an unknown donation; ignored");
            return tx.commit().await;
        };
        let amount = payload["amount_minor"].as_i64();
        let change: Option<(&str, Donation)> = match (event.event_type.as_str(), donation.status) {
            ("payment.captured", DonationStatus::Pending)
                if amount == Some(donation.amount_minor) =>
            {
                Some((
                    DonationStatus::Completed.event_type(),
                    with_status(&donation, DonationStatus::Completed, now),
                ))
            }
            ("payment.captured", DonationStatus::Pending) => {
                tracing::warn!(%donation_id, ?amount, expected = donation.amount_minor, "a capture for another amount does not complete the donation");
                None
            }
            ("payment.failed", DonationStatus::Pending) => {
                // A donor may retry with a new intent after a decline; only fail the donation
                // when no other payment for it is still alive.
                let failed_payment = payload["payment_id"].as_str().unwrap_or("");
                match tx.live_payment_for_donation(donation.id).await? {
                    Some(other) if other.id.to_string() != failed_payment => None,
                    _ => Some((
                        DonationStatus::Failed.event_type(),
                        with_status(&donation, DonationStatus::Failed, now),
                    )),
                }
            }
            ("payment.refunded", DonationStatus::Pending)
                if payload["old_status"] == "AUTHORIZED" =>
            {
                // A voided authorization: the donation was never paid.
                Some((
                    DonationStatus::Failed.event_type(),
                    with_status(&donation, DonationStatus::Failed, now),
                ))
            }
            ("payment.refunded", DonationStatus::Completed) => {
                let refunded = payload["refunded_minor"]
                    .as_i64()
                    .unwrap_or(donation.amount_minor);
                if refunded <= donation.refunded_minor {
                    None
                } else if refunded >= donation.amount_minor {
                    let mut d = with_status(&donation, DonationStatus::Refunded, now);
                    d.refunded_minor = donation.amount_minor;
                    Some((DonationStatus::Refunded.event_type(), d))
                } else {
                    let mut d = with_status(&donation, DonationStatus::Completed, now);
                    d.refunded_minor = refunded;
                    Some(("donation.partially_refunded", d))
                }
            }
            ("payment.refunded", DonationStatus::Pending) => {
                // The capture has not reached the donation yet; try again after it.
                return Err(StoreError::Other(
                    "refund before completion; retrying".into(),
                ));
            }
            _ => None,
        };
        let mut reached = None;
        if let Some((event_type, updated)) = change {
            let updated = Donation {
                version: donation.version + 1,
                ..updated
            };
            if !tx.update_donation(&updated, donation.version).await? {
                return Err(StoreError::Conflict("donation changed concurrently".into()));
            }
            tx.insert_outbox(&donation_event_of_type(event_type, &updated))
                .await?;
            tracing::info!(%donation_id, status = updated.status.as_str(), "donation follows its payment");
            reached = (updated.status != donation.status).then_some(updated.status);
        }
        tx.commit().await?;
        if let Some(status) = reached {
            crate::metrics::donation(status);
        }
        Ok(())
    }
}

fn with_status(
    d: &Donation,
    status: DonationStatus,
    at: chrono::DateTime<chrono::Utc>,
) -> Donation {
    Donation {
        status,
        updated_at: at,
        ..d.clone()
    }
}

#[async_trait]
impl Handler for DonationStatusConsumer {
    fn name(&self) -> &'static str {
        "donation-status"
    }

    fn topics(&self) -> &'static [&'static str] {
        &["payment"]
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), String> {
        self.apply(event).await.map_err(|e| e.to_string())
    }
}
