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
    ($store:ident, $tx:ident, for_update = $for_update:literal, for_share = $for_share:literal, skip_locked = $skip_locked:literal) => {
        use $crate::domain::campaign::{Campaign, CampaignStatus};
        use $crate::domain::donation::{Donation, DonationStatus};
        use $crate::domain::email::DonorEmail;
        use $crate::domain::event::{EventEnvelope, TraceContext};
        use $crate::domain::money::Currency;
        use $crate::domain::payment::{Payment, PaymentStatus, PaymentTransition};
        use $crate::storage::{
            CampaignTotals, Contribution, DeliveryOutcome, HistoryFilter, Notification, SendOutcome, IdempotencyRecord, OutboxRow, OutboxStats, Refund,
            SandboxDelivery, SandboxIntent, StatusAudit, Store, StoreError, StoreResult, Tx,
            WebhookRecord, AdminStats,
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
                refunded_minor: row.try_get("refunded_minor")?,
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

        const PAYMENT_COLUMNS: &str = "id, payment_intent_id, donation_id, amount_minor, currency, status, gateway, \
             client_secret, version, refunded_minor, last_event_at, created_at, updated_at";

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
                request: row.try_get::<Option<Vec<u8>>, _>("request")?.unwrap_or_default(),
                replay_of: row.try_get("replay_of")?,
            })
        }

        fn counts(rows: Vec<DbRow>) -> StoreResult<std::collections::BTreeMap<String, i64>> {
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect()
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

        fn sandbox_intent_from_row(row: &DbRow) -> StoreResult<SandboxIntent> {
            Ok(SandboxIntent {
                payment_intent_id: row.try_get("payment_intent_id")?,
                amount_minor: row.try_get("amount_minor")?,
                currency: row.try_get("currency")?,
                status: row.try_get("status")?,
                refunded_minor: row.try_get("refunded_minor")?,
                status_at: row.try_get("status_at")?,
                created_at: row.try_get("created_at")?,
            })
        }

        fn totals_from_row(row: &DbRow) -> StoreResult<CampaignTotals> {
            Ok(CampaignTotals {
                campaign_id: from_db_id(row.try_get("campaign_id")?),
                total_minor: row.try_get("total_minor")?,
                completed_count: row.try_get("completed_count")?,
                unique_donors: row.try_get("unique_donors")?,
                goal_minor: row.try_get("goal_minor")?,
                currency: row.try_get("currency")?,
                last_updated: row.try_get("last_updated")?,
                campaign_version: row.try_get("campaign_version")?,
            })
        }

        const NOTIFICATION_COLUMNS: &str = "id, event_id, kind, donation_id, recipient, subject, body_text, body_html, \
             status, attempts, last_error, next_attempt_at, created_at, sent_at, traceparent";

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

            async fn campaign_for_share(&mut self, id: Uuid) -> StoreResult<Option<Campaign>> {
                sqlx::query(concat!(
                    "SELECT id, title, goal_minor, currency, status, version, created_at, updated_at \
                     FROM campaigns WHERE id = $1",
                    $for_share
                ))
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

            async fn set_donation_payment_intent(
                &mut self,
                donation_id: Uuid,
                payment_intent_id: &str,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE donations SET payment_intent_id = $1, updated_at = $2 \
                     WHERE id = $3 AND payment_intent_id IS NULL",
                )
                .bind(payment_intent_id)
                .bind(at)
                .bind(db_id(donation_id))
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn update_donation(&mut self, d: &Donation, expected_version: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE donations SET status = $1, refunded_minor = $2, version = $3, updated_at = $4 \
                     WHERE id = $5 AND version = $6",
                )
                .bind(d.status.as_str())
                .bind(d.refunded_minor)
                .bind(d.version)
                .bind(d.updated_at)
                .bind(db_id(d.id))
                .bind(expected_version)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_payment(&mut self, p: &Payment) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO payments (id, payment_intent_id, donation_id, amount_minor, currency, status, \
                     gateway, client_secret, version, refunded_minor, last_event_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
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
                sqlx::query(concat!(
                    "SELECT id, payment_intent_id, donation_id, amount_minor, currency, status, gateway, \
                     client_secret, version, refunded_minor, last_event_at, created_at, updated_at \
                     FROM payments WHERE id = $1",
                    $for_update
                ))
                .bind(db_id(id))
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(payment_from_row)
                .transpose()
            }

            async fn payment_for_update_by_intent(&mut self, intent: &str) -> StoreResult<Option<Payment>> {
                sqlx::query(concat!(
                    "SELECT id, payment_intent_id, donation_id, amount_minor, currency, status, gateway, \
                     client_secret, version, refunded_minor, last_event_at, created_at, updated_at \
                     FROM payments WHERE payment_intent_id = $1",
                    $for_update
                ))
                .bind(intent)
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(payment_from_row)
                .transpose()
            }

            async fn live_payment_for_donation(&mut self, donation_id: Uuid) -> StoreResult<Option<Payment>> {
                sqlx::query(
                    "SELECT id, payment_intent_id, donation_id, amount_minor, currency, status, gateway, \
                     client_secret, version, refunded_minor, last_event_at, created_at, updated_at \
                     FROM payments WHERE donation_id = $1 AND status <> 'FAILED' ORDER BY created_at LIMIT 1",
                )
                .bind(db_id(donation_id))
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(payment_from_row)
                .transpose()
            }

            async fn update_payment(&mut self, p: &Payment) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE payments SET status = $1, version = $2, refunded_minor = $3, last_event_at = $4, \
                     updated_at = $5 WHERE id = $6",
                )
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
                sqlx::query(
                    "INSERT INTO payment_state_history (payment_id, from_status, to_status, version, event_id, \
                     event_at, refund_id, amount_minor, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
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
                let done = sqlx::query(
                    "INSERT INTO webhook_events (dedup_key, outcome, status_code, body, received_at) \
                     VALUES ($1, 'in_progress', 0, $2, $3) ON CONFLICT (dedup_key) DO NOTHING",
                )
                .bind(dedup_key)
                .bind(Vec::<u8>::new())
                .bind(at)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn complete_webhook(&mut self, r: &WebhookRecord) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE webhook_events SET payment_intent_id = $1, event_id = $2, outcome = $3, \
                     status_code = $4, body = $5, request = $6, replay_of = $7 WHERE dedup_key = $8",
                )
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
                let done = sqlx::query(
                    "INSERT INTO refunds (refund_id, payment_id, amount_minor, status, requested_at, completed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (refund_id) DO NOTHING",
                )
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
                sqlx::query(concat!(
                    "SELECT refund_id, payment_id, amount_minor, status, requested_at, completed_at \
                     FROM refunds WHERE refund_id = $1",
                    $for_update
                ))
                .bind(refund_id)
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(refund_from_row)
                .transpose()
            }

            async fn complete_refund(&mut self, refund_id: &str, status: &str, at: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query("UPDATE refunds SET status = $1, completed_at = $2 WHERE refund_id = $3")
                    .bind(status)
                    .bind(at)
                    .bind(refund_id)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn requested_refunds_minor(&mut self, payment_id: Uuid) -> StoreResult<i64> {
                let sum: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(amount_minor) AS BIGINT) FROM refunds WHERE payment_id = $1 AND status = 'REQUESTED'",
                )
                .bind(db_id(payment_id))
                .fetch_one(&mut *self.tx)
                .await?;
                Ok(sum.unwrap_or(0))
            }

            async fn insert_inbox(&mut self, consumer: &str, event_id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO consumer_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer, event_id) DO NOTHING",
                )
                .bind(consumer)
                .bind(db_id(event_id))
                .bind(at)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn totals_for_update(&mut self, campaign_id: Uuid) -> StoreResult<Option<CampaignTotals>> {
                sqlx::query(concat!(
                    "SELECT campaign_id, total_minor, completed_count, unique_donors, goal_minor, currency, last_updated, \
                     campaign_version FROM campaign_totals WHERE campaign_id = $1",
                    $for_update
                ))
                .bind(db_id(campaign_id))
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(totals_from_row)
                .transpose()
            }

            async fn ensure_totals(&mut self, t: &CampaignTotals) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO campaign_totals (campaign_id, total_minor, completed_count, unique_donors, goal_minor, \
                     currency, last_updated) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (campaign_id) DO NOTHING",
                )
                .bind(db_id(t.campaign_id))
                .bind(t.total_minor)
                .bind(t.completed_count)
                .bind(t.unique_donors)
                .bind(t.goal_minor)
                .bind(&t.currency)
                .bind(t.last_updated)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn upsert_totals(&mut self, t: &CampaignTotals) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO campaign_totals (campaign_id, total_minor, completed_count, unique_donors, goal_minor, \
                     currency, last_updated, campaign_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (campaign_id) DO UPDATE SET total_minor = excluded.total_minor, \
                     completed_count = excluded.completed_count, unique_donors = excluded.unique_donors, \
                     goal_minor = excluded.goal_minor, currency = excluded.currency, last_updated = excluded.last_updated, \
                     campaign_version = excluded.campaign_version",
                )
                .bind(db_id(t.campaign_id))
                .bind(t.total_minor)
                .bind(t.completed_count)
                .bind(t.unique_donors)
                .bind(t.goal_minor)
                .bind(&t.currency)
                .bind(t.last_updated)
                .bind(t.campaign_version)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn has_contribution(&mut self, donation_id: Uuid) -> StoreResult<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT version FROM totals_contributions WHERE donation_id = $1")
                    .bind(db_id(donation_id))
                    .fetch_optional(&mut *self.tx)
                    .await?;
                Ok(found.is_some())
            }

            async fn contribution_for_update(&mut self, donation_id: Uuid) -> StoreResult<Option<Contribution>> {
                let row = sqlx::query(concat!(
                    "SELECT donation_id, campaign_id, donor_email, version, counted_minor, counted \
                     FROM totals_contributions WHERE donation_id = $1",
                    $for_update
                ))
                .bind(db_id(donation_id))
                .fetch_optional(&mut *self.tx)
                .await?;
                row.map(|row| {
                    Ok(Contribution {
                        donation_id: from_db_id(row.try_get("donation_id")?),
                        campaign_id: from_db_id(row.try_get("campaign_id")?),
                        donor_email: row.try_get("donor_email")?,
                        version: row.try_get("version")?,
                        counted_minor: row.try_get("counted_minor")?,
                        counted: row.try_get::<i64, _>("counted")? != 0,
                    })
                })
                .transpose()
            }

            async fn upsert_contribution(&mut self, c: &Contribution) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO totals_contributions (donation_id, campaign_id, donor_email, version, counted_minor, counted) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (donation_id) DO UPDATE SET \
                     version = excluded.version, counted_minor = excluded.counted_minor, counted = excluded.counted \
                     WHERE totals_contributions.version < excluded.version",
                )
                .bind(db_id(c.donation_id))
                .bind(db_id(c.campaign_id))
                .bind(&c.donor_email)
                .bind(c.version)
                .bind(c.counted_minor)
                .bind(i64::from(c.counted))
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn adjust_donor(&mut self, campaign_id: Uuid, donor_email: &str, delta: i64) -> StoreResult<i64> {
                let donations: i64 = sqlx::query_scalar(
                    "INSERT INTO totals_donors (campaign_id, donor_email, donations) VALUES ($1, $2, $3) \
                     ON CONFLICT (campaign_id, donor_email) DO UPDATE SET donations = totals_donors.donations + excluded.donations \
                     RETURNING donations",
                )
                .bind(db_id(campaign_id))
                .bind(donor_email)
                .bind(delta)
                .fetch_one(&mut *self.tx)
                .await?;
                Ok(donations)
            }

            async fn campaign_donations(&mut self, campaign_id: Uuid) -> StoreResult<Vec<Donation>> {
                sqlx::query("SELECT * FROM donations WHERE campaign_id = $1 ORDER BY created_at, id")
                    .bind(db_id(campaign_id))
                    .fetch_all(&mut *self.tx)
                    .await?
                    .iter()
                    .map(donation_from_row)
                    .collect()
            }

            async fn clear_totals_detail(&mut self, campaign_id: Uuid) -> StoreResult<()> {
                sqlx::query("DELETE FROM totals_contributions WHERE campaign_id = $1")
                    .bind(db_id(campaign_id))
                    .execute(&mut *self.tx)
                    .await?;
                sqlx::query("DELETE FROM totals_donors WHERE campaign_id = $1")
                    .bind(db_id(campaign_id))
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn insert_notification(&mut self, n: &Notification) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO notifications (id, event_id, kind, donation_id, recipient, subject, body_text, body_html, \
                     status, attempts, next_attempt_at, created_at, traceparent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12) \
                     ON CONFLICT (event_id, kind) DO NOTHING",
                )
                .bind(db_id(n.id))
                .bind(db_id(n.event_id))
                .bind(&n.kind)
                .bind(db_id(n.donation_id))
                .bind(&n.recipient)
                .bind(&n.subject)
                .bind(&n.body_text)
                .bind(&n.body_html)
                .bind(&n.status)
                .bind(n.next_attempt_at)
                .bind(n.created_at)
                .bind(&n.traceparent)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn sandbox_insert_intent(&mut self, i: &SandboxIntent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO sandbox_intents (payment_intent_id, amount_minor, currency, status, refunded_minor, \
                     status_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&i.payment_intent_id)
                .bind(i.amount_minor)
                .bind(&i.currency)
                .bind(&i.status)
                .bind(i.refunded_minor)
                .bind(i.status_at)
                .bind(i.created_at)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn sandbox_intent_for_update(&mut self, intent: &str) -> StoreResult<Option<SandboxIntent>> {
                sqlx::query(concat!(
                    "SELECT payment_intent_id, amount_minor, currency, status, refunded_minor, status_at, created_at \
                     FROM sandbox_intents WHERE payment_intent_id = $1",
                    $for_update
                ))
                .bind(intent)
                .fetch_optional(&mut *self.tx)
                .await?
                .as_ref()
                .map(sandbox_intent_from_row)
                .transpose()
            }

            async fn sandbox_update_intent(&mut self, i: &SandboxIntent) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE sandbox_intents SET status = $1, refunded_minor = $2, status_at = $3 WHERE payment_intent_id = $4",
                )
                .bind(&i.status)
                .bind(i.refunded_minor)
                .bind(i.status_at)
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
                sqlx::query(
                    "INSERT INTO sandbox_deliveries (payment_intent_id, body, next_attempt_at, traceparent, held_by) \
                     VALUES ($1, $2, $3, $4, (SELECT MAX(id) FROM sandbox_deliveries WHERE payment_intent_id = $1 \
                      AND delivered_at IS NULL AND given_up_at IS NULL))",
                )
                .bind(intent)
                .bind(body)
                .bind(at)
                .bind(traceparent)
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

            async fn savepoint(&mut self) -> StoreResult<()> {
                sqlx::query("SAVEPOINT cfa_work").execute(&mut *self.tx).await?;
                Ok(())
            }

            async fn rollback_to_savepoint(&mut self) -> StoreResult<()> {
                sqlx::query("ROLLBACK TO SAVEPOINT cfa_work").execute(&mut *self.tx).await?;
                Ok(())
            }

            async fn commit(self: Box<Self>) -> StoreResult<()> {
                self.tx.commit().await?;
                Ok(())
            }

            async fn rollback(self: Box<Self>) -> StoreResult<()> {
                self.tx.rollback().await?;
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
                     WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL \
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

            async fn mark_outbox_sent(&self, relay: &str, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE outbox SET sent_at = ");
                q.push_bind(at)
                    .push(", claimed_until = NULL, last_error = NULL WHERE claimed_by = ")
                    .push_bind(relay.to_string())
                    .push(" AND sent_at IS NULL AND id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build().execute(&self.write).await?;
                Ok(())
            }

            async fn release_outbox(
                &self,
                relay: &str,
                id: i64,
                error: &str,
                dead_at: Option<DateTime<Utc>>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, last_error = $1, dead_at = $2 \
                     WHERE id = $3 AND claimed_by = $4 AND sent_at IS NULL",
                )
                .bind(error)
                .bind(dead_at)
                .bind(id)
                .bind(relay)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn payment(&self, id: Uuid) -> StoreResult<Option<Payment>> {
                let mut q = sqlx::QueryBuilder::<Db>::new("SELECT ");
                q.push(PAYMENT_COLUMNS).push(" FROM payments WHERE id = ").push_bind(db_id(id));
                q.build().fetch_optional(&self.read).await?.as_ref().map(payment_from_row).transpose()
            }

            async fn payment_by_intent(&self, intent: &str) -> StoreResult<Option<Payment>> {
                let mut q = sqlx::QueryBuilder::<Db>::new("SELECT ");
                q.push(PAYMENT_COLUMNS).push(" FROM payments WHERE payment_intent_id = ").push_bind(intent.to_string());
                q.build().fetch_optional(&self.read).await?.as_ref().map(payment_from_row).transpose()
            }

            async fn payment_history(&self, payment_id: Uuid) -> StoreResult<Vec<PaymentTransition>> {
                sqlx::query(
                    "SELECT payment_id, from_status, to_status, version, event_id, event_at, refund_id, amount_minor, \
                     recorded_at FROM payment_state_history WHERE payment_id = $1 ORDER BY id",
                )
                .bind(db_id(payment_id))
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(transition_from_row)
                .collect()
            }

            async fn refunds(&self, payment_id: Uuid) -> StoreResult<Vec<Refund>> {
                sqlx::query(
                    "SELECT refund_id, payment_id, amount_minor, status, requested_at, completed_at \
                     FROM refunds WHERE payment_id = $1 ORDER BY requested_at, refund_id",
                )
                .bind(db_id(payment_id))
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(refund_from_row)
                .collect()
            }

            async fn stuck_payments(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Payment>> {
                let mut q = sqlx::QueryBuilder::<Db>::new("SELECT ");
                q.push(PAYMENT_COLUMNS)
                    .push(" FROM payments WHERE status IN ('INITIATED', 'AUTHORIZED') AND updated_at < ")
                    .push_bind(before)
                    .push(" AND (reconciled_at IS NULL OR reconciled_at < ")
                    .push_bind(before)
                    .push(") ORDER BY COALESCE(reconciled_at, updated_at) LIMIT ")
                    .push_bind(limit);
                q.build().fetch_all(&self.read).await?.iter().map(payment_from_row).collect()
            }

            async fn mark_reconciled(&self, payment_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
                sqlx::query("UPDATE payments SET reconciled_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(db_id(payment_id))
                    .execute(&self.write)
                    .await?;
                Ok(())
            }

            async fn campaign_totals(&self, campaign_id: Uuid) -> StoreResult<Option<CampaignTotals>> {
                sqlx::query(
                    "SELECT campaign_id, total_minor, completed_count, unique_donors, goal_minor, currency, last_updated, \
                     campaign_version FROM campaign_totals WHERE campaign_id = $1",
                )
                .bind(db_id(campaign_id))
                .fetch_optional(&self.read)
                .await?
                .as_ref()
                .map(totals_from_row)
                .transpose()
            }

            async fn realtime_totals(&self, campaign_id: Uuid) -> StoreResult<(i64, i64, i64)> {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(amount_minor - refunded_minor), 0) AS BIGINT) AS total_minor, \
                     COUNT(*) AS completed_count, COUNT(DISTINCT donor_email) AS unique_donors \
                     FROM donations WHERE campaign_id = $1 AND status = 'COMPLETED'",
                )
                .bind(db_id(campaign_id))
                .fetch_one(&self.read)
                .await?;
                Ok((
                    row.try_get("total_minor")?,
                    row.try_get("completed_count")?,
                    row.try_get("unique_donors")?,
                ))
            }

            async fn campaign_donations(&self, campaign_id: Uuid) -> StoreResult<Vec<Donation>> {
                sqlx::query("SELECT * FROM donations WHERE campaign_id = $1 ORDER BY created_at, id")
                    .bind(db_id(campaign_id))
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(donation_from_row)
                    .collect()
            }

            async fn campaign_ids(&self) -> StoreResult<Vec<Uuid>> {
                let ids: Vec<DbId> = sqlx::query_scalar("SELECT id FROM campaigns ORDER BY created_at, id")
                    .fetch_all(&self.read)
                    .await?;
                Ok(ids.into_iter().map(from_db_id).collect())
            }

            async fn claim_notifications(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<Notification>> {
                let rows = sqlx::query(concat!(
                    "UPDATE notifications SET claimed_until = $1 WHERE id IN (SELECT id FROM notifications \
                     WHERE status = 'PENDING' AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until < $2) \
                     ORDER BY next_attempt_at LIMIT $3",
                    $skip_locked,
                    ") RETURNING id, event_id, kind, donation_id, recipient, subject, body_text, body_html, \
                     status, attempts, last_error, next_attempt_at, created_at, sent_at, traceparent"
                ))
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.write)
                .await?;
                rows.iter().map(notification_from_row).collect()
            }

            async fn notification_attempted(&self, id: Uuid, outcome: &SendOutcome, at: DateTime<Utc>) -> StoreResult<()> {
                let query = match outcome {
                    SendOutcome::Sent => sqlx::query(
                        "UPDATE notifications SET status = 'SENT', attempts = attempts + 1, sent_at = $1, \
                         claimed_until = NULL, last_error = NULL WHERE id = $2",
                    )
                    .bind(at),
                    SendOutcome::RetryAt(next, error) => sqlx::query(
                        "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                         claimed_until = NULL WHERE id = $3",
                    )
                    .bind(*next)
                    .bind(error.clone()),
                    SendOutcome::Dead(error) => sqlx::query(
                        "UPDATE notifications SET status = 'DEAD', attempts = attempts + 1, last_error = $1, \
                         claimed_until = NULL WHERE id = $2",
                    )
                    .bind(error.clone()),
                };
                query.bind(db_id(id)).execute(&self.write).await?;
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
                q.push(NOTIFICATION_COLUMNS).push(" FROM notifications WHERE 1 = 1");
                if let Some(d) = donation_id {
                    q.push(" AND donation_id = ").push_bind(db_id(d));
                }
                if let Some(st) = status {
                    q.push(" AND status = ").push_bind(st.to_string());
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit).push(" OFFSET ").push_bind(offset);
                q.build().fetch_all(&self.read).await?.iter().map(notification_from_row).collect()
            }

            async fn webhook_record(&self, dedup_key: &str) -> StoreResult<Option<WebhookRecord>> {
                sqlx::query(
                    "SELECT dedup_key, payment_intent_id, event_id, outcome, status_code, body, received_at, \
                     request, replay_of FROM webhook_events WHERE dedup_key = $1",
                )
                .bind(dedup_key)
                .fetch_optional(&self.read)
                .await?
                .as_ref()
                .map(webhook_from_row)
                .transpose()
            }

            async fn recent_webhooks(&self, limit: i64, offset: i64) -> StoreResult<Vec<WebhookRecord>> {
                sqlx::query(
                    "SELECT dedup_key, payment_intent_id, event_id, outcome, status_code, body, received_at, \
                     request, replay_of FROM webhook_events WHERE outcome <> 'in_progress' \
                     ORDER BY received_at DESC, dedup_key LIMIT $1 OFFSET $2",
                )
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(webhook_from_row)
                .collect()
            }

            async fn admin_stats(&self) -> StoreResult<AdminStats> {
                let campaigns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM campaigns")
                    .fetch_one(&self.read)
                    .await?;
                let donations = counts(
                    sqlx::query("SELECT status, COUNT(*) FROM donations GROUP BY status")
                        .fetch_all(&self.read)
                        .await?,
                )?;
                let webhooks = counts(
                    sqlx::query(
                        "SELECT outcome, COUNT(*) FROM webhook_events WHERE outcome <> 'in_progress' GROUP BY outcome",
                    )
                    .fetch_all(&self.read)
                    .await?,
                )?;
                let notifications = counts(
                    sqlx::query("SELECT status, COUNT(*) FROM notifications GROUP BY status")
                        .fetch_all(&self.read)
                        .await?,
                )?;
                Ok(AdminStats {
                    campaigns,
                    donations,
                    webhooks,
                    notifications,
                })
            }

            async fn sandbox_intent(&self, intent: &str) -> StoreResult<Option<SandboxIntent>> {
                sqlx::query(
                    "SELECT payment_intent_id, amount_minor, currency, status, refunded_minor, status_at, created_at \
                     FROM sandbox_intents WHERE payment_intent_id = $1",
                )
                .bind(intent)
                .fetch_optional(&self.read)
                .await?
                .as_ref()
                .map(sandbox_intent_from_row)
                .transpose()
            }

            async fn sandbox_due_deliveries(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<SandboxDelivery>> {
                let rows = sqlx::query(
                    "SELECT id, payment_intent_id, body, attempts, traceparent FROM sandbox_deliveries d \
                     WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1 \
                     AND held_by IS NULL \
                     ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(SandboxDelivery {
                            id: row.try_get("id")?,
                            payment_intent_id: row.try_get("payment_intent_id")?,
                            body: row.try_get("body")?,
                            attempts: row.try_get("attempts")?,
                            traceparent: row.try_get("traceparent")?,
                        })
                    })
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
                let decided = matches!(outcome, DeliveryOutcome::Delivered | DeliveryOutcome::GiveUp)
                    || status.is_some_and(|s| (400..500).contains(&s) && s != 429);
                let query = match outcome {
                    DeliveryOutcome::Delivered => sqlx::query(
                        "UPDATE sandbox_deliveries SET attempts = attempts + 1, last_status = $1, delivered_at = $2 WHERE id = $3",
                    )
                    .bind(status)
                    .bind(at),
                    DeliveryOutcome::RetryAt(next) => sqlx::query(
                        "UPDATE sandbox_deliveries SET attempts = attempts + 1, last_status = $1, next_attempt_at = $2 WHERE id = $3",
                    )
                    .bind(status)
                    .bind(next),
                    DeliveryOutcome::GiveUp => sqlx::query(
                        "UPDATE sandbox_deliveries SET attempts = attempts + 1, last_status = $1, given_up_at = $2 WHERE id = $3",
                    )
                    .bind(status)
                    .bind(at),
                };
                query.bind(id).execute(&self.write).await?;
                if decided {
                    sqlx::query("UPDATE sandbox_deliveries SET held_by = NULL WHERE held_by = $1")
                        .bind(id)
                        .execute(&self.write)
                        .await?;
                }
                Ok(())
            }

            async fn dead_outbox(&self, limit: i64) -> StoreResult<Vec<(OutboxRow, Option<String>)>> {
                let rows = sqlx::query(
                    "SELECT id, event_id, event_type, aggregate_type, aggregate_id, version, occurred_at, traceparent, \
                     payload, attempts, last_error FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.iter()
                    .map(|row| Ok((outbox_from_row(row)?, row.try_get("last_error")?)))
                    .collect()
            }

            async fn revive_outbox(&self, id: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, last_error = NULL, claimed_by = NULL, \
                     claimed_until = NULL WHERE id = $1 AND dead_at IS NOT NULL",
                )
                .bind(id)
                .execute(&self.write)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                    .bind(before)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL",
                )
                .fetch_one(&self.read)
                .await?;
                let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL")
                    .fetch_one(&self.read)
                    .await?;
                let oldest_pending: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT occurred_at FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 1",
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
                    dead,
                })
            }
        }
    };
}
