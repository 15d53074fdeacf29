//! Live campaign totals: a read model kept exact by an idempotent consumer of donation events,
//! a cache in front of it, the computation from the donations themselves, and the refresh that
//! reconciles the two.
//!
//! Each donation's contribution to its campaign (amount net of refunds, counted or not, donor) is
//! stored with the donation version it reflects. An event applies the difference between the new
//! contribution and the stored one, in the transaction of its inbox row; a redelivered or older
//! event changes nothing. So totals never drift by a cent, whatever the delivery order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::ConsumerSpec;
use super::live::LiveTotals;
pub use super::totals_cache::{Entry, LocalCache, TotalsCache, TwoLevelCache};
use crate::config::Role;
use crate::domain::donation::DonationStatus;
use crate::domain::event::{CampaignEvent, DomainEvent, DonationEvent, EventEnvelope};
use crate::messaging::consumer::{Handler, HandlerError, part_span};
use crate::storage::{CampaignTotals, Contribution, Store, StoreError, Tx};
use tracing::Instrument as _;

/// Where a campaign's current totals came from.
#[derive(Clone)]
pub enum Source {
    /// The cache: this entry (how old it is, and its rendering).
    Cache(Arc<Entry>),
    /// The read model (now cached).
    ReadModel,
}

/// A campaign's current totals and where they came from.
#[derive(Clone)]
pub struct Current {
    /// The figures.
    pub totals: CampaignTotals,
    /// Cache or read model.
    pub source: Source,
}

/// A campaign's totals as the public sees them: from the cache, else from the read model (then
/// cached), else zero for a campaign no event has reached yet. `None` for an unknown campaign.
pub async fn current(
    store: &dyn Store,
    cache: &dyn TotalsCache,
    campaign_id: Uuid,
) -> Result<Option<Current>, StoreError> {
    if let Some(entry) = cache.get(campaign_id).await {
        return Ok(Some(Current {
            totals: entry.totals.clone(),
            source: Source::Cache(entry),
        }));
    }
    let generation = cache.generation();
    let totals = match store.campaign_totals(campaign_id).await? {
        Some(totals) => totals,
        None => {
            // No event has reached the read model yet: a campaign with no donations.
            let Some(campaign) = store.campaign(campaign_id).await? else {
                return Ok(None);
            };
            CampaignTotals::empty(&campaign)
        }
    };
    cache.put(totals.clone(), generation).await;
    Ok(Some(Current {
        totals,
        source: Source::ReadModel,
    }))
}

/// The contribution a donation in this state makes.
fn contribution_of(status: DonationStatus, amount_minor: i64, refunded_minor: i64) -> (i64, bool) {
    match status {
        DonationStatus::Completed => ((amount_minor - refunded_minor).max(0), true),
        DonationStatus::Pending | DonationStatus::Failed | DonationStatus::Refunded => (0, false),
    }
}

/// Applies a new contribution of one donation: the difference to its recorded contribution
/// (in `recorded`, read and locked for the batch) goes into the campaign's totals, and the new
/// one is recorded there. Returns false if the recorded contribution is already as new.
async fn apply_contribution(
    tx: &mut dyn Tx,
    new: Contribution,
    rows: &mut Rows,
    recorded: &mut HashMap<Uuid, Contribution>,
) -> Result<bool, StoreError> {
    let old = recorded.get(&new.donation_id);
    if old.is_some_and(|o| o.version >= new.version) {
        return Ok(false);
    }
    let (old_minor, old_counted) = old.map_or((0, false), |o| (o.counted_minor, o.counted));
    let mut unique_delta = 0;
    if new.counted != old_counted {
        let delta = if new.counted { 1 } else { -1 };
        let now_counted = tx
            .adjust_donor(new.campaign_id, &new.donor_email, delta)
            .await?;
        unique_delta = match (delta, now_counted) {
            (1, 1) => 1,
            (-1, 0) => -1,
            _ => 0,
        };
    }
    let totals = rows.locked(tx, new.campaign_id).await?;
    totals.total_minor += new.counted_minor - old_minor;
    totals.completed_count += i64::from(new.counted) - i64::from(old_counted);
    totals.unique_donors += unique_delta;
    totals.last_updated = crate::domain::now();
    recorded.insert(new.donation_id, new);
    Ok(true)
}

/// The totals rows a batch of events changes: each read and locked the first time one of the
/// events needs it, changed in memory by every event after, and written once, when the batch is
/// done ([`Rows::write`]). A batch of 200 captures to one campaign locks and writes its row once.
#[derive(Default)]
struct Rows(Vec<CampaignTotals>);

impl Rows {
    async fn locked(
        &mut self,
        tx: &mut dyn Tx,
        campaign_id: Uuid,
    ) -> Result<&mut CampaignTotals, StoreError> {
        let i = match self.0.iter().position(|t| t.campaign_id == campaign_id) {
            Some(i) => i,
            None => {
                self.0.push(locked_totals(tx, campaign_id).await?);
                self.0.len() - 1
            }
        };
        Ok(&mut self.0[i])
    }

    /// Writes the rows of the campaigns in `changed`.
    async fn write(&self, tx: &mut dyn Tx, changed: &[Uuid]) -> Result<(), StoreError> {
        for totals in self.0.iter().filter(|t| changed.contains(&t.campaign_id)) {
            tx.upsert_totals(totals).await?;
        }
        Ok(())
    }
}

/// The campaign's totals row, created if needed, locked until the transaction ends.
async fn locked_totals(tx: &mut dyn Tx, campaign_id: Uuid) -> Result<CampaignTotals, StoreError> {
    if let Some(totals) = tx.totals_for_update(campaign_id).await? {
        return Ok(totals);
    }
    let empty = empty_totals(tx, campaign_id).await?;
    tx.ensure_totals(&empty).await?;
    Ok(tx.totals_for_update(campaign_id).await?.unwrap_or(empty))
}

async fn empty_totals(tx: &mut dyn Tx, campaign_id: Uuid) -> Result<CampaignTotals, StoreError> {
    let campaign = tx.campaign_for_share(campaign_id).await?;
    Ok(CampaignTotals {
        campaign_id,
        total_minor: 0,
        completed_count: 0,
        unique_donors: 0,
        goal_minor: campaign.as_ref().map_or(0, |c| c.goal_minor),
        currency: campaign
            .as_ref()
            .map_or_else(|| "USD".into(), |c| c.currency.code().to_string()),
        last_updated: crate::domain::now(),
        campaign_version: campaign.map_or(0, |c| c.version),
    })
}

/// Keeps the read model in step with donation and campaign events.
pub struct TotalsConsumer {
    store: Arc<dyn Store>,
    cache: Arc<dyn TotalsCache>,
    live: Arc<LiveTotals>,
}

impl TotalsConsumer {
    /// The consumer over a store, invalidating `cache` and telling `live`'s viewers.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<dyn TotalsCache>,
        live: Arc<LiveTotals>,
    ) -> TotalsConsumer {
        TotalsConsumer { store, cache, live }
    }

    async fn apply(&self, envelope: &EventEnvelope) -> Result<(), StoreError> {
        self.apply_all(&[envelope], false).await
    }

    /// Applies `envelopes` in one transaction, then invalidates the campaigns they changed.
    async fn apply_all(
        &self,
        envelopes: &[&EventEnvelope],
        in_batch: bool,
    ) -> Result<(), StoreError> {
        // Each event's part continues the trace that published it.
        let parts: Vec<_> = envelopes
            .iter()
            .filter_map(|envelope| {
                let span = part_span(self, envelope, in_batch);
                let event = span.in_scope(|| counted_event(envelope))?;
                Some((envelope.event_id, event, span))
            })
            .collect();
        let mut tx = self.store.begin().await?;
        let ids: Vec<Uuid> = parts.iter().map(|(id, _, _)| *id).collect();
        let now = crate::domain::now();
        let mut new = tx.insert_inbox_all(CONSUMER.name, &ids, now).await?;
        // Redeliveries were processed already.
        let fresh = parts
            .into_iter()
            .filter(|(event_id, _, _)| new.remove(event_id))
            .map(|(_, event, span)| (event, span))
            .collect();
        let changed = apply_batch(tx.as_mut(), fresh).await?;
        tx.commit().await?;
        for campaign in changed {
            self.cache.invalidate(campaign).await;
            self.live
                .changed(self.store.as_ref(), self.cache.as_ref(), campaign)
                .await;
        }
        Ok(())
    }
}

/// The event in `envelope` if it is one totals count (a campaign's or a donation's).
fn counted_event(envelope: &EventEnvelope) -> Option<Counted> {
    match envelope.decode() {
        Ok(DomainEvent::Payment(_)) => None,
        Ok(DomainEvent::Campaign(event)) => Some(Counted::Campaign(event)),
        Ok(DomainEvent::Donation(event)) => Some(Counted::Donation(contribution(&event))),
        Err(e) => {
            tracing::warn!(event_id = %envelope.event_id, error = %e, "an event totals cannot read; ignored");
            None
        }
    }
}

/// What an event totals count says.
enum Counted {
    /// A campaign's goal and currency.
    Campaign(CampaignEvent),
    /// A donation's contribution as its event says it is now.
    Donation(Contribution),
}

impl Counted {
    fn campaign_id(&self) -> Uuid {
        match self {
            Counted::Campaign(e) => e.snapshot.campaign_id,
            Counted::Donation(c) => c.campaign_id,
        }
    }
}

/// Applies `events` (new to the inbox), in their order, in `tx`, in a few statements whatever
/// their number: the recorded contributions are read together, the campaigns' totals rows are
/// locked once each, every event is applied in memory (only a change in a donor's count of
/// counted donations is a statement of its own), and the contributions and totals rows changed
/// are written together at the end. Returns the campaigns whose totals changed.
async fn apply_batch(
    tx: &mut dyn Tx,
    events: Vec<(Counted, tracing::Span)>,
) -> Result<Vec<Uuid>, StoreError> {
    let donation_ids = |events: &[(Counted, tracing::Span)], which: fn(&Contribution) -> bool| {
        events
            .iter()
            .filter_map(|(event, _)| match event {
                Counted::Donation(c) if which(c) => Some(c.donation_id),
                _ => None,
            })
            .collect::<Vec<Uuid>>()
    };
    // A donation's creation (version 1, not counting yet) changes nothing unless a later event
    // of it arrived first: no lock, no write, and creations are half of all events. Any later
    // event has a higher version and is recorded, so a late refund can still hide an even
    // later-arriving completion.
    let creation = |c: &Contribution| !c.counted && c.version == 1;
    let recorded: HashSet<Uuid> = tx
        .contributions(&donation_ids(&events, creation))
        .await?
        .into_iter()
        .map(|c| c.donation_id)
        .collect();
    let events: Vec<_> = events
        .into_iter()
        .filter(|(event, _)| match event {
            Counted::Donation(c) => !creation(c) || recorded.contains(&c.donation_id),
            Counted::Campaign(_) => true,
        })
        .collect();
    // Lock order, everywhere: the campaigns' totals rows first (here in the order of their ids),
    // then contributions. It serialises a campaign's updates (and the refresh) even when rows
    // do not exist yet.
    let mut campaigns: Vec<Uuid> = events.iter().map(|(e, _)| e.campaign_id()).collect();
    campaigns.sort_unstable();
    campaigns.dedup();
    let mut rows = Rows::default();
    for campaign_id in &campaigns {
        rows.locked(tx, *campaign_id).await?;
    }
    let mut recorded: HashMap<Uuid, Contribution> = tx
        .contributions_for_update(&donation_ids(&events, |_| true))
        .await?
        .into_iter()
        .map(|c| (c.donation_id, c))
        .collect();
    let mut changed = Vec::new();
    let mut written = HashSet::new();
    for (event, span) in events {
        let campaign_id = event.campaign_id();
        let applied = async {
            match event {
                Counted::Campaign(e) => apply_campaign(tx, &e, &mut rows).await,
                Counted::Donation(c) => {
                    let donation_id = c.donation_id;
                    let applied = apply_contribution(tx, c, &mut rows, &mut recorded).await?;
                    if applied {
                        written.insert(donation_id);
                    }
                    Ok(applied)
                }
            }
        };
        if applied.instrument(span).await? && !changed.contains(&campaign_id) {
            changed.push(campaign_id);
        }
    }
    let contributions: Vec<Contribution> = written
        .iter()
        .filter_map(|id| recorded.remove(id))
        .collect();
    tx.upsert_contributions(&contributions).await?;
    rows.write(tx, &changed).await?;
    Ok(changed)
}

/// A campaign's goal and currency, unless an older event (a late redelivery) would bring back an
/// old goal.
async fn apply_campaign(
    tx: &mut dyn Tx,
    event: &CampaignEvent,
    rows: &mut Rows,
) -> Result<bool, StoreError> {
    let totals = rows.locked(tx, event.snapshot.campaign_id).await?;
    if event.version > totals.campaign_version {
        totals.campaign_version = event.version;
        totals.goal_minor = event.snapshot.goal_minor;
        totals.currency = event.snapshot.currency.code().to_string();
    }
    totals.last_updated = crate::domain::now();
    Ok(true)
}

/// A donation's contribution as its event says it is now.
fn contribution(event: &DonationEvent) -> Contribution {
    let d = &event.snapshot;
    let (counted_minor, counted) = contribution_of(d.status, d.amount_minor, d.refunded_minor);
    Contribution {
        donation_id: d.donation_id,
        campaign_id: d.campaign_id,
        donor_email: d.donor_email.clone(),
        version: d.version,
        counted_minor,
        counted,
    }
}

/// The totals consumer in the consumer table.
pub const CONSUMER: ConsumerSpec = ConsumerSpec {
    role: Role::Totals,
    name: "totals",
    topics: &["donation", "campaign"],
    build: |deps| {
        Arc::new(TotalsConsumer::new(
            deps.store.clone(),
            deps.totals_cache.clone(),
            deps.live.clone(),
        ))
    },
};

#[async_trait]
impl Handler for TotalsConsumer {
    fn name(&self) -> &'static str {
        CONSUMER.name
    }

    fn topics(&self) -> &'static [&'static str] {
        CONSUMER.topics
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        Ok(self.apply(event).await?)
    }

    fn applies_batches(&self) -> bool {
        true
    }

    /// One transaction for the whole batch: each campaign's totals row is locked once, one commit.
    async fn handle_batch(&self, events: &[&EventEnvelope]) -> Result<(), HandlerError> {
        Ok(self.apply_all(events, true).await?)
    }
}

/// The figures of one campaign, before and after a refresh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Net total, minor units.
    pub total_amount_minor: i64,
    /// Completed donations.
    pub total_donations: i64,
    /// Distinct donors.
    pub unique_donors: i64,
}

/// What a refresh found and corrected for one campaign.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Drift {
    /// The campaign.
    pub campaign_id: Uuid,
    /// The read model before (absent if it had no row).
    pub before: Option<Figures>,
    /// The figures computed from the donations, now in the read model.
    pub after: Figures,
    /// Whether they differed.
    pub corrected: bool,
}

fn figures(t: &CampaignTotals) -> Figures {
    Figures {
        total_amount_minor: t.total_minor,
        total_donations: t.completed_count,
        unique_donors: t.unique_donors,
    }
}

/// Rebuilds the read model of one campaign (or all) from the donations, and reports the drift.
pub async fn refresh(
    store: &dyn Store,
    cache: &dyn TotalsCache,
    only: Option<Uuid>,
) -> Result<Vec<Drift>, StoreError> {
    let ids = match only {
        Some(id) => vec![id],
        None => store.campaign_ids().await?,
    };
    let mut report = Vec::with_capacity(ids.len());
    for campaign_id in ids {
        let mut tx = store.begin().await?;
        // Lock the totals row first, then read the donations in the same transaction: an event
        // applied concurrently either waits for the rebuild or is already in what it reads.
        let before = tx.totals_for_update(campaign_id).await?;
        if before.is_none() {
            locked_totals(tx.as_mut(), campaign_id).await?;
        }
        let donations = tx.campaign_donations(campaign_id).await?;
        let mut totals = empty_totals(tx.as_mut(), campaign_id).await?;
        tx.clear_totals_detail(campaign_id).await?;
        let mut contributions = Vec::with_capacity(donations.len());
        for d in &donations {
            let (counted_minor, counted) =
                contribution_of(d.status, d.amount_minor, d.refunded_minor);
            if counted {
                totals.total_minor += counted_minor;
                totals.completed_count += 1;
                if tx
                    .adjust_donor(campaign_id, d.donor_email.as_str(), 1)
                    .await?
                    == 1
                {
                    totals.unique_donors += 1;
                }
            }
            contributions.push(Contribution {
                donation_id: d.id,
                campaign_id,
                donor_email: d.donor_email.as_str().to_string(),
                version: d.version,
                counted_minor,
                counted,
            });
        }
        tx.upsert_contributions(&contributions).await?;
        tx.upsert_totals(&totals).await?;
        tx.commit().await?;
        cache.invalidate(campaign_id).await;
        let after = figures(&totals);
        let corrected = before.as_ref().map(figures) != Some(after.clone());
        if corrected {
            tracing::warn!(%campaign_id, ?before, ?after, "totals refresh corrected drift");
        }
        report.push(Drift {
            campaign_id,
            before: before.as_ref().map(figures),
            after,
            corrected,
        });
    }
    Ok(report)
}
