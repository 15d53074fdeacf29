//! Donations and their life cycle: `PENDING` → `COMPLETED` | `FAILED`; `COMPLETED` → `REFUNDED`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::email::DonorEmail;
use super::event::{DonationChange, PaymentEvent};
use super::money::Currency;
use super::payment::PaymentStatus;

/// Where a donation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DonationStatus {
    /// Created, waiting for its payment.
    Pending,
    /// Paid in full.
    Completed,
    /// The payment failed.
    Failed,
    /// Paid, then refunded in full.
    Refunded,
}

impl DonationStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [DonationStatus; 4] = [
        DonationStatus::Pending,
        DonationStatus::Completed,
        DonationStatus::Failed,
        DonationStatus::Refunded,
    ];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DonationStatus::Pending => "PENDING",
            DonationStatus::Completed => "COMPLETED",
            DonationStatus::Failed => "FAILED",
            DonationStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses the wire spelling, case-insensitively.
    pub fn parse(raw: &str) -> Result<DonationStatus, String> {
        let upper = raw.to_ascii_uppercase();
        DonationStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == upper)
            .ok_or_else(|| {
                format!("must be one of PENDING, COMPLETED, FAILED, REFUNDED; got {raw:?}")
            })
    }

    /// Whether the life cycle allows moving from `self` to `to`. Exhaustive on purpose: a new
    /// status must be placed here before it compiles.
    pub fn can_become(self, to: DonationStatus) -> bool {
        use DonationStatus::*;
        match (self, to) {
            (Pending, Completed) | (Pending, Failed) | (Completed, Refunded) => true,
            (Pending, Pending)
            | (Pending, Refunded)
            | (Completed, Pending)
            | (Completed, Completed)
            | (Completed, Failed)
            | (Failed, _)
            | (Refunded, _) => false,
        }
    }
}

/// A donation to a campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct Donation {
    /// Server-chosen id.
    pub id: Uuid,
    /// The campaign it goes to.
    pub campaign_id: Uuid,
    /// Who gave it.
    pub donor_email: DonorEmail,
    /// Optional display name.
    pub donor_name: Option<String>,
    /// Amount in minor units of `currency`.
    pub amount_minor: i64,
    /// Always the campaign's currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: DonationStatus,
    /// Refunded so far (partial refunds keep the donation `COMPLETED`).
    pub refunded_minor: i64,
    /// The provider intent paying for it, once one exists.
    pub payment_intent_id: Option<String>,
    /// 1 at creation, +1 per status change.
    pub version: i64,
    /// Free-form JSON object supplied by the client.
    pub metadata: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a donation does about a change of its payment (see [`follow`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Follow {
    /// Nothing changes.
    Stay,
    /// Nothing changes, for a reason worth a warning.
    Ignore(&'static str),
    /// The donation changes: the change to announce and the donation after it.
    Change(DonationChange, Box<Donation>),
    /// The event is ahead of the donation (a refund before its capture reached it): handle it
    /// again later.
    NotYet,
}

/// How `donation` follows its payment's `event` at `now`: completed by a capture of its full
/// amount, failed by a failed payment (unless the donor retried with `another_live_payment`) or
/// a voided authorization, refunded in part or in full by refunds. Its version moves by one per
/// change.
pub fn follow(
    donation: &Donation,
    event: &PaymentEvent,
    another_live_payment: bool,
    now: DateTime<Utc>,
) -> Follow {
    use DonationStatus::{Completed, Failed, Pending, Refunded};
    let p = &event.snapshot;
    let to = |status: DonationStatus, refunded_minor: i64| {
        Box::new(Donation {
            status,
            refunded_minor,
            version: donation.version + 1,
            updated_at: now,
            ..donation.clone()
        })
    };
    let refunded = donation.refunded_minor;
    match (event.kind, donation.status) {
        (PaymentStatus::Captured, Pending) if p.amount_minor == donation.amount_minor => {
            Follow::Change(DonationChange::Completed, to(Completed, refunded))
        }
        (PaymentStatus::Captured, Pending) => {
            Follow::Ignore("a capture of another amount does not complete the donation")
        }
        // A donor may retry with a new intent after a decline.
        (PaymentStatus::Failed, Pending) if another_live_payment => Follow::Stay,
        (PaymentStatus::Failed, Pending) => {
            Follow::Change(DonationChange::Failed, to(Failed, refunded))
        }
        // A voided authorization: the donation was never paid.
        (PaymentStatus::Refunded, Pending) if p.old_status == PaymentStatus::Authorized => {
            Follow::Change(DonationChange::Failed, to(Failed, refunded))
        }
        (PaymentStatus::Refunded, Pending) => Follow::NotYet,
        (PaymentStatus::Refunded, Completed) if p.refunded_minor <= refunded => Follow::Stay,
        (PaymentStatus::Refunded, Completed) if p.refunded_minor >= donation.amount_minor => {
            Follow::Change(
                DonationChange::Refunded,
                to(Refunded, donation.amount_minor),
            )
        }
        (PaymentStatus::Refunded, Completed) => Follow::Change(
            DonationChange::PartiallyRefunded,
            to(Completed, p.refunded_minor),
        ),
        _ => Follow::Stay,
    }
}

serde_as_str!(DonationStatus, |s: &DonationStatus| s.as_str());

#[cfg(test)]
mod tests {
    use super::DonationStatus::{self, *};

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let allowed: Vec<(DonationStatus, DonationStatus)> = DonationStatus::ALL
            .into_iter()
            .flat_map(|from| DonationStatus::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Pending, Completed),
                (Pending, Failed),
                (Completed, Refunded)
            ]
        );
    }

    #[test]
    fn statuses_round_trip_through_their_spelling() {
        for status in DonationStatus::ALL {
            assert_eq!(DonationStatus::parse(status.as_str()), Ok(status));
        }
        assert_eq!(DonationStatus::parse("completed"), Ok(Completed));
        assert!(DonationStatus::parse("DONE").is_err());
    }
}
