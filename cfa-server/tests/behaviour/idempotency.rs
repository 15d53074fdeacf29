//! Idempotency keys: replays, mismatches, concurrency, expiry.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![
    a_retry_with_the_same_key_replays_the_response_byte_for_byte,
    the_same_key_with_a_different_request_is_refused,
    eight_concurrent_requests_with_one_key_create_one_donation,
    a_key_whose_first_request_is_still_running_gets_409,
    expired_keys_are_swept_and_can_be_used_again,
    a_refusal_decided_under_the_key_is_replayed_but_an_invalid_request_saves_nothing;
    postgres: two_replicas_on_one_database_honour_one_key,
];

fn body(campaign: &str, amount: f64) -> Value {
    json!({"campaign_id": campaign, "donor_email": "ada@example.org", "amount": amount})
}

async fn count_donations(app: &crate::helpers::TestApp) -> usize {
    app.get("/api/v1/donations/history?limit=100")
        .await
        .json
        .as_array()
        .map_or(0, Vec::len)
}

async fn a_retry_with_the_same_key_replays_the_response_byte_for_byte(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Replay", 500.0).await;
    let key = [("idempotency-key", "order-1")];
    let first = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 10.0)),
            &key,
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    // Same request, keys in another order: still the same request.
    let reordered =
        format!(r#"{{"amount":10.0,"donor_email":"ada@example.org","campaign_id":"{campaign}"}}"#);
    for _ in 0..2 {
        let again = app
            .client
            .post(format!("{}/api/v1/donations", app.address))
            .header("content-type", "application/json")
            .header("idempotency-key", "order-1")
            .body(reordered.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(again.status().as_u16(), 201);
        assert_eq!(
            again
                .headers()
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
        assert_eq!(
            again.bytes().await.expect("body").to_vec(),
            first.bytes,
            "byte for byte"
        );
    }
    assert_eq!(count_donations(&app).await, 1);

    let campaign_key = [("idempotency-key", "camp-1")];
    let c1 = app
        .send(
            Method::POST,
            "/api/v1/campaigns",
            Some(&json!({"title": "K", "goal_amount": 5})),
            &campaign_key,
        )
        .await;
    let c2 = app
        .send(
            Method::POST,
            "/api/v1/campaigns",
            Some(&json!({"title": "K", "goal_amount": 5})),
            &campaign_key,
        )
        .await;
    assert_eq!(c1.status, 201);
    assert_eq!(c2.bytes, c1.bytes, "campaign creation honours keys too");
    let other_endpoint = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 10.0)),
            &campaign_key,
        )
        .await;
    assert_eq!(other_endpoint.status, 201, "a key belongs to one endpoint");
}

async fn the_same_key_with_a_different_request_is_refused(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Mismatch", 500.0).await;
    let key = [("idempotency-key", "k-42")];
    assert_eq!(
        app.send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 10.0)),
            &key
        )
        .await
        .status,
        201
    );
    let different = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 11.0)),
            &key,
        )
        .await;
    assert_eq!(different.status, 422);
    assert_eq!(different.code(), "idempotency_key_reused");
    assert_eq!(count_donations(&app).await, 1);
    let bad_key = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 10.0)),
            &[("idempotency-key", "has space")],
        )
        .await;
    assert_eq!(bad_key.status, 422);
    assert_eq!(bad_key.json["field"], "Idempotency-Key");
}

async fn eight_concurrent_requests_with_one_key_create_one_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Race", 500.0).await;
    let request = body(&campaign, 7.0);
    let replies = join_all((0..8).map(|_| {
        app.send(
            Method::POST,
            "/api/v1/donations",
            Some(&request),
            &[("idempotency-key", "race-1")],
        )
    }))
    .await;
    let created: Vec<&crate::helpers::Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty(), "one request wins");
    assert!(
        replies
            .iter()
            .all(|r| r.status == 201 || (r.status == 409 && r.code() == "idempotency_in_flight")),
        "the others replay or are told to retry: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        created.iter().all(|r| r.bytes == created[0].bytes),
        "every 201 is the same donation"
    );
    let retry = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&request),
            &[("idempotency-key", "race-1")],
        )
        .await;
    assert_eq!(retry.bytes, created[0].bytes);
    assert_eq!(count_donations(&app).await, 1, "exactly one donation");
    assert_eq!(
        app.store.outbox_stats().await.expect("stats").pending,
        2,
        "one campaign and one donation event"
    );
}

async fn a_key_whose_first_request_is_still_running_gets_409(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("In flight", 500.0).await;
    let request = body(&campaign, 3.0);
    // Hold the key's database lock (and, on SQLite, the single writer) as a stuck first request
    // would.
    let mut held = app.store.begin().await.expect("begin");
    assert!(
        held.lock_idempotency_key("POST /api/v1/donations", "slow-1")
            .await
            .expect("lock")
    );
    let key = [("idempotency-key", "slow-1")];
    let spawn_request = || {
        let (client, url, request) = (
            app.client.clone(),
            format!("{}/api/v1/donations", app.address),
            request.clone(),
        );
        tokio::spawn(async move {
            let response = client
                .post(url)
                .header("idempotency-key", "slow-1")
                .json(&request)
                .send()
                .await
                .expect("answer");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        })
    };
    let (a, b) = (spawn_request(), spawn_request());
    eventually(
        Duration::from_secs(10),
        "a request with a key in flight to be answered at once",
        || async { (a.is_finished() || b.is_finished()).then_some(()) },
    )
    .await;
    drop(held);
    let replies = [a.await.expect("request"), b.await.expect("request")];
    let refused: Vec<_> = replies
        .iter()
        .filter(|(status, _, _)| *status == 409)
        .collect();
    assert!(
        !refused.is_empty(),
        "one of two concurrent requests is told the key is in flight: {replies:?}"
    );
    for (_, retry_after, body) in refused {
        assert_eq!(body["code"], "idempotency_in_flight");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    assert!(
        replies
            .iter()
            .all(|(status, _, _)| *status == 201 || *status == 409),
        "{replies:?}"
    );
    let retry = app
        .send(Method::POST, "/api/v1/donations", Some(&request), &key)
        .await;
    assert_eq!(
        retry.status, 201,
        "once the first is done, the key works: {:?}",
        retry.json
    );
    assert_eq!(count_donations(&app).await, 1);
}

async fn expired_keys_are_swept_and_can_be_used_again(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Expiry", 500.0).await;
    let key = [("idempotency-key", "old-key")];
    let first = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 5.0)),
            &key,
        )
        .await;
    assert_eq!(first.status, 201);
    let in_a_day = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    assert_eq!(
        app.store.sweep_idempotency(in_a_day).await.expect("sweep"),
        0,
        "a fresh key is kept"
    );
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::hours(25);
    assert_eq!(
        app.store.sweep_idempotency(tomorrow).await.expect("sweep"),
        1
    );
    let later = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 5.0)),
            &key,
        )
        .await;
    assert_eq!(later.status, 201);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(
        later.json["id"], first.json["id"],
        "after expiry the key is new again"
    );
}

async fn a_refusal_decided_under_the_key_is_replayed_but_an_invalid_request_saves_nothing(
    ctx: TestContext,
) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Fixable", 500.0).await;
    // Invalid before the key is taken: nothing saved, the key stays free.
    let key = [("idempotency-key", "fix-me")];
    let invalid =
        json!({"campaign_id": campaign, "donor_email": "ada@example.org", "amount": 5.001});
    assert_eq!(
        app.send(Method::POST, "/api/v1/donations", Some(&invalid), &key)
            .await
            .status,
        422
    );
    let fixed = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 5.0)),
            &key,
        )
        .await;
    assert_eq!(fixed.status, 201, "{:?}", fixed.json);

    // Refused after the key is taken (the campaign is unknown): the refusal is the answer.
    let key = [("idempotency-key", "unknown-campaign")];
    let unknown =
        json!({"campaign_id": uuid::Uuid::new_v4(), "donor_email": "ada@example.org", "amount": 5});
    let first = app
        .send(Method::POST, "/api/v1/donations", Some(&unknown), &key)
        .await;
    assert_eq!(first.status, 422);
    assert_eq!(first.code(), "campaign_not_found");
    let again = app
        .send(Method::POST, "/api/v1/donations", Some(&unknown), &key)
        .await;
    assert_eq!((again.status, &again.bytes), (422, &first.bytes));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = app
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&body(&campaign, 5.0)),
            &key,
        )
        .await;
    assert_eq!(other.code(), "idempotency_key_reused");
}

async fn two_replicas_on_one_database_honour_one_key(ctx: TestContext) {
    let one = ctx.spawn_app().await;
    let two = ctx.spawn_app().await;
    let campaign = one.create_campaign("Replicas", 500.0).await;
    let request = body(&campaign, 9.0);
    let replies = join_all((0..8).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        app.send(
            Method::POST,
            "/api/v1/donations",
            Some(&request),
            &[("idempotency-key", "replica-1")],
        )
    }))
    .await;
    assert!(
        replies.iter().all(|r| r.status == 201 || r.status == 409),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let retry = two
        .send(
            Method::POST,
            "/api/v1/donations",
            Some(&request),
            &[("idempotency-key", "replica-1")],
        )
        .await;
    assert_eq!(retry.status, 201);
    assert_eq!(count_donations(&one).await, 1);
}
