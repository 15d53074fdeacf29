//! The `cfa-load` command line: goose's own flags, plus ours for the mix, the seed, the faults
//! and the server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cfa_load::run::{Fault, Plan, run};
use cfa_load::scenarios::Mix;
use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};
use goose::config::GooseConfiguration;

/// Load, faults and an invariant verdict for CareForAll.
///
/// Goose's flags (-H/--host, -u/--users, -t/--run-time, --threshold, --report-file, …) work as
/// in any goose load test; a profile fills in what is not given.
#[derive(Parser)]
#[command(
    name = "cfa-load",
    // goose's flags carry their own --version.
    disable_version_flag = true,
    after_help = "Examples:\n  cfa-load --profile smoke --host http://127.0.0.1:8000 --webhook-secret S --api-key K\n  cfa-load --profile stress -H http://127.0.0.1:8000 --report-file stress.html --report-file stress.json\n  CFA_DATABASE_URL=postgres://… CFA_AMQP_URL=amqp://… CFA_REDIS_URL=redis://… \\\n    cfa-load --profile chaos -H http://127.0.0.1:8000 --server-cmd 'cfa-server run'\n\nExit status: 0 every invariant and threshold held, 1 one broke, 2 usage, 3 the run could not\nhappen (no server, a verdict that cannot be written)."
)]
struct Cli {
    /// A ready-made run: smoke (under a minute, CI), stress, or chaos (faults on each backend).
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Scenario weights, e.g. journey=5,storm=1,totals=10,history=2.
    #[arg(long)]
    mix: Option<String>,
    /// Seed for amounts, donors and outcomes [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Webhook secret, for signed direct webhooks and storms.
    #[arg(long, env = "CFA_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Operator key, for the verdict's operator views.
    #[arg(long, env = "CFA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Campaigns to create for the run.
    #[arg(long)]
    campaigns: Option<usize>,
    /// A fault, as target:fault[@SECONDS] — postgres|rabbitmq|redis :
    /// pass|latency:MS|reset|blackhole|outage|flap (one-second outages a second apart), or
    /// server:kill (SIGKILL, started again after SECONDS). Repeat for several, one after another.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Seconds of each phase around a fault: baseline,fault,recovery (the fault's when it names
    /// none; the recovery lasts at least this, and until the fault's own verdict is in).
    #[arg(long)]
    phases: Option<String>,
    /// Start the server with this command (via sh -c), behind fault proxies for the backends
    /// named by CFA_DATABASE_URL, CFA_AMQP_URL and CFA_REDIS_URL.
    #[arg(long)]
    server_cmd: Option<String>,
    /// Seconds the invariants may take to hold after the load.
    #[arg(long)]
    converge: Option<u64>,
    /// Directory for verdict.json, truth.json and the server's log (created if missing).
    #[arg(long, value_name = "DIR", default_value = "cfa-load-out")]
    out: PathBuf,
    /// Where to write the verdict, if not in --out [default: OUT/verdict.json]; truth.json and
    /// the server's log go beside it.
    #[arg(long, value_name = "FILE")]
    verdict: Option<PathBuf>,
    #[command(flatten)]
    goose: GooseConfiguration,
}

#[derive(Clone, Copy, ValueEnum)]
enum Profile {
    Smoke,
    Stress,
    Chaos,
}

/// The heading goose's own options are listed under, after cfa-load's.
const GOOSE_HEADING: &str = "Goose options (as in any goose load test; see goose's book)";

/// The command line, with goose's options (spread by goose over six headings, each with pages
/// of long help) under one heading and one line each, after cfa-load's own.
fn command() -> clap::Command {
    let goose: Vec<clap::Id> = GooseConfiguration::augment_args(clap::Command::new("goose"))
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    Cli::command().mut_args(|arg| {
        if goose.contains(arg.get_id()) {
            arg.help_heading(GOOSE_HEADING).long_help(None)
        } else {
            arg
        }
    })
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.goose.version {
        println!("cfa-load {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(start(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// Why no verdict: the command line was wrong (2), or the run could not happen (3: no server,
/// a verdict that cannot be written, …).
enum Failure {
    Usage(String),
    Run(anyhow::Error),
}

use Failure::Usage;

/// What a profile fills in when the command line does not.
struct Defaults {
    users: usize,
    seconds: u64,
    mix: &'static str,
    campaigns: usize,
    faults: &'static [&'static str],
    phases: (u64, u64, u64),
    thresholds: &'static [&'static str],
    converge: u64,
    /// Goose's `--throttle-requests` (requests per second across all users), if any.
    throttle: Option<usize>,
}

fn defaults(profile: Option<Profile>) -> Defaults {
    let base = Defaults {
        users: 4,
        seconds: 30,
        mix: "journey=6,storm=2,totals=6,history=2",
        campaigns: 3,
        faults: &[],
        phases: (10, 10, 10),
        thresholds: &[],
        converge: 60,
        throttle: None,
    };
    match profile {
        // Under a server's default rate limit (600 requests a minute per client address, burst
        // 100), so it works against a plain `cfa-server run`: 5 requests a second, plus the
        // storms' extra copies.
        Some(Profile::Smoke) => Defaults {
            seconds: 15,
            thresholds: &["error-rate<1%"],
            throttle: Some(5),
            ..base
        },
        Some(Profile::Stress) => Defaults {
            users: 32,
            seconds: 60,
            mix: "journey=4,storm=1,totals=12,history=3",
            campaigns: 10,
            thresholds: &["error-rate<1%", "p99<2s for POST baseline: /donations"],
            converge: 120,
            ..base
        },
        // Issue #15: each fault ends with every invariant holding within 15 s of its end.
        Some(Profile::Chaos) => Defaults {
            users: 8,
            seconds: 0,
            campaigns: 5,
            faults: &[
                "server:kill@5",
                "rabbitmq:outage@30",
                "redis:blackhole@30",
                "postgres:outage@15",
                "postgres:blackhole@15",
                "postgres:flap@30",
            ],
            phases: (10, 15, 15),
            thresholds: &["error-rate<5%"],
            converge: 180,
            // A busy day, not a saturated machine: the profile measures how the platform heals,
            // which needs capacity left over to catch up with. Unpaced, the load uses all of it
            // and an outage's backlog can only drain as fast as the load lets it (docs/LOAD.md).
            throttle: Some(200),
            ..base
        },
        None => base,
    }
}

/// The faults to run: those given, or the profile's that the environment lets it apply.
fn faults(cli: &Cli, profile: &[&str]) -> Result<Vec<Fault>, Failure> {
    let given: Vec<String> = if cli.faults.is_empty() {
        profile
            .iter()
            .filter(|f| match f.split(':').next() {
                Some("postgres") => std::env::var_os("CFA_DATABASE_URL").is_some(),
                Some("rabbitmq") => std::env::var_os("CFA_AMQP_URL").is_some(),
                Some("redis") => std::env::var_os("CFA_REDIS_URL").is_some(),
                _ => cli.server_cmd.is_some(),
            })
            .map(|f| f.to_string())
            .collect()
    } else {
        cli.faults.clone()
    };
    given
        .iter()
        .map(|f| Fault::parse(f).map_err(Usage))
        .collect()
}

/// The verdict's path, its directory created so the run's files can be written beside it.
fn output_file(out: &Path, verdict: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let verdict = verdict.unwrap_or_else(|| out.join("verdict.json"));
    if let Some(dir) = verdict.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))
            .map_err(Failure::Run)?;
    }
    Ok(verdict)
}

fn phases(text: Option<&str>, default: (u64, u64, u64)) -> Result<(u64, u64, u64), Failure> {
    let Some(p) = text else {
        return Ok(default);
    };
    let parts: Vec<u64> = p.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    match parts[..] {
        [b, f, r] => Ok((b, f, r)),
        _ => Err(Usage(format!(
            "--phases `{p}`: write baseline,fault,recovery seconds, e.g. 10,10,10"
        ))),
    }
}

async fn start(cli: Cli) -> Result<bool, Failure> {
    let d = defaults(cli.profile);
    let mix = Mix::parse(cli.mix.as_deref().unwrap_or(d.mix)).map_err(Usage)?;
    let fault_list = faults(&cli, d.faults)?;
    let phase_seconds = phases(cli.phases.as_deref(), d.phases)?;
    let mut goose = cli.goose;
    let host = goose
        .host
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_string());
    goose.host = Some(host.clone());
    let users = goose.users.unwrap_or(d.users);
    let run_time = goose
        .run_time
        .is_none()
        .then_some(d.seconds)
        .filter(|s| *s > 0);
    if goose.throttle_requests.is_none() {
        goose.throttle_requests = d.throttle;
    }
    if goose.threshold.is_empty() {
        goose.threshold = d.thresholds.iter().map(|t| t.to_string()).collect();
    }
    let plan = Plan {
        host,
        mix,
        seed: cli
            .seed
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64),
        campaigns: cli.campaigns.unwrap_or(d.campaigns),
        webhook_secret: cli.webhook_secret,
        api_key: cli.api_key,
        faults: fault_list,
        phase_seconds,
        server_cmd: cli.server_cmd,
        converge: Duration::from_secs(cli.converge.unwrap_or(d.converge)),
        verdict: output_file(&cli.out, cli.verdict)?,
        profile: cli.profile.map(|p| match p {
            Profile::Smoke => "smoke".to_string(),
            Profile::Stress => "stress".to_string(),
            Profile::Chaos => "chaos".to_string(),
        }),
    };
    run(plan, goose, run_time, users)
        .await
        .map_err(Failure::Run)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn help_lists_our_options_then_gooses_under_one_heading() {
        // goose's own --help alone ran to 664 lines over six headings.
        let help = super::command().render_long_help().to_string();
        let lines = help.lines().count();
        assert!(lines < 300, "--help is {lines} lines:\n{help}");
        let short = super::command().render_help().to_string();
        assert!(short.lines().count() < 130, "-h:\n{short}");
        for heading in [
            "Load test:",
            "Reports:",
            "Console and Goose log:",
            "Information:",
        ] {
            assert!(
                !help.contains(heading),
                "{heading} is goose's own heading:\n{help}"
            );
        }
        let ours = help.find("--profile").expect("ours");
        let goose = help.find(super::GOOSE_HEADING).expect("goose's heading");
        let users = help.find("-u, --users").expect("goose's --users");
        assert!(ours < goose && goose < users, "{help}");
    }

    #[test]
    fn our_flags_and_gooses_live_together() {
        super::Cli::command().debug_assert();
        let cli = super::Cli::try_parse_from([
            "cfa-load",
            "--profile",
            "smoke",
            "--host",
            "http://x",
            "-u",
            "3",
            "--seed",
            "7",
            "--threshold",
            "p95<1s",
            "--fault",
            "redis:latency:50",
        ])
        .expect("parses");
        assert_eq!(cli.goose.host.as_deref(), Some("http://x"));
        assert_eq!(cli.goose.users, Some(3));
        assert_eq!(cli.seed, Some(7));
        assert_eq!(cli.faults, ["redis:latency:50"]);
    }
}
