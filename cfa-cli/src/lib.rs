//! `cfa-cli`: the operator's command line and live dashboard for CareForAll. It talks only to
//! the HTTP API.
//!
//! # Layout
//!
//! - [`cli`]: the commands, flags, help text and examples (clap).
//! - [`config`]: flags, `CFA_*` variables and profiles merged into one server, key and secret.
//! - [`client`]: the HTTP client; errors know their exit status (1 refused, 3 unreachable/5xx).
//! - [`commands`]: one function per command, answering an [`output::Output`].
//! - [`completions`]: shell completion scripts.
//! - [`listen`]: `cfa-cli listen`, a live tail of what the platform records.
//! - [`output`]: `--output table|json`, colour only on a terminal without `NO_COLOR`.
//! - [`profiles`]: `cfa-cli profiles`, the config file as the CLI reads it.
//! - [`tui`]: `cfa-cli watch` — state ([`tui::app`]), drawing ([`tui::ui`]), the event loop.

pub mod cli;
pub mod client;
pub mod commands;
pub mod completions;
pub mod config;
pub mod listen;
pub mod output;
pub mod profiles;
pub mod tui;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Prints an error line on standard error (never panics if it is closed).
fn error_line(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Ends after a write to standard output: quietly when the reader went away (`| head`).
fn written(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::quiet(&e) => ExitCode::SUCCESS,
        Err(e) => {
            error_line(&format!("cannot write the output: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Runs a parsed command line; returns the exit status.
pub async fn run(cli: cli::Cli) -> ExitCode {
    let global = cli.global;
    if let cli::Command::Completions { shell } = cli.command {
        return written(output::raw(completions::script(shell).as_bytes()));
    }
    let given = config::Profile {
        server: global.server,
        api_key: global.api_key,
        webhook_secret: global.webhook_secret,
    };
    let file = config::path(global.config);
    if let cli::Command::Profiles = cli.command {
        return match profiles::show(given, global.profile.as_deref(), file) {
            Ok(out) => written(output::print(&out, global.output)),
            Err(e) => {
                error_line(&e);
                ExitCode::from(2)
            }
        };
    }
    let resolved = match config::resolve(given, global.profile.as_deref(), file) {
        Ok(r) => r,
        Err(e) => {
            error_line(&e);
            return ExitCode::from(2);
        }
    };
    let client = client::Client::new(
        &resolved.server,
        resolved.api_key,
        Duration::from_secs(global.timeout.max(1)),
    );
    match cli.command {
        cli::Command::Watch {
            campaign,
            interval_ms,
        } => {
            return match tui::run(
                client,
                campaign,
                Duration::from_millis(interval_ms.max(100)),
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error_line(&format!("{e:#}"));
                    ExitCode::from(1)
                }
            };
        }
        cli::Command::Listen(args) => {
            return match listen::run(&client, &args, global.output).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(listen::ListenError::Closed) => ExitCode::SUCCESS,
                Err(e) => {
                    error_line(&e.to_string());
                    ExitCode::from(e.exit_code())
                }
            };
        }
        _ => {}
    }
    let ctx = commands::Context {
        client,
        webhook_secret: resolved.webhook_secret,
    };
    api_command(&ctx, cli.command, global.output).await
}

/// Runs a command over the API and prints what it answered, or its error.
async fn api_command(
    ctx: &commands::Context,
    command: cli::Command,
    format: output::Format,
) -> ExitCode {
    match commands::run(ctx, command).await {
        Ok(out) => written(output::print(&out, format)),
        Err(e) => {
            let shown = match (&e, format) {
                (commands::CommandError::Answered { output: out, .. }, format) => {
                    output::print(out, format)
                }
                // Scripts get the server's answer on standard output as well.
                (
                    commands::CommandError::Client(client::ClientError::Refused { body, .. }),
                    output::Format::Json,
                ) => output::raw(
                    (serde_json::to_string_pretty(body).unwrap_or_default() + "\n").as_bytes(),
                ),
                _ => Ok(()),
            };
            if let Err(write) = shown
                && !output::quiet(&write)
            {
                error_line(&format!("cannot write the output: {write}"));
            }
            error_line(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}
