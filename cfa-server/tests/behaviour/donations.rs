//! Donations: creation, exact money, refusals, history, the operator's status override.

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestContext;
use crate::tests;

tests![
    older_clients_may_leave_out_the_reason_and_name_the_intent,
    a_donation_is_created_pending_with_exact_minor_units,
    amounts_that_cannot_be_represented_exactly_are_refused,
    donations_to_unknown_or_closed_campaigns_are_refused,
    a_campaign_that_took_donations_refuses_them_once_closed,
    malformed_requests_get_a_4xx_that_names_the_problem,
    history_is_newest_first_filtered_and_paged,
    the_operator_status_override_is_audited_and_follows_the_life_cycle,
    operator_endpoints_need_a_key_once_keys_are_configured,
];

async fn a_donation_is_created_pending_with_exact_minor_units(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Wells", 500.0).await;
    let body = format!(
        r#"{{"campaign_id":"{campaign}","donor_email":" Ada@Example.org ","donor_name":"Ada","amount":25.50,"extra_data":{{"source":"mobile"}},"unknown_field":true}}"#
    );
    let reply = app
        .send_raw(
            Method::POST,
            "/api/v1/donations",
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    let d = &reply.json;
    assert_eq!(d["status"], "PENDING");
    assert_eq!(d["amount_minor"], 2550);
    assert_eq!(d["currency"], "USD");
    assert_eq!(d["donor_email"], "ada@example.org");
    assert_eq!(d["donor_name"], "Ada");
    assert_eq!(d["version"], 1);
    assert_eq!(d["metadata"], json!({"source": "mobile"}));
    assert_eq!(d["payment_intent_id"], serde_json::Value::Null);
    let text = String::from_utf8(reply.bytes.clone()).expect("utf-8");
    assert!(
        text.contains(r#""amount":25.50,"#),
        "amount is an exact decimal: {text}"
    );

    let id = d["id"].as_str().expect("id");
    let shown = app.get(&format!("/api/v1/donations/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.bytes, reply.bytes,
        "reading it back gives the same document"
    );
    let missing = app
        .get(&format!("/api/v1/donations/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not found"))
    );
}

async fn amounts_that_cannot_be_represented_exactly_are_refused(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Exact", 500.0).await;
    for amount in [
        "12.345",
        "0",
        "0.00",
        "-5",
        "1000000.01",
        "\"25.00\"",
        "1e400",
        "null",
    ] {
        let reply = app.donate(&campaign, "a@example.org", amount).await;
        assert_eq!(reply.status, 422, "amount {amount} → {:?}", reply.json);
        assert_eq!(reply.json["field"], "amount", "amount {amount}");
    }
    for (amount, minor) in [
        ("1000000", 100_000_000),
        ("0.01", 1),
        ("19.99", 1999),
        ("2.5e1", 2500),
    ] {
        let reply = app.donate(&campaign, "a@example.org", amount).await;
        assert_eq!(reply.status, 201, "amount {amount} → {:?}", reply.json);
        assert_eq!(reply.json["amount_minor"], minor, "amount {amount}");
    }
}

/// The process remembers the currency of a campaign that took a donation and inserts the next
/// one with a single statement that checks the campaign: that path must refuse too.
async fn a_campaign_that_took_donations_refuses_them_once_closed(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let eur = app
        .post(
            "/api/v1/campaigns",
            &json!({"title": "Euro", "goal_amount": 10, "currency": "EUR"}),
        )
        .await;
    let id = eur.json["id"].as_str().expect("id").to_string();
    let first = app.donate(&id, "a@example.org", "5").await;
    assert_eq!(first.status, 201, "{:?}", first.json);
    assert_eq!(first.json["currency"], "EUR");
    let second = app.donate(&id, "b@example.org", "7.25").await;
    assert_eq!(second.status, 201, "{:?}", second.json);
    assert_eq!(second.json["amount_minor"], 725);
    let mismatch = app
        .post(
            "/api/v1/donations",
            &json!({"campaign_id": id, "donor_email": "c@example.org", "amount": 5, "currency": "USD"}),
        )
        .await;
    assert_eq!(mismatch.code(), "currency_mismatch", "{:?}", mismatch.json);
    let closing = app
        .send(
            Method::PUT,
            &format!("/api/v1/campaigns/{id}"),
            Some(
                &json!({"title": "Euro", "goal_amount": 10, "currency": "EUR", "status": "CLOSED"}),
            ),
            &[],
        )
        .await;
    assert_eq!(closing.status, 200, "{:?}", closing.json);
    let late = app.donate(&id, "d@example.org", "5").await;
    assert_eq!(late.status, 422, "{:?}", late.json);
    assert_eq!(late.code(), "campaign_closed");
    let history = app.get("/api/v1/donations/history").await;
    assert_eq!(
        history.json.as_array().map(Vec::len),
        Some(2),
        "only the two donations taken while it was open are stored"
    );
}

async fn donations_to_unknown_or_closed_campaigns_are_refused(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let unknown = app
        .donate(&uuid::Uuid::new_v4().to_string(), "a@example.org", "5")
        .await;
    assert_eq!(unknown.status, 422);
    assert_eq!(unknown.code(), "campaign_not_found");
    assert_eq!(unknown.json["field"], "campaign_id");

    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/campaigns/{id}");
    app.send(
        Method::PUT,
        &path,
        Some(&json!({"title": "Done", "goal_amount": 1, "status": "CLOSED"})),
        &[],
    )
    .await;
    let closed = app.donate(&id.to_string(), "a@example.org", "5").await;
    assert_eq!(closed.status, 422);
    assert_eq!(closed.code(), "campaign_closed");
    assert!(
        closed.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("closed"))
    );

    let eur = app
        .post(
            "/api/v1/campaigns",
            &json!({"title": "Euro", "goal_amount": 10, "currency": "EUR"}),
        )
        .await;
    let eur_id = eur.json["id"].as_str().expect("id");
    let mismatch = app
        .post("/api/v1/donations", &json!({"campaign_id": eur_id, "donor_email": "a@example.org", "amount": 5, "currency": "USD"}))
        .await;
    assert_eq!(mismatch.status, 422);
    assert_eq!(mismatch.code(), "currency_mismatch");
    let history = app.get("/api/v1/donations/history").await;
    assert_eq!(
        history.json.as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
}

async fn malformed_requests_get_a_4xx_that_names_the_problem(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Robust", 500.0).await;
    let json = Some("application/json");
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (json, b"{not json".to_vec(), 400, "malformed_json"),
        (json, b"[1,2]".to_vec(), 400, "malformed_json"),
        (json, b"".to_vec(), 400, "malformed_json"),
        (None, b"{}".to_vec(), 415, "unsupported_media_type"),
        (Some("text/plain"), b"{}".to_vec(), 415, "unsupported_media_type"),
        (json, format!(r#"{{"campaign_id":"{campaign}","amount":5}}"#).into_bytes(), 422, "validation_error"),
        (json, format!(r#"{{"campaign_id":"{campaign}","donor_email":5,"amount":5}}"#).into_bytes(), 422, "validation_error"),
        (json, br#"{"campaign_id":"nope","donor_email":"a@example.org","amount":5}"#.to_vec(), 422, "validation_error"),
        (json, format!(r#"{{"campaign_id":"{campaign}","donor_email":"not-an-address","amount":5}}"#).into_bytes(), 422, "validation_error"),
        (json, format!(r#"{{"campaign_id":"{campaign}","donor_email":"a@example.org","amount":5,"metadata":[1]}}"#).into_bytes(), 422, "validation_error"),
        (json, vec![b' '; 70 * 1024], 413, "payload_too_large"),
        (json, vec![0xff, 0xfe, 0x00], 400, "malformed_json"),
        (json, format!(r#"{{"campaign_id":"{campaign}","donor_email":"a@example.org","donor_name":"a\u0000b","amount":5}}"#).into_bytes(), 422, "validation_error"),
        (json, format!(r#"{{"campaign_id":"{campaign}","donor_email":"a@example.org","amount":5,"metadata":{{"k":"a\u0000b"}}}}"#).into_bytes(), 422, "validation_error"),
    ];
    for (content_type, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let reply = app
            .send_raw(Method::POST, "/api/v1/donations", content_type, body)
            .await;
        assert_eq!(reply.status, status, "{shown} → {:?}", reply.json);
        assert_eq!(reply.code(), code, "{shown}");
        assert!(
            reply.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{shown}"
        );
    }
    let missing = app
        .send_raw(
            Method::POST,
            "/api/v1/donations",
            json,
            format!(r#"{{"campaign_id":"{campaign}","amount":5}}"#).into_bytes(),
        )
        .await;
    assert_eq!(missing.json["field"], "donor_email");
    let wrong_type = app
        .send_raw(
            Method::POST,
            "/api/v1/donations",
            json,
            format!(r#"{{"campaign_id":"{campaign}","donor_email":5,"amount":5}}"#).into_bytes(),
        )
        .await;
    assert_eq!(wrong_type.json["field"], "donor_email");
    let bad_title = app
        .post(
            "/api/v1/campaigns",
            &json!({"title": "nul\u{0}title", "goal_amount": 5}),
        )
        .await;
    assert_eq!(
        bad_title.json["field"], "title",
        "control characters are refused on every backend"
    );
    let bad_encoding = app.get("/api/v1/donations/%FF").await;
    assert!(
        bad_encoding.status >= 400 && bad_encoding.status < 500,
        "{}",
        bad_encoding.status
    );
    assert!(
        bad_encoding.json["detail"].as_str().is_some(),
        "even axum's own rejections are JSON"
    );
    let bad_path = app.get("/api/v1/donations/12345").await;
    assert_eq!(bad_path.status, 422);
    assert_eq!(bad_path.json["field"], "id");
    let history = app.get("/api/v1/donations/history").await;
    assert_eq!(
        history.json.as_array().map(Vec::len),
        Some(0),
        "no malformed request stored anything"
    );
}

async fn history_is_newest_first_filtered_and_paged(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let a = app.create_campaign("A", 500.0).await;
    let b = app.create_campaign("B", 500.0).await;
    let mut ids = Vec::new();
    for (campaign, email, amount) in [
        (&a, "ada@example.org", "1"),
        (&b, "ada@example.org", "2"),
        (&a, "bob@example.org", "3"),
        (&a, "ADA@example.org", "4"),
    ] {
        let reply = app.donate(campaign, email, amount).await;
        assert_eq!(reply.status, 201);
        ids.push(reply.json["id"].as_str().expect("id").to_string());
    }
    let amounts = |reply: &crate::helpers::Reply| -> Vec<i64> {
        reply
            .json
            .as_array()
            .expect("a bare array")
            .iter()
            .map(|d| d["amount_minor"].as_i64().unwrap_or(0))
            .collect()
    };
    let ada = app
        .get("/api/v1/donations/history?donor_email=Ada@example.org")
        .await;
    assert_eq!(ada.status, 200, "{:?}", ada.json);
    assert_eq!(
        amounts(&ada),
        [400, 200, 100],
        "newest first, addresses compared normalised"
    );
    let ada_a = app
        .get(&format!(
            "/api/v1/donations/history?donor_email=ada@example.org&campaign_id={a}"
        ))
        .await;
    assert_eq!(amounts(&ada_a), [400, 100]);
    let paged = app
        .get("/api/v1/donations/history?donor_email=ada@example.org&limit=1&offset=1")
        .await;
    assert_eq!(amounts(&paged), [200]);
    app.send(
        Method::PATCH,
        &format!("/api/v1/donations/{}/status", ids[0]),
        Some(&json!({"status": "FAILED", "reason": "card expired"})),
        &[],
    )
    .await;
    let failed = app.get("/api/v1/donations/history?status=failed").await;
    assert_eq!(amounts(&failed), [100]);
    for (query, field) in [
        ("limit=101", "limit"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
        ("status=DONE", "status"),
        ("campaign_id=x", "campaign_id"),
        ("donor_email=nope", "donor_email"),
    ] {
        let reply = app.get(&format!("/api/v1/donations/history?{query}")).await;
        assert_eq!(reply.status, 422, "{query}");
        assert_eq!(reply.json["field"], field, "{query}");
    }
}

async fn the_operator_status_override_is_audited_and_follows_the_life_cycle(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Override", 500.0).await;
    let id = app.donate(&campaign, "ada@example.org", "10").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/v1/donations/{id}/status");
    let before = app.store.outbox_stats().await.expect("stats").pending;

    let stale = app
        .send(
            Method::PATCH,
            &path,
            Some(
                &json!({"status": "COMPLETED", "reason": "paid by cheque", "expected_version": 7}),
            ),
            &[],
        )
        .await;
    assert_eq!(stale.status, 409);

    let done = app
        .send(
            Method::PATCH,
            &path,
            Some(
                &json!({"status": "COMPLETED", "reason": "paid by cheque", "expected_version": 1}),
            ),
            &[],
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.json);
    assert_eq!(done.json["status"], "COMPLETED");
    assert_eq!(done.json["version"], 2);

    let back = app
        .send(
            Method::PATCH,
            &path,
            Some(&json!({"status": "PENDING", "reason": "oops"})),
            &[],
        )
        .await;
    assert_eq!(back.status, 400);
    assert_eq!(back.code(), "invalid_transition");

    let refunded = app
        .send(
            Method::PATCH,
            &path,
            Some(&json!({"status": "refunded", "reason": "donor asked"})),
            &[],
        )
        .await;
    assert_eq!(refunded.status, 200);
    assert_eq!(refunded.json["version"], 3);

    let audit = app
        .store
        .status_audit(id.parse().expect("uuid"))
        .await
        .expect("audit");
    let trail: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|a| (a.from.as_str(), a.to.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("PENDING", "COMPLETED", "paid by cheque"),
            ("COMPLETED", "REFUNDED", "donor asked")
        ]
    );
    assert!(audit.iter().all(|a| a.actor == "open-access"));
    let after = app.store.outbox_stats().await.expect("stats").pending;
    assert_eq!(after - before, 2, "each change published its event");

    let unknown = app
        .send(
            Method::PATCH,
            &format!("/api/v1/donations/{}/status", uuid::Uuid::new_v4()),
            Some(&json!({"status": "FAILED", "reason": "x"})),
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);
}

async fn operator_endpoints_need_a_key_once_keys_are_configured(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["old-key".into(), "new-key".into()])
        .await;
    let campaign = app.create_campaign("Keys", 500.0).await;
    let id = app.donate(&campaign, "ada@example.org", "10").await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/v1/donations/{id}/status");
    let body = json!({"status": "FAILED", "reason": "fraud check"});

    let anonymous = app.get("/api/v1/donations/history").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    let wrong = app
        .send(
            Method::PATCH,
            &path,
            Some(&body),
            &[("authorization", "Bearer guess")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "unauthorized");
    assert_eq!(
        app.get(&format!("/api/v1/donations/{id}")).await.json["status"],
        "PENDING",
        "a refused change changes nothing"
    );

    let ok = app
        .send(
            Method::PATCH,
            &path,
            Some(&body),
            &[("authorization", "Bearer new-key")],
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    let history = app
        .send(
            Method::GET,
            "/api/v1/donations/history",
            None,
            &[("authorization", "Bearer old-key")],
        )
        .await;
    assert_eq!(history.status, 200, "either rotated key works");
    let audit = app
        .store
        .status_audit(id.parse().expect("uuid"))
        .await
        .expect("audit");
    assert!(audit[0].actor.starts_with("key:"), "{}", audit[0].actor);
    assert!(
        !audit[0].actor.contains("new-key"),
        "the key itself is never stored"
    );
}

async fn older_clients_may_leave_out_the_reason_and_name_the_intent(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| s.auth.api_keys = vec!["ops".into()])
        .await;
    let campaign = app.create_campaign("Legacy", 500.0).await;
    let donate = |email: &'static str| {
        let app = &app;
        let campaign = &campaign;
        async move {
            app.donate(campaign, email, "10").await.json["id"]
                .as_str()
                .expect("id")
                .to_string()
        }
    };
    let patch = |id: String, body: serde_json::Value| {
        let app = &app;
        async move {
            app.send_as_operator(
                Method::PATCH,
                &format!("/api/v1/donations/{id}/status"),
                Some(&body),
            )
            .await
        }
    };
    let quiet = donate("ada@example.org").await;
    let failed = patch(quiet.clone(), json!({"status": "FAILED"})).await;
    assert_eq!(failed.status, 200, "{:?}", failed.json);
    let audit = app
        .store
        .status_audit(quiet.parse().expect("uuid"))
        .await
        .expect("audit");
    assert!(
        audit[0].reason.starts_with("no reason given by "),
        "the trail says who gave no reason: {:?}",
        audit[0].reason
    );

    let named = donate("bob@example.org").await;
    let completed = patch(
        named.clone(),
        json!({"status": "COMPLETED", "payment_intent_id": "pi_legacy_1"}),
    )
    .await;
    assert_eq!(completed.status, 200, "{:?}", completed.json);
    assert_eq!(completed.json["payment_intent_id"], "pi_legacy_1");
    let other = patch(
        named.clone(),
        json!({"status": "REFUNDED", "payment_intent_id": "pi_legacy_2"}),
    )
    .await;
    assert_eq!(other.status, 409, "another intent: {:?}", other.json);
    let same = patch(
        named,
        json!({"status": "REFUNDED", "payment_intent_id": "pi_legacy_1"}),
    )
    .await;
    assert_eq!(same.status, 200, "{:?}", same.json);
}
