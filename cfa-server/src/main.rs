//! `cfa-server`: run the platform, apply migrations, check the configuration, or print the
//! OpenAPI document.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use cfa_server::config::{ConfigError, Overrides, Settings};
use cfa_server::startup::{Application, shutdown_signal};

/// CareForAll: donation, payment, totals, notification, outbox relay and gateway in one binary.
///
/// With no configuration it runs on embedded backends: a SQLite file under ./data, an
/// in-process event bus fed by the outbox, on 127.0.0.1:8000.
#[derive(Parser)]
#[command(
    name = "cfa-server",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 done (run: stopped by SIGTERM or Ctrl-C), 1 a failure while running \
                  (a backend that cannot be reached, the port in use), 2 a usage or configuration \
                  error (the message names the flag or key)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform.
    ///
    /// Examples:
    ///   cfa-server run
    ///   CFA_DATABASE_URL=postgres://postgres@127.0.0.1/cfa cfa-server run
    ///   cfa-server run --config cfa.toml --listen 0.0.0.0:8000
    #[command(verbatim_doc_comment)]
    Run(Common),
    /// Apply pending database migrations and exit.
    ///
    /// Example: CFA_DATABASE_URL=postgres://postgres@127.0.0.1/cfa cfa-server migrate
    Migrate(Common),
    /// Print the OpenAPI document of the HTTP API (every role's endpoints) as JSON and exit.
    ///
    /// The same document is served at GET /api/v1/openapi.json.
    /// Example: cfa-server openapi > openapi.json
    Openapi,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets masked.
    ///
    /// Example: cfa-server config check --config cfa.toml
    Check(Common),
}

/// Options every command takes; they override the file and the environment.
#[derive(Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on (server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for the SQLite file and local state (server.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// postgres://… or sqlite://PATH (database.url).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Roles to run, comma-separated: donation, payment, totals, notification, relay (default:
    /// all, in one process). Split processes need PostgreSQL and RabbitMQ.
    #[arg(long = "role", value_name = "ROLES", value_delimiter = ',', value_parser = cfa_server::config::Role::parse)]
    roles: Option<Vec<cfa_server::config::Role>>,
}

impl Common {
    fn load(&self) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            roles: self.roles.clone(),
        };
        Ok(Settings::load(self.config.as_deref(), &overrides)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // sqlx and other crates may each bring a rustls provider; choose one before any TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_status(&e)
        }
    }
}

/// 2 for a configuration the user has to fix (as clap does for a usage error), 1 for a failure
/// while running (a database that cannot be reached, a port in use, …).
fn exit_status(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|cause| cause.is::<ConfigError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(common) => run(common.load()?).await,
        Command::Migrate(common) => {
            let settings = common.load()?;
            let telemetry = cfa_server::telemetry::init(
                &settings.log,
                &cfa_server::metrics::service(&settings.server),
            )?;
            let store =
                cfa_server::storage::connect(&settings.database, settings.data_dir(), true).await?;
            println!(
                "migrations applied ({} at {})",
                store.backend().as_str(),
                cfa_server::config::mask_url(&settings.database.effective_url(settings.data_dir()))
            );
            store.close().await;
            telemetry.shutdown();
            Ok(())
        }
        Command::Openapi => {
            let document = serde_json::to_string_pretty(&cfa_server::http::openapi::document())
                .context("serialising the OpenAPI document")?;
            println!("{document}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check(common),
        } => {
            let settings = common.load()?;
            let (data_dir, holds) = data_location(&settings);
            println!(
                "# configuration is valid; data directory {} ({holds})",
                data_dir.display()
            );
            println!("# effective values (secrets masked):");
            print!("{}", settings.to_masked_toml());
            Ok(())
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let telemetry = cfa_server::telemetry::init(
        &settings.log,
        &cfa_server::metrics::service(&settings.server),
    )?;
    let database_url =
        cfa_server::config::mask_url(&settings.database.effective_url(settings.data_dir()));
    let open = settings.auth.api_keys.is_empty();
    let (data_dir, data_holds) = data_location(&settings);
    let app = Application::build(settings)
        .await
        .context("starting cfa-server")?;
    let state = app.state();
    let roles: Vec<String> = cfa_server::config::Role::ALL
        .iter()
        .filter(|r| state.settings.server.runs(**r))
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    tracing::info!(
        listen = %format!("http://{}", app.local_addr()),
        data_dir = %data_dir.display(),
        data_dir_holds = %data_holds,
        roles = %roles.join(","),
        database = state.store.backend().as_str(),
        database_url = %database_url,
        bus = state.bus.name(),
        traces = if cfa_server::telemetry::exporting() { "otlp" } else { "not exported" },
        "CareForAll is listening"
    );
    if state.settings.operators_local_only() {
        tracing::warn!(
            "no operator keys: operator endpoints answer only requests from this host (loopback); \
             set auth.api_keys (CFA_AUTH__API_KEYS) to use them from elsewhere"
        );
    } else if open {
        tracing::warn!(
            "operator endpoints are open: set auth.api_keys (CFA_AUTH__API_KEYS) to require a key"
        );
    }
    if state.sandbox.is_some() && state.settings.sandbox_local_only() {
        tracing::warn!(
            "the sandbox payment provider answers only requests from this host (loopback); set \
             payments.sandbox = false (CFA_PAYMENTS__SANDBOX=false) in production, or true to \
             open it to all"
        );
    } else if state.sandbox.is_some() && !state.settings.server.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %state.settings.server.listen,
            "the sandbox payment provider is on and public: anyone who reaches it can confirm a payment; set payments.sandbox = false in production"
        );
    }
    let stopped = app.run_until_stopped(shutdown_signal()).await;
    // Blocking (bounded) work: off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    stopped
}

/// The data directory as an absolute path, and what this process keeps in it: an operator who
/// reads the start-up line knows what to back up, and that a container's may be thrown away.
fn data_location(settings: &Settings) -> (PathBuf, String) {
    let dir = std::path::absolute(settings.data_dir())
        .unwrap_or_else(|_| settings.data_dir().to_path_buf());
    let mut holds = Vec::new();
    if settings
        .database
        .effective_url(settings.data_dir())
        .starts_with("sqlite:")
    {
        holds.push("the SQLite database cfa.db");
    }
    if settings.payments.webhook_secret.is_empty() {
        holds.push("the generated webhook_secret");
    }
    if settings.notifications.history_link_secret.is_none() {
        holds.push("the generated history_link_secret");
    }
    if settings.notifications.sender == cfa_server::config::MailSender::File
        && settings.server.runs(cfa_server::config::Role::Notification)
    {
        holds.push("the mail sink mail/");
    }
    let holds = if holds.is_empty() {
        "nothing: database, secrets and mail are elsewhere".to_string()
    } else {
        holds.join(", ")
    };
    (dir, holds)
}
