//! The SQL both backends share.
//!
//! SQLite and PostgreSQL agree on almost every statement the platform needs (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`); they differ in column types, which sqlx maps, and in locking,
//! which each backend passes in as SQL fragments. So the statements are written once, in
//! [`sql_store!`], and expanded once per backend into that backend's own [`Store`] and [`Tx`]
//! implementations, with concrete types, so the compiler checks each.
//!
//! The invoking module provides `Db` (the sqlx database), `DbId` with `db_id`/`from_db_id` (how a
//! UUID is stored), the `lock_key` function, and a store struct with `read` and `write` pools.
//!
//! [`Store`]: super::Store
//! [`Tx`]: super::Tx

/// Expands to `impl Store for $store`, the transaction type `$tx` and `impl Tx for $tx`.
///
/// `for_update` is appended to a `SELECT` that locks a row for change; `skip_locked` to the
/// outbox claim's inner `SELECT`.
macro_rules! sql_store {
    ($store:ident, $tx:ident, for_update = $for_update:literal, skip_locked = $skip_locked:literal) => {
        use $crate::domain::campaign::{Campaign, CampaignStatus};
        use $crate::domain::donation::{Donation, DonationStatus};
        use $crate::domain::email::DonorEmail;
        use $crate::domain::event::{EventEnvelope, TraceContext};
        use $crate::domain::money::Currency;
        use $crate::storage::{
            HistoryFilter, IdempotencyRecord, OutboxRow, OutboxStats, StatusAudit, Store,
            StoreError, StoreResult, Tx,
        };
        use chrono::{DateTime, Utc};
        use sqlx::Row as _;
        use sqlx::types::Json;
        use uuid::Uuid;

        type DbRow = <Db as sqlx::Database>::Row;

        const CAMPAIGN_COLUMNS: &str = "id, title, goal_minor, currency, status, version, created_at, updated_at";

        fn campaign_from_row(row: &DbRow) -> StoreResult<Campaign> {
            Ok(Campaign {
                id: from_db_id(row.try_get("id")?),
                title: row.try_get("title")?,
                goal_minor: row.try_get("goal_minor")?,
                currency: Currency::parse(row.try_get::<&str, _>("currency")?)
                    .map_err(StoreError::Other)?,
                status: CampaignStatus::parse(row.try_get::<&str, _>("status")?)
                    .map_err(StoreError::Other)?,
                version: row.try_get("version")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn donation_from_row(row: &DbRow) -> StoreResult<Donation> {
            Ok(Donation {
                id: from_db_id(row.try_get("id")?),
                campaign_id: from_db_id(row.try_get("campaign_id")?),
                donor_email: DonorEmail::from_trusted(row.try_get("donor_email")?),
                donor_name: row.try_get("donor_name")?,
                amount_minor: row.try_get("amount_minor")?,
                currency: Currency::parse(row.try_get::<&str, _>("currency")?)
                    .map_err(StoreError::Other)?,
                status: DonationStatus::parse(row.try_get::<&str, _>("status")?)
                    .map_err(StoreError::Other)?,
                payment_intent_id: row.try_get("payment_intent_id")?,
                version: row.try_get("version")?,
                metadata: row.try_get::<Json<serde_json::Value>, _>("metadata")?.0,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn idempotency_from_row(row: &DbRow) -> StoreResult<IdempotencyRecord> {
            let status: i32 = row.try_get("status_code")?;
            Ok(IdempotencyRecord {
                scope: row.try_get("scope")?,
                key: row.try_get("key")?,
                fingerprint: row.try_get("fingerprint")?,
                status_code: u16::try_from(status)
                    .map_err(|_| StoreError::Other(format!("bad stored status {status}")))?,
                body: row.try_get("body")?,
                created_at: row.try_get("created_at")?,
            })
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

        fn audit_from_row(row: &DbRow) -> StoreResult<StatusAudit> {
            Ok(StatusAudit {
                donation_id: from_db_id(row.try_get("donation_id")?),
                from: DonationStatus::parse(row.try_get::<&str, _>("from_status")?)
                    .map_err(StoreError::Other)?,
                to: DonationStatus::parse(row.try_get::<&str, _>("to_status")?)
                    .map_err(StoreError::Other)?,
                reason: row.try_get("reason")?,
                actor: row.try_get("actor")?,
                at: row.try_get("at")?,
            })
        }

        const SELECT_IDEMPOTENCY: &str = "SELECT scope, key, fingerprint, status_code, body, created_at \
             FROM idempotency_keys WHERE scope = $1 AND key = $2";

        /// One write transaction on this backend.
        pub struct $tx {
            tx: sqlx::Transaction<'static, Db>,
        }

        #[async_trait::async_trait]
        impl Tx for $tx {
            async fn lock_idempotency_key(&mut self, scope: &str, key: &str) -> StoreResult<bool> {
                lock_key(&mut self.tx, scope, key).await
            }

            async fn idempotency_record(
                &mut self,
                scope: &str,
                key: &str,
            ) -> StoreResult<Option<IdempotencyRecord>> {
                sqlx::query(SELECT_IDEMPOTENCY)
                    .bind(scope)
                    .bind(key)
                    .fetch_optional(&mut *self.tx)
                    .await?
                    .as_ref()
                    .map(idempotency_from_row)
                    .transpose()
            }

            async fn insert_idempotency_record(&mut self, r: &IdempotencyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, body, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&r.scope)
                .bind(&r.key)
                .bind(&r.fingerprint)
                .bind(i32::from(r.status_code))
                .bind(&r.body)
                .bind(r.created_at)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn campaign(&mut self, id: Uuid) -> StoreResult<Option<Campaign>> {
                sqlx::query(
                    "SELECT id, title, goal_minor, currency, status, version, created_at, updated_at \
                     FROM campaigns WHERE id = $1",
                )
                .bind(db_id(id))
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(campaign_from_row)
                .transpose()
            }

            async fn campaign_for_update(&mut self, id: Uuid) -> StoreResult<Option<Campaign>> {
                sqlx::query(concat!(
                    "SELECT id, title, goal_minor, currency, status, version, created_at, updated_at \
                     FROM campaigns WHERE id = $1",
                    $for_update
                ))
                .bind(db_id(id))
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(campaign_from_row)
                .transpose()
            }

            async fn insert_campaign(&mut self, c: &Campaign) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO campaigns (id, title, goal_minor, currency, status, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(db_id(c.id))
                .bind(&c.title)
                .bind(c.goal_minor)
                .bind(c.currency.code())
                .bind(c.status.as_str())
                .bind(c.version)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn update_campaign(&mut self, c: &Campaign) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE campaigns SET title = $1, goal_minor = $2, status = $3, version = $4, updated_at = $5 \
                     WHERE id = $6",
                )
                .bind(&c.title)
                .bind(c.goal_minor)
                .bind(c.status.as_str())
                .bind(c.version)
                .bind(c.updated_at)
                .bind(db_id(c.id))
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn insert_donation(&mut self, d: &Donation) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO donations (id, campaign_id, donor_email, donor_name, amount_minor, currency, \
                     status, payment_intent_id, version, metadata, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(db_id(d.id))
                .bind(db_id(d.campaign_id))
                .bind(d.donor_email.as_str())
                .bind(&d.donor_name)
                .bind(d.amount_minor)
                .bind(d.currency.code())
                .bind(d.status.as_str())
                .bind(&d.payment_intent_id)
                .bind(d.version)
                .bind(Json(&d.metadata))
                .bind(d.created_at)
                .bind(d.updated_at)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn donation_for_update(&mut self, id: Uuid) -> StoreResult<Option<Donation>> {
                sqlx::query(concat!("SELECT * FROM donations WHERE id = $1", $for_update))
                    .bind(db_id(id))
                    .fetch_optional(&mut *self.tx)
                    .await?
                    .as_ref()
                    .map(donation_from_row)
                    .transpose()
            }

            async fn update_donation_status(
                &mut self,
                id: Uuid,
                status: DonationStatus,
                expected_version: i64,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE donations SET status = $1, version = version + 1, updated_at = $2 \
                     WHERE id = $3 AND version = $4",
                )
                .bind(status.as_str())
                .bind(at)
                .bind(db_id(id))
                .bind(expected_version)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_status_audit(&mut self, a: &StatusAudit) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO donation_status_audit (donation_id, from_status, to_status, reason, actor, at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(db_id(a.donation_id))
                .bind(a.from.as_str())
                .bind(a.to.as_str())
                .bind(&a.reason)
                .bind(&a.actor)
                .bind(a.at)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn insert_outbox(&mut self, e: &EventEnvelope) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, version, \
                     occurred_at, traceparent, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(db_id(e.event_id))
                .bind(&e.event_type)
                .bind(&e.aggregate_type)
                .bind(&e.aggregate_id)
                .bind(e.version)
                .bind(e.occurred_at)
                .bind(&e.trace_context.traceparent)
                .bind(Json(&e.payload))
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn commit(self: Box<Self>) -> StoreResult<()> {
                self.tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> $crate::storage::Backend {
                BACKEND
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.read).await?;
                Ok(())
            }

            async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
                Ok(Box::new($tx {
                    tx: self.write.begin().await?,
                }))
            }

            async fn close(&self) {
                self.read.close().await;
                self.write.close().await;
            }

            async fn campaign(&self, id: Uuid) -> StoreResult<Option<Campaign>> {
                sqlx::query(
                    "SELECT id, title, goal_minor, currency, status, version, created_at, updated_at \
                     FROM campaigns WHERE id = $1",
                )
                .bind(db_id(id))
                .fetch_optional(&self.read)
                .await?
                .as_ref()
                .map(campaign_from_row)
                .transpose()
            }

            async fn campaigns(
                &self,
                status: Option<CampaignStatus>,
                limit: i64,
                offset: i64,
            ) -> StoreResult<Vec<Campaign>> {
                let mut q = sqlx::QueryBuilder::<Db>::new("SELECT ");
                q.push(CAMPAIGN_COLUMNS).push(" FROM campaigns");
                if let Some(status) = status {
                    q.push(" WHERE status = ").push_bind(status.as_str());
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(limit)
                    .push(" OFFSET ")
                    .push_bind(offset);
                q.build()
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(campaign_from_row)
                    .collect()
            }

            async fn donation(&self, id: Uuid) -> StoreResult<Option<Donation>> {
                sqlx::query("SELECT * FROM donations WHERE id = $1")
                    .bind(db_id(id))
                    .fetch_optional(&self.read)
                    .await?
                    .as_ref()
                    .map(donation_from_row)
                    .transpose()
            }

            async fn donation_history(&self, f: &HistoryFilter) -> StoreResult<Vec<Donation>> {
                let mut q = sqlx::QueryBuilder::<Db>::new("SELECT * FROM donations WHERE 1 = 1");
                if let Some(email) = &f.donor_email {
                    q.push(" AND donor_email = ").push_bind(email.clone());
                }
                if let Some(status) = f.status {
                    q.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(campaign) = f.campaign_id {
                    q.push(" AND campaign_id = ").push_bind(db_id(campaign));
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(f.limit)
                    .push(" OFFSET ")
                    .push_bind(f.offset);
                q.build()
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(donation_from_row)
                    .collect()
            }

            async fn status_audit(&self, donation_id: Uuid) -> StoreResult<Vec<StatusAudit>> {
                sqlx::query(
                    "SELECT donation_id, from_status, to_status, reason, actor, at \
                     FROM donation_status_audit WHERE donation_id = $1 ORDER BY id",
                )
                .bind(db_id(donation_id))
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(audit_from_row)
                .collect()
            }

            async fn idempotency_record(
                &self,
                scope: &str,
                key: &str,
            ) -> StoreResult<Option<IdempotencyRecord>> {
                sqlx::query(SELECT_IDEMPOTENCY)
                    .bind(scope)
                    .bind(key)
                    .fetch_optional(&self.read)
                    .await?
                    .as_ref()
                    .map(idempotency_from_row)
                    .transpose()
            }

            async fn sweep_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn claim_outbox(
                &self,
                relay: &str,
                limit: i64,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
            ) -> StoreResult<Vec<OutboxRow>> {
                let rows = sqlx::query(concat!(
                    "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL \
                     AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4",
                    $skip_locked,
                    ") RETURNING id, event_id, event_type, aggregate_type, aggregate_id, version, \
                     occurred_at, traceparent, payload, attempts"
                ))
                .bind(relay)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.write)
                .await?;
                let mut claimed = rows
                    .iter()
                    .map(outbox_from_row)
                    .collect::<StoreResult<Vec<_>>>()?;
                claimed.sort_by_key(|row| row.id);
                Ok(claimed)
            }

            async fn mark_outbox_sent(&self, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE outbox SET sent_at = ");
                q.push_bind(at)
                    .push(", claimed_until = NULL, last_error = NULL WHERE id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build().execute(&self.write).await?;
                Ok(())
            }

            async fn release_outbox(&self, id: i64, error: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, last_error = $1 WHERE id = $2",
                )
                .bind(error)
                .bind(id)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                    .bind(before)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
                let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                    .fetch_one(&self.read)
                    .await?;
                let oldest_pending: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT occurred_at FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1",
                )
                .fetch_optional(&self.read)
                .await?;
                let sent: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
                        .fetch_one(&self.read)
                        .await?;
                Ok(OutboxStats {
                    pending,
                    oldest_pending,
                    sent,
                })
            }
        }
    };
}
