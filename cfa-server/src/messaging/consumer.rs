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

use crate::domain::event::EventEnvelope;
use crate::messaging::bus::Delivery;
use crate::storage::StoreError;

/// Why a handler did not apply an event.
///
/// *Transient*: something the event passes through is down (the database cannot be reached);
/// the event is retried with back-off for as long as that lasts and never becomes a dead letter.
/// Otherwise the event itself fails (a corrupt row, a bug): the failure counts against its
/// attempts, and after the last one it is set aside as a dead letter for an operator.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What happened.
    pub message: String,
    /// Whether it says nothing about the event.
    pub transient: bool,
}

impl HandlerError {
    /// A failure outside the event.
    pub fn transient(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            transient: true,
        }
    }

    /// A failure of this event.
    pub fn poison(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            transient: false,
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> HandlerError {
        match e {
            StoreError::Unavailable(_) => HandlerError::transient(e.to_string()),
            _ => HandlerError::poison(e.to_string()),
        }
    }
}

/// Something that reacts to events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Its inbox name.
    fn name(&self) -> &'static str;
    /// The topics it listens to (`payment`, `donation`).
    fn topics(&self) -> &'static [&'static str];
    /// Applies one event; returns an error to have it delivered again.
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError>;

    /// Whether [`Handler::handle_batch`] applies several events in one transaction; only then
    /// does the runtime hand it batches (each event in its own `consume` span, which the handler
    /// enters for that event's part: see [`consume_span`]).
    fn applies_batches(&self) -> bool {
        false
    }

    /// Applies several events, in order, all or nothing: on an error none of them counts as
    /// applied, and each is tried again on its own. A consumer that can apply them in one
    /// transaction overrides this (one commit instead of one per event) and
    /// [`Handler::applies_batches`]; the default applies them one by one, which the inbox makes
    /// safe to repeat.
    async fn handle_batch(&self, events: &[&EventEnvelope]) -> Result<(), HandlerError> {
        for event in events {
            self.handle(event).await?;
        }
        Ok(())
    }
}

/// The most events a consumer applies in one batch.
const MAX_BATCH: usize = 256;

/// Feeds deliveries to a handler until the channel closes or `cancel` fires. What is waiting in
/// the channel is applied as one batch ([`Handler::handle_batch`]); if the batch fails, its
/// events are tried one by one, and after a failure the rest of the relay's batch is refused
/// unseen (the relay gives it back, in order, with the failed event).
pub async fn run(
    handler: Arc<dyn Handler>,
    mut deliveries: mpsc::Receiver<Delivery>,
    cancel: CancellationToken,
) {
    let mut failed_batch = None;
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            next = deliveries.recv() => match next {
                Some(d) => d,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match deliveries.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        // What remains of a relay batch in which this consumer failed is refused unseen.
        let (refused, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|d| Some(d.batch) == failed_batch);
        for d in refused {
            d.retry_later("not attempted: an earlier event of its batch failed");
        }
        if let Some(failed) = settle(handler.as_ref(), batch).await {
            failed_batch = Some(failed);
        }
    }
}

/// Applies `batch` and answers each delivery; returns the relay batch of a failed event.
async fn settle(handler: &dyn Handler, batch: Vec<Delivery>) -> Option<u64> {
    if batch.len() > 1 && handler.applies_batches() {
        let events: Vec<&EventEnvelope> = batch.iter().map(|d| &d.event).collect();
        if handler.handle_batch(&events).await.is_ok() {
            for d in batch {
                consumed(handler, &d.event);
                d.ack();
            }
            return None;
        }
    }
    let mut failed = None;
    for delivery in batch {
        if failed == Some(delivery.batch) {
            delivery.retry_later("not attempted: an earlier event of its batch failed");
            continue;
        }
        let span = consume_span(handler, &delivery.event);
        match process(handler, &delivery.event, &span).await {
            Ok(()) => delivery.ack(),
            Err(error) => {
                let _entered = span.enter();
                tracing::warn!(consumer = handler.name(), event_id = %delivery.event.event_id, event_type = %delivery.event.event_type, %error, transient = error.transient, "event handling failed; it will be redelivered");
                failed = Some(delivery.batch);
                delivery.fail(error);
            }
        }
    }
    failed
}

/// Measures a consumer's lag for an event it applied.
pub(crate) fn consumed(handler: &dyn Handler, event: &EventEnvelope) {
    let lag = (crate::domain::now() - event.occurred_at).num_milliseconds();
    crate::metrics::consumer_lag(handler.name(), lag.max(0) as f64 / 1000.0);
}

/// The span for one event's part of [`Handler::handle_batch`] run by a consumer that applies
/// batches: its own `consume` span in a batch, none (the current span goes on) for a single
/// event, which the runtime already runs in one.
pub fn part_span(handler: &dyn Handler, event: &EventEnvelope, in_batch: bool) -> tracing::Span {
    if in_batch {
        consume_span(handler, event)
    } else {
        tracing::Span::none()
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
) -> Result<(), HandlerError> {
    let result = handler.handle(event).instrument(span.clone()).await;
    match &result {
        Ok(()) => consumed(handler, event),
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}
