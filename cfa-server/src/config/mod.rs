//! Layered configuration: defaults, then a TOML file (`--config`), then `CFA_*` environment
//! variables, then command-line flags.
//!
//! Every key has an environment name `CFA_<SECTION>__<KEY>` (`CFA_OUTBOX__BATCH_SIZE`); the common
//! ones have short names too (`CFA_LISTEN`, `CFA_DATA_DIR`, `CFA_DATABASE_URL`). An unknown key in
//! the file or in a `CFA_<SECTION>__<KEY>` variable is an error that names it; short `CFA_*` names
//! the server does not know (`CFA_SERVER`, `CFA_API_KEY`, …) belong to the other tools and are
//! left alone. Secrets serialise masked, so printing the effective configuration is safe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Short environment names and the keys they set.
const SHORT_ENV_NAMES: &[(&str, &str)] = &[
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
}

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
    /// The roles this process runs (`--role`); empty means all of them.
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

impl ServerSettings {
    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }

    /// Whether this process runs every role (the all-in-one default).
    pub fn all_in_one(&self) -> bool {
        Role::ALL.iter().all(|r| self.runs(*r))
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
            roles: Vec::new(),
        }
    }
}

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

/// A database URL whose password never prints.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&mask_url(&self.0))
    }
}

/// Replaces the password of a `scheme://user:password@host` URL, and the value of any
/// `password`-like query parameter, with `****`.
pub fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
                None => base.to_string(),
            },
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    match query {
        None => base,
        Some(query) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                        format!("{k}=****")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", masked.join("&"))
        }
    }
}

/// `[outbox]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Run the relay in this process.
    pub relay_enabled: bool,
    /// Rows claimed per batch.
    pub batch_size: i64,
    /// How often an idle relay looks for new rows, in milliseconds (new rows written by this
    /// process wake it at once).
    pub poll_interval_ms: u64,
    /// How long a claimed row stays leased to one relay, in seconds.
    pub lease_seconds: u64,
    /// Longest back-off after failed deliveries, in milliseconds.
    pub max_backoff_ms: u64,
    /// How long delivered rows are kept, in hours.
    pub retention_hours: u64,
    /// Delivery attempts before an event is set aside as a dead letter.
    pub max_attempts: i32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            relay_enabled: true,
            batch_size: 100,
            poll_interval_ms: 250,
            lease_seconds: 30,
            max_backoff_ms: 10_000,
            retention_hours: 168,
            max_attempts: 10,
        }
    }
}

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

/// `[auth]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Operator API keys (`Authorization: Bearer <key>`). Empty: operator endpoints are open,
    /// which start-up and `/ready` both say.
    #[serde(deserialize_with = "secrets_from_list_or_csv")]
    pub api_keys: Vec<Secret>,
    /// Allow open operator endpoints on a non-loopback address (otherwise start-up refuses).
    pub allow_open: bool,
}

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
    /// Run the built-in sandbox payment provider.
    pub sandbox: bool,
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
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            webhook_secret: Vec::new(),
            allow_unsigned_webhooks: false,
            signature_tolerance_seconds: 300,
            sandbox: true,
            sandbox_webhook_url: String::new(),
            sandbox_delay_ms: 0,
            sandbox_duplicate_probability: 0.0,
            sandbox_reorder_probability: 0.0,
            sandbox_max_attempts: 15,
            sandbox_poll_interval_ms: 100,
            reconcile_after_seconds: 900,
            reconcile_interval_seconds: 60,
        }
    }
}

/// `[totals]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotalsSettings {
    /// Longest a cached total lives, in seconds; a safety net only, since every change to the
    /// read model invalidates its entry.
    pub cache_ttl_seconds: u64,
}

impl Default for TotalsSettings {
    fn default() -> Self {
        TotalsSettings {
            cache_ttl_seconds: 5,
        }
    }
}

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
    /// Public base URL of the API, for the donor history links; empty means the listen address.
    pub public_base_url: String,
    /// How long a history link stays valid, in hours.
    pub history_link_ttl_hours: u64,
    /// Secret signing the history links; empty means one generated into
    /// `<data_dir>/history_link_secret`.
    pub history_link_secret: Option<Secret>,
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
            public_base_url: String::new(),
            history_link_ttl_hours: 24 * 90,
            history_link_secret: None,
        }
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

/// `[redis]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:6379/0`; empty means no Redis. Masked when printed.
    pub url: DatabaseUrl,
    /// A prefix for every key.
    pub prefix: String,
    /// Longest a Redis call may take before the request falls back to the database, in ms.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: DatabaseUrl(String::new()),
            prefix: "cfa:".into(),
            timeout_ms: 50,
        }
    }
}

/// `[gateway]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// `[gateway.rate_limit]`
    pub rate_limit: RateLimitSettings,
    /// Upstream base URLs per service (`donations`, `payments`, `totals`, `notifications`), for
    /// the gateway role.
    pub upstreams: std::collections::BTreeMap<String, Vec<String>>,
    /// Longest an upstream may take to answer, in milliseconds.
    pub timeout_ms: u64,
    /// How often each upstream's `/health` is checked, in milliseconds.
    pub health_interval_ms: u64,
    /// Consecutive failures that open an upstream's circuit breaker.
    pub failure_threshold: u32,
    /// How long an open breaker keeps an upstream out, in seconds.
    pub open_seconds: u64,
    /// Further upstreams tried when one fails (only for requests that are safe to repeat).
    pub retries: u32,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            rate_limit: RateLimitSettings::default(),
            upstreams: std::collections::BTreeMap::new(),
            timeout_ms: 10_000,
            health_interval_ms: 2_000,
            failure_threshold: 3,
            open_seconds: 10,
            retries: 1,
        }
    }
}

/// `[gateway.rate_limit]`: token buckets per client IP and per API key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Apply the limits (turn off for load tests: `CFA_GATEWAY__RATE_LIMIT__ENABLED=false`).
    pub enabled: bool,
    /// Sustained requests per minute from one client IP (requests without an API key).
    pub per_ip_per_minute: u32,
    /// Sustained requests per minute with one API key.
    pub per_key_per_minute: u32,
    /// Requests a client may send at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            per_ip_per_minute: 600,
            per_key_per_minute: 6000,
            burst: 100,
        }
    }
}

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

/// A secret string that serialises and debug-prints as `****`.
#[derive(Clone)]
pub struct Secret(pub SecretString);

impl Secret {
    /// The secret itself, for comparison only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(SecretString::from(value))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(SecretString::from(s)))
    }
}

/// Accepts a list of strings, or one comma-separated string (handy in environment variables).
fn secrets_from_list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    let values = match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv.split(',').map(str::to_string).collect(),
    };
    Ok(values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(Secret::from)
        .collect())
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
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "server.body_limit_bytes",
                self.server.body_limit_bytes as u64,
            ),
            (
                "server.request_timeout_seconds",
                self.server.request_timeout_seconds,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            (
                "database.acquire_timeout_seconds",
                self.database.acquire_timeout_seconds,
            ),
            ("outbox.poll_interval_ms", self.outbox.poll_interval_ms),
            ("outbox.lease_seconds", self.outbox.lease_seconds),
            ("outbox.max_backoff_ms", self.outbox.max_backoff_ms),
            (
                "idempotency.retention_hours",
                self.idempotency.retention_hours,
            ),
            (
                "idempotency.sweep_interval_seconds",
                self.idempotency.sweep_interval_seconds,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("{key} must be greater than 0")));
        }
        let at_most = [
            (
                "server.request_timeout_seconds",
                self.server.request_timeout_seconds,
                3_600,
            ),
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
                3_600,
            ),
            (
                "database.acquire_timeout_seconds",
                self.database.acquire_timeout_seconds,
                3_600,
            ),
            (
                "outbox.poll_interval_ms",
                self.outbox.poll_interval_ms,
                3_600_000,
            ),
            ("outbox.lease_seconds", self.outbox.lease_seconds, 86_400),
            (
                "outbox.max_backoff_ms",
                self.outbox.max_backoff_ms,
                3_600_000,
            ),
            (
                "outbox.retention_hours",
                self.outbox.retention_hours,
                87_600,
            ),
            (
                "idempotency.retention_hours",
                self.idempotency.retention_hours,
                87_600,
            ),
            (
                "idempotency.sweep_interval_seconds",
                self.idempotency.sweep_interval_seconds,
                86_400,
            ),
            (
                "payments.signature_tolerance_seconds",
                self.payments.signature_tolerance_seconds,
                86_400,
            ),
            (
                "payments.sandbox_delay_ms",
                self.payments.sandbox_delay_ms,
                3_600_000,
            ),
            (
                "payments.sandbox_poll_interval_ms",
                self.payments.sandbox_poll_interval_ms,
                3_600_000,
            ),
            (
                "payments.reconcile_after_seconds",
                self.payments.reconcile_after_seconds,
                30 * 86_400,
            ),
            (
                "payments.reconcile_interval_seconds",
                self.payments.reconcile_interval_seconds,
                86_400,
            ),
        ];
        if let Some((key, _, max)) = at_most.iter().find(|(_, v, max)| v > max) {
            return Err(ConfigError(format!("{key} must be at most {max}")));
        }
        if !(1..=1000).contains(&self.outbox.max_attempts) {
            return Err(ConfigError(
                "outbox.max_attempts must be between 1 and 1000".into(),
            ));
        }
        if self.auth.api_keys.is_empty()
            && !self.auth.allow_open
            && !self.server.listen.ip().is_loopback()
        {
            return Err(ConfigError(format!(
                "auth.api_keys: the server would listen on {} with the operator endpoints open to the network; \
                 set auth.api_keys (CFA_AUTH__API_KEYS), or auth.allow_open = true if that is really meant",
                self.server.listen
            )));
        }
        if self.server.runs(Role::Gateway) && !self.server.all_in_one() {
            if self.gateway.upstreams.is_empty() {
                return Err(ConfigError(
                    "gateway.upstreams: the gateway role needs upstreams, e.g. \
                     CFA_GATEWAY__UPSTREAMS__DONATIONS='[\"http://10.0.0.1:8001\"]'"
                        .into(),
                ));
            }
            for (service, urls) in &self.gateway.upstreams {
                if !["donations", "payments", "totals", "notifications"].contains(&service.as_str())
                {
                    return Err(ConfigError(format!(
                        "gateway.upstreams.{service}: services are donations, payments, totals, notifications"
                    )));
                }
                if urls.is_empty()
                    || urls
                        .iter()
                        .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                {
                    return Err(ConfigError(format!(
                        "gateway.upstreams.{service}: give one or more http(s) base URLs"
                    )));
                }
            }
        }
        if !self.server.all_in_one() && self.amqp.url.0.trim().is_empty() {
            return Err(ConfigError(
                "server.roles: split processes exchange events through RabbitMQ; set amqp.url (CFA_AMQP_URL)".into(),
            ));
        }
        if !self.server.all_in_one() && self.database.url.0.trim().is_empty() {
            return Err(ConfigError(
                "server.roles: split processes share one database; set database.url (CFA_DATABASE_URL) to PostgreSQL"
                    .into(),
            ));
        }
        if !(1..=10_000).contains(&self.outbox.batch_size) {
            return Err(ConfigError(
                "outbox.batch_size must be between 1 and 10000".into(),
            ));
        }
        for (key, p) in [
            (
                "payments.sandbox_duplicate_probability",
                self.payments.sandbox_duplicate_probability,
            ),
            (
                "payments.sandbox_reorder_probability",
                self.payments.sandbox_reorder_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError(format!("{key} must be between 0 and 1")));
            }
        }
        let url = self.payments.sandbox_webhook_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "payments.sandbox_webhook_url must be an http(s) URL, got {url:?}"
            )));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError(format!(
                "log.level: {:?} is not a valid filter (try \"info\" or \"cfa_server=debug\")",
                self.log.level
            )));
        }
        Ok(())
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

/// Turns figment's error into one line that names the key and where it came from.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
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

    // The closure's error type is figment::Jail's, not ours.
    #[allow(clippy::result_large_err)]
    fn load(
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
    fn gateway_upstreams_come_from_the_environment_and_are_checked() {
        let env = [
            ("CFA_AMQP_URL", "amqp://x"),
            ("CFA_DATABASE_URL", "postgres://db/cfa"),
            (
                "CFA_GATEWAY__UPSTREAMS__DONATIONS",
                "[\"http://127.0.0.1:8001\", \"http://127.0.0.1:8011\"]",
            ),
        ];
        let gateway = Overrides {
            roles: Some(vec![Role::Gateway]),
            ..Overrides::default()
        };
        let s = load("", &env, gateway.clone()).expect("gateway");
        assert_eq!(s.gateway.upstreams["donations"].len(), 2);
        assert_eq!(s.server.listen.port(), 8000);
        let err = load("", &env[..2], gateway.clone()).expect_err("no upstreams");
        assert!(err.to_string().contains("gateway.upstreams"), "{err}");
        let bad = [
            env[0],
            env[1],
            ("CFA_GATEWAY__UPSTREAMS__WALLETS", "[\"http://x\"]"),
        ];
        let err = load("", &bad, gateway).expect_err("unknown service");
        assert!(err.to_string().contains("wallets"), "{err}");
    }

    #[test]
    fn passwords_in_query_parameters_are_masked_too() {
        assert_eq!(
            mask_url("postgres://app@db/cfa?password=hunter2&sslmode=require&sslpassword=x"),
            "postgres://app@db/cfa?password=****&sslmode=require&sslpassword=****"
        );
    }

    #[test]
    fn open_operator_endpoints_are_refused_off_loopback() {
        let err = load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n",
            &[],
            Overrides::default(),
        )
        .expect_err("open on the network must be refused");
        assert!(err.to_string().contains("auth.api_keys"), "{err}");
        load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n[auth]\napi_keys = [\"k\"]\n",
            &[],
            Overrides::default(),
        )
        .expect("a key makes it fine");
        load(
            "[server]\nlisten = \"0.0.0.0:8000\"\n[auth]\nallow_open = true\n",
            &[],
            Overrides::default(),
        )
        .expect("so does saying so");
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
    fn api_keys_accept_a_comma_separated_variable() {
        let s = load(
            "",
            &[("CFA_AUTH__API_KEYS", "one,two")],
            Overrides::default(),
        )
        .expect("loads");
        let keys: Vec<&str> = s.auth.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["one", "two"]);
    }
}
