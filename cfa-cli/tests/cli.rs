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
        .env("CFA_SERVER", server)
        .env("CFA_CLI_CONFIG", "/nonexistent/cfa-cli-test.toml")
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
    assert_eq!(early.code, 0, "{}", early.stderr);
    assert_eq!(
        early.json()["replies"][0]["body"]["reason"],
        "invalid_transition"
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

    let completions = cli(&server.url, &["completions", "bash"], &[]).await;
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("cfa-cli") && completions.stdout.contains("dead-letters"));
    let help = cli(&server.url, &["donate", "--help"], &[]).await;
    assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
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
