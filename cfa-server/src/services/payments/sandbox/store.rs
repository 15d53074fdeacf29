//! The sandbox provider's own tables: its record of each intent (`sandbox_intents`) and its
//! webhook queue (`sandbox_deliveries`).
//!
//! They live in the platform's database, and [`SandboxTx`] writes them in the caller's
//! transaction, so an intent or refund exists at the provider exactly when it exists on our
//! side (on SQLite a second transaction would also wait for the single writer the caller holds).
//! That is why [`crate::storage::Tx`] and [`crate::storage::Store`] include these traits.
//!
//! The SQL is in `sql.rs` beside this file, written once for both backends: each storage
//! backend ([`crate::storage::sqlite`], [`crate::storage::postgres`]) declares it as a child
//! module of its own with `#[path]`, so it is compiled against that backend's types.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::storage::StoreResult;

/// The sandbox provider's record of an intent.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxIntent {
    /// The intent id.
    pub payment_intent_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// Currency code.
    pub currency: String,
    /// The provider's status (`INITIATED`, `AUTHORIZED`, `CAPTURED`, `FAILED`, `REFUNDED`).
    pub status: String,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// When the status last changed at the provider.
    pub status_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The outcome the donor confirmed it with (`succeed`, `decline`, `authorize_only`), once
    /// confirmed.
    pub confirmed_outcome: Option<String>,
    /// When it was confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A webhook the sandbox still has to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxDelivery {
    /// Sequence number.
    pub id: i64,
    /// The intent concerned.
    pub payment_intent_id: String,
    /// The JSON body to send.
    pub body: String,
    /// Attempts so far.
    pub attempts: i32,
    /// W3C `traceparent` of the request that queued it.
    pub traceparent: Option<String>,
}

/// What happened to one sandbox delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DeliveryOutcome {
    /// The platform answered 2xx.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Out of attempts.
    GiveUp,
}

/// The sandbox's intents and deliveries outside any transaction.
#[async_trait]
pub trait SandboxStore: Send + Sync {
    /// The sandbox provider's record of an intent.
    async fn sandbox_intent(&self, payment_intent_id: &str) -> StoreResult<Option<SandboxIntent>>;
    /// Sandbox webhooks due for (re)delivery, oldest first; a delivery held by one that is
    /// already finished (delivered or given up) is due as if it were not held.
    async fn sandbox_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SandboxDelivery>>;
    /// Records a delivery attempt: delivered, rescheduled for `next_attempt_at`, or given up;
    /// once the platform has decided on it, releases the intent's next delivery in the same
    /// transaction.
    async fn sandbox_delivery_attempted(
        &self,
        id: i64,
        status: Option<u16>,
        outcome: DeliveryOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// The sandbox's intents and deliveries inside the caller's write transaction.
#[async_trait]
pub trait SandboxTx: Send {
    /// Creates the sandbox provider's record of an intent.
    async fn sandbox_insert_intent(&mut self, intent: &SandboxIntent) -> StoreResult<()>;
    /// The sandbox's record of an intent, locked until the transaction ends.
    async fn sandbox_intent_for_update(
        &mut self,
        payment_intent_id: &str,
    ) -> StoreResult<Option<SandboxIntent>>;
    /// Writes the sandbox's status and refunded total of an intent.
    async fn sandbox_update_intent(&mut self, intent: &SandboxIntent) -> StoreResult<()>;
    /// Queues a sandbox webhook for delivery at `at`, continuing the trace `traceparent` names.
    async fn sandbox_enqueue(
        &mut self,
        payment_intent_id: &str,
        body: &str,
        at: DateTime<Utc>,
        traceparent: Option<&str>,
    ) -> StoreResult<()>;
}
