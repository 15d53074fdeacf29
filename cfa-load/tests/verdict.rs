//! The verdict end to end: the smoke profile against the all-in-one server passes, and the
//! invariant checker fails when the platform broke a promise behind the load's back.

use std::process::Command;
use std::time::Duration;

use cfa_cli::client::Client;
use cfa_load::invariants;
use cfa_load::truth::{Donation, Expected};
use cfa_server::config::{Secret, Settings};
use cfa_server::startup::Application;
use serde_json::{Value, json};
use tempfile::TempDir;

const SECRET: &str = "whsec_load_test";
const KEY: &str = "load-op-key";

async fn server(dir: &TempDir) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut settings = Settings::default();
    // A load test measures the platform, not its rate limiter.
    settings.gateway.rate_limit.enabled = false;
    settings.auth.api_keys = vec![Secret::from(KEY)];
    serve(dir, settings).await
}

/// Runs the all-in-one server with `settings` (its address, data directory and webhook secret
/// set here) until the sender is used or dropped.
async fn serve(
    dir: &TempDir,
    mut settings: Settings,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    settings.server.listen = "127.0.0.1:0".parse().expect("address");
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.shutdown_grace_seconds = 2;
    settings.payments.webhook_secret = vec![Secret::from(SECRET)];
    let app = Application::build(settings).await.expect("server");
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// README's line as written, against `cfa-server run` as it starts: the default rate limits,
/// no operator key; the results land in ./cfa-load-out/ of the directory it runs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_smoke_line_passes_against_a_server_with_its_default_limits() {
    let dir = TempDir::new().expect("dir");
    let (url, stop) = serve(&dir, Settings::default()).await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-load"));
    command
        .current_dir(dir.path())
        .env_remove("CFA_API_KEY")
        .env_remove("CFA_WEBHOOK_SECRET")
        .args(["--profile", "smoke", "--host", &url])
        .args(["--webhook-secret", SECRET, "--quiet"]);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cfa-load"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cfa-load verdict: PASS"), "{stdout}");
    let out_dir = dir.path().join("cfa-load-out");
    let verdict: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("verdict.json")).expect("verdict"))
            .expect("json");
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert!(
        verdict["acknowledged_donations"].as_u64() > Some(0),
        "the load ran: {verdict}"
    );
    assert!(
        out_dir.join("truth.json").exists(),
        "the ground truth beside it"
    );
    assert!(
        !dir.path().join("verdict.json").exists(),
        "nothing lands where it ran"
    );
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_profile_passes_against_the_all_in_one_server() {
    let dir = TempDir::new().expect("dir");
    let (url, stop) = server(&dir).await;
    let verdict_path = dir.path().join("verdict.json");
    let report_path = dir.path().join("report.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cfa-load"));
    command.args([
        "--profile",
        "smoke",
        "--host",
        &url,
        "--webhook-secret",
        SECRET,
        "--api-key",
        KEY,
        "--seed",
        "42",
        // With the limits off the platform takes more than the profile's 5 requests a second.
        "--throttle-requests",
        "50",
        "--verdict",
        verdict_path.to_str().expect("path"),
        "--report-file",
        report_path.to_str().expect("path"),
        "--quiet",
    ]);
    // Outside any git checkout: the revision comes from the server, not from where cfa-load ran.
    command.current_dir(dir.path());
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cfa-load"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cfa-load verdict: PASS"), "{stdout}");
    assert!(
        stdout.contains("mix journey=6,storm=2,totals=6,history=2 "),
        "the mix as --mix takes it: {stdout}"
    );
    // Whole request names, not goose's 24 characters (`POST baseline: /payme..`).
    for request in [
        "POST baseline: /payments/intent ",
        "POST baseline: /sandbox/confirm ",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(request)),
            "{request}: {stdout}"
        );
    }
    let verdict: Value =
        serde_json::from_slice(&std::fs::read(&verdict_path).expect("verdict")).expect("json");
    assert_eq!(verdict["ok"], true);
    assert_eq!(verdict["seed"], 42);
    assert_eq!(verdict["profile"], "smoke");
    let client = Client::new(&url, None, Duration::from_secs(10));
    let build = client.get("/version").await.expect("the server's build");
    assert!(build["git_revision"].is_string(), "{build}");
    assert_eq!(verdict["git_revision"], build["git_revision"], "{verdict}");
    assert_eq!(verdict["server_version"], build["version"], "{verdict}");
    assert!(
        verdict["acknowledged_donations"].as_u64().unwrap_or(0) > 10,
        "{verdict}"
    );
    for check in verdict["invariants"]["checks"].as_array().expect("checks") {
        assert_eq!(check["ok"], true, "{check}");
    }
    assert!(verdict["thresholds"][0]["passed"] == true, "{verdict}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("goose's report"))
            .expect("json");
    assert!(report.is_object(), "goose wrote its JSON report");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_when_a_donation_disappears_behind_the_servers_back() {
    let dir = TempDir::new().expect("dir");
    let (url, stop) = server(&dir).await;
    let client = Client::new(&url, Some(KEY.into()), Duration::from_secs(10));
    let campaign = client
        .post(
            "/api/v1/campaigns",
            &json!({"title": "Broken on purpose", "goal_amount": 100}),
        )
        .await
        .expect("campaign");
    let campaign = campaign["id"].as_str().expect("id").to_string();
    let mut donations = Vec::new();
    for i in 0..3 {
        let key = format!("broken-{i}");
        let body = json!({"campaign_id": campaign, "donor_email": format!("b{i}@example.org"), "amount": 2});
        let reply = client
            .send(
                reqwest::Method::POST,
                "/api/v1/donations",
                Some(&body),
                &[("idempotency-key", key.clone())],
            )
            .await
            .expect("donation");
        assert_eq!(reply.status, 201);
        donations.push(Donation {
            id: reply.body["id"].as_str().expect("id").to_string(),
            key,
            body,
            campaign: campaign.clone(),
            amount_minor: 200,
            expected: Expected::Unknown,
            intent: None,
        });
    }
    let campaigns = vec![campaign];
    let before = invariants::verify(
        &client,
        &campaigns,
        &donations,
        &[],
        Duration::from_secs(10),
    )
    .await;
    assert!(before.ok, "{before:?}");

    // Behind the server's back: one acknowledged donation is deleted from its database.
    let database = format!("sqlite://{}", dir.path().join("cfa.db").display());
    let pool = sqlx::SqlitePool::connect(&database)
        .await
        .expect("the server's SQLite file");
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&pool)
        .await
        .expect("pragma");
    let gone = sqlx::query("DELETE FROM donations WHERE id = ?")
        .bind(&donations[1].id)
        .execute(&pool)
        .await
        .expect("delete");
    assert_eq!(gone.rows_affected(), 1);

    let after =
        invariants::verify(&client, &campaigns, &donations, &[], Duration::from_secs(2)).await;
    assert!(!after.ok, "the checker sees the break");
    assert_eq!(after.converged_after_seconds, None);
    let lost = after
        .checks
        .iter()
        .find(|c| c.name == "no acknowledged donation lost")
        .expect("check");
    assert!(!lost.ok);
    assert_eq!(lost.failures.len(), 1, "{lost:?}");
    assert!(lost.failures[0].contains(&donations[1].id), "{lost:?}");
    let _ = stop.send(());
}
