//! The payment service: applying provider events to payments, and reconciling payments that
//! stopped moving. HTTP lives in [`crate::http::payments`]; this module knows nothing of it.
//!
//! # Layout
//! - [`signature`]: `CFA-Signature` signing and verification.
//! - [`provider`]: the [`provider::PaymentProvider`] trait and the built-in sandbox.

pub mod provider;
pub mod sandbox;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::domain::event::EventEnvelope;
use crate::domain::payment::{
    Decision, Payment, PaymentStatus, PaymentTransition, ProviderEvent, decide,
};
use crate::storage::{Refund, Store, StoreError, Tx};
use provider::PaymentProvider;

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

/// The outbox event announcing a payment's change.
pub fn payment_event(
    old: PaymentStatus,
    p: &Payment,
    refund: Option<(&str, i64)>,
) -> EventEnvelope {
    let event_type = if refund.is_some() {
        PaymentStatus::Refunded.event_type()
    } else {
        p.status.event_type()
    };
    EventEnvelope::new(
        event_type,
        "payment",
        p.id,
        p.version,
        p.updated_at,
        json!({
            "payment_id": p.id,
            "payment_intent_id": p.payment_intent_id,
            "donation_id": p.donation_id,
            "old_status": old.as_str(),
            "status": p.status.as_str(),
            "amount_minor": p.amount_minor,
            "refunded_minor": p.refunded_minor,
            "currency": p.currency.code(),
            "refund_id": refund.map(|r| r.0),
            "refund_amount_minor": refund.map(|r| r.1),
            "version": p.version,
        }),
    )
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
    tx.insert_outbox(&payment_event(
        old,
        &updated,
        refund.as_ref().map(|(id, amount)| (id.as_str(), *amount)),
    ))
    .await?;
    Ok(Applied::Processed {
        old,
        payment: updated,
    })
}

/// Counters of what reconciliation did since start.
#[derive(Debug, Default)]
pub struct ReconcileStats {
    /// Payments looked at.
    pub checked: AtomicU64,
    /// Transitions applied from the provider's record.
    pub repaired: AtomicU64,
    /// Payments the provider does not know.
    pub missing: AtomicU64,
    /// Provider or database failures.
    pub errors: AtomicU64,
}

/// One pass's result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Payments looked at.
    pub checked: u64,
    /// Transitions applied.
    pub repaired: u64,
    /// Payments the provider does not know.
    pub missing: u64,
    /// Failures.
    pub errors: u64,
}

/// Re-checks payments stuck in `INITIATED`/`AUTHORIZED` against the provider.
pub struct Reconciler {
    store: Arc<dyn Store>,
    provider: Arc<dyn PaymentProvider>,
    stats: Arc<ReconcileStats>,
    after: TimeDelta,
}

impl Reconciler {
    /// A reconciler for payments unchanged for `after`.
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn PaymentProvider>,
        stats: Arc<ReconcileStats>,
        after: Duration,
    ) -> Reconciler {
        Reconciler {
            store,
            provider,
            stats,
            after: TimeDelta::from_std(after).unwrap_or(TimeDelta::minutes(15)),
        }
    }

    /// One pass: for each stuck payment, asks the provider and applies the steps between our
    /// status and its status, as events named `reconcile:<intent>:<status>`.
    pub async fn run_once(&self) -> Result<ReconcileReport, StoreError> {
        let stuck = self
            .store
            .stuck_payments(crate::domain::now() - self.after, 100)
            .await?;
        let mut report = ReconcileReport::default();
        for payment in stuck {
            report.checked += 1;
            self.store
                .mark_reconciled(payment.id, crate::domain::now())
                .await?;
            let remote = match self.provider.fetch(&payment.payment_intent_id).await {
                Ok(Some(remote)) => remote,
                Ok(None) => {
                    report.missing += 1;
                    tracing::warn!(payment_id = %payment.id, intent = %payment.payment_intent_id, "reconciliation: the provider does not know this intent");
                    continue;
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(payment_id = %payment.id, error = %e, "reconciliation: provider look-up failed");
                    continue;
                }
            };
            let steps: &[PaymentStatus] = match (payment.status, remote.status) {
                (PaymentStatus::Initiated, PaymentStatus::Authorized) => {
                    &[PaymentStatus::Authorized]
                }
                (PaymentStatus::Initiated, PaymentStatus::Captured) => {
                    &[PaymentStatus::Authorized, PaymentStatus::Captured]
                }
                (PaymentStatus::Initiated, PaymentStatus::Refunded) => &[
                    PaymentStatus::Authorized,
                    PaymentStatus::Captured,
                    PaymentStatus::Refunded,
                ],
                (PaymentStatus::Authorized, PaymentStatus::Captured) => &[PaymentStatus::Captured],
                (PaymentStatus::Authorized, PaymentStatus::Refunded) => {
                    &[PaymentStatus::Captured, PaymentStatus::Refunded]
                }
                (_, PaymentStatus::Failed) => &[PaymentStatus::Failed],
                _ => &[],
            };
            if steps.is_empty() {
                continue;
            }
            let mut tx = self.store.begin().await?;
            let Some(mut current) = tx.payment_for_update(payment.id).await? else {
                continue;
            };
            let mut applied = 0;
            for status in steps {
                let event = ProviderEvent {
                    event_id: format!(
                        "reconcile:{}:{}",
                        current.payment_intent_id,
                        status.as_str()
                    ),
                    status: *status,
                    at: remote.status_at,
                    refund: None,
                };
                match apply_event(tx.as_mut(), current.clone(), &event).await? {
                    Applied::Processed { old, payment } => {
                        tracing::info!(payment_id = %payment.id, from = old.as_str(), to = payment.status.as_str(), "reconciliation applied the provider's status");
                        current = payment;
                        applied += 1;
                    }
                    _ => break,
                }
            }
            tx.commit().await?;
            report.repaired += applied;
        }
        self.stats
            .checked
            .fetch_add(report.checked, Ordering::Relaxed);
        self.stats
            .repaired
            .fetch_add(report.repaired, Ordering::Relaxed);
        self.stats
            .missing
            .fetch_add(report.missing, Ordering::Relaxed);
        self.stats
            .errors
            .fetch_add(report.errors, Ordering::Relaxed);
        if report.checked > 0 {
            tracing::info!(
                checked = report.checked,
                repaired = report.repaired,
                missing = report.missing,
                errors = report.errors,
                "reconciliation pass"
            );
        }
        Ok(report)
    }

    /// Runs a pass every `every` until cancelled; `wake` is notified after passes that changed
    /// something (so the relay publishes at once).
    pub async fn run(
        self,
        every: Duration,
        wake: Arc<tokio::sync::Notify>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.run_once().await {
                Ok(report) if report.repaired > 0 => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "reconciliation cannot reach the database");
                }
            }
        }
    }
}
