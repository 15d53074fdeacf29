//! The statements of [`crate::storage::donations`], compiled once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use sqlx::QueryBuilder;
use sqlx::Row as _;
use sqlx::types::Json;
use uuid::Uuid;

use super::lists::{PER_STATEMENT, in_lock_order, push_list};
use super::{BACKEND, BackendStore, BackendTx, Db, DbRow, FOR_UPDATE, db_id, from_db_id};
use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::email::DonorEmail;
use crate::domain::event::EventEnvelope;
use crate::domain::money::Currency;
use crate::storage::{Backend, DonationStore, DonationTx, HistoryFilter, OutboxTx, StatusAudit};
use crate::storage::{StoreError, StoreResult};

const SELECT_BY_ID: &str = "SELECT * FROM donations WHERE id = $1";
const SELECT_FOR_UPDATE: &str = concatcp!(SELECT_BY_ID, FOR_UPDATE);
const SELECT_BY_CAMPAIGN: &str =
    "SELECT * FROM donations WHERE campaign_id = $1 ORDER BY created_at, id";
/// The head of a read of the donations of a list of ids.
const SELECT_IN: &str = "SELECT * FROM donations WHERE id IN ";
const INSERT: &str = "INSERT INTO donations (id, campaign_id, donor_email, donor_name, \
                      amount_minor, currency, status, payment_intent_id, version, metadata, \
                      created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/// [`INSERT`] if the campaign is open in the donation's currency (SQLite: the single writer keeps
/// it from closing until the transaction ends).
const INSERT_IF_OPEN: &str = "INSERT INTO donations (id, campaign_id, donor_email, donor_name, \
                              amount_minor, currency, status, payment_intent_id, version, \
                              metadata, created_at, updated_at) \
                              SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                              WHERE EXISTS (SELECT 1 FROM campaigns WHERE id = $2 \
                              AND status = 'ACTIVE' AND currency = $6)";
/// The donation and its outbox event in one statement, if the campaign is open in the
/// donation's currency; its share lock keeps the campaign from closing until the transaction
/// ends (PostgreSQL).
const INSERT_WITH_EVENT_IF_OPEN: &str = "WITH open AS (SELECT id FROM campaigns WHERE id = $2 \
     AND status = 'ACTIVE' AND currency = $6 FOR SHARE), \
     donation AS (INSERT INTO donations (id, campaign_id, donor_email, donor_name, amount_minor, \
     currency, status, payment_intent_id, version, metadata, created_at, updated_at) \
     SELECT $1, id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM open RETURNING id) \
     INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, version, \
     occurred_at, traceparent, payload) \
     SELECT $13, $14, $15, $16, $17, $18, $19, $20 FROM donation";
const UPDATE_STATUS: &str = "UPDATE donations SET status = $1, version = version + 1, \
                             updated_at = $2 WHERE id = $3 AND version = $4";
const SET_PAYMENT_INTENT: &str = "UPDATE donations SET payment_intent_id = $1, updated_at = $2 \
                                  WHERE id = $3 AND payment_intent_id IS NULL";
const UPDATE: &str = "UPDATE donations SET status = $1, refunded_minor = $2, version = $3, \
                      updated_at = $4 WHERE id = $5 AND version = $6";

/// The columns of `donation_status_audit` but its sequence number, in [`INSERT_AUDIT`]'s order.
const AUDIT_COLUMNS: &str = "donation_id, from_status, to_status, reason, actor, at";
const SELECT_AUDIT: &str = concatcp!(
    "SELECT ",
    AUDIT_COLUMNS,
    " FROM donation_status_audit WHERE donation_id = $1 ORDER BY id"
);
const INSERT_AUDIT: &str = concatcp!(
    "INSERT INTO donation_status_audit (",
    AUDIT_COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);

/// `statement` (an insert of [`INSERT`]'s twelve columns first) with `d`'s values bound.
fn bind_donation<'q>(
    statement: &'static str,
    d: &'q Donation,
) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments> {
    sqlx::query(statement)
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

#[async_trait]
impl DonationStore for BackendStore {
    async fn donation(&self, id: Uuid) -> StoreResult<Option<Donation>> {
        sqlx::query(SELECT_BY_ID)
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
        sqlx::query(SELECT_AUDIT)
            .bind(db_id(donation_id))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
    }

    async fn campaign_donations(&self, campaign_id: Uuid) -> StoreResult<Vec<Donation>> {
        sqlx::query(SELECT_BY_CAMPAIGN)
            .bind(db_id(campaign_id))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(donation_from_row)
            .collect()
    }

    async fn donations(&self, ids: &[Uuid]) -> StoreResult<Vec<Donation>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PER_STATEMENT) {
            let mut query = QueryBuilder::<Db>::new(SELECT_IN);
            push_list(&mut query, chunk.iter().map(|id| db_id(*id)));
            for row in query.build().fetch_all(&self.read).await? {
                found.push(donation_from_row(&row)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl DonationTx for BackendTx {
    async fn insert_donation(&mut self, d: &Donation) -> StoreResult<()> {
        bind_donation(INSERT, d).execute(&mut *self.tx).await?;
        Ok(())
    }

    async fn insert_donation_if_open(
        &mut self,
        d: &Donation,
        e: &EventEnvelope,
    ) -> StoreResult<bool> {
        if BACKEND == Backend::Postgres {
            let done = super::outbox::bind_event(bind_donation(INSERT_WITH_EVENT_IF_OPEN, d), e)
                .execute(&mut *self.tx)
                .await?;
            return Ok(done.rows_affected() == 1);
        }
        let done = bind_donation(INSERT_IF_OPEN, d)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.insert_outbox(e).await?;
        Ok(true)
    }

    async fn donations_for_update(&mut self, ids: &[Uuid]) -> StoreResult<Vec<Donation>> {
        let ids = in_lock_order(ids);
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PER_STATEMENT) {
            let mut query = QueryBuilder::<Db>::new(SELECT_IN);
            push_list(&mut query, chunk.iter().map(|id| db_id(*id)));
            query.push(concatcp!(" ORDER BY id", FOR_UPDATE));
            for row in query.build().fetch_all(&mut *self.tx).await? {
                found.push(donation_from_row(&row)?);
            }
        }
        Ok(found)
    }

    async fn donation_for_update(&mut self, id: Uuid) -> StoreResult<Option<Donation>> {
        sqlx::query(SELECT_FOR_UPDATE)
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
        let done = sqlx::query(UPDATE_STATUS)
            .bind(status.as_str())
            .bind(at)
            .bind(db_id(id))
            .bind(expected_version)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_status_audit(&mut self, a: &StatusAudit) -> StoreResult<()> {
        sqlx::query(INSERT_AUDIT)
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
        let done = sqlx::query(SET_PAYMENT_INTENT)
            .bind(payment_intent_id)
            .bind(at)
            .bind(db_id(donation_id))
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_donation(&mut self, d: &Donation, expected_version: i64) -> StoreResult<bool> {
        let done = sqlx::query(UPDATE)
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

    async fn campaign_donations(&mut self, campaign_id: Uuid) -> StoreResult<Vec<Donation>> {
        sqlx::query(SELECT_BY_CAMPAIGN)
            .bind(db_id(campaign_id))
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(donation_from_row)
            .collect()
    }
}
