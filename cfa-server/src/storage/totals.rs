//! The totals read model: each campaign's totals row, what each donation contributes to it, and
//! how many counted donations each donor has in each campaign.
//!
//! [`TotalsStore`] reads the rows (and computes totals from the donations themselves);
//! [`TotalsTx`] locks and writes them inside a transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// A campaign's totals as the read model holds them (or as computed from donations).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CampaignTotals {
    /// The campaign.
    pub campaign_id: Uuid,
    /// Sum of completed donations net of refunds, minor units.
    pub total_minor: i64,
    /// Completed donations not fully refunded.
    pub completed_count: i64,
    /// Distinct donor addresses among them.
    pub unique_donors: i64,
    /// The campaign's goal.
    pub goal_minor: i64,
    /// Currency code.
    pub currency: String,
    /// Last change.
    pub last_updated: DateTime<Utc>,
    /// The campaign version the goal and currency come from.
    #[serde(default)]
    pub campaign_version: i64,
}

impl CampaignTotals {
    /// The totals of a campaign no completed donation has reached yet.
    pub fn empty(campaign: &crate::domain::campaign::Campaign) -> CampaignTotals {
        CampaignTotals {
            campaign_id: campaign.id,
            total_minor: 0,
            completed_count: 0,
            unique_donors: 0,
            goal_minor: campaign.goal_minor,
            currency: campaign.currency.code().to_string(),
            last_updated: campaign.updated_at,
            campaign_version: campaign.version,
        }
    }
}

/// What one donation contributes to its campaign's totals, as last applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    /// The donation.
    pub donation_id: Uuid,
    /// Its campaign.
    pub campaign_id: Uuid,
    /// Its donor (normalised).
    pub donor_email: String,
    /// The donation version this reflects; older events are ignored.
    pub version: i64,
    /// Minor units counted.
    pub counted_minor: i64,
    /// Whether it counts as a completed donation.
    pub counted: bool,
}

/// Reading totals.
#[async_trait]
pub trait TotalsStore: Send + Sync {
    /// The totals read model's row for a campaign.
    async fn campaign_totals(&self, campaign_id: Uuid) -> StoreResult<Option<CampaignTotals>>;
    /// Totals computed from the donations themselves (the source of truth), without goal and
    /// currency (filled from the campaign by the caller).
    async fn realtime_totals(&self, campaign_id: Uuid) -> StoreResult<(i64, i64, i64)>;
}

/// Totals, contributions and donors inside a write transaction.
#[async_trait]
pub trait TotalsTx: Send {
    /// Creates a campaign's totals row if it has none (a concurrent creator waits, then finds
    /// it), so that it can be locked.
    async fn ensure_totals(&mut self, totals: &CampaignTotals) -> StoreResult<()>;
    /// The totals row of a campaign, locked until the transaction ends.
    async fn totals_for_update(&mut self, campaign_id: Uuid)
    -> StoreResult<Option<CampaignTotals>>;
    /// Writes a campaign's totals row.
    async fn upsert_totals(&mut self, totals: &CampaignTotals) -> StoreResult<()>;
    /// The recorded contributions of the donations of `ids` (no lock).
    async fn contributions(&mut self, donation_ids: &[Uuid]) -> StoreResult<Vec<Contribution>>;
    /// The recorded contributions of the donations of `ids`, locked until the transaction ends
    /// (in the order of their ids).
    async fn contributions_for_update(
        &mut self,
        donation_ids: &[Uuid],
    ) -> StoreResult<Vec<Contribution>>;
    /// Writes donations' contributions, each unless a newer version of its donation is already
    /// applied; at most one contribution per donation.
    async fn upsert_contributions(&mut self, contributions: &[Contribution]) -> StoreResult<()>;
    /// Adds `delta` to the number of counted donations of a donor in a campaign; returns the new
    /// number.
    async fn adjust_donor(
        &mut self,
        campaign_id: Uuid,
        donor_email: &str,
        delta: i64,
    ) -> StoreResult<i64>;
    /// Forgets every contribution and donor of a campaign (before a rebuild).
    async fn clear_totals_detail(&mut self, campaign_id: Uuid) -> StoreResult<()>;
}
