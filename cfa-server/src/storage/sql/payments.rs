//! The statements of [`crate::storage::payments`], compiled once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use sqlx::Row as _;
use uuid::Uuid;

use super::{BackendStore, BackendTx, DbRow, FOR_UPDATE, db_id, from_db_id};
use crate::domain::money::Currency;
use crate::domain::payment::{Payment, PaymentStatus, PaymentTransition};
use crate::storage::{PaymentStore, PaymentTx, Refund, StoreError, StoreResult, WebhookRecord};

/// The columns of `payments` a [`Payment`] holds, in the order [`INSERT`] binds them.
const COLUMNS: &str = "id, payment_intent_id, donation_id, amount_minor, currency, status, \
                       gateway, client_secret, version, refunded_minor, last_event_at, \
                       created_at, updated_at";
const SELECT: &str = concatcp!("SELECT ", COLUMNS, " FROM payments");
const SELECT_BY_ID: &str = concatcp!(SELECT, " WHERE id = $1");
const SELECT_BY_INTENT: &str = concatcp!(SELECT, " WHERE payment_intent_id = $1");
const SELECT_FOR_UPDATE: &str = concatcp!(SELECT_BY_ID, FOR_UPDATE);
const SELECT_FOR_UPDATE_BY_INTENT: &str = concatcp!(SELECT_BY_INTENT, FOR_UPDATE);
const SELECT_LIVE_FOR_DONATION: &str = concatcp!(
    SELECT,
    " WHERE donation_id = $1 AND status <> 'FAILED' ORDER BY created_at LIMIT 1"
);
const SELECT_STUCK: &str = concatcp!(
    SELECT,
    " WHERE status IN ('INITIATED', 'AUTHORIZED') AND updated_at < $1",
    " AND (reconciled_at IS NULL OR reconciled_at < $2)",
    " ORDER BY COALESCE(reconciled_at, updated_at) LIMIT $3"
);
const INSERT: &str = concatcp!(
    "INSERT INTO payments (",
    COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
const UPDATE: &str = "UPDATE payments SET status = $1, version = $2, refunded_minor = $3, \
                      last_event_at = $4, updated_at = $5 WHERE id = $6";
const MARK_RECONCILED: &str = "UPDATE payments SET reconciled_at = $1 WHERE id = $2";

/// The columns of `payment_state_history` but its sequence number, in [`INSERT_TRANSITION`]'s
/// order.
const TRANSITION_COLUMNS: &str = "payment_id, from_status, to_status, version, event_id, \
                                  event_at, refund_id, amount_minor, recorded_at";
const SELECT_TRANSITIONS: &str = concatcp!(
    "SELECT ",
    TRANSITION_COLUMNS,
    " FROM payment_state_history WHERE payment_id = $1 ORDER BY id"
);
const INSERT_TRANSITION: &str = concatcp!(
    "INSERT INTO payment_state_history (",
    TRANSITION_COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

/// The columns of `refunds`, in the order [`INSERT_REFUND`] binds them.
const REFUND_COLUMNS: &str =
    "refund_id, payment_id, amount_minor, status, requested_at, completed_at";
const SELECT_REFUND_FOR_UPDATE: &str = concatcp!(
    "SELECT ",
    REFUND_COLUMNS,
    " FROM refunds WHERE refund_id = $1",
    FOR_UPDATE
);
const SELECT_REFUNDS: &str = concatcp!(
    "SELECT ",
    REFUND_COLUMNS,
    " FROM refunds WHERE payment_id = $1 ORDER BY requested_at, refund_id"
);
const INSERT_REFUND: &str = concatcp!(
    "INSERT INTO refunds (",
    REFUND_COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (refund_id) DO NOTHING"
);
const COMPLETE_REFUND: &str =
    "UPDATE refunds SET status = $1, completed_at = $2 WHERE refund_id = $3";
const SELECT_OPEN_REFUNDS: &str = concatcp!(
    "SELECT ",
    REFUND_COLUMNS,
    " FROM refunds WHERE payment_id = $1 AND status = 'REQUESTED' \
     ORDER BY requested_at DESC, refund_id DESC",
    FOR_UPDATE
);
const SELECT_EXPIRED_REFUNDS: &str = concatcp!(
    "SELECT ",
    REFUND_COLUMNS,
    " FROM refunds WHERE status = 'REQUESTED' AND requested_at < $1 \
     ORDER BY requested_at, refund_id LIMIT $2"
);
const SUM_REQUESTED_REFUNDS: &str = "SELECT CAST(SUM(amount_minor) AS BIGINT) FROM refunds \
                                     WHERE payment_id = $1 AND status = 'REQUESTED'";

/// The columns of `webhook_events` a [`WebhookRecord`] holds.
const WEBHOOK_COLUMNS: &str = "dedup_key, payment_intent_id, event_id, outcome, status_code, \
                               body, received_at, request, replay_of";
const SELECT_WEBHOOK: &str = concatcp!(
    "SELECT ",
    WEBHOOK_COLUMNS,
    " FROM webhook_events WHERE dedup_key = $1"
);
const SELECT_RECENT_WEBHOOKS: &str = concatcp!(
    "SELECT ",
    WEBHOOK_COLUMNS,
    " FROM webhook_events WHERE outcome <> 'in_progress'",
    " ORDER BY received_at DESC, dedup_key LIMIT $1 OFFSET $2"
);
const CLAIM_WEBHOOK: &str = "INSERT INTO webhook_events \
                             (dedup_key, outcome, status_code, body, received_at) \
                             VALUES ($1, 'in_progress', 0, $2, $3) \
                             ON CONFLICT (dedup_key) DO NOTHING";
const COMPLETE_WEBHOOK: &str = "UPDATE webhook_events SET payment_intent_id = $1, \
                                event_id = $2, outcome = $3, status_code = $4, body = $5, \
                                request = $6, replay_of = $7 WHERE dedup_key = $8";

fn payment_from_row(row: &DbRow) -> StoreResult<Payment> {
    Ok(Payment {
        id: from_db_id(row.try_get("id")?),
        payment_intent_id: row.try_get("payment_intent_id")?,
        donation_id: from_db_id(row.try_get("donation_id")?),
        amount_minor: row.try_get("amount_minor")?,
        currency: Currency::parse(row.try_get::<&str, _>("currency")?)
            .map_err(StoreError::Other)?,
        status: PaymentStatus::parse(row.try_get::<&str, _>("status")?)
            .map_err(StoreError::Other)?,
        gateway: row.try_get("gateway")?,
        client_secret: row.try_get("client_secret")?,
        version: row.try_get("version")?,
        refunded_minor: row.try_get("refunded_minor")?,
        last_event_at: row.try_get("last_event_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn transition_from_row(row: &DbRow) -> StoreResult<PaymentTransition> {
    Ok(PaymentTransition {
        payment_id: from_db_id(row.try_get("payment_id")?),
        from: PaymentStatus::parse(row.try_get::<&str, _>("from_status")?)
            .map_err(StoreError::Other)?,
        to: PaymentStatus::parse(row.try_get::<&str, _>("to_status")?)
            .map_err(StoreError::Other)?,
        version: row.try_get("version")?,
        event_id: row.try_get("event_id")?,
        event_at: row.try_get("event_at")?,
        refund_id: row.try_get("refund_id")?,
        amount_minor: row.try_get("amount_minor")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

fn refund_from_row(row: &DbRow) -> StoreResult<Refund> {
    Ok(Refund {
        refund_id: row.try_get("refund_id")?,
        payment_id: from_db_id(row.try_get("payment_id")?),
        amount_minor: row.try_get("amount_minor")?,
        status: row.try_get("status")?,
        requested_at: row.try_get("requested_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn webhook_from_row(row: &DbRow) -> StoreResult<WebhookRecord> {
    let status: i32 = row.try_get("status_code")?;
    Ok(WebhookRecord {
        dedup_key: row.try_get("dedup_key")?,
        payment_intent_id: row.try_get("payment_intent_id")?,
        event_id: row.try_get("event_id")?,
        outcome: row.try_get("outcome")?,
        status_code: u16::try_from(status)
            .map_err(|_| StoreError::Other(format!("bad stored status {status}")))?,
        body: row.try_get("body")?,
        received_at: row.try_get("received_at")?,
        request: row
            .try_get::<Option<Vec<u8>>, _>("request")?
            .unwrap_or_default(),
        replay_of: row.try_get("replay_of")?,
    })
}

#[async_trait]
impl PaymentStore for BackendStore {
    async fn payment(&self, id: Uuid) -> StoreResult<Option<Payment>> {
        sqlx::query(SELECT_BY_ID)
            .bind(db_id(id))
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn payment_by_intent(&self, intent: &str) -> StoreResult<Option<Payment>> {
        sqlx::query(SELECT_BY_INTENT)
            .bind(intent)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn payment_history(&self, payment_id: Uuid) -> StoreResult<Vec<PaymentTransition>> {
        sqlx::query(SELECT_TRANSITIONS)
            .bind(db_id(payment_id))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(transition_from_row)
            .collect()
    }

    async fn refunds(&self, payment_id: Uuid) -> StoreResult<Vec<Refund>> {
        sqlx::query(SELECT_REFUNDS)
            .bind(db_id(payment_id))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(refund_from_row)
            .collect()
    }

    async fn expired_refunds(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Refund>> {
        sqlx::query(SELECT_EXPIRED_REFUNDS)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(refund_from_row)
            .collect()
    }

    async fn stuck_payments(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Payment>> {
        sqlx::query(SELECT_STUCK)
            .bind(before)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(payment_from_row)
            .collect()
    }

    async fn mark_reconciled(&self, payment_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let mark = sqlx::query(MARK_RECONCILED)
            .bind(at)
            .bind(db_id(payment_id));
        super::write(self, mark).await?;
        Ok(())
    }

    async fn webhook_record(&self, dedup_key: &str) -> StoreResult<Option<WebhookRecord>> {
        sqlx::query(SELECT_WEBHOOK)
            .bind(dedup_key)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(webhook_from_row)
            .transpose()
    }

    async fn recent_webhooks(&self, limit: i64, offset: i64) -> StoreResult<Vec<WebhookRecord>> {
        sqlx::query(SELECT_RECENT_WEBHOOKS)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(webhook_from_row)
            .collect()
    }
}

#[async_trait]
impl PaymentTx for BackendTx {
    async fn insert_payment(&mut self, p: &Payment) -> StoreResult<()> {
        sqlx::query(INSERT)
            .bind(db_id(p.id))
            .bind(&p.payment_intent_id)
            .bind(db_id(p.donation_id))
            .bind(p.amount_minor)
            .bind(p.currency.code())
            .bind(p.status.as_str())
            .bind(&p.gateway)
            .bind(&p.client_secret)
            .bind(p.version)
            .bind(p.refunded_minor)
            .bind(p.last_event_at)
            .bind(p.created_at)
            .bind(p.updated_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn payment_for_update(&mut self, id: Uuid) -> StoreResult<Option<Payment>> {
        sqlx::query(SELECT_FOR_UPDATE)
            .bind(db_id(id))
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn payment_for_update_by_intent(&mut self, intent: &str) -> StoreResult<Option<Payment>> {
        sqlx::query(SELECT_FOR_UPDATE_BY_INTENT)
            .bind(intent)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn live_payment_for_donation(
        &mut self,
        donation_id: Uuid,
    ) -> StoreResult<Option<Payment>> {
        sqlx::query(SELECT_LIVE_FOR_DONATION)
            .bind(db_id(donation_id))
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(payment_from_row)
            .transpose()
    }

    async fn update_payment(&mut self, p: &Payment) -> StoreResult<()> {
        sqlx::query(UPDATE)
            .bind(p.status.as_str())
            .bind(p.version)
            .bind(p.refunded_minor)
            .bind(p.last_event_at)
            .bind(p.updated_at)
            .bind(db_id(p.id))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_payment_transition(&mut self, t: &PaymentTransition) -> StoreResult<()> {
        sqlx::query(INSERT_TRANSITION)
            .bind(db_id(t.payment_id))
            .bind(t.from.as_str())
            .bind(t.to.as_str())
            .bind(t.version)
            .bind(&t.event_id)
            .bind(t.event_at)
            .bind(&t.refund_id)
            .bind(t.amount_minor)
            .bind(t.recorded_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn claim_webhook(&mut self, dedup_key: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(CLAIM_WEBHOOK)
            .bind(dedup_key)
            .bind(Vec::<u8>::new())
            .bind(at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_webhook(&mut self, r: &WebhookRecord) -> StoreResult<()> {
        sqlx::query(COMPLETE_WEBHOOK)
            .bind(&r.payment_intent_id)
            .bind(&r.event_id)
            .bind(&r.outcome)
            .bind(i32::from(r.status_code))
            .bind(&r.body)
            .bind(&r.request)
            .bind(&r.replay_of)
            .bind(&r.dedup_key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_refund(&mut self, r: &Refund) -> StoreResult<bool> {
        let done = sqlx::query(INSERT_REFUND)
            .bind(&r.refund_id)
            .bind(db_id(r.payment_id))
            .bind(r.amount_minor)
            .bind(&r.status)
            .bind(r.requested_at)
            .bind(r.completed_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn refund_for_update(&mut self, refund_id: &str) -> StoreResult<Option<Refund>> {
        sqlx::query(SELECT_REFUND_FOR_UPDATE)
            .bind(refund_id)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(refund_from_row)
            .transpose()
    }

    async fn complete_refund(
        &mut self,
        refund_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(COMPLETE_REFUND)
            .bind(status)
            .bind(at)
            .bind(refund_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn open_refunds_for_update(&mut self, payment_id: Uuid) -> StoreResult<Vec<Refund>> {
        sqlx::query(SELECT_OPEN_REFUNDS)
            .bind(db_id(payment_id))
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(refund_from_row)
            .collect()
    }

    async fn requested_refunds_minor(&mut self, payment_id: Uuid) -> StoreResult<i64> {
        let sum: Option<i64> = sqlx::query_scalar(SUM_REQUESTED_REFUNDS)
            .bind(db_id(payment_id))
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(sum.unwrap_or(0))
    }
}
