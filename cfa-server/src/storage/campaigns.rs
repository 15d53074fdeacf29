//! Campaigns: what donors give to.
//!
//! [`CampaignStore`] reads them; [`CampaignTx`] locks and writes them inside a transaction.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::domain::campaign::{Campaign, CampaignStatus};

/// Reading campaigns.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// One campaign.
    async fn campaign(&self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// Campaigns, newest first.
    async fn campaigns(
        &self,
        status: Option<CampaignStatus>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Campaign>>;
    /// Every campaign id.
    async fn campaign_ids(&self) -> StoreResult<Vec<Uuid>>;
}

/// Campaigns inside a write transaction.
#[async_trait]
pub trait CampaignTx: Send {
    /// One campaign, share-locked so it cannot be closed until the transaction ends.
    async fn campaign_for_share(&mut self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// One campaign, locked against concurrent change until the transaction ends.
    async fn campaign_for_update(&mut self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// Inserts a campaign unless its id exists; returns whether it was inserted.
    async fn insert_campaign(&mut self, campaign: &Campaign) -> StoreResult<bool>;
    /// Overwrites a campaign's mutable fields and version.
    async fn update_campaign(&mut self, campaign: &Campaign) -> StoreResult<()>;
}
