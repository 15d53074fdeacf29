//! The `cfa-release` command line: parses flags into requests for the library and prints what
//! it answers. Exit status: 0 done, 1 refused or failed (the message says what to do), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cfa_release::apply::{ApplyOptions, apply};
use cfa_release::changes::{changed_in_plan, changed_since, check, check_since_release};
use cfa_release::config::Config;
use cfa_release::git::Git;
use cfa_release::plan::{Plan, PlanRequest, plan};
use clap::{Parser, Subcommand, ValueEnum};

/// Change detection, semver bumps, changelogs, tags and image tags for a repository of
/// components, from its git history and conventional commits.
#[derive(Parser)]
#[command(
    name = "cfa-release",
    version,
    after_help = "See docs/RELEASING.md for a worked example."
)]
struct Cli {
    /// The repository (any directory inside it).
    #[arg(long, global = true, default_value = ".", env = "CFA_RELEASE_REPO")]
    repo: PathBuf,
    /// The component file [default: release.toml at the repository root].
    #[arg(long, global = true, env = "CFA_RELEASE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Shows what a release of HEAD would do (read-only).
    #[command(
        after_help = "Examples:\n  cfa-release plan\n  cfa-release plan --pre rc --output json > plan.json"
    )]
    Plan {
        /// Cut pre-releases with this identifier (`rc` → 1.3.0-rc.1, then rc.2).
        #[arg(long)]
        pre: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Releases: optional changelog and manifest commit, then every tag at once.
    #[command(
        after_help = "Examples:\n  cfa-release apply --changelog --bump-manifests\n  cfa-release apply --plan plan.json   # refuses if HEAD moved since\n  git push --atomic origin HEAD --tags"
    )]
    Apply {
        /// Apply this plan (from `plan --output json`) instead of planning now.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Refuse unless HEAD is this commit.
        #[arg(long)]
        expect_head: Option<String>,
        /// Cut pre-releases with this identifier (ignored with --plan, which says its own).
        #[arg(long)]
        pre: Option<String>,
        /// Prepend each release to the component's CHANGELOG.md (in a release commit).
        #[arg(long)]
        changelog: bool,
        /// Set the version in each released component's Cargo.toml and Cargo.lock.
        #[arg(long)]
        bump_manifests: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Explains, commit by commit, how one component's next version was reached.
    #[command(after_help = "Example:\n  cfa-release explain cfa-server")]
    Explain {
        /// The component.
        component: String,
        #[arg(long)]
        pre: Option<String>,
    },
    /// Lints the commit messages of a range (for pull requests), or of everything since the
    /// last release.
    #[command(
        after_help = "Examples:\n  cfa-release check --range origin/main..HEAD\n  cfa-release check --range HEAD~3\n  cfa-release check --since-release   # CI on main: every commit after the newest tags"
    )]
    Check {
        /// `from..to`, or one revision meaning `rev..HEAD`.
        #[arg(long, default_value = "origin/main..HEAD")]
        range: String,
        /// Check every commit of HEAD's history after the newest release tag of each component
        /// (works in a fresh `git clone`, which brings the tags; not in a shallow one).
        #[arg(long, conflicts_with = "range")]
        since_release: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Lists the components CI should build and test.
    #[command(
        after_help = "Examples:\n  cfa-release changed --output json                     # on main: what the release plan releases\n  cfa-release changed --since origin/main --output json  # on a pull request"
    )]
    Changed {
        /// Compare HEAD with its merge base with this revision instead of with each
        /// component's last release.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

/// `println!` that returns the write's error instead of panicking, so `cfa-release explain |
/// head` ends quietly when `head` closes the pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader closed the pipe (`| head`): nothing more to say, as `cat` would.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<cfa_release::Error>() {
                Some(cfa_release::Error::Usage(_)) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

fn open(cli: &Cli) -> anyhow::Result<(Git, Config)> {
    let git = Git::open(&cli.repo)?;
    let file = cli
        .config
        .clone()
        .unwrap_or_else(|| git.root().join("release.toml"));
    let config = Config::load(git.root(), &file)?;
    Ok((git, config))
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (git, config) = open(&cli)?;
    match cli.command {
        Command::Plan { pre, output } => {
            let plan = plan(&git, &config, &PlanRequest { pre })?;
            match output {
                Output::Json => json(&plan)?,
                Output::Text => print_plan(&plan)?,
            }
        }
        Command::Apply {
            plan: plan_file,
            expect_head,
            pre,
            changelog,
            bump_manifests,
            dry_run,
            output,
        } => {
            let plan = match plan_file {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read the plan {}", file.display()))?;
                    serde_json::from_str::<Plan>(&text).with_context(|| {
                        format!(
                            "{} is not a plan; make one with `cfa-release plan --output json`",
                            file.display()
                        )
                    })?
                }
                None => plan(&git, &config, &PlanRequest { pre })?,
            };
            if dry_run {
                match output {
                    Output::Json => json(&plan)?,
                    Output::Text => {
                        say!("dry run: nothing is changed");
                        print_plan(&plan)?;
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let options = ApplyOptions {
                expect_head,
                changelog,
                bump_manifests,
            };
            let applied = apply(&git, &config, &plan, &options)?;
            match output {
                Output::Json => json(&applied)?,
                Output::Text => {
                    if applied.tags.is_empty() {
                        say!("nothing to release");
                    }
                    if let Some(commit) = &applied.release_commit {
                        say!("release commit {commit}");
                    }
                    for tag in &applied.tags {
                        let state = if tag.created {
                            "created"
                        } else {
                            "already there"
                        };
                        say!("tag {} ({state})", tag.name);
                    }
                    if !applied.tags.is_empty() {
                        say!("push with: git push --atomic origin HEAD --tags");
                    }
                }
            }
        }
        Command::Explain { component, pre } => {
            let plan = plan(&git, &config, &PlanRequest { pre })?;
            let Some(c) = plan.components.iter().find(|c| c.name == component) else {
                let names: Vec<&str> = plan.components.iter().map(|c| c.name.as_str()).collect();
                return Err(cfa_release::Error::Usage(format!(
                    "no component is called {component}; release.toml defines {}",
                    names.join(", ")
                ))
                .into());
            };
            let def = config.component(&component).context("component")?;
            say!("{}", c.name);
            say!(
                "  files: {} (excluding: {})",
                def.paths.join(", "),
                if def.exclude.is_empty() {
                    "nothing".to_string()
                } else {
                    def.exclude.join(", ")
                }
            );
            if !def.depends_on.is_empty() {
                let deps: Vec<String> = def
                    .depends_on
                    .iter()
                    .map(|(d, why)| {
                        format!(
                            "{d} ({})",
                            match why {
                                cfa_release::config::Because::Configured => "release.toml",
                                cfa_release::config::Because::Cargo => "Cargo path dependency",
                            }
                        )
                    })
                    .collect();
                say!("  depends on: {}", deps.join(", "));
            }
            match &c.old_tag {
                Some(tag) => say!("  last release: {tag}"),
                None => say!("  last release: none"),
            }
            say!(
                "  commits since that touched its files: {}",
                c.commits.len()
            );
            for commit in &c.commits {
                say!(
                    "    {} {} — {}",
                    &commit.id[..7],
                    commit.summary,
                    commit.effect
                );
            }
            match &c.new_version {
                Some(v) => {
                    say!("  bump: {} → {v}", format!("{:?}", c.bump).to_lowercase());
                    if let Some(id) = &c.decided_by {
                        say!("  decided by: {}", &id[..7.min(id.len())]);
                    }
                    for r in &c.reasons {
                        say!("    because {r}");
                    }
                    if !c.image_tags.is_empty() {
                        say!("  image tags: {}", c.image_tags.join(", "));
                    }
                    say!("\n{}", c.changelog);
                }
                None => say!(
                    "  not released: nothing since {} asks for it",
                    c.old_tag.as_deref().unwrap_or("the start")
                ),
            }
        }
        Command::Check {
            range,
            since_release,
            output,
        } => {
            let (after, checked, violations) = if since_release {
                check_since_release(&git, &config)?
            } else {
                let (checked, violations) = check(&git, &range)?;
                (Vec::new(), checked, violations)
            };
            match output {
                Output::Json => json(&serde_json::json!({
                    "checked": checked,
                    "violations": violations,
                    "after_tags": after,
                }))?,
                Output::Text => {
                    for v in &violations {
                        say!("{} {}\n    {}", &v.id[..7], v.summary, v.problem);
                    }
                    let since = if after.is_empty() {
                        String::new()
                    } else {
                        format!(" after {}", after.join(", "))
                    };
                    say!(
                        "{checked} commits checked{since}, {} not conventional",
                        violations.len()
                    );
                }
            }
            if !violations.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Changed { since, output } => {
            let changed = match since {
                Some(base) => changed_since(&git, &config, &base)?,
                None => changed_in_plan(&plan(&git, &config, &PlanRequest::default())?),
            };
            match output {
                Output::Json => json(&serde_json::json!({
                    "components": changed,
                    "packages": changed.iter().filter_map(|c| c.package.clone()).collect::<Vec<_>>(),
                }))?,
                Output::Text => {
                    for c in &changed {
                        say!("{}\t{}", c.name, c.reasons.join("; "));
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Plan) -> std::io::Result<()> {
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let branch = plan.branch.as_deref().unwrap_or("detached HEAD");
    say!("plan for {} on {branch}", &plan.head[..12]);
    let width = plan
        .components
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    say!(
        "{:width$}  {:>14}  {:>14}  {:6}  why",
        "component",
        "from",
        "to",
        "bump"
    );
    for c in &plan.components {
        let from = c.old_version.as_deref().unwrap_or("-");
        let to = c.new_version.as_deref().unwrap_or("unchanged");
        let why = c.reasons.first().map_or("", String::as_str);
        let more = if c.reasons.len() > 1 {
            format!(" (+{} more)", c.reasons.len() - 1)
        } else {
            String::new()
        };
        say!(
            "{:width$}  {from:>14}  {to:>14}  {:6}  {why}{more}",
            c.name,
            if c.old_version.is_none() && c.release {
                "first".to_string()
            } else {
                format!("{:?}", c.bump).to_lowercase()
            }
        );
    }
    for c in plan.releases() {
        if !c.image_tags.is_empty() && !c.images.is_empty() {
            say!("{} images: {}", c.name, c.images.join(" "));
        }
    }
    Ok(())
}
