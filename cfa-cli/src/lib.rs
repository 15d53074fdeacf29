//! `cfa-cli`: the operator's command line and live dashboard for CareForAll. It talks only to
//! the HTTP API.
//!
//! # Layout
//!
//! - [`cli`]: the commands, flags, help text and examples (clap).
//! - [`config`]: flags, `CFA_*` variables and profiles merged into one server, key and secret.
//! - [`client`]: the HTTP client; errors know their exit status (1 refused, 3 unreachable/5xx).
//! - [`commands`]: one function per command, answering an [`output::Output`].
//! - [`output`]: `--output table|json`, colour only on a terminal without `NO_COLOR`.
//! - [`tui`]: `cfa-cli watch` — state ([`tui::app`]), drawing ([`tui::ui`]), the event loop.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod output;
pub mod tui;

use std::process::ExitCode;
use std::time::Duration;

use clap::CommandFactory;

/// Runs a parsed command line; returns the exit status.
pub async fn run(cli: cli::Cli) -> ExitCode {
    let global = cli.global;
    if let cli::Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut cli::Cli::command(),
            "cfa-cli",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let resolved = match config::resolve(
        config::Profile {
            server: global.server,
            api_key: global.api_key,
            webhook_secret: global.webhook_secret,
        },
        global.profile.as_deref(),
        config::path(global.config),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = client::Client::new(
        &resolved.server,
        resolved.api_key,
        Duration::from_secs(global.timeout.max(1)),
    );
    if let cli::Command::Watch {
        campaign,
        interval_ms,
    } = cli.command
    {
        return match tui::run(
            client,
            campaign,
            Duration::from_millis(interval_ms.max(100)),
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let ctx = commands::Context {
        client,
        webhook_secret: resolved.webhook_secret,
    };
    match commands::run(&ctx, cli.command).await {
        Ok(out) => {
            output::print(&out, global.output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let (
                commands::CommandError::Client(client::ClientError::Refused { body, .. }),
                output::Format::Json,
            ) = (&e, global.output)
            {
                // Scripts get the server's answer on standard output as well.
                println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
            }
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
