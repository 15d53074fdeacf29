//! The RabbitMQ bus: the whole journey over the broker, consumer retries and dead letters, and
//! a broker outage that delays events but loses none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

use cfa_server::messaging::consumer::HandlerError;

use crate::helpers::{TestContext, eventually};
use crate::tests;

tests![
    rabbit: the_donor_journey_runs_over_rabbitmq,
    a_failing_consumer_retries_then_dead_letters_and_an_operator_replays_it,
    an_outage_is_waited_out_and_never_dead_lettered,
    while_rabbitmq_is_unreachable_donations_are_accepted_and_the_outbox_drains_after,
    split_roles_complete_the_journey_through_events_only,
];

async fn split_roles_complete_the_journey_through_events_only(ctx: TestContext) {
    use cfa_server::config::Role;
    let donations = ctx
        .spawn_app_with(|s| {
            s.server.roles = vec![Role::Donation, Role::Relay];
            s.outbox.relay_enabled = true;
        })
        .await;
    let payments = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Payment])
        .await;
    let totals = ctx
        .spawn_app_with(|s| s.server.roles = vec![Role::Totals, Role::Notification])
        .await;
    assert_eq!(
        payments.get("/api/v1/campaigns").await.status,
        404,
        "each process serves its own routes"
    );
    let campaign = donations.create_campaign("Split", 100.0).await;
    let donation = donations
        .donate(&campaign, "ada@example.org", "12")
        .await
        .json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let intent = payments
        .post(
            "/api/v1/payments/intent",
            &json!({"donation_id": donation, "amount": 12}),
        )
        .await;
    assert_eq!(intent.status, 201, "{:?}", intent.json);
    let pi = intent.json["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    payments
        .post(
            &format!("/sandbox/v1/intents/{pi}/confirm"),
            &json!({"outcome": "succeed"}),
        )
        .await;
    eventually(
        Duration::from_secs(20),
        "the donation to complete across processes",
        || async {
            (donations
                .get(&format!("/api/v1/donations/{donation}"))
                .await
                .json["status"]
                == "COMPLETED")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the totals and the receipt",
        || async {
            let t = totals
                .get(&format!("/api/v1/totals/campaigns/{campaign}"))
                .await
                .json;
            let n = totals
                .get(&format!("/api/v1/notifications?donation_id={donation}"))
                .await
                .json;
            let sent = n
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["status"] == "SENT"));
            (t["total_amount_minor"] == 1200 && sent).then_some(())
        },
    )
    .await;
}

async fn the_donor_journey_runs_over_rabbitmq(ctx: TestContext) {
    let app = ctx.spawn_app_with(|s| s.outbox.relay_enabled = true).await;
    let ready = app.get("/ready").await;
    assert_eq!(
        ready.json["checks"]["bus"],
        json!({"status": "up", "backend": "rabbitmq"})
    );
    let (donation_id, intent) = app.pending_payment("21").await;
    let campaign = app
        .get(&format!("/api/v1/donations/{donation_id}"))
        .await
        .json["campaign_id"]
        .as_str()
        .expect("campaign")
        .to_string();
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    app.post(
        &format!("/sandbox/v1/intents/{pi}/confirm"),
        &json!({"outcome": "succeed"}),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the donation to complete over RabbitMQ",
        || async {
            (app.get(&format!("/api/v1/donations/{donation_id}"))
                .await
                .json["status"]
                == "COMPLETED")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the totals and the receipt",
        || async {
            let totals = app
                .get(&format!("/api/v1/totals/campaigns/{campaign}"))
                .await
                .json;
            let notes = app
                .get(&format!("/api/v1/notifications?donation_id={donation_id}"))
                .await
                .json;
            let sent = notes.as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["kind"] == "receipt" && n["status"] == "SENT")
            });
            (totals["total_amount_minor"] == 2100 && sent).then_some(())
        },
    )
    .await;
}

/// Fails every event until `healed`, counting calls.
struct Flaky {
    /// Failing because something it needs is down, rather than because of the event.
    outage: bool,
    healed: AtomicBool,
    calls: AtomicUsize,
    handled: AtomicUsize,
}

#[async_trait]
impl cfa_server::messaging::consumer::Handler for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["donation"]
    }
    async fn handle(
        &self,
        _: &cfa_server::domain::event::EventEnvelope,
    ) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.healed.load(Ordering::SeqCst) {
            self.handled.fetch_add(1, Ordering::SeqCst);
            Ok(())
        } else if self.outage {
            Err(HandlerError::transient("the database cannot be reached"))
        } else {
            Err(HandlerError::poison("downstream is broken"))
        }
    }
}

/// Runs a [`Flaky`] consumer on RabbitMQ (3 attempts, 50 ms retry delay) and waits until its
/// queues exist.
async fn flaky_consumer(
    app: &crate::helpers::TestApp,
    outage: bool,
) -> (
    Arc<Flaky>,
    cfa_server::config::AmqpSettings,
    tokio_util::sync::CancellationToken,
) {
    use cfa_server::messaging::rabbit;
    let mut amqp = app.state.settings.amqp.clone();
    amqp.max_attempts = 3;
    amqp.retry_delay_ms = 50;
    let flaky = Arc::new(Flaky {
        outage,
        healed: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        handled: AtomicUsize::new(0),
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(rabbit::run_consumer(
        amqp.clone(),
        flaky.clone(),
        cancel.clone(),
    ));
    // Wait until the consumer has declared (and bound) its queues before anything is published.
    let dead_queue = rabbit::Topology::new(&amqp.namespace).dead_queue("flaky");
    eventually(Duration::from_secs(10), "the flaky queues", || async {
        let connection =
            lapin::Connection::connect(&amqp.url.0, lapin::ConnectionProperties::default())
                .await
                .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(dead_queue.as_str().into(), passive, Default::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (flaky, amqp, cancel)
}

async fn an_outage_is_waited_out_and_never_dead_lettered(ctx: TestContext) {
    use cfa_server::messaging::rabbit;
    let app = ctx.spawn_app().await;
    let (flaky, amqp, cancel) = flaky_consumer(&app, true).await;
    let campaign = app.create_campaign("Outage", 10.0).await;
    app.donate(&campaign, "ada@example.org", "1").await;
    app.drain_outbox().await;
    eventually(
        Duration::from_secs(20),
        "more failures than amqp.max_attempts",
        || async { (flaky.calls.load(Ordering::SeqCst) > 4).then_some(()) },
    )
    .await;
    let dead = rabbit::dead_letters(&amqp, &["flaky"], 10)
        .await
        .expect("dead letters");
    assert!(
        dead.is_empty(),
        "an unreachable database is not the event's fault: {dead:?}"
    );
    flaky.healed.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(40),
        "the event, once the outage ends",
        || async { (flaky.handled.load(Ordering::SeqCst) >= 1).then_some(()) },
    )
    .await;
    let dead = rabbit::dead_letters(&amqp, &["flaky"], 10)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    cancel.cancel();
}

async fn a_failing_consumer_retries_then_dead_letters_and_an_operator_replays_it(ctx: TestContext) {
    use cfa_server::messaging::rabbit;
    let app = ctx.spawn_app().await;
    let (flaky, amqp, cancel) = flaky_consumer(&app, false).await;
    let campaign = app.create_campaign("Flaky", 10.0).await;
    app.donate(&campaign, "ada@example.org", "1").await;
    app.drain_outbox().await;
    let dead = eventually(
        Duration::from_secs(20),
        "the event to be dead-lettered",
        || async {
            let list = rabbit::dead_letters(&amqp, &["flaky"], 10).await.ok()?;
            list.first().cloned()
        },
    )
    .await;
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        3,
        "three attempts, then the dead-letter queue"
    );
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_error.as_deref(), Some("downstream is broken"));
    assert_eq!(dead.event_type.as_deref(), Some("donation.created"));
    let listed = app.get("/api/v1/admin/dead-letters").await;
    assert_eq!(
        listed.status, 200,
        "the operator view reads the broker's dead-letter queues: {:?}",
        listed.json
    );
    flaky.healed.store(true, Ordering::SeqCst);
    assert!(
        rabbit::replay(&amqp, "flaky", &dead.event_id)
            .await
            .expect("replay")
    );
    eventually(
        Duration::from_secs(10),
        "the replayed event to be handled",
        || async { (flaky.handled.load(Ordering::SeqCst) >= 1).then_some(()) },
    )
    .await;
    let left = rabbit::dead_letters(&amqp, &["flaky"], 10)
        .await
        .expect("list");
    assert!(left.is_empty(), "no longer dead: {left:?}");
    assert!(
        !rabbit::replay(&amqp, "flaky", &dead.event_id)
            .await
            .expect("replay"),
        "gone"
    );
    let unknown = app
        .post(
            "/api/v1/admin/dead-letters/totals:nothing/replay",
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    cancel.cancel();
}

/// A TCP proxy to RabbitMQ that the test can cut and restore.
pub async fn proxy(target: String, open: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !open.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let (target, open) = (target.clone(), open.clone());
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = async { while open.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(20)).await; } } => {}
                }
            });
        }
    });
    port
}

async fn while_rabbitmq_is_unreachable_donations_are_accepted_and_the_outbox_drains_after(
    ctx: TestContext,
) {
    let (url, _) = ctx.amqp.clone().expect("rabbit");
    let open = Arc::new(AtomicBool::new(true));
    let port = proxy("127.0.0.1:5672".into(), open.clone()).await;
    let proxied = url.replacen("127.0.0.1:5672", &format!("127.0.0.1:{port}"), 1);
    let app = ctx
        .spawn_app_with(|s| {
            s.amqp.url.0 = proxied.clone();
            s.outbox.relay_enabled = true;
            s.outbox.max_backoff_ms = 200;
        })
        .await;
    let campaign = app.create_campaign("Outage", 1000.0).await;
    open.store(false, Ordering::SeqCst);
    let mut ids = Vec::new();
    for i in 0..10 {
        let reply = app
            .donate(&campaign, &format!("d{i}@example.org"), "1")
            .await;
        assert_eq!(reply.status, 201, "the API keeps accepting donations");
        ids.push(reply.json["id"].as_str().expect("id").to_string());
        app.send(
            reqwest::Method::PATCH,
            &format!("/api/v1/donations/{}/status", ids[i]),
            Some(&json!({"status": "COMPLETED", "reason": "paid"})),
            &[],
        )
        .await;
    }
    let ready = app.ready_after_failed_probes().await;
    assert_eq!(ready.json["status"], "degraded", "{:?}", ready.json);
    assert!(
        app.store.outbox_stats().await.expect("stats").pending >= 10,
        "the outbox grows"
    );
    open.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "the outbox to drain and the totals to catch up",
        || async {
            let stats = app.store.outbox_stats().await.expect("stats");
            let totals = app
                .get(&format!("/api/v1/totals/campaigns/{campaign}"))
                .await
                .json;
            eprintln!(
                "outage test: pending {} totals {}",
                stats.pending, totals["total_donations"]
            );
            (stats.pending == 0 && totals["total_donations"] == 10).then_some(())
        },
    )
    .await;
}
