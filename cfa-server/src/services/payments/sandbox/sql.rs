//! The statements of the sandbox's tables ([`crate::services::payments::sandbox::store`]),
//! written once for both backends.
//!
//! This file is not a module of the sandbox: each storage backend declares it as a child module
//! of its own (`#[path = "../services/payments/sandbox/sql.rs"] mod sandbox;` in
//! `storage/sqlite.rs` and `storage/postgres.rs`), so `super` here is that backend, which
//! provides the transaction and store types, the row type and the locking fragment.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use sqlx::Row as _;

use super::{BackendStore, BackendTx, DbRow, FOR_UPDATE};
use crate::services::payments::sandbox::store::{
    DeliveryOutcome, SandboxDelivery, SandboxIntent, SandboxStore, SandboxTx,
};
use crate::storage::StoreResult;

/// The columns of `sandbox_intents`, in the order [`INSERT_INTENT`] binds them.
const INTENT_COLUMNS: &str = "payment_intent_id, amount_minor, currency, status, refunded_minor, \
                              status_at, created_at, confirmed_outcome, confirmed_at";
const SELECT_INTENT: &str = concatcp!(
    "SELECT ",
    INTENT_COLUMNS,
    " FROM sandbox_intents WHERE payment_intent_id = $1"
);
const SELECT_INTENT_FOR_UPDATE: &str = concatcp!(SELECT_INTENT, FOR_UPDATE);
const INSERT_INTENT: &str = concatcp!(
    "INSERT INTO sandbox_intents (",
    INTENT_COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
const UPDATE_INTENT: &str = "UPDATE sandbox_intents \
                             SET status = $1, refunded_minor = $2, status_at = $3, \
                             confirmed_outcome = $4, confirmed_at = $5 \
                             WHERE payment_intent_id = $6";

/// Queues a webhook held by the intent's latest undecided one, if any, so it goes out after it.
const ENQUEUE: &str = "INSERT INTO sandbox_deliveries \
                       (payment_intent_id, body, next_attempt_at, traceparent, held_by) \
                       VALUES ($1, $2, $3, $4, (SELECT MAX(id) FROM sandbox_deliveries \
                       WHERE payment_intent_id = $1 \
                       AND delivered_at IS NULL AND given_up_at IS NULL))";
/// Due webhooks not held back by an earlier one. A hold by a delivery that is finished
/// (delivered or given up) or gone does not count: releasing the hold commits with the finished
/// attempt, but rows left by an older build that crashed between the two must not wait forever.
/// The holder is looked up by its primary key, and only for held rows (no anti-join over the
/// intent's deliveries: see migration 0009).
const SELECT_DUE: &str = "SELECT id, payment_intent_id, body, attempts, traceparent \
                          FROM sandbox_deliveries d \
                          WHERE delivered_at IS NULL AND given_up_at IS NULL \
                          AND next_attempt_at <= $1 \
                          AND (held_by IS NULL OR NOT EXISTS (SELECT 1 FROM sandbox_deliveries h \
                          WHERE h.id = d.held_by \
                          AND h.delivered_at IS NULL AND h.given_up_at IS NULL)) \
                          ORDER BY next_attempt_at, id LIMIT $2";
const DELIVERED: &str = "UPDATE sandbox_deliveries \
                         SET attempts = attempts + 1, last_status = $1, delivered_at = $2 \
                         WHERE id = $3";
const RETRY: &str = "UPDATE sandbox_deliveries \
                     SET attempts = attempts + 1, last_status = $1, next_attempt_at = $2 \
                     WHERE id = $3";
const GIVE_UP: &str = "UPDATE sandbox_deliveries \
                       SET attempts = attempts + 1, last_status = $1, given_up_at = $2 \
                       WHERE id = $3";
const RELEASE_HELD: &str = "UPDATE sandbox_deliveries SET held_by = NULL WHERE held_by = $1";

fn intent_from_row(row: &DbRow) -> StoreResult<SandboxIntent> {
    Ok(SandboxIntent {
        payment_intent_id: row.try_get("payment_intent_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        refunded_minor: row.try_get("refunded_minor")?,
        status_at: row.try_get("status_at")?,
        created_at: row.try_get("created_at")?,
        confirmed_outcome: row.try_get("confirmed_outcome")?,
        confirmed_at: row.try_get("confirmed_at")?,
    })
}

fn delivery_from_row(row: &DbRow) -> StoreResult<SandboxDelivery> {
    Ok(SandboxDelivery {
        id: row.try_get("id")?,
        payment_intent_id: row.try_get("payment_intent_id")?,
        body: row.try_get("body")?,
        attempts: row.try_get("attempts")?,
        traceparent: row.try_get("traceparent")?,
    })
}

#[async_trait]
impl SandboxStore for BackendStore {
    async fn sandbox_intent(&self, intent: &str) -> StoreResult<Option<SandboxIntent>> {
        sqlx::query(SELECT_INTENT)
            .bind(intent)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(intent_from_row)
            .transpose()
    }

    async fn sandbox_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SandboxDelivery>> {
        sqlx::query(SELECT_DUE)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    async fn sandbox_delivery_attempted(
        &self,
        id: i64,
        status: Option<u16>,
        outcome: DeliveryOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let status = status.map(i32::from);
        // Once the platform has decided on this one (a 2xx or a 4xx other than 429), or
        // the sandbox gave it up, the next one for the intent may go.
        let decided = matches!(
            outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::GiveUp
        ) || status.is_some_and(|s| (400..500).contains(&s) && s != 429);
        let query = match outcome {
            DeliveryOutcome::Delivered => sqlx::query(DELIVERED).bind(status).bind(at),
            DeliveryOutcome::RetryAt(next) => sqlx::query(RETRY).bind(status).bind(next),
            DeliveryOutcome::GiveUp => sqlx::query(GIVE_UP).bind(status).bind(at),
        };
        // One transaction: a crash between recording this attempt and releasing the next
        // delivery would leave the intent's CAPTURED unsent, and the payment AUTHORIZED until
        // reconciliation.
        let mut tx = super::begin(self).await?;
        query.bind(id).execute(&mut *tx.tx).await?;
        if decided {
            sqlx::query(RELEASE_HELD)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl SandboxTx for BackendTx {
    async fn sandbox_insert_intent(&mut self, i: &SandboxIntent) -> StoreResult<()> {
        sqlx::query(INSERT_INTENT)
            .bind(&i.payment_intent_id)
            .bind(i.amount_minor)
            .bind(&i.currency)
            .bind(&i.status)
            .bind(i.refunded_minor)
            .bind(i.status_at)
            .bind(i.created_at)
            .bind(&i.confirmed_outcome)
            .bind(i.confirmed_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn sandbox_intent_for_update(
        &mut self,
        intent: &str,
    ) -> StoreResult<Option<SandboxIntent>> {
        sqlx::query(SELECT_INTENT_FOR_UPDATE)
            .bind(intent)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(intent_from_row)
            .transpose()
    }

    async fn sandbox_update_intent(&mut self, i: &SandboxIntent) -> StoreResult<()> {
        sqlx::query(UPDATE_INTENT)
            .bind(&i.status)
            .bind(i.refunded_minor)
            .bind(i.status_at)
            .bind(&i.confirmed_outcome)
            .bind(i.confirmed_at)
            .bind(&i.payment_intent_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn sandbox_enqueue(
        &mut self,
        intent: &str,
        body: &str,
        at: DateTime<Utc>,
        traceparent: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(ENQUEUE)
            .bind(intent)
            .bind(body)
            .bind(at)
            .bind(traceparent)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
