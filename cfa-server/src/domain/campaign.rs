//! Campaigns: what donors give to.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::money::Currency;

/// Whether a campaign accepts donations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignStatus {
    /// Accepting donations.
    Active,
    /// Closed: new donations are refused; existing ones still settle.
    Closed,
}

impl CampaignStatus {
    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Active => "ACTIVE",
            CampaignStatus::Closed => "CLOSED",
        }
    }

    /// Parses the wire spelling, case-insensitively.
    pub fn parse(raw: &str) -> Result<CampaignStatus, String> {
        match raw.to_ascii_uppercase().as_str() {
            "ACTIVE" => Ok(CampaignStatus::Active),
            "CLOSED" => Ok(CampaignStatus::Closed),
            _ => Err(format!("must be ACTIVE or CLOSED, got {raw:?}")),
        }
    }
}

/// A fundraising campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    /// Server- or client-chosen id.
    pub id: Uuid,
    /// Human-readable title, 1–200 characters.
    pub title: String,
    /// Goal in minor units of `currency`.
    pub goal_minor: i64,
    /// Currency of the goal and of every donation to the campaign; fixed at creation.
    pub currency: Currency,
    /// Whether it accepts donations.
    pub status: CampaignStatus,
    /// 1 at creation, +1 per change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Validates a campaign title, returning it trimmed.
pub fn parse_title(raw: &str) -> Result<String, String> {
    let title = raw.trim();
    if title.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    match title.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > 200 => Err("must be at most 200 characters".into()),
        _ => Ok(title.to_string()),
    }
}

serde_as_str!(CampaignStatus, |s: &CampaignStatus| s.as_str());
