//! Dead letters on RabbitMQ: the messages in the consumers' `.dead` queues, listed without
//! being moved, counted, and replayed one at a time back to their consumer's queue.

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::{
    ATTEMPTS, LAST_ERROR, RabbitBus, Topology, connect, header_string, header_u32, properties,
    publish_confirmed,
};
use crate::config::AmqpSettings;
use crate::domain::event::EventEnvelope;
use crate::messaging::bus::BusError;
use crate::messaging::dead_letters::{DeadLetter, DeadLetters};

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
    BusError::transient(format!("RabbitMQ: {message}"))
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
