//! Dead letters kept by a broker: messages a consumer gave up on after its retries, held where an
//! operator can list them and send them back. The bus that owns them implements
//! [`DeadLetters`], so callers need not know which broker that is; the outbox's own dead rows are
//! the store's business, not this module's.

use async_trait::async_trait;
use serde::Serialize;

use crate::messaging::bus::BusError;

/// A message in a consumer's dead-letter queue.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// `<consumer>:<event id>`, the id to replay it by.
    pub id: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The event id.
    pub event_id: String,
    /// The event type, if readable.
    pub event_type: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
}

/// The dead letters a bus keeps, per consumer (named as in [`crate::services::CONSUMERS`]).
///
/// Errors mean the broker could not be reached or refused the operation; their message names
/// the broker, so callers can show it as it is.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Lists up to `limit` dead letters of each of `consumers`, leaving them in place.
    async fn list(&self, consumers: &[&str], limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// Moves the dead letter of event `event_id` back to `consumer`'s queue with a fresh attempt
    /// count. Returns false if it is not there.
    async fn replay(&self, consumer: &str, event_id: &str) -> Result<bool, BusError>;

    /// How many dead letters wait for each of `consumers`. Unbounded in time: the caller bounds
    /// it.
    async fn counts(&self, consumers: &[&str]) -> Result<Vec<(String, u32)>, BusError>;
}
