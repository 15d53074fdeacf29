//! `[notifications]`: donor e-mails — where they go (files or SMTP), how they are retried, and
//! the signed history links they carry.

use serde::{Deserialize, Serialize};

use super::secret::Secret;
use super::{ConfigError, require_at_most, require_positive};

/// `[notifications]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// `file` (one `.eml` per message under `<data_dir>/mail`) or `smtp`.
    pub sender: MailSender,
    /// The From address.
    pub from: String,
    /// SMTP server host (for `sender = "smtp"`).
    pub smtp_host: String,
    /// SMTP server port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub smtp_tls: SmtpTls,
    /// SMTP user name; empty means no authentication.
    pub smtp_username: String,
    /// SMTP password.
    pub smtp_password: Option<Secret>,
    /// Send attempts before a notification is marked dead.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds; doubles per attempt, with jitter.
    pub retry_base_ms: u64,
    /// How often the sender looks for due notifications, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long a sender's claim on a notification lasts, in seconds; renewed every third of it
    /// while the send is in flight, so a sender that dies holds its claims this long at most.
    pub lease_seconds: u64,
    /// Messages one sender has in flight at once (each pass claims four times as many).
    pub concurrency: usize,
    /// Public base URL of the API, for the donor history links; empty means the listen address.
    pub public_base_url: String,
    /// How long a history link stays valid, in hours.
    pub history_link_ttl_hours: u64,
    /// Secret signing the history links; empty means one generated into
    /// `<data_dir>/history_link_secret`.
    pub history_link_secret: Option<Secret>,
    /// Most messages one address gets in an hour; the rest are counted
    /// (`notifications_sent_total{status="suppressed"}`) and logged, not sent, so the platform
    /// cannot be used to flood someone's inbox.
    pub max_per_recipient_per_hour: u32,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            sender: MailSender::File,
            from: "CareForAll <receipts@careforall.invalid>".into(),
            smtp_host: String::new(),
            smtp_port: 25,
            smtp_tls: SmtpTls::None,
            smtp_username: String::new(),
            smtp_password: None,
            max_attempts: 6,
            retry_base_ms: 1000,
            poll_interval_ms: 500,
            lease_seconds: 15,
            concurrency: 8,
            public_base_url: String::new(),
            history_link_ttl_hours: 24 * 90,
            history_link_secret: None,
            max_per_recipient_per_hour: 20,
        }
    }
}

impl NotificationSettings {
    /// Checks the sender's lease and concurrency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let concurrency = u64::try_from(self.concurrency).unwrap_or(u64::MAX);
        require_positive(&[
            ("notifications.lease_seconds", self.lease_seconds),
            ("notifications.concurrency", concurrency),
        ])?;
        require_at_most(&[
            ("notifications.lease_seconds", self.lease_seconds, 3600),
            ("notifications.concurrency", concurrency, 256),
        ])
    }
}

/// Where notifications go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSender {
    /// `.eml` files under the data directory.
    File,
    /// An SMTP server.
    Smtp,
}

/// How SMTP is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay or a test server).
    None,
    /// STARTTLS on the given port.
    Starttls,
    /// TLS from the first byte.
    Tls,
}
