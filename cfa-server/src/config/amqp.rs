//! `[amqp]`: RabbitMQ. Optional for one process, which then uses the in-process bus; split
//! processes need it, which [`super::Settings::validate`] checks.

use serde::{Deserialize, Serialize};

use super::DatabaseUrl;

/// `[amqp]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// `amqp://user:pass@host:5672/%2f`; empty means the in-process bus. Masked when printed.
    pub url: DatabaseUrl,
    /// A prefix for every exchange and queue name (empty in production; tests isolate with it).
    pub namespace: String,
    /// Unacknowledged messages a consumer holds at once.
    pub prefetch: u16,
    /// Handling attempts before a message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before a failed message is retried, in milliseconds.
    pub retry_delay_ms: u64,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: DatabaseUrl(String::new()),
            namespace: String::new(),
            prefetch: 16,
            max_attempts: 5,
            retry_delay_ms: 1000,
        }
    }
}

impl AmqpSettings {
    /// Whether events go through RabbitMQ: the URL is set to something other than blanks.
    /// Trimmed because a blank `CFA_AMQP_URL=" "` in a shell or compose file means "unset", not
    /// a broker called `" "`.
    pub fn enabled(&self) -> bool {
        !self.url.0.trim().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_url_means_no_broker() {
        let with = |url: &str| AmqpSettings {
            url: DatabaseUrl(url.into()),
            ..AmqpSettings::default()
        };
        assert!(!AmqpSettings::default().enabled());
        assert!(!with("  \t").enabled());
        assert!(with("amqp://127.0.0.1:5672/%2f").enabled());
    }
}
