//! The command line: every command, its flags, help text and examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

/// CareForAll operator CLI: campaigns, the donor journey, payments, webhooks, totals, the
/// outbox and dead letters, over the HTTP API; `watch` opens a live dashboard.
#[derive(Debug, Parser)]
#[command(
    name = "cfa-cli",
    version,
    after_help = "Examples:\n  cfa-cli campaigns create --title 'Clean water' --goal 500\n  cfa-cli donate --campaign ID --amount 12.34 --email ada@example.org\n  cfa-cli totals show ID\n  cfa-cli --output json donations history --campaign ID | jq length\n\nExit status: 0 ok, 1 the server refused (4xx), 2 usage, 3 server unreachable or 5xx.\nProfiles: ~/.config/careforall/cli.toml; see `cfa-cli help profiles`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (listed under "Global options" in every command's help).
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Server (or gateway) base URL [default: the profile's, else http://127.0.0.1:8000].
    #[arg(long, global = true, env = "CFA_SERVER")]
    pub server: Option<String>,
    /// Operator API key (sent as `Authorization: Bearer`).
    #[arg(long, global = true, env = "CFA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Webhook signing secret, for `webhooks send`.
    #[arg(
        long,
        global = true,
        env = "CFA_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Profile of the config file to use.
    #[arg(long, global = true, env = "CFA_PROFILE")]
    pub profile: Option<String>,
    /// The config file [default: ~/.config/careforall/cli.toml].
    #[arg(long, global = true, env = "CFA_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "CFA_OUTPUT"
    )]
    pub output: Format,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show and close campaigns.
    #[command(subcommand)]
    Campaigns(Campaigns),
    /// Runs the whole donor journey: donation → intent → sandbox confirm → settled.
    #[command(
        after_help = "Examples:\n  cfa-cli donate --campaign ID --amount 12.34 --email ada@example.org\n  cfa-cli donate --campaign ID --amount 5 --email bob@example.org --outcome decline"
    )]
    Donate(Donate),
    /// Show donations and donation history.
    #[command(subcommand)]
    Donations(Donations),
    /// Show payments and refund them.
    #[command(subcommand)]
    Payments(Payments),
    /// Send signed webhook events, list received ones, replay one.
    #[command(subcommand)]
    Webhooks(Webhooks),
    /// Campaign totals.
    #[command(subcommand)]
    Totals(Totals),
    /// The transactional outbox.
    #[command(subcommand)]
    Outbox(Outbox),
    /// Events the relay or a consumer gave up on.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetters),
    /// Donor e-mails.
    #[command(subcommand)]
    Notifications(Notifications),
    /// Whether the server and each backend answer.
    #[command(after_help = "Example:\n  cfa-cli health && echo up")]
    Health,
    /// Prints a shell completion script.
    #[command(
        after_help = "Examples:\n  cfa-cli completions bash > ~/.local/share/bash-completion/completions/cfa-cli\n  cfa-cli completions zsh > ~/.zfunc/_cfa-cli"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// A live dashboard: totals against goals, rates, the outbox, webhooks, dead letters, health.
    #[command(
        after_help = "Keys: ↑/↓ j/k choose the campaign, PgUp/PgDn/Home/End scroll, / filter, Enter details,\n+/- refresh faster/slower, p pause, ? help, q quit.\nExample:\n  cfa-cli watch --interval-ms 500"
    )]
    Watch {
        /// Start on this campaign (campaign id).
        #[arg(long)]
        campaign: Option<String>,
        /// Refresh period in milliseconds (`+`/`-` change it while watching).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Tails what the platform records, live: donations, webhook deliveries, the outbox and dead
    /// letters (needs the operator key).
    #[command(
        long_about = "Tails what the platform records, live, one line each, like `stripe listen`: donations \
as they are created and change status, webhook deliveries with their outcomes, the outbox's \
backlog, and new dead letters. It polls the operator views every --interval-ms and prints only \
what changed since it started; it keeps going (and says so on standard error) while the server \
is away. Ctrl-C stops it.\n\nWith --output json every line is one JSON object \
(`{\"kind\": \"donation\" | \"webhook\" | \"outbox\" | \"dead_letter\", \"change\": …, …}`).",
        after_help = "Examples:\n  cfa-cli listen\n  cfa-cli listen --only webhooks,dead-letters\n  cfa-cli listen --campaign ID --output json | jq -c 'select(.kind == \"donation\")'"
    )]
    Listen(Listen),
    /// Lists the profiles of the config file, and which server and key a command would use.
    #[command(
        long_about = "Lists the profiles of the config file, and which server and keys a command run \
with the same flags would use.\n\n\
The file is ~/.config/careforall/cli.toml (or --config / CFA_CLI_CONFIG):\n\n\
    profile = \"local\"                 # the default profile\n\n\
    [profiles.local]\n\
    server = \"http://127.0.0.1:8000\"\n\
    webhook_secret = \"whsec_…\"        # the all-in-one server keeps one in data/webhook_secret\n\n\
    [profiles.staging]\n\
    server = \"https://staging.example.org\"\n\
    api_key = \"…\"\n\n\
Precedence: flags, then CFA_SERVER / CFA_API_KEY / CFA_WEBHOOK_SECRET, then the profile chosen \
with --profile or CFA_PROFILE (else the file's `profile`), then http://127.0.0.1:8000. An \
unknown key or profile is an error that names it (exit 2).",
        after_help = "Examples:\n  cfa-cli profiles\n  cfa-cli --profile staging profiles"
    )]
    Profiles,
}

/// What `listen` tails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Donations created, and their status changes.
    Donations,
    /// Webhook deliveries received, with their outcomes.
    Webhooks,
    /// The outbox's backlog (pending, oldest, dead).
    Outbox,
    /// New dead letters.
    DeadLetters,
}

#[derive(Debug, Args)]
pub struct Listen {
    /// What to tail (comma-separated) [default: all of them].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Source>,
    /// Only this campaign's donations (campaign id).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Poll period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum Campaigns {
    /// Creates a campaign.
    #[command(
        after_help = "Example:\n  cfa-cli campaigns create --title 'Clean water' --goal 500 --currency EUR"
    )]
    Create {
        /// Title (1–200 characters).
        #[arg(long)]
        title: String,
        /// Goal in major units (e.g. 500 or 499.99).
        #[arg(long)]
        goal: String,
        /// ISO currency of the goal and every donation (default USD).
        #[arg(long)]
        currency: Option<String>,
    },
    /// Lists campaigns.
    #[command(after_help = "Example:\n  cfa-cli campaigns list --status ACTIVE")]
    List {
        /// ACTIVE or CLOSED.
        #[arg(long)]
        status: Option<String>,
        /// How many (1–100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Shows a campaign and its totals.
    #[command(after_help = "Example:\n  cfa-cli campaigns show 3f1c…")]
    Show {
        /// Campaign id.
        id: String,
    },
    /// Closes a campaign: new donations are refused, existing ones still settle.
    #[command(after_help = "Example:\n  cfa-cli campaigns close 3f1c…")]
    Close {
        /// Campaign id.
        id: String,
    },
}

/// How the sandbox should answer the confirmation.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Outcome {
    /// Authorized and captured: the donation completes.
    Succeed,
    /// Declined: the donation fails.
    Decline,
    /// Authorized only; capture later with the sandbox.
    AuthorizeOnly,
}

#[derive(Debug, Args)]
pub struct Donate {
    /// Campaign id.
    #[arg(long)]
    pub campaign: String,
    /// Amount in major units (e.g. 12.34).
    #[arg(long)]
    pub amount: String,
    /// Donor e-mail.
    #[arg(long)]
    pub email: String,
    /// What the sandbox provider does.
    #[arg(long, value_enum, default_value = "succeed")]
    pub outcome: Outcome,
    /// Seconds to wait for the donation to settle.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum Donations {
    /// Shows one donation.
    #[command(after_help = "Example:\n  cfa-cli donations show 7b2e…")]
    Show {
        /// Donation id.
        id: String,
    },
    /// Donation history, newest first (operator key needed for --email).
    #[command(
        after_help = "Examples:\n  cfa-cli donations history --campaign ID --status COMPLETED\n  cfa-cli donations history --email ada@example.org"
    )]
    History {
        /// Only this donor's donations (needs the operator key).
        #[arg(long)]
        email: Option<String>,
        /// Only this campaign's donations (campaign id).
        #[arg(long)]
        campaign: Option<String>,
        /// PENDING, COMPLETED, FAILED or REFUNDED.
        #[arg(long)]
        status: Option<String>,
        /// How many (1–100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// How many to skip, for the next page.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum Payments {
    /// Shows a payment (by id or intent id) with its state history.
    #[command(after_help = "Example:\n  cfa-cli payments show pi_…")]
    Show {
        /// Payment id or payment intent id.
        id: String,
    },
    /// Refunds a captured payment, wholly or in part.
    #[command(
        after_help = "Examples:\n  cfa-cli payments refund pi_…\n  cfa-cli payments refund pi_… --amount 2.50"
    )]
    Refund {
        /// Payment id or payment intent id.
        id: String,
        /// Amount in major units (default: what remains).
        #[arg(long)]
        amount: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Webhooks {
    /// Sends a signed provider event for an intent (for testing the webhook endpoint).
    #[command(
        after_help = "Examples:\n  cfa-cli webhooks send --intent pi_… --status AUTHORIZED\n  cfa-cli webhooks send --intent pi_… --status CAPTURED --duplicate 5\n  cfa-cli webhooks send --intent pi_… --status CAPTURED --stale   # expect 401"
    )]
    Send(SendWebhook),
    /// Lists received webhook deliveries with their outcomes.
    #[command(after_help = "Example:\n  cfa-cli webhooks list --limit 20")]
    List {
        /// How many, newest first (1–100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Applies a received delivery again (the state machine decides; nothing applies twice).
    #[command(after_help = "Example:\n  cfa-cli webhooks replay event:evt_123")]
    Replay {
        /// Delivery id, as `webhooks list` shows it.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct SendWebhook {
    /// Payment intent id.
    #[arg(long)]
    pub intent: String,
    /// Target status: AUTHORIZED, CAPTURED, FAILED or REFUNDED.
    #[arg(long)]
    pub status: String,
    /// Event time, RFC 3339 [default: now].
    #[arg(long)]
    pub timestamp: Option<String>,
    /// Event id [default: a new evt_… id].
    #[arg(long)]
    pub event_id: Option<String>,
    /// For REFUNDED: the refund's id.
    #[arg(long)]
    pub refund_id: Option<String>,
    /// For REFUNDED: the amount refunded, in major units (e.g. 2.50).
    #[arg(long)]
    pub amount: Option<String>,
    /// Send without a signature.
    #[arg(long)]
    pub unsigned: bool,
    /// Sign with a timestamp an hour old (outside the tolerance).
    #[arg(long)]
    pub stale: bool,
    /// Send the same event N times at once.
    #[arg(long, default_value_t = 1)]
    pub duplicate: u32,
}

#[derive(Debug, Subcommand)]
pub enum Totals {
    /// A campaign's totals against its goal.
    #[command(
        after_help = "Examples:\n  cfa-cli totals show ID\n  cfa-cli totals show ID --realtime"
    )]
    Show {
        /// Campaign id.
        id: String,
        /// Compute from the donations instead of the read model.
        #[arg(long)]
        realtime: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Outbox {
    /// Pending events, the oldest one's age, sent and dead rows.
    #[command(after_help = "Example:\n  cfa-cli outbox status")]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// Lists dead letters (outbox rows and broker dead-letter queues).
    #[command(after_help = "Example:\n  cfa-cli dead-letters list")]
    List,
    /// Sends a dead letter again.
    #[command(after_help = "Example:\n  cfa-cli dead-letters replay outbox:42")]
    Replay {
        /// Id as `dead-letters list` shows it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Notifications {
    /// Donor e-mails, sent or pending, with attempts.
    #[command(
        after_help = "Examples:\n  cfa-cli notifications list --donation ID\n  cfa-cli notifications list --status DEAD"
    )]
    List {
        /// Only this donation's e-mails (donation id).
        #[arg(long)]
        donation: Option<String>,
        /// PENDING, SENT or DEAD.
        #[arg(long)]
        status: Option<String>,
        /// How many (1–100).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command, depth first, with its path.
    fn walk(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_and_argument_says_what_it_is_for() {
        let mut all = Vec::new();
        let mut root = Cli::command();
        root.build();
        walk(&root, "cfa-cli".into(), &mut all);
        let mut missing = Vec::new();
        for (path, command) in &all {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
        }
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn global_options_have_their_own_heading_in_every_command() {
        let mut root = Cli::command();
        root.build();
        let mut all = Vec::new();
        walk(&root, "cfa-cli".into(), &mut all);
        for (path, command) in &all {
            for arg in command.get_arguments().filter(|a| a.is_global_set()) {
                assert_eq!(
                    arg.get_help_heading(),
                    Some("Global options"),
                    "{path} --{}",
                    arg.get_id()
                );
            }
        }
        let help = root
            .find_subcommand_mut("donate")
            .expect("donate")
            .render_help()
            .to_string();
        let (own, global) = help.split_once("Global options:").expect("a heading");
        assert!(
            own.contains("--campaign") && !own.contains("--server"),
            "{help}"
        );
        assert!(
            global.contains("--server") && global.contains("--api-key"),
            "{help}"
        );
    }
}
