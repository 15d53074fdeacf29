//! `cfa-load`: goose stress scenarios, fault injection and the invariant verdict. Not built yet (issue #8): this binary only explains that.

use std::process::ExitCode;

use clap::Parser;

/// CareForAll goose stress scenarios, fault injection and the invariant verdict.
///
/// NOT BUILT YET: this tool is planned (issue #8) and does nothing so far. It exits with
/// status 2 rather than pretend to work.
#[derive(Parser)]
#[command(name = "cfa-load", version)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("cfa-load is not built yet (issue #8); run `cfa-load --help` for what it will do");
    ExitCode::from(2)
}
