//! The names of the exchanges and queues, and their declarations.
//!
//! Under an optional name prefix (`amqp.namespace`):
//! - topic exchanges `donations.events` (donation and campaign events) and `payments.events`,
//!   routing key = event type;
//! - per consumer a durable queue `cfa.<consumer>` bound to the topics it handles, a retry queue
//!   `cfa.<consumer>.retry.<delay>ms` whose messages expire after `amqp.retry_delay_ms` back into
//!   the main queue, and a dead-letter queue `cfa.<consumer>.dead`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

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

    pub(super) async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
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

    pub(super) async fn declare_consumer(
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
