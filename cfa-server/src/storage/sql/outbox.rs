//! The statements of [`crate::storage::outbox`], compiled once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use sqlx::Row as _;
use sqlx::types::Json;

use super::lists::PER_STATEMENT;
use super::{BackendStore, BackendTx, Db, DbRow, SKIP_LOCKED, db_id, from_db_id};
use crate::domain::event::{EventEnvelope, TraceContext};
use crate::storage::{GivenBack, OutboxRow, OutboxStats, OutboxStore, OutboxTx, StoreResult};

/// The columns of `outbox` an [`OutboxRow`] holds.
const COLUMNS: &str = "id, event_id, event_type, aggregate_type, aggregate_id, version, \
                       occurred_at, traceparent, payload, attempts";
/// The head of an insert of the columns [`bind_event`] binds.
const INSERT_INTO: &str = "INSERT INTO outbox (event_id, event_type, aggregate_type, \
                           aggregate_id, version, occurred_at, traceparent, payload) ";
const INSERT: &str = concatcp!(INSERT_INTO, "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
/// Leases the oldest free undelivered rows; on PostgreSQL the inner `SELECT` skips rows another
/// relay is claiming at the same moment.
const CLAIM: &str = concatcp!(
    "UPDATE outbox SET claimed_by = $1, claimed_until = $2 \
     WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL \
     AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4",
    SKIP_LOCKED,
    ") RETURNING ",
    COLUMNS
);
/// Extends the leases a relay still holds (not those delivered, set aside, or claimed by another
/// relay after the lease ran out).
const RENEW: &str = "UPDATE outbox SET claimed_until = $1 \
                     WHERE claimed_by = $2 AND claimed_until IS NOT NULL \
                     AND sent_at IS NULL AND dead_at IS NULL";
const RELEASE: &str = "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, \
                       last_error = $1, dead_at = $2, attempts = attempts + $5 \
                       WHERE id = $3 AND claimed_by = $4 AND sent_at IS NULL";
const SELECT_DEAD: &str = concatcp!(
    "SELECT ",
    COLUMNS,
    ", last_error FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1"
);
const REVIVE: &str = "UPDATE outbox SET dead_at = NULL, attempts = 0, last_error = NULL, \
                      claimed_by = NULL, claimed_until = NULL \
                      WHERE id = $1 AND dead_at IS NOT NULL";
const PRUNE: &str = "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1";
const COUNT_PENDING: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL";
const COUNT_DEAD: &str = "SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL";
const OLDEST_PENDING: &str = "SELECT occurred_at FROM outbox \
                              WHERE sent_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 1";
const COUNT_SENT: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL";

/// `query` with `e`'s eight outbox columns bound next, in [`INSERT`]'s order.
pub(super) fn bind_event<'q>(
    query: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
    e: &'q EventEnvelope,
) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments> {
    query
        .bind(db_id(e.event_id))
        .bind(&e.event_type)
        .bind(&e.aggregate_type)
        .bind(&e.aggregate_id)
        .bind(e.version)
        .bind(e.occurred_at)
        .bind(&e.trace_context.traceparent)
        .bind(Json(&e.payload))
}

fn outbox_from_row(row: &DbRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        attempts: row.try_get("attempts")?,
        event: EventEnvelope {
            event_id: from_db_id(row.try_get("event_id")?),
            event_type: row.try_get("event_type")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            occurred_at: row.try_get("occurred_at")?,
            version: row.try_get("version")?,
            trace_context: TraceContext {
                traceparent: row.try_get("traceparent")?,
            },
            payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
        },
    })
}

#[async_trait]
impl OutboxStore for BackendStore {
    async fn claim_outbox(
        &self,
        relay: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let claim = sqlx::query(CLAIM)
            .bind(relay)
            .bind(lease_until)
            .bind(now)
            .bind(limit);
        let rows = super::write_rows(self, claim).await?;
        let mut claimed = rows
            .iter()
            .map(outbox_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    async fn renew_outbox_claims(
        &self,
        relay: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let renew = sqlx::query(RENEW).bind(lease_until).bind(relay);
        super::write(self, renew).await
    }

    async fn settle_outbox(
        &self,
        relay: &str,
        sent: &[i64],
        at: DateTime<Utc>,
        given_back: &[GivenBack],
    ) -> StoreResult<()> {
        let mut tx = super::begin(self).await?;
        if !sent.is_empty() {
            let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE outbox SET sent_at = ");
            q.push_bind(at)
                .push(", claimed_until = NULL, last_error = NULL WHERE claimed_by = ")
                .push_bind(relay.to_string())
                .push(" AND sent_at IS NULL AND id IN (");
            let mut list = q.separated(", ");
            for id in sent {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx.tx).await?;
        }
        for row in given_back {
            sqlx::query(RELEASE)
                .bind(&row.error)
                .bind(row.dead_at)
                .bind(row.id)
                .bind(relay)
                .bind(i32::from(row.attempted))
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.tx.commit().await?;
        Ok(())
    }

    async fn dead_outbox(&self, limit: i64) -> StoreResult<Vec<(OutboxRow, Option<String>)>> {
        let rows = sqlx::query(SELECT_DEAD)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((outbox_from_row(row)?, row.try_get("last_error")?)))
            .collect()
    }

    async fn revive_outbox(&self, id: i64) -> StoreResult<bool> {
        Ok(super::write(self, sqlx::query(REVIVE).bind(id)).await? == 1)
    }

    async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        super::write(self, sqlx::query(PRUNE).bind(before)).await
    }

    async fn oldest_pending_outbox(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(OLDEST_PENDING)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        let pending: i64 = sqlx::query_scalar(COUNT_PENDING)
            .fetch_one(&self.read)
            .await?;
        let dead: i64 = sqlx::query_scalar(COUNT_DEAD).fetch_one(&self.read).await?;
        let oldest_pending = self.oldest_pending_outbox().await?;
        let sent: i64 = sqlx::query_scalar(COUNT_SENT).fetch_one(&self.read).await?;
        Ok(OutboxStats {
            pending,
            oldest_pending,
            sent,
            dead,
        })
    }
}

#[async_trait]
impl OutboxTx for BackendTx {
    async fn insert_outbox(&mut self, e: &EventEnvelope) -> StoreResult<()> {
        bind_event(sqlx::query(INSERT), e)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_outbox_all(&mut self, events: &[EventEnvelope]) -> StoreResult<()> {
        for chunk in events.chunks(PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(INSERT_INTO);
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(db_id(e.event_id))
                    .push_bind(&e.event_type)
                    .push_bind(&e.aggregate_type)
                    .push_bind(&e.aggregate_id)
                    .push_bind(e.version)
                    .push_bind(e.occurred_at)
                    .push_bind(&e.trace_context.traceparent)
                    .push_bind(Json(&e.payload));
            });
            insert.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}
