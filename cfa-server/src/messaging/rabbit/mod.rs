//! The RabbitMQ bus (lapin): publishing with confirms, and consumers with retries and a
//! dead-letter queue.
//!
//! # Layout
//! - this module: [`RabbitBus`], the publisher, and the message format shared by the rest.
//! - `topology`: [`Topology`], the names of the exchanges and queues, and their declarations.
//! - `consumer`: [`run_consumer`], the consume loop with its retries.
//! - `dead_letters`: listing and replaying dead letters ([`dead_letters()`], [`replay`]), and
//!   [`RabbitBus`]'s [`DeadLetters`].
//!
//! Messages are persistent and carry the event id as message id and the trace context in the
//! `traceparent` header. A consumer acknowledges only after the handler's transaction committed;
//! a failure is republished to the retry queue with its attempt count, and after
//! `amqp.max_attempts` to the dead-letter queue, where operators can list and replay it.

mod consumer;
mod dead_letters;
mod topology;

use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

pub use consumer::run_consumer;
pub use dead_letters::{dead_letters, replay};
pub use topology::Topology;

use crate::config::AmqpSettings;
use crate::domain::event::{EventEnvelope, TraceContext};
use crate::messaging::bus::{BusError, EventBus};
pub use crate::messaging::dead_letters::DeadLetter;
use crate::messaging::dead_letters::DeadLetters;
use crate::services::CONSUMERS;

/// How many times a message was handled, in its headers.
const ATTEMPTS: &str = "x-cfa-attempts";
/// Why the last attempt failed, in its headers.
const LAST_ERROR: &str = "x-cfa-last-error";
/// The W3C trace context of a message (the relay span that published it).
const TRACEPARENT: &str = "traceparent";

/// A connection and a channel in confirm mode: nothing is published without the broker's
/// confirm.
async fn connect(url: &str) -> lapin::Result<(Connection, Channel)> {
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| {
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "RabbitMQ did not answer within 5 s",
        ))
    })??;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Persistent, so a broker restart keeps it, with the event id as message id, which a dead
/// letter is replayed by.
fn properties(event_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event_id.into())
        .with_headers(headers)
}

/// Publishes one message and waits for its confirm.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), String> {
    // Mandatory: a message no queue takes comes back, and is a failure, not a silent loss.
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let publish = async {
        channel
            .basic_publish(exchange.into(), routing_key.into(), options, payload, props)
            .await?
            .await
    };
    // A broker that went silent must not hold the relay forever.
    let confirm = tokio::time::timeout(Duration::from_secs(10), publish)
        .await
        .map_err(|_| "no publisher confirm within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    match confirm {
        Confirmation::Ack(Some(_)) => Err(format!(
            "no queue is bound for {routing_key} on {exchange:?}"
        )),
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
    }
}

/// Publishes outbox events to RabbitMQ, reconnecting on demand.
pub struct RabbitBus {
    url: String,
    retry_delay_ms: u64,
    topology: Topology,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl RabbitBus {
    /// A bus for the broker at `url`; it connects on first use.
    pub fn new(settings: &AmqpSettings) -> RabbitBus {
        RabbitBus {
            url: settings.url.0.clone(),
            retry_delay_ms: settings.retry_delay_ms,
            topology: Topology::new(&settings.namespace),
            link: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, BusError> {
        let mut link = self.link.lock().await;
        if let Some((_, channel)) = link.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let (connection, channel) =
            tokio::time::timeout(Duration::from_secs(5), connect(&self.url))
                .await
                .map_err(|_| BusError::transient("RabbitMQ did not answer within 5 s"))?
                .map_err(|e| BusError::transient(format!("cannot connect to RabbitMQ: {e}")))?;
        self.topology
            .declare_exchanges(&channel)
            .await
            .map_err(|e| BusError::transient(format!("cannot declare the exchanges: {e}")))?;
        // Every consumer's queue, not only this process's: an event published before its
        // consumer ever started still has a queue to wait in.
        for consumer in CONSUMERS {
            let name = consumer.name;
            self.topology
                .declare_consumer(&channel, name, consumer.topics, self.retry_delay_ms)
                .await
                .map_err(|e| {
                    BusError::transient(format!("cannot declare the queue of {name}: {e}"))
                })?;
        }
        *link = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn forget(&self) {
        *self.link.lock().await = None;
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, event: &EventEnvelope) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let (payload, headers) = encode(event).map_err(|e| BusError::poison(e.to_string()))?;
        let result = publish_confirmed(
            &channel,
            &self.topology.exchange(event.topic()),
            &event.event_type,
            &payload,
            properties(&event.event_id.to_string(), headers),
        )
        .await;
        if let Err(e) = result {
            self.forget().await;
            return Err(BusError::transient(format!(
                "publishing to RabbitMQ failed: {e}"
            )));
        }
        Ok(())
    }

    /// Pipelines the batch: every message is sent, then the confirms are awaited in order, so a
    /// batch costs one round trip instead of one per event.
    async fn publish_batch(&self, events: &[&EventEnvelope]) -> (usize, Option<BusError>) {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(e) => return (0, Some(e)),
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let (payload, headers) = match encode(event) {
                Ok(encoded) => encoded,
                Err(e) => {
                    pending.push(Err(e.to_string()));
                    break;
                }
            };
            let sent = channel
                .basic_publish(
                    self.topology.exchange(event.topic()).as_str().into(),
                    event.event_type.as_str().into(),
                    options,
                    &payload,
                    properties(&event.event_id.to_string(), headers),
                )
                .await
                .map_err(|e| e.to_string());
            let failed = sent.is_err();
            pending.push(sent);
            if failed {
                break;
            }
        }
        let mut confirmed = 0;
        for (event, sent) in events.iter().zip(pending) {
            let outcome = match sent {
                Err(e) => Err(e),
                Ok(confirm) => match tokio::time::timeout(Duration::from_secs(10), confirm).await {
                    Err(_) => Err("no publisher confirm within 10 s".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => {
                        Err(format!("no queue is bound for {}", event.event_type))
                    }
                    Ok(Ok(Confirmation::Nack(_))) => {
                        Err("the broker refused the message (nack)".to_string())
                    }
                    Ok(Ok(_)) => Ok(()),
                },
            };
            if let Err(e) = outcome {
                self.forget().await;
                return (
                    confirmed,
                    Some(BusError::transient(format!(
                        "publishing to RabbitMQ failed: {e}"
                    ))),
                );
            }
            confirmed += 1;
        }
        (confirmed, None)
    }

    async fn check(&self) -> Result<(), BusError> {
        self.channel().await.map(|_| ())
    }

    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        Some(self)
    }
}

/// A message for `event`: the envelope as JSON, with its trace context moved to the
/// `traceparent` header, where AMQP tooling and other consumers look for it.
fn encode(event: &EventEnvelope) -> Result<(Vec<u8>, FieldTable), serde_json::Error> {
    let mut headers = FieldTable::default();
    let Some(traceparent) = &event.trace_context.traceparent else {
        return Ok((serde_json::to_vec(event)?, headers));
    };
    headers.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(traceparent.as_str().into()),
    );
    let body = EventEnvelope {
        trace_context: TraceContext::default(),
        ..event.clone()
    };
    Ok((serde_json::to_vec(&body)?, headers))
}

/// A count in the headers; 0 when absent (a message not yet attempted).
fn header_u32(props: &BasicProperties, name: &str) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            _ => None,
        })
        .unwrap_or(0)
}

/// A text header, whichever AMQP string type the publisher used.
fn header_string(props: &BasicProperties, name: &str) -> Option<String> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        })
}
