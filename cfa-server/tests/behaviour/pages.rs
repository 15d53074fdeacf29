//! The donor pages over plain HTTP, as a browser without JavaScript uses them: forms posted as
//! `application/x-www-form-urlencoded`, `303` redirects followed by hand. And the live totals
//! stream, read as raw server-sent events by many viewers at once.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestContext, eventually};
use crate::tests;

tests![
    the_donate_form_works_without_javascript,
    an_authorized_payment_keeps_its_page_refreshing_until_the_capture,
    a_double_submitted_form_makes_one_donation,
    a_form_with_mistakes_comes_back_with_the_input_and_what_to_fix,
    the_totals_stream_reads_once_per_change_for_every_viewer,
    every_page_has_a_language_one_heading_labels_and_a_strict_policy,
];

/// A client that shows redirects instead of following them, as the tests check each hop.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `application/x-www-form-urlencoded`, as a browser writes it.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A page: its status, its `Location` and its HTML.
struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    html: String,
}

async fn open(app: &TestApp, path: &str) -> Page {
    read(browser().get(format!("{}{path}", app.address))).await
}

async fn post_form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Page {
    read(
        browser()
            .post(format!("{}{path}", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields)),
    )
    .await
}

async fn read(request: reqwest::RequestBuilder) -> Page {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let html = response.text().await.expect("body");
    Page {
        status,
        location,
        headers,
        html,
    }
}

/// The value of the first `name="…"` input's `value` attribute.
fn input_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn donation_count(app: &TestApp, campaign: &str) -> usize {
    app.get(&format!("/api/v1/donations/history?campaign_id={campaign}"))
        .await
        .json
        .as_array()
        .map_or(0, Vec::len)
}

/// Opens the campaign page, donates `amount` with the form's key, returns the next location.
async fn donate_with_the_form(app: &TestApp, campaign: &str, amount: &str) -> String {
    let page = open(app, &format!("/campaigns/{campaign}")).await;
    assert_eq!(page.status, 200);
    let key = input_value(&page.html, "idempotency_key");
    let posted = post_form(
        app,
        &format!("/campaigns/{campaign}/donate"),
        &[
            ("idempotency_key", &key),
            ("amount", amount),
            ("other_amount", ""),
            ("donor_name", "Ada Lovelace"),
            ("donor_email", "ada@example.org"),
        ],
    )
    .await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    posted.location.expect("a redirect")
}

/// A page that showed the payment authorized kept saying "captured later" after the capture
/// came a moment later: it stopped refreshing at AUTHORIZED (seen in the browser test when the
/// page was read between the two webhooks). Authorized is not settled.
async fn an_authorized_payment_keeps_its_page_refreshing_until_the_capture(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Later", 500.0).await;
    let checkout = donate_with_the_form(&app, &campaign, "25").await;
    let paid = post_form(&app, &checkout, &[("outcome", "authorize_only")]).await;
    assert_eq!(paid.status, 303, "{}", paid.html);
    let thanks = paid.location.expect("to the thank-you page");
    let authorized = eventually(Duration::from_secs(20), "the authorization", || async {
        app.drain_outbox().await;
        let page = open(&app, &thanks).await;
        page.html.contains("captures it later").then_some(page)
    })
    .await;
    assert!(
        authorized.html.contains("http-equiv=\"refresh\""),
        "authorized is not the end: the page goes on refreshing"
    );
    let progress = app
        .get(&format!("{}/progress", thanks.trim_end_matches("/thanks")))
        .await;
    assert_eq!(progress.json["settled"], false, "{:?}", progress.json);
}

async fn the_donate_form_works_without_javascript(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Clean water", 500.0).await;
    let front = open(&app, "/").await;
    assert!(front.html.contains("Clean water"), "{}", front.html);
    let checkout = donate_with_the_form(&app, &campaign, "25").await;
    assert!(checkout.starts_with("/checkout/pi_"), "{checkout}");
    let page = open(&app, &checkout).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("$25.00"), "{}", page.html);
    let paid = post_form(&app, &checkout, &[("outcome", "succeed")]).await;
    assert_eq!(paid.status, 303, "{}", paid.html);
    let thanks = paid.location.expect("to the thank-you page");
    assert!(thanks.ends_with("/thanks"), "{thanks}");
    let waiting = open(&app, &thanks).await;
    assert!(
        waiting.html.contains("http-equiv=\"refresh\""),
        "until it is settled, the page refreshes itself without JavaScript"
    );
    let done = eventually(Duration::from_secs(20), "the receipt", || async {
        app.drain_outbox().await;
        let page = open(&app, &thanks).await;
        page.html.contains("receipt was sent").then_some(page)
    })
    .await;
    assert!(done.html.contains("Thank you"), "{}", done.html);
    assert!(
        !done.html.contains("http-equiv=\"refresh\""),
        "settled: no more refreshes"
    );
    let campaign_page = open(&app, &format!("/campaigns/{campaign}")).await;
    assert!(
        campaign_page.html.contains("$25.00</strong> raised of"),
        "{}",
        campaign_page.html
    );
    assert!(campaign_page.html.contains("1 donor"));
    let token = app.state.history_links.token("ada@example.org");
    let history = open(&app, &format!("/history?token={token}")).await;
    assert_eq!(history.status, 200);
    assert!(
        history.html.contains("Clean water") && history.html.contains("$25.00"),
        "{}",
        history.html
    );
    assert_eq!(open(&app, "/history?token=forged").await.status, 401);
}

async fn a_double_submitted_form_makes_one_donation(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Twice", 500.0).await;
    let page = open(&app, &format!("/campaigns/{campaign}")).await;
    let key = input_value(&page.html, "idempotency_key");
    let path = format!("/campaigns/{campaign}/donate");
    let fields = [
        ("idempotency_key", key.as_str()),
        ("amount", "50"),
        ("other_amount", ""),
        ("donor_name", ""),
        ("donor_email", "bob@example.org"),
    ];
    let (first, second) = tokio::join!(
        post_form(&app, &path, &fields),
        post_form(&app, &path, &fields)
    );
    let reload = post_form(&app, &path, &fields).await;
    for answer in [&first, &second, &reload] {
        assert_eq!(answer.status, 303, "{}", answer.html);
    }
    assert_eq!(first.location, second.location, "the same checkout");
    assert_eq!(first.location, reload.location, "a reload too");
    assert_eq!(donation_count(&app, &campaign).await, 1);
    let mut other = fields;
    other[2] = ("other_amount", "75");
    let reused = post_form(&app, &path, &other).await;
    assert_eq!(reused.status, 422, "the key belongs to the first form");
    assert!(reused.html.contains("already used"), "{}", reused.html);
    assert_eq!(donation_count(&app, &campaign).await, 1);
}

async fn a_form_with_mistakes_comes_back_with_the_input_and_what_to_fix(ctx: TestContext) {
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Mistakes", 500.0).await;
    let page = open(&app, &format!("/campaigns/{campaign}")).await;
    let key = input_value(&page.html, "idempotency_key");
    let path = format!("/campaigns/{campaign}/donate");
    let wrong = post_form(
        &app,
        &path,
        &[
            ("idempotency_key", &key),
            ("other_amount", "12.345"),
            ("donor_name", "Grace"),
            ("donor_email", "not an address"),
        ],
    )
    .await;
    assert_eq!(wrong.status, 422);
    assert!(wrong.html.contains("role=\"alert\""), "{}", wrong.html);
    assert!(wrong.html.contains("aria-invalid=\"true\""));
    assert!(
        wrong
            .html
            .contains("aria-describedby=\"donor_email-error\"")
    );
    assert_eq!(input_value(&wrong.html, "idempotency_key"), key, "same key");
    assert_eq!(
        input_value(&wrong.html, "donor_name"),
        "Grace",
        "input kept"
    );
    assert_eq!(donation_count(&app, &campaign).await, 0);
    let fixed = post_form(
        &app,
        &path,
        &[
            ("idempotency_key", &key),
            ("other_amount", "12.34"),
            ("donor_name", "Grace"),
            ("donor_email", "grace@example.org"),
        ],
    )
    .await;
    assert_eq!(
        fixed.status, 303,
        "nothing was saved with the key: {}",
        fixed.html
    );
    assert_eq!(donation_count(&app, &campaign).await, 1);
}

/// One open stream: reads `event: totals` events as they come.
struct Viewer {
    response: reqwest::Response,
    buffer: String,
}

impl Viewer {
    async fn open(app: &TestApp, campaign: &str) -> Viewer {
        let response = app
            .client
            .get(format!(
                "{}/api/v1/totals/campaigns/{campaign}/stream",
                app.address
            ))
            .send()
            .await
            .expect("a stream");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "server-sent events"
        );
        Viewer {
            response,
            buffer: String::new(),
        }
    }

    /// The next totals event's data, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                    return Some(serde_json::from_str(data.trim()).expect("JSON data"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(wait, self.response.chunk())
                .await
                .ok()?;
            let chunk = chunk.expect("the stream stays open")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn the_totals_stream_reads_once_per_change_for_every_viewer(ctx: TestContext) {
    // Two database turns for the whole process: the open streams must hold none of them.
    let app = ctx.spawn_app_with(|s| s.admission.max_in_flight = 2).await;
    let campaign = app.create_campaign("Watched", 1000.0).await;
    let mut viewers = Vec::new();
    for _ in 0..25 {
        let mut viewer = Viewer::open(&app, &campaign).await;
        let first = viewer
            .next(Duration::from_secs(5))
            .await
            .expect("current totals");
        assert_eq!(first["total_amount_minor"], 0);
        viewers.push(viewer);
    }
    let reads_before = app.state.live.reads();
    let donation = app.donate(&campaign, "ada@example.org", "12.34").await;
    assert_eq!(donation.status, 201, "admitted while 25 streams are open");
    let id = donation.json["id"].as_str().expect("id").to_string();
    let completed = app
        .send(
            Method::PATCH,
            &format!("/api/v1/donations/{id}/status"),
            Some(&json!({"status": "COMPLETED", "reason": "paid at the counter"})),
            &[],
        )
        .await;
    assert_eq!(completed.status, 200, "{:?}", completed.json);
    app.drain_outbox().await;
    let mut received = Vec::new();
    for viewer in &mut viewers {
        let mut events = 0;
        loop {
            let update = viewer
                .next(Duration::from_secs(10))
                .await
                .expect("the change reaches every viewer");
            events += 1;
            if update["total_amount_minor"] == 1234 {
                assert_eq!(update["unique_donors"], 1);
                assert_eq!(update["data_source"], "live");
                break;
            }
        }
        received.push(events);
    }
    let reads = app.state.live.reads() - reads_before;
    assert!(
        received
            .iter()
            .all(|&n| u64::try_from(n).ok() == Some(reads)),
        "every viewer got one event per read, and the server read {reads} times for 25 \
         viewers: {received:?}"
    );
    assert!(reads <= 3, "one read per change, not per viewer: {reads}");
}

async fn every_page_has_a_language_one_heading_labels_and_a_strict_policy(ctx: TestContext) {
    crate::a11y::check_the_checker();
    let app = ctx.spawn_app().await;
    let campaign = app.create_campaign("Accessible", 500.0).await;
    let checkout = donate_with_the_form(&app, &campaign, "10").await;
    let checkout_page = open(&app, &checkout).await;
    let thanks = post_form(&app, &checkout, &[("outcome", "authorize_only")])
        .await
        .location
        .expect("thanks");
    let token = app.state.history_links.token("ada@example.org");
    let mistakes = post_form(
        &app,
        &format!("/campaigns/{campaign}/donate"),
        &[("idempotency_key", "k-1"), ("donor_email", "x")],
    )
    .await;
    let mut pages = vec![
        ("form with mistakes".to_string(), mistakes),
        (checkout, checkout_page),
    ];
    for path in [
        "/".to_string(),
        format!("/campaigns/{campaign}"),
        thanks,
        format!("/history?token={token}"),
        "/campaigns/00000000-0000-0000-0000-000000000000".to_string(),
    ] {
        pages.push((path.clone(), open(&app, &path).await));
    }
    for (path, page) in &pages {
        let problems = crate::a11y::audit(&page.html);
        assert!(problems.is_empty(), "{path}: {problems:?}");
        let policy = page.headers["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(page.headers["referrer-policy"], "no-referrer", "{path}");
    }
    let css = open(&app, "/assets/site.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/css")
    );
}
