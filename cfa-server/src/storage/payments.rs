//! Payments: their state history, refunds, the stored outcome of each webhook delivery, and
//! reconciliation's marks.
//!
//! [`PaymentStore`] reads them (and marks a payment reconciled); [`PaymentTx`] locks and writes
//! them inside a transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use crate::domain::payment::{Payment, PaymentTransition};

/// A refund of (part of) a payment.
#[derive(Clone, Debug, PartialEq)]
pub struct Refund {
    /// The provider's refund id; a refund is applied once per id.
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: Uuid,
    /// How much.
    pub amount_minor: i64,
    /// `REQUESTED` (asked of the provider), `SUCCEEDED` (its webhook applied) or `FAILED`.
    pub status: String,
    /// When it was asked for (or first seen).
    pub requested_at: DateTime<Utc>,
    /// When it succeeded or failed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The stored outcome of one webhook delivery, keyed by its deduplication key.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRecord {
    /// `X-Idempotency-Key`, else the event id, else the SHA-256 of the body.
    pub dedup_key: String,
    /// The intent it named, if it could be read.
    pub payment_intent_id: Option<String>,
    /// The event id it carried, if any.
    pub event_id: Option<String>,
    /// `processed`, `ignored`, `rejected`, `not_found` or `malformed`.
    pub outcome: String,
    /// The HTTP status answered.
    pub status_code: u16,
    /// The exact body answered.
    pub body: Vec<u8>,
    /// When it first arrived.
    pub received_at: DateTime<Utc>,
    /// The request body as received (empty for deliveries stored before it was kept).
    pub request: Vec<u8>,
    /// For an operator's replay, the delivery it replayed.
    pub replay_of: Option<String>,
}

/// Reading payments, refunds and webhook records; reconciliation's marks.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// One payment by its id.
    async fn payment(&self, id: Uuid) -> StoreResult<Option<Payment>>;
    /// One payment by its provider intent id.
    async fn payment_by_intent(&self, payment_intent_id: &str) -> StoreResult<Option<Payment>>;
    /// A payment's transitions, oldest first.
    async fn payment_history(&self, payment_id: Uuid) -> StoreResult<Vec<PaymentTransition>>;
    /// A payment's refunds, oldest first.
    async fn refunds(&self, payment_id: Uuid) -> StoreResult<Vec<Refund>>;
    /// Payments still `INITIATED` or `AUTHORIZED` that have neither changed nor been reconciled
    /// since `before`, least recently looked at first.
    async fn stuck_payments(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Payment>>;
    /// Refunds still `REQUESTED` that were requested before `before`, oldest first.
    async fn expired_refunds(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Refund>>;
    /// Records that reconciliation looked at a payment, so the next pass starts with others.
    async fn mark_reconciled(&self, payment_id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    /// The stored outcome of a webhook delivery.
    async fn webhook_record(&self, dedup_key: &str) -> StoreResult<Option<WebhookRecord>>;
    /// The most recent webhook deliveries, newest first.
    async fn recent_webhooks(&self, limit: i64, offset: i64) -> StoreResult<Vec<WebhookRecord>>;
}

/// Payments, refunds and webhook records inside a write transaction.
#[async_trait]
pub trait PaymentTx: Send {
    /// Inserts a new payment.
    async fn insert_payment(&mut self, payment: &Payment) -> StoreResult<()>;
    /// One payment by id, locked until the transaction ends.
    async fn payment_for_update(&mut self, id: Uuid) -> StoreResult<Option<Payment>>;
    /// One payment by intent id, locked until the transaction ends.
    async fn payment_for_update_by_intent(
        &mut self,
        payment_intent_id: &str,
    ) -> StoreResult<Option<Payment>>;
    /// The payment of a donation that has not failed, if any.
    async fn live_payment_for_donation(
        &mut self,
        donation_id: Uuid,
    ) -> StoreResult<Option<Payment>>;
    /// Writes a payment's status, version, refunded total, last event time and update time.
    async fn update_payment(&mut self, payment: &Payment) -> StoreResult<()>;
    /// Appends to a payment's state history.
    async fn insert_payment_transition(
        &mut self,
        transition: &PaymentTransition,
    ) -> StoreResult<()>;

    /// Claims a webhook deduplication key for this transaction. Returns false if it is taken;
    /// on PostgreSQL a concurrent claim waits for the first transaction to end.
    async fn claim_webhook(&mut self, dedup_key: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Stores the outcome of a claimed webhook.
    async fn complete_webhook(&mut self, record: &WebhookRecord) -> StoreResult<()>;

    /// Inserts a refund unless its id exists; returns whether it was inserted.
    async fn insert_refund(&mut self, refund: &Refund) -> StoreResult<bool>;
    /// One refund, locked until the transaction ends.
    async fn refund_for_update(&mut self, refund_id: &str) -> StoreResult<Option<Refund>>;
    /// Marks a refund `SUCCEEDED` or `FAILED`.
    async fn complete_refund(
        &mut self,
        refund_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A payment's refunds still waiting for the provider, newest first, locked.
    async fn open_refunds_for_update(&mut self, payment_id: Uuid) -> StoreResult<Vec<Refund>>;
    /// Sum of a payment's refunds still waiting for the provider.
    async fn requested_refunds_minor(&mut self, payment_id: Uuid) -> StoreResult<i64>;
}
