//! `[database]`: which database, how many connections, and how durable SQLite is.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DatabaseUrl, require_at_most, require_positive};

/// `[database]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://PATH`; empty means `sqlite://<data_dir>/cfa.db`.
    pub url: DatabaseUrl,
    /// Largest connection pool (readers, on SQLite).
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as down, in seconds.
    pub acquire_timeout_seconds: u64,
    /// Apply pending migrations when `run` starts.
    pub migrate_on_start: bool,
    /// SQLite `synchronous` pragma: `full` (an acknowledged donation survives power loss) or
    /// `normal` (faster; survives a crash of the process, not of the machine).
    pub sqlite_synchronous: SqliteSync,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: DatabaseUrl(String::new()),
            max_connections: 16,
            acquire_timeout_seconds: 5,
            migrate_on_start: true,
            sqlite_synchronous: SqliteSync::Full,
        }
    }
}

impl DatabaseSettings {
    /// The URL to connect to, with the SQLite default filled in.
    pub fn effective_url(&self, data_dir: &Path) -> String {
        if self.url.0.trim().is_empty() {
            format!("sqlite://{}", data_dir.join("cfa.db").display())
        } else {
            self.url.0.trim().to_string()
        }
    }

    /// How long to wait for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_seconds)
    }

    /// Checks the pool's size and timeout; the URL is checked when connecting, where the driver
    /// can say what is wrong with it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("database.max_connections", u64::from(self.max_connections)),
            (
                "database.acquire_timeout_seconds",
                self.acquire_timeout_seconds,
            ),
        ])?;
        require_at_most(&[(
            "database.acquire_timeout_seconds",
            self.acquire_timeout_seconds,
            3_600,
        )])
    }
}

/// SQLite durability level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync at every commit.
    Full,
    /// fsync at checkpoints only.
    Normal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pool_and_an_hour_long_wait_are_named() {
        DatabaseSettings::default()
            .validate()
            .expect("the defaults are valid");
        let empty = DatabaseSettings {
            max_connections: 0,
            ..DatabaseSettings::default()
        };
        let err = empty.validate().expect_err("no connections");
        assert!(
            err.to_string().contains("database.max_connections"),
            "{err}"
        );
        let slow = DatabaseSettings {
            acquire_timeout_seconds: 3_601,
            ..DatabaseSettings::default()
        };
        let err = slow.validate().expect_err("too long a wait");
        assert!(
            err.to_string()
                .contains("database.acquire_timeout_seconds must be at most 3600"),
            "{err}"
        );
    }

    #[test]
    fn a_given_url_is_used_trimmed() {
        let pg = DatabaseSettings {
            url: DatabaseUrl(" postgres://db/cfa ".into()),
            ..DatabaseSettings::default()
        };
        assert_eq!(pg.effective_url(Path::new("/ignored")), "postgres://db/cfa");
    }
}
