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
    if let Some((refund_id, amount)) = &refund {
        match tx.refund_for_update(refund_id).await? {
            Some(existing) if existing.payment_id != payment.id => {
                return Ok(Applied::RefundMismatch {
                    reason: format!("refund {refund_id} belongs to another payment"),
                    payment,
                });
            }
            Some(existing) if existing.status == "SUCCEEDED" => {
                return Ok(Applied::RefundAlreadyApplied(payment));
            }
            Some(existing) if existing.amount_minor != *amount => {
                return Ok(Applied::RefundMismatch {
                    reason: format!(
                        "refund {refund_id} was requested for {} minor units, not {amount}",
                        existing.amount_minor
                    ),
                    payment,
                });
            }
            Some(_) => tx.complete_refund(refund_id, "SUCCEEDED", now).await?,
            None => {
                // A refund made at the provider directly: record it as it is applied.
                tx.insert_refund(&Refund {
                    refund_id: refund_id.clone(),
                    payment_id: payment.id,
                    amount_minor: *amount,
                    status: "SUCCEEDED".into(),
                    requested_at: now,
                    completed_at: Some(now),
                })
                .await?;
            }
        }
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
