//! `[payments]`: webhook signatures, the built-in sandbox provider, and reconciliation with the
//! provider.

use serde::{Deserialize, Serialize};

use super::secret::{Secret, secrets_from_list_or_csv};
use super::{ConfigError, require_at_most};

/// `[payments]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// Webhook signing secrets (several during a rotation). Empty: `run` generates one on first
    /// start and keeps it in `<data_dir>/webhook_secret`.
    #[serde(deserialize_with = "secrets_from_list_or_csv")]
    pub webhook_secret: Vec<Secret>,
    /// Accept webhooks without a valid signature (testing only; warned about at start and in
    /// `/ready`).
    pub allow_unsigned_webhooks: bool,
    /// How far a signature's timestamp may be from now, in seconds.
    pub signature_tolerance_seconds: u64,
    /// Run the built-in sandbox payment provider. Unset means on; on a non-loopback address it
    /// then answers only requests from this host, since anyone who reaches the sandbox's confirm
    /// endpoint can mark a payment paid (`true` opens it to all, `false` turns it off).
    pub sandbox: Option<bool>,
    /// Where the sandbox delivers webhooks; empty means this server's own webhook endpoint.
    pub sandbox_webhook_url: String,
    /// Delay before the sandbox delivers a webhook, in milliseconds.
    pub sandbox_delay_ms: u64,
    /// Probability (0–1) that the sandbox delivers a webhook twice.
    pub sandbox_duplicate_probability: f64,
    /// Probability (0–1) that the sandbox delivers a pair of webhooks in reverse order.
    pub sandbox_reorder_probability: f64,
    /// Delivery attempts before the sandbox gives a webhook up.
    pub sandbox_max_attempts: u32,
    /// How often the sandbox looks for webhooks to deliver, in milliseconds.
    pub sandbox_poll_interval_ms: u64,
    /// A payment still `INITIATED` or `AUTHORIZED` this long after its last change is re-checked
    /// with the provider, in seconds.
    pub reconcile_after_seconds: u64,
    /// How often reconciliation runs, in seconds.
    pub reconcile_interval_seconds: u64,
    /// A refund the provider has not confirmed this long after it was requested is released
    /// (marked `FAILED`, its amount no longer reserved), in seconds; a confirmation that comes
    /// later is still applied.
    pub refund_expiry_seconds: u64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            webhook_secret: Vec::new(),
            allow_unsigned_webhooks: false,
            signature_tolerance_seconds: 300,
            sandbox: None,
            sandbox_webhook_url: String::new(),
            sandbox_delay_ms: 0,
            sandbox_duplicate_probability: 0.0,
            sandbox_reorder_probability: 0.0,
            sandbox_max_attempts: 15,
            sandbox_poll_interval_ms: 100,
            reconcile_after_seconds: 900,
            reconcile_interval_seconds: 60,
            refund_expiry_seconds: 86_400,
        }
    }
}

impl PaymentSettings {
    /// Whether the sandbox provider runs (on unless set to false).
    pub fn sandbox_on(&self) -> bool {
        self.sandbox.unwrap_or(true)
    }

    /// Checks the timings, the sandbox's probabilities and its webhook URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_at_most(&[
            (
                "payments.signature_tolerance_seconds",
                self.signature_tolerance_seconds,
                86_400,
            ),
            (
                "payments.sandbox_delay_ms",
                self.sandbox_delay_ms,
                3_600_000,
            ),
            (
                "payments.sandbox_poll_interval_ms",
                self.sandbox_poll_interval_ms,
                3_600_000,
            ),
            (
                "payments.reconcile_after_seconds",
                self.reconcile_after_seconds,
                30 * 86_400,
            ),
            (
                "payments.reconcile_interval_seconds",
                self.reconcile_interval_seconds,
                86_400,
            ),
            (
                "payments.refund_expiry_seconds",
                self.refund_expiry_seconds,
                90 * 86_400,
            ),
        ])?;
        for (key, p) in [
            (
                "payments.sandbox_duplicate_probability",
                self.sandbox_duplicate_probability,
            ),
            (
                "payments.sandbox_reorder_probability",
                self.sandbox_reorder_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError(format!("{key} must be between 0 and 1")));
            }
        }
        let url = self.sandbox_webhook_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "payments.sandbox_webhook_url must be an http(s) URL, got {url:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(settings: PaymentSettings) -> String {
        settings
            .validate()
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_named() {
        PaymentSettings::default()
            .validate()
            .expect("the defaults are valid");
        let err = error(PaymentSettings {
            sandbox_duplicate_probability: 1.5,
            ..PaymentSettings::default()
        });
        assert!(
            err.contains("payments.sandbox_duplicate_probability must be between 0 and 1"),
            "{err}"
        );
        let err = error(PaymentSettings {
            sandbox_reorder_probability: -0.1,
            ..PaymentSettings::default()
        });
        assert!(
            err.contains("payments.sandbox_reorder_probability"),
            "{err}"
        );
    }

    #[test]
    fn the_sandbox_delivers_only_to_http_urls() {
        let err = error(PaymentSettings {
            sandbox_webhook_url: "ftp://x".into(),
            ..PaymentSettings::default()
        });
        assert!(err.contains("payments.sandbox_webhook_url"), "{err}");
        PaymentSettings {
            sandbox_webhook_url: " https://hooks.example/cfa ".into(),
            ..PaymentSettings::default()
        }
        .validate()
        .expect("an https URL is fine");
    }

    #[test]
    fn reconciliation_waits_at_most_thirty_days() {
        let err = error(PaymentSettings {
            reconcile_after_seconds: 30 * 86_400 + 1,
            ..PaymentSettings::default()
        });
        assert!(
            err.contains("payments.reconcile_after_seconds must be at most 2592000"),
            "{err}"
        );
    }
}
