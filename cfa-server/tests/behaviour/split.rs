//! The split deployment as separate processes: a gateway, two donation replicas, payment, totals,
//! notification and two relays, on PostgreSQL, RabbitMQ (through a TCP proxy the test cuts) and,
//! when `CFA_TEST_REDIS_URL` is set, Redis.
//! A donor journey through the gateway survives a killed donation replica and a broker outage,
//! and ends with exact totals and one receipt per donation.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![rabbit: the_split_deployment_survives_a_killed_replica_and_a_broker_outage];

/// Kills every process when dropped; when the test failed, prints the end of each one's log.
pub(crate) struct Processes {
    pub(crate) children: Vec<(String, Child)>,
    pub(crate) logs: std::path::PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let log = std::fs::read_to_string(self.logs.join(format!("{name}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- the last lines of {name}'s log ---");
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

async fn the_split_deployment_survives_a_killed_replica_and_a_broker_outage(ctx: TestContext) {
    let (amqp_url, namespace) = ctx.amqp.clone().expect("rabbit");
    let open = Arc::new(AtomicBool::new(true));
    let proxy_port = crate::rabbit::proxy("127.0.0.1:5672".into(), open.clone()).await;
    let amqp = amqp_url.replacen("127.0.0.1:5672", &format!("127.0.0.1:{proxy_port}"), 1);
    let bin = env!("CARGO_BIN_EXE_cfa-server");
    let dir = ctx.data_dir();
    // The processes need each other's addresses before they start, so the test picks the ports.
    // Port 0 would hand out ephemeral ports, which any outgoing connection of the rest of the
    // suite may take in the moment between the test freeing one and a server binding it; these
    // come from below the ephemeral range (Linux: 32768-60999) and are held together, so distinct.
    let mut held: Vec<std::net::TcpListener> = Vec::new();
    while held.len() < 8 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(held);
    let (gw, d1, d2, pay, tot, note, r1, r2) = (
        ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7],
    );
    let base = |port: u16| format!("http://127.0.0.1:{port}");
    let env = |cmd: &mut Command, name: &str, port: u16| {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CFA_DATABASE_URL", &ctx.database_url)
            // Eight processes next to the rest of the suite: stay well inside max_connections.
            .env("CFA_DATABASE__MAX_CONNECTIONS", "5")
            .env("CFA_GATEWAY__FAILURE_THRESHOLD", "10")
            .env("CFA_AMQP_URL", &amqp)
            .env("CFA_AMQP__NAMESPACE", &namespace)
            .env("CFA_AMQP__RETRY_DELAY_MS", "100")
            .env("CFA_LISTEN", format!("127.0.0.1:{port}"))
            .env("CFA_DATA_DIR", dir.join(name))
            .env("CFA_LOG__FORMAT", "json")
            .env("CFA_LOG__LEVEL", "info")
            .env("CFA_GATEWAY__RATE_LIMIT__ENABLED", "false")
            .env("CFA_PAYMENTS__WEBHOOK_SECRET", "whsec_split_test_secret")
            .env(
                "CFA_PAYMENTS__SANDBOX_WEBHOOK_URL",
                format!("{}/api/v1/payments/webhook", base(gw)),
            )
            .env(
                "CFA_NOTIFICATIONS__HISTORY_LINK_SECRET",
                "split-test-link-secret",
            )
            .env("CFA_OUTBOX__MAX_BACKOFF_MS", "200")
            .env(
                "CFA_GATEWAY__UPSTREAMS__DONATIONS",
                format!("[\"{}\",\"{}\"]", base(d1), base(d2)),
            )
            .env(
                "CFA_GATEWAY__UPSTREAMS__PAYMENTS",
                format!("[\"{}\"]", base(pay)),
            )
            .env(
                "CFA_GATEWAY__UPSTREAMS__TOTALS",
                format!("[\"{}\"]", base(tot)),
            )
            .env(
                "CFA_GATEWAY__UPSTREAMS__NOTIFICATIONS",
                format!("[\"{}\"]", base(note)),
            )
            .stdout(Stdio::null());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        cmd.stderr(Stdio::from(log));
    };
    // Redis too, when the run has one.
    let redis = std::env::var("CFA_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let env = |cmd: &mut Command, name: &str, port: u16| {
        env(cmd, name, port);
        if let Some(url) = &redis {
            cmd.env("CFA_REDIS_URL", url)
                .env("CFA_REDIS__PREFIX", format!("{namespace}:"));
        }
    };
    let mut migrate = Command::new(bin);
    env(&mut migrate, "migrate", 0);
    assert!(migrate.arg("migrate").status().expect("migrate").success());
    let mut processes = Processes {
        children: Vec::new(),
        logs: dir.clone(),
    };
    for (name, role, port) in [
        ("donation-1", "donation", d1),
        ("donation-2", "donation", d2),
        ("payment", "payment", pay),
        ("totals", "totals", tot),
        ("notification", "notification", note),
        ("relay-1", "relay", r1),
        ("relay-2", "relay", r2),
        ("gateway", "gateway", gw),
    ] {
        let mut cmd = Command::new(bin);
        env(&mut cmd, name, port);
        cmd.args(["run", "--role", role]);
        processes
            .children
            .push((name.to_string(), cmd.spawn().expect("spawn")));
    }
    let client = reqwest::Client::new();
    for port in &ports {
        eventually(
            Duration::from_secs(30),
            &format!("the process on {port} to start"),
            || async {
                client
                    .get(format!("{}/health", base(*port)))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await;
    }
    // Each process exports its own metrics, labelled with its roles.
    let metrics_of = |port: u16| {
        let client = client.clone();
        async move {
            client
                .get(format!("{}/metrics", base(port)))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    for (port, service) in [
        (d1, "donation"),
        (tot, "totals"),
        (r1, "relay"),
        (gw, "gateway"),
    ] {
        let metrics = metrics_of(port).await;
        assert!(
            metrics.contains(&format!("up{{service=\"{service}\"}} 1")),
            "the {service} process labels its metrics:\n{metrics}"
        );
    }
    // The gateway answers for the whole platform, and so does its document, though it runs none
    // of the services itself.
    let document: Value = client
        .get(format!("{}/api/v1/openapi.json", base(gw)))
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a JSON document");
    for path in ["/api/v1/donations", "/api/v1/totals/campaigns/{id}"] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            // A well-behaved client names each request, so the gateway may retry it safely.
            let key = uuid::Uuid::new_v4().to_string();
            let response = client
                .post(format!("{}{path}", base(gw)))
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            Some((
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            ))
        }
    };
    let (status, campaign) = post(
        "/api/v1/campaigns".into(),
        json!({"title": "Split", "goal_amount": 1000}),
    )
    .await
    .expect("campaign");
    assert_eq!(status, 201, "{campaign}");
    let campaign = campaign["id"].as_str().expect("id").to_string();
    // The gateway counts what it forwards by the service it went to, not by raw path.
    let gateway_metrics = metrics_of(gw).await;
    assert!(
        gateway_metrics.contains(r#"route="forwarded:donations",status="201""#),
        "{gateway_metrics}"
    );
    let mut acknowledged = Vec::new();
    let mut errors = 0;
    let mut failures = Vec::new();
    for i in 0..12 {
        if i == 4 {
            let (_, child) = processes
                .children
                .iter_mut()
                .find(|(n, _)| n == "donation-1")
                .expect("replica");
            child.kill().expect("SIGKILL a donation replica");
        }
        if i == 7 {
            open.store(false, Ordering::SeqCst);
        }
        if i == 10 {
            open.store(true, Ordering::SeqCst);
        }
        let body = json!({"campaign_id": campaign, "donor_email": format!("d{i}@example.org"), "amount": i + 1});
        match post("/api/v1/donations".into(), body).await {
            Some((201, d)) => {
                let id = d["id"].as_str().expect("id").to_string();
                let (s, intent) = post(
                    "/api/v1/payments/intent".into(),
                    json!({"donation_id": id, "amount": i + 1}),
                )
                .await
                .expect("intent");
                assert_eq!(s, 201, "{intent}");
                let pi = intent["payment_intent_id"]
                    .as_str()
                    .expect("pi")
                    .to_string();
                let (s, _) = post(
                    format!("/sandbox/v1/intents/{pi}/confirm"),
                    json!({"outcome": "succeed"}),
                )
                .await
                .expect("confirm");
                assert_eq!(s, 202);
                acknowledged.push((id, i as i64 + 1));
            }
            other => {
                errors += 1;
                failures.push(format!("{i}: {other:?}"));
            }
        }
    }
    assert!(
        errors <= 1,
        "clients see at most the in-flight errors: {errors} {failures:?}"
    );
    let expected: i64 = acknowledged.iter().map(|(_, a)| a * 100).sum();
    eventually(
        Duration::from_secs(60),
        "every acknowledged donation to complete and count",
        || async {
            let totals: Value = client
                .get(format!("{}/api/v1/totals/campaigns/{campaign}", base(gw)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (totals["total_amount_minor"] == expected
                && totals["total_donations"] == acknowledged.len())
            .then_some(())
        },
    )
    .await;
    for (id, _) in &acknowledged {
        let d: Value = client
            .get(format!("{}/api/v1/donations/{id}", base(gw)))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(d["status"], "COMPLETED", "{d}");
        let receipts = eventually(Duration::from_secs(30), "the receipt", || async {
            let n: Value = client
                .get(format!(
                    "{}/api/v1/notifications?donation_id={id}",
                    base(gw)
                ))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let sent: Vec<Value> = n
                .as_array()?
                .iter()
                .filter(|n| n["kind"] == "receipt" && n["status"] == "SENT")
                .cloned()
                .collect();
            (!sent.is_empty()).then_some(sent)
        })
        .await;
        assert_eq!(receipts.len(), 1, "one receipt per donation");
    }
}
