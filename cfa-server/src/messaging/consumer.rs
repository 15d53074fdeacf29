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
            Err(error) => {
                let _entered = span.enter();
                tracing::warn!(consumer = handler.name(), event_id = %delivery.event.event_id, event_type = %delivery.event.event_type, %error, transient = error.transient, "event handling failed; it will be redelivered");
                delivery.fail(error);
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
) -> Result<(), HandlerError> {
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
