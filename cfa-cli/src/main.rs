//! `cfa-cli`: the operator CLI and the live TUI. Not built yet (issue #7): this binary only explains that.

use std::process::ExitCode;

use clap::Parser;

/// CareForAll the operator CLI and the live TUI.
///
/// NOT BUILT YET: this tool is planned (issue #7) and does nothing so far. It exits with
/// status 2 rather than pretend to work.
#[derive(Parser)]
#[command(name = "cfa-cli", version)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("cfa-cli is not built yet (issue #7); run `cfa-cli --help` for what it will do");
    ExitCode::from(2)
}
