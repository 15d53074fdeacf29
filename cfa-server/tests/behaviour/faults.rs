//! Faults leave nothing stuck (issue #15): what a crash, a cut connection or a lost answer left
//! behind heals by itself, and a retry of what may or may not have happened is safe.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, TestContext, eventually};
use crate::tests;

tests![
    a_webhook_held_by_a_finished_delivery_still_goes_out,
    a_repeated_confirmation_gets_the_same_answer_and_another_outcome_is_refused,
    a_confirmation_honours_its_idempotency_key,
    a_cache_that_stops_answering_is_degraded_only_after_three_failed_probes,
];

/// Queues `statuses` for `intent` in the sandbox's queue, due now, each held by the one before.
async fn queue(app: &TestApp, intent: &str, statuses: &[&str]) {
    let mut tx = app.store.begin().await.expect("tx");
    for (i, status) in statuses.iter().enumerate() {
        let at = Utc::now() - TimeDelta::seconds(10) + TimeDelta::milliseconds(i as i64);
        tx.sandbox_enqueue(intent, &format!(r#"{{"status":"{status}"}}"#), at, None)
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
}

/// An older build recorded a delivery and released the next one in two statements; a crash
/// between them left an intent's CAPTURED held by a delivered AUTHORIZED, and the payment
/// AUTHORIZED until reconciliation. Such rows are due again.
async fn a_webhook_held_by_a_finished_delivery_still_goes_out(ctx: TestContext) {
    // The queue is driven by hand: no sandbox worker may deliver behind the test's back.
    let app = ctx
        .spawn_app_with(|s| s.payments.sandbox = Some(false))
        .await;
    queue(&app, "pi_delivered", &["AUTHORIZED", "CAPTURED"]).await;
    queue(&app, "pi_given_up", &["AUTHORIZED", "CAPTURED"]).await;
    queue(&app, "pi_pending", &["AUTHORIZED", "CAPTURED"]).await;
    // What the crash left: the holders finished, the holds still in place.
    let finished = ctx
        .execute_sql(
            "UPDATE sandbox_deliveries SET attempts = 1, last_status = 200, \
             delivered_at = next_attempt_at \
             WHERE payment_intent_id = 'pi_delivered' AND body LIKE '%AUTHORIZED%'",
        )
        .await;
    assert_eq!(finished, 1);
    let finished = ctx
        .execute_sql(
            "UPDATE sandbox_deliveries SET attempts = 8, given_up_at = next_attempt_at \
             WHERE payment_intent_id = 'pi_given_up' AND body LIKE '%AUTHORIZED%'",
        )
        .await;
    assert_eq!(finished, 1);
    let due = app
        .store
        .sandbox_due_deliveries(Utc::now(), 50)
        .await
        .expect("due");
    let mut due: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.payment_intent_id.as_str(), d.body.as_str()))
        .collect();
    due.sort_unstable();
    assert_eq!(
        due,
        [
            ("pi_delivered", r#"{"status":"CAPTURED"}"#),
            ("pi_given_up", r#"{"status":"CAPTURED"}"#),
            ("pi_pending", r#"{"status":"AUTHORIZED"}"#),
        ],
        "a capture whose authorization is finished goes out; one still waiting on a pending \
         authorization does not"
    );
}

async fn confirm(
    app: &TestApp,
    pi: &str,
    outcome: &str,
    headers: &[(&str, &str)],
) -> crate::helpers::Reply {
    app.send(
        Method::POST,
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        Some(&json!({"outcome": outcome})),
        headers,
    )
    .await
}

/// A donor whose 202 was lost retries: the same outcome is the same answer, not a 409.
async fn a_repeated_confirmation_gets_the_same_answer_and_another_outcome_is_refused(
    ctx: TestContext,
) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("12.00").await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    let first = confirm(&app, &pi, "succeed", &[]).await;
    assert_eq!(first.status, 202, "{:?}", first.json);
    assert_eq!(first.json["status"], "CAPTURED");
    let again = confirm(&app, &pi, "succeed", &[]).await;
    assert_eq!(again.status, 202, "{:?}", again.json);
    assert_eq!(again.bytes, first.bytes, "the same record, byte for byte");
    let captured = eventually(Duration::from_secs(10), "the capture", || async {
        let p = app.get(&format!("/api/v1/payments/{pi}/history")).await;
        (p.json["payment"]["status"] == "CAPTURED").then_some(p)
    })
    .await;
    assert_eq!(
        captured.json["transitions"].as_array().map(Vec::len),
        Some(2),
        "one authorization and one capture: {:?}",
        captured.json
    );
    let later = confirm(&app, &pi, "succeed", &[]).await;
    assert_eq!(later.status, 202, "{:?}", later.json);
    assert_eq!(later.bytes, first.bytes, "still the confirmation's answer");
    let other = confirm(&app, &pi, "decline", &[]).await;
    assert_eq!(other.status, 409, "{:?}", other.json);
    let detail = other.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("already confirmed") && detail.contains("\"succeed\""),
        "the refusal names the outcome given: {detail}"
    );
    assert_eq!(
        app.get(&format!("/api/v1/payments/{pi}")).await.json["status"],
        "CAPTURED"
    );
}

async fn a_confirmation_honours_its_idempotency_key(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("3").await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    let key = [("idempotency-key", "confirm-1")];
    let first = confirm(&app, &pi, "authorize_only", &key).await;
    assert_eq!(first.status, 202, "{:?}", first.json);
    assert_eq!(first.json["status"], "AUTHORIZED");
    let replay = confirm(&app, &pi, "authorize_only", &key).await;
    assert_eq!(replay.status, 202);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.bytes, first.bytes);
    let reused = confirm(&app, &pi, "decline", &key).await;
    assert_eq!(reused.status, 422, "{:?}", reused.json);
    assert_eq!(reused.code(), "idempotency_key_reused");
    let unknown = confirm(
        &app,
        "pi_unknown",
        "succeed",
        &[("idempotency-key", "confirm-2")],
    )
    .await;
    assert_eq!(unknown.status, 404);
    let again = confirm(
        &app,
        "pi_unknown",
        "succeed",
        &[("idempotency-key", "confirm-2")],
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "a refusal is saved too"
    );
}

/// Under CPU load a healthy Redis sometimes misses the 50 ms ping deadline; `/ready` said
/// `degraded` in 12 of 105 polls. One failed probe is now shown, not reported as an outage.
async fn a_cache_that_stops_answering_is_degraded_only_after_three_failed_probes(ctx: TestContext) {
    // Nothing listens on the discard port: every probe fails.
    let app = ctx
        .spawn_app_with(|s| {
            s.redis.url.0 = "redis://127.0.0.1:9".into();
            s.redis.timeout_ms = 100;
        })
        .await;
    for failed in 1..=2 {
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.json["status"], "ready", "{:?}", ready.json);
        assert_eq!(ready.json["checks"]["cache"]["status"], "up");
        assert_eq!(ready.json["checks"]["cache"]["failed_probes"], failed);
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "the database is up: still serving");
    assert_eq!(ready.json["status"], "degraded", "{:?}", ready.json);
    assert_eq!(ready.json["checks"]["cache"]["status"], "down");
    assert_eq!(ready.json["checks"]["database"]["status"], "up");
}
