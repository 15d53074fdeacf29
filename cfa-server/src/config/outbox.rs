//! `[outbox]`: the transactional outbox and the relay that delivers it.

use serde::{Deserialize, Serialize};

use super::{ConfigError, require_at_most, require_positive};

/// `[outbox]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Run the relay in this process.
    pub relay_enabled: bool,
    /// Rows claimed per batch, at most: a relay with little to do claims what there is. Large,
    /// because under a burst a batch costs the relay a claim, a wait for every consumer's
    /// answer and a settle, whatever its size (docs/PERFORMANCE.md, "Spikes, fourth pass").
    pub batch_size: i64,
    /// How often an idle relay looks for new rows, in milliseconds (new rows written by this
    /// process wake it at once).
    pub poll_interval_ms: u64,
    /// How long a claimed row stays leased to one relay, in seconds; renewed every third of it
    /// while a publish is in flight, so a relay that dies holds its rows this long at most.
    pub lease_seconds: u64,
    /// Longest back-off after failed deliveries, in milliseconds. Short, because a try costs one
    /// connection attempt, and the relay's first try after an outage ends comes at most this
    /// late: the backlog starts draining within seconds of the broker's return.
    pub max_backoff_ms: u64,
    /// How long delivered rows are kept, in hours.
    pub retention_hours: u64,
    /// Failed deliveries of the event itself (a consumer refused it) before it is set aside as a
    /// dead letter; an unreachable bus or consumer database uses up none.
    pub max_attempts: i32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            relay_enabled: true,
            batch_size: 1000,
            poll_interval_ms: 250,
            lease_seconds: 15,
            max_backoff_ms: 2_000,
            retention_hours: 168,
            max_attempts: 10,
        }
    }
}

impl OutboxSettings {
    /// Checks the relay's timings, attempts and batch size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("outbox.poll_interval_ms", self.poll_interval_ms),
            ("outbox.lease_seconds", self.lease_seconds),
            ("outbox.max_backoff_ms", self.max_backoff_ms),
        ])?;
        require_at_most(&[
            ("outbox.poll_interval_ms", self.poll_interval_ms, 3_600_000),
            ("outbox.lease_seconds", self.lease_seconds, 86_400),
            ("outbox.max_backoff_ms", self.max_backoff_ms, 3_600_000),
            ("outbox.retention_hours", self.retention_hours, 87_600),
        ])?;
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(ConfigError(
                "outbox.max_attempts must be between 1 and 1000".into(),
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError(
                "outbox.batch_size must be between 1 and 10000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(settings: OutboxSettings) -> String {
        settings
            .validate()
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn batch_size_and_attempts_have_bounds_on_both_sides() {
        OutboxSettings::default()
            .validate()
            .expect("the defaults are valid");
        for batch_size in [0, 10_001] {
            let err = error(OutboxSettings {
                batch_size,
                ..OutboxSettings::default()
            });
            assert!(
                err.contains("outbox.batch_size must be between 1 and 10000"),
                "{err}"
            );
        }
        for max_attempts in [0, 1001] {
            let err = error(OutboxSettings {
                max_attempts,
                ..OutboxSettings::default()
            });
            assert!(
                err.contains("outbox.max_attempts must be between 1 and 1000"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_zero_lease_and_a_decade_of_retention_are_named() {
        let err = error(OutboxSettings {
            lease_seconds: 0,
            ..OutboxSettings::default()
        });
        assert!(
            err.contains("outbox.lease_seconds must be greater than 0"),
            "{err}"
        );
        let err = error(OutboxSettings {
            retention_hours: 87_601,
            ..OutboxSettings::default()
        });
        assert!(
            err.contains("outbox.retention_hours must be at most 87600"),
            "{err}"
        );
    }
}
