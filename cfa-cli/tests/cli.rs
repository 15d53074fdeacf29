//! cfa-cli against a real server started by the test (the all-in-one `cfa-server` on SQLite, in
//! process, on port 0): the commands, their JSON, and their exit statuses.

use std::process::Command;
use std::time::Duration;

use cfa_server::config::{Secret, Settings};
use cfa_server::startup::Application;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

const SECRET: &str = "whsec_cli_test_secret";

struct Server {
    url: String,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut Settings)) -> Server {
        let dir = TempDir::new().expect("dir");
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".parse().expect("address");
        settings.server.data_dir = dir.path().to_path_buf();
        settings.server.shutdown_grace_seconds = 2;
        settings.gateway.rate_limit.enabled = false;
        settings.payments.webhook_secret = vec![Secret::from(SECRET)];
        configure(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("the server builds");
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Server {
            url,
            _dir: dir,
            stop: Some(stop),
            done: Some(done),
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the real binary (off the async runtime: the server runs on it).
async fn cli(server: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-cli"));
    command
        .args(args)
        .env_remove("CFA_API_KEY")
        .env_remove("CFA_PROFILE")
        .env_remove("CFA_WEBHOOK_SECRET")
        .env_remove("CFA_CLI_CONFIG")
        .env("CFA_SERVER", server)
        // The default config file is optional: keep the user's own out of the tests.
        .env("XDG_CONFIG_HOME", "/nonexistent/cfa-cli-test-config")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cfa-cli"))
        .await
        .expect("join");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn json_ok(server: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let run = cli(server, &all, &[]).await;
    assert_eq!(run.code, 0, "{args:?}: {}\n{}", run.stdout, run.stderr);
    run.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_donor_journey_from_the_command_line() {
    let mut server = Server::start(|_| {}).await;
    let url = server.url.clone();
    let campaign = json_ok(
        &url,
        &[
            "campaigns",
            "create",
            "--title",
            "Clean water",
            "--goal",
            "500",
        ],
    )
    .await;
    let id = campaign["id"].as_str().expect("id").to_string();
    assert_eq!(campaign["status"], "ACTIVE");

    let run = cli(
        &url,
        &[
            "donate",
            "--campaign",
            &id,
            "--amount",
            "12.34",
            "--email",
            "ada@example.org",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for step in [
        "1. donation",
        "2. payment intent",
        "3. sandbox confirmed",
        "COMPLETED",
    ] {
        assert!(
            run.stderr.contains(step),
            "progress shows {step}: {}",
            run.stderr
        );
    }
    assert!(
        run.stdout.contains("total_amount       12.34"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('\u{1b}'),
        "no colour when piped or NO_COLOR"
    );

    let journey = json_ok(
        &url,
        &[
            "donate",
            "--campaign",
            &id,
            "--amount",
            "5",
            "--email",
            "bob@example.org",
        ],
    )
    .await;
    assert_eq!(journey["donation"]["status"], "COMPLETED");
    assert_eq!(journey["totals"]["total_amount"], 17.34);

    let totals = json_ok(&url, &["totals", "show", &id, "--realtime"]).await;
    assert_eq!(totals["total_donations"], 2);
    let history = json_ok(&url, &["donations", "history", "--campaign", &id]).await;
    assert_eq!(history.as_array().map(Vec::len), Some(2));
    let donation = history[0]["id"].as_str().expect("id").to_string();
    let shown = json_ok(&url, &["donations", "show", &donation]).await;
    assert_eq!(shown["id"], donation.as_str());
    let pi = shown["payment_intent_id"]
        .as_str()
        .expect("intent")
        .to_string();
    let payment = json_ok(&url, &["payments", "show", &pi]).await;
    assert_eq!(payment["payment"]["status"], "CAPTURED");
    let refund = json_ok(&url, &["payments", "refund", &pi, "--amount", "1"]).await;
    assert!(refund["refund_id"].is_string(), "{refund}");

    let receipts = wait_for(|| async {
        let n = json_ok(&url, &["notifications", "list", "--donation", &donation]).await;
        (n.as_array()?
            .iter()
            .any(|n| n["kind"] == "receipt" && n["status"] == "SENT"))
        .then_some(n)
    })
    .await;
    let kinds: Vec<&str> = receipts
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "receipt").count(),
        1,
        "one receipt per donation: {receipts}"
    );

    let listed = json_ok(&url, &["campaigns", "list"]).await;
    assert_eq!(listed[0]["title"], "Clean water");
    let shown = json_ok(&url, &["campaigns", "show", &id]).await;
    assert_eq!(shown["totals"]["campaign_id"], id.as_str());
    let closed = json_ok(&url, &["campaigns", "close", &id]).await;
    assert_eq!(closed["status"], "CLOSED");
    let refused = cli(
        &url,
        &[
            "donate",
            "--campaign",
            &id,
            "--amount",
            "1",
            "--email",
            "late@example.org",
        ],
        &[],
    )
    .await;
    assert_eq!(
        refused.code, 1,
        "a closed campaign refuses: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_say_refused_usage_or_unreachable() {
    let mut server = Server::start(|s| s.auth.api_keys = vec![Secret::from("op-key")]).await;
    let url = server.url.clone();
    let missing = cli(
        &url,
        &[
            "--output",
            "json",
            "donations",
            "show",
            "00000000-0000-4000-8000-000000000000",
        ],
        &[],
    )
    .await;
    assert_eq!(missing.code, 1, "4xx → 1: {}", missing.stderr);
    assert_eq!(
        missing.json()["code"],
        "not_found",
        "scripts get the server's error"
    );

    let no_key = cli(&url, &["outbox", "status"], &[]).await;
    assert_eq!(no_key.code, 1);
    assert!(no_key.stderr.contains("401"), "{}", no_key.stderr);
    let with_key = cli(&url, &["outbox", "status"], &[("CFA_API_KEY", "op-key")]).await;
    assert_eq!(with_key.code, 0, "{}", with_key.stderr);
    assert!(with_key.stdout.contains("pending"), "{}", with_key.stdout);

    let usage = cli(&url, &["donate", "--campaign", "x"], &[]).await;
    assert_eq!(usage.code, 2, "usage → 2");
    let bad_amount = cli(
        &url,
        &["campaigns", "create", "--title", "T", "--goal", "lots"],
        &[],
    )
    .await;
    assert_eq!(bad_amount.code, 2, "{}", bad_amount.stderr);
    assert!(
        bad_amount.stderr.contains("not an amount"),
        "{}",
        bad_amount.stderr
    );

    server.stop().await;
    let down = cli(&url, &["health"], &[]).await;
    assert_eq!(down.code, 3, "unreachable → 3");
    assert!(
        down.stderr.contains("is it running there?"),
        "{}",
        down.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_sent_signed_listed_and_replayed() {
    let mut server = Server::start(|_| {}).await;
    let url = server.url.clone();
    let campaign = json_ok(
        &url,
        &["campaigns", "create", "--title", "Hooks", "--goal", "100"],
    )
    .await;
    let id = campaign["id"].as_str().expect("id");
    let client = reqwest::Client::new();
    let donation: Value = client
        .post(format!("{url}/api/v1/donations"))
        .json(&serde_json::json!({"campaign_id": id, "donor_email": "w@example.org", "amount": 3}))
        .send()
        .await
        .expect("donation")
        .json()
        .await
        .expect("json");
    let intent: Value = client
        .post(format!("{url}/api/v1/payments/intent"))
        .json(&serde_json::json!({"donation_id": donation["id"], "amount": 3}))
        .send()
        .await
        .expect("intent")
        .json()
        .await
        .expect("json");
    let pi = intent["payment_intent_id"].as_str().expect("pi");
    let secret = [("CFA_WEBHOOK_SECRET", SECRET)];

    let early = cli(
        &url,
        &[
            "--output",
            "json",
            "webhooks",
            "send",
            "--intent",
            pi,
            "--status",
            "CAPTURED",
            "--event-id",
            "evt_cap",
            "--timestamp",
            "2026-01-01T10:00:00Z",
        ],
        &secret,
    )
    .await;
    assert_eq!(early.code, 1, "a 400 is a failure: {}", early.stderr);
    assert_eq!(
        early.json()["replies"][0]["body"]["reason"],
        "invalid_transition",
        "the replies are still printed"
    );
    assert!(
        early
            .stderr
            .contains("1 of 1 deliveries were not accepted (400 invalid_transition)"),
        "{}",
        early.stderr
    );

    let three = cli(
        &url,
        &[
            "--output",
            "json",
            "webhooks",
            "send",
            "--intent",
            pi,
            "--status",
            "AUTHORIZED",
            "--timestamp",
            "2026-01-01T09:00:00Z",
            "--duplicate",
            "3",
        ],
        &secret,
    )
    .await;
    assert_eq!(three.code, 0, "{}", three.stderr);
    let replies = three.json()["replies"].clone();
    assert_eq!(replies.as_array().map(Vec::len), Some(3));
    assert!(
        replies
            .as_array()
            .expect("replies")
            .iter()
            .all(|r| r["body"]["status"] == "processed"),
        "one applied, the others replayed with the same answer: {replies}"
    );

    let stale = cli(
        &url,
        &[
            "webhooks", "send", "--intent", pi, "--status", "CAPTURED", "--stale",
        ],
        &secret,
    )
    .await;
    assert_eq!(stale.code, 1, "{}", stale.stderr);
    assert!(stale.stderr.contains("signature"), "{}", stale.stderr);
    let unsigned = cli(
        &url,
        &[
            "webhooks",
            "send",
            "--intent",
            pi,
            "--status",
            "CAPTURED",
            "--unsigned",
        ],
        &[],
    )
    .await;
    assert_eq!(unsigned.code, 1);
    let no_secret = cli(
        &url,
        &["webhooks", "send", "--intent", pi, "--status", "CAPTURED"],
        &[],
    )
    .await;
    assert_eq!(no_secret.code, 2, "{}", no_secret.stderr);
    assert!(
        no_secret.stderr.contains("--webhook-secret"),
        "{}",
        no_secret.stderr
    );

    let list = json_ok(&url, &["webhooks", "list"]).await;
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|w| w["id"].as_str().expect("id"))
        .collect();
    assert!(ids.contains(&"event:evt_cap"), "{ids:?}");
    let replay = json_ok(&url, &["webhooks", "replay", "event:evt_cap"]).await;
    assert_eq!(
        replay["status"], "processed",
        "the capture applies once authorized: {replay}"
    );
    let payment = json_ok(&url, &["payments", "show", pi]).await;
    assert_eq!(payment["payment"]["status"], "CAPTURED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_completions_and_health() {
    let mut server = Server::start(|_| {}).await;
    let dir = TempDir::new().expect("dir");
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "profile = \"local\"\n[profiles.local]\nserver = \"{}\"\n",
            server.url
        ),
    )
    .expect("config");
    let config = config.to_str().expect("path");
    // No --server and no CFA_SERVER: the profile's server is used.
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-cli"));
    command
        .args(["--output", "json", "health"])
        .env_remove("CFA_SERVER")
        .env("CFA_CLI_CONFIG", config);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run"))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(health["status"], "healthy");
    let build: Value = reqwest::get(format!("{}/version", server.url))
        .await
        .expect("GET /version")
        .json()
        .await
        .expect("json");
    assert_eq!(health["server"]["version"], build["version"], "{health}");
    assert_eq!(
        health["server"]["git_revision"], build["git_revision"],
        "{health}"
    );
    let wrong = cli(
        &server.url,
        &["--profile", "prod", "health"],
        &[("CFA_CLI_CONFIG", config)],
    )
    .await;
    assert_eq!(wrong.code, 2);
    assert!(
        wrong.stderr.contains("no profile `prod`"),
        "{}",
        wrong.stderr
    );

    let help = cli(&server.url, &["donate", "--help"], &[]).await;
    assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
    assert!(help.stdout.contains("Global options:"), "{}", help.stdout);
    let topic = cli(&server.url, &["help", "profiles"], &[]).await;
    assert_eq!(
        topic.code, 0,
        "the top-level help points here: {}",
        topic.stderr
    );
    assert!(
        topic.stdout.contains("[profiles.staging]"),
        "{}",
        topic.stdout
    );
    let top = cli(&server.url, &["--help"], &[]).await;
    assert!(
        top.stdout.contains("cfa-cli help profiles"),
        "{}",
        top.stdout
    );

    let profiles = cli(
        &server.url,
        &["--output", "json", "profiles"],
        &[("CFA_CLI_CONFIG", config), ("CFA_API_KEY", "k")],
    )
    .await;
    assert_eq!(profiles.code, 0, "{}", profiles.stderr);
    let listed = profiles.json();
    assert_eq!(listed["in_use"], "local");
    assert_eq!(
        listed["resolved"]["api_key"], true,
        "says it is set, never prints it"
    );
    assert!(!profiles.stdout.contains("\"k\""), "{}", profiles.stdout);

    let absent = cli(
        &server.url,
        &["--config", "/nonexistent/cli.toml", "health"],
        &[],
    )
    .await;
    assert_eq!(
        absent.code, 2,
        "a named config file must exist: {}",
        absent.stderr
    );
    assert!(
        absent
            .stderr
            .contains("/nonexistent/cli.toml does not exist"),
        "{}",
        absent.stderr
    );
    let not_url = cli(&server.url, &["--server", "not-a-url", "health"], &[]).await;
    assert_eq!(not_url.code, 2, "{}", not_url.stderr);
    assert!(
        not_url.stderr.contains("`not-a-url`") && not_url.stderr.contains("http://127.0.0.1:8000"),
        "{}",
        not_url.stderr
    );
    server.stop().await;
}

async fn wait_for<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donate_authorize_only_stops_at_an_authorized_payment() {
    let mut server = Server::start(|_| {}).await;
    let url = server.url.clone();
    let campaign = json_ok(
        &url,
        &["campaigns", "create", "--title", "Held", "--goal", "500"],
    )
    .await;
    let id = campaign["id"].as_str().expect("id");
    let shown = cli(&url, &["campaigns", "show", id], &[]).await;
    assert!(
        shown.stdout.contains("goal_amount  500.00"),
        "money has two decimals: {}",
        shown.stdout
    );
    let run = cli(
        &url,
        &[
            "--output",
            "json",
            "donate",
            "--campaign",
            id,
            "--amount",
            "7",
            "--email",
            "held@example.org",
            "--outcome",
            "authorize-only",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("AUTHORIZED"), "{}", run.stderr);
    assert!(run.stderr.contains("7.00 USD"), "{}", run.stderr);
    let journey = run.json();
    assert_eq!(journey["donation"]["status"], "PENDING");
    let pi = journey["payment_intent"]["payment_intent_id"]
        .as_str()
        .expect("intent");
    let payment = json_ok(&url, &["payments", "show", pi]).await;
    assert_eq!(payment["payment"]["status"], "AUTHORIZED");
    server.stop().await;
}

/// Runs `bash` with the completion script loaded and `script` after it.
fn bash(completions: &str, script: &str) -> String {
    let out = Command::new("bash")
        .arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(format!("{completions}\n{script}"))
        .output()
        .expect("bash is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_completes_below_the_first_word() {
    let script = cli("http://127.0.0.1:9", &["completions", "bash"], &[]).await;
    assert_eq!(script.code, 0, "{}", script.stderr);
    // What bash's programmable completion does on TAB: fill COMP_WORDS/COMP_CWORD and call the
    // function `complete -p cfa-cli` names, with the command, the current and the previous word.
    let complete = |words: &[&str]| {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let n = words.len();
        bash(
            &script.stdout,
            &format!(
                "f=$(complete -p cfa-cli | sed -E 's/.*-F ([^ ]+).*/\\1/')\n\
                 COMP_WORDS=({})\nCOMP_CWORD={}\n\
                 \"$f\" cfa-cli '{}' '{}'\necho \"${{COMPREPLY[*]}}\"",
                quoted.join(" "),
                n - 1,
                words[n - 1],
                words[n - 2],
            ),
        )
    };
    assert!(complete(&["cfa-cli", "dead"]).contains("dead-letters"));
    let nested = complete(&["cfa-cli", "dead-letters", "re"]);
    assert_eq!(
        nested.trim(),
        "replay",
        "a subcommand's subcommands: {nested:?}"
    );
    let flags = complete(&["cfa-cli", "donate", "--out"]);
    assert!(
        flags.contains("--outcome") && flags.contains("--output"),
        "a subcommand's flags: {flags:?}"
    );
    let values = complete(&["cfa-cli", "donate", "--outcome", ""]);
    assert!(
        values.contains("authorize-only") && values.contains("decline"),
        "a flag's values: {values:?}"
    );
    let deep = complete(&["cfa-cli", "webhooks", "send", "--dup"]);
    assert_eq!(deep.trim(), "--duplicate", "{deep:?}");
}

/// Runs the binary with its standard output already closed by the reader (`| head` that left).
fn closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_cfa-cli"))
        .args(args)
        .env_remove("CFA_CLI_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent/cfa-cli-test-config")
        .stdout(writer)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_output_quietly() {
    let mut server = Server::start(|_| {}).await;
    let url = server.url.clone();
    json_ok(
        &url,
        &["campaigns", "create", "--title", "Pipe", "--goal", "5"],
    )
    .await;
    for args in [
        vec!["completions", "bash"],
        vec!["--server", url.as_str(), "campaigns", "list"],
        vec!["--server", url.as_str(), "--output", "json", "health"],
    ] {
        let (code, stderr) = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || closed_pipe(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("join");
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} says nothing: {stderr}");
    }
    server.stop().await;
}

/// A `cfa-cli listen` in the background, its lines collected as they come.
struct Listener {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Listener {
    fn start(server: &str, args: &[&str]) -> Listener {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_cfa-cli"))
            .arg("listen")
            .args(args)
            .env_remove("CFA_API_KEY")
            .env_remove("CFA_CLI_CONFIG")
            .env("XDG_CONFIG_HOME", "/nonexistent/cfa-cli-test-config")
            .env("CFA_SERVER", server)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("listen");
        let pipe = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let lines = pipe(Box::new(child.stdout.take().expect("stdout")));
        let stderr = pipe(Box::new(child.stderr.take().expect("stderr")));
        Listener {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 20 s) for a line of `from` that satisfies `wanted`; one that already came
    /// while waiting for another counts (polls may print changes in either order).
    async fn wait(&mut self, stderr: bool, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let from = if stderr { &self.stderr } else { &self.lines };
            while let Ok(line) = from.try_recv() {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return line;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never came; seen:\n{}",
                self.seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_tails_donations_webhooks_and_the_outbox_as_they_happen() {
    let mut server = Server::start(|_| {}).await;
    let url = server.url.clone();
    let campaign = json_ok(
        &url,
        &["campaigns", "create", "--title", "Tail", "--goal", "100"],
    )
    .await;
    let id = campaign["id"].as_str().expect("id").to_string();
    // One donation before: already there, so never printed.
    json_ok(
        &url,
        &[
            "donate",
            "--campaign",
            &id,
            "--amount",
            "1",
            "--email",
            "old@example.org",
        ],
    )
    .await;
    let mut table = Listener::start(&url, &["--interval-ms", "200"]);
    let mut json = Listener::start(
        &url,
        &[
            "--interval-ms",
            "200",
            "--output",
            "json",
            "--only",
            "webhooks",
        ],
    );
    table
        .wait(true, |l| {
            l.starts_with("Ready! Tailing donations, webhooks, the outbox, dead letters")
        })
        .await;
    json.wait(true, |l| l.starts_with("Ready! Tailing webhooks at"))
        .await;

    // The journey by hand, so the donation is seen PENDING before it completes.
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            let reply = http.post(path).json(&body).send().await.expect("post");
            assert!(reply.status().is_success(), "{}", reply.status());
            reply.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let created = post(
        format!("{url}/api/v1/donations"),
        serde_json::json!({"campaign_id": id, "donor_email": "new@example.org", "amount": 2.5}),
    )
    .await;
    let donation = created["id"].as_str().expect("id").to_string();
    let line = table
        .wait(false, |l| {
            l.contains(&donation) && l.contains("new@example.org")
        })
        .await;
    assert!(
        line.contains("donation") && line.contains("PENDING") && line.contains("2.50 USD"),
        "{line}"
    );
    let intent = post(
        format!("{url}/api/v1/payments/intent"),
        serde_json::json!({"donation_id": donation, "amount": 2.5}),
    )
    .await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    post(
        format!("{url}/sandbox/v1/intents/{pi}/confirm"),
        serde_json::json!({"outcome": "succeed"}),
    )
    .await;
    table
        .wait(false, |l| {
            l.contains(&donation) && l.contains("PENDING → COMPLETED")
        })
        .await;
    let captured = table
        .wait(false, |l| l.contains(&pi) && l.contains("CAPTURED"))
        .await;
    assert!(
        captured.contains("webhook") && captured.contains("processed (200)"),
        "{captured}"
    );
    let hook: Value = serde_json::from_str(
        &json
            .wait(false, |l| l.contains(&pi) && l.contains("AUTHORIZED"))
            .await,
    )
    .expect("one JSON object per line");
    assert_eq!(hook["kind"], "webhook");
    assert_eq!(hook["webhook"]["outcome"], "processed");
    assert!(
        !table.seen.iter().any(|l| l.contains("old@example.org")),
        "only what happens after it starts: {:?}",
        table.seen
    );
    assert!(
        json.seen
            .iter()
            .all(|l| !l.contains("\"kind\":\"donation\"")),
        "--only webhooks"
    );

    // The server goes away and comes back: listen says so and keeps going.
    server.stop().await;
    table.wait(true, |l| l.starts_with("lost the server")).await;
    drop(table);
    drop(json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_without_the_operator_key_says_what_to_pass() {
    let mut server = Server::start(|s| s.auth.api_keys = vec![Secret::from("op-key")]).await;
    let run = cli(&server.url, &["listen"], &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--api-key"), "{}", run.stderr);
    let down = cli("http://127.0.0.1:9", &["listen"], &[]).await;
    assert_eq!(down.code, 3, "unreachable at the start: {}", down.stderr);
    server.stop().await;
}
