//! `cfa-release`: change detection, semver bumps, changelogs and tags. Not built yet (issue #6): this binary only explains that.

use std::process::ExitCode;

use clap::Parser;

/// CareForAll change detection, semver bumps, changelogs and tags.
///
/// NOT BUILT YET: this tool is planned (issue #6) and does nothing so far. It exits with
/// status 2 rather than pretend to work.
#[derive(Parser)]
#[command(name = "cfa-release", version)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!(
        "cfa-release is not built yet (issue #6); run `cfa-release --help` for what it will do"
    );
    ExitCode::from(2)
}
