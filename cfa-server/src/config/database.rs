//! `[database]`: which database, how many connections, and how durable SQLite is.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::server::{Role, ServerSettings};
use super::{ConfigError, DatabaseUrl, require_at_most, require_positive};

/// The pool of an all-in-one process, and the most any process gets by default.
const DEFAULT_POOL: u32 = 16;

/// The pipeline's own connections in a process that also takes writing requests.
const PIPELINE_POOL: u32 = 4;

/// `[database]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://PATH`; empty means `sqlite://<data_dir>/cfa.db`.
    pub url: DatabaseUrl,
    /// Largest connection pool (readers, on SQLite); unset, sized from the process's roles
    /// ([`DatabaseSettings::fill_pool_size`]).
    pub max_connections: Option<u32>,
    /// Connections kept apart for the event pipeline (the relay, the consumers, the notification
    /// sender, the sandbox's deliveries, reconciliation and the sweeps) on PostgreSQL, so that a
    /// burst of requests, which may hold every connection of the pool, never starves it; `0`
    /// shares the pool. Unset, sized from the process's roles
    /// ([`DatabaseSettings::fill_pool_size`]). SQLite ignores it: its writes share one writer.
    pub pipeline_connections: Option<u32>,
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
            max_connections: None,
            pipeline_connections: None,
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

    /// Whether this is the embedded SQLite database (the default), whose writes queue for one
    /// writer connection and share commits.
    pub fn is_sqlite(&self) -> bool {
        let url = self.url.0.trim();
        url.is_empty() || url.starts_with("sqlite:")
    }

    /// The pool's size: as configured, else as [`DatabaseSettings::fill_pool_size`] left it.
    pub fn pool_size(&self) -> u32 {
        self.max_connections.unwrap_or(DEFAULT_POOL)
    }

    /// Sizes an unset pool from the roles the process runs, so a split deployment's processes
    /// together stay well under PostgreSQL's default 100 connections: the donation role 16 (its
    /// writes are the busiest), payment 12 (intents, webhooks, the sandbox, reconciliation),
    /// totals 6 (reads are mostly cached), notification, relay 4 each, the gateway 2 (`/ready`
    /// and `/metrics` only). A process running several roles gets their sum, at most 16; the
    /// all-in-one gets 16.
    ///
    /// A process that takes requests writing to the database (the donation or the payment
    /// role, both of which also run pipeline work) keeps 4 more connections for its pipeline;
    /// one that runs only pipeline roles gives its whole pool to them already.
    pub fn fill_pool_size(&mut self, server: &ServerSettings) {
        if self.pipeline_connections.is_none() {
            let takes_writes = server.runs(Role::Donation) || server.runs(Role::Payment);
            self.pipeline_connections = Some(if takes_writes { PIPELINE_POOL } else { 0 });
        }
        if self.max_connections.is_some() {
            return;
        }
        let share = |role: Role| match role {
            Role::Donation => 16,
            Role::Payment => 12,
            Role::Totals => 6,
            Role::Notification | Role::Relay => 4,
            Role::Gateway => 2,
        };
        let sum: u32 = Role::ALL
            .into_iter()
            .filter(|r| server.runs(*r))
            .map(share)
            .sum();
        self.max_connections = Some(sum.min(DEFAULT_POOL));
    }

    /// The pipeline's own connections: as configured, else as
    /// [`DatabaseSettings::fill_pool_size`] left it; `0` when the pipeline shares the pool.
    pub fn pipeline_pool_size(&self) -> u32 {
        self.pipeline_connections.unwrap_or(0)
    }

    /// How long to wait for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_seconds)
    }

    /// Checks the pool's size and timeout; the URL is checked when connecting, where the driver
    /// can say what is wrong with it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("database.max_connections", u64::from(self.pool_size())),
            (
                "database.acquire_timeout_seconds",
                self.acquire_timeout_seconds,
            ),
        ])?;
        require_at_most(&[
            (
                "database.acquire_timeout_seconds",
                self.acquire_timeout_seconds,
                3_600,
            ),
            (
                "database.pipeline_connections",
                u64::from(self.pipeline_pool_size()),
                1_000,
            ),
        ])
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
            max_connections: Some(0),
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

#[cfg(test)]
mod pool_tests {
    use super::*;

    fn filled(roles: &[Role], configured: Option<u32>) -> DatabaseSettings {
        let server = ServerSettings {
            roles: roles.to_vec(),
            ..ServerSettings::default()
        };
        let mut database = DatabaseSettings {
            max_connections: configured,
            ..DatabaseSettings::default()
        };
        database.fill_pool_size(&server);
        database
    }

    fn pool(roles: &[Role], configured: Option<u32>) -> u32 {
        filled(roles, configured).pool_size()
    }

    /// Every connection a process may open: its pool and its pipeline's.
    fn connections(roles: &[Role]) -> u32 {
        let database = filled(roles, None);
        database.pool_size() + database.pipeline_pool_size()
    }

    #[test]
    fn processes_taking_writes_keep_connections_for_their_pipeline() {
        let pipeline = |roles: &[Role]| filled(roles, None).pipeline_pool_size();
        assert_eq!(pipeline(&[]), 4, "all-in-one");
        assert_eq!(pipeline(&[Role::Donation]), 4);
        assert_eq!(pipeline(&[Role::Payment]), 4);
        assert_eq!(pipeline(&[Role::Relay]), 0, "a pipeline role has its pool");
        assert_eq!(pipeline(&[Role::Totals, Role::Notification]), 0);
        let mut settings = DatabaseSettings {
            pipeline_connections: Some(0),
            ..DatabaseSettings::default()
        };
        settings.fill_pool_size(&ServerSettings::default());
        assert_eq!(
            settings.pipeline_pool_size(),
            0,
            "configured 0 shares the pool"
        );
    }

    #[test]
    fn each_role_gets_a_pool_of_its_own_size_and_a_configured_one_wins() {
        assert_eq!(pool(&[], None), 16, "all-in-one");
        assert_eq!(pool(&[Role::Gateway], None), 2);
        assert_eq!(pool(&[Role::Relay], None), 4);
        assert_eq!(pool(&[Role::Totals], None), 6);
        assert_eq!(pool(&[Role::Payment, Role::Notification], None), 16);
        assert_eq!(pool(&[Role::Gateway], Some(9)), 9);
        // The compose file's split: gateway, 2 donation, payment, totals, notification, 2 relays.
        let split: u32 = [
            &[Role::Gateway][..],
            &[Role::Donation],
            &[Role::Donation],
            &[Role::Payment],
            &[Role::Totals],
            &[Role::Notification],
            &[Role::Relay],
            &[Role::Relay],
        ]
        .into_iter()
        .map(connections)
        .sum();
        assert!(split < 100, "PostgreSQL's default max_connections: {split}");
    }
}
