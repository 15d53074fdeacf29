//! The payment service: intents, provider webhooks, refunds, and reconciling payments that
//! stopped moving. Every way a provider event reaches a payment (a webhook, an operator's
//! replay, reconciliation) goes through [`apply_event`].
//!
//! # Layout
//! - [`intents`]: creating a payment intent for a pending donation.
//! - [`webhooks`]: the intake of provider webhooks.
//! - [`refunds`]: refunds an operator asks for.
//! - [`reconciliation`]: re-checking stuck payments against the provider.
//! - [`provider`]: the [`provider::PaymentProvider`] trait.
//! - [`sandbox`]: the built-in sandbox provider.
//! - [`signature`]: `CFA-Signature` signing and verification.

pub mod intents;
pub mod provider;
pub mod reconciliation;
pub mod refunds;
pub mod sandbox;
pub mod signature;
pub mod webhooks;

pub use reconciliation::{ReconcileReport, ReconcileStats, Reconciler};

use uuid::Uuid;

use crate::domain::event::{DomainEvent, PaymentEvent};
use crate::domain::payment::{
    Decision, Payment, PaymentStatus, PaymentTransition, ProviderEvent, decide,
};
use crate::services::outbox_event;
use crate::storage::{Refund, StoreError, Tx};

/// What applying one provider event did.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The payment moved.
    Processed {
        /// Status before.
        old: PaymentStatus,
        /// The payment after.
        payment: Payment,
    },
    /// Older than the last applied event: nothing changed.
    OutOfOrder(Payment),
    /// This refund was applied before (same `refund_id`): nothing changed.
    RefundAlreadyApplied(Payment),
    /// The refund id belongs to another payment, or its amount differs from the one requested.
    RefundMismatch {
        /// Why.
        reason: String,
        /// The payment as it is.
        payment: Payment,
    },
    /// Not allowed: nothing changed.
    Invalid {
        /// Why.
        reason: String,
        /// The payment as it is.
        payment: Payment,
    },
}

/// After a refund made at the provider directly, releases (marks `FAILED`) the newest refunds
/// still waiting for the provider until what they reserve fits in the `left` refundable: the
/// provider has already returned that money, so those requests can no longer all succeed, and
/// a reservation that cannot succeed must not block an operator's next refund. A confirmation
/// of a released refund that still fits is applied all the same.
async fn release_overbooked(
    tx: &mut dyn Tx,
    payment_id: Uuid,
    left: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let open = tx.open_refunds_for_update(payment_id).await?;
    let mut reserved: i64 = open.iter().map(|r| r.amount_minor).sum();
    for refund in open {
        if reserved <= left {
            break;
        }
        tracing::warn!(refund_id = %refund.refund_id, %payment_id, amount_minor = refund.amount_minor, left, "a refund made at the provider leaves too little for this requested refund; released");
        tx.complete_refund(&refund.refund_id, "FAILED", now).await?;
        reserved -= refund.amount_minor;
    }
    Ok(())
}

/// Why the refund a `REFUNDED` event names cannot be applied.
enum RefundRefused {
    /// It was applied before (same `refund_id`).
    AlreadyApplied,
    /// It belongs to another payment, or was requested for another amount.
    Mismatch(String),
}

impl RefundRefused {
    fn answer(self, payment: Payment) -> Applied {
        match self {
            RefundRefused::AlreadyApplied => Applied::RefundAlreadyApplied(payment),
            RefundRefused::Mismatch(reason) => Applied::RefundMismatch { reason, payment },
        }
    }
}

/// Records the refund a `REFUNDED` event names: completes the requested one, or records one made
/// at the provider directly (releasing requests that no longer fit beside it).
async fn record_refund(
    tx: &mut dyn Tx,
    payment: &Payment,
    refund_id: &str,
    amount: i64,
    refunded_minor: i64,
) -> Result<Option<RefundRefused>, StoreError> {
    let now = crate::domain::now();
    match tx.refund_for_update(refund_id).await? {
        Some(existing) if existing.payment_id != payment.id => Ok(Some(RefundRefused::Mismatch(
            format!("refund {refund_id} belongs to another payment"),
        ))),
        Some(existing) if existing.status == "SUCCEEDED" => Ok(Some(RefundRefused::AlreadyApplied)),
        Some(existing) if existing.amount_minor != amount => {
            Ok(Some(RefundRefused::Mismatch(format!(
                "refund {refund_id} was requested for {} minor units, not {amount}",
                existing.amount_minor
            ))))
        }
        Some(_) => {
            tx.complete_refund(refund_id, "SUCCEEDED", now).await?;
            Ok(None)
        }
        None => {
            // A refund made at the provider directly: record it as it is applied.
            tx.insert_refund(&Refund {
                refund_id: refund_id.to_string(),
                payment_id: payment.id,
                amount_minor: amount,
                status: "SUCCEEDED".into(),
                requested_at: now,
                completed_at: Some(now),
            })
            .await?;
            let left = payment.amount_minor - refunded_minor;
            release_overbooked(tx, payment.id, left, now).await?;
            Ok(None)
        }
    }
}

/// Applies one provider event to a payment locked in `tx`: decides, then writes the payment,
/// its history row, the refund and the outbox event. The caller commits.
pub async fn apply_event(
    tx: &mut dyn Tx,
    payment: Payment,
    event: &ProviderEvent,
) -> Result<Applied, StoreError> {
    let (next, refunded_minor, refund) = match decide(&payment, event) {
        Decision::OutOfOrder => return Ok(Applied::OutOfOrder(payment)),
        Decision::Invalid(reason) => return Ok(Applied::Invalid { reason, payment }),
        Decision::Apply {
            next,
            refunded_minor,
            refund,
        } => (next, refunded_minor, refund),
    };
    let now = crate::domain::now();
    if let Some((refund_id, amount)) = &refund
        && let Some(refused) =
            record_refund(tx, &payment, refund_id, *amount, refunded_minor).await?
    {
        return Ok(refused.answer(payment));
    }
    let old = payment.status;
    let updated = Payment {
        status: next,
        version: payment.version + 1,
        refunded_minor,
        last_event_at: Some(
            payment
                .last_event_at
                .map_or(event.at, |last| last.max(event.at)),
        ),
        updated_at: now,
        ..payment
    };
    tx.update_payment(&updated).await?;
    tx.insert_payment_transition(&PaymentTransition {
        payment_id: updated.id,
        from: old,
        to: next,
        version: updated.version,
        event_id: event.event_id.clone(),
        event_at: event.at,
        refund_id: refund.as_ref().map(|r| r.0.clone()),
        amount_minor: refund.as_ref().map(|r| r.1),
        recorded_at: now,
    })
    .await?;
    let refund = refund.as_ref().map(|(id, amount)| (id.as_str(), *amount));
    let event = PaymentEvent::moved(old, &updated, refund);
    tx.insert_outbox(&outbox_event(DomainEvent::Payment(event), now))
        .await?;
    Ok(Applied::Processed {
        old,
        payment: updated,
    })
}
