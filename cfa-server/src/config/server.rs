//! `[server]`: the listening socket, the data directory, request limits, and the roles a process
//! runs when the platform is split across processes.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, require_at_most, require_positive};

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port of the HTTP listener.
    pub listen: SocketAddr,
    /// Where the SQLite file and other local state live.
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Longest a request may take before a 503, in seconds.
    pub request_timeout_seconds: u64,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_seconds: u64,
    /// How long, after SIGTERM, the server keeps accepting requests while `/ready` answers
    /// `503 draining`, so load balancers take it out before it stops listening, in seconds.
    pub shutdown_delay_seconds: u64,
    /// How long a connection may take to send a request's headers, and stay idle between
    /// requests, before it is closed, in seconds: a client that trickles bytes cannot hold a
    /// connection open.
    pub header_read_timeout_seconds: u64,
    /// Most connections served at once; further clients wait in the listen queue.
    pub max_connections: usize,
    /// The roles this process runs (`--role`); empty means all of them. A list, or one
    /// comma-separated string (`CFA_SERVER__ROLES=donation,payment`).
    #[serde(deserialize_with = "roles_from_list_or_csv")]
    pub roles: Vec<Role>,
}

/// A part of the platform a process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Campaigns, donations, the donation-status consumer, operator views.
    Donation,
    /// Intents, webhooks, refunds, reconciliation, the sandbox provider.
    Payment,
    /// The totals read model, its consumer and cache.
    Totals,
    /// The notification consumer and sender.
    Notification,
    /// The outbox relay.
    Relay,
    /// The API gateway.
    Gateway,
}

impl Role {
    /// Its name, as `--role` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Donation => "donation",
            Role::Payment => "payment",
            Role::Totals => "totals",
            Role::Notification => "notification",
            Role::Relay => "relay",
            Role::Gateway => "gateway",
        }
    }

    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Donation,
        Role::Payment,
        Role::Totals,
        Role::Notification,
        Role::Relay,
        Role::Gateway,
    ];

    /// The seed's port for the role when processes are split.
    pub fn seed_port(self) -> u16 {
        match self {
            Role::Gateway => 8000,
            Role::Donation => 8001,
            Role::Payment => 8002,
            Role::Totals => 8003,
            Role::Notification => 8004,
            Role::Relay => 8005,
        }
    }

    /// Parses one role name.
    pub fn parse(raw: &str) -> Result<Role, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "donation" | "donations" => Ok(Role::Donation),
            "payment" | "payments" => Ok(Role::Payment),
            "totals" => Ok(Role::Totals),
            "notification" | "notifications" => Ok(Role::Notification),
            "relay" => Ok(Role::Relay),
            "gateway" => Ok(Role::Gateway),
            other => Err(format!(
                "unknown role {other:?}; roles are donation, payment, totals, notification, relay, gateway"
            )),
        }
    }
}

/// Accepts a list of role names, or one comma-separated string (as environment variables and
/// `--role` give it); names are parsed by [`Role::parse`].
fn roles_from_list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Role>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    let names = match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv.split(',').map(str::to_string).collect(),
    };
    names
        .iter()
        .filter(|name| !name.trim().is_empty())
        .map(|name| Role::parse(name).map_err(serde::de::Error::custom))
        .collect()
}

impl ServerSettings {
    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }

    /// Whether this process runs every role (the all-in-one default).
    pub fn all_in_one(&self) -> bool {
        Role::ALL.iter().all(|r| self.runs(*r))
    }

    /// Checks the limits; whether the roles fit the other sections is [`super::Settings`]'s
    /// business.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive(&[
            ("server.body_limit_bytes", self.body_limit_bytes as u64),
            (
                "server.request_timeout_seconds",
                self.request_timeout_seconds,
            ),
            (
                "server.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("server.max_connections", self.max_connections as u64),
        ])?;
        require_at_most(&[
            (
                "server.request_timeout_seconds",
                self.request_timeout_seconds,
                3_600,
            ),
            (
                "server.shutdown_grace_seconds",
                self.shutdown_grace_seconds,
                3_600,
            ),
            (
                "server.shutdown_delay_seconds",
                self.shutdown_delay_seconds,
                3_600,
            ),
            (
                "server.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                3_600,
            ),
        ])
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("./data"),
            body_limit_bytes: 64 * 1024,
            request_timeout_seconds: 30,
            shutdown_grace_seconds: 30,
            shutdown_delay_seconds: 0,
            header_read_timeout_seconds: 10,
            max_connections: 10_000,
            roles: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Overrides;
    use super::super::tests::load;
    use super::*;

    #[test]
    fn the_defaults_pass() {
        ServerSettings::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn a_zero_body_limit_and_an_hour_long_grace_are_named() {
        let zero = ServerSettings {
            body_limit_bytes: 0,
            ..ServerSettings::default()
        };
        let err = zero.validate().expect_err("no body fits");
        assert!(err.to_string().contains("server.body_limit_bytes"), "{err}");
        let long = ServerSettings {
            shutdown_grace_seconds: 3_601,
            ..ServerSettings::default()
        };
        let err = long.validate().expect_err("too long a grace");
        assert!(
            err.to_string()
                .contains("server.shutdown_grace_seconds must be at most 3600"),
            "{err}"
        );
    }

    #[test]
    fn roles_parse_in_either_number_and_any_case() {
        assert_eq!(Role::parse(" Payments "), Ok(Role::Payment));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        let err = Role::parse("wallet").expect_err("no such role");
        assert!(err.contains("wallet"), "{err}");
    }

    #[test]
    fn every_list_key_takes_a_comma_separated_variable() {
        let s = load(
            "",
            &[
                ("CFA_SERVER__ROLES", "donation, Payments"),
                ("CFA_DATABASE_URL", "postgres://cfa@db.internal/cfa"),
                ("CFA_AMQP_URL", "amqp://mq.internal:5672/%2f"),
                (
                    "CFA_GATEWAY__UPSTREAMS__DONATIONS",
                    "http://10.0.0.1:8001,http://10.0.0.2:8001",
                ),
                ("CFA_GATEWAY__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
            ],
            Overrides::default(),
        )
        .expect("loads");
        assert_eq!(s.server.roles, [Role::Donation, Role::Payment]);
        assert_eq!(
            s.gateway.upstreams["donations"],
            ["http://10.0.0.1:8001", "http://10.0.0.2:8001"]
        );
        assert_eq!(s.gateway.trusted_proxies, ["10.0.0.0/8", "127.0.0.1"]);

        let one = load(
            "[server]\nroles = [\"relay\"]\n",
            &[
                ("CFA_DATABASE_URL", "postgres://cfa@db.internal/cfa"),
                ("CFA_AMQP_URL", "amqp://mq.internal:5672/%2f"),
            ],
            Overrides::default(),
        )
        .expect("a TOML list still works");
        assert_eq!(one.server.roles, [Role::Relay]);

        let err = load(
            "",
            &[("CFA_SERVER__ROLES", "gateway,wallet")],
            Overrides::default(),
        )
        .expect_err("no such role");
        let text = err.to_string();
        assert!(
            text.contains("server.roles") && text.contains("wallet"),
            "{text}"
        );
    }

    #[test]
    fn no_roles_means_every_role() {
        let all = ServerSettings::default();
        assert!(all.all_in_one() && all.runs(Role::Relay));
        let relay = ServerSettings {
            roles: vec![Role::Relay],
            ..ServerSettings::default()
        };
        assert!(!relay.all_in_one() && relay.runs(Role::Relay) && !relay.runs(Role::Gateway));
    }
}
