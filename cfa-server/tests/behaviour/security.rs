//! Hardening against an attacker on the public API (docs/SECURITY.md): each test is a hole
//! that was reproduced against a running server, and fails if the hole opens again.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestContext};
use crate::tests;

tests![
    campaign_writes_need_an_operator_key,
    a_signature_header_full_of_candidates_is_refused_without_work,
    amounts_too_large_for_a_decimal_are_a_422_everywhere,
    a_capture_for_another_amount_or_currency_is_rejected_and_stored,
    the_signed_event_id_deduplicates_not_the_unsigned_header,
    event_times_no_provider_makes_are_rejected,
    made_up_tokens_share_the_ip_budget_and_only_real_keys_get_their_own,
    behind_a_trusted_proxy_each_client_has_its_own_budget,
    the_files_the_server_keeps_are_private,
    idempotency_keys_belong_to_the_operator_key_that_sent_them,
    realtime_totals_are_an_operator_tool,
    metrics_can_live_on_their_own_address,
    a_client_that_trickles_its_headers_is_cut_off,
    connections_beyond_the_cap_wait_their_turn,
    a_public_sandbox_is_named_in_readiness,
    without_keys_on_a_public_address_operators_and_the_sandbox_answer_only_this_host,
];

fn event(intent: &str, status: &str, timestamp: &str, id: &str, data: Option<Value>) -> String {
    let mut body = json!({
        "payment_intent_id": intent,
        "status": status,
        "timestamp": timestamp,
        "id": id,
    });
    if let Some(data) = data {
        body["data"] = data;
    }
    body.to_string()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

async fn intent(app: &TestApp, amount: &str) -> (String, String) {
    let (donation, intent) = app.pending_payment(amount).await;
    let pi = intent["payment_intent_id"].as_str().expect("intent id");
    (donation, pi.to_string())
}

async fn campaign_writes_need_an_operator_key(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op-key".into()])
        .await;
    let id = app.create_campaign("Clean water", 500.0).await;
    let path = format!("/api/v1/campaigns/{id}");
    let phishing = json!({"title": "URGENT: verify your card at http://evil.example", "goal_amount": 500, "status": "CLOSED"});
    let anonymous = app
        .send(reqwest::Method::PUT, &path, Some(&phishing), &[])
        .await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.json);
    let forged = app
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&phishing),
            &[("authorization", "Bearer guessed")],
        )
        .await;
    assert_eq!(forged.status, 401, "{:?}", forged.json);
    let created = app.post("/api/v1/campaigns", &phishing).await;
    assert_eq!(created.status, 401, "{:?}", created.json);
    let shown = app.get(&path).await;
    assert_eq!(shown.json["title"], "Clean water", "unchanged");
    assert_eq!(shown.json["status"], "ACTIVE");
    let closed = app
        .send_as_operator(reqwest::Method::PUT, &path, Some(&phishing))
        .await;
    assert_eq!(
        closed.status, 200,
        "the operator still can: {:?}",
        closed.json
    );
}

async fn a_signature_header_full_of_candidates_is_refused_without_work(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, pi) = intent(&app, "10").await;
    let body = event(&pi, "AUTHORIZED", &now(), "evt-dos", None) + &" ".repeat(60 * 1024);
    let t = chrono::Utc::now().timestamp();
    for (header, why) in [
        (
            format!("t={t}{}", ",v1=".repeat(90_000)),
            "longer than 1024 bytes",
        ),
        (
            format!("t={t}{}", format!(",v1={}", "ab".repeat(32)).repeat(9)),
            "more than 8 v1 signatures",
        ),
    ] {
        let reply = app
            .client
            .post(format!("{}/api/v1/payments/webhook", app.address))
            .header("content-type", "application/json")
            .header("cfa-signature", header)
            .body(body.clone())
            .send()
            .await
            .expect("the server answers");
        assert_eq!(reply.status(), 401);
        let json: Value = reply.json().await.expect("json");
        assert_eq!(json["code"], "invalid_signature", "{json}");
        let detail = json["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(why),
            "refused for its size, unread: {detail}"
        );
    }
    let stored = app
        .store
        .webhook_record("event:evt-dos")
        .await
        .expect("read");
    assert_eq!(stored, None, "a refused signature stores nothing");
}

async fn amounts_too_large_for_a_decimal_are_a_422_everywhere(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Big numbers", 1000.0).await;
    for huge in ["1e30", "5e35", "123456789012345678901234567890e10"] {
        let created = app
            .send_raw(
                reqwest::Method::POST,
                "/api/v1/campaigns",
                Some("application/json"),
                format!(r#"{{"title":"T","goal_amount":{huge}}}"#).into_bytes(),
            )
            .await;
        assert_eq!(created.status, 422, "campaign {huge}: {:?}", created.json);
        let donated = app.donate(&campaign, "ada@example.org", huge).await;
        assert_eq!(donated.status, 422, "donation {huge}: {:?}", donated.json);
        assert_eq!(donated.json["field"], "amount");
    }
    let (donation, pi) = intent(&app, "10").await;
    let intent = app
        .send_raw(
            reqwest::Method::POST,
            "/api/v1/payments/intent",
            Some("application/json"),
            format!(r#"{{"donation_id":"{donation}","amount":1e30}}"#).into_bytes(),
        )
        .await;
    assert_eq!(intent.status, 422, "{:?}", intent.json);
    let refund = app
        .send_raw(
            reqwest::Method::POST,
            &format!("/api/v1/payments/{pi}/refund"),
            Some("application/json"),
            br#"{"amount":1e30}"#.to_vec(),
        )
        .await;
    assert!(
        matches!(refund.status, 400 | 422),
        "refund: {} {:?}",
        refund.status,
        refund.json
    );
    let webhook = app
        .webhook(
            &event(
                &pi,
                "REFUNDED",
                &now(),
                "evt-huge",
                Some(json!({"refund_id": "re_x", "amount": 1e30})),
            ),
            &[],
        )
        .await;
    assert_eq!(webhook.status, 400, "{:?}", webhook.json);
    assert_eq!(webhook.json["field"], "data.amount");
}

async fn a_capture_for_another_amount_or_currency_is_rejected_and_stored(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, pi) = intent(&app, "10").await;
    let authorized = app
        .webhook(&event(&pi, "AUTHORIZED", &now(), "evt-auth", None), &[])
        .await;
    assert_eq!(authorized.json["status"], "processed");
    let cheap = event(
        &pi,
        "CAPTURED",
        &now(),
        "evt-cheap",
        Some(json!({"amount": 0.01, "currency": "USD"})),
    );
    let yen = event(
        &pi,
        "CAPTURED",
        &now(),
        "evt-yen",
        Some(json!({"amount_minor": 1000, "currency": "JPY"})),
    );
    for body in [&cheap, &yen] {
        let first = app.webhook(body, &[]).await;
        assert_eq!(first.status, 400, "{:?}", first.json);
        assert_eq!(first.json["reason"], "amount_mismatch");
        let again = app.webhook(body, &[]).await;
        assert_eq!(again.bytes, first.bytes, "stored and replayed");
    }
    let payment = app.get(&format!("/api/v1/payments/{pi}")).await;
    assert_eq!(payment.json["status"], "AUTHORIZED", "not captured");
    let exact = event(
        &pi,
        "CAPTURED",
        &now(),
        "evt-exact",
        Some(json!({"amount": 10.00, "currency": "usd"})),
    );
    assert_eq!(
        app.webhook(&exact, &[]).await.json["new_status"],
        "CAPTURED"
    );
}

async fn the_signed_event_id_deduplicates_not_the_unsigned_header(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, pi) = intent(&app, "10").await;
    let authorized = event(&pi, "AUTHORIZED", &now(), "evt-1", None);
    let first = app
        .webhook(&authorized, &[("x-idempotency-key", "shared")])
        .await;
    assert_eq!(first.json["status"], "processed");
    // An attacker who replays any header value cannot make the capture look delivered.
    let captured = event(&pi, "CAPTURED", &now(), "evt-2", None);
    let second = app
        .webhook(&captured, &[("x-idempotency-key", "shared")])
        .await;
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_eq!(second.json["new_status"], "CAPTURED", "{:?}", second.json);
}

async fn event_times_no_provider_makes_are_rejected(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, pi) = intent(&app, "10").await;
    let future = (chrono::Utc::now() + chrono::TimeDelta::days(365)).to_rfc3339();
    for (id, timestamp) in [
        ("evt-future", future.as_str()),
        ("evt-far", "+300000-01-01T00:00:00Z"),
        ("evt-old", "1970-01-01T00:00:00Z"),
    ] {
        let reply = app
            .webhook(&event(&pi, "AUTHORIZED", timestamp, id, None), &[])
            .await;
        assert_eq!(reply.status, 400, "{timestamp}: {:?}", reply.json);
        assert_eq!(reply.json["field"], "timestamp", "{:?}", reply.json);
    }
    let far_unix = app
        .webhook(
            &json!({"payment_intent_id": pi, "status": "AUTHORIZED", "timestamp": 9e15, "id": "evt-unix"})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(far_unix.status, 400, "{:?}", far_unix.json);
    // The payment was not frozen by any of them: a real event still applies.
    let real = app
        .webhook(&event(&pi, "AUTHORIZED", &now(), "evt-real", None), &[])
        .await;
    assert_eq!(real.json["new_status"], "AUTHORIZED", "{:?}", real.json);
}

fn limited(s: &mut cfa_server::config::Settings) {
    s.gateway.rate_limit.enabled = true;
    s.gateway.rate_limit.per_ip_per_minute = 6;
    s.gateway.rate_limit.per_key_per_minute = 6;
    s.gateway.rate_limit.burst = 2;
}

async fn statuses(app: &TestApp, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let reply = app
            .send(reqwest::Method::GET, "/api/v1/campaigns", None, headers)
            .await;
        out.push(reply.status);
    }
    out
}

async fn made_up_tokens_share_the_ip_budget_and_only_real_keys_get_their_own(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            limited(s);
            s.auth.api_keys = vec!["real-key".into()];
        })
        .await;
    let mut refused = 0;
    for i in 0..4 {
        let token = format!("Bearer invented-{i}");
        let reply = app
            .send(
                reqwest::Method::GET,
                "/api/v1/campaigns",
                None,
                &[("authorization", token.as_str())],
            )
            .await;
        refused += usize::from(reply.status == 429);
    }
    assert!(
        refused >= 2,
        "every invented token drew on the one IP budget"
    );
    let real = statuses(&app, &[("authorization", "Bearer real-key")], 2).await;
    assert_eq!(real, [200, 200], "a verified key has its own budget");
}

async fn behind_a_trusted_proxy_each_client_has_its_own_budget(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            limited(s);
            s.gateway.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
    let first = statuses(&app, &[("x-forwarded-for", "198.51.100.1")], 4).await;
    assert!(
        first.contains(&429),
        "one client over its budget: {first:?}"
    );
    let second = statuses(&app, &[("x-forwarded-for", "198.51.100.2")], 2).await;
    assert_eq!(second, [200, 200], "another client behind the same proxy");
    // Without trust, the header is the client's own claim and buys nothing.
    let untrusting = ctx.spawn_app_with(limited).await;
    let mut claims = Vec::new();
    for i in 0..4 {
        let claim = format!("203.0.113.{i}");
        let reply = untrusting
            .send(
                reqwest::Method::GET,
                "/api/v1/campaigns",
                None,
                &[("x-forwarded-for", claim.as_str())],
            )
            .await;
        claims.push(reply.status);
    }
    assert!(
        claims.contains(&429),
        "forged addresses share one budget: {claims:?}"
    );
}

async fn the_files_the_server_keeps_are_private(ctx: TestContext) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    let data = ctx.data_dir().join("fresh").join("data");
    let app = ctx
        .spawn_app_with(|s| s.server.data_dir = data.clone())
        .await;
    assert_eq!(mode(&data), 0o700, "the data directory it created");
    assert_eq!(mode(&data.join("history_link_secret")), 0o600);
    if matches!(ctx.backend, Backend::Sqlite) {
        assert_eq!(mode(&ctx.data_dir().join("cfa.db")), 0o600, "the database");
    }
    drop(app);
}

async fn idempotency_keys_belong_to_the_operator_key_that_sent_them(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["alpha".into(), "beta".into()])
        .await;
    let body = json!({"title": "Numbered 1", "goal_amount": 100});
    let as_key = |key: &'static str| {
        let app = &app;
        let body = &body;
        async move {
            let auth = format!("Bearer {key}");
            app.send(
                reqwest::Method::POST,
                "/api/v1/campaigns",
                Some(body),
                &[("authorization", auth.as_str()), ("idempotency-key", "1")],
            )
            .await
        }
    };
    let alpha = as_key("alpha").await;
    let beta = as_key("beta").await;
    assert_eq!((alpha.status, beta.status), (201, 201), "{:?}", beta.json);
    assert_eq!(
        beta.header("idempotent-replayed"),
        None,
        "not alpha's answer"
    );
    assert_ne!(alpha.json["id"], beta.json["id"], "two campaigns");
    let again = as_key("alpha").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["id"], alpha.json["id"]);
}

async fn realtime_totals_are_an_operator_tool(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op".into()])
        .await;
    let campaign = app.create_campaign("Scans", 100.0).await;
    let path = format!("/api/v1/totals/campaigns/{campaign}?realtime=true");
    assert_eq!(
        app.get(&path).await.status,
        401,
        "the public cannot make it scan"
    );
    let cached = app
        .get(&format!("/api/v1/totals/campaigns/{campaign}"))
        .await;
    assert_eq!(cached.status, 200, "the cached totals stay public");
    let scanned = app
        .send_as_operator(reqwest::Method::GET, &path, None)
        .await;
    assert_eq!(scanned.status, 200, "{:?}", scanned.json);
    assert_eq!(scanned.json["data_source"], "realtime");
}

async fn metrics_can_live_on_their_own_address(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.metrics.listen = Some("127.0.0.1:0".parse().expect("address")))
        .await;
    assert_eq!(app.get("/metrics").await.status, 404, "not beside the API");
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    let scraped = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("scraped");
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.expect("text");
    assert!(text.contains("outbox_pending"), "the whole scrape: {text}");
    let api = app
        .client
        .get(format!("{metrics}/api/v1/campaigns"))
        .send()
        .await
        .expect("answers");
    assert_eq!(api.status(), 404, "and nothing else there");
}

async fn a_client_that_trickles_its_headers_is_cut_off(ctx: TestContext) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = ctx
        .spawn_app_with(|s| s.server.header_read_timeout_seconds = 1)
        .await;
    let host = app.address.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // The headers never end: the server must hang up on its own, long before this bound.
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the server closed the connection instead of waiting forever");
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            let answer = String::from_utf8_lossy(&buf[..n]);
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
    assert_eq!(
        app.get("/health").await.status,
        200,
        "everyone else is served"
    );
}

async fn connections_beyond_the_cap_wait_their_turn(ctx: TestContext) {
    let app = ctx.spawn_app_with(|s| s.server.max_connections = 2).await;
    let host = app.address.trim_start_matches("http://").to_string();
    let one = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let two = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let fresh = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .expect("client");
    let third = fresh.get(format!("{}/health", app.address)).send().await;
    assert!(
        third.is_err(),
        "a third connection is not served while two are open"
    );
    drop(one);
    drop(two);
    let served = crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "a connection slot",
        || async {
            let reply = fresh.get(format!("{}/health", app.address)).send().await;
            reply.ok().filter(|r| r.status() == 200)
        },
    )
    .await;
    assert_eq!(served.status(), 200);
}

async fn a_public_sandbox_is_named_in_readiness(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.server.listen = "0.0.0.0:0".parse().expect("address");
            s.auth.api_keys = vec!["op".into()];
            s.payments.sandbox = Some(true);
        })
        .await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{:?}", ready.json);
    let warnings = ready.json["warnings"].to_string();
    assert!(
        warnings.contains("sandbox payment provider is on and public"),
        "an operator reading /ready learns anyone can confirm a payment: {warnings}"
    );
    let local = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op".into()])
        .await;
    let warnings = local.get("/ready").await.json["warnings"].to_string();
    assert!(
        !warnings.contains("sandbox"),
        "on loopback it is nobody's business: {warnings}"
    );
}

/// The default image's configuration: listening on every address, no operator key, the sandbox
/// not mentioned. It starts, serves donors, and keeps operator endpoints and the sandbox to its
/// own host, saying how to open them.
async fn without_keys_on_a_public_address_operators_and_the_sandbox_answer_only_this_host(
    ctx: TestContext,
) {
    let app = ctx
        .spawn_app_with(|s| {
            s.server.listen = "0.0.0.0:0".parse().expect("address");
            s.auth.api_keys = Vec::new();
            s.payments.sandbox = None;
        })
        .await;
    let warnings = app.get("/ready").await.json["warnings"].to_string();
    assert!(
        warnings.contains("operator endpoints answer only this host")
            && warnings.contains("sandbox payment provider answers only this host"),
        "{warnings}"
    );
    // From this host (the test connects over loopback): an operator, and a donor's journey.
    let campaign = app.create_campaign("Local", 100.0).await;
    let donation = app.donate(&campaign, "ada@example.org", "5").await;
    assert_eq!(donation.status, 201, "donors are served from anywhere");

    // The same requests relayed by a proxy, as from another host.
    let proxied = [("x-forwarded-for", "203.0.113.9")];
    let body = json!({"title": "Remote", "goal_amount": 10});
    let refused = app
        .send(
            reqwest::Method::POST,
            "/api/v1/campaigns",
            Some(&body),
            &proxied,
        )
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.json);
    assert_eq!(refused.code(), "local_only");
    assert!(
        refused.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CFA_AUTH__API_KEYS")),
        "the answer says what to set: {:?}",
        refused.json
    );
    let confirm = json!({"outcome": "succeed"});
    let sandbox = app
        .send(
            reqwest::Method::POST,
            "/sandbox/v1/intents/pi_unknown/confirm",
            Some(&confirm),
            &proxied,
        )
        .await;
    assert_eq!(sandbox.status, 403, "{:?}", sandbox.json);
    assert!(
        sandbox.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("payments.sandbox")),
        "{:?}",
        sandbox.json
    );
    let donor = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/campaigns/{campaign}"),
            None,
            &proxied,
        )
        .await;
    assert_eq!(donor.status, 200, "public reads stay public");
}
