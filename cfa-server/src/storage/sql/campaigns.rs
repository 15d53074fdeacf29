//! The statements of [`crate::storage::campaigns`], compiled once per backend.

use async_trait::async_trait;
use const_format::concatcp;
use sqlx::Row as _;
use uuid::Uuid;

use super::{BackendStore, BackendTx, Db, DbId, DbRow, FOR_SHARE, FOR_UPDATE, db_id, from_db_id};
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::money::Currency;
use crate::storage::{CampaignStore, CampaignTx, StoreError, StoreResult};

/// Every column of `campaigns`, in the order [`INSERT`] binds them.
const COLUMNS: &str = "id, title, goal_minor, currency, status, version, created_at, updated_at";
const SELECT_BY_ID: &str = concatcp!("SELECT ", COLUMNS, " FROM campaigns WHERE id = $1");
const SELECT_FOR_SHARE: &str = concatcp!(SELECT_BY_ID, FOR_SHARE);
const SELECT_FOR_UPDATE: &str = concatcp!(SELECT_BY_ID, FOR_UPDATE);
const INSERT: &str = concatcp!(
    "INSERT INTO campaigns (",
    COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING"
);
const UPDATE: &str = "UPDATE campaigns SET title = $1, goal_minor = $2, status = $3, \
                      version = $4, updated_at = $5 WHERE id = $6";

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

#[async_trait]
impl CampaignStore for BackendStore {
    async fn campaign(&self, id: Uuid) -> StoreResult<Option<Campaign>> {
        sqlx::query(SELECT_BY_ID)
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
        q.push(COLUMNS).push(" FROM campaigns");
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

    async fn campaign_ids(&self) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<DbId> = sqlx::query_scalar("SELECT id FROM campaigns ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await?;
        Ok(ids.into_iter().map(from_db_id).collect())
    }
}

#[async_trait]
impl CampaignTx for BackendTx {
    async fn campaign_for_share(&mut self, id: Uuid) -> StoreResult<Option<Campaign>> {
        sqlx::query(SELECT_FOR_SHARE)
            .bind(db_id(id))
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(campaign_from_row)
            .transpose()
    }

    async fn campaign_for_update(&mut self, id: Uuid) -> StoreResult<Option<Campaign>> {
        sqlx::query(SELECT_FOR_UPDATE)
            .bind(db_id(id))
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(campaign_from_row)
            .transpose()
    }

    async fn insert_campaign(&mut self, c: &Campaign) -> StoreResult<bool> {
        let done = sqlx::query(INSERT)
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
        sqlx::query(UPDATE)
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
}
