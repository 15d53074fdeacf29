//! Messages to donors (receipts, failure and refund notices) and their send attempts.
//!
//! [`NotificationTx`] queues one in the transaction of the event that caused it;
//! [`NotificationStore`] is the senders' side (claims, attempts) and the operators' (listing).

/// Every status a notification can have, in life-cycle order.
pub const NOTIFICATION_STATUSES: &[&str] = &["PENDING", "SENT", "DEAD"];

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

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

/// Notifications as senders and operators see them.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Claims up to `limit` notifications due for sending, leased to `sender` until
    /// `lease_until`.
    async fn claim_notifications(
        &self,
        sender: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Notification>>;
    /// Extends to `lease_until` the leases `sender` still holds (claimed and not yet attempted);
    /// answers how many.
    async fn renew_notification_claims(
        &self,
        sender: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Records send attempts, in one transaction.
    async fn notifications_attempted(
        &self,
        attempts: &[(Uuid, SendOutcome)],
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
}

/// Notifications inside a write transaction.
#[async_trait]
pub trait NotificationTx: Send {
    /// Inserts notifications, each unless one exists for its (event, kind), in as few
    /// statements as the database's limit on bound values allows; returns how many it inserted.
    async fn insert_notifications(&mut self, notifications: &[Notification]) -> StoreResult<u64>;
    /// How many notifications to each of `recipients` were queued since `since` (a recipient
    /// with none is left out).
    async fn notifications_to_since(
        &mut self,
        recipients: &[&str],
        since: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashMap<String, i64>>;
}
