//! Live totals: the read model, its cache, realtime computation and refresh.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestContext, eventually};
use crate::tests;

tests![
    a_campaign_without_donations_has_zero_totals_and_an_unknown_one_is_404,
    totals_are_exact_after_completed_failed_and_refunded_donations,
    a_completed_donation_reaches_the_totals_through_the_background_relay,
    concurrent_completions_in_one_campaign_lose_no_update,
    redelivered_and_stale_events_change_nothing,
    refresh_repairs_a_tampered_read_model_and_reports_the_drift,
    the_cache_serves_reads_and_is_invalidated_by_changes,
    a_late_campaign_event_does_not_bring_back_an_old_goal,
];

async fn a_late_campaign_event_does_not_bring_back_an_old_goal(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler;
    let app = ctx.spawn_app().await;
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/campaigns/{id}");
    for goal in [100, 150, 200] {
        app.send(
            Method::PUT,
            &path,
            Some(&json!({"title": "Goals", "goal_amount": goal})),
            &[],
        )
        .await;
    }
    let events = completion_events(&app).await;
    let consumer = cfa_server::services::totals::TotalsConsumer::new(
        app.store.clone(),
        app.state.totals_cache.clone(),
        app.state.live.clone(),
    );
    for e in &events {
        consumer.handle(e).await.expect("handled");
    }
    let campaign = id.to_string();
    assert_eq!(totals(&app, &campaign).await["goal_amount_minor"], 20000);
    let mut late = events
        .iter()
        .find(|e| e.event_type == "campaign.updated" && e.version == 2)
        .expect("v2")
        .clone();
    late.event_id = uuid::Uuid::new_v4();
    consumer.handle(&late).await.expect("handled");
    assert_eq!(
        totals(&app, &campaign).await["goal_amount_minor"],
        20000,
        "version 2 is older than version 3"
    );
}

async fn totals(app: &TestApp, campaign: &str) -> Value {
    let reply = app
        .get(&format!("/api/v1/totals/campaigns/{campaign}"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

async fn realtime(app: &TestApp, campaign: &str) -> Value {
    app.get(&format!(
        "/api/v1/totals/campaigns/{campaign}?realtime=true"
    ))
    .await
    .json
}

fn figures(t: &Value) -> (i64, i64, i64) {
    (
        t["total_amount_minor"].as_i64().unwrap_or(-1),
        t["total_donations"].as_i64().unwrap_or(-1),
        t["unique_donors"].as_i64().unwrap_or(-1),
    )
}

async fn set_status(app: &TestApp, donation: &str, status: &str) {
    let reply = app
        .send(
            Method::PATCH,
            &format!("/api/v1/donations/{donation}/status"),
            Some(&json!({"status": status, "reason": "test"})),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

async fn donation(app: &TestApp, campaign: &str, email: &str, amount: &str) -> String {
    app.donate(campaign, email, amount).await.json["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn a_campaign_without_donations_has_zero_totals_and_an_unknown_one_is_404(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Empty", 250.0).await;
    let t = totals(&app, &campaign).await;
    assert_eq!(figures(&t), (0, 0, 0));
    assert_eq!(t["goal_amount_minor"], 25000);
    assert_eq!(t["data_source"], "read_model");
    let text = app
        .get(&format!("/api/v1/totals/campaigns/{campaign}"))
        .await;
    assert_eq!(text.json["data_source"], "cache");
    assert!(String::from_utf8_lossy(&text.bytes).contains(r#""total_amount":0.00"#));
    assert_eq!(realtime(&app, &campaign).await["data_source"], "realtime");
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/api/v1/totals/campaigns/{unknown}"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/totals/campaigns/{unknown}?realtime=true"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!(
            "/api/v1/totals/campaigns/{campaign}?realtime=maybe"
        ))
        .await
        .status,
        422
    );
}

async fn totals_are_exact_after_completed_failed_and_refunded_donations(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Mixed", 1000.0).await;
    let a = donation(&app, &campaign, "ada@example.org", "10.10").await;
    let b = donation(&app, &campaign, "ada@example.org", "20.20").await;
    let c = donation(&app, &campaign, "bob@example.org", "30.30").await;
    let d = donation(&app, &campaign, "cy@example.org", "40.40").await;
    donation(&app, &campaign, "dee@example.org", "50.50").await; // stays pending
    set_status(&app, &a, "COMPLETED").await;
    set_status(&app, &b, "COMPLETED").await;
    set_status(&app, &c, "FAILED").await;
    set_status(&app, &d, "COMPLETED").await;
    set_status(&app, &d, "REFUNDED").await;
    // A paid donation with a partial refund, through the payment flow.
    let (e, intent) = app.pending_payment("12.34").await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    for (status, at) in [
        ("AUTHORIZED", "2026-01-01T10:00:00Z"),
        ("CAPTURED", "2026-01-01T10:00:01Z"),
    ] {
        app.webhook(
            &json!({"payment_intent_id": pi, "status": status, "timestamp": at}).to_string(),
            &[],
        )
        .await;
    }
    app.webhook(&json!({"id": "r", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T11:00:00Z", "data": {"refund_id": "re_1", "amount": 2.34}}).to_string(), &[]).await;
    app.drain_outbox().await;
    let e_campaign = app.get(&format!("/api/v1/donations/{e}")).await.json["campaign_id"]
        .as_str()
        .expect("campaign")
        .to_string();
    let t = totals(&app, &campaign).await;
    assert_eq!(
        figures(&t),
        (3030, 2, 1),
        "10.10 + 20.20 by one donor; failed, refunded and pending excluded"
    );
    assert_eq!(
        figures(&realtime(&app, &campaign).await),
        figures(&t),
        "read model and realtime agree to the cent"
    );
    let t = totals(&app, &e_campaign).await;
    assert_eq!(
        figures(&t),
        (1000, 1, 1),
        "12.34 less a 2.34 partial refund"
    );
    assert_eq!(figures(&realtime(&app, &e_campaign).await), figures(&t));
}

async fn a_completed_donation_reaches_the_totals_through_the_background_relay(ctx: TestContext) {
    let app = ctx.spawn_app_with(|s| s.outbox.relay_enabled = true).await;
    let campaign = app.create_campaign("Live", 100.0).await;
    let d = donation(&app, &campaign, "ada@example.org", "7.77").await;
    totals(&app, &campaign).await; // warm the cache: the change must invalidate it
    set_status(&app, &d, "COMPLETED").await;
    let t = eventually(
        Duration::from_secs(5),
        "the completion to reach the totals",
        || async {
            let t = totals(&app, &campaign).await;
            (t["total_amount_minor"] == 777).then_some(t)
        },
    )
    .await;
    assert_eq!(figures(&t), (777, 1, 1));
}

async fn completion_events(app: &TestApp) -> Vec<cfa_server::domain::event::EventEnvelope> {
    let now = chrono::Utc::now();
    app.store
        .claim_outbox("test", 1000, now, now + chrono::TimeDelta::seconds(60))
        .await
        .expect("claim")
        .into_iter()
        .map(|r| r.event)
        .collect()
}

async fn concurrent_completions_in_one_campaign_lose_no_update(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler;
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Rush", 10000.0).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            donation(
                &app,
                &campaign,
                &format!("donor{}@example.org", i % 7),
                &format!("{}.01", i + 1),
            )
            .await,
        );
    }
    join_all(ids.iter().map(|id| set_status(&app, id, "COMPLETED"))).await;
    let events = completion_events(&app).await;
    let consumer = cfa_server::services::totals::TotalsConsumer::new(
        app.store.clone(),
        app.state.totals_cache.clone(),
        app.state.live.clone(),
    );
    let results = join_all(events.iter().map(|e| consumer.handle(e))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let expected: i64 = (1..=20).map(|i| i * 100 + 1).sum();
    let t = totals(&app, &campaign).await;
    assert_eq!(figures(&t), (expected, 20, 7));
    assert_eq!(figures(&realtime(&app, &campaign).await), (expected, 20, 7));
}

async fn redelivered_and_stale_events_change_nothing(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler;
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Again", 100.0).await;
    let d = donation(&app, &campaign, "ada@example.org", "5").await;
    set_status(&app, &d, "COMPLETED").await;
    set_status(&app, &d, "REFUNDED").await;
    let events = completion_events(&app).await;
    let consumer = cfa_server::services::totals::TotalsConsumer::new(
        app.store.clone(),
        app.state.totals_cache.clone(),
        app.state.live.clone(),
    );
    for _ in 0..3 {
        for e in &events {
            consumer.handle(e).await.expect("handled");
        }
    }
    assert_eq!(
        figures(&totals(&app, &campaign).await),
        (0, 0, 0),
        "completed then refunded, however often delivered"
    );
    // The completion alone, as a fresh event id (a copy an upstream replayed): older than the
    // refund already applied, so it changes nothing.
    let mut stale = events
        .iter()
        .find(|e| e.event_type == "donation.completed")
        .expect("completed")
        .clone();
    stale.event_id = uuid::Uuid::new_v4();
    consumer.handle(&stale).await.expect("handled");
    assert_eq!(figures(&totals(&app, &campaign).await), (0, 0, 0));
}

async fn refresh_repairs_a_tampered_read_model_and_reports_the_drift(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Tampered", 100.0).await;
    let d = donation(&app, &campaign, "ada@example.org", "9.99").await;
    set_status(&app, &d, "COMPLETED").await;
    app.drain_outbox().await;
    let id: uuid::Uuid = campaign.parse().expect("uuid");
    let mut tx = app.store.begin().await.expect("begin");
    let mut row = tx.totals_for_update(id).await.expect("read").expect("row");
    row.total_minor += 1;
    row.unique_donors = 5;
    tx.upsert_totals(&row).await.expect("tamper");
    tx.commit().await.expect("commit");
    app.state.totals_cache.invalidate(id).await;
    assert_eq!(
        figures(&totals(&app, &campaign).await),
        (1000, 1, 5),
        "the tampering shows"
    );

    let anonymous = app.post("/api/v1/totals/refresh", &json!({})).await;
    assert_eq!(anonymous.status, 200, "open dev server");
    let report = &anonymous.json;
    assert_eq!(report["corrected"], 1);
    let entry = report["campaigns"]
        .as_array()
        .expect("campaigns")
        .iter()
        .find(|c| c["campaign_id"] == campaign)
        .expect("entry")
        .clone();
    assert_eq!(entry["before"]["total_amount_minor"], 1000);
    assert_eq!(entry["after"]["total_amount_minor"], 999);
    assert_eq!(entry["after"]["unique_donors"], 1);
    assert_eq!(figures(&totals(&app, &campaign).await), (999, 1, 1));
    let again = app
        .post("/api/v1/totals/refresh", &json!({"campaign_id": campaign}))
        .await;
    assert_eq!(
        (
            again.json["checked"].as_i64(),
            again.json["corrected"].as_i64()
        ),
        (Some(1), Some(0))
    );
    let unknown = app
        .post(
            "/api/v1/totals/refresh",
            &json!({"campaign_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(unknown.status, 404);

    // The read model keeps working after a rebuild: later events apply on top of it.
    let d2 = donation(&app, &campaign, "bob@example.org", "1").await;
    set_status(&app, &d2, "COMPLETED").await;
    app.drain_outbox().await;
    assert_eq!(figures(&totals(&app, &campaign).await), (1099, 2, 2));
    let keyed = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["k".into()])
        .await;
    assert_eq!(
        keyed
            .post("/api/v1/totals/refresh", &json!({}))
            .await
            .status,
        401
    );
}

async fn the_cache_serves_reads_and_is_invalidated_by_changes(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Cached", 100.0).await;
    let (hits0, misses0) = app.state.totals_cache.counts();
    assert_eq!(totals(&app, &campaign).await["data_source"], "read_model");
    let cached = totals(&app, &campaign).await;
    assert_eq!(cached["data_source"], "cache");
    assert!(
        cached["cache_age_seconds"]
            .as_f64()
            .is_some_and(|a| a >= 0.0)
    );
    let (hits1, misses1) = app.state.totals_cache.counts();
    assert_eq!(
        (hits1 - hits0, misses1 - misses0),
        (1, 1),
        "one miss, then one hit"
    );
    let d = donation(&app, &campaign, "ada@example.org", "3").await;
    set_status(&app, &d, "COMPLETED").await;
    app.drain_outbox().await;
    let fresh = totals(&app, &campaign).await;
    assert_eq!(
        fresh["data_source"], "read_model",
        "the change dropped the cached entry"
    );
    assert_eq!(figures(&fresh), (300, 1, 1));
}
