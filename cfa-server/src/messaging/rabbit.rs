//! The RabbitMQ bus (lapin): publishing with confirms, and consumers with retries and a
//! dead-letter queue.
//!
//! Topology, under an optional name prefix (`amqp.namespace`):
//! - topic exchanges `donations.events` (donation and campaign events) and `payments.events`,
//!   routing key = event type;
//! - per consumer a durable queue `cfa.<consumer>` bound to the topics it handles, a retry queue
//!   `cfa.<consumer>.retry` whose messages expire after `amqp.retry_delay_ms` back into the main
//!   queue, and a dead-letter queue `cfa.<consumer>.dead`.
//!
//! Messages are persistent and carry the event id as message id and the trace context in the
//! `traceparent` header. A consumer acknowledges only after the handler's transaction committed;
//! a failure is republished to the retry queue with its attempt count, and after
//! `amqp.max_attempts` to the dead-letter queue, where operators can list and replay it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
use crate::domain::event::{EventEnvelope, TraceContext};
use crate::messaging::bus::{BusError, EventBus};
use crate::messaging::consumer::{self, Handler};
pub use crate::messaging::dead_letters::DeadLetter;
use crate::messaging::dead_letters::DeadLetters;
use crate::services::CONSUMERS;

const ATTEMPTS: &str = "x-cfa-attempts";

const LAST_ERROR: &str = "x-cfa-last-error";
/// The W3C trace context of a message (the relay span that published it).
const TRACEPARENT: &str = "traceparent";

/// Names of the exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    namespace: String,
}

impl Topology {
    /// The topology under a name prefix (empty in production).
    pub fn new(namespace: &str) -> Topology {
        Topology {
            namespace: namespace.to_string(),
        }
    }

    /// The exchange a topic's events go to.
    pub fn exchange(&self, topic: &str) -> String {
        match topic {
            "payment" => format!("{}payments.events", self.namespace),
            _ => format!("{}donations.events", self.namespace),
        }
    }

    /// A consumer's main queue.
    pub fn queue(&self, consumer: &str) -> String {
        format!("{}cfa.{consumer}", self.namespace)
    }

    /// A consumer's retry queue for a delay. The delay is part of the name because RabbitMQ
    /// cannot change a queue's TTL: a new delay gets a new queue instead of a refused declaration.
    pub fn retry_queue(&self, consumer: &str, delay_ms: u64) -> String {
        format!("{}.retry.{delay_ms}ms", self.queue(consumer))
    }

    /// A consumer's dead-letter queue.
    pub fn dead_queue(&self, consumer: &str) -> String {
        format!("{}.dead", self.queue(consumer))
    }

    async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
        for topic in ["donation", "payment"] {
            channel
                .exchange_declare(
                    self.exchange(topic).into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    async fn declare_consumer(
        &self,
        channel: &Channel,
        consumer: &str,
        topics: &[&str],
        retry_delay_ms: u64,
    ) -> lapin::Result<()> {
        self.declare_exchanges(channel).await?;
        let durable = QueueDeclareOptions::durable();
        channel
            .queue_declare(self.queue(consumer).into(), durable, FieldTable::default())
            .await?;
        for topic in topics {
            channel
                .queue_bind(
                    self.queue(consumer).into(),
                    self.exchange(topic).into(),
                    format!("{topic}.#").into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        // Messages wait out the delay in the retry queue, then return to the main queue.
        let mut retry = FieldTable::default();
        retry.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(retry_delay_ms).unwrap_or(1000)),
        );
        retry.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        retry.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.queue(consumer).into()),
        );
        channel
            .queue_declare(
                self.retry_queue(consumer, retry_delay_ms).into(),
                durable,
                retry,
            )
            .await?;
        channel
            .queue_declare(
                self.dead_queue(consumer).into(),
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

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

fn properties(event_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event_id.into())
        .with_headers(headers)
}

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
                .map_err(|_| BusError("RabbitMQ did not answer within 5 s".into()))?
                .map_err(|e| BusError(format!("cannot connect to RabbitMQ: {e}")))?;
        self.topology
            .declare_exchanges(&channel)
            .await
            .map_err(|e| BusError(format!("cannot declare the exchanges: {e}")))?;
        // Every consumer's queue, not only this process's: an event published before its
        // consumer ever started still has a queue to wait in.
        for consumer in CONSUMERS {
            let name = consumer.name;
            self.topology
                .declare_consumer(&channel, name, consumer.topics, self.retry_delay_ms)
                .await
                .map_err(|e| BusError(format!("cannot declare the queue of {name}: {e}")))?;
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
        let (payload, headers) = encode(event).map_err(|e| BusError(e.to_string()))?;
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
            return Err(BusError(format!("publishing to RabbitMQ failed: {e}")));
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
                    Some(BusError(format!("publishing to RabbitMQ failed: {e}"))),
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

/// Each call opens a connection of its own rather than borrowing the publisher's: asking about a
/// queue that does not exist closes the channel that asked.
#[async_trait]
impl DeadLetters for RabbitBus {
    async fn list(&self, consumers: &[&str], limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        list_dead(&self.url, &self.topology, consumers, limit)
            .await
            .map_err(broker_error)
    }

    async fn replay(&self, consumer: &str, event_id: &str) -> Result<bool, BusError> {
        replay_dead(&self.url, &self.topology, consumer, event_id)
            .await
            .map_err(broker_error)
    }

    async fn counts(&self, consumers: &[&str]) -> Result<Vec<(String, u32)>, BusError> {
        count_dead(&self.url, &self.topology, consumers)
            .await
            .map_err(broker_error)
    }
}

/// Names the broker, since the message reaches operators as it is.
fn broker_error(message: String) -> BusError {
    BusError(format!("RabbitMQ: {message}"))
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
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume(
    settings: &AmqpSettings,
    topology: &Topology,
    handler: &dyn Handler,
    cancel: &CancellationToken,
    consumed: &mut bool,
) -> Result<(), String> {
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
    let mut deliveries = channel
        .basic_consume(
            topology.queue(name).into(),
            format!("{name}-{}", uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    *consumed = true;
    tracing::info!(consumer = name, queue = %topology.queue(name), "consuming from RabbitMQ");
    // The delivery stream does not always end when the connection dies under it (lapin may hold
    // it open for a recovery that never comes), so the link is checked on its own as well.
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        let delivery = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = watchdog.tick() => {
                if channel.status().connected() && connection.status().connected() {
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
        let attempts = header_u32(&delivery.properties, ATTEMPTS) + 1;
        let (outcome, span) = match serde_json::from_slice::<EventEnvelope>(&delivery.data) {
            Ok(mut event) => {
                // The trace context travels in the header (see `encode`).
                if let Some(traceparent) = header_string(&delivery.properties, TRACEPARENT) {
                    event.trace_context.traceparent = Some(traceparent);
                }
                let span = consumer::consume_span(handler, &event);
                (consumer::process(handler, &event, &span).await, span)
            }
            Err(e) => (Err(format!("unreadable event: {e}")), tracing::Span::none()),
        };
        match outcome {
            Ok(()) => {}
            Err(error) => {
                let dead = attempts >= settings.max_attempts;
                let target = if dead {
                    topology.dead_queue(name)
                } else {
                    topology.retry_queue(name, settings.retry_delay_ms)
                };
                let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(i64::from(attempts)));
                headers.insert(
                    LAST_ERROR.into(),
                    AMQPValue::LongString(error.as_str().into()),
                );
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
                    &channel,
                    "",
                    &target,
                    &delivery.data,
                    properties(&message_id, headers),
                )
                .await?;
            }
        }
        // Unacknowledged on a dead link, the message is redelivered; the handlers are idempotent.
        tokio::time::timeout(
            Duration::from_secs(10),
            delivery.ack(BasicAckOptions::default()),
        )
        .await
        .map_err(|_| "no answer to an acknowledgement within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    }
}

/// Lists (up to `limit` per consumer) the dead letters of `consumers`, leaving them in place.
pub async fn dead_letters(
    settings: &AmqpSettings,
    consumers: &[&str],
    limit: usize,
) -> Result<Vec<DeadLetter>, String> {
    let topology = Topology::new(&settings.namespace);
    list_dead(&settings.url.0, &topology, consumers, limit).await
}

async fn list_dead(
    url: &str,
    topology: &Topology,
    consumers: &[&str],
    limit: usize,
) -> Result<Vec<DeadLetter>, String> {
    let (connection, _) = connect(url).await.map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for consumer in consumers {
        // A channel per queue: a queue that does not exist closes its channel, not the listing.
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let queue = topology.dead_queue(consumer);
        let mut held = Vec::new();
        while held.len() < limit {
            match channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
            {
                Ok(Some(message)) => held.push(message.delivery),
                Ok(None) => break,
                // The queue does not exist yet: nothing died there.
                Err(_) => break,
            }
        }
        for delivery in &held {
            let event: Option<EventEnvelope> = serde_json::from_slice(&delivery.data).ok();
            found.push(DeadLetter {
                id: format!(
                    "{consumer}:{}",
                    event
                        .as_ref()
                        .map_or_else(String::new, |e| e.event_id.to_string())
                ),
                consumer: consumer.to_string(),
                event_id: event
                    .as_ref()
                    .map_or_else(String::new, |e| e.event_id.to_string()),
                event_type: event.map(|e| e.event_type),
                attempts: header_u32(&delivery.properties, ATTEMPTS),
                last_error: header_string(&delivery.properties, LAST_ERROR),
            });
        }
        for delivery in held {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(found)
}

/// How many messages wait in each consumer's dead-letter queue (a queue not declared yet holds
/// none). Asks the broker passively: nothing is moved. Unbounded: the caller bounds it.
async fn count_dead(
    url: &str,
    topology: &Topology,
    consumers: &[&str],
) -> Result<Vec<(String, u32)>, String> {
    let (connection, _) = connect(url).await.map_err(|e| e.to_string())?;
    let mut counts = Vec::with_capacity(consumers.len());
    for consumer in consumers {
        // A channel per queue: a passive declare of a missing queue closes its channel.
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let count = channel
            .queue_declare(
                topology.dead_queue(consumer).into(),
                passive,
                FieldTable::default(),
            )
            .await
            .map_or(0, |q| q.message_count());
        counts.push((consumer.to_string(), count));
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(counts)
}

/// Moves one dead letter back to its consumer's queue with a fresh attempt count. Returns false
/// if it is not there.
pub async fn replay(
    settings: &AmqpSettings,
    consumer: &str,
    event_id: &str,
) -> Result<bool, String> {
    let topology = Topology::new(&settings.namespace);
    replay_dead(&settings.url.0, &topology, consumer, event_id).await
}

async fn replay_dead(
    url: &str,
    topology: &Topology,
    consumer: &str,
    event_id: &str,
) -> Result<bool, String> {
    let (_connection, channel) = connect(url).await.map_err(|e| e.to_string())?;
    let queue = topology.dead_queue(consumer);
    let mut held = Vec::new();
    let mut replayed = false;
    loop {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        let delivery = message.delivery;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
            .unwrap_or("")
            .to_string();
        if !replayed && id == event_id {
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(0));
            publish_confirmed(
                &channel,
                "",
                &topology.queue(consumer),
                &delivery.data,
                properties(&id, headers),
            )
            .await?;
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            replayed = true;
        } else {
            held.push(delivery);
        }
        if held.len() > 10_000 {
            break;
        }
    }
    for delivery in held {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(replayed)
}
