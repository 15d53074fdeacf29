//! The `cfa-server` binary as a user runs it: zero-configuration start, logs, SIGTERM, and the
//! `config check`, `migrate` and `openapi` commands.

mod common;

use std::time::Duration;

use common::{Running, cfa_server, http};

#[test]
fn a_fresh_directory_starts_on_sqlite_logs_masked_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = cfa_server(dir.path());
    command
        .args(["run"])
        .env("CFA_LISTEN", "127.0.0.1:0")
        .env("CFA_LOG__FORMAT", "json");
    let mut server = Running::start(command);
    let line = server.wait_for("CareForAll is listening");
    let announced: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(announced["database"], "sqlite");
    assert_eq!(announced["bus"], "in-process");
    // Where its data is, absolute, and what is there (the default ./data, relative to where it
    // was started).
    let data_dir = dir.path().canonicalize().expect("tempdir").join("data");
    assert_eq!(announced["data_dir"], data_dir.display().to_string());
    let holds = announced["data_dir_holds"]
        .as_str()
        .expect("data_dir_holds");
    for kept in ["cfa.db", "webhook_secret", "history_link_secret", "mail/"] {
        assert!(holds.contains(kept), "{kept} is announced: {holds}");
    }
    let base = announced["listen"]
        .as_str()
        .expect("listen address")
        .to_string();
    assert!(
        dir.path().join("data/cfa.db").exists(),
        "./data/cfa.db is created"
    );

    let (status, campaign) = http(
        "POST",
        &format!("{base}/api/v1/campaigns"),
        Some(r#"{"title":"T","goal_amount":10}"#),
    );
    assert_eq!(status, 201);
    let campaign: serde_json::Value = serde_json::from_str(&campaign).expect("json");
    let body = format!(
        r#"{{"campaign_id":"{}","donor_email":"secret.donor@example.org","amount":5}}"#,
        campaign["id"].as_str().expect("id")
    );
    let (status, _) = http("POST", &format!("{base}/api/v1/donations"), Some(&body));
    assert_eq!(status, 201);
    server.wait_for("donation created");

    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    let log = server.rest_of_log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("secret.donor@example.org"),
        "no raw donor address in the log:\n{log}"
    );
    assert!(
        log.contains("s***@example.org"),
        "the masked address is logged:\n{log}"
    );
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not a JSON line: {line}"));
    }
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cfa.toml"),
        "[database]\nurl = \"postgres://app:hunter2@db.internal/cfa\"\n[auth]\napi_keys = [\"op-key-1\"]\n",
    )
    .expect("write");
    let output = cfa_server(dir.path())
        .args(["config", "check", "--config", "cfa.toml"])
        .env("CFA_OUTBOX__BATCH_SIZE", "42")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("batch_size = 42"), "{printed}");
    // The database is PostgreSQL, so the data directory holds no SQLite file.
    let data_dir = dir.path().canonicalize().expect("tempdir").join("data");
    assert!(
        printed.contains(&format!("data directory {}", data_dir.display()))
            && !printed.contains("cfa.db"),
        "where the data is, and no SQLite file on PostgreSQL:\n{printed}"
    );
    assert!(
        printed.contains("postgres://app:****@db.internal/cfa"),
        "{printed}"
    );
    assert!(
        !printed.contains("hunter2") && !printed.contains("op-key-1"),
        "{printed}"
    );
}

#[test]
fn a_bad_configuration_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cfa.toml"), "[outbox]\nbatch_sise = 5\n").expect("write");
    let output = cfa_server(dir.path())
        .args(["run", "--config", "cfa.toml"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a configuration error: {stderr}"
    );
    assert!(stderr.contains("batch_sise"), "{stderr}");

    let output = cfa_server(dir.path())
        .args(["config", "check"])
        .env("CFA_SERVER__LISTEN", "not-an-address")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");

    let output = cfa_server(dir.path())
        .args(["config", "check", "--config", "missing.toml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

#[test]
fn a_failure_while_running_exits_1_and_a_usage_error_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let output = cfa_server(dir.path())
        .arg("run")
        .env("CFA_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the port is in use: {stderr}"
    );
    assert!(
        stderr.contains(&port.to_string()),
        "names the address: {stderr}"
    );

    let output = cfa_server(dir.path())
        .args(["run", "--no-such-flag"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}

#[test]
fn migrate_creates_the_schema_and_is_safe_to_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..2 {
        let output = cfa_server(dir.path())
            .args(["migrate", "--data-dir", "state"])
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied (sqlite"));
    }
    assert!(dir.path().join("state/cfa.db").exists());
}

#[test]
fn openapi_prints_the_whole_document_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = cfa_server(dir.path())
        .arg("openapi")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
    assert!(
        document["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{document}"
    );
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/donations",
        "/api/v1/payments/webhook",
        "/api/v1/totals/campaigns/{id}",
        "/api/v1/notifications",
        "/api/v1/admin/stats",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    assert!(
        !dir.path().join("data").exists(),
        "printing the document touches no database"
    );
}

#[test]
fn after_sigterm_ready_answers_draining_until_the_process_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, base) =
        Running::serve(dir.path(), &[("CFA_SERVER__SHUTDOWN_DELAY_SECONDS", "3")]);
    let (status, body) = http("GET", &format!("{base}/ready"), None);
    assert_eq!(status, 200, "{body}");

    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    server.wait_for("still accepting while load balancers notice");
    let (status, body) = http("GET", &format!("{base}/ready"), None);
    assert_eq!(status, 503, "a load balancer must stop sending: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["status"], "draining", "{body}");
    let (status, _) = http("GET", &format!("{base}/health"), None);
    assert_eq!(status, 200, "still alive, still serving while it drains");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "a drained stop is a clean one: {exit:?}");
}
