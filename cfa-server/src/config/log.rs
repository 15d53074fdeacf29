//! `[log]`: the log format and filter; [`crate::telemetry`] applies them.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[log]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `auto` (JSON unless stderr is a terminal), `json` or `pretty`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `cfa_server=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl LogSettings {
    /// Checks that the level parses as a filter, so a typo is refused at start-up instead of
    /// silently logging nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError(format!(
                "log.level: {:?} is not a valid filter (try \"info\" or \"cfa_server=debug\")",
                self.level
            )));
        }
        Ok(())
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless on a terminal.
    Auto,
    /// JSON lines.
    Json,
    /// Human-readable.
    Pretty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_that_is_not_a_filter_is_named() {
        let valid = LogSettings {
            level: "warn,cfa_server=debug".into(),
            ..LogSettings::default()
        };
        valid.validate().expect("a filter with targets is fine");
        let typo = LogSettings {
            level: "cfa_server=loud".into(),
            ..LogSettings::default()
        };
        let err = typo.validate().expect_err("not a level");
        assert!(err.to_string().contains("log.level"), "{err}");
    }
}
