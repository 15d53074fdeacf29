//! Liveness, readiness, the seed's health aliases, and the OpenAPI document.

use serde_json::Value;

use crate::helpers::{Backend, TestContext};
use crate::tests;

tests![
    health_and_readiness_name_the_backend,
    readiness_reports_a_database_that_is_down,
    unknown_routes_and_methods_get_json_errors,
    clients_over_their_rate_get_429_with_retry_after_per_ip_and_per_key,
    the_openapi_document_lists_every_endpoint_and_marks_the_operator_ones,
    metrics_count_requests_by_route_template_and_the_outbox,
    the_version_names_the_build_without_a_key,
    every_status_a_layer_answers_is_documented_on_the_operation,
    the_document_is_browsable_at_docs_without_a_cdn,
];

async fn the_version_names_the_build_without_a_key(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["k".into()])
        .await;
    let reply = app.get("/version").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["version"], env!("CARGO_PKG_VERSION"));
    let revision = reply.json["git_revision"].as_str().unwrap_or("");
    let hex = revision.trim_end_matches("-dirty");
    assert!(
        revision == "unknown" || (hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "a git revision or unknown: {revision:?}"
    );
}

async fn metrics_count_requests_by_route_template_and_the_outbox(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Metrics", 100.0).await;
    let donation = app.donate(&campaign, "m@example.org", "3").await;
    let id = donation.json["id"].as_str().expect("id").to_string();
    assert_eq!(
        app.get(&format!("/api/v1/donations/{id}")).await.status,
        200
    );
    let reply = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("metrics");
    assert_eq!(reply.status(), 200);
    assert!(
        reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain")),
        "Prometheus text format"
    );
    let text = reply.text().await.expect("body");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    let value = |l: String| -> f64 {
        l.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number")
    };
    // One recorder per process, labelled by the first application built in it (here `all`,
    // unless a split-role test of this suite came first).
    let service = text
        .lines()
        .find_map(|l| l.strip_prefix("up{service=\""))
        .and_then(|rest| rest.split('"').next())
        .expect("an up series")
        .to_string();
    let labelled = |name: &str, labels: &str| format!("{name}{{service=\"{service}\"{labels}}}");
    // By route template, never by raw path: one series however many donations there are.
    assert!(text.contains(r#"route="/api/v1/donations/{id}""#), "{text}");
    assert!(!text.contains(&id), "no raw id in any label");
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "a histogram"
    );
    assert!(
        value(line(&labelled(
            "donation_created_total",
            r#",status="PENDING""#
        ))) >= 1.0
    );
    assert_eq!(value(line(&labelled("up", ""))), 1.0);
    // The process metrics every Prometheus client exports, beside ours, read at the scrape.
    assert!(
        value(line(&labelled("process_resident_memory_bytes", ""))) > 1_000_000.0,
        "a server uses more than a megabyte"
    );
    assert!(value(line(&labelled("process_open_fds", ""))) >= 3.0);
    let started = value(line(&labelled("process_start_time_seconds", "")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        started > now - 86_400.0 && started <= now + 1.0,
        "the start time is the process's, in Unix seconds: {started}"
    );
    assert!(
        value(line(&labelled("outbox_pending", ""))) >= 1.0,
        "the relay is left to the test, so the donation's events wait"
    );
    assert!(
        text.contains("webhook_processed_total{"),
        "registered before the first webhook"
    );
    // Every metric of SPEC §6 (and the operator's extras) is described and has a series from
    // the first scrape, before its first event.
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "donation_created_total",
        "donation_creation_duration_seconds",
        "payment_processed_total",
        "payment_processing_duration_seconds",
        "webhook_processed_total",
        "idempotency_cache_hits_total",
        "cache_hit_ratio",
        "notifications_sent_total",
        "outbox_pending",
        "outbox_oldest_age_seconds",
        "outbox_dead",
        "consumer_lag",
        "dead_letters",
        "backend_up",
        "up",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} described"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(&format!("service=\"{service}\""))),
            "{name} has a series with the service label"
        );
    }
    assert!(text.contains(&labelled(
        "payment_processed_total",
        r#",status="CAPTURED",gateway="sandbox""#
    )));
    assert_eq!(
        value(line(&labelled("backend_up", r#",backend="database""#))),
        1.0
    );
}

async fn the_openapi_document_lists_every_endpoint_and_marks_the_operator_ones(ctx: TestContext) {
    // With keys configured, so "open" is tested where it matters.
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["k".into()])
        .await;
    let reply = app.get("/api/v1/openapi.json").await;
    assert_eq!(reply.status, 200, "served without a key: {:?}", reply.json);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let document = &reply.json;
    assert!(
        document["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{:?}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "CareForAll API");
    assert_eq!(
        document["components"]["securitySchemes"]["operator_key"]["scheme"],
        "bearer"
    );
    let operation = |method: &str, path: &str| document["paths"][path][method].clone();
    // SPEC §3, as it exists (there is no /metrics yet), and the sandbox's API (§4).
    let open = [
        ("get", "/api/v1/campaigns"),
        ("get", "/api/v1/campaigns/{id}"),
        ("post", "/api/v1/donations"),
        ("get", "/api/v1/donations/{id}"),
        ("post", "/api/v1/payments/intent"),
        ("post", "/api/v1/payments/webhook"),
        ("get", "/api/v1/payments/{id}"),
        ("get", "/api/v1/totals/campaigns/{id}"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/version"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/metrics"),
        ("post", "/sandbox/v1/intents/{id}/confirm"),
        ("post", "/sandbox/v1/intents/{id}/capture"),
        ("get", "/sandbox/v1/intents/{id}"),
    ];
    let operator = [
        ("post", "/api/v1/campaigns"),
        ("put", "/api/v1/campaigns/{id}"),
        ("get", "/api/v1/donations/history"),
        ("patch", "/api/v1/donations/{id}/status"),
        ("get", "/api/v1/payments/{id}/history"),
        ("post", "/api/v1/payments/{id}/refund"),
        ("post", "/api/v1/totals/refresh"),
        ("get", "/api/v1/notifications"),
        ("get", "/api/v1/admin/dead-letters"),
        ("post", "/api/v1/admin/dead-letters/{id}/replay"),
        ("get", "/api/v1/admin/outbox"),
        ("get", "/api/v1/admin/webhooks"),
        ("post", "/api/v1/admin/webhooks/{id}/replay"),
        ("get", "/api/v1/admin/stats"),
    ];
    for (method, path) in open {
        let op = operation(method, path);
        assert!(op.is_object(), "{method} {path} is documented");
        // No security, or an empty requirement beside the key (a key only some options need).
        let open = op["security"].is_null()
            || op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            });
        assert!(open, "{method} {path} needs no key");
    }
    for (method, path) in operator {
        let op = operation(method, path);
        assert!(op.is_object(), "{method} {path} is documented");
        let needs_key = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("operator_key").is_some()));
        assert!(needs_key, "{method} {path} names the operator key: {op}");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} documents its 401"
        );
    }
    // Documented statuses and typed bodies, not just paths.
    let create = operation("post", "/api/v1/donations");
    for status in ["201", "400", "409", "422"] {
        assert!(
            create["responses"][status].is_object(),
            "POST /api/v1/donations documents {status}"
        );
    }
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DonationRequest"
    );
    let donation = &document["components"]["schemas"]["Donation"]["properties"];
    for field in [
        "id",
        "campaign_id",
        "amount",
        "amount_minor",
        "status",
        "version",
    ] {
        assert!(donation[field].is_object(), "Donation.{field}");
    }
    let ids: Vec<&str> = document["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids are unique: {ids:?}");
}

async fn clients_over_their_rate_get_429_with_retry_after_per_ip_and_per_key(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.gateway.rate_limit.enabled = true;
            s.gateway.rate_limit.per_ip_per_minute = 6;
            s.gateway.rate_limit.per_key_per_minute = 6;
            s.gateway.rate_limit.burst = 3;
            s.auth.api_keys = vec!["integration-1".into()];
        })
        .await;
    let statuses: Vec<u16> =
        futures::future::join_all((0..5).map(|_| app.get("/api/v1/campaigns")))
            .await
            .iter()
            .map(|r| r.status)
            .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "the burst: {statuses:?}"
    );
    let limited = app.get("/api/v1/campaigns").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(
        app.get("/health").await.status,
        200,
        "health is never limited"
    );
    assert_eq!(app.get("/ready").await.status, 200);
    let keyed = app
        .send(
            reqwest::Method::GET,
            "/api/v1/campaigns",
            None,
            &[("authorization", "Bearer integration-1")],
        )
        .await;
    assert_eq!(keyed.status, 200, "a key has its own budget");
}

async fn health_and_readiness_name_the_backend(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    assert_eq!(app.get("/health").await.status, 200);
    for service in ["donations", "payments", "totals", "notifications"] {
        let reply = app.get(&format!("/api/v1/{service}/health")).await;
        assert_eq!(reply.status, 200, "{service} health alias");
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{:?}", ready.json);
    assert_eq!(ready.json["status"], "healthy");
    let backend = match ctx.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_)
        | Backend::PostgresRabbit(..)
        | Backend::PostgresRedis(..)
        | Backend::Stack(..) => "postgres",
    };
    assert_eq!(ready.json["checks"]["database"]["backend"], backend);
    assert!(
        ready.json["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("operator endpoints are open"),
        "an open dev server says so: {:?}",
        ready.json
    );
    let keyed = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["k".into()])
        .await;
    let ready = keyed.get("/ready").await;
    assert_eq!(ready.json["warnings"].as_array().map(Vec::len), Some(0));
}

async fn readiness_reports_a_database_that_is_down(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    app.store.close().await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json["status"], "unavailable");
    assert_eq!(ready.json["checks"]["database"]["status"], "down");
    let campaign = app
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"title": "T", "goal_amount": 10}),
        )
        .await;
    assert_eq!(campaign.status, 503, "{:?}", campaign.json);
    assert_eq!(campaign.code(), "backend_unavailable");
}

async fn unknown_routes_and_methods_get_json_errors(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let reply = app.get("/api/v1/nothing-here").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "not_found");
    let reply = app
        .send(reqwest::Method::DELETE, "/api/v1/donations", None, &[])
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.code(), "method_not_allowed");
    assert!(
        reply.header("x-request-id").is_some(),
        "every response carries a request id"
    );
}

async fn every_status_a_layer_answers_is_documented_on_the_operation(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["k".into()])
        .await;
    let document = app.get("/api/v1/openapi.json").await.json;
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let responses = &op["responses"];
            let documents = |status: &str| responses[status].is_object();
            assert!(documents("503"), "{method} {path} documents 503");
            let probe = matches!(path.as_str(), "/health" | "/ready") || path.ends_with("/health");
            assert_eq!(
                documents("429"),
                !probe,
                "{method} {path}: 429 unless a probe"
            );
            if !probe {
                assert!(
                    responses["429"]["headers"]["Retry-After"].is_object(),
                    "{method} {path}: 429 names Retry-After"
                );
            }
            if op["requestBody"].is_object() {
                for status in ["400", "413", "415"] {
                    assert!(documents(status), "{method} {path} documents {status}");
                }
            }
        }
    }
    assert!(operations > 25, "{operations} operations");
    let create = &document["paths"]["/api/v1/donations"]["post"]["responses"];
    assert!(
        create["503"]["headers"]["Retry-After"].is_object(),
        "a route that waits for the database documents `overloaded` with Retry-After"
    );

    // What the document promises is what the server answers.
    let reply = app
        .send_raw(
            reqwest::Method::POST,
            "/api/v1/donations",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 415, "{:?}", reply.json);
    assert_eq!(reply.code(), "unsupported_media_type");
    let reply = app
        .send_raw(
            reqwest::Method::POST,
            "/api/v1/donations",
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/totals/refresh",
            Some(&serde_json::json!({})),
            &[],
        )
        .await;
    assert_eq!(reply.status, 401, "{:?}", reply.json);
}

async fn the_document_is_browsable_at_docs_without_a_cdn(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let reply = app.get("/docs/").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        reply.header("content-type")
    );
    let page = String::from_utf8_lossy(&reply.bytes).to_string();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("https://"),
        "nothing is loaded from elsewhere: {page}"
    );
    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, 200);
    let script = String::from_utf8_lossy(&init.bytes).to_string();
    assert!(
        script.contains("/api/v1/openapi.json"),
        "the UI shows our document: {script}"
    );
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.bytes.len() > 100_000, "the bundle is embedded");
    assert_eq!(app.get("/docs/no-such-file.js").await.status, 404);
}
