//! Donations, the donation history and the operators' status audit.
//!
//! [`DonationStore`] reads them; [`DonationTx`] locks and writes them inside a transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use crate::domain::donation::{Donation, DonationStatus};

/// Filters of the donation history.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only this donor's donations (normalised address).
    pub donor_email: Option<String>,
    /// Only donations in this status.
    pub status: Option<DonationStatus>,
    /// Only donations to this campaign.
    pub campaign_id: Option<Uuid>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// An operator's change of a donation's status, kept for audit.
#[derive(Clone, Debug)]
pub struct StatusAudit {
    /// The donation changed.
    pub donation_id: Uuid,
    /// Status before.
    pub from: DonationStatus,
    /// Status after.
    pub to: DonationStatus,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who (an API key id, never the key).
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Reading donations.
#[async_trait]
pub trait DonationStore: Send + Sync {
    /// One donation.
    async fn donation(&self, id: Uuid) -> StoreResult<Option<Donation>>;
    /// Donations matching a filter, newest first.
    async fn donation_history(&self, filter: &HistoryFilter) -> StoreResult<Vec<Donation>>;
    /// The audit trail of a donation, oldest first.
    async fn status_audit(&self, donation_id: Uuid) -> StoreResult<Vec<StatusAudit>>;
    /// Every donation of a campaign (for rebuilding its totals).
    async fn campaign_donations(&self, campaign_id: Uuid) -> StoreResult<Vec<Donation>>;
    /// The donations of `ids` that exist, in no particular order.
    async fn donations(&self, ids: &[Uuid]) -> StoreResult<Vec<Donation>>;
}

/// Donations inside a write transaction.
#[async_trait]
pub trait DonationTx: Send {
    /// Inserts a new donation.
    async fn insert_donation(&mut self, donation: &Donation) -> StoreResult<()>;
    /// Inserts a new donation and its event if its campaign is `ACTIVE` in the donation's
    /// currency, keeping the campaign from closing until the transaction ends; returns whether
    /// it did (nothing is written otherwise). One statement on PostgreSQL, two on SQLite, where
    /// reading the campaign, then inserting the donation and its event took three.
    async fn insert_donation_if_open(
        &mut self,
        donation: &Donation,
        event: &crate::domain::event::EventEnvelope,
    ) -> StoreResult<bool>;
    /// The donations of `ids` that exist, each locked against concurrent change until the
    /// transaction ends (in the order of their ids, so that two batches never wait for each
    /// other's locks in a circle).
    async fn donations_for_update(&mut self, ids: &[Uuid]) -> StoreResult<Vec<Donation>>;
    /// One donation, locked against concurrent change until the transaction ends.
    async fn donation_for_update(&mut self, id: Uuid) -> StoreResult<Option<Donation>>;
    /// Sets a donation's status if its version is still `expected_version`, bumping the version.
    /// Returns false when the version moved.
    async fn update_donation_status(
        &mut self,
        id: Uuid,
        status: DonationStatus,
        expected_version: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Appends to a donation's audit trail.
    async fn insert_status_audit(&mut self, audit: &StatusAudit) -> StoreResult<()>;
    /// Sets a donation's payment intent unless it already has one; returns whether it changed.
    async fn set_donation_payment_intent(
        &mut self,
        donation_id: Uuid,
        payment_intent_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Writes a donation's status, refunded total, version and update time if its stored version
    /// is still `expected_version`; returns false when it moved.
    async fn update_donation(
        &mut self,
        donation: &Donation,
        expected_version: i64,
    ) -> StoreResult<bool>;
    /// Every donation of a campaign, as this transaction sees them.
    async fn campaign_donations(&mut self, campaign_id: Uuid) -> StoreResult<Vec<Donation>>;
}
