//! The sender: claims due notifications with a short lease, sends them through the configured
//! [`Mailer`], and records each attempt (sent, retried later with back-off, or dead).
//!
//! The lease (`notifications.lease_seconds`, 15 s by default) is renewed while the batch is in
//! flight ([`crate::lease::renewing`]), so a slow SMTP server keeps its messages, while a sender
//! that dies leaves them to another within the lease, not minutes later.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures::{FutureExt as _, StreamExt as _};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Mailer;
use crate::config::NotificationSettings;
use crate::storage::{Notification, SendOutcome, Store, StoreError};

/// Notifications claimed at once, per message sent concurrently.
const CLAIMED_PER_SLOT: usize = 4;

/// What one pass of the sender did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendPass {
    /// Notifications claimed.
    pub claimed: usize,
    /// Of those, sent (the rest were retried later or marked dead).
    pub sent: usize,
}

/// Sends pending notifications.
pub struct Sender {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    settings: NotificationSettings,
    wake: Arc<Notify>,
    /// Names this sender's claims, so it renews only its own.
    id: String,
}

impl Sender {
    /// A sender through `mailer`.
    pub fn new(
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
        settings: NotificationSettings,
        wake: Arc<Notify>,
    ) -> Sender {
        Sender {
            store,
            mailer,
            settings,
            wake,
            id: format!("sender-{}", uuid::Uuid::new_v4()),
        }
    }

    fn message(&self, n: &Notification) -> Result<Message, String> {
        let from: Mailbox = self
            .settings
            .from
            .parse()
            .map_err(|e| format!("notifications.from is not an address: {e}"))?;
        let to: Mailbox = n
            .recipient
            .parse()
            .map_err(|e| format!("bad recipient: {e}"))?;
        Message::builder()
            .from(from)
            .to(to)
            .subject(n.subject.clone())
            .message_id(Some(format!("<{}@careforall>", n.id)))
            .multipart(MultiPart::alternative_plain_html(
                n.body_text.clone(),
                n.body_html.clone(),
            ))
            .map_err(|e| e.to_string())
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_seconds)
    }

    /// Sends the notifications that are due, once. Returns how many were claimed and sent.
    ///
    /// They are claimed for `notifications.lease_seconds`, and the claims still held are renewed
    /// while the batch is in flight.
    pub async fn send_due(&self) -> Result<SendPass, StoreError> {
        let lease = self.lease();
        let term = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(15));
        let now = crate::domain::now();
        let batch = self.batch();
        let due = self
            .store
            .claim_notifications(&self.id, now, now + term, batch)
            .await?;
        let claimed = due.len();
        if claimed == 0 {
            return Ok(SendPass::default());
        }
        let (store, id) = (&self.store, self.id.as_str());
        let renew = move || async move {
            store
                .renew_notification_claims(id, crate::domain::now() + term)
                .await
                .map(drop)
        };
        let sent = crate::lease::renewing(lease, self.send_all(due), renew).await?;
        Ok(SendPass { claimed, sent })
    }

    /// How many notifications one pass claims: a few per message in flight.
    fn batch(&self) -> i64 {
        i64::try_from(self.settings.concurrency.max(1) * CLAIMED_PER_SLOT).unwrap_or(32)
    }

    /// Sends claimed notifications, `notifications.concurrency` at a time, and records the
    /// attempts that ended together in one transaction (at most `concurrency` of them: a sender
    /// that dies before recording re-sends no more than that). Answers how many were sent and
    /// recorded, or the last database error once every claimed message has had its try (an
    /// attempt not recorded lapses with its claim and is retried).
    async fn send_all(&self, due: Vec<Notification>) -> Result<usize, StoreError> {
        let concurrency = self.settings.concurrency.max(1);
        // Boxed, so the stream's type names no closure lifetime (the task must be `Send`).
        let sends: Vec<futures::future::BoxFuture<'_, (uuid::Uuid, SendOutcome)>> =
            due.iter().map(|n| self.send_one(n).boxed()).collect();
        let mut ended = futures::stream::iter(sends)
            .buffer_unordered(concurrency)
            .ready_chunks(concurrency);
        let mut sent = 0;
        let mut failed = None;
        while let Some(attempts) = ended.next().await {
            let at = crate::domain::now();
            match self.store.notifications_attempted(&attempts, at).await {
                Ok(()) => {
                    sent += attempts
                        .iter()
                        .filter(|(_, outcome)| matches!(outcome, SendOutcome::Sent))
                        .count();
                }
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(sent), Err)
    }

    /// Sends one notification; answers what the attempt is to be recorded as.
    async fn send_one(&self, n: &Notification) -> (uuid::Uuid, SendOutcome) {
        let span = tracing::info_span!(
            "notification.send",
            otel.name = %format_args!("send {} e-mail", n.kind),
            otel.kind = "client",
            notification_id = %n.id,
            kind = %n.kind,
            mailer = self.mailer.name(),
        );
        crate::telemetry::set_parent(&span, n.traceparent.as_deref());
        let result = async {
            match self.message(n) {
                Ok(message) => self.mailer.send(n, message).await,
                Err(e) => Err(e),
            }
        }
        .instrument(span.clone())
        .await;
        let attempts = u32::try_from(n.attempts).unwrap_or(0) + 1;
        let outcome = span.in_scope(|| match result {
            Ok(()) => {
                crate::metrics::notification(&n.kind, "sent");
                tracing::info!(notification_id = %n.id, kind = %n.kind, mailer = self.mailer.name(), "notification sent");
                SendOutcome::Sent
            }
            Err(error) if attempts >= self.settings.max_attempts => {
                tracing::error!(notification_id = %n.id, kind = %n.kind, attempts, %error, "notification dead after its last attempt");
                crate::metrics::notification(&n.kind, "dead");
                SendOutcome::Dead(error)
            }
            Err(error) => {
                tracing::warn!(notification_id = %n.id, kind = %n.kind, attempts, %error, "sending a notification failed; it will be retried");
                crate::metrics::notification(&n.kind, "retry");
                SendOutcome::RetryAt(crate::domain::now() + self.backoff(attempts), error)
            }
        });
        (n.id, outcome)
    }

    /// Exponential back-off with jitter: base × 2^(attempt-1), ±50 %, at most an hour.
    fn backoff(&self, attempt: u32) -> TimeDelta {
        let base = i64::try_from(self.settings.retry_base_ms).unwrap_or(1000);
        let ms = base
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(3_600_000);
        TimeDelta::milliseconds(rand::rng().random_range(ms / 2..=ms.max(1)))
    }

    /// Runs until cancelled. After a full batch it goes again at once: a backlog (after an
    /// outage, or a burst of captures) drains as fast as the mailer takes it, not a batch per poll.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let full = usize::try_from(self.batch()).unwrap_or(usize::MAX);
        loop {
            match self.send_due().await {
                Ok(pass) if pass.claimed >= full && !cancel.is_cancelled() => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "notification sender cannot reach the database");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}
