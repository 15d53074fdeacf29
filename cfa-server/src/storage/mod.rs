//! Storage behind traits, one implementation per backend.
//!
//! [`Store`] is what services read through and what opens a [`Tx`]; a [`Tx`] is one database
//! transaction through which every write goes, so that a state change, its outbox event and its
//! idempotency record commit together or not at all.
//!
//! # Layout
//! - [`sql`]: the SQL both backends share, as one macro expanded once per backend.
//! - [`sqlite`]: the embedded default (one writer connection, WAL, a pool of readers).
//! - [`postgres`]: the production backend (row locks, advisory locks, `SKIP LOCKED`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::event::EventEnvelope;
use crate::domain::payment::{Payment, PaymentTransition};

#[macro_use]
mod sql;
pub mod postgres;
pub mod sqlite;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out: the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row violated a uniqueness constraint (the constraint's name is given).
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database refused a value (e.g. a NUL character in text on PostgreSQL).
    #[error("invalid value: {0}")]
    InvalidInput(String),
    /// Anything else: a bug or a corrupt row.
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or("unique").to_string())
            }
            // PostgreSQL: character not in repertoire / untranslatable character (NUL in text or
            // JSONB).
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                StoreError::InvalidInput(db.message().to_string())
            }
            _ => StoreError::Other(err.to_string()),
        }
    }
}

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// The saved outcome of a request made with an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    /// The endpoint the key belongs to, e.g. `POST /api/v1/donations`.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// SHA-256 of the canonical request.
    pub fingerprint: String,
    /// The HTTP status that was sent.
    pub status_code: u16,
    /// The exact body that was sent.
    pub body: Vec<u8>,
    /// When it was saved; swept after the retention period.
    pub created_at: DateTime<Utc>,
}

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

/// One outbox row claimed by a relay.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// Sequence number; delivery follows it.
    pub id: i64,
    /// The event.
    pub event: EventEnvelope,
    /// Delivery attempts so far, this one included.
    pub attempts: i32,
}

/// What the outbox holds right now.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxStats {
    /// Rows not yet delivered.
    pub pending: i64,
    /// Creation time of the oldest undelivered event.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Delivered rows still kept.
    pub sent: i64,
    /// Rows set aside after too many failed deliveries.
    pub dead: i64,
}

/// The stored outcome of one webhook delivery, keyed by its deduplication key.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRecord {
    /// `X-Idempotency-Key`, else the event id, else the SHA-256 of the body.
    pub dedup_key: String,
    /// The intent it named, if it could be read.
    pub payment_intent_id: Option<String>,
    /// The event id it carried, if any.
    pub event_id: Option<String>,
    /// `processed`, `ignored`, `rejected`, `not_found` or `malformed`.
    pub outcome: String,
    /// The HTTP status answered.
    pub status_code: u16,
    /// The exact body answered.
    pub body: Vec<u8>,
    /// When it first arrived.
    pub received_at: DateTime<Utc>,
    /// The request body as received (empty for deliveries stored before it was kept).
    pub request: Vec<u8>,
    /// For an operator's replay, the delivery it replayed.
    pub replay_of: Option<String>,
}

/// Counts for the operator's dashboard.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AdminStats {
    /// Campaigns.
    pub campaigns: i64,
    /// Donations by status (`PENDING`, `COMPLETED`, …).
    pub donations: std::collections::BTreeMap<String, i64>,
    /// Webhook deliveries by outcome (`processed`, `ignored`, …).
    pub webhooks: std::collections::BTreeMap<String, i64>,
    /// Notifications by status (`PENDING`, `SENT`, `DEAD`).
    pub notifications: std::collections::BTreeMap<String, i64>,
}

/// A refund of (part of) a payment.
#[derive(Clone, Debug, PartialEq)]
pub struct Refund {
    /// The provider's refund id; a refund is applied once per id.
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: Uuid,
    /// How much.
    pub amount_minor: i64,
    /// `REQUESTED` (asked of the provider), `SUCCEEDED` (its webhook applied) or `FAILED`.
    pub status: String,
    /// When it was asked for (or first seen).
    pub requested_at: DateTime<Utc>,
    /// When it succeeded or failed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The sandbox provider's record of an intent.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxIntent {
    /// The intent id.
    pub payment_intent_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// Currency code.
    pub currency: String,
    /// The provider's status (`INITIATED`, `AUTHORIZED`, `CAPTURED`, `FAILED`, `REFUNDED`).
    pub status: String,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// When the status last changed at the provider.
    pub status_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A webhook the sandbox still has to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxDelivery {
    /// Sequence number.
    pub id: i64,
    /// The intent concerned.
    pub payment_intent_id: String,
    /// The JSON body to send.
    pub body: String,
    /// Attempts so far.
    pub attempts: i32,
    /// W3C `traceparent` of the request that queued it.
    pub traceparent: Option<String>,
}

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

/// A message to a donor.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Its id.
    pub id: Uuid,
    /// The event that caused it; with `kind`, unique.
    pub event_id: Uuid,
    /// `receipt`, `failure` or `refund`.
    pub kind: String,
    /// The donation concerned.
    pub donation_id: Uuid,
    /// The donor's address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body_text: String,
    /// HTML body.
    pub body_html: String,
    /// `PENDING`, `SENT` or `DEAD`.
    pub status: String,
    /// Send attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// W3C `traceparent` of the span that queued it; sending it continues that trace.
    pub traceparent: Option<String>,
}

/// What one send attempt did.
#[derive(Clone, Debug, PartialEq)]
pub enum SendOutcome {
    /// Accepted by the mail server (or written by the sink).
    Sent,
    /// Failed; try again at this time.
    RetryAt(DateTime<Utc>, String),
    /// Failed for the last time.
    Dead(String),
}

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lower-case name for logs and `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Reads, maintenance, and the door to transactions.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Opens a write transaction.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;
    /// Closes every connection.
    async fn close(&self);

    /// One campaign.
    async fn campaign(&self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// Campaigns, newest first.
    async fn campaigns(
        &self,
        status: Option<CampaignStatus>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Campaign>>;
    /// One donation.
    async fn donation(&self, id: Uuid) -> StoreResult<Option<Donation>>;
    /// Donations matching a filter, newest first.
    async fn donation_history(&self, filter: &HistoryFilter) -> StoreResult<Vec<Donation>>;
    /// The audit trail of a donation, oldest first.
    async fn status_audit(&self, donation_id: Uuid) -> StoreResult<Vec<StatusAudit>>;

    /// A saved idempotent response, if the key was used.
    async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Deletes idempotency records created before `before`; returns how many.
    async fn sweep_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Claims up to `limit` undelivered outbox rows whose lease is free, leasing them to
    /// `relay` until `lease_until`. Concurrent relays never claim the same row.
    async fn claim_outbox(
        &self,
        relay: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Marks rows delivered, if `relay` still holds them.
    async fn mark_outbox_sent(
        &self,
        relay: &str,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Gives a row back after a failed delivery, recording why, if `relay` still holds it; with
    /// `dead_at`, sets it aside for good (a dead letter) so it no longer blocks the rows after it.
    async fn release_outbox(
        &self,
        relay: &str,
        id: i64,
        error: &str,
        dead_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()>;
    /// One payment by its id.
    async fn payment(&self, id: Uuid) -> StoreResult<Option<Payment>>;
    /// One payment by its provider intent id.
    async fn payment_by_intent(&self, payment_intent_id: &str) -> StoreResult<Option<Payment>>;
    /// A payment's transitions, oldest first.
    async fn payment_history(&self, payment_id: Uuid) -> StoreResult<Vec<PaymentTransition>>;
    /// A payment's refunds, oldest first.
    async fn refunds(&self, payment_id: Uuid) -> StoreResult<Vec<Refund>>;
    /// Payments still `INITIATED` or `AUTHORIZED` that have neither changed nor been reconciled
    /// since `before`, least recently looked at first.
    async fn stuck_payments(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Payment>>;
    /// Records that reconciliation looked at a payment, so the next pass starts with others.
    async fn mark_reconciled(&self, payment_id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;
    /// The totals read model's row for a campaign.
    async fn campaign_totals(&self, campaign_id: Uuid) -> StoreResult<Option<CampaignTotals>>;
    /// Totals computed from the donations themselves (the source of truth), without goal and
    /// currency (filled from the campaign by the caller).
    async fn realtime_totals(&self, campaign_id: Uuid) -> StoreResult<(i64, i64, i64)>;
    /// Every donation of a campaign (for rebuilding its totals).
    async fn campaign_donations(&self, campaign_id: Uuid) -> StoreResult<Vec<Donation>>;
    /// Every campaign id.
    async fn campaign_ids(&self) -> StoreResult<Vec<Uuid>>;

    /// Claims up to `limit` notifications due for sending, leased until `lease_until`.
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Notification>>;
    /// Records a send attempt.
    async fn notification_attempted(
        &self,
        id: Uuid,
        outcome: &SendOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Notifications, newest first, optionally of one donation and in one status.
    async fn notifications(
        &self,
        donation_id: Option<Uuid>,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Notification>>;

    /// The stored outcome of a webhook delivery.
    async fn webhook_record(&self, dedup_key: &str) -> StoreResult<Option<WebhookRecord>>;
    /// The most recent webhook deliveries, newest first.
    async fn recent_webhooks(&self, limit: i64, offset: i64) -> StoreResult<Vec<WebhookRecord>>;
    /// Counts of campaigns, donations, webhooks and notifications.
    async fn admin_stats(&self) -> StoreResult<AdminStats>;

    /// The sandbox provider's record of an intent.
    async fn sandbox_intent(&self, payment_intent_id: &str) -> StoreResult<Option<SandboxIntent>>;
    /// Sandbox webhooks due for (re)delivery, oldest first.
    async fn sandbox_due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SandboxDelivery>>;
    /// Records a delivery attempt: delivered, rescheduled for `next_attempt_at`, or given up.
    async fn sandbox_delivery_attempted(
        &self,
        id: i64,
        status: Option<u16>,
        outcome: DeliveryOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Outbox rows set aside as dead letters, oldest first, with their last error.
    async fn dead_outbox(&self, limit: i64) -> StoreResult<Vec<(OutboxRow, Option<String>)>>;
    /// Puts a dead outbox row back in line with a fresh attempt count; false if it is not dead.
    async fn revive_outbox(&self, id: i64) -> StoreResult<bool>;
    /// Deletes delivered rows sent before `before`; returns how many.
    async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Counts of the outbox.
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;
}

/// What happened to one sandbox delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DeliveryOutcome {
    /// The platform answered 2xx.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Out of attempts.
    GiveUp,
}

/// One write transaction. Dropping it without [`Tx::commit`] rolls it back.
#[async_trait]
pub trait Tx: Send {
    /// Takes the lock that makes one request the owner of an idempotency key until this
    /// transaction ends. Returns false, without waiting, when another transaction holds it.
    async fn lock_idempotency_key(&mut self, scope: &str, key: &str) -> StoreResult<bool>;
    /// A saved idempotent response, as this transaction sees it.
    async fn idempotency_record(
        &mut self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Saves an idempotent response.
    async fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> StoreResult<()>;

    /// One campaign, share-locked so it cannot be closed until the transaction ends.
    async fn campaign_for_share(&mut self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// One campaign, locked against concurrent change until the transaction ends.
    async fn campaign_for_update(&mut self, id: Uuid) -> StoreResult<Option<Campaign>>;
    /// Inserts a campaign unless its id exists; returns whether it was inserted.
    async fn insert_campaign(&mut self, campaign: &Campaign) -> StoreResult<bool>;
    /// Overwrites a campaign's mutable fields and version.
    async fn update_campaign(&mut self, campaign: &Campaign) -> StoreResult<()>;

    /// Inserts a new donation.
    async fn insert_donation(&mut self, donation: &Donation) -> StoreResult<()>;
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

    /// Inserts a new payment.
    async fn insert_payment(&mut self, payment: &Payment) -> StoreResult<()>;
    /// One payment by id, locked until the transaction ends.
    async fn payment_for_update(&mut self, id: Uuid) -> StoreResult<Option<Payment>>;
    /// One payment by intent id, locked until the transaction ends.
    async fn payment_for_update_by_intent(
        &mut self,
        payment_intent_id: &str,
    ) -> StoreResult<Option<Payment>>;
    /// The payment of a donation that has not failed, if any.
    async fn live_payment_for_donation(
        &mut self,
        donation_id: Uuid,
    ) -> StoreResult<Option<Payment>>;
    /// Writes a payment's status, version, refunded total, last event time and update time.
    async fn update_payment(&mut self, payment: &Payment) -> StoreResult<()>;
    /// Appends to a payment's state history.
    async fn insert_payment_transition(
        &mut self,
        transition: &PaymentTransition,
    ) -> StoreResult<()>;

    /// Claims a webhook deduplication key for this transaction. Returns false if it is taken;
    /// on PostgreSQL a concurrent claim waits for the first transaction to end.
    async fn claim_webhook(&mut self, dedup_key: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Stores the outcome of a claimed webhook.
    async fn complete_webhook(&mut self, record: &WebhookRecord) -> StoreResult<()>;

    /// Inserts a refund unless its id exists; returns whether it was inserted.
    async fn insert_refund(&mut self, refund: &Refund) -> StoreResult<bool>;
    /// One refund, locked until the transaction ends.
    async fn refund_for_update(&mut self, refund_id: &str) -> StoreResult<Option<Refund>>;
    /// Marks a refund `SUCCEEDED` or `FAILED`.
    async fn complete_refund(
        &mut self,
        refund_id: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Sum of a payment's refunds still waiting for the provider.
    async fn requested_refunds_minor(&mut self, payment_id: Uuid) -> StoreResult<i64>;

    /// Records that `consumer` processed `event_id`; false if it already had (a redelivery).
    async fn insert_inbox(
        &mut self,
        consumer: &str,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Creates a campaign's totals row if it has none (a concurrent creator waits, then finds
    /// it), so that it can be locked.
    async fn ensure_totals(&mut self, totals: &CampaignTotals) -> StoreResult<()>;
    /// The totals row of a campaign, locked until the transaction ends.
    async fn totals_for_update(&mut self, campaign_id: Uuid)
    -> StoreResult<Option<CampaignTotals>>;
    /// Writes a campaign's totals row.
    async fn upsert_totals(&mut self, totals: &CampaignTotals) -> StoreResult<()>;
    /// Whether a donation has a recorded contribution (no lock).
    async fn has_contribution(&mut self, donation_id: Uuid) -> StoreResult<bool>;
    /// A donation's contribution, locked until the transaction ends.
    async fn contribution_for_update(
        &mut self,
        donation_id: Uuid,
    ) -> StoreResult<Option<Contribution>>;
    /// Writes a donation's contribution.
    async fn upsert_contribution(&mut self, contribution: &Contribution) -> StoreResult<()>;
    /// Adds `delta` to the number of counted donations of a donor in a campaign; returns the new
    /// number.
    async fn adjust_donor(
        &mut self,
        campaign_id: Uuid,
        donor_email: &str,
        delta: i64,
    ) -> StoreResult<i64>;
    /// Every donation of a campaign, as this transaction sees them.
    async fn campaign_donations(&mut self, campaign_id: Uuid) -> StoreResult<Vec<Donation>>;
    /// Forgets every contribution and donor of a campaign (before a rebuild).
    async fn clear_totals_detail(&mut self, campaign_id: Uuid) -> StoreResult<()>;

    /// Inserts a notification unless one exists for its (event, kind); returns whether it did.
    async fn insert_notification(&mut self, notification: &Notification) -> StoreResult<bool>;

    /// Creates the sandbox provider's record of an intent.
    async fn sandbox_insert_intent(&mut self, intent: &SandboxIntent) -> StoreResult<()>;
    /// The sandbox's record of an intent, locked until the transaction ends.
    async fn sandbox_intent_for_update(
        &mut self,
        payment_intent_id: &str,
    ) -> StoreResult<Option<SandboxIntent>>;
    /// Writes the sandbox's status and refunded total of an intent.
    async fn sandbox_update_intent(&mut self, intent: &SandboxIntent) -> StoreResult<()>;
    /// Queues a sandbox webhook for delivery at `at`, continuing the trace `traceparent` names.
    async fn sandbox_enqueue(
        &mut self,
        payment_intent_id: &str,
        body: &str,
        at: DateTime<Utc>,
        traceparent: Option<&str>,
    ) -> StoreResult<()>;

    /// Writes an event to the outbox.
    async fn insert_outbox(&mut self, event: &EventEnvelope) -> StoreResult<()>;

    /// Marks a point this transaction can return to with [`Tx::rollback_to_savepoint`].
    async fn savepoint(&mut self) -> StoreResult<()>;
    /// Undoes everything since [`Tx::savepoint`], keeping the transaction and its locks.
    async fn rollback_to_savepoint(&mut self) -> StoreResult<()>;
    /// Commits.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
    /// Rolls back now, releasing every lock before returning (dropping the transaction rolls it
    /// back too, but only when its connection is next used).
    async fn rollback(self: Box<Self>) -> StoreResult<()>;
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`), applying pending
/// migrations first when `migrate` is set.
pub async fn connect(
    settings: &crate::config::DatabaseSettings,
    data_dir: &std::path::Path,
    migrate: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    use anyhow::Context as _;
    let url = settings.effective_url(data_dir);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::connect(&url, settings).await?;
        if migrate {
            store
                .migrate()
                .await
                .context("applying PostgreSQL migrations")?;
        }
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::connect(&url, settings).await?;
        if migrate {
            store
                .migrate()
                .await
                .context("applying SQLite migrations")?;
        }
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "database.url: unsupported scheme in {:?}; use sqlite://PATH or postgres://…",
            crate::config::mask_url(&url)
        )
    }
}
