//! Reconciliation: payments stuck in `INITIATED` or `AUTHORIZED` past a deadline are re-checked
//! against the provider, and the steps between our status and the provider's are applied as
//! events of their own, so nothing stays pending forever silently. A webhook that arrives ahead
//! of its payment's state (a capture before its authorization) has its payment reconciled at
//! once ([`Reconciler::reconcile_soon`]), so a reordered capture completes in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::provider::PaymentProvider;
use super::{Applied, apply_event};
use crate::domain::payment::{Payment, PaymentStatus, ProviderEvent};
use crate::storage::{Refund, Store, StoreError};

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
    /// Refund reservations released because the provider never confirmed them.
    pub refunds_released: u64,
}

/// Re-checks payments stuck in `INITIATED`/`AUTHORIZED` against the provider.
pub struct Reconciler {
    store: Arc<dyn Store>,
    provider: Arc<dyn PaymentProvider>,
    stats: Arc<ReconcileStats>,
    after: TimeDelta,
    refund_expiry: TimeDelta,
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
            refund_expiry: TimeDelta::days(1),
        }
    }

    /// Releases refund reservations the provider has not confirmed after `expiry` (a day unless
    /// set).
    pub fn with_refund_expiry(self, expiry: Duration) -> Reconciler {
        Reconciler {
            refund_expiry: TimeDelta::from_std(expiry).unwrap_or(TimeDelta::days(1)),
            ..self
        }
    }

    /// One pass: for each stuck payment, asks the provider and applies the steps between our
    /// status and its status, as events named `reconcile:<intent>:<status>`; then releases the
    /// refund reservations the provider never confirmed.
    pub async fn run_once(&self) -> Result<ReconcileReport, StoreError> {
        let now = crate::domain::now();
        let stuck = self.store.stuck_payments(now - self.after, 100).await?;
        let mut report = ReconcileReport::default();
        let expired = self
            .store
            .expired_refunds(now - self.refund_expiry, 100)
            .await?;
        for refund in expired {
            self.settle_refund(&refund, &mut report).await?;
        }
        for payment in stuck {
            report.checked += 1;
            self.store
                .mark_reconciled(payment.id, crate::domain::now())
                .await?;
            self.reconcile(&payment, &mut report).await?;
        }
        self.count(&report);
        Ok(report)
    }

    /// Asks the provider about one payment and applies what it says, counting in `report`.
    async fn reconcile(
        &self,
        payment: &Payment,
        report: &mut ReconcileReport,
    ) -> Result<(), StoreError> {
        let remote = match self.provider.fetch(&payment.payment_intent_id).await {
            Ok(Some(remote)) => remote,
            Ok(None) => {
                report.missing += 1;
                tracing::warn!(payment_id = %payment.id, intent = %payment.payment_intent_id, "reconciliation: the provider does not know this intent");
                return Ok(());
            }
            Err(e) => {
                report.errors += 1;
                tracing::warn!(payment_id = %payment.id, error = %e, "reconciliation: provider look-up failed");
                return Ok(());
            }
        };
        let steps = steps(payment.status, remote.status);
        if steps.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let Some(mut current) = tx.payment_for_update(payment.id).await? else {
            return Ok(());
        };
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
                    report.repaired += 1;
                }
                _ => break,
            }
        }
        tx.commit().await
    }

    /// A refund the provider has not confirmed within the expiry: if the provider's record shows
    /// it refunded (its refunded total covers ours and this one), it is applied as the event
    /// `reconcile:refund:<id>`; otherwise it is released (`FAILED`), so its amount is no longer
    /// reserved. A confirmation that comes later is still applied.
    async fn settle_refund(
        &self,
        refund: &Refund,
        report: &mut ReconcileReport,
    ) -> Result<(), StoreError> {
        let Some(payment) = self.store.payment(refund.payment_id).await? else {
            return Ok(());
        };
        let remote = match self.provider.fetch(&payment.payment_intent_id).await {
            Ok(remote) => remote,
            Err(e) => {
                report.errors += 1;
                tracing::warn!(refund_id = %refund.refund_id, error = %e, "reconciliation: provider look-up failed; the refund stays reserved");
                return Ok(());
            }
        };
        let mut tx = self.store.begin().await?;
        let Some(payment) = tx.payment_for_update(payment.id).await? else {
            return Ok(());
        };
        match tx.refund_for_update(&refund.refund_id).await? {
            Some(current) if current.status == "REQUESTED" => {}
            _ => return Ok(()),
        }
        let done_there = remote
            .as_ref()
            .is_some_and(|r| r.refunded_minor >= payment.refunded_minor + refund.amount_minor);
        match remote.filter(|_| done_there) {
            Some(remote) => {
                let event = ProviderEvent {
                    event_id: format!("reconcile:refund:{}", refund.refund_id),
                    status: PaymentStatus::Refunded,
                    at: remote.status_at,
                    refund: Some((refund.refund_id.clone(), Some(refund.amount_minor))),
                };
                if let Applied::Processed { .. } = apply_event(tx.as_mut(), payment, &event).await?
                {
                    tracing::info!(refund_id = %refund.refund_id, "reconciliation applied a refund the provider made but never confirmed");
                    report.repaired += 1;
                }
            }
            None => {
                tracing::warn!(refund_id = %refund.refund_id, payment_id = %refund.payment_id, amount_minor = refund.amount_minor, requested_at = %refund.requested_at, "reconciliation released a refund the provider never made; a late confirmation is still applied");
                tx.complete_refund(&refund.refund_id, "FAILED", crate::domain::now())
                    .await?;
                report.refunds_released += 1;
            }
        }
        tx.commit().await
    }

    /// Reconciles one payment at once, in the background: a webhook arrived ahead of its state
    /// (a capture before its authorization), so the provider knows more than we do. The early
    /// event stays rejected; the steps up to the provider's status are applied as
    /// `reconcile:` events, and `wake` is notified when that changed the payment.
    pub fn reconcile_soon(self, payment_id: Uuid, wake: Arc<tokio::sync::Notify>) {
        tokio::spawn(async move {
            let mut report = ReconcileReport {
                checked: 1,
                ..ReconcileReport::default()
            };
            let done = match self.store.payment(payment_id).await {
                Ok(Some(payment)) => self.reconcile(&payment, &mut report).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                report.errors += 1;
                tracing::warn!(%payment_id, error = %e, "reconciling a payment a webhook overtook failed; the periodic pass will retry");
            }
            self.count(&report);
            if report.repaired > 0 {
                wake.notify_one();
            }
        });
    }

    fn count(&self, report: &ReconcileReport) {
        let stats = &self.stats;
        stats.checked.fetch_add(report.checked, Ordering::Relaxed);
        stats.repaired.fetch_add(report.repaired, Ordering::Relaxed);
        stats.missing.fetch_add(report.missing, Ordering::Relaxed);
        stats.errors.fetch_add(report.errors, Ordering::Relaxed);
        if report.checked > 0 || report.refunds_released > 0 {
            tracing::info!(
                checked = report.checked,
                repaired = report.repaired,
                missing = report.missing,
                errors = report.errors,
                refunds_released = report.refunds_released,
                "reconciliation pass"
            );
        }
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

/// The transitions that take a payment from our status to the provider's, in order.
pub(super) fn steps(ours: PaymentStatus, theirs: PaymentStatus) -> &'static [PaymentStatus] {
    use PaymentStatus::{Authorized, Captured, Failed, Initiated, Refunded};
    match (ours, theirs) {
        (Initiated, Authorized) => &[Authorized],
        (Initiated, Captured) => &[Authorized, Captured],
        (Initiated, Refunded) => &[Authorized, Captured, Refunded],
        (Authorized, Captured) => &[Captured],
        (Authorized, Refunded) => &[Captured, Refunded],
        (_, Failed) => &[Failed],
        _ => &[],
    }
}
