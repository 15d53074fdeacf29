//! The statements of [`crate::storage::admin`], compiled once per backend.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row as _;

use super::{BackendStore, DbRow};
use crate::storage::{AdminStats, AdminStore, StoreResult};

const COUNT_CAMPAIGNS: &str = "SELECT COUNT(*) FROM campaigns";
const DONATIONS_BY_STATUS: &str = "SELECT status, COUNT(*) FROM donations GROUP BY status";
/// Completed deliveries only: a claim still in progress has no outcome yet.
const WEBHOOKS_BY_OUTCOME: &str = "SELECT outcome, COUNT(*) FROM webhook_events \
                                   WHERE outcome <> 'in_progress' GROUP BY outcome";
const NOTIFICATIONS_BY_STATUS: &str = "SELECT status, COUNT(*) FROM notifications GROUP BY status";

/// A map from the first column (a label) to the second (a count).
fn counts(rows: Vec<DbRow>) -> StoreResult<BTreeMap<String, i64>> {
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect()
}

#[async_trait]
impl AdminStore for BackendStore {
    async fn admin_stats(&self) -> StoreResult<AdminStats> {
        let campaigns: i64 = sqlx::query_scalar(COUNT_CAMPAIGNS)
            .fetch_one(&self.read)
            .await?;
        let donations = counts(
            sqlx::query(DONATIONS_BY_STATUS)
                .fetch_all(&self.read)
                .await?,
        )?;
        let webhooks = counts(
            sqlx::query(WEBHOOKS_BY_OUTCOME)
                .fetch_all(&self.read)
                .await?,
        )?;
        let notifications = counts(
            sqlx::query(NOTIFICATIONS_BY_STATUS)
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
}
