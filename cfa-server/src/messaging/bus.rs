//! The event bus behind a trait, and its in-process implementation.
//!
//! `publish` returns once the bus has taken responsibility for an event. For a broker that means
//! its publisher confirm; for the in-process bus, which keeps nothing on disk, it means that
//! every subscriber interested in the event has processed it and acknowledged. Only then does
//! the relay mark the outbox row sent, so a crash at any point leaves the row to be delivered
//! again: delivery is at least once, and consumers deduplicate by event id.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::event::EventEnvelope;
use crate::messaging::consumer::HandlerError;
use crate::messaging::dead_letters::DeadLetters;

/// A failed publish; the relay retries it later.
///
/// Most failures are *transient* (the broker or a consumer's database cannot be reached, a
/// confirm timed out): the relay retries them with back-off for as long as they last, and they
/// never use up an event's attempts. A *poison* failure (a consumer refused this event, the event
/// cannot be encoded) counts against `outbox.max_attempts`; only those make dead letters.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BusError {
    /// What happened.
    pub message: String,
    /// Whether this event itself is at fault, rather than something it passes through.
    pub poison: bool,
}

impl BusError {
    /// A failure that says nothing about the event: retried for as long as it lasts.
    pub fn transient(message: impl Into<String>) -> BusError {
        BusError {
            message: message.into(),
            poison: false,
        }
    }

    /// A failure of this event: counted against its attempts.
    pub fn poison(message: impl Into<String>) -> BusError {
        BusError {
            message: message.into(),
            poison: true,
        }
    }
}

/// Where the relay publishes events.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// A short name for logs and `/ready`.
    fn name(&self) -> &'static str;
    /// Publishes one event, returning once the bus is responsible for it.
    async fn publish(&self, event: &EventEnvelope) -> Result<(), BusError>;
    /// Publishes events in order; returns how many were published before the first failure (and
    /// that failure). A broker can pipeline them; the default publishes one at a time.
    async fn publish_batch(&self, events: &[&EventEnvelope]) -> (usize, Option<BusError>) {
        for (i, event) in events.iter().enumerate() {
            if let Err(e) = self.publish(event).await {
                return (i, Some(e));
            }
        }
        (events.len(), None)
    }

    /// Whether the bus can be reached now (for `/ready`).
    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// The dead letters this bus keeps, if it keeps any.
    fn dead_letters(&self) -> Option<&dyn DeadLetters>;
}

/// One event handed to an in-process subscriber, to be acknowledged after processing.
pub struct Delivery {
    /// The event.
    pub event: EventEnvelope,
    /// The relay's batch it came in: after a failure a consumer refuses the rest of that batch
    /// unseen, so nothing overtakes the failed event.
    pub(crate) batch: u64,
    ack: oneshot::Sender<Result<(), HandlerError>>,
}

impl Delivery {
    /// Processing succeeded (its effect is committed).
    pub fn ack(self) {
        let _ = self.ack.send(Ok(()));
    }

    /// Processing this event failed; it will be delivered again, and the failure counts
    /// against its attempts.
    pub fn nack(self, reason: impl Into<String>) {
        self.fail(HandlerError::poison(reason));
    }

    /// Processing failed for a reason outside the event (its database is unreachable): it will
    /// be delivered again after a back-off, without using up an attempt.
    pub fn retry_later(self, reason: impl Into<String>) {
        self.fail(HandlerError::transient(reason));
    }

    /// Processing failed as `error` says.
    pub fn fail(self, error: HandlerError) {
        let _ = self.ack.send(Err(error));
    }
}

struct Subscriber {
    name: String,
    topics: Vec<String>,
    sender: mpsc::Sender<Delivery>,
}

/// The embedded bus: events go straight to subscribers in this process.
pub struct InProcessBus {
    subscribers: RwLock<Vec<Subscriber>>,
    ack_timeout: Duration,
    batches: AtomicU64,
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus {
            subscribers: RwLock::new(Vec::new()),
            ack_timeout: Duration::from_secs(10),
            batches: AtomicU64::new(0),
        }
    }
}

impl InProcessBus {
    /// Subscribes a consumer to events whose topic (the type before the first dot, such as
    /// `donation` or `payment`) is in `topics`; an empty list means every event.
    pub fn subscribe(&self, name: &str, topics: &[&str]) -> mpsc::Receiver<Delivery> {
        let (sender, receiver) = mpsc::channel(256);
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                name: name.to_string(),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                sender,
            });
        receiver
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    fn name(&self) -> &'static str {
        "in-process"
    }

    /// None: an event a subscriber keeps failing is never acknowledged, so it stays in the
    /// outbox, where the relay sets it aside after `outbox.max_attempts`.
    fn dead_letters(&self) -> Option<&dyn DeadLetters> {
        None
    }

    async fn publish(&self, event: &EventEnvelope) -> Result<(), BusError> {
        let batch = self.batches.fetch_add(1, Ordering::Relaxed);
        let acks = self.hand_out(event, batch).await?;
        self.acknowledged(acks).await
    }

    /// Hands every event of the batch to its consumers before waiting for any answer, so each
    /// consumer can apply what it holds in one transaction ([`crate::messaging::consumer::run`]);
    /// then waits for every answer. A consumer applies what it holds all or nothing and, after
    /// a failure, refuses the rest of the batch unseen, so nothing overtakes the failed event;
    /// every answer is awaited, so no event of an abandoned batch is applied later.
    async fn publish_batch(&self, events: &[&EventEnvelope]) -> (usize, Option<BusError>) {
        let batch = self.batches.fetch_add(1, Ordering::Relaxed);
        let mut handed = Vec::with_capacity(events.len());
        let mut refused = None;
        for event in events {
            match self.hand_out(event, batch).await {
                Ok(acks) => handed.push(acks),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let mut published = handed.len();
        let mut first_error = None;
        for (i, acks) in handed.into_iter().enumerate() {
            if let Err(e) = self.acknowledged(acks).await
                && first_error.is_none()
            {
                published = i;
                first_error = Some(e);
            }
        }
        (published, first_error.or(refused))
    }
}

/// The answers a handed-out event is waiting for, one per interested consumer.
type Acks = Vec<(String, oneshot::Receiver<Result<(), HandlerError>>)>;

impl InProcessBus {
    /// Gives `event` to every interested consumer; the answers come later.
    async fn hand_out(&self, event: &EventEnvelope, batch: u64) -> Result<Acks, BusError> {
        let targets: Vec<(String, mpsc::Sender<Delivery>)> = self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.topics.is_empty() || s.topics.iter().any(|t| t == event.topic()))
            .map(|s| (s.name.clone(), s.sender.clone()))
            .collect();
        // Every interested consumer gets the event before any is waited for, so they work on it
        // side by side.
        let mut acks = Vec::with_capacity(targets.len());
        for (name, sender) in targets {
            let (ack, acked) = oneshot::channel();
            let delivery = Delivery {
                event: event.clone(),
                batch,
                ack,
            };
            match tokio::time::timeout(self.ack_timeout, sender.send(delivery)).await {
                Ok(Ok(())) => acks.push((name, acked)),
                Ok(Err(_)) => {
                    return Err(BusError::transient(format!("consumer {name} has stopped")));
                }
                Err(_) => {
                    return Err(BusError::transient(format!(
                        "consumer {name} is not taking events"
                    )));
                }
            }
        }
        Ok(acks)
    }

    /// Waits until every consumer an event was handed to has answered.
    async fn acknowledged(&self, acks: Acks) -> Result<(), BusError> {
        for (name, acked) in acks {
            match tokio::time::timeout(self.ack_timeout, acked).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    let message = format!("consumer {name} failed: {error}");
                    return Err(if error.transient {
                        BusError::transient(message)
                    } else {
                        BusError::poison(message)
                    });
                }
                Ok(Err(_)) => {
                    return Err(BusError::transient(format!(
                        "consumer {name} dropped the event"
                    )));
                }
                Err(_) => {
                    return Err(BusError::transient(format!(
                        "consumer {name} did not answer in time"
                    )));
                }
            }
        }
        Ok(())
    }
}
