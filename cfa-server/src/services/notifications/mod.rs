//! Donor notifications: receipts, failure notices and refund notices.
//!
//! A consumer turns donation and payment events into notification rows — exactly one per
//! (event, kind), written in the transaction of its inbox row — and a sender worker delivers them
//! through a [`Mailer`]: a file sink (one `.eml` per message under `<data_dir>/mail`, the default)
//! or SMTP through lettre. Failed sends are retried with exponential back-off and jitter up to
//! `notifications.max_attempts`, then marked `DEAD` and kept. Every receipt carries the donor's
//! history link: a signed, expiring token that opens the donor's history page
//! (`/history?token=…`); the same token opens `GET /api/v1/donations/history?token=…` without an
//! API key.

mod sender;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Sha256;
use tokio::sync::Notify;
use tracing::Instrument as _;
use uuid::Uuid;

pub use self::sender::{SendPass, Sender};
use super::ConsumerSpec;
use crate::config::{NotificationSettings, Role, Secret, SmtpTls};
use crate::domain::donation::Donation;
use crate::domain::event::{DomainEvent, DonationChange, EventEnvelope};
use crate::domain::payment::PaymentStatus;
use crate::messaging::consumer::{Handler, HandlerError, part_span};
use crate::storage::{Notification, Store, StoreError, Tx};

/// Something that delivers e-mail.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Sends one message; an error is retried later.
    async fn send(&self, notification: &Notification, message: Message) -> Result<(), String>;
}

/// Writes each message as an `.eml` file.
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// A sink writing into `dir` (created if needed).
    pub fn new(dir: PathBuf) -> FileMailer {
        FileMailer { dir }
    }
}

#[async_trait]
impl Mailer for FileMailer {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, notification: &Notification, message: Message) -> Result<(), String> {
        let dir = self.dir.clone();
        let path = dir.join(format!("{}-{}.eml", notification.kind, notification.id));
        let bytes = message.formatted();
        tokio::task::spawn_blocking(move || {
            crate::files::private_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            crate::files::write_private(&path, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
        .await
        .map_err(|e| format!("writing the message failed: {e}"))?
    }
}

/// Sends through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    /// A transport from the `[notifications]` settings.
    pub fn new(settings: &NotificationSettings) -> anyhow::Result<SmtpMailer> {
        let host = settings.smtp_host.trim();
        if host.is_empty() {
            anyhow::bail!(
                "notifications.smtp_host must be set when notifications.sender = \"smtp\""
            );
        }
        let mut builder = match settings.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        }
        .port(settings.smtp_port)
        .timeout(Some(Duration::from_secs(10)));
        if !settings.smtp_username.is_empty() {
            let password = settings.smtp_password.as_ref().map_or("", Secret::expose);
            builder = builder.credentials(Credentials::new(
                settings.smtp_username.clone(),
                password.to_string(),
            ));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, _: &Notification, message: Message) -> Result<(), String> {
        self.transport
            .send(message)
            .await
            .map(|_| ())
            // The server's reply may quote the recipient; it is logged and stored.
            .map_err(|e| crate::domain::email::mask_addresses_in(&e.to_string()))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks the donor history tokens.
#[derive(Clone)]
pub struct HistoryLinks {
    secret: Secret,
    ttl: TimeDelta,
    base_url: String,
}

impl HistoryLinks {
    /// Links signed with `secret`, valid for `ttl`, pointing at `base_url`.
    pub fn new(secret: Secret, ttl: TimeDelta, base_url: String) -> HistoryLinks {
        HistoryLinks {
            secret,
            ttl,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"donor-history\x1f");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for one donor address.
    pub fn token(&self, email: &str) -> String {
        let expires = (Utc::now() + self.ttl).timestamp();
        let payload = URL_SAFE_NO_PAD.encode(format!("{expires}:{email}"));
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The full link for a donor: their history page.
    pub fn link(&self, email: &str) -> String {
        format!("{}/history?token={}", self.base_url, self.token(email))
    }

    /// The donor address a token was made for, if it is genuine and not expired.
    pub fn verify(&self, token: &str) -> Result<String, &'static str> {
        let (payload, signature) = token.split_once('.').ok_or("malformed token")?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "malformed token")?;
        self.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| "the token is not genuine")?;
        let decoded = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| "malformed token")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "malformed token")?;
        let (expires, email) = decoded.split_once(':').ok_or("malformed token")?;
        let expires: i64 = expires.parse().map_err(|_| "malformed token")?;
        if Utc::now().timestamp() > expires {
            return Err("the link has expired; a newer receipt carries a fresh one");
        }
        Ok(email.to_string())
    }
}

/// Escapes text for HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The notifications consumer in the consumer table.
pub const CONSUMER: ConsumerSpec = ConsumerSpec {
    role: Role::Notification,
    name: "notifications",
    topics: &["donation", "payment"],
    build: |deps| {
        let consumer = NotificationConsumer::new(
            deps.store.clone(),
            deps.history_links.clone(),
            deps.mail_wake.clone(),
        );
        Arc::new(consumer.with_policy(deps.notice_policy))
    },
};

/// A notice an event calls for.
struct Wanted {
    /// `receipt`, `failure` or `refund`.
    kind: &'static str,
    /// The donation it is about.
    donation_id: Uuid,
    /// For a refund, the amount refunded so far.
    refunded_minor: i64,
    /// For a failure, the payment that failed.
    payment_id: Option<Uuid>,
}

/// The notice an event calls for, if any.
fn notice_of(envelope: &EventEnvelope) -> Option<Wanted> {
    let wanted = |kind, donation_id, refunded_minor, payment_id| Wanted {
        kind,
        donation_id,
        refunded_minor,
        payment_id,
    };
    match envelope.decode().ok()? {
        DomainEvent::Donation(e) => {
            let d = e.snapshot;
            match e.kind {
                DonationChange::Completed => Some(wanted("receipt", d.donation_id, 0, None)),
                DonationChange::Refunded | DonationChange::PartiallyRefunded => {
                    Some(wanted("refund", d.donation_id, d.refunded_minor, None))
                }
                _ => None,
            }
        }
        DomainEvent::Payment(e) if e.kind == PaymentStatus::Failed => {
            let p = e.snapshot;
            Some(wanted("failure", p.donation_id, 0, Some(p.payment_id)))
        }
        _ => None,
    }
}

/// Who may be written to, and how often.
#[derive(Clone, Copy, Debug)]
pub struct NoticePolicy {
    /// Most messages one address gets in an hour.
    pub max_per_recipient_per_hour: u32,
    /// Whether a payment declined in the sandbox gets a failure notice. Nobody was charged and
    /// the sandbox cannot vouch that the address belongs to the donor, so only where mail stays
    /// on this machine (the file sink of development).
    pub sandbox_failures: bool,
}

impl Default for NoticePolicy {
    fn default() -> Self {
        NoticePolicy {
            max_per_recipient_per_hour: 20,
            sandbox_failures: true,
        }
    }
}

/// A notice's subject and bodies.
struct Notice {
    subject: String,
    text: String,
    html: String,
}

impl Notice {
    /// The `kind` notice about `donation` to `title`; `link` opens the donor's history.
    fn render(
        kind: &str,
        donation: &Donation,
        title: &str,
        refunded_minor: i64,
        link: &str,
    ) -> Notice {
        let currency = donation.currency;
        let amount = currency.display(donation.amount_minor);
        let donation_id = donation.id;
        let name = donation.donor_name.as_deref().unwrap_or("friend");
        let (subject, lead) = match kind {
            "receipt" => (
                format!("Thank you for your gift of {amount} to {title}"),
                format!(
                    "We received your donation of {amount} to {title}. This e-mail is your receipt."
                ),
            ),
            "failure" => (
                format!("Your donation of {amount} to {title} did not go through"),
                format!(
                    "Your payment of {amount} to {title} was declined. No money was taken; you can try again at any time."
                ),
            ),
            _ => {
                let refunded = currency.display(refunded_minor);
                (
                    format!("Refund of {refunded} for your donation to {title}"),
                    format!(
                        "We refunded {refunded} of your donation of {amount} to {title}. It may take a few days to reach your account."
                    ),
                )
            }
        };
        let text = format!(
            "Dear {name},\n\n{lead}\n\nDonation: {donation_id}\nAmount: {amount}\nCampaign: {title}\n\n\
             Everything you have given, at any time, without an account:\n{link}\n\nCareForAll\n"
        );
        let html = format!(
            "<!doctype html><html><body><p>Dear {},</p><p>{}</p><table>\
             <tr><th align=\"left\">Donation</th><td>{donation_id}</td></tr>\
             <tr><th align=\"left\">Amount</th><td>{}</td></tr>\
             <tr><th align=\"left\">Campaign</th><td>{}</td></tr></table>\
             <p><a href=\"{}\">See everything you have given</a> (no account needed).</p>\
             <p>CareForAll</p></body></html>",
            html(name),
            html(&lead),
            html(&amount),
            html(title),
            html(link)
        );
        Notice {
            subject,
            text,
            html,
        }
    }
}

/// Turns events into notifications.
pub struct NotificationConsumer {
    store: Arc<dyn Store>,
    links: HistoryLinks,
    wake: Arc<Notify>,
    policy: NoticePolicy,
}

impl NotificationConsumer {
    /// The consumer; `wake` nudges the sender after a commit.
    pub fn new(
        store: Arc<dyn Store>,
        links: HistoryLinks,
        wake: Arc<Notify>,
    ) -> NotificationConsumer {
        NotificationConsumer {
            store,
            links,
            wake,
            policy: NoticePolicy::default(),
        }
    }

    /// The consumer under `policy` instead of the default one.
    pub fn with_policy(self, policy: NoticePolicy) -> NotificationConsumer {
        NotificationConsumer { policy, ..self }
    }

    /// The notification `envelope` calls for, written but not queued yet: `None` if it calls
    /// for none. Reads only; `donations` holds the batch's donations, read together, and
    /// `titles` the campaigns' titles read for earlier events of the batch (a burst is mostly
    /// to a few campaigns).
    async fn notice(
        &self,
        envelope: &EventEnvelope,
        wanted: Wanted,
        donations: &HashMap<Uuid, Donation>,
        titles: &mut HashMap<Uuid, String>,
    ) -> Result<Option<Notification>, StoreError> {
        if let Some(payment_id) = wanted.payment_id
            && !self.policy.sandbox_failures
            && let Some(payment) = self.store.payment(payment_id).await?
            && payment.gateway == "sandbox"
        {
            tracing::info!(%payment_id, "no failure notice for a payment declined in the sandbox");
            return Ok(None);
        }
        let donation_id = wanted.donation_id;
        let Some(donation) = donations.get(&donation_id) else {
            tracing::warn!(%donation_id, "notification for an unknown donation; skipped");
            return Ok(None);
        };
        let title = match titles.get(&donation.campaign_id) {
            Some(title) => title.clone(),
            None => {
                let title = self
                    .store
                    .campaign(donation.campaign_id)
                    .await?
                    .map_or_else(|| "a CareForAll campaign".to_string(), |c| c.title);
                titles.insert(donation.campaign_id, title.clone());
                title
            }
        };
        let link = self.links.link(donation.donor_email.as_str());
        let message = Notice::render(wanted.kind, donation, &title, wanted.refunded_minor, &link);
        let now = crate::domain::now();
        Ok(Some(Notification {
            id: Uuid::new_v4(),
            event_id: envelope.event_id,
            kind: wanted.kind.to_string(),
            donation_id,
            recipient: donation.donor_email.as_str().to_string(),
            subject: message.subject,
            body_text: message.text,
            body_html: message.html,
            status: "PENDING".into(),
            attempts: 0,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
            sent_at: None,
            traceparent: crate::telemetry::current_traceparent(),
        }))
    }

    /// The notifications `envelopes` call for, reading their donations in one statement.
    async fn notices(
        &self,
        envelopes: &[&EventEnvelope],
        in_batch: bool,
    ) -> Result<Vec<Notification>, StoreError> {
        let wanted: Vec<_> = envelopes
            .iter()
            .filter_map(|envelope| Some((*envelope, notice_of(envelope)?)))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = wanted.iter().map(|(_, w)| w.donation_id).collect();
        let donations: HashMap<Uuid, Donation> = self
            .store
            .donations(&ids)
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let mut notices = Vec::with_capacity(wanted.len());
        let mut titles = HashMap::new();
        for (envelope, wanted) in wanted {
            let span = part_span(self, envelope, in_batch);
            let notice = self.notice(envelope, wanted, &donations, &mut titles);
            if let Some(notice) = notice.instrument(span).await? {
                notices.push(notice);
            }
        }
        Ok(notices)
    }

    /// Writes the notifications `envelopes` call for, with their events' inbox rows, in one
    /// transaction of a few statements whatever the batch's size: the consumer takes one turn
    /// at the database per batch, not one per event (on SQLite, a turn is a place in the single
    /// writer's queue, behind the API's requests; on PostgreSQL, every statement is a round
    /// trip).
    async fn apply_all(
        &self,
        envelopes: &[&EventEnvelope],
        in_batch: bool,
    ) -> Result<(), StoreError> {
        let notices = self.notices(envelopes, in_batch).await?;
        if notices.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        let ids: Vec<Uuid> = notices.iter().map(|n| n.event_id).collect();
        let now = crate::domain::now();
        let mut new = tx.insert_inbox_all(CONSUMER.name, &ids, now).await?;
        // Redeliveries were processed already.
        let fresh: Vec<Notification> = notices
            .into_iter()
            .filter(|n| new.remove(&n.event_id))
            .collect();
        let (queued, suppressed) = self.within_limit(tx.as_mut(), fresh).await?;
        tx.insert_notifications(&queued).await?;
        tx.commit().await?;
        for notification in suppressed {
            crate::metrics::notification(&notification.kind, "suppressed");
            tracing::warn!(kind = %notification.kind, donation_id = %notification.donation_id, "a notice over the recipient's hourly limit was not sent");
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Splits `notices` into those to queue and those over their recipient's hourly limit,
    /// counting what each recipient had in the past hour (one statement) and the batch's
    /// earlier notices.
    async fn within_limit(
        &self,
        tx: &mut dyn Tx,
        notices: Vec<Notification>,
    ) -> Result<(Vec<Notification>, Vec<Notification>), StoreError> {
        let Some(oldest) = notices.iter().map(|n| n.created_at).min() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut recipients: Vec<&str> = notices.iter().map(|n| n.recipient.as_str()).collect();
        recipients.sort_unstable();
        recipients.dedup();
        let mut recent = tx
            .notifications_to_since(&recipients, oldest - TimeDelta::hours(1))
            .await?;
        let limit = i64::from(self.policy.max_per_recipient_per_hour);
        Ok(notices.into_iter().partition(|n| {
            let count = recent.entry(n.recipient.clone()).or_insert(0);
            *count += 1;
            *count <= limit
        }))
    }
}

#[async_trait]
impl Handler for NotificationConsumer {
    fn name(&self) -> &'static str {
        CONSUMER.name
    }

    fn topics(&self) -> &'static [&'static str] {
        CONSUMER.topics
    }

    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        Ok(self.apply_all(&[event], false).await?)
    }

    fn applies_batches(&self) -> bool {
        true
    }

    /// One transaction for the whole batch.
    async fn handle_batch(&self, events: &[&EventEnvelope]) -> Result<(), HandlerError> {
        Ok(self.apply_all(events, true).await?)
    }
}
