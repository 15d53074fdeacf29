//! The payment provider behind a trait: what the platform asks of whoever moves the money.
//!
//! The built-in implementation is the [`super::sandbox`] provider.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::money::Currency;
use crate::domain::payment::PaymentStatus;
use crate::storage::{StoreError, Tx};

/// A provider call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request (the message says why).
    #[error("{0}")]
    Refused(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the provider says about an intent (for reconciliation).
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderIntent {
    /// Its status at the provider.
    pub status: PaymentStatus,
    /// When that status was reached.
    pub status_at: DateTime<Utc>,
    /// Refunded so far.
    pub refunded_minor: i64,
}

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// The gateway name clients pass (`sandbox`).
    fn name(&self) -> &'static str;
    /// Whether an intent asking for `gateway` is served by this provider: its own name, and any
    /// alias it stands in for.
    fn serves(&self, gateway: &str) -> bool {
        gateway.eq_ignore_ascii_case(self.name())
    }
    /// Creates the provider's side of an intent, in the caller's transaction where the provider
    /// can take part in it.
    async fn create_intent(
        &self,
        tx: &mut dyn Tx,
        payment_intent_id: &str,
        amount_minor: i64,
        currency: Currency,
    ) -> Result<(), ProviderError>;
    /// Asks the provider to refund; the outcome arrives as a webhook.
    async fn refund(
        &self,
        tx: &mut dyn Tx,
        payment_intent_id: &str,
        refund_id: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError>;
    /// The provider's record of an intent.
    async fn fetch(&self, payment_intent_id: &str)
    -> Result<Option<ProviderIntent>, ProviderError>;
}
