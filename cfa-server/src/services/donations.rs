//! Donations: taking one, the operator's status override, and the donation-status consumer that
//! keeps each donation in step with its payment.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::{ConsumerSpec, outbox_event};
use crate::config::Role;
use crate::domain::campaign::CampaignStatus;
use crate::domain::donation::{Donation, DonationStatus, Follow, follow};
use crate::domain::email::DonorEmail;
use crate::domain::event::{DomainEvent, DonationEvent, EventEnvelope, PaymentEvent};
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::domain::payment::PaymentStatus;
use crate::messaging::consumer::{Handler, HandlerError, part_span};
use crate::storage::{StatusAudit, Store, StoreError, Tx};
use tracing::Instrument as _;

/// A donation to take, parsed from the wire.
#[derive(Clone, Debug)]
pub struct NewDonation {
    /// The campaign it goes to.
    pub campaign_id: Uuid,
    /// Who gives it.
    pub donor_email: DonorEmail,
    /// How the donor wants to be addressed (see [`parse_donor_name`]).
    pub donor_name: Option<String>,
    /// The amount as the donor wrote it (a decimal number); read in the campaign's currency.
    pub amount: String,
    /// The currency the donor named, if any; it must be the campaign's.
    pub currency: Option<Currency>,
    /// The client's JSON object.
    pub metadata: Value,
}

/// An operator's change of a donation's status.
#[derive(Clone, Debug)]
pub struct StatusOverride {
    /// The donation.
    pub donation_id: Uuid,
    /// The status it should have.
    pub to: DonationStatus,
    /// Why, for the audit trail.
    pub reason: String,
    /// Who (an operator key's name, never the key).
    pub actor: String,
    /// Refuse unless the donation is at this version.
    pub expected_version: Option<i64>,
    /// The payment intent the operator says the donation belongs to: recorded if it has none,
    /// refused if it has another.
    pub payment_intent_id: Option<String>,
}

/// Why a donation command was refused.
#[derive(Debug, thiserror::Error)]
pub enum DonationError {
    /// No campaign has this id.
    #[error("campaign {0} does not exist")]
    CampaignNotFound(Uuid),
    /// The campaign takes no more donations.
    #[error("campaign {0} is closed and accepts no donations")]
    CampaignClosed(Uuid),
    /// The donor named a currency the campaign does not take.
    #[error("campaign {campaign} takes donations in {expected}, not {given}")]
    CurrencyMismatch {
        /// The campaign.
        campaign: Uuid,
        /// Its currency.
        expected: Currency,
        /// The one named.
        given: Currency,
    },
    /// The amount is not a valid amount of the campaign's currency.
    #[error("{0}")]
    InvalidAmount(crate::domain::money::AmountError),
    /// No donation has this id.
    #[error("donation {0} not found")]
    NotFound(Uuid),
    /// The donation is not at the version the operator expected.
    #[error("donation {id} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The donation.
        id: Uuid,
        /// Its version.
        actual: i64,
        /// The one expected.
        expected: i64,
    },
    /// The life cycle does not allow the change.
    #[error("a {} donation cannot become {}", from.as_str(), to.as_str())]
    InvalidTransition {
        /// Its status.
        from: DonationStatus,
        /// The one asked for.
        to: DonationStatus,
    },
    /// Another change won the race.
    #[error("donation {0} changed concurrently; retry")]
    ChangedConcurrently(Uuid),
    /// The donation already belongs to another payment intent.
    #[error("donation {id} belongs to payment intent {current}, not {given}")]
    OtherPaymentIntent {
        /// The donation.
        id: Uuid,
        /// The intent it has.
        current: String,
        /// The one named.
        given: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates a donor's display name: trimmed, at most 200 characters, no control characters;
/// blank means none.
pub fn parse_donor_name(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        Some(name) if name.chars().count() > 200 => Err("must be at most 200 characters".into()),
        Some(name) if name.chars().any(char::is_control) => {
            Err("must not contain control characters".into())
        }
        Some("") | None => Ok(None),
        Some(name) => Ok(Some(name.to_string())),
    }
}

/// The currency of each campaign donations were taken for. A campaign's currency is fixed once
/// it exists, so a donation to a campaign seen before is built without reading the campaign and
/// inserted by one statement that checks the campaign is still open
/// ([`crate::storage::DonationTx::insert_donation_if_open`]).
pub struct CampaignCurrencies(moka::future::Cache<Uuid, Currency>);

impl Default for CampaignCurrencies {
    fn default() -> Self {
        CampaignCurrencies(moka::future::Cache::new(100_000))
    }
}

/// Takes a `PENDING` donation to an active campaign, in `tx`, with its `donation.created` event.
/// The campaign is share-locked, so it cannot close before the donation commits. To a campaign
/// in `currencies`, one statement checks the campaign and inserts both; only if that finds the
/// campaign closed (or gone) is it read, to say why.
pub async fn create(
    tx: &mut dyn Tx,
    cmd: NewDonation,
    currencies: &CampaignCurrencies,
) -> Result<Donation, DonationError> {
    if let Some(currency) = currencies.0.get(&cmd.campaign_id).await {
        let (donation, event) = new_donation(&cmd, currency)?;
        if tx.insert_donation_if_open(&donation, &event).await? {
            return Ok(donation);
        }
    }
    let campaign = tx
        .campaign_for_share(cmd.campaign_id)
        .await?
        .ok_or(DonationError::CampaignNotFound(cmd.campaign_id))?;
    if campaign.status == CampaignStatus::Closed {
        return Err(DonationError::CampaignClosed(campaign.id));
    }
    currencies.0.insert(campaign.id, campaign.currency).await;
    let (donation, event) = new_donation(&cmd, campaign.currency)?;
    tx.insert_donation(&donation).await?;
    tx.insert_outbox(&event).await?;
    Ok(donation)
}

/// The donation `cmd` asks for to a campaign in `currency`, and its event.
fn new_donation(
    cmd: &NewDonation,
    currency: Currency,
) -> Result<(Donation, EventEnvelope), DonationError> {
    if let Some(given) = cmd.currency
        && given != currency
    {
        return Err(DonationError::CurrencyMismatch {
            campaign: cmd.campaign_id,
            expected: currency,
            given,
        });
    }
    let amount_minor = currency
        .parse_amount(&cmd.amount, MAX_DONATION_MAJOR)
        .map_err(DonationError::InvalidAmount)?;
    let now = crate::domain::now();
    let donation = Donation {
        id: Uuid::new_v4(),
        campaign_id: cmd.campaign_id,
        donor_email: cmd.donor_email.clone(),
        donor_name: cmd.donor_name.clone(),
        amount_minor,
        currency,
        status: DonationStatus::Pending,
        payment_intent_id: None,
        refunded_minor: 0,
        version: 1,
        metadata: cmd.metadata.clone(),
        created_at: now,
        updated_at: now,
    };
    let event = outbox_event(
        DomainEvent::Donation(DonationEvent::reached(&donation)),
        now,
    );
    Ok((donation, event))
}

/// Moves a donation along its life cycle by hand: audited with the reason and the operator,
/// announced with the same event an automatic change would publish. Commits.
pub async fn override_status(
    store: &dyn Store,
    cmd: StatusOverride,
) -> Result<Donation, DonationError> {
    let id = cmd.donation_id;
    let mut tx = store.begin().await?;
    let current = tx
        .donation_for_update(id)
        .await?
        .ok_or(DonationError::NotFound(id))?;
    if let Some(expected) = cmd.expected_version
        && expected != current.version
    {
        return Err(DonationError::VersionMismatch {
            id,
            actual: current.version,
            expected,
        });
    }
    if !current.status.can_become(cmd.to) {
        return Err(DonationError::InvalidTransition {
            from: current.status,
            to: cmd.to,
        });
    }
    let now = crate::domain::now();
    let payment_intent_id = match (&current.payment_intent_id, cmd.payment_intent_id) {
        (Some(have), Some(given)) if *have != given => {
            return Err(DonationError::OtherPaymentIntent {
                id,
                current: have.clone(),
                given,
            });
        }
        (None, Some(given)) => {
            tx.set_donation_payment_intent(id, &given, now).await?;
            Some(given)
        }
        (have, _) => have.clone(),
    };
    if !tx
        .update_donation_status(id, cmd.to, current.version, now)
        .await?
    {
        return Err(DonationError::ChangedConcurrently(id));
    }
    let updated = Donation {
        status: cmd.to,
        version: current.version + 1,
        updated_at: now,
        payment_intent_id,
        ..current.clone()
    };
    tx.insert_status_audit(&StatusAudit {
        donation_id: id,
        from: current.status,
        to: cmd.to,
        reason: cmd.reason,
        actor: cmd.actor.clone(),
        at: now,
    })
    .await?;
    let event = DomainEvent::Donation(DonationEvent::reached(&updated));
    tx.insert_outbox(&outbox_event(event, now)).await?;
    tx.commit().await?;
    tracing::info!(donation_id = %id, from = current.status.as_str(), to = cmd.to.as_str(), actor = %cmd.actor, "donation status changed by an operator");
    Ok(updated)
}

/// The donation-status consumer in the consumer table.
pub const STATUS_CONSUMER: ConsumerSpec = ConsumerSpec {
    role: Role::Donation,
    name: "donation-status",
    topics: &["payment"],
    build: |deps| Arc::new(DonationStatusConsumer::new(deps.store.clone())),
};

/// Keeps donations in step with their payments: records the intent, completes, fails and
/// refunds them, by [`follow`].
pub struct DonationStatusConsumer {
    store: Arc<dyn Store>,
}

impl DonationStatusConsumer {
    /// The consumer over a store.
    pub fn new(store: Arc<dyn Store>) -> DonationStatusConsumer {
        DonationStatusConsumer { store }
    }

    async fn apply(&self, envelope: &EventEnvelope) -> Result<(), StoreError> {
        self.apply_all(&[envelope], false).await
    }

    /// Applies `envelopes` in one transaction; counts the statuses reached once it commits.
    async fn apply_all(
        &self,
        envelopes: &[&EventEnvelope],
        in_batch: bool,
    ) -> Result<(), StoreError> {
        let payments: Vec<_> = envelopes
            .iter()
            .filter_map(|envelope| match envelope.decode() {
                Ok(DomainEvent::Payment(event)) => Some((envelope, event)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(event_id = %envelope.event_id, error = %e, "an event the donation-status consumer cannot read; ignored");
                    None
                }
            })
            .collect();
        let mut tx = self.store.begin().await?;
        let ids: Vec<Uuid> = payments.iter().map(|(e, _)| e.event_id).collect();
        let now = crate::domain::now();
        let mut new = tx.insert_inbox_all(STATUS_CONSUMER.name, &ids, now).await?;
        // Redeliveries were processed already.
        let fresh: Vec<_> = payments
            .into_iter()
            .filter(|(envelope, _)| new.remove(&envelope.event_id))
            .collect();
        // The donations the batch may move, read and locked together (an intent's creation only
        // records the intent on its donation).
        let moved: Vec<Uuid> = fresh
            .iter()
            .filter(|(_, event)| event.kind != PaymentStatus::Initiated)
            .map(|(_, event)| event.snapshot.donation_id)
            .collect();
        let mut donations: HashMap<Uuid, Followed> = tx
            .donations_for_update(&moved)
            .await?
            .into_iter()
            .map(|donation| {
                let read_version = donation.version;
                (
                    donation.id,
                    Followed {
                        read_version,
                        donation,
                    },
                )
            })
            .collect();
        let mut events = Vec::new();
        let mut reached = Vec::new();
        for (envelope, event) in fresh {
            // Each event's part continues the trace that published it.
            let span = part_span(self, envelope, in_batch);
            let followed = follow_payment(tx.as_mut(), &event, &mut donations, &mut events);
            reached.extend(followed.instrument(span).await?);
        }
        // Each donation the batch moved is written once, as its last event left it.
        for followed in donations.values() {
            if followed.donation.version != followed.read_version
                && !tx
                    .update_donation(&followed.donation, followed.read_version)
                    .await?
            {
                return Err(StoreError::Conflict("donation changed concurrently".into()));
            }
        }
        tx.insert_outbox_all(&events).await?;
        tx.commit().await?;
        for status in reached {
            crate::metrics::donation(status);
        }
        Ok(())
    }
}

/// A donation a batch of payment events may move: as read (and locked) at the batch's start,
/// then as each event left it.
struct Followed {
    read_version: i64,
    donation: Donation,
}

/// Applies one payment event to its donation in `donations` (and, for an intent's creation, in
/// `tx`), queueing in `events` the donation event a change publishes; returns the status the
/// donation reached, if it changed.
async fn follow_payment(
    tx: &mut dyn Tx,
    event: &PaymentEvent,
    donations: &mut HashMap<Uuid, Followed>,
    events: &mut Vec<EventEnvelope>,
) -> Result<Option<DonationStatus>, StoreError> {
    let p = &event.snapshot;
    let donation_id = p.donation_id;
    let now = crate::domain::now();
    if event.kind == PaymentStatus::Initiated {
        tx.set_donation_payment_intent(donation_id, &p.payment_intent_id, now)
            .await?;
        // A later event of the batch moves the donation as the row is now.
        if let Some(followed) = donations.get_mut(&donation_id)
            && followed.donation.payment_intent_id.is_none()
        {
            followed.donation.payment_intent_id = Some(p.payment_intent_id.clone());
            followed.donation.updated_at = now;
        }
        return Ok(None);
    }
    let Some(followed) = donations.get_mut(&donation_id) else {
        tracing::warn!(%donation_id, "payment event for an unknown donation; ignored");
        return Ok(None);
    };
    let another_live_payment = event.kind == PaymentStatus::Failed
        && tx
            .live_payment_for_donation(donation_id)
            .await?
            .is_some_and(|live| live.id != p.payment_id);
    let donation = &followed.donation;
    match follow(donation, event, another_live_payment, now) {
        Follow::Stay => Ok(None),
        Follow::Ignore(why) => {
            tracing::warn!(%donation_id, amount_minor = p.amount_minor, expected = donation.amount_minor, "{why}");
            Ok(None)
        }
        // The capture has not reached the donation yet: fail, to be delivered again after it.
        Follow::NotYet => Err(StoreError::Other(
            "refund before completion; retrying".into(),
        )),
        Follow::Change(change, updated) => {
            events.push(outbox_event(
                DomainEvent::Donation(DonationEvent::of(change, &updated)),
                now,
            ));
            tracing::info!(%donation_id, status = updated.status.as_str(), "donation follows its payment");
            let reached = (updated.status != donation.status).then_some(updated.status);
            followed.donation = *updated;
            Ok(reached)
        }
    }
}

#[async_trait]
impl Handler for DonationStatusConsumer {
    fn name(&self) -> &'static str {
        STATUS_CONSUMER.name
    }

    fn topics(&self) -> &'static [&'static str] {
        STATUS_CONSUMER.topics
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        Ok(self.apply(event).await?)
    }

    fn applies_batches(&self) -> bool {
        true
    }

    /// One transaction for the whole batch.
    async fn handle_batch(&self, events: &[&EventEnvelope]) -> Result<(), HandlerError> {
        Ok(self.apply_all(events, true).await?)
    }
}
