//! Campaigns: creating one with a server-chosen id, and the idempotent create-or-update with a
//! client-chosen id.

use uuid::Uuid;

use super::outbox_event;
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::event::{CampaignChange, CampaignEvent, DomainEvent};
use crate::domain::money::{Currency, MAX_GOAL_MAJOR};
use crate::storage::{Store, StoreError, Tx};

/// A campaign as a client describes it, parsed from the wire.
#[derive(Clone, Debug)]
pub struct CampaignDraft {
    /// Its title, already validated.
    pub title: String,
    /// Its goal as written (a decimal number), read in the campaign's currency.
    pub goal_amount: String,
    /// Its currency; `USD` for a new campaign by default, and fixed once it exists.
    pub currency: Option<Currency>,
    /// Its status; `ACTIVE` for a new campaign by default, unchanged on update.
    pub status: Option<CampaignStatus>,
}

/// What [`put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The campaign did not exist and was created.
    Created,
    /// It existed and changed.
    Updated,
    /// It existed and was already so: nothing written, no event.
    Unchanged,
}

/// Why a campaign command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The goal is not a valid amount of the campaign's currency.
    #[error("{0}")]
    InvalidGoal(crate::domain::money::AmountError),
    /// The draft names another currency than the existing campaign's.
    #[error("a campaign's currency cannot change (it is {0})")]
    CurrencyImmutable(Currency),
    /// The campaign disappeared between the insert attempt and the lock.
    #[error("the campaign was deleted concurrently; retry")]
    ChangedConcurrently,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn new_campaign(id: Uuid, draft: &CampaignDraft) -> Result<Campaign, CampaignError> {
    let currency = draft.currency.unwrap_or(Currency::USD);
    let goal_minor = currency
        .parse_amount(&draft.goal_amount, MAX_GOAL_MAJOR)
        .map_err(CampaignError::InvalidGoal)?;
    let now = crate::domain::now();
    Ok(Campaign {
        id,
        title: draft.title.clone(),
        goal_minor,
        currency,
        status: draft.status.unwrap_or(CampaignStatus::Active),
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

async fn announce(tx: &mut dyn Tx, change: CampaignChange, c: &Campaign) -> Result<(), StoreError> {
    let event = DomainEvent::Campaign(CampaignEvent::of(change, c));
    tx.insert_outbox(&outbox_event(event, c.updated_at)).await
}

/// Creates a campaign with a fresh id, in `tx`, with its `campaign.created` event.
pub async fn create(tx: &mut dyn Tx, draft: CampaignDraft) -> Result<Campaign, CampaignError> {
    let campaign = new_campaign(Uuid::new_v4(), &draft)?;
    tx.insert_campaign(&campaign).await?;
    announce(tx, CampaignChange::Created, &campaign).await?;
    Ok(campaign)
}

/// Creates the campaign `id`, or brings it to `draft` (its currency cannot change), and commits.
/// Sending the same draft again writes nothing and publishes nothing.
pub async fn put(
    store: &dyn Store,
    id: Uuid,
    draft: CampaignDraft,
) -> Result<(PutOutcome, Campaign), CampaignError> {
    let mut tx = store.begin().await?;
    let done = put_in(tx.as_mut(), id, draft).await?;
    tx.commit().await?;
    Ok(done)
}

async fn put_in(
    tx: &mut dyn Tx,
    id: Uuid,
    draft: CampaignDraft,
) -> Result<(PutOutcome, Campaign), CampaignError> {
    let fresh = new_campaign(id, &draft)?;
    if tx.insert_campaign(&fresh).await? {
        announce(tx, CampaignChange::Created, &fresh).await?;
        return Ok((PutOutcome::Created, fresh));
    }
    let current = tx
        .campaign_for_update(id)
        .await?
        .ok_or(CampaignError::ChangedConcurrently)?;
    if let Some(currency) = draft.currency
        && currency != current.currency
    {
        return Err(CampaignError::CurrencyImmutable(current.currency));
    }
    let goal_minor = current
        .currency
        .parse_amount(&draft.goal_amount, MAX_GOAL_MAJOR)
        .map_err(CampaignError::InvalidGoal)?;
    let wanted = Campaign {
        title: draft.title,
        goal_minor,
        status: draft.status.unwrap_or(current.status),
        ..current.clone()
    };
    if wanted == current {
        return Ok((PutOutcome::Unchanged, current));
    }
    let updated = Campaign {
        version: current.version + 1,
        updated_at: crate::domain::now(),
        ..wanted
    };
    tx.update_campaign(&updated).await?;
    announce(tx, CampaignChange::Updated, &updated).await?;
    Ok((PutOutcome::Updated, updated))
}
