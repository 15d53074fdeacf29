//! The gateway role: routing to replicas, failing over when one dies, refusing unknown routes.

use serde_json::json;

use crate::helpers::TestContext;
use crate::tests;

tests![
    the_gateway_routes_to_replicas_and_fails_over_when_one_stops,
    the_gateway_limits_bodies_resolves_dot_segments_and_names_each_client,
    a_replica_the_last_health_check_missed_still_takes_requests_when_the_other_dies,
    an_overloaded_replica_is_busy_not_broken,
    the_gateway_drops_hop_by_hop_headers_keeps_repeated_ones_and_says_who_it_forwarded_for,
    a_draining_replica_leaves_the_rotation_before_it_stops_listening,
];

async fn the_gateway_routes_to_replicas_and_fails_over_when_one_stops(ctx: TestContext) {
    use cfa_server::config::Role;
    let one = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Donation])
        .await;
    let two = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Donation])
        .await;
    let upstreams = vec![one.address.clone(), two.address.clone()];
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway
                .upstreams
                .insert("donations".into(), upstreams.clone());
            s.gateway.failure_threshold = 2;
        })
        .await;
    let campaign = gateway.create_campaign("Through the gateway", 100.0).await;
    for _ in 0..4 {
        let reply = gateway.get(&format!("/api/v1/campaigns/{campaign}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        assert!(reply.header("x-request-id").is_some());
    }
    assert_eq!(
        gateway.get("/api/v1/totals/campaigns/x").await.status,
        503,
        "no totals upstream configured"
    );
    assert_eq!(gateway.get("/api/v1/elsewhere").await.status, 404);
    assert_eq!(gateway.get("/health").await.status, 200);
    let limited = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway
                .upstreams
                .insert("donations".into(), upstreams.clone());
            s.gateway.rate_limit.enabled = true;
            s.gateway.rate_limit.per_ip_per_minute = 2;
            s.gateway.rate_limit.burst = 2;
        })
        .await;
    let path = format!("/api/v1/campaigns/{campaign}");
    let replies = futures::future::join_all((0..3).map(|_| limited.get(&path))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "proxied requests are rate limited too: {statuses:?}"
    );

    one.stop().await.expect("stop one replica");
    for i in 0..6 {
        let reply = gateway
            .post("/api/v1/donations", &json!({"campaign_id": campaign, "donor_email": format!("d{i}@example.org"), "amount": 1}))
            .await;
        assert_eq!(
            reply.status, 201,
            "a refused connection is tried on the other replica: {:?}",
            reply.json
        );
    }
    let history = two
        .get(&format!("/api/v1/donations/history?campaign_id={campaign}"))
        .await;
    assert_eq!(
        history.json.as_array().map(Vec::len),
        Some(6),
        "each acknowledged donation exists once"
    );
}

async fn a_replica_the_last_health_check_missed_still_takes_requests_when_the_other_dies(
    ctx: TestContext,
) {
    use cfa_server::config::Role;
    // The second replica is not up yet when the gateway checks its upstreams, so the gateway's
    // last verdict on it is "down" (the next check is an hour away).
    let late_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let one = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Donation])
        .await;
    let upstreams = vec![one.address.clone(), format!("http://127.0.0.1:{late_port}")];
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway
                .upstreams
                .insert("donations".into(), upstreams.clone());
            s.gateway.health_interval_ms = 3_600_000;
        })
        .await;
    let campaign = gateway.create_campaign("Late replica", 100.0).await;
    let two = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Donation];
            s.server.listen = format!("127.0.0.1:{late_port}").parse().expect("address");
        })
        .await;
    one.stop()
        .await
        .expect("stop the replica the gateway trusts");
    for i in 0..4 {
        let reply = gateway
            .post("/api/v1/donations", &json!({"campaign_id": campaign, "donor_email": format!("d{i}@example.org"), "amount": 1}))
            .await;
        assert_eq!(
            reply.status, 201,
            "the replica believed down is tried before giving up: {:?}",
            reply.json
        );
    }
    let history = two
        .get(&format!("/api/v1/donations/history?campaign_id={campaign}"))
        .await;
    assert_eq!(history.json.as_array().map(Vec::len), Some(4));
}

/// The probes of a fake replica that is up and ready.
fn healthy_replica() -> axum::Router {
    axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/ready", axum::routing::get(|| async { "ok" }))
}

/// Serves a fake replica on a free local port; answers its base URL.
async fn serve_replica(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// A replica that answers every API request `503 overloaded` with `Retry-After: 2`, counting
/// them, and is healthy.
async fn overloaded_replica() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = healthy_replica().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "2"), ("content-type", "application/json")],
                r#"{"detail":"busy","code":"overloaded"}"#,
            )
        }
    });
    let address = serve_replica(app).await;
    (address, hits)
}

async fn an_overloaded_replica_is_busy_not_broken(ctx: TestContext) {
    use cfa_server::config::Role;
    use std::sync::atomic::Ordering;
    let (busy, hits) = overloaded_replica().await;
    let idle = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Donation])
        .await;
    let upstreams = vec![busy, idle.address.clone()];
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway.upstreams.insert("donations".into(), upstreams);
            s.gateway.failure_threshold = 2;
            s.gateway.open_seconds = 3_600;
        })
        .await;
    let mut overloaded = 0;
    for _ in 0..6 {
        let reply = gateway.get("/api/v1/campaigns").await;
        match reply.status {
            200 => {}
            503 => {
                assert_eq!(reply.code(), "overloaded", "{:?}", reply.json);
                assert_eq!(
                    reply.header("retry-after"),
                    Some("2"),
                    "the client learns when"
                );
                overloaded += 1;
            }
            other => panic!("{other}: {:?}", reply.json),
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "the busy replica keeps its turn in the rotation: its breaker never opens"
    );
    assert_eq!(
        overloaded, 3,
        "its answers reach the client, not retried elsewhere"
    );
}

/// Sends `GET path` as written (no client-side normalisation) and returns the status code.
async fn raw_get(address: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line")
}

async fn the_gateway_limits_bodies_resolves_dot_segments_and_names_each_client(ctx: TestContext) {
    use cfa_server::config::Role;
    let upstream = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Donation];
            s.gateway.rate_limit.enabled = true;
            s.gateway.rate_limit.per_ip_per_minute = 6;
            s.gateway.rate_limit.burst = 2;
            s.gateway.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
    let upstreams = vec![upstream.address.clone()];
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway.upstreams.insert("donations".into(), upstreams);
            s.gateway.rate_limit.enabled = false;
            s.gateway.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .await;
    let campaign = gateway.create_campaign("Front door", 100.0).await;
    // A body over the limit is refused by the gateway itself, not turned into a 503.
    let big = json!({"campaign_id": campaign, "donor_email": "a@example.org", "amount": 5, "note": "x".repeat(1024 * 1024)});
    let refused = gateway.post("/api/v1/donations", &big).await;
    assert_eq!(refused.status, 413, "{:?}", refused.json);
    assert_eq!(refused.code(), "payload_too_large");
    // Dot segments are resolved before routing; climbing above the root is refused.
    let dotted = format!("/api/v1/totals/../campaigns/{campaign}");
    assert_eq!(raw_get(&gateway.address, &dotted).await, 200);
    assert_eq!(
        raw_get(&gateway.address, "/api/v1/%2e%2e/%2E%2E/etc").await,
        404
    );
    // The upstream limits each client the gateway forwards for, not the gateway.
    let path = format!("/api/v1/campaigns/{campaign}");
    let mut first = Vec::new();
    for _ in 0..4 {
        let reply = gateway
            .send(
                reqwest::Method::GET,
                &path,
                None,
                &[("x-forwarded-for", "198.51.100.1")],
            )
            .await;
        first.push(reply.status);
    }
    assert!(
        first.contains(&429),
        "one client over its budget: {first:?}"
    );
    let other = gateway
        .send(
            reqwest::Method::GET,
            &path,
            None,
            &[("x-forwarded-for", "198.51.100.2")],
        )
        .await;
    assert_eq!(
        other.status, 200,
        "another client is not limited by the first"
    );
}

/// A replica that records the headers of every API request and answers with two cookies and a
/// hop-by-hop header of its own.
async fn recording_replica() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>>,
) {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let app = healthy_replica().fallback(move |headers: axum::http::HeaderMap| {
        recorded.lock().expect("lock").push(headers);
        async {
            (
                axum::response::AppendHeaders([
                    ("set-cookie", "a=1"),
                    ("set-cookie", "b=2"),
                    ("proxy-authenticate", "Basic realm=upstream"),
                    ("content-type", "application/json"),
                ]),
                "[]",
            )
        }
    });
    let address = serve_replica(app).await;
    (address, seen)
}

async fn the_gateway_drops_hop_by_hop_headers_keeps_repeated_ones_and_says_who_it_forwarded_for(
    ctx: TestContext,
) {
    use cfa_server::config::Role;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (replica, seen) = recording_replica().await;
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway
                .upstreams
                .insert("donations".into(), vec![replica]);
            s.gateway.rate_limit.enabled = false;
        })
        .await;
    let host = gateway.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/campaigns HTTP/1.1\r\nHost: {host}\r\nConnection: close, X-Hop-Secret\r\n\
         X-Hop-Secret: for the gateway only\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Repeated: one\r\nX-Repeated: two\r\n\
         X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("http/1.1 200"), "{answer}");
    assert!(
        head.contains("set-cookie: a=1") && head.contains("set-cookie: b=2"),
        "both of the upstream's cookies reach the client:\n{head}"
    );
    assert!(
        !head.contains("proxy-authenticate"),
        "the upstream's hop-by-hop header stays on its hop:\n{head}"
    );

    let seen = seen.lock().expect("lock");
    let upstream = seen.last().expect("the replica was called");
    let values = |name: &str| -> Vec<String> {
        upstream
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    };
    for hop in ["x-hop-secret", "keep-alive", "proxy-authorization"] {
        assert!(
            values(hop).is_empty(),
            "{hop} crossed the gateway: {upstream:?}"
        );
    }
    assert!(
        values("connection")
            .iter()
            .all(|v| !v.contains("x-hop-secret")),
        "{upstream:?}"
    );
    assert_eq!(
        values("x-repeated"),
        ["one", "two"],
        "repeated headers kept, in order"
    );
    assert_eq!(
        values("x-forwarded-for").join(","),
        "198.51.100.7, 127.0.0.1",
        "the gateway appends the address it was reached from"
    );
    assert_eq!(
        values("x-forwarded-proto"),
        ["http"],
        "an untrusted client's claim to HTTPS is replaced by the scheme it really used"
    );
}

/// A replica that still serves (counting what it serves) but says on `/ready` that it is
/// draining, as a process does from SIGTERM until it exits.
async fn draining_replica() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route(
            "/ready",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "application/json")],
                    r#"{"status":"draining","detail":"shutting down"}"#,
                )
            }),
        )
        .fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { ([("content-type", "application/json")], "[]") }
        });
    let address = serve_replica(app).await;
    (address, hits)
}

/// A process told to stop answers `/ready` with `503 draining` while it finishes its requests:
/// the gateway, like any load balancer, stops sending it new ones at its next check, rather than
/// when it finally stops listening.
async fn a_draining_replica_leaves_the_rotation_before_it_stops_listening(ctx: TestContext) {
    use cfa_server::config::Role;
    use std::sync::atomic::Ordering;
    let (draining, hits) = draining_replica().await;
    let serving = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Donation])
        .await;
    let gateway = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Gateway];
            s.gateway
                .upstreams
                .insert("donations".into(), vec![draining, serving.address.clone()]);
            s.gateway.health_interval_ms = 50;
        })
        .await;
    // The first check runs as the gateway starts, then every 50 ms: a second is twenty of them.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for _ in 0..6 {
        let reply = gateway.get("/api/v1/campaigns").await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request goes to the replica that is draining"
    );
}
