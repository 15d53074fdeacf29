//! Layered configuration: defaults, then a TOML file (`--config`), then `CFA_*` environment
//! variables, then command-line flags.
//!
//! Every key has an environment name `CFA_<SECTION>__<KEY>` (`CFA_OUTBOX__BATCH_SIZE`); the common
//! ones have short names too (`CFA_LISTEN`, `CFA_DATA_DIR`, `CFA_DATABASE_URL`). An unknown key in
//! the file or in a `CFA_<SECTION>__<KEY>` variable is an error that names it; short `CFA_*` names
//! the server does not know (`CFA_SERVER`, `CFA_API_KEY`, …) belong to the other tools and are
//! left alone. Secrets serialise masked, so printing the effective configuration is safe.
//!
//! # Layout
//! This file loads [`Settings`] and checks what spans sections; each `[section]` lives in its own
//! file with its defaults and the checks that need nothing else:
//! - `server`: [`ServerSettings`] and the [`Role`]s a process runs.
//! - `database`: [`DatabaseSettings`], [`SqliteSync`].
//! - `admission`: [`AdmissionSettings`], the queue in front of the database.
//! - `outbox`, `idempotency`, `totals`: [`OutboxSettings`], [`IdempotencySettings`],
//!   [`TotalsSettings`].
//! - `auth`: [`AuthSettings`], the operator API keys.
//! - `payments`: [`PaymentSettings`], webhooks, the sandbox provider, reconciliation.
//! - `notifications`: [`NotificationSettings`], [`MailSender`], [`SmtpTls`].
//! - `amqp`, `redis`: [`AmqpSettings`], [`RedisSettings`], both optional.
//! - `gateway`: [`GatewaySettings`] and its [`RateLimitSettings`].
//! - `log`: [`LogSettings`], [`LogFormat`].
//! - `secret`: [`Secret`], a string that never prints.

mod admission;
mod amqp;
mod auth;
mod database;
mod gateway;
mod idempotency;
mod log;
mod metrics;
mod notifications;
mod outbox;
mod payments;
mod redis;
mod secret;
mod server;
mod totals;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use self::admission::AdmissionSettings;
pub use self::amqp::AmqpSettings;
pub use self::auth::AuthSettings;
pub use self::database::{DatabaseSettings, SqliteSync};
pub use self::gateway::{GatewaySettings, RateLimitSettings, SERVICES};
pub use self::idempotency::IdempotencySettings;
pub use self::log::{LogFormat, LogSettings};
pub use self::metrics::MetricsSettings;
pub use self::notifications::{MailSender, NotificationSettings, SmtpTls};
pub use self::outbox::OutboxSettings;
pub use self::payments::PaymentSettings;
// `self::` because a bare `redis` here would be ambiguous with the `redis` crate.
pub use self::redis::RedisSettings;
pub use self::secret::{DatabaseUrl, Secret, mask_url};
pub use self::server::{Role, ServerSettings};
pub use self::totals::TotalsSettings;

/// Short environment names (after `CFA_`, lower case) and the keys they set.
pub const SHORT_ENV_NAMES: &[(&str, &str)] = &[
    ("listen", "server.listen"),
    ("data_dir", "server.data_dir"),
    ("database_url", "database.url"),
    ("amqp_url", "amqp.url"),
    ("redis_url", "redis.url"),
];

/// The whole configuration of `cfa-server`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Listening socket, data directory, limits.
    pub server: ServerSettings,
    /// Which database, and how to use it.
    pub database: DatabaseSettings,
    /// How many requests use the database at once, and how many wait.
    pub admission: AdmissionSettings,
    /// The transactional outbox and its relay.
    pub outbox: OutboxSettings,
    /// Idempotency-key retention.
    pub idempotency: IdempotencySettings,
    /// Operator API keys.
    pub auth: AuthSettings,
    /// Webhook signatures, the sandbox provider, reconciliation.
    pub payments: PaymentSettings,
    /// The totals read model's cache.
    pub totals: TotalsSettings,
    /// Donor e-mails: sender, SMTP, retries, history links.
    pub notifications: NotificationSettings,
    /// RabbitMQ, when the events go through a broker.
    pub amqp: AmqpSettings,
    /// Redis, as a second-level cache.
    pub redis: RedisSettings,
    /// Limits applied in front of the API.
    pub gateway: GatewaySettings,
    /// Log format and level.
    pub log: LogSettings,
    /// Where `/metrics` is served.
    pub metrics: MetricsSettings,
}

/// Values given on the command line; they override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--database-url`
    pub database_url: Option<String>,
    /// `--role`
    pub roles: Option<Vec<Role>>,
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Loads the configuration from an optional file, the process environment and overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_from(file, Env::prefixed("CFA_"), overrides)
    }

    fn load_from(
        file: Option<&Path>,
        env: Env,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env.filter_map(|key| env_key(key.as_str()).map(Into::into)));
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("server.data_dir", dir));
        }
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if let Some(roles) = &overrides.roles {
            figment = figment.merge(Serialized::default("server.roles", roles));
        }
        let mut settings: Settings = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        // Split processes take the seed's ports unless told otherwise.
        if !settings.server.all_in_one()
            && settings.server.listen == ServerSettings::default().listen
            && let Some(first) = settings.server.roles.first()
        {
            settings.server.listen.set_port(first.seed_port());
        }
        settings.database.fill_pool_size(&settings.server);
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: each section's ranges, then the relations between
    /// sections. The first problem found is the one reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.admission
            .validate(self.server.request_timeout_seconds)?;
        self.outbox.validate()?;
        self.notifications.validate()?;
        self.idempotency.validate()?;
        self.payments.validate()?;
        self.log.validate()?;
        self.gateway.trusted_networks()?;

        let split = !self.server.all_in_one();
        // An all-in-one process calls its services in-process, so stray upstreams do no harm there.
        if split && self.server.runs(Role::Gateway) {
            self.gateway.validate_upstreams()?;
        }
        if split && !self.amqp.enabled() {
            return Err(ConfigError(
                "server.roles: split processes exchange events through RabbitMQ; set amqp.url (CFA_AMQP_URL)".into(),
            ));
        }
        if split && self.database.url.0.trim().is_empty() {
            return Err(ConfigError(
                "server.roles: split processes share one database; set database.url (CFA_DATABASE_URL) to PostgreSQL"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether the operator endpoints answer only requests from this host: no `auth.api_keys`
    /// (and no `auth.allow_open`) on a non-loopback address. The server starts, serves donors,
    /// and says so, rather than refusing to start or opening operator endpoints to the network.
    pub fn operators_local_only(&self) -> bool {
        self.auth.api_keys.is_empty()
            && !self.auth.allow_open
            && !self.server.listen.ip().is_loopback()
    }

    /// Whether the sandbox provider answers only requests from this host: `payments.sandbox`
    /// unset on a non-loopback address, where anyone who reached its confirm endpoint could mark
    /// a payment paid.
    pub fn sandbox_local_only(&self) -> bool {
        self.payments.sandbox.is_none() && !self.server.listen.ip().is_loopback()
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.server.data_dir
    }
}

/// Fails on the first key whose value is 0, in the order given.
fn require_positive(values: &[(&str, u64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(ConfigError(format!("{key} must be greater than 0"))),
        None => Ok(()),
    }
}

/// Fails on the first key whose value is above its maximum, in the order given.
fn require_at_most(values: &[(&str, u64, u64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, v, max)| v > max) {
        Some((key, _, max)) => Err(ConfigError(format!("{key} must be at most {max}"))),
        None => Ok(()),
    }
}

/// Maps an environment variable name (prefix stripped) to a configuration key, or `None` for a
/// short name that belongs to another tool.
fn env_key(name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if name.contains("__") {
        return Some(name.replace("__", "."));
    }
    SHORT_ENV_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map(|(_, key)| (*key).to_string())
}

/// The keys whose values are secrets: an error about one never shows the value.
const SECRET_KEYS: [&str; 4] = [
    "auth.api_keys",
    "payments.webhook_secret",
    "notifications.smtp_password",
    "notifications.history_link_secret",
];

/// Turns figment's error into one line that names the key and where it came from; the value of
/// a secret is never part of it.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            };
            if SECRET_KEYS.iter().any(|k| path.starts_with(k)) {
                return format!(
                    "{key}not a valid secret (its value is not shown); a secret is a string: \
                     quote it in TOML, and in the environment write an all-digit one as '\"123\"'"
                );
            }
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_that_does_not_parse_is_named_but_never_shown() {
        for (env, key) in [
            ("CFA_AUTH__API_KEYS", "auth.api_keys"),
            ("CFA_PAYMENTS__WEBHOOK_SECRET", "payments.webhook_secret"),
            (
                "CFA_NOTIFICATIONS__SMTP_PASSWORD",
                "notifications.smtp_password",
            ),
            (
                "CFA_NOTIFICATIONS__HISTORY_LINK_SECRET",
                "notifications.history_link_secret",
            ),
        ] {
            let err = load("", &[(env, "98765432123")], Overrides::default())
                .expect_err("an all-digit value is a number, not a string");
            let text = err.to_string();
            assert!(text.contains(key), "{text}");
            assert!(!text.contains("98765432123"), "the secret leaked: {text}");
        }
    }

    /// Loads `toml` and `env` as `cfa-server` would, in a jail so tests cannot see each other's
    /// variables; the section files' tests use it too.
    // The closure's error type is figment::Jail's, not ours.
    #[allow(clippy::result_large_err)]
    pub(super) fn load(
        toml: &str,
        env: &[(&str, &str)],
        overrides: Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(k, v);
            }
            jail.create_file("cfa.toml", toml)?;
            out = Some(Settings::load_from(
                Some(Path::new("cfa.toml")),
                Env::prefixed("CFA_"),
                &overrides,
            ));
            Ok(())
        });
        out.expect("the jail ran")
    }

    #[test]
    fn defaults_listen_on_8000_with_sqlite_under_data() {
        let s = load("", &[], Overrides::default()).expect("defaults load");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(
            s.database.effective_url(s.data_dir()),
            "sqlite://./data/cfa.db"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let s = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[outbox]\nbatch_size = 5\n",
            &[
                ("CFA_LISTEN", "127.0.0.1:9100"),
                ("CFA_OUTBOX__BATCH_SIZE", "7"),
            ],
            Overrides::default(),
        )
        .expect("loads");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(s.outbox.batch_size, 7);

        let s = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n",
            &[("CFA_LISTEN", "127.0.0.1:9100")],
            Overrides {
                listen: Some("127.0.0.1:9200".into()),
                ..Overrides::default()
            },
        )
        .expect("loads");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:9200");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let err = load("[server]\nlisen = \"x\"\n", &[], Overrides::default())
            .expect_err("typo must fail");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn an_unknown_sectioned_variable_is_named() {
        let err = load("", &[("CFA_OUTBOX__BATCHSIZE", "3")], Overrides::default())
            .expect_err("typo must fail");
        assert!(err.to_string().contains("batchsize"), "{err}");
    }

    #[test]
    fn short_names_of_other_tools_are_left_alone() {
        load(
            "",
            &[("CFA_SERVER", "http://x"), ("CFA_API_KEY", "k")],
            Overrides::default(),
        )
        .expect("cfa-cli variables do not break the server");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load(
            "",
            &[("CFA_OUTBOX__BATCH_SIZE", "lots")],
            Overrides::default(),
        )
        .expect_err("bad value must fail");
        assert!(err.to_string().contains("outbox.batch_size"), "{err}");
        let err = load(
            "[server]\nlisten = \"nowhere\"\n",
            &[],
            Overrides::default(),
        )
        .expect_err("bad address must fail");
        assert!(err.to_string().contains("server.listen"), "{err}");
        let err = load("[outbox]\nbatch_size = 0\n", &[], Overrides::default())
            .expect_err("zero batch must fail");
        assert!(err.to_string().contains("outbox.batch_size"), "{err}");
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let s = load(
            "[auth]\napi_keys = [\"sekret-key\"]\n[database]\nurl = \"postgres://app:hunter2@db/cfa\"\n",
            &[],
            Overrides::default(),
        )
        .expect("loads");
        let printed = s.to_masked_toml();
        assert!(!printed.contains("sekret-key"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://app:****@db/cfa"), "{printed}");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn split_roles_take_the_seed_ports_and_need_the_production_backends() {
        let split = Overrides {
            roles: Some(vec![Role::Payment]),
            ..Overrides::default()
        };
        let err = load("", &[], split.clone()).expect_err("no broker");
        assert!(err.to_string().contains("amqp.url"), "{err}");
        let s = load(
            "",
            &[
                ("CFA_AMQP_URL", "amqp://x"),
                ("CFA_DATABASE_URL", "postgres://db/cfa"),
            ],
            split,
        )
        .expect("split payment role");
        assert_eq!(s.server.listen.port(), 8002);
        assert!(s.server.runs(Role::Payment) && !s.server.runs(Role::Donation));
        let all = load("", &[], Overrides::default()).expect("all in one");
        assert!(all.server.all_in_one());
        assert_eq!(all.server.listen.port(), 8000);
    }

    #[test]
    fn without_keys_off_loopback_operators_are_local_only_rather_than_refused() {
        let public = load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n",
            &[],
            Overrides::default(),
        )
        .expect("the default image's configuration starts");
        assert!(public.operators_local_only() && public.sandbox_local_only());
        let keyed = load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n[auth]\napi_keys = [\"k\"]\n",
            &[],
            Overrides::default(),
        )
        .expect("keyed");
        assert!(
            !keyed.operators_local_only(),
            "a key opens them to key holders"
        );
        let open = load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n[auth]\nallow_open = true\n",
            &[],
            Overrides::default(),
        )
        .expect("open");
        assert!(!open.operators_local_only(), "saying so opens them to all");
        let local = load("", &[], Overrides::default()).expect("loopback");
        assert!(!local.operators_local_only() && !local.sandbox_local_only());
    }

    #[test]
    fn a_public_sandbox_must_be_asked_for() {
        let keyed = "[server]\nlisten = \"0.0.0.0:8000\"\n[auth]\napi_keys = [\"k\"]\n";
        let unset = load(keyed, &[], Overrides::default()).expect("starts");
        assert!(unset.payments.sandbox_on() && unset.sandbox_local_only());
        let on = load(
            keyed,
            &[("CFA_PAYMENTS__SANDBOX", "true")],
            Overrides::default(),
        )
        .expect("asked for");
        assert!(on.payments.sandbox_on() && !on.sandbox_local_only());
        let off = load(
            keyed,
            &[("CFA_PAYMENTS__SANDBOX", "false")],
            Overrides::default(),
        )
        .expect("off");
        assert!(!off.payments.sandbox_on());
        let local = load("", &[], Overrides::default()).expect("loopback");
        assert!(local.payments.sandbox_on(), "on by default on loopback");
    }

    #[test]
    fn the_broker_and_cache_urls_have_short_names() {
        let s = load(
            "",
            &[
                ("CFA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                ("CFA_REDIS_URL", "redis://127.0.0.1:6379"),
            ],
            Overrides::default(),
        )
        .expect("both are built");
        assert!(s.amqp.url.0.starts_with("amqp://"));
        assert!(s.redis.url.0.starts_with("redis://"));
    }

    #[test]
    fn a_section_problem_is_reported_before_a_problem_between_sections() {
        // A split payment process without a broker is wrong too; a key that is wrong on its own
        // is named first, since fixing it needs no knowledge of the other sections.
        let split = Overrides {
            roles: Some(vec![Role::Payment]),
            ..Overrides::default()
        };
        let err = load("[database]\nmax_connections = 0\n", &[], split)
            .expect_err("zero connections must fail");
        assert!(
            err.to_string().contains("database.max_connections"),
            "{err}"
        );
    }
}
