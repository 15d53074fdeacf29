//! The statements of [`crate::storage::totals`], compiled once per backend.

use async_trait::async_trait;
use const_format::concatcp;
use sqlx::{QueryBuilder, Row as _};
use uuid::Uuid;

use super::lists::{PER_STATEMENT, in_lock_order, push_list};
use super::{BackendStore, BackendTx, Db, DbRow, FOR_UPDATE, db_id, from_db_id};
use crate::storage::{CampaignTotals, Contribution, StoreResult, TotalsStore, TotalsTx};

/// The columns of `campaign_totals`, in the order [`UPSERT`] binds them.
const COLUMNS: &str = "campaign_id, total_minor, completed_count, unique_donors, goal_minor, \
                       currency, last_updated, campaign_version";
const SELECT: &str = concatcp!(
    "SELECT ",
    COLUMNS,
    " FROM campaign_totals WHERE campaign_id = $1"
);
const SELECT_FOR_UPDATE: &str = concatcp!(SELECT, FOR_UPDATE);
/// Creates the row with the campaign version's default, leaving an existing row alone.
const ENSURE: &str = "INSERT INTO campaign_totals (campaign_id, total_minor, completed_count, \
                      unique_donors, goal_minor, currency, last_updated) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (campaign_id) DO NOTHING";
const UPSERT: &str = concatcp!(
    "INSERT INTO campaign_totals (",
    COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (campaign_id) DO UPDATE SET total_minor = excluded.total_minor, \
     completed_count = excluded.completed_count, unique_donors = excluded.unique_donors, \
     goal_minor = excluded.goal_minor, currency = excluded.currency, \
     last_updated = excluded.last_updated, campaign_version = excluded.campaign_version"
);
/// The totals of a campaign computed from its completed donations.
const REALTIME: &str = "SELECT \
                        CAST(COALESCE(SUM(amount_minor - refunded_minor), 0) AS BIGINT) \
                        AS total_minor, \
                        COUNT(*) AS completed_count, \
                        COUNT(DISTINCT donor_email) AS unique_donors \
                        FROM donations WHERE campaign_id = $1 AND status = 'COMPLETED'";

/// The columns of `totals_contributions`, in the order `upsert_contributions` binds them.
const CONTRIBUTION_COLUMNS: &str =
    "donation_id, campaign_id, donor_email, version, counted_minor, counted";
const SELECT_CONTRIBUTIONS: &str = concatcp!(
    "SELECT ",
    CONTRIBUTION_COLUMNS,
    " FROM totals_contributions WHERE donation_id IN "
);
const INSERT_CONTRIBUTIONS: &str = concatcp!(
    "INSERT INTO totals_contributions (",
    CONTRIBUTION_COLUMNS,
    ") "
);
/// After [`INSERT_CONTRIBUTIONS`]' rows: a contribution is written unless a newer version of the
/// donation is already applied.
const ON_CONFLICT_NEWER: &str = " ON CONFLICT (donation_id) DO UPDATE SET \
     version = excluded.version, counted_minor = excluded.counted_minor, \
     counted = excluded.counted WHERE totals_contributions.version < excluded.version";
const ADJUST_DONOR: &str = "INSERT INTO totals_donors (campaign_id, donor_email, donations) \
                            VALUES ($1, $2, $3) ON CONFLICT (campaign_id, donor_email) \
                            DO UPDATE SET donations = totals_donors.donations + excluded.donations \
                            RETURNING donations";
const CLEAR_CONTRIBUTIONS: &str = "DELETE FROM totals_contributions WHERE campaign_id = $1";
const CLEAR_DONORS: &str = "DELETE FROM totals_donors WHERE campaign_id = $1";

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

fn contribution_from_row(row: &DbRow) -> StoreResult<Contribution> {
    Ok(Contribution {
        donation_id: from_db_id(row.try_get("donation_id")?),
        campaign_id: from_db_id(row.try_get("campaign_id")?),
        donor_email: row.try_get("donor_email")?,
        version: row.try_get("version")?,
        counted_minor: row.try_get("counted_minor")?,
        counted: row.try_get::<i64, _>("counted")? != 0,
    })
}

#[async_trait]
impl TotalsStore for BackendStore {
    async fn campaign_totals(&self, campaign_id: Uuid) -> StoreResult<Option<CampaignTotals>> {
        sqlx::query(SELECT)
            .bind(db_id(campaign_id))
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(totals_from_row)
            .transpose()
    }

    async fn realtime_totals(&self, campaign_id: Uuid) -> StoreResult<(i64, i64, i64)> {
        let row = sqlx::query(REALTIME)
            .bind(db_id(campaign_id))
            .fetch_one(&self.read)
            .await?;
        Ok((
            row.try_get("total_minor")?,
            row.try_get("completed_count")?,
            row.try_get("unique_donors")?,
        ))
    }
}

#[async_trait]
impl TotalsTx for BackendTx {
    async fn ensure_totals(&mut self, t: &CampaignTotals) -> StoreResult<()> {
        sqlx::query(ENSURE)
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

    async fn totals_for_update(
        &mut self,
        campaign_id: Uuid,
    ) -> StoreResult<Option<CampaignTotals>> {
        sqlx::query(SELECT_FOR_UPDATE)
            .bind(db_id(campaign_id))
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(totals_from_row)
            .transpose()
    }

    async fn upsert_totals(&mut self, t: &CampaignTotals) -> StoreResult<()> {
        sqlx::query(UPSERT)
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

    async fn contributions(&mut self, donation_ids: &[Uuid]) -> StoreResult<Vec<Contribution>> {
        select_contributions(self, donation_ids, "").await
    }

    async fn contributions_for_update(
        &mut self,
        donation_ids: &[Uuid],
    ) -> StoreResult<Vec<Contribution>> {
        let ids = in_lock_order(donation_ids);
        select_contributions(self, &ids, concatcp!(" ORDER BY donation_id", FOR_UPDATE)).await
    }

    async fn upsert_contributions(&mut self, contributions: &[Contribution]) -> StoreResult<()> {
        for chunk in contributions.chunks(PER_STATEMENT) {
            let mut insert = QueryBuilder::<Db>::new(INSERT_CONTRIBUTIONS);
            insert.push_values(chunk, |mut row, c| {
                row.push_bind(db_id(c.donation_id))
                    .push_bind(db_id(c.campaign_id))
                    .push_bind(&c.donor_email)
                    .push_bind(c.version)
                    .push_bind(c.counted_minor)
                    .push_bind(i64::from(c.counted));
            });
            insert.push(ON_CONFLICT_NEWER);
            insert.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn adjust_donor(
        &mut self,
        campaign_id: Uuid,
        donor_email: &str,
        delta: i64,
    ) -> StoreResult<i64> {
        let donations: i64 = sqlx::query_scalar(ADJUST_DONOR)
            .bind(db_id(campaign_id))
            .bind(donor_email)
            .bind(delta)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(donations)
    }

    async fn clear_totals_detail(&mut self, campaign_id: Uuid) -> StoreResult<()> {
        sqlx::query(CLEAR_CONTRIBUTIONS)
            .bind(db_id(campaign_id))
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(CLEAR_DONORS)
            .bind(db_id(campaign_id))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

/// The contributions of `ids`, with `tail` after the list (an order and a lock).
async fn select_contributions(
    tx: &mut BackendTx,
    ids: &[Uuid],
    tail: &str,
) -> StoreResult<Vec<Contribution>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PER_STATEMENT) {
        let mut query = QueryBuilder::<Db>::new(SELECT_CONTRIBUTIONS);
        push_list(&mut query, chunk.iter().map(|id| db_id(*id)));
        query.push(tail);
        for row in query.build().fetch_all(&mut *tx.tx).await? {
            found.push(contribution_from_row(&row)?);
        }
    }
    Ok(found)
}
