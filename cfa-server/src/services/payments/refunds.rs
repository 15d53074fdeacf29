//! Refunds an operator asks for: the amount is reserved at once, so concurrent requests can never
//! refund more than was captured, and asked of the provider; its webhook completes the refund.

use uuid::Uuid;

use super::provider::{PaymentProvider, ProviderError};
use crate::domain::money::MAX_DONATION_MAJOR;
use crate::domain::payment::{Payment, PaymentStatus};
use crate::storage::{Refund, StoreError, Tx};

/// A refund to ask for.
#[derive(Clone, Debug)]
pub struct RefundRequest {
    /// The payment to refund.
    pub payment_id: Uuid,
    /// How much, as written (a decimal number); all that is left when absent.
    pub amount: Option<String>,
}

/// Why a refund was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// No payment has this id.
    #[error("payment {0} not found")]
    NotFound(Uuid),
    /// Only captured payments can be refunded.
    #[error("only CAPTURED payments can be refunded; this one is {}", .0.as_str())]
    NotCaptured(PaymentStatus),
    /// The amount is not a valid amount of the payment's currency.
    #[error("{0}")]
    InvalidAmount(crate::domain::money::AmountError),
    /// More than is left to refund.
    #[error("{0}")]
    ExceedsRefundable(String),
    /// The provider refused the refund.
    #[error("the provider refused the refund: {0}")]
    ProviderRefused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reserves a refund of a `CAPTURED` payment in `tx` (locked, so concurrent requests queue) and
/// asks the provider for it. The caller commits.
pub async fn request(
    tx: &mut dyn Tx,
    cmd: RefundRequest,
    provider: &dyn PaymentProvider,
) -> Result<(Payment, Refund), RefundError> {
    let payment = tx
        .payment_for_update(cmd.payment_id)
        .await?
        .ok_or(RefundError::NotFound(cmd.payment_id))?;
    if payment.status != PaymentStatus::Captured {
        return Err(RefundError::NotCaptured(payment.status));
    }
    let reserved = tx.requested_refunds_minor(payment.id).await?;
    let available = payment.refundable_minor() - reserved;
    let amount = match &cmd.amount {
        Some(raw) => payment
            .currency
            .parse_amount(raw, MAX_DONATION_MAJOR)
            .map_err(RefundError::InvalidAmount)?,
        None => available,
    };
    if available <= 0 || amount > available {
        let c = payment.currency;
        return Err(RefundError::ExceedsRefundable(format!(
            "refund of {} exceeds what is left: {} captured, {} refunded, {} awaiting the provider",
            c.format_minor(amount.max(0)),
            c.format_minor(payment.amount_minor),
            c.format_minor(payment.refunded_minor),
            c.format_minor(reserved)
        )));
    }
    let refund = Refund {
        refund_id: format!("re_{}", Uuid::new_v4().simple()),
        payment_id: payment.id,
        amount_minor: amount,
        status: "REQUESTED".into(),
        requested_at: crate::domain::now(),
        completed_at: None,
    };
    tx.insert_refund(&refund).await?;
    provider
        .refund(tx, &payment.payment_intent_id, &refund.refund_id, amount)
        .await
        .map_err(|e| match e {
            ProviderError::Refused(m) => RefundError::ProviderRefused(m),
            ProviderError::Store(e) => RefundError::Store(e),
        })?;
    Ok((payment, refund))
}
