//! The statements of [`crate::storage::notifications`], compiled once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use std::collections::HashMap;

use sqlx::{QueryBuilder, Row as _};
use uuid::Uuid;

use super::lists::{PER_STATEMENT, push_list};
use super::{BackendStore, BackendTx, Db, DbRow, SKIP_LOCKED, db_id, from_db_id};
use crate::storage::{Notification, NotificationStore, NotificationTx, SendOutcome, StoreResult};

/// Every column of `notifications` but the lease.
const COLUMNS: &str = "id, event_id, kind, donation_id, recipient, subject, body_text, \
                       body_html, status, attempts, last_error, next_attempt_at, created_at, \
                       sent_at, traceparent";
/// Leases the notifications due soonest; on PostgreSQL the inner `SELECT` skips rows another
/// sender is claiming at the same moment.
const CLAIM: &str = concatcp!(
    "UPDATE notifications SET claimed_until = $1, claimed_by = $4 \
     WHERE id IN (SELECT id FROM notifications \
     WHERE status = 'PENDING' AND next_attempt_at <= $2 \
     AND (claimed_until IS NULL OR claimed_until < $2) \
     ORDER BY next_attempt_at LIMIT $3",
    SKIP_LOCKED,
    ") RETURNING ",
    COLUMNS
);
/// Extends the leases a sender still holds: not those it recorded an attempt for (the lease is
/// cleared then), nor those another sender claimed after the lease ran out.
const RENEW: &str = "UPDATE notifications SET claimed_until = $1 \
                     WHERE claimed_by = $2 AND claimed_until IS NOT NULL AND status = 'PENDING'";
const SENT: &str = "UPDATE notifications SET status = 'SENT', attempts = attempts + 1, \
                    sent_at = $1, claimed_until = NULL, last_error = NULL WHERE id = $2";
const RETRY: &str = "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1, \
                     last_error = $2, claimed_until = NULL WHERE id = $3";
const DEAD: &str = "UPDATE notifications SET status = 'DEAD', attempts = attempts + 1, \
                    last_error = $1, claimed_until = NULL WHERE id = $2";
/// The head of an insert of new notifications (`attempts` starts at its default, 0).
const INSERT_INTO: &str = "INSERT INTO notifications (id, event_id, kind, donation_id, \
                           recipient, subject, body_text, body_html, status, next_attempt_at, \
                           created_at, traceparent) ";

fn notification_from_row(row: &DbRow) -> StoreResult<Notification> {
    Ok(Notification {
        id: from_db_id(row.try_get("id")?),
        event_id: from_db_id(row.try_get("event_id")?),
        kind: row.try_get("kind")?,
        donation_id: from_db_id(row.try_get("donation_id")?),
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body_text: row.try_get("body_text")?,
        body_html: row.try_get("body_html")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}

#[async_trait]
impl NotificationStore for BackendStore {
    async fn claim_notifications(
        &self,
        sender: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Notification>> {
        let claim = sqlx::query(CLAIM)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .bind(sender);
        let rows = super::write_rows(self, claim).await?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn renew_notification_claims(
        &self,
        sender: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let renew = sqlx::query(RENEW).bind(lease_until).bind(sender);
        super::write(self, renew).await
    }

    async fn notifications_attempted(
        &self,
        attempts: &[(Uuid, SendOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = super::begin(self).await?;
        for (id, outcome) in attempts {
            let query = match outcome {
                SendOutcome::Sent => sqlx::query(SENT).bind(at),
                SendOutcome::RetryAt(next, error) => {
                    sqlx::query(RETRY).bind(*next).bind(error.clone())
                }
                SendOutcome::Dead(error) => sqlx::query(DEAD).bind(error.clone()),
            };
            query.bind(db_id(*id)).execute(&mut *tx.tx).await?;
        }
        tx.tx.commit().await?;
        Ok(())
    }

    async fn notifications(
        &self,
        donation_id: Option<Uuid>,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Notification>> {
        let mut q = sqlx::QueryBuilder::<Db>::new("SELECT ");
        q.push(COLUMNS).push(" FROM notifications WHERE 1 = 1");
        if let Some(d) = donation_id {
            q.push(" AND donation_id = ").push_bind(db_id(d));
        }
        if let Some(st) = status {
            q.push(" AND status = ").push_bind(st.to_string());
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        q.build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(notification_from_row)
            .collect()
    }
}

#[async_trait]
impl NotificationTx for BackendTx {
    async fn notifications_to_since(
        &mut self,
        recipients: &[&str],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<String, i64>> {
        let mut counts = HashMap::with_capacity(recipients.len());
        for chunk in recipients.chunks(PER_STATEMENT) {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT recipient, COUNT(*) FROM notifications WHERE created_at >= ",
            );
            query.push_bind(since).push(" AND recipient IN ");
            push_list(&mut query, chunk.iter().copied());
            query.push(" GROUP BY recipient");
            let rows: Vec<(String, i64)> = query.build_query_as().fetch_all(&mut *self.tx).await?;
            counts.extend(rows);
        }
        Ok(counts)
    }

    async fn insert_notifications(&mut self, notifications: &[Notification]) -> StoreResult<u64> {
        let mut inserted = 0;
        for chunk in notifications.chunks(PER_STATEMENT) {
            let mut insert = QueryBuilder::<Db>::new(INSERT_INTO);
            insert.push_values(chunk, |mut row, n| {
                row.push_bind(db_id(n.id))
                    .push_bind(db_id(n.event_id))
                    .push_bind(&n.kind)
                    .push_bind(db_id(n.donation_id))
                    .push_bind(&n.recipient)
                    .push_bind(&n.subject)
                    .push_bind(&n.body_text)
                    .push_bind(&n.body_html)
                    .push_bind(&n.status)
                    .push_bind(n.next_attempt_at)
                    .push_bind(n.created_at)
                    .push_bind(&n.traceparent);
            });
            insert.push(" ON CONFLICT (event_id, kind) DO NOTHING");
            inserted += insert.build().execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(inserted)
    }
}
