//! Saved responses of requests made with an `Idempotency-Key`, and the lock that makes one
//! request the owner of a key. The HTTP side is [`crate::idempotency`].
//!
//! [`IdempotencyStore`] reads and sweeps the records; [`IdempotencyTx`] locks a key and saves
//! the response in the transaction that does the work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// The saved outcome of a request made with an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    /// The endpoint the key belongs to, e.g. `POST /api/v1/donations`.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// SHA-256 of the canonical request.
    pub fingerprint: String,
    /// The HTTP status that was sent.
    pub status_code: u16,
    /// The exact body that was sent.
    pub body: Vec<u8>,
    /// When it was saved; swept after the retention period.
    pub created_at: DateTime<Utc>,
}

/// Reading and sweeping saved responses.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// A saved idempotent response, if the key was used.
    async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Deletes idempotency records created before `before`; returns how many.
    async fn sweep_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Idempotency keys inside a write transaction.
#[async_trait]
pub trait IdempotencyTx: Send {
    /// Takes the lock that makes one request the owner of an idempotency key until this
    /// transaction ends. Returns false, without waiting, when another transaction holds it.
    async fn lock_idempotency_key(&mut self, scope: &str, key: &str) -> StoreResult<bool>;
    /// A saved idempotent response, as this transaction sees it.
    async fn idempotency_record(
        &mut self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Saves an idempotent response.
    async fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> StoreResult<()>;
}
