//! Payments: intents, the sandbox journey, webhooks (outcomes, ordering, replays, concurrency,
//! signatures), refunds, reconciliation, and the donation following its payment.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, TestContext, eventually};
use crate::tests;

tests![
    an_intent_is_initiated_for_a_pending_donation_and_recorded_on_it,
    intents_must_match_their_donation,
    the_sandbox_journey_completes_the_donation,
    a_declined_payment_fails_the_donation,
    an_authorized_only_intent_is_captured_later,
    webhook_outcomes_are_processed_ignored_rejected_or_not_found,
    every_webhook_outcome_is_replayed_byte_for_byte,
    ordering_compares_with_the_last_applied_event,
    timestamps_with_z_offsets_and_naive_forms_are_accepted,
    ten_concurrent_deliveries_of_one_event_apply_it_once,
    unsigned_forged_and_stale_webhooks_are_refused_and_change_nothing,
    rotated_secrets_are_all_accepted,
    unsigned_webhooks_are_accepted_only_when_configured,
    a_generated_secret_is_kept_in_the_data_directory,
    partial_then_full_refunds_follow_the_state_machine,
    refunds_are_refused_unless_captured_and_within_the_amount,
    five_concurrent_refunds_never_exceed_the_captured_amount,
    a_refund_is_applied_once_per_refund_id,
    reconciliation_applies_what_the_provider_knows,
    a_redelivered_payment_event_changes_the_donation_once,
    a_voided_authorization_fails_the_donation,
    a_sandbox_that_duplicates_and_delays_every_webhook_still_applies_each_once,
    a_capture_that_overtakes_its_authorization_completes_at_once,
    older_clients_asking_for_stripe_get_the_sandbox,
    unconfirmed_refunds_are_settled_from_the_providers_record,
    a_refund_made_at_the_provider_releases_what_no_longer_fits,
    an_operator_lists_webhook_deliveries_and_replays_a_rejected_one,
    the_sandbox_sends_an_intents_webhooks_one_at_a_time_in_order,
];

/// A retried AUTHORIZED (e.g. after a 429) must not be overtaken by its CAPTURED, which the
/// platform would reject as an invalid transition and keep rejecting on every retry.
async fn the_sandbox_sends_an_intents_webhooks_one_at_a_time_in_order(ctx: TestContext) {
    use cfa_server::storage::DeliveryOutcome;
    // The queue is driven by hand: no sandbox worker may deliver behind the test's back.
    let app = ctx
        .spawn_app_with(|s| s.payments.sandbox = Some(false))
        .await;
    let now = chrono::Utc::now();
    let mut tx = app.store.begin().await.expect("tx");
    tx.sandbox_enqueue(
        "pi_order",
        r#"{"status":"AUTHORIZED"}"#,
        now + chrono::TimeDelta::hours(1),
        None,
    )
    .await
    .expect("enqueue");
    tx.sandbox_enqueue(
        "pi_order",
        r#"{"status":"CAPTURED"}"#,
        now - chrono::TimeDelta::seconds(1),
        None,
    )
    .await
    .expect("enqueue");
    tx.sandbox_enqueue(
        "pi_other",
        r#"{"status":"AUTHORIZED"}"#,
        now - chrono::TimeDelta::seconds(1),
        None,
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    let due = app
        .store
        .sandbox_due_deliveries(chrono::Utc::now(), 50)
        .await
        .expect("due");
    let intents: Vec<&str> = due.iter().map(|d| d.payment_intent_id.as_str()).collect();
    assert_eq!(
        intents,
        ["pi_other"],
        "the capture waits for its authorization"
    );
    // The authorization goes out (here: marked delivered); the capture is due next.
    let first = app
        .store
        .sandbox_due_deliveries(now + chrono::TimeDelta::hours(1), 50)
        .await
        .expect("due");
    let authorization = first
        .iter()
        .find(|d| d.payment_intent_id == "pi_order")
        .expect("the authorization is due at its time");
    assert!(authorization.body.contains("AUTHORIZED"));
    app.store
        .sandbox_delivery_attempted(
            authorization.id,
            Some(200),
            DeliveryOutcome::Delivered,
            chrono::Utc::now(),
        )
        .await
        .expect("delivered");
    let due = app
        .store
        .sandbox_due_deliveries(chrono::Utc::now(), 50)
        .await
        .expect("due");
    assert!(
        due.iter()
            .any(|d| d.payment_intent_id == "pi_order" && d.body.contains("CAPTURED")),
        "{due:?}"
    );
}

async fn an_operator_lists_webhook_deliveries_and_replays_a_rejected_one(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op-key".into()])
        .await;
    let (_, intent) = app.pending_payment("15").await;
    let pi = intent_id(&intent);
    let early = app
        .webhook(
            &event(&pi, "CAPTURED", "2026-01-01T10:00:00Z", Some("cap")),
            &[],
        )
        .await;
    assert_eq!(
        early.json["reason"], "invalid_transition",
        "{:?}",
        early.json
    );
    let auth = app
        .webhook(
            &event(&pi, "AUTHORIZED", "2026-01-01T09:00:00Z", Some("auth")),
            &[],
        )
        .await;
    assert_eq!(auth.json["status"], "processed", "{:?}", auth.json);
    let op = [("authorization", "Bearer op-key")];
    let refused = app.get("/api/v1/admin/webhooks").await;
    assert_eq!(refused.status, 401, "operator views need the key");
    let list = app
        .send(reqwest::Method::GET, "/api/v1/admin/webhooks", None, &op)
        .await;
    assert_eq!(list.status, 200, "{:?}", list.json);
    let outcomes: Vec<(&str, &str)> = list
        .json
        .as_array()
        .expect("list")
        .iter()
        .map(|w| {
            (
                w["id"].as_str().expect("id"),
                w["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("event:auth", "processed"), ("event:cap", "rejected")]
    );
    let replay = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/webhooks/event:cap/replay",
            None,
            &op,
        )
        .await;
    assert_eq!(replay.status, 200, "{:?}", replay.json);
    assert_eq!(
        replay.json["status"], "processed",
        "the capture applies now"
    );
    assert_eq!(payment(&app, &pi).await["status"], "CAPTURED");
    let again = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/webhooks/event:cap/replay",
            None,
            &op,
        )
        .await;
    assert_ne!(
        again.json["status"], "processed",
        "a replay never applies twice: {:?}",
        again.json
    );
    assert_eq!(payment(&app, &pi).await["version"], 3);
    let missing = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/webhooks/nope/replay",
            None,
            &op,
        )
        .await;
    assert_eq!(missing.status, 404);
    let list = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/webhooks?limit=1",
            None,
            &op,
        )
        .await;
    assert_eq!(list.json[0]["replay_of"], "event:cap", "{:?}", list.json);
    let stats = app
        .send(reqwest::Method::GET, "/api/v1/admin/stats", None, &op)
        .await;
    assert_eq!(stats.status, 200, "{:?}", stats.json);
    assert_eq!(stats.json["donations_total"], 1);
    assert_eq!(
        (
            &stats.json["webhooks"]["processed"],
            &stats.json["webhooks"]["rejected"]
        ),
        (&json!(2), &json!(2)),
        "authorized and the replayed capture; the early capture and the second replay: {:?}",
        stats.json
    );
    let outbox = app
        .send(reqwest::Method::GET, "/api/v1/admin/outbox", None, &op)
        .await;
    assert_eq!(outbox.status, 200);
    assert!(
        outbox.json["pending"].as_i64().expect("pending") >= 1,
        "{:?}",
        outbox.json
    );
    app.drain_outbox().await;
    let outbox = app
        .send(reqwest::Method::GET, "/api/v1/admin/outbox", None, &op)
        .await;
    assert_eq!(outbox.json["pending"], 0);
    assert_eq!(outbox.json["oldest_pending_age_seconds"], Value::Null);
}

async fn a_sandbox_that_duplicates_and_delays_every_webhook_still_applies_each_once(
    ctx: TestContext,
) {
    let app = ctx
        .spawn_app_with(|s| {
            s.payments.sandbox_duplicate_probability = 1.0;
            s.payments.sandbox_delay_ms = 50;
        })
        .await;
    let (donation_id, intent) = app.pending_payment("11").await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    let captured = wait_for_payment(&app, &pi, "CAPTURED").await;
    wait_for_donation(&app, &donation_id, "COMPLETED").await;
    eventually(
        Duration::from_secs(10),
        "the duplicates to be delivered too",
        || async {
            let due = app
                .store
                .sandbox_due_deliveries(chrono::Utc::now() + chrono::TimeDelta::hours(1), 10)
                .await
                .expect("due");
            due.is_empty().then_some(())
        },
    )
    .await;
    assert_eq!(
        payment(&app, &pi).await["version"],
        captured["version"],
        "four deliveries, two transitions"
    );
    assert_eq!(captured["version"], 3);
}

async fn a_capture_that_overtakes_its_authorization_completes_at_once(ctx: TestContext) {
    // Reconciliation's periodic pass is an hour away: only the early capture can trigger it.
    let app = ctx
        .spawn_app_with(|s| {
            s.payments.sandbox_reorder_probability = 1.0;
            s.payments.reconcile_after_seconds = 3_600;
            s.payments.reconcile_interval_seconds = 3_600;
        })
        .await;
    let (donation_id, intent) = app.pending_payment("13").await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    // CAPTURED arrives first and is rejected, but the provider is asked at once.
    wait_for_payment(&app, &pi, "CAPTURED").await;
    wait_for_donation(&app, &donation_id, "COMPLETED").await;
    let history = app
        .send_as_operator(
            reqwest::Method::GET,
            &format!("/api/v1/payments/{pi}/history"),
            None,
        )
        .await;
    let events: Vec<&str> = history.json["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["event_id"].as_str())
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("reconcile:")),
        "the capture came from the provider's record: {events:?}"
    );
    let webhooks = app
        .send_as_operator(reqwest::Method::GET, "/api/v1/admin/webhooks", None)
        .await;
    assert!(
        webhooks
            .json
            .as_array()
            .expect("list")
            .iter()
            .any(|w| { w["payment_intent_id"] == pi.as_str() && w["outcome"] == "rejected" }),
        "the early event itself stays rejected, as stored: {:?}",
        webhooks.json
    );
}

fn event(intent: &str, status: &str, timestamp: &str, id: Option<&str>) -> String {
    let mut body = json!({"event_type": format!("payment_intent.{}", status.to_lowercase()), "payment_intent_id": intent, "status": status, "timestamp": timestamp});
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body.to_string()
}

fn intent_id(intent: &Value) -> String {
    intent["payment_intent_id"]
        .as_str()
        .expect("intent id")
        .to_string()
}

async fn payment(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/api/v1/payments/{id}")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

async fn donation(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/donations/{id}")).await.json
}

/// Waits until the sandbox's webhooks have moved the payment to `status`.
async fn wait_for_payment(app: &TestApp, intent: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        &format!("payment {intent} to be {status}"),
        || async {
            let p = payment(app, intent).await;
            (p["status"] == status).then_some(p)
        },
    )
    .await
}

/// Relays events until the donation reaches `status`.
async fn wait_for_donation(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        &format!("donation {id} to be {status}"),
        || async {
            app.drain_outbox().await;
            let d = donation(app, id).await;
            (d["status"] == status).then_some(d)
        },
    )
    .await
}

async fn an_intent_is_initiated_for_a_pending_donation_and_recorded_on_it(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("25.50").await;
    assert_eq!(intent["status"], "INITIATED");
    assert_eq!(intent["version"], 1);
    assert_eq!(intent["gateway"], "sandbox");
    assert_eq!(intent["amount_minor"], 2550);
    assert_eq!(intent["donation_id"], donation_id.as_str());
    let pi = intent_id(&intent);
    assert!(pi.starts_with("pi_"));
    assert!(
        intent["client_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with(&pi))
    );
    let by_intent = payment(&app, &pi).await;
    let by_id = payment(&app, intent["id"].as_str().expect("id")).await;
    assert_eq!(
        by_intent, by_id,
        "a payment is found by its id or its intent id"
    );
    assert_eq!(by_id["version"], 1);

    assert_eq!(
        donation(&app, &donation_id).await["payment_intent_id"],
        Value::Null,
        "recorded through an event, not a direct write"
    );
    app.drain_outbox().await;
    assert_eq!(
        donation(&app, &donation_id).await["payment_intent_id"],
        pi.as_str()
    );
    let sandbox = app.get(&format!("/sandbox/v1/intents/{pi}")).await;
    assert_eq!(sandbox.status, 200);
    assert_eq!(
        sandbox.json["status"], "INITIATED",
        "the provider has its side of the intent"
    );
    assert_eq!(app.get("/api/v1/payments/pi_unknown").await.status, 404);
}

async fn intents_must_match_their_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, _) = app.pending_payment("10").await;
    let campaign = app.create_campaign("Other", 100.0).await;
    let fresh = app.donate(&campaign, "x@example.org", "10").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cases = [
        (
            json!({"donation_id": uuid::Uuid::new_v4(), "amount": 10}),
            404,
            "not_found",
        ),
        (
            json!({"donation_id": fresh, "amount": 10.01}),
            422,
            "amount_mismatch",
        ),
        (
            json!({"donation_id": fresh, "amount": 10, "currency": "EUR"}),
            422,
            "currency_mismatch",
        ),
        (
            json!({"donation_id": fresh, "amount": 10, "gateway": "paypal"}),
            422,
            "unsupported_gateway",
        ),
        (
            json!({"donation_id": fresh, "amount": 10.001}),
            422,
            "validation_error",
        ),
        (
            json!({"donation_id": donation_id, "amount": 10}),
            422,
            "payment_exists",
        ),
        (json!({"amount": 10}), 422, "validation_error"),
    ];
    for (body, status, code) in cases {
        let reply = app.post("/api/v1/payments/intent", &body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body} → {:?}",
            reply.json
        );
    }
    let key = [("idempotency-key", "intent-1")];
    let body = json!({"donation_id": fresh, "amount": 10});
    let first = app
        .send(Method::POST, "/api/v1/payments/intent", Some(&body), &key)
        .await;
    let again = app
        .send(Method::POST, "/api/v1/payments/intent", Some(&body), &key)
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(
        again.bytes, first.bytes,
        "Idempotency-Key replays the intent"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

async fn the_sandbox_journey_completes_the_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("42.00").await;
    let pi = intent_id(&intent);
    let confirm = app
        .post(
            &format!("/sandbox/v1/intents/{pi}/confirm"),
            &json!({"outcome": "succeed"}),
        )
        .await;
    assert_eq!(confirm.status, 202, "{:?}", confirm.json);
    let captured = wait_for_payment(&app, &pi, "CAPTURED").await;
    assert_eq!(captured["version"], 3, "INITIATED → AUTHORIZED → CAPTURED");
    let completed = wait_for_donation(&app, &donation_id, "COMPLETED").await;
    assert_eq!(completed["payment_intent_id"], pi.as_str());
    let history = app.get(&format!("/api/v1/payments/{pi}/history")).await;
    let steps: Vec<(&str, &str)> = history.json["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap_or(""),
                t["to"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [("INITIATED", "AUTHORIZED"), ("AUTHORIZED", "CAPTURED")]
    );
    assert!(
        history.json["transitions"][0]["event_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("evt_"))
    );
    let again = app
        .post(
            &format!("/sandbox/v1/intents/{pi}/confirm"),
            &json!({"outcome": "decline"}),
        )
        .await;
    assert_eq!(
        again.status, 409,
        "a confirmed intent cannot be confirmed again with another outcome"
    );
}

async fn a_declined_payment_fails_the_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("5").await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "decline"}),
    )
    .await;
    let failed = wait_for_payment(&app, &pi, "FAILED").await;
    assert_eq!(failed["version"], 2);
    wait_for_donation(&app, &donation_id, "FAILED").await;
    let bad = app
        .post(
            &format!("/sandbox/v1/intents/{pi}/confirm"),
            &json!({"outcome": "maybe"}),
        )
        .await;
    assert_eq!(bad.json["field"], "outcome");
}

async fn an_authorized_only_intent_is_captured_later(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("7").await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "authorize_only"}),
    )
    .await;
    wait_for_payment(&app, &pi, "AUTHORIZED").await;
    app.drain_outbox().await;
    assert_eq!(
        donation(&app, &donation_id).await["status"],
        "PENDING",
        "authorized is not paid"
    );
    let capture = app
        .post(&format!("/sandbox/v1/intents/{pi}/capture"), &json!({}))
        .await;
    assert_eq!(capture.status, 202, "{:?}", capture.json);
    wait_for_payment(&app, &pi, "CAPTURED").await;
    wait_for_donation(&app, &donation_id, "COMPLETED").await;
}

async fn webhook_outcomes_are_processed_ignored_rejected_or_not_found(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let processed = app
        .webhook(
            &event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", Some("e1")),
            &[],
        )
        .await;
    assert_eq!(processed.status, 200);
    assert_eq!(
        processed.json,
        json!({"status": "processed", "payment_id": intent["id"], "payment_intent_id": pi, "old_status": "INITIATED", "new_status": "AUTHORIZED", "version": 2})
    );
    let ignored = app
        .webhook(
            &event(&pi, "FAILED", "2026-01-01T09:00:00Z", Some("e2")),
            &[],
        )
        .await;
    assert_eq!(ignored.status, 200);
    assert_eq!(
        (
            ignored.json["status"].as_str(),
            ignored.json["reason"].as_str()
        ),
        (Some("ignored"), Some("out_of_order"))
    );
    let rejected = app
        .webhook(
            &event(&pi, "INITIATED", "2026-01-01T11:00:00Z", Some("e3")),
            &[],
        )
        .await;
    assert_eq!(rejected.status, 400);
    assert_eq!(
        (
            rejected.json["status"].as_str(),
            rejected.json["reason"].as_str()
        ),
        (Some("rejected"), Some("invalid_transition"))
    );
    assert_eq!(rejected.json["current_status"], "AUTHORIZED");
    let unknown = app
        .webhook(
            &event(
                "pi_nobody",
                "AUTHORIZED",
                "2026-01-01T11:00:00Z",
                Some("e4"),
            ),
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "not_found");
    let malformed = app.webhook(r#"{"payment_intent_id": 5}"#, &[]).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json["reason"], "malformed");
    let p = payment(&app, &pi).await;
    assert_eq!(
        (p["status"].as_str(), p["version"].as_i64()),
        (Some("AUTHORIZED"), Some(2)),
        "only the processed event changed anything"
    );
}

async fn every_webhook_outcome_is_replayed_byte_for_byte(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let with_id = event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", Some("evt-a"));
    let invalid = event(&pi, "INITIATED", "2026-01-01T11:00:00Z", Some("evt-b"));
    let unknown = event("pi_nobody", "AUTHORIZED", "2026-01-01T11:00:00Z", None);
    for body in [&with_id, &invalid, &unknown] {
        let first = app.webhook(body, &[]).await;
        let again = app.webhook(body, &[]).await;
        assert_eq!(
            (again.status, &again.bytes),
            (first.status, &first.bytes),
            "{body}"
        );
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    // Same event id, other body: the id decides, so the stored outcome comes back.
    let same_id = event(&pi, "FAILED", "2026-01-01T12:00:00Z", Some("evt-a"));
    assert_eq!(
        app.webhook(&same_id, &[]).await.json["new_status"],
        "AUTHORIZED"
    );
    // The signed event id decides, not X-Idempotency-Key (which the signature does not cover).
    let keyed = event(&pi, "CAPTURED", "2026-01-01T12:00:00Z", Some("evt-c"));
    let first = app
        .webhook(&keyed, &[("x-idempotency-key", "delivery-1")])
        .await;
    assert_eq!(first.json["new_status"], "CAPTURED");
    let again = app
        .webhook(&keyed, &[("x-idempotency-key", "delivery-2")])
        .await;
    assert_eq!(
        again.bytes, first.bytes,
        "the same event id is the same event"
    );
    let other = event(&pi, "FAILED", "2026-01-01T13:00:00Z", Some("evt-d"));
    let not_a_replay = app
        .webhook(&other, &[("x-idempotency-key", "delivery-1")])
        .await;
    assert_eq!(
        not_a_replay.json["reason"], "invalid_transition",
        "another event id is another event, whatever the header says: {:?}",
        not_a_replay.json
    );
    assert_eq!(payment(&app, &pi).await["version"], 3);
}

async fn ordering_compares_with_the_last_applied_event(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    // The payment row is created now, long after these event times: only event time matters.
    assert_eq!(
        app.webhook(
            &event(&pi, "AUTHORIZED", "2020-01-01T10:00:00Z", Some("o1")),
            &[]
        )
        .await
        .json["status"],
        "processed"
    );
    let older = app
        .webhook(
            &event(&pi, "CAPTURED", "2020-01-01T09:59:59Z", Some("o2")),
            &[],
        )
        .await;
    assert_eq!(
        older.json["reason"], "out_of_order",
        "a valid transition, but older than the last applied event"
    );
    let newer = app
        .webhook(
            &event(&pi, "CAPTURED", "2020-01-01T10:00:01Z", Some("o3")),
            &[],
        )
        .await;
    assert_eq!(newer.json["new_status"], "CAPTURED");
}

async fn timestamps_with_z_offsets_and_naive_forms_are_accepted(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    for (status_chain, stamps) in [
        (
            ["AUTHORIZED", "CAPTURED"],
            ["2026-03-01T10:00:00Z", "2026-03-01T12:00:01+02:00"],
        ),
        (
            ["AUTHORIZED", "CAPTURED"],
            ["2026-03-01T10:00:00", "2026-03-01 10:00:01.5"],
        ),
    ] {
        let (_, intent) = app.pending_payment("3").await;
        let pi = intent_id(&intent);
        for (status, stamp) in status_chain.iter().zip(stamps) {
            let reply = app.webhook(&event(&pi, status, stamp, None), &[]).await;
            assert_eq!(
                reply.json["status"], "processed",
                "{stamp}: {:?}",
                reply.json
            );
        }
    }
    let (_, intent) = app.pending_payment("3").await;
    let pi = intent_id(&intent);
    app.webhook(
        &event(&pi, "AUTHORIZED", "2026-03-01T12:00:00+02:00", None),
        &[],
    )
    .await;
    // 12:00+02:00 is 10:00Z; a naive 11:00 is read as 11:00Z, so it comes after, not before.
    let later = app
        .webhook(&event(&pi, "CAPTURED", "2026-03-01T11:00:00", None), &[])
        .await;
    assert_eq!(later.json["status"], "processed", "{:?}", later.json);
}

async fn ten_concurrent_deliveries_of_one_event_apply_it_once(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let body = event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", Some("storm-1"));
    let replies: Vec<Reply> = join_all((0..10).map(|_| app.webhook(&body, &[]))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.bytes == replies[0].bytes),
        "{:?}",
        replies
            .iter()
            .map(|r| (r.status, r.json.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.header("idempotent-replayed").is_none())
            .count(),
        1,
        "one delivery did the work"
    );
    let p = payment(&app, &pi).await;
    assert_eq!(p["version"], 2);
    let history = app.get(&format!("/api/v1/payments/{pi}/history")).await;
    assert_eq!(
        history.json["transitions"].as_array().map(Vec::len),
        Some(1)
    );
}

async fn unsigned_forged_and_stale_webhooks_are_refused_and_change_nothing(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let body = event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", Some("sig-1"));
    let url = format!("{}/api/v1/payments/webhook", app.address);
    let now = chrono::Utc::now().timestamp();
    let headers = [
        None,
        Some(cfa_server::services::payments::signature::header_value(
            &["not-the-secret"],
            now,
            body.as_bytes(),
        )),
        Some(cfa_server::services::payments::signature::header_value(
            &[&app.secret],
            now - 600,
            body.as_bytes(),
        )),
        Some(cfa_server::services::payments::signature::header_value(
            &[&app.secret],
            now,
            b"another body",
        )),
        Some("t=abc".to_string()),
    ];
    for header in headers {
        let mut request = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(h) = &header {
            request = request.header("cfa-signature", h);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status().as_u16(), 401, "{header:?}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(json["code"], "invalid_signature");
    }
    assert_eq!(payment(&app, &pi).await["version"], 1, "nothing changed");
    assert_eq!(
        app.webhook(&body, &[]).await.json["status"],
        "processed",
        "the genuine event was not stored as refused"
    );
}

async fn rotated_secrets_are_all_accepted(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.payments.webhook_secret = vec!["new-secret".into(), "old-secret".into()]
        })
        .await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let body = event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", Some("rot-1"));
    let now = chrono::Utc::now().timestamp();
    let header = cfa_server::services::payments::signature::header_value(
        &["retired", "old-secret"],
        now,
        body.as_bytes(),
    );
    let reply = app
        .client
        .post(format!("{}/api/v1/payments/webhook", app.address))
        .header("cfa-signature", header)
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(reply.status().as_u16(), 200);
    assert!(
        !ctx.data_dir().join("webhook_secret").exists(),
        "no secret is generated when one is configured"
    );
}

async fn unsigned_webhooks_are_accepted_only_when_configured(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.payments.allow_unsigned_webhooks = true)
        .await;
    let (_, intent) = app.pending_payment("20").await;
    let pi = intent_id(&intent);
    let body = event(
        &pi,
        "AUTHORIZED",
        "2026-01-01T10:00:00Z",
        Some("unsigned-1"),
    );
    let reply = app
        .send_raw(
            Method::POST,
            "/api/v1/payments/webhook",
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
    assert_eq!(reply.json["status"], "processed");
    let forged = event(&pi, "CAPTURED", "2026-01-01T11:00:00Z", Some("unsigned-2"));
    let reply = app
        .send(
            Method::POST,
            "/api/v1/payments/webhook",
            Some(&serde_json::from_str::<Value>(&forged).expect("json")),
            &[("cfa-signature", "t=1,v1=00")],
        )
        .await;
    assert_eq!(reply.status, 401, "a wrong signature is refused even then");
    let ready = app.get("/ready").await;
    assert!(
        ready.json["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("unsigned webhooks")))
    );
}

async fn a_generated_secret_is_kept_in_the_data_directory(ctx: TestContext) {
    let first = ctx.spawn_app().await;
    let path = ctx.data_dir().join("webhook_secret");
    let stored = std::fs::read_to_string(&path).expect("the generated secret is kept");
    assert_eq!(stored.trim(), first.secret);
    let secret = first.secret.clone();
    first.stop().await.expect("stop");
    let second = ctx.spawn_app().await;
    assert_eq!(second.secret, secret, "a restart keeps the secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}

async fn captured(app: &TestApp, amount: &str) -> (String, String) {
    let (donation_id, intent) = app.pending_payment(amount).await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    wait_for_payment(app, &pi, "CAPTURED").await;
    wait_for_donation(app, &donation_id, "COMPLETED").await;
    (donation_id, pi)
}

/// A server whose sandbox webhooks never arrive: the sandbox does what it is asked, but only
/// reconciliation can learn it.
async fn quiet_provider(ctx: &TestContext) -> TestApp {
    ctx.spawn_app_with(|s| {
        s.payments.sandbox_webhook_url = "http://127.0.0.1:9/api/v1/payments/webhook".into();
        s.payments.sandbox_max_attempts = 1;
    })
    .await
}

/// A payment of `amount`, captured at the sandbox and, by hand-sent webhooks, here.
async fn captured_by_hand(app: &TestApp, amount: &str) -> String {
    let (_, intent) = app.pending_payment(amount).await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    app.webhook(&event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", None), &[])
        .await;
    app.webhook(&event(&pi, "CAPTURED", "2026-01-01T10:00:01Z", None), &[])
        .await;
    pi
}

async fn refund(app: &TestApp, pi: &str, amount: f64) -> crate::helpers::Reply {
    app.post(
        &format!("/api/v1/payments/{pi}/refund"),
        &json!({ "amount": amount }),
    )
    .await
}

async fn refund_statuses(app: &TestApp, pi: &str) -> Vec<(i64, String)> {
    let history = app
        .send_as_operator(Method::GET, &format!("/api/v1/payments/{pi}/history"), None)
        .await;
    let mut statuses: Vec<(i64, String)> = history.json["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|r| {
            (
                r["amount_minor"].as_i64().expect("amount"),
                r["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    statuses.sort();
    statuses
}

async fn unconfirmed_refunds_are_settled_from_the_providers_record(ctx: TestContext) {
    let app = quiet_provider(&ctx).await;
    let reconciler = |expiry: Duration| {
        cfa_server::services::payments::Reconciler::new(
            app.store.clone(),
            app.state.provider.clone().expect("sandbox"),
            app.state.reconcile.clone(),
            Duration::from_secs(3_600),
        )
        .with_refund_expiry(expiry)
    };
    // Made at the provider, its confirmation lost: applied from the provider's record.
    let made = captured_by_hand(&app, "50").await;
    assert_eq!(refund(&app, &made, 50.0).await.status, 202);
    // Never reached the provider (as if the process died after reserving it): released.
    let lost = captured_by_hand(&app, "40").await;
    let lost_id = payment(&app, &lost).await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let mut tx = app.store.begin().await.expect("tx");
    tx.insert_refund(&cfa_server::storage::Refund {
        refund_id: "re_never_sent".into(),
        payment_id: lost_id,
        amount_minor: 4000,
        status: "REQUESTED".into(),
        requested_at: chrono::Utc::now(),
        completed_at: None,
    })
    .await
    .expect("reserve");
    tx.commit().await.expect("commit");
    let blocked = refund(&app, &lost, 10.0).await;
    assert_eq!(
        blocked.status, 400,
        "all 40 are reserved: {:?}",
        blocked.json
    );

    let early = reconciler(Duration::from_secs(3_600)).run_once().await;
    let early = early.expect("reconcile");
    assert_eq!((early.repaired, early.refunds_released), (0, 0), "not yet");
    let report = reconciler(Duration::ZERO)
        .run_once()
        .await
        .expect("reconcile");
    assert_eq!(
        (report.repaired, report.refunds_released),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        refund_statuses(&app, &made).await,
        [(5000, "SUCCEEDED".into())]
    );
    assert_eq!(payment(&app, &made).await["status"], "REFUNDED");
    assert_eq!(
        refund_statuses(&app, &lost).await,
        [(4000, "FAILED".into())]
    );
    let again = refund(&app, &lost, 10.0).await;
    assert_eq!(again.status, 202, "no longer blocked: {:?}", again.json);
}

async fn a_refund_made_at_the_provider_releases_what_no_longer_fits(ctx: TestContext) {
    let app = quiet_provider(&ctx).await;
    let pi = captured_by_hand(&app, "50").await;
    assert_eq!(refund(&app, &pi, 10.0).await.status, 202);
    assert_eq!(refund(&app, &pi, 30.0).await.status, 202);
    // A refund of 20 made at the provider directly leaves 30 here: the newest request (30) no
    // longer fits beside the older one (10).
    let direct = json!({"id": "evt-direct", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T11:00:00Z", "data": {"refund_id": "re_at_provider", "amount": 20}}).to_string();
    let applied = app.webhook(&direct, &[]).await;
    assert_eq!(applied.json["status"], "processed", "{:?}", applied.json);
    assert_eq!(
        refund_statuses(&app, &pi).await,
        [
            (1000, "REQUESTED".to_string()),
            (2000, "SUCCEEDED".to_string()),
            (3000, "FAILED".to_string()),
        ]
    );
}

async fn partial_then_full_refunds_follow_the_state_machine(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, pi) = captured(&app, "100").await;
    let partial = app
        .post(
            &format!("/api/v1/payments/{pi}/refund"),
            &json!({"amount": 30.25}),
        )
        .await;
    assert_eq!(partial.status, 202, "{:?}", partial.json);
    assert_eq!(partial.json["status"], "REQUESTED");
    let after_partial = eventually(
        Duration::from_secs(10),
        "the partial refund webhook",
        || async {
            let p = payment(&app, &pi).await;
            (p["refunded_amount_minor"] == 3025).then_some(p)
        },
    )
    .await;
    assert_eq!(
        after_partial["status"], "CAPTURED",
        "a partial refund keeps it captured"
    );
    assert_eq!(after_partial["version"], 4);
    app.drain_outbox().await;
    let d = donation(&app, &donation_id).await;
    assert_eq!(
        (d["status"].as_str(), d["refunded_amount_minor"].as_i64()),
        (Some("COMPLETED"), Some(3025))
    );

    let rest = app
        .send_raw(
            Method::POST,
            &format!("/api/v1/payments/{pi}/refund"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(
        rest.status, 202,
        "no body refunds the rest: {:?}",
        rest.json
    );
    assert_eq!(rest.json["amount_minor"], 6975);
    let refunded = wait_for_payment(&app, &pi, "REFUNDED").await;
    assert_eq!(refunded["version"], 5);
    assert_eq!(refunded["refunded_amount_minor"], 10000);
    wait_for_donation(&app, &donation_id, "REFUNDED").await;
}

async fn refunds_are_refused_unless_captured_and_within_the_amount(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("10").await;
    let not_captured = app
        .post(
            &format!("/api/v1/payments/{}/refund", intent_id(&intent)),
            &json!({}),
        )
        .await;
    assert_eq!(not_captured.status, 400);
    assert_eq!(not_captured.code(), "invalid_refund");
    assert!(
        not_captured.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("INITIATED")),
        "{:?}",
        not_captured.json
    );
    let (_, pi) = captured(&app, "10").await;
    let too_much = app
        .post(
            &format!("/api/v1/payments/{pi}/refund"),
            &json!({"amount": 10.01}),
        )
        .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.code(), "invalid_refund");
    let zero = app
        .post(
            &format!("/api/v1/payments/{pi}/refund"),
            &json!({"amount": 0}),
        )
        .await;
    assert_eq!(zero.status, 422);
    let keys = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op-key".into()])
        .await;
    let (_, keyed_pi) = captured(&keys, "10").await;
    let anonymous = keys
        .post(&format!("/api/v1/payments/{keyed_pi}/refund"), &json!({}))
        .await;
    assert_eq!(anonymous.status, 401, "refunds are for operators");
}

async fn five_concurrent_refunds_never_exceed_the_captured_amount(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, pi) = captured(&app, "100").await;
    let body = json!({"amount": 30});
    let path = format!("/api/v1/payments/{pi}/refund");
    let replies = join_all((0..5).map(|_| app.post(&path, &body))).await;
    let accepted = replies.iter().filter(|r| r.status == 202).count();
    assert_eq!(
        accepted,
        3,
        "three refunds of 30 fit in 100: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 202 || r.code() == "invalid_refund")
    );
    let settled = eventually(Duration::from_secs(10), "the refunds to settle", || async {
        let p = payment(&app, &pi).await;
        (p["refunded_amount_minor"] == 9000).then_some(p)
    })
    .await;
    assert_eq!(settled["status"], "CAPTURED");
}

async fn a_refund_is_applied_once_per_refund_id(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (_, intent) = app.pending_payment("50").await;
    let pi = intent_id(&intent);
    app.webhook(&event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", None), &[])
        .await;
    app.webhook(&event(&pi, "CAPTURED", "2026-01-01T10:00:01Z", None), &[])
        .await;
    let refund = |id: &str| {
        json!({"id": id, "event_type": "charge.refunded", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T11:00:00Z", "data": {"refund_id": "re_provider_1", "amount": 12.5}}).to_string()
    };
    let first = app.webhook(&refund("evt-r1"), &[]).await;
    assert_eq!(first.json["status"], "processed", "{:?}", first.json);
    assert_eq!(first.json["new_status"], "CAPTURED");
    let second = app.webhook(&refund("evt-r2"), &[]).await;
    assert_eq!(
        (
            second.json["status"].as_str(),
            second.json["reason"].as_str()
        ),
        (Some("ignored"), Some("refund_already_applied"))
    );
    let earlier = json!({"id": "evt-r0", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T10:30:00Z", "data": {"refund_id": "re_provider_0", "amount": 2.5}}).to_string();
    assert_eq!(
        app.webhook(&earlier, &[]).await.json["status"],
        "processed",
        "partial refunds add up in any order"
    );
    let anonymous = json!({"id": "evt-r3", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T12:00:00Z", "data": {"amount": 1}}).to_string();
    let refused = app.webhook(&anonymous, &[]).await;
    assert_eq!(
        (refused.status, refused.json["field"].as_str()),
        (400, Some("data.refund_id"))
    );
    let bad_amount = json!({"id": "evt-r4", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T12:00:00Z", "data": {"refund_id": "re_x", "amount": "1.00"}}).to_string();
    assert_eq!(
        app.webhook(&bad_amount, &[]).await.json["field"],
        "data.amount",
        "an unreadable amount is never read as 'the rest'"
    );
    let p = payment(&app, &pi).await;
    assert_eq!(
        (p["refunded_amount_minor"].as_i64(), p["version"].as_i64()),
        (Some(1500), Some(5))
    );

    let (_, other) = app.pending_payment("50").await;
    let other_pi = intent_id(&other);
    app.webhook(
        &event(&other_pi, "AUTHORIZED", "2026-01-01T10:00:00Z", None),
        &[],
    )
    .await;
    app.webhook(
        &event(&other_pi, "CAPTURED", "2026-01-01T10:00:01Z", None),
        &[],
    )
    .await;
    let stolen = json!({"id": "evt-r5", "payment_intent_id": other_pi, "status": "REFUNDED", "timestamp": "2026-01-01T11:00:00Z", "data": {"refund_id": "re_provider_1", "amount": 12.5}}).to_string();
    let mismatch = app.webhook(&stolen, &[]).await;
    assert_eq!(
        (mismatch.status, mismatch.json["reason"].as_str()),
        (400, Some("refund_mismatch")),
        "a refund id belongs to one payment"
    );
}

async fn a_voided_authorization_fails_the_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("9").await;
    let pi = intent_id(&intent);
    app.webhook(&event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", None), &[])
        .await;
    let void = json!({"id": "void-1", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T10:05:00Z", "data": {"refund_id": "re_void", "amount": 9}}).to_string();
    assert_eq!(app.webhook(&void, &[]).await.json["new_status"], "REFUNDED");
    wait_for_donation(&app, &donation_id, "FAILED").await;
}

async fn reconciliation_applies_what_the_provider_knows(ctx: TestContext) {
    // The sandbox delivers to a port where nothing listens, so its webhooks never arrive.
    let app = ctx
        .spawn_app_with(|s| {
            s.payments.sandbox_webhook_url = "http://127.0.0.1:9/api/v1/payments/webhook".into();
            s.payments.sandbox_max_attempts = 1;
        })
        .await;
    let (donation_id, intent) = app.pending_payment("15").await;
    let pi = intent_id(&intent);
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    let reconciler = cfa_server::services::payments::Reconciler::new(
        app.store.clone(),
        app.state.provider.clone().expect("sandbox"),
        app.state.reconcile.clone(),
        Duration::ZERO,
    );
    let report = reconciler.run_once().await.expect("reconcile");
    assert_eq!((report.checked, report.repaired), (1, 2), "{report:?}");
    let p = payment(&app, &pi).await;
    assert_eq!(
        (p["status"].as_str(), p["version"].as_i64()),
        (Some("CAPTURED"), Some(3))
    );
    wait_for_donation(&app, &donation_id, "COMPLETED").await;
    let again = reconciler.run_once().await.expect("reconcile");
    assert_eq!(again.checked, 0, "nothing is stuck any more");
    assert_eq!(
        app.state
            .reconcile
            .repaired
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "counted"
    );
}

async fn a_redelivered_payment_event_changes_the_donation_once(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler;
    use cfa_server::services::donations::DonationStatusConsumer;
    let app = ctx.spawn_app().await;
    let (donation_id, intent) = app.pending_payment("8").await;
    let pi = intent_id(&intent);
    app.drain_outbox().await;
    app.webhook(&event(&pi, "AUTHORIZED", "2026-01-01T10:00:00Z", None), &[])
        .await;
    app.webhook(&event(&pi, "CAPTURED", "2026-01-01T10:00:01Z", None), &[])
        .await;
    let now = chrono::Utc::now();
    let claimed = app
        .store
        .claim_outbox("test", 100, now, now + chrono::TimeDelta::seconds(60))
        .await
        .expect("claim");
    let captured = claimed
        .iter()
        .find(|r| r.event.event_type == "payment.captured")
        .expect("captured event")
        .event
        .clone();
    let consumer = DonationStatusConsumer::new(app.store.clone());
    for _ in 0..3 {
        consumer.handle(&captured).await.expect("handled");
    }
    let d = donation(&app, &donation_id).await;
    assert_eq!(
        (d["status"].as_str(), d["version"].as_i64()),
        (Some("COMPLETED"), Some(2)),
        "completed once, version bumped once"
    );
}

async fn older_clients_asking_for_stripe_get_the_sandbox(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Legacy", 500.0).await;
    let donation = app.donate(&campaign, "ada@example.org", "12").await;
    let body = |gateway: &str| json!({"donation_id": donation.json["id"], "amount": 12, "gateway": gateway});
    let unknown = app.post("/api/v1/payments/intent", &body("paypal")).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (422, "unsupported_gateway"),
        "a provider nothing serves is still refused"
    );
    let intent = app.post("/api/v1/payments/intent", &body("stripe")).await;
    assert_eq!(intent.status, 201, "{:?}", intent.json);
    assert_eq!(
        intent.json["gateway"], "sandbox",
        "the answer says who serves it"
    );
}
