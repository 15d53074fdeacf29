//! Campaigns: create, create-or-update by id, list, show, validation.

use reqwest::Method;
use serde_json::json;

use crate::helpers::TestContext;
use crate::tests;

tests![
    a_campaign_created_by_post_can_be_read_back_and_listed,
    put_creates_then_updates_and_repeating_it_changes_nothing,
    a_campaign_keeps_its_currency,
    campaign_validation_names_the_field,
];

async fn a_campaign_created_by_post_can_be_read_back_and_listed(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let reply = app
        .post(
            "/api/v1/campaigns",
            &json!({"title": "  Clean water  ", "goal_amount": 5000.5, "currency": "eur"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    let id = reply.json["id"].as_str().expect("id").to_string();
    assert_eq!(reply.json["title"], "Clean water");
    assert_eq!(reply.json["goal_amount_minor"], 500050);
    assert_eq!(reply.json["currency"], "EUR");
    assert_eq!(reply.json["status"], "ACTIVE");
    assert_eq!(reply.json["version"], 1);
    let text = String::from_utf8(reply.bytes.clone()).expect("utf-8");
    assert!(
        text.contains(r#""goal_amount":5000.50"#),
        "exact decimal: {text}"
    );
    assert!(!text.contains(": "), "compact JSON: {text}");

    let shown = app.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json, reply.json);

    app.create_campaign("Second", 10.0).await;
    let listed = app.get("/api/v1/campaigns").await;
    let titles: Vec<&str> = listed
        .json
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["title"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(titles, ["Second", "Clean water"], "newest first");
    let page = app.get("/api/v1/campaigns?limit=1&offset=1").await;
    assert_eq!(page.json.as_array().map(Vec::len), Some(1));
    assert_eq!(page.json[0]["title"], "Clean water");

    let missing = app
        .get(&format!("/api/v1/campaigns/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "not_found");
}

async fn put_creates_then_updates_and_repeating_it_changes_nothing(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let id = uuid::Uuid::new_v4();
    let path = format!("/api/v1/campaigns/{id}");
    let body = json!({"title": "Schools", "goal_amount": 100});
    let created = app.send(Method::PUT, &path, Some(&body), &[]).await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["id"], id.to_string());

    let again = app.send(Method::PUT, &path, Some(&body), &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json, created.json, "an identical PUT changes nothing");

    let closed = app
        .send(
            Method::PUT,
            &path,
            Some(&json!({"title": "Schools", "goal_amount": 150, "status": "CLOSED"})),
            &[],
        )
        .await;
    assert_eq!(closed.status, 200);
    assert_eq!(closed.json["version"], 2);
    assert_eq!(closed.json["status"], "CLOSED");
    assert_eq!(closed.json["goal_amount_minor"], 15000);
    assert_eq!(closed.json["created_at"], created.json["created_at"]);

    let stats = app.store.outbox_stats().await.expect("stats");
    assert_eq!(
        stats.pending, 2,
        "one event for the creation, one for the change, none for the repeat"
    );
    let listed = app.get("/api/v1/campaigns?status=CLOSED").await;
    assert_eq!(listed.json.as_array().map(Vec::len), Some(1));
}

async fn a_campaign_keeps_its_currency(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let path = format!("/api/v1/campaigns/{}", uuid::Uuid::new_v4());
    let created = app
        .send(
            Method::PUT,
            &path,
            Some(&json!({"title": "Yen", "goal_amount": 5000, "currency": "JPY"})),
            &[],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["goal_amount_minor"], 5000);
    let changed = app
        .send(
            Method::PUT,
            &path,
            Some(&json!({"title": "Yen", "goal_amount": 5000, "currency": "USD"})),
            &[],
        )
        .await;
    assert_eq!(changed.status, 422);
    assert_eq!(changed.code(), "currency_immutable");
    let same = app
        .send(
            Method::PUT,
            &path,
            Some(&json!({"title": "Yen", "goal_amount": 6000})),
            &[],
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(
        same.json["goal_amount_minor"], 6000,
        "goal read in the campaign's own currency"
    );
}

async fn campaign_validation_names_the_field(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let cases = [
        (json!({"title": "", "goal_amount": 10}), "title"),
        (json!({"title": "T", "goal_amount": 0}), "goal_amount"),
        (json!({"title": "T", "goal_amount": 1.234}), "goal_amount"),
        (json!({"title": "T", "goal_amount": "10"}), "goal_amount"),
        (
            json!({"title": "T", "goal_amount": 10, "currency": "XYZ"}),
            "currency",
        ),
        (
            json!({"title": "T", "goal_amount": 10, "status": "OPEN"}),
            "status",
        ),
        (json!({"goal_amount": 10}), "title"),
    ];
    for (body, field) in cases {
        let reply = app.post("/api/v1/campaigns", &body).await;
        assert_eq!(reply.status, 422, "{body} → {:?}", reply.json);
        assert_eq!(reply.json["field"], field, "{body} → {:?}", reply.json);
        assert!(reply.json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let bad_id = app
        .send(
            Method::PUT,
            "/api/v1/campaigns/not-a-uuid",
            Some(&json!({"title": "T", "goal_amount": 1})),
            &[],
        )
        .await;
    assert_eq!(bad_id.status, 422);
    assert_eq!(bad_id.json["field"], "id");
}
