//! The busiest day (issue #14): a burst larger than the database pool waits its turn instead of
//! failing, and what cannot wait is told so in a way a client can act on.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![
    a_burst_larger_than_the_pool_queues_or_is_told_to_retry,
    a_burst_of_events_is_counted_exactly_once_in_batches,
    whole_donor_journeys_in_one_batch_are_followed_and_counted_once,
    with_a_lag_bound_new_donations_wait_for_the_event_pipeline_then_are_told_to_retry,
];

async fn a_burst_larger_than_the_pool_queues_or_is_told_to_retry(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.database.max_connections = Some(4);
            s.admission.max_queued = 100;
        })
        .await;
    let campaign = app.create_campaign("Viral", 1_000_000.0).await;
    let donors: Vec<String> = (0..300).map(|i| format!("donor{i}@example.org")).collect();
    let replies = join_all(donors.iter().map(|donor| app.donate(&campaign, donor, "5"))).await;
    let mut created = 0;
    let mut overloaded = 0;
    for reply in &replies {
        match (reply.status, reply.code()) {
            (201, _) => created += 1,
            (503, "overloaded") => {
                let retry: u64 = reply
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("an overloaded answer says when to retry");
                assert!(retry > 0);
                overloaded += 1;
            }
            (status, code) => panic!(
                "a healthy database behind a busy server answered {status} {code}: {:?}",
                reply.json
            ),
        }
    }
    eprintln!("300 at once with a pool of 4: {created} created, {overloaded} told to retry");
    let stats = app
        .send_as_operator(reqwest::Method::GET, "/api/v1/admin/stats", None)
        .await;
    assert_eq!(
        stats.json["donations_total"], created,
        "every 201 is a donation, and no refused request left one behind: {:?}",
        stats.json
    );
}

async fn a_burst_of_events_is_counted_exactly_once_in_batches(ctx: TestContext) {
    // Every webhook twice; the relay hands consumers up to 100 events at once, and each
    // consumer applies what it holds in one transaction.
    let app = ctx
        .spawn_app_with(|s| s.payments.sandbox_duplicate_probability = 1.0)
        .await;
    let campaign = app.create_campaign("Burst", 1_000_000.0).await;
    let app = &app;
    let donors: Vec<(String, String)> = (1..=40)
        .map(|i| (format!("donor{i}@example.org"), i.to_string()))
        .collect();
    let donations = join_all(
        donors
            .iter()
            .map(|(email, amount)| app.donate(&campaign, email, amount)),
    )
    .await;
    let intents = join_all(donations.iter().map(|d| {
        let body = json!({"donation_id": d.json["id"], "amount": d.json["amount"]});
        async move { app.post("/api/v1/payments/intent", &body).await }
    }))
    .await;
    join_all(intents.iter().map(|i| {
        let pi = i.json["payment_intent_id"]
            .as_str()
            .expect("intent")
            .to_string();
        async move {
            app.post(
                &format!("/sandbox/v1/intents/{pi}/confirm"),
                &json!({"outcome": "succeed"}),
            )
            .await
        }
    }))
    .await;
    let path = format!("/api/v1/totals/campaigns/{campaign}");
    let realtime = format!("{path}?realtime=true");
    let totals = eventually(
        Duration::from_secs(60),
        "every donation counted",
        || async {
            app.drain_outbox().await;
            let scanned = app
                .send_as_operator(reqwest::Method::GET, &realtime, None)
                .await;
            (scanned.json["total_donations"] == 40).then_some(scanned.json)
        },
    )
    .await;
    assert_eq!(
        totals["total_amount_minor"], 82_000,
        "1 + 2 + … + 40, once each"
    );
    let model = app.get(&path).await;
    assert_eq!(
        (
            &model.json["total_amount_minor"],
            &model.json["total_donations"],
            &model.json["unique_donors"]
        ),
        (
            &totals["total_amount_minor"],
            &totals["total_donations"],
            &totals["unique_donors"]
        ),
        "the read model, built in batches, equals the sum of the donations: {:?}",
        model.json
    );
}

/// A signed provider event moving `intent` to `status`.
fn provider_event(intent: &str, status: &str, id: &str) -> String {
    json!({
        "id": id,
        "event_type": format!("payment_intent.{}", status.to_lowercase()),
        "payment_intent_id": intent,
        "status": status,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

async fn whole_donor_journeys_in_one_batch_are_followed_and_counted_once(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler as _;
    // The harness runs no relay: every event of three whole journeys (donation, intent,
    // authorization, capture) waits in the outbox, and one drain hands each consumer a
    // donation's whole life at once.
    let app = ctx.spawn_app().await;
    // The relay waits for every subscriber's answer: the tap answers at once, keeping a copy.
    let mut tap = app.bus.subscribe("tap", &["payment", "donation"]);
    let (copies, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(delivery) = tap.recv().await {
            let _ = copies.send(delivery.event.clone());
            delivery.ack();
        }
    });
    let campaign = app.create_campaign("One batch", 1_000.0).await;
    let journeys = [
        ("ada@example.org", "5"),
        ("bob@example.org", "7"),
        ("ada@example.org", "11"),
    ];
    let mut donations = Vec::new();
    for (i, (email, amount)) in journeys.iter().enumerate() {
        let donation = app.donate(&campaign, email, amount).await;
        let id = donation.json["id"].as_str().expect("id").to_string();
        let body = json!({"donation_id": id, "amount": donation.json["amount"]});
        let intent = app.post("/api/v1/payments/intent", &body).await;
        assert_eq!(intent.status, 201, "{:?}", intent.json);
        let pi = intent.json["payment_intent_id"].as_str().expect("intent");
        for status in ["AUTHORIZED", "CAPTURED"] {
            let reply = app
                .webhook(&provider_event(pi, status, &format!("{status}-{i}")), &[])
                .await;
            assert_eq!(reply.status, 200, "{:?}", reply.json);
        }
        donations.push(id);
    }
    app.drain_outbox().await;

    for id in &donations {
        let donation = app.get(&format!("/api/v1/donations/{id}")).await;
        assert_eq!(
            (
                donation.json["status"].as_str(),
                donation.json["version"].as_i64()
            ),
            (Some("COMPLETED"), Some(2)),
            "created, then completed once: {:?}",
            donation.json
        );
    }
    let mut events = Vec::new();
    while let Ok(event) = seen.try_recv() {
        events.push(event);
    }
    let completions = events
        .iter()
        .filter(|e| e.event_type == "donation.completed")
        .count();
    assert_eq!(completions, 3, "one completion event per donation");
    let path = format!("/api/v1/totals/campaigns/{campaign}");
    let totals = eventually(Duration::from_secs(15), "the totals", || async {
        let totals = app.get(&path).await.json;
        (totals["total_donations"] == 3).then_some(totals)
    })
    .await;
    assert_eq!(
        (&totals["total_amount_minor"], &totals["unique_donors"]),
        (&json!(2_300), &json!(2)),
        "5 + 7 + 11, from two donors: {totals}"
    );

    // Every event again, twice, in one batch per consumer: nothing changes.
    let again: Vec<_> = events.iter().chain(&events).collect();
    cfa_server::services::donations::DonationStatusConsumer::new(app.store.clone())
        .handle_batch(&again)
        .await
        .expect("handled");
    cfa_server::services::totals::TotalsConsumer::new(
        app.store.clone(),
        app.state.totals_cache.clone(),
        app.state.live.clone(),
    )
    .handle_batch(&again)
    .await
    .expect("handled");
    let realtime = app
        .send_as_operator(reqwest::Method::GET, &format!("{path}?realtime=true"), None)
        .await;
    let model = app.get(&path).await;
    for figures in [&realtime.json, &model.json] {
        assert_eq!(
            (
                &figures["total_amount_minor"],
                &figures["total_donations"],
                &figures["unique_donors"]
            ),
            (&json!(2_300), &json!(3), &json!(2)),
            "{figures}"
        );
    }
    for id in &donations {
        let donation = app.get(&format!("/api/v1/donations/{id}")).await;
        assert_eq!(donation.json["version"], 2, "{:?}", donation.json);
    }
}

async fn with_a_lag_bound_new_donations_wait_for_the_event_pipeline_then_are_told_to_retry(
    ctx: TestContext,
) {
    // The harness runs no relay: nothing is delivered, so the oldest event only gets older.
    let app = ctx
        .spawn_app_with(|s| {
            s.admission.max_event_lag_seconds = 2;
            s.admission.queue_timeout_seconds = 1;
        })
        .await;
    let campaign = app.create_campaign("Lagging", 1_000.0).await;
    let taken = app.donate(&campaign, "first@example.org", "5").await;
    assert_eq!(taken.status, 201, "events fresh: {:?}", taken.json);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let refused = app.donate(&campaign, "late@example.org", "5").await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, "overloaded"),
        "{:?}",
        refused.json
    );
    assert!(
        refused.header("retry-after").is_some(),
        "the donor is told when to come back"
    );
    assert!(
        refused.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("events")),
        "{:?}",
        refused.json
    );
    let id = taken.json["id"].as_str().expect("id");
    let read = app.get(&format!("/api/v1/donations/{id}")).await;
    assert_eq!(read.status, 200, "only new donations wait for the pipeline");
    let stats = app
        .send_as_operator(reqwest::Method::GET, "/api/v1/admin/stats", None)
        .await;
    assert_eq!(
        stats.json["donations_total"], 1,
        "the refused donation left nothing behind: {:?}",
        stats.json
    );
}
