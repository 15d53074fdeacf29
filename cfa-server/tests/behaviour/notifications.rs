//! Notifications: receipts, failure and refund notices, exactly once, through the file sink or a
//! real SMTP server, with retries and dead letters; the donor history link in every receipt.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestContext, eventually};
use crate::smtp::SmtpSink;
use crate::tests;

tests![
    a_completed_donation_gets_exactly_one_receipt_in_the_file_sink,
    the_history_link_in_a_receipt_opens_the_donors_history_without_a_key,
    declined_and_refunded_payments_get_their_notices,
    smtp_delivery_is_retried_after_a_refusal,
    a_notification_is_dead_after_its_last_attempt_and_kept,
    one_address_gets_at_most_its_hourly_share_of_mail,
    the_hourly_share_holds_when_the_receipts_come_in_one_batch,
    a_decline_in_the_sandbox_mails_nobody_outside_development,
    what_donors_typed_is_escaped_in_the_mail,
];

async fn one_address_gets_at_most_its_hourly_share_of_mail(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.notifications.max_per_recipient_per_hour = 2)
        .await;
    let mut queued = 0;
    for _ in 0..4 {
        let donation = completed_donation(&app, "victim@example.org", "1").await;
        queued += notifications_of(&app, &donation).await.len();
    }
    assert_eq!(queued, 2, "two receipts this hour, the rest held back");
    let other = completed_donation(&app, "someone@example.org", "1").await;
    assert_eq!(notifications_of(&app, &other).await.len(), 1, "per address");
}

async fn the_hourly_share_holds_when_the_receipts_come_in_one_batch(ctx: TestContext) {
    // The consumer writes a relay batch's notifications in one transaction: the receipts earlier
    // in the batch count against the address's share like committed ones.
    let app = ctx
        .spawn_app_with(|s| s.notifications.max_per_recipient_per_hour = 2)
        .await;
    let mut donations = Vec::new();
    for _ in 0..5 {
        donations.push(complete_donation(&app, "burst@example.org", "1").await);
    }
    app.drain_outbox().await;
    let mut queued = 0;
    for donation in &donations {
        queued += notifications_of(&app, donation).await.len();
    }
    assert_eq!(queued, 2, "two receipts this hour, the rest held back");
}

async fn a_decline_in_the_sandbox_mails_nobody_outside_development(ctx: TestContext) {
    // Real mail (SMTP; nothing needs to listen: no notice may even be queued).
    let app = ctx
        .spawn_app_with(|s| {
            s.notifications.sender = cfa_server::config::MailSender::Smtp;
            s.notifications.smtp_host = "127.0.0.1".into();
            s.notifications.smtp_port = 9;
        })
        .await;
    let (donation, intent) = app.pending_payment("15").await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    let confirm = app
        .post(
            &format!("/sandbox/v1/intents/{pi}/confirm"),
            &json!({"outcome": "decline"}),
        )
        .await;
    assert_eq!(confirm.status, 202, "{:?}", confirm.json);
    eventually(Duration::from_secs(15), "the donation to fail", || async {
        app.drain_outbox().await;
        let d = app.get(&format!("/api/v1/donations/{donation}")).await;
        (d.json["status"] == "FAILED").then_some(())
    })
    .await;
    app.drain_outbox().await;
    let notices = notifications_of(&app, &donation).await;
    assert!(
        notices.is_empty(),
        "a sandbox decline writes to nobody's real inbox: {notices:?}"
    );
}

async fn what_donors_typed_is_escaped_in_the_mail(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Wells", 100.0).await;
    let body = json!({"campaign_id": campaign, "donor_email": "eve@example.org", "donor_name": "<a href=\"http://evil.example\">Eve</a>", "amount": 5});
    let id = app.post("/api/v1/donations", &body).await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.send(
        Method::PATCH,
        &format!("/api/v1/donations/{id}/status"),
        Some(&json!({"status": "COMPLETED", "reason": "paid"})),
        &[],
    )
    .await;
    app.drain_outbox().await;
    wait_for_status(&app, &id, "SENT").await;
    let uuid = uuid::Uuid::parse_str(&id).expect("uuid");
    let stored = app
        .store
        .notifications(Some(uuid), None, 10, 0)
        .await
        .expect("read");
    let html = &stored.first().expect("a receipt").body_html;
    assert!(
        !html.contains("<a href=\"http://evil"),
        "no markup from the donor: {html}"
    );
    assert!(
        html.contains("&lt;a href="),
        "escaped, still readable: {html}"
    );
}

async fn completed_donation(app: &TestApp, email: &str, amount: &str) -> String {
    let id = complete_donation(app, email, amount).await;
    app.drain_outbox().await;
    id
}

/// A donation marked COMPLETED, its events still in the outbox.
async fn complete_donation(app: &TestApp, email: &str, amount: &str) -> String {
    let campaign = app.create_campaign("Clean <water> & wells", 5000.0).await;
    let id = app.donate(&campaign, email, amount).await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let reply = app
        .send(
            Method::PATCH,
            &format!("/api/v1/donations/{id}/status"),
            Some(&json!({"status": "COMPLETED", "reason": "paid"})),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    id
}

async fn notifications_of(app: &TestApp, donation: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/notifications?donation_id={donation}"))
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_for_status(app: &TestApp, donation: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(15),
        &format!("a notification to be {status}"),
        || async {
            notifications_of(app, donation)
                .await
                .into_iter()
                .find(|n| n["status"] == status)
        },
    )
    .await
}

async fn a_completed_donation_gets_exactly_one_receipt_in_the_file_sink(ctx: TestContext) {
    use cfa_server::messaging::consumer::Handler;
    let app = ctx.spawn_app().await;
    let mut tap = app.bus.subscribe("tap", &["donation"]);
    let captured = tokio::spawn(async move {
        while let Some(delivery) = tap.recv().await {
            let event = delivery.event.clone();
            delivery.ack();
            if event.event_type == "donation.completed" {
                return event;
            }
        }
        panic!("no completion event");
    });
    let donation = completed_donation(&app, "ada@example.org", "1234.5").await;
    let sent = wait_for_status(&app, &donation, "SENT").await;
    assert_eq!(sent["kind"], "receipt");
    assert_eq!(sent["attempts"], 1);
    assert!(
        sent["subject"]
            .as_str()
            .is_some_and(|s| s.contains("$1,234.50") && s.contains("Clean <water> & wells")),
        "{sent}"
    );

    // The same event delivered again, twice, to another consumer instance: still one receipt.
    let completed = captured.await.expect("the completion event");
    let consumer = cfa_server::services::notifications::NotificationConsumer::new(
        app.store.clone(),
        app.state.history_links.clone(),
        app.state.mail_wake.clone(),
    );
    for _ in 0..2 {
        consumer.handle(&completed).await.expect("handled");
    }
    // And twice within one batch, as a broker's redelivery can put it.
    consumer
        .handle_batch(&[&completed, &completed])
        .await
        .expect("handled");
    assert_eq!(
        notifications_of(&app, &donation).await.len(),
        1,
        "one notification per (event, kind)"
    );

    let mail_dir = ctx.data_dir().join("mail");
    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .expect("mail dir")
        .filter_map(Result::ok)
        .collect();
    assert!(!files.is_empty());
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&mail_dir), 0o700, "the mail directory is private");
        assert_eq!(mode(&files[0].path()), 0o600, "a receipt is private");
    }
    let eml = std::fs::read_to_string(files[0].path()).expect("eml");
    assert!(eml.contains("To: ada@example.org"), "{eml}");
    assert!(
        eml.contains("multipart/alternative")
            && eml.contains("text/plain")
            && eml.contains("text/html"),
        "{eml}"
    );
    assert!(
        eml.contains("&lt;water&gt;"),
        "the title is escaped in the HTML part"
    );
    assert!(
        eml.contains("/history?token="),
        "the receipt carries the history link"
    );
}

async fn the_history_link_in_a_receipt_opens_the_donors_history_without_a_key(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["op".into()])
        .await;
    let campaign = app.create_campaign("Links", 100.0).await;
    let mine = app.donate(&campaign, "ada@example.org", "5").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.donate(&campaign, "bob@example.org", "6").await;
    app.send(
        Method::PATCH,
        &format!("/api/v1/donations/{mine}/status"),
        Some(&json!({"status": "COMPLETED", "reason": "paid"})),
        &[("authorization", "Bearer op")],
    )
    .await;
    app.drain_outbox().await;
    let rows = app
        .store
        .notifications(Some(mine.parse().expect("uuid")), None, 10, 0)
        .await
        .expect("rows");
    let text = &rows[0].body_text;
    let link = text
        .lines()
        .find(|l| l.contains("history?token="))
        .expect("a link")
        .trim()
        .to_string();
    assert!(link.starts_with(&app.address), "{link}");
    let page = app.client.get(&link).send().await.expect("answer");
    assert_eq!(
        page.status().as_u16(),
        200,
        "the link opens the history page"
    );
    let page = page.text().await.expect("html");
    assert!(page.contains("$5.00") && !page.contains("$6.00"), "{page}");
    let token = link.split("token=").nth(1).expect("a token");
    let history = app
        .client
        .get(format!(
            "{}/api/v1/donations/history?token={token}",
            app.address
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(history.status().as_u16(), 200);
    let history: Value = history.json().await.expect("json");
    let emails: Vec<&str> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["donor_email"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        emails,
        ["ada@example.org"],
        "only the donor's own donations"
    );
    let forged = link.replace("token=", "token=x");
    assert_eq!(
        app.client
            .get(&forged)
            .send()
            .await
            .expect("answer")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        app.get("/api/v1/donations/history").await.status,
        401,
        "without a token it is an operator endpoint"
    );
}

async fn declined_and_refunded_payments_get_their_notices(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let (declined, intent) = app.pending_payment("15").await;
    let pi = intent["payment_intent_id"]
        .as_str()
        .expect("pi")
        .to_string();
    app.webhook(
        &json!({"payment_intent_id": pi, "status": "FAILED", "timestamp": "2026-01-01T10:00:00Z"})
            .to_string(),
        &[],
    )
    .await;
    app.drain_outbox().await;
    let failure = wait_for_status(&app, &declined, "SENT").await;
    assert_eq!(failure["kind"], "failure");

    let (paid, intent) = app.pending_payment("20").await;
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
    app.webhook(&json!({"id": "rf", "payment_intent_id": pi, "status": "REFUNDED", "timestamp": "2026-01-01T11:00:00Z", "data": {"refund_id": "re_n", "amount": 20}}).to_string(), &[]).await;
    eventually(
        Duration::from_secs(15),
        "a receipt and a refund notice",
        || async {
            app.drain_outbox().await;
            let kinds: Vec<String> = notifications_of(&app, &paid)
                .await
                .iter()
                .filter(|n| n["status"] == "SENT")
                .map(|n| n["kind"].as_str().unwrap_or("").to_string())
                .collect();
            (kinds.contains(&"receipt".to_string()) && kinds.contains(&"refund".to_string()))
                .then_some(())
        },
    )
    .await;
}

async fn smtp_delivery_is_retried_after_a_refusal(ctx: TestContext) {
    let sink = SmtpSink::start(1).await;
    let app = ctx
        .spawn_app_with(|s| {
            s.notifications.sender = cfa_server::config::MailSender::Smtp;
            s.notifications.smtp_host = "127.0.0.1".into();
            s.notifications.smtp_port = sink.port;
            s.notifications.retry_base_ms = 20;
            s.notifications.poll_interval_ms = 20;
        })
        .await;
    let donation = completed_donation(&app, "ada@example.org", "3").await;
    let sent = wait_for_status(&app, &donation, "SENT").await;
    assert_eq!(sent["attempts"], 2, "refused once, then accepted: {sent}");
    let messages = sink.messages.lock().await;
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("Subject: Thank you for your gift of $3.00"),
        "{}",
        messages[0]
    );
}

async fn a_notification_is_dead_after_its_last_attempt_and_kept(ctx: TestContext) {
    let sink = SmtpSink::start(-1).await;
    let app = ctx
        .spawn_app_with(|s| {
            s.notifications.sender = cfa_server::config::MailSender::Smtp;
            s.notifications.smtp_host = "127.0.0.1".into();
            s.notifications.smtp_port = sink.port;
            s.notifications.max_attempts = 3;
            s.notifications.retry_base_ms = 10;
            s.notifications.poll_interval_ms = 20;
        })
        .await;
    let donation = completed_donation(&app, "ada@example.org", "4").await;
    let dead = wait_for_status(&app, &donation, "DEAD").await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("451") || e.to_lowercase().contains("try again")),
        "{dead}"
    );
    let listed = app.get("/api/v1/notifications?status=dead").await;
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(1),
        "kept and listed"
    );
    assert!(sink.messages.lock().await.is_empty());
}
