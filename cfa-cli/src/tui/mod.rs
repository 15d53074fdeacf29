//! `cfa-cli watch`: a live dashboard in the terminal (ratatui + crossterm).
//!
//! One event stream feeds the state: key presses (read on their own thread), ticks, and
//! snapshots from a background poller that never blocks input. Drawing only reads the state. The
//! terminal is restored on exit and on panic (ratatui's `init`/`restore` install the hook).

pub mod app;
pub mod ui;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::client::{Client, ClientError};
use crate::commands::{path_segment, query};
use crate::output::{cell, text};
use app::{App, Backend, CampaignView, DonationRow, Event, Request, Snapshot, WebhookRow};

fn clock(timestamp: &Value) -> String {
    let t = text(timestamp);
    chrono::DateTime::parse_from_rfc3339(&t)
        .map(|d| d.format("%H:%M:%S").to_string())
        .unwrap_or(t)
}

/// Totals already read, by campaign id: a campaign scrolled out of view keeps its last figures.
pub type TotalsCache = HashMap<String, Value>;

/// Every campaign, a page of 100 at a time (newest first, as the server lists them).
async fn campaigns(client: &Client) -> Result<Vec<Value>, ClientError> {
    let mut all = Vec::new();
    for page in 0..50 {
        let body = client
            .get(&format!(
                "/api/v1/campaigns?limit=100&offset={}",
                page * 100
            ))
            .await?;
        let items = body.as_array().cloned().unwrap_or_default();
        let full = items.len() == 100;
        all.extend(items);
        if !full {
            break;
        }
    }
    Ok(all)
}

fn campaign_view(c: &Value, totals: Option<&Value>) -> CampaignView {
    let goal_minor = c["goal_amount_minor"].as_i64().unwrap_or(0);
    let raised_minor = totals.and_then(|t| t["total_amount_minor"].as_i64());
    CampaignView {
        id: text(&c["id"]),
        title: text(&c["title"]),
        currency: text(&c["currency"]),
        raised: totals.map(|t| cell(t, "total_amount")),
        goal: cell(c, "goal_amount"),
        ratio: match raised_minor {
            Some(r) if goal_minor > 0 => r as f64 / goal_minor as f64,
            _ => 0.0,
        },
        donations: totals
            .and_then(|t| t["total_donations"].as_i64())
            .unwrap_or(0),
        donors: totals
            .and_then(|t| t["unique_donors"].as_i64())
            .unwrap_or(0),
        active: c["status"] == "ACTIVE",
    }
}

fn donation_row(d: &Value) -> DonationRow {
    let refunded = d["refunded_amount_minor"].as_i64().unwrap_or(0);
    DonationRow {
        at: clock(&d["created_at"]),
        email: text(&d["donor_email"]),
        amount: format!("{} {}", cell(d, "amount"), text(&d["currency"])),
        status: text(&d["status"]),
        refunded: if refunded > 0 {
            cell(
                &serde_json::json!({"refunded_amount_minor": refunded, "currency": d["currency"]}),
                "refunded_amount",
            )
        } else {
            String::new()
        },
    }
}

/// The operator views: counts, the outbox, webhooks and dead letters. `Ok(false)` when the
/// server wants a key this watch does not have.
async fn operator_views(client: &Client, snapshot: &mut Snapshot) -> Result<bool, ClientError> {
    let stats = match client.get("/api/v1/admin/stats").await {
        Ok(stats) => stats,
        Err(ClientError::Refused { status: 401, .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    snapshot.at = clock(&stats["at"]);
    snapshot.donations_total = stats["donations_total"].as_i64().unwrap_or(0);
    snapshot.outbox_pending = stats["outbox"]["pending"].as_i64().unwrap_or(0);
    let now = chrono::DateTime::parse_from_rfc3339(&text(&stats["at"])).ok();
    let oldest =
        chrono::DateTime::parse_from_rfc3339(&text(&stats["outbox"]["oldest_pending_at"])).ok();
    snapshot.outbox_oldest_age = now
        .zip(oldest)
        .map(|(n, o)| (n - o).num_milliseconds().max(0) as f64 / 1000.0);
    if let Some(outcomes) = stats["webhooks"].as_object() {
        snapshot.webhook_outcomes = outcomes
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
            .collect();
    }
    let webhooks = client.get("/api/v1/admin/webhooks?limit=8").await?;
    snapshot.webhooks = webhooks
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| WebhookRow {
            at: clock(&w["received_at"]),
            intent: text(&w["payment_intent_id"]),
            status: text(&w["status"]),
            outcome: text(&w["outcome"]),
        })
        .collect();
    let dead = client.get("/api/v1/admin/dead-letters").await?;
    snapshot.dead_letters = dead
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("{} {}", text(&d["id"]), text(&d["event_type"])))
        .collect();
    Ok(true)
}

/// One poll of the server: everything the dashboard shows. Totals are read for the campaigns
/// `request` names (those on screen); the others keep what `cache` holds.
pub async fn poll(
    client: &Client,
    request: &Request,
    cache: &mut TotalsCache,
    elapsed: f64,
) -> Result<Snapshot, ClientError> {
    let ready = client.send(Method::GET, "/ready", None, &[]).await?;
    let mut snapshot = Snapshot {
        elapsed,
        readiness: text(&ready.body["status"]),
        ..Snapshot::default()
    };
    if let Some(checks) = ready.body["checks"].as_object() {
        snapshot.backends = checks
            .iter()
            .map(|(name, c)| Backend {
                name: name.clone(),
                status: text(&c["status"]),
                kind: text(&c["backend"]),
            })
            .collect();
    }
    let listed = campaigns(client).await?;
    // Before the dashboard has said what is on screen (the first poll): the first campaigns.
    let first: Vec<String>;
    let totals_for = if request.totals_for.is_empty() {
        first = listed.iter().take(10).map(|c| text(&c["id"])).collect();
        &first
    } else {
        &request.totals_for
    };
    for id in totals_for {
        let totals = client
            .get(&format!("/api/v1/totals/campaigns/{}", path_segment(id)))
            .await?;
        cache.insert(id.clone(), totals);
    }
    snapshot.campaigns = listed
        .iter()
        .map(|c| campaign_view(c, cache.get(&text(&c["id"]))))
        .collect();
    let campaign = request
        .selected
        .clone()
        .or_else(|| snapshot.campaigns.first().map(|c| c.id.clone()));
    snapshot.operator = operator_views(client, &mut snapshot).await?;
    if !snapshot.operator {
        snapshot.at = chrono::Local::now().format("%H:%M:%S").to_string();
    }
    if let Some(id) = campaign
        && snapshot.operator
    {
        let limit = if request.detail { 50 } else { 8 };
        let recent = client
            .get(&format!(
                "/api/v1/donations/history{}",
                query(&[
                    ("campaign_id", Some(id)),
                    ("limit", Some(limit.to_string()))
                ])
            ))
            .await?;
        snapshot.donations = recent
            .as_array()
            .into_iter()
            .flatten()
            .map(donation_row)
            .collect();
    }
    Ok(snapshot)
}

/// Runs the dashboard until the user quits.
pub async fn run(
    client: Client,
    campaign: Option<String>,
    interval: Duration,
) -> anyhow::Result<()> {
    let server = client.base().to_string();
    let (events, mut incoming) = mpsc::channel::<Event>(64);
    let mut app = App::new(&server, campaign);
    app.interval = interval;
    let (request_tx, request_rx) = watch::channel::<Request>(app.request());
    let poller = tokio::spawn(poller(client, request_rx, events.clone()));
    // Keys and resizes: crossterm's blocking read, on a thread of its own.
    let keys = events.clone();
    std::thread::spawn(move || {
        loop {
            match crossterm::event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    let event = match crossterm::event::read() {
                        Ok(crossterm::event::Event::Key(key))
                            if key.kind == crossterm::event::KeyEventKind::Press =>
                        {
                            Event::Key(key)
                        }
                        Ok(crossterm::event::Event::Resize(w, h)) => Event::Resize(w, h),
                        _ => continue,
                    };
                    if keys.blocking_send(event).is_err() {
                        return;
                    }
                }
                Ok(false) => {
                    if keys.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let ticks = events.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            if ticks.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });
    drop(events);
    let mut terminal = ratatui::init();
    let result = async {
        let size = terminal.size()?;
        app.update(Event::Resize(size.width, size.height));
        terminal.draw(|f| ui::draw(f, &app))?;
        while let Some(event) = incoming.recv().await {
            app.update(event);
            if app.quit {
                break;
            }
            request_tx.send_if_modified(|current| {
                let next = app.request();
                let changed = *current != next;
                *current = next;
                changed
            });
            terminal.draw(|f| ui::draw(f, &app))?;
        }
        anyhow::Ok(())
    }
    .await;
    ratatui::restore();
    poller.abort();
    ticker.abort();
    result
}

/// One snapshot per interval, whatever the UI is doing; a change of what is on screen (a scroll,
/// the detail, the period) polls again at once.
async fn poller(
    client: Client,
    mut requests: watch::Receiver<Request>,
    events: mpsc::Sender<Event>,
) {
    let start = Instant::now();
    let mut cache = TotalsCache::new();
    loop {
        let request = requests.borrow_and_update().clone();
        let polled = poll(&client, &request, &mut cache, start.elapsed().as_secs_f64()).await;
        let (event, pause) = match polled {
            Ok(snapshot) => (Event::Data(Box::new(snapshot)), request.interval),
            // The server's rate limit: it is up; wait before asking again.
            Err(ClientError::Refused {
                status: 429,
                detail,
                ..
            }) => (
                Event::Throttled(detail),
                (request.interval * 2).max(Duration::from_secs(2)),
            ),
            Err(e) => (Event::Disconnected(short_error(&e)), request.interval),
        };
        if events.send(event).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = requests.changed() => {
                if changed.is_err() {
                    return;
                }
                // Let a held key settle before asking again.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    }
}

fn short_error(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { reason, .. } => reason.clone(),
        ClientError::Failed { status, .. } => format!("server error {status}"),
        ClientError::Refused { status, detail, .. } => format!("{status}: {detail}"),
    }
}
