//! The consumers' inbox: which events each consumer has processed, so that a redelivered event
//! is recognised and processed once.
//!
//! Only written, inside the transaction that does the consumer's work, through [`InboxTx`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// The inbox inside a write transaction.
#[async_trait]
pub trait InboxTx: Send {
    /// Records that `consumer` processed `event_id`; false if it already had (a redelivery).
    async fn insert_inbox(
        &mut self,
        consumer: &str,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
}
