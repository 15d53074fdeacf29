//! Counts across aggregates for the operator's dashboard.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StoreResult;

/// Counts for the operator's dashboard.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AdminStats {
    /// Campaigns.
    pub campaigns: i64,
    /// Donations by status (`PENDING`, `COMPLETED`, …).
    pub donations: BTreeMap<String, i64>,
    /// Webhook deliveries by outcome (`processed`, `ignored`, …).
    pub webhooks: BTreeMap<String, i64>,
    /// Notifications by status (`PENDING`, `SENT`, `DEAD`).
    pub notifications: BTreeMap<String, i64>,
}

/// Reading the dashboard's counts.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Counts of campaigns, donations, webhooks and notifications.
    async fn admin_stats(&self) -> StoreResult<AdminStats>;
}
