//! The consumers' inbox: which events each consumer has processed, so that a redelivered event
//! is recognised and processed once.
//!
//! Only written, inside the transaction that does the consumer's work, through [`InboxTx`].

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// The inbox inside a write transaction.
#[async_trait]
pub trait InboxTx: Send {
    /// Records that `consumer` processed each of `event_ids`, in as few statements as the
    /// database's limit on bound values allows; answers the ids it had not processed before
    /// (the others are redeliveries).
    async fn insert_inbox_all(
        &mut self,
        consumer: &str,
        event_ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<HashSet<Uuid>>;
}
