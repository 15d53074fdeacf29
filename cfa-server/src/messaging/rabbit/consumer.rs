//! Consuming from RabbitMQ: a loop per consumer that reconnects with back-off, hands each
//! message to its handler and acknowledges it only once the handler's effect is committed.
//!
//! A failure of the event itself goes to the retry queue, and after `amqp.max_attempts` to the
//! dead-letter queue. A *transient* failure (the handler's database cannot be reached) says
//! nothing about the event: it is retried in place, with exponential back-off and jitter capped
//! at 30 s, for as long as the outage lasts, and never uses up an attempt; the message stays
//! unacknowledged meanwhile, so a crash leaves it with the broker.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use super::{
    ATTEMPTS, LAST_ERROR, TRACEPARENT, Topology, connect, header_string, header_u32, properties,
    publish_confirmed,
};
use crate::config::AmqpSettings;
use crate::domain::event::EventEnvelope;
use crate::messaging::consumer::{self, Handler, HandlerError};

/// The longest wait between two tries of a message during an outage.
const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(30);

/// The longest wait between two tries to reconnect: a try costs one connection attempt, and the
/// consumer is back at most this long after the broker is.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// Runs one consumer on RabbitMQ until cancelled, reconnecting with back-off.
pub async fn run_consumer(
    settings: AmqpSettings,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
) {
    let topology = Topology::new(&settings.namespace);
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut consumed = false;
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = consume(&settings, &topology, handler.as_ref(), &cancel, &mut consumed) => outcome,
        };
        if consumed {
            // The last connection worked: a new outage starts again from a short wait.
            backoff = FIRST_BACKOFF;
        }
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(consumer = handler.name(), error = %e, retry_in_ms = backoff.as_millis() as u64, "RabbitMQ consumer lost its connection");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
        }
    }
}

/// Consumes over one connection: `Ok` once cancelled, `Err` when the link is lost. Sets
/// `consumed` once the broker accepted the subscription, so the caller can tell a connection
/// that worked from one that never did.
async fn consume(
    settings: &AmqpSettings,
    topology: &Topology,
    handler: &dyn Handler,
    cancel: &CancellationToken,
    consumed: &mut bool,
) -> Result<(), String> {
    let (connection, channel, mut deliveries) = subscribe(settings, topology, handler).await?;
    *consumed = true;
    let name = handler.name();
    tracing::info!(consumer = name, queue = %topology.queue(name), "consuming from RabbitMQ");
    let session = Session {
        settings,
        topology,
        handler,
        channel,
    };
    // The delivery stream does not always end when the connection dies under it (lapin may hold
    // it open for a recovery that never comes), so the link is checked on its own as well.
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        let delivery = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = watchdog.tick() => {
                if session.channel.status().connected() && connection.status().connected() {
                    continue;
                }
                return Err("the connection to RabbitMQ was lost".into());
            }
            next = deliveries.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the consumer was cancelled by the broker".into()),
            },
        };
        // What the broker has already sent (up to the prefetch) is applied as one batch.
        let mut batch = vec![delivery];
        while batch.len() < usize::from(settings.prefetch) {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                _ => break,
            }
        }
        session.settle_all(batch, cancel).await?;
    }
}

/// Connects, declares the consumer's queues and subscribes to its main queue.
async fn subscribe(
    settings: &AmqpSettings,
    topology: &Topology,
    handler: &dyn Handler,
) -> Result<(Connection, Channel, lapin::Consumer), String> {
    let (connection, channel) =
        tokio::time::timeout(Duration::from_secs(5), connect(&settings.url.0))
            .await
            .map_err(|_| "RabbitMQ did not answer within 5 s".to_string())?
            .map_err(|e| e.to_string())?;
    let name = handler.name();
    topology
        .declare_consumer(&channel, name, handler.topics(), settings.retry_delay_ms)
        .await
        .map_err(|e| e.to_string())?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let deliveries = channel
        .basic_consume(
            topology.queue(name).into(),
            format!("{name}-{}", uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((connection, channel, deliveries))
}

/// What handling a message needs, for the life of one connection.
struct Session<'a> {
    settings: &'a AmqpSettings,
    topology: &'a Topology,
    handler: &'a dyn Handler,
    channel: Channel,
}

impl Session<'_> {
    /// Handles one message, then acknowledges it. A failed one is republished (to the retry or
    /// dead-letter queue) before the acknowledgement, so it is never lost between the two.
    async fn settle(&self, delivery: Delivery, cancel: &CancellationToken) -> Result<(), String> {
        let attempts = header_u32(&delivery.properties, ATTEMPTS) + 1;
        let (outcome, span) = self.handle_through_outages(&delivery, cancel).await?;
        if let Err(error) = outcome {
            self.set_aside(&delivery, attempts, &error.message, &span)
                .await?;
        }
        acknowledge(&delivery).await
    }

    /// Handles the message, retrying a transient failure in place with back-off until it passes
    /// or the event itself fails. `Err` when the link is lost or the consumer stops meanwhile:
    /// the unacknowledged message goes back to the broker.
    async fn handle_through_outages(
        &self,
        delivery: &Delivery,
        cancel: &CancellationToken,
    ) -> Result<(Result<(), HandlerError>, tracing::Span), String> {
        use backon::BackoffBuilder as _;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.settings.retry_delay_ms.max(1)))
            .with_max_delay(MAX_OUTAGE_BACKOFF)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let (outcome, span) = self.handle(delivery).await;
            let error = match outcome {
                Err(error) if error.transient => error,
                outcome => return Ok((outcome, span)),
            };
            let wait = backoff.next().unwrap_or(MAX_OUTAGE_BACKOFF);
            span.in_scope(|| {
                tracing::warn!(consumer = self.handler.name(), %error, retry_in_ms = wait.as_millis() as u64, "event handling failed during an outage; retrying in place");
            });
            tokio::select! {
                _ = cancel.cancelled() => return Err("the consumer is stopping".into()),
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.channel.status().connected() {
                return Err("the connection to RabbitMQ was lost".into());
            }
        }
    }

    /// Applies several messages as one batch ([`Handler::handle_batch`]: one transaction for
    /// the consumers that can) and acknowledges them; if the batch fails, or one of them cannot
    /// be read, each is settled on its own as before (retry queue, dead letters).
    async fn settle_all(
        &self,
        batch: Vec<Delivery>,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        if batch.len() > 1 && self.handler.applies_batches() {
            let events: Result<Vec<EventEnvelope>, _> = batch.iter().map(decode).collect();
            if let Ok(events) = events {
                let refs: Vec<&EventEnvelope> = events.iter().collect();
                if self.handler.handle_batch(&refs).await.is_ok() {
                    for (delivery, event) in batch.iter().zip(&events) {
                        consumer::consumed(self.handler, event);
                        acknowledge(delivery).await?;
                    }
                    return Ok(());
                }
            }
        }
        for delivery in batch {
            self.settle(delivery, cancel).await?;
        }
        Ok(())
    }

    /// Runs the handler on the message's event, in the span that continues the publisher's
    /// trace; an unreadable message fails without a span.
    async fn handle(&self, delivery: &Delivery) -> (Result<(), HandlerError>, tracing::Span) {
        let handler = self.handler;
        match decode(delivery) {
            Ok(event) => {
                let span = consumer::consume_span(handler, &event);
                (consumer::process(handler, &event, &span).await, span)
            }
            Err(e) => (
                Err(HandlerError::poison(format!("unreadable event: {e}"))),
                tracing::Span::none(),
            ),
        }
    }

    /// Republishes a failed message with its attempt count and error: to the retry queue, or to
    /// the dead-letter queue once `amqp.max_attempts` are used up.
    async fn set_aside(
        &self,
        delivery: &Delivery,
        attempts: u32,
        error: &str,
        span: &tracing::Span,
    ) -> Result<(), String> {
        let name = self.handler.name();
        let dead = attempts >= self.settings.max_attempts;
        let target = if dead {
            self.topology.dead_queue(name)
        } else {
            self.topology
                .retry_queue(name, self.settings.retry_delay_ms)
        };
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(i64::from(attempts)));
        headers.insert(LAST_ERROR.into(), AMQPValue::LongString(error.into()));
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        span.in_scope(|| {
            if dead {
                tracing::error!(consumer = name, %message_id, attempts, %error, "event moved to the dead-letter queue");
            } else {
                tracing::warn!(consumer = name, %message_id, attempts, %error, "event handling failed; retrying after a delay");
            }
        });
        publish_confirmed(
            &self.channel,
            "",
            &target,
            &delivery.data,
            properties(&message_id, headers),
        )
        .await
    }
}

/// The event a message carries, with the trace context from its header (see `encode`).
fn decode(delivery: &Delivery) -> Result<EventEnvelope, serde_json::Error> {
    let mut event: EventEnvelope = serde_json::from_slice(&delivery.data)?;
    if let Some(traceparent) = header_string(&delivery.properties, TRACEPARENT) {
        event.trace_context.traceparent = Some(traceparent);
    }
    Ok(event)
}

/// Acknowledges a message whose effect is committed. Unacknowledged on a dead link, it is
/// redelivered; the handlers are idempotent.
async fn acknowledge(delivery: &Delivery) -> Result<(), String> {
    tokio::time::timeout(
        Duration::from_secs(10),
        delivery.ack(BasicAckOptions::default()),
    )
    .await
    .map_err(|_| "no answer to an acknowledgement within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(())
}
