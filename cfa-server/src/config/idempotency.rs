//! `[idempotency]`: how long `Idempotency-Key` responses are kept, and how often they are swept.

use serde::{Deserialize, Serialize};

use super::{ConfigError, require_at_most, require_positive};

/// `[idempotency]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// How long a key's saved response is kept, in hours.
    pub retention_hours: u64,
    /// How often expired keys and delivered outbox rows are swept, in seconds.
    pub sweep_interval_seconds: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            retention_hours: 24,
            sweep_interval_seconds: 300,
        }
    }
}

impl IdempotencySettings {
    /// Checks the retention and the sweep interval; a zero retention would forget a key before
    /// the client could retry with it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("idempotency.retention_hours", self.retention_hours),
            (
                "idempotency.sweep_interval_seconds",
                self.sweep_interval_seconds,
            ),
        ])?;
        require_at_most(&[
            ("idempotency.retention_hours", self.retention_hours, 87_600),
            (
                "idempotency.sweep_interval_seconds",
                self.sweep_interval_seconds,
                86_400,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_retention_and_a_rare_sweep_are_named() {
        IdempotencySettings::default()
            .validate()
            .expect("the defaults are valid");
        let forgetful = IdempotencySettings {
            retention_hours: 0,
            ..IdempotencySettings::default()
        };
        let err = forgetful.validate().expect_err("zero retention");
        assert!(
            err.to_string()
                .contains("idempotency.retention_hours must be greater than 0"),
            "{err}"
        );
        let rare = IdempotencySettings {
            sweep_interval_seconds: 86_401,
            ..IdempotencySettings::default()
        };
        let err = rare.validate().expect_err("sweeps too rarely");
        assert!(
            err.to_string()
                .contains("idempotency.sweep_interval_seconds must be at most 86400"),
            "{err}"
        );
    }
}
