//! `cfa-cli`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS provider for reqwest (see DEPENDENCIES.md: two would make rustls panic).
    let _ = rustls::crypto::ring::default_provider().install_default();
    cfa_cli::run(cfa_cli::cli::Cli::parse()).await
}
