//! The transactional outbox and its relay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cfa_server::domain::event::EventEnvelope;
use cfa_server::messaging::consumer::{Handler, HandlerError};

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![
    every_acknowledged_donation_has_its_event_and_the_relay_delivers_it_once,
    a_failing_consumer_leaves_the_event_pending_for_redelivery,
    concurrent_relays_never_claim_the_same_rows,
    delivered_rows_are_pruned_after_the_retention_period,
    the_background_relay_delivers_new_events_promptly,
    an_event_that_keeps_failing_becomes_a_dead_letter_and_stops_blocking_the_rest,
    an_outage_longer_than_the_attempts_makes_no_dead_letter,
];

async fn an_outage_longer_than_the_attempts_makes_no_dead_letter(ctx: TestContext) {
    let app = ctx.spawn_app_with(|s| s.outbox.max_attempts = 2).await;
    let campaign = app.create_campaign("Outage", 500.0).await;
    app.relay.deliver_batch().await.expect("deliver");
    app.donate(&campaign, "ada@example.org", "1").await;
    let mut consumer = app.bus.subscribe("cut-off", &["donation"]);
    let consumed = tokio::spawn(async move {
        let mut tries = 0;
        while let Some(delivery) = consumer.recv().await {
            tries += 1;
            if tries <= 5 {
                delivery.retry_later("the database cannot be reached");
            } else {
                delivery.ack();
                break;
            }
        }
        tries
    });
    for outage in 1..=5 {
        let report = app.relay.deliver_batch().await.expect("deliver");
        assert_eq!(
            (report.failed, report.dead, report.poison),
            (1, 0, false),
            "failure {outage} of an outage uses up nothing"
        );
    }
    let recovered = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(recovered.delivered, 1, "delivered once the outage ends");
    assert_eq!(consumed.await.expect("consumer"), 6);
    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!((stats.pending, stats.dead), (0, 0));
}

async fn an_event_that_keeps_failing_becomes_a_dead_letter_and_stops_blocking_the_rest(
    ctx: TestContext,
) {
    let app = ctx.spawn_app_with(|s| s.outbox.max_attempts = 2).await;
    let campaign = app.create_campaign("Poison", 500.0).await;
    app.relay.deliver_batch().await.expect("deliver");
    let poison = app.donate(&campaign, "ada@example.org", "1").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let healthy = app.donate(&campaign, "bob@example.org", "2").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let poison_id = poison.clone();
    let picky = Scripted::start(&app, move |event, _| event.aggregate_id == poison_id);
    let first = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(
        (first.delivered, first.failed, first.dead),
        (0, 2, 0),
        "first failure: retried later, order kept"
    );
    let second = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(second.dead, 1, "the second failure is the last attempt");
    let third = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(third.delivered, 1, "the next event is no longer held back");
    assert_eq!(picky.applied(), [healthy]);
    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!(
        (stats.pending, stats.dead),
        (0, 1),
        "the dead letter is kept and counted"
    );
}

async fn every_acknowledged_donation_has_its_event_and_the_relay_delivers_it_once(
    ctx: TestContext,
) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Events", 500.0).await;
    let mut donation_ids = Vec::new();
    for amount in ["1", "2", "3"] {
        donation_ids.push(
            app.donate(&campaign, "ada@example.org", amount).await.json["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!(
        stats.pending, 4,
        "each acknowledged change already has its event"
    );
    assert!(stats.oldest_pending.is_some());

    let mut consumer = app.bus.subscribe("test", &["donation"]);
    let consumed = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(delivery) = consumer.recv().await {
            seen.push(delivery.event.clone());
            delivery.ack();
            if seen.len() == 3 {
                break;
            }
        }
        seen
    });
    let report = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!((report.claimed, report.delivered, report.failed), (4, 4, 0));
    let seen = consumed.await.expect("consumer");
    let ids: Vec<&str> = seen.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(ids, donation_ids, "delivered in commit order");
    let first = &seen[0];
    assert_eq!(first.event_type, "donation.created");
    assert_eq!(first.aggregate_type, "donation");
    assert_eq!(first.version, 1);
    assert_eq!(first.payload["amount_minor"], 100);
    assert_eq!(first.payload["campaign_id"], campaign);

    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!((stats.pending, stats.sent), (0, 4));
    let again = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(again.claimed, 0, "delivered rows are not delivered again");
}

/// Whether the `n`th call, on this event, fails.
type FailWhen = Box<dyn Fn(&EventEnvelope, usize) -> bool + Send + Sync>;

/// A consumer run by the real consumer loop that fails the events `fails` says it should,
/// recording each call: (aggregate id, applied).
struct Scripted {
    fails: FailWhen,
    calls: Mutex<Vec<(String, bool)>>,
}

#[async_trait]
impl Handler for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["donation"]
    }
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let mut calls = self.calls.lock().expect("calls");
        let fail = (self.fails)(event, calls.len());
        calls.push((event.aggregate_id.clone(), !fail));
        if fail {
            Err(HandlerError::poison("cannot handle this one"))
        } else {
            Ok(())
        }
    }
}

impl Scripted {
    /// Runs it on the app's bus until the test ends.
    fn start(
        app: &crate::helpers::TestApp,
        fails: impl Fn(&EventEnvelope, usize) -> bool + Send + Sync + 'static,
    ) -> Arc<Scripted> {
        let handler = Arc::new(Scripted {
            fails: Box::new(fails),
            calls: Mutex::new(Vec::new()),
        });
        let deliveries = app.bus.subscribe("scripted", &["donation"]);
        tokio::spawn(cfa_server::messaging::consumer::run(
            handler.clone(),
            deliveries,
            tokio_util::sync::CancellationToken::new(),
        ));
        handler
    }

    /// The aggregates it applied, in order.
    fn applied(&self) -> Vec<String> {
        let calls = self.calls.lock().expect("calls");
        calls
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

async fn a_failing_consumer_leaves_the_event_pending_for_redelivery(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Retry", 500.0).await;
    let first_id = app.donate(&campaign, "ada@example.org", "5").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let second_id = app.donate(&campaign, "bob@example.org", "6").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A hiccup on the first try.
    let flaky = Scripted::start(&app, |_, call| call == 0);
    let first = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!(first.delivered, 1, "the campaign event went through");
    assert_eq!(
        first.failed, 2,
        "the failed event and the one after it wait, in order"
    );
    assert!(
        flaky.applied().is_empty(),
        "the event behind the failed one was not applied before it"
    );
    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!(stats.pending, 2);
    let second = app.relay.deliver_batch().await.expect("deliver");
    assert_eq!((second.delivered, second.failed), (2, 0));
    assert_eq!(
        flaky.applied(),
        [first_id, second_id],
        "the failed event was delivered again, and still came first"
    );
    assert_eq!(app.store.outbox_stats().await.expect("stats").pending, 0);
}

async fn concurrent_relays_never_claim_the_same_rows(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Claims", 500.0).await;
    for i in 0..30 {
        app.donate(&campaign, "ada@example.org", &format!("{}", i + 1))
            .await;
    }
    let now = chrono::Utc::now();
    let lease = now + chrono::TimeDelta::seconds(30);
    let claims = futures::future::join_all((0..3).map(|i| {
        let store = app.store.clone();
        async move {
            store
                .claim_outbox(&format!("relay-{i}"), 8, now, lease)
                .await
                .expect("claim")
        }
    }))
    .await;
    let mut ids: Vec<i64> = claims.iter().flatten().map(|r| r.id).collect();
    let claimed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "no row claimed twice");
    assert_eq!(claimed, 24);
    let leased_again = app
        .store
        .claim_outbox("relay-late", 100, now, lease)
        .await
        .expect("claim");
    assert_eq!(
        leased_again.len(),
        31 - 24,
        "leased rows are not handed out while the lease holds"
    );
    let after_lease = lease + chrono::TimeDelta::seconds(1);
    let expired = app
        .store
        .claim_outbox(
            "relay-rescue",
            100,
            after_lease,
            after_lease + chrono::TimeDelta::seconds(30),
        )
        .await
        .expect("claim");
    assert_eq!(
        expired.len(),
        31,
        "rows of a relay that died are claimed again once its lease ends"
    );
}

async fn delivered_rows_are_pruned_after_the_retention_period(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Prune", 500.0).await;
    app.relay.deliver_batch().await.expect("deliver");
    app.donate(&campaign, "ada@example.org", "5").await;
    assert_eq!(
        app.store
            .prune_outbox(chrono::Utc::now() - chrono::TimeDelta::hours(1))
            .await
            .expect("prune"),
        0,
        "recent rows are kept"
    );
    let pruned = app
        .store
        .prune_outbox(chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .await
        .expect("prune");
    assert_eq!(pruned, 1, "only the delivered row goes");
    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!(
        (stats.pending, stats.sent),
        (1, 0),
        "undelivered rows are never pruned"
    );
}

async fn the_background_relay_delivers_new_events_promptly(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.outbox.relay_enabled = true;
            s.outbox.poll_interval_ms = 60_000;
        })
        .await;
    let mut consumer = app.bus.subscribe("live", &["donation"]);
    let campaign = app.create_campaign("Live", 500.0).await;
    let reply = app.donate(&campaign, "ada@example.org", "5").await;
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.recv())
        .await
        .expect("delivered without waiting for the poll interval")
        .expect("an event");
    assert_eq!(
        delivery.event.aggregate_id,
        reply.json["id"].as_str().expect("id")
    );
    delivery.ack();
    eventually(
        Duration::from_secs(5),
        "the row to be marked sent",
        || async {
            let stats = app.store.outbox_stats().await.expect("stats");
            (stats.pending == 0).then_some(())
        },
    )
    .await;
    app.stop().await.expect("a clean shutdown");
}
