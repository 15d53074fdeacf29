//! Redis as a fast path: shared totals cache and idempotent replays across replicas, and nothing
//! lost or refused while Redis is down.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![
    redis: replicas_share_cached_totals_and_changes_reach_them,
    a_replay_is_served_from_redis_when_the_database_row_is_gone,
    a_redis_that_goes_away_is_left_alone_instead_of_waited_on_by_every_request;
    any: with_redis_down_every_request_still_succeeds_from_the_database,
];

async fn replicas_share_cached_totals_and_changes_reach_them(ctx: TestContext) {
    let one = ctx.spawn_app().await;
    let two = ctx.spawn_app().await;
    let campaign = one.create_campaign("Shared", 100.0).await;
    let path = format!("/api/v1/totals/campaigns/{campaign}");
    assert_eq!(one.get(&path).await.json["data_source"], "read_model");
    assert_eq!(
        two.get(&path).await.json["data_source"],
        "cache",
        "the second replica finds it in Redis"
    );
    let ready = two.get("/ready").await;
    assert_eq!(ready.json["checks"]["cache"]["backend"], "redis");
    let d = one.donate(&campaign, "ada@example.org", "4").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    one.send(
        Method::PATCH,
        &format!("/api/v1/donations/{d}/status"),
        Some(&json!({"status": "COMPLETED", "reason": "paid"})),
        &[],
    )
    .await;
    one.drain_outbox().await;
    eventually(
        Duration::from_secs(5),
        "the change to reach the other replica",
        || async { (two.get(&path).await.json["total_amount_minor"] == 400).then_some(()) },
    )
    .await;
}

async fn a_replay_is_served_from_redis_when_the_database_row_is_gone(ctx: TestContext) {
    let one = ctx.spawn_app().await;
    let two = ctx.spawn_app().await;
    let campaign = one.create_campaign("Fast", 100.0).await;
    let body = json!({"campaign_id": campaign, "donor_email": "ada@example.org", "amount": 2});
    let key = [("idempotency-key", "fast-1")];
    let first = one
        .send(Method::POST, "/api/v1/donations", Some(&body), &key)
        .await;
    assert_eq!(first.status, 201);
    // Remove the database copy behind the server's back: only Redis still has it.
    one.store
        .sweep_idempotency(chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .await
        .expect("sweep");
    let again = two
        .send(Method::POST, "/api/v1/donations", Some(&body), &key)
        .await;
    assert_eq!(
        (again.status, &again.bytes),
        (201, &first.bytes),
        "replayed from Redis, byte for byte"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = two
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&json!({"campaign_id": campaign, "donor_email": "ada@example.org", "amount": 3})),
            &key,
        )
        .await;
    assert_eq!(
        other.code(),
        "idempotency_key_reused",
        "the fingerprint is checked on the fast path too"
    );
}

async fn with_redis_down_every_request_still_succeeds_from_the_database(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.redis.url.0 = "redis://127.0.0.1:1/0".into();
            s.redis.timeout_ms = 50;
        })
        .await;
    let campaign = app.create_campaign("No Redis", 100.0).await;
    let body = json!({"campaign_id": campaign, "donor_email": "ada@example.org", "amount": 5});
    let key = [("idempotency-key", "down-1")];
    let first = app
        .send(Method::POST, "/api/v1/donations", Some(&body), &key)
        .await;
    assert_eq!(first.status, 201);
    let again = app
        .send(Method::POST, "/api/v1/donations", Some(&body), &key)
        .await;
    assert_eq!(
        again.bytes, first.bytes,
        "the replay comes from the database"
    );
    let d = first.json["id"].as_str().expect("id").to_string();
    app.send(
        Method::PATCH,
        &format!("/api/v1/donations/{d}/status"),
        Some(&json!({"status": "COMPLETED", "reason": "paid"})),
        &[],
    )
    .await;
    app.drain_outbox().await;
    let totals = app
        .get(&format!("/api/v1/totals/campaigns/{campaign}"))
        .await;
    assert_eq!(totals.status, 200);
    assert_eq!(totals.json["total_amount_minor"], 500);
    assert_eq!(
        app.get("/api/v1/donations/history?limit=100")
            .await
            .json
            .as_array()
            .map(Vec::len),
        Some(1),
        "nothing duplicated"
    );
    let ready = app.ready_after_failed_probes().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json["status"], "degraded");
    assert_eq!(ready.json["checks"]["cache"]["status"], "down");
}

async fn a_redis_that_goes_away_is_left_alone_instead_of_waited_on_by_every_request(
    ctx: TestContext,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (url, _) = ctx.redis.clone().expect("redis");
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string();
    let open = Arc::new(AtomicBool::new(true));
    let port = crate::rabbit::proxy(target.clone(), open.clone()).await;
    let proxied = url.replacen(&target, &format!("127.0.0.1:{port}"), 1);
    let app = ctx
        .spawn_app_with(|s| {
            s.redis.url.0 = proxied.clone();
            s.redis.timeout_ms = 200;
        })
        .await;
    let redis = app.state.replays.fast.clone().expect("Redis is configured");
    let campaign = app.create_campaign("Redis goes away", 100.0).await;
    let path = format!("/api/v1/totals/campaigns/{campaign}");
    for _ in 0..3 {
        assert_eq!(app.get(&path).await.status, 200);
    }
    assert_eq!(redis.failures(), 0, "Redis answers while it is there");
    open.store(false, Ordering::SeqCst);
    // Each creating request looks its key up on the fast path, then stores its answer there.
    for i in 0..30 {
        let body = json!({"campaign_id": campaign, "donor_email": format!("r{i}@example.org"), "amount": 1});
        let key = [("idempotency-key", format!("gone-{i}"))];
        let key: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = app
            .send(Method::POST, "/api/v1/donations", Some(&body), &key)
            .await;
        assert_eq!(reply.status, 201, "served from the database");
    }
    assert!(
        redis.failures() <= 10,
        "after a failure Redis is left alone, not asked (and waited on) twice by each of 30 requests: {} failures",
        redis.failures()
    );
    assert_eq!(
        app.ready_after_failed_probes().await.json["checks"]["cache"]["status"],
        "down"
    );
}
