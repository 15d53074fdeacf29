//! `cfa-cli watch`: a live dashboard in the terminal (ratatui + crossterm).
//!
//! One event stream feeds the state: key presses (read on their own thread), ticks, and
//! snapshots from a background poller that never blocks input. Drawing only reads the state. The
//! terminal is restored on exit and on panic (ratatui's `init`/`restore` install the hook).

pub mod app;
pub mod ui;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::client::{Client, ClientError};
use crate::output::text;
use app::{App, Backend, CampaignView, DonationRow, Event, Snapshot, WebhookRow};

fn clock(timestamp: &Value) -> String {
    let t = text(timestamp);
    chrono::DateTime::parse_from_rfc3339(&t)
        .map(|d| d.format("%H:%M:%S").to_string())
        .unwrap_or(t)
}

/// One poll of the server: everything the dashboard shows.
pub async fn poll(
    client: &Client,
    selected: Option<&str>,
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
    let campaigns = client.get("/api/v1/campaigns?limit=20").await?;
    for c in campaigns.as_array().into_iter().flatten() {
        let id = text(&c["id"]);
        let totals = client
            .get(&format!("/api/v1/totals/campaigns/{id}"))
            .await?;
        let raised: f64 = text(&totals["total_amount"]).parse().unwrap_or(0.0);
        let goal: f64 = text(&c["goal_amount"]).parse().unwrap_or(0.0);
        snapshot.campaigns.push(CampaignView {
            id,
            title: text(&c["title"]),
            currency: text(&c["currency"]),
            raised: text(&totals["total_amount"]),
            goal: text(&c["goal_amount"]),
            ratio: if goal > 0.0 { raised / goal } else { 0.0 },
            donations: totals["total_donations"].as_i64().unwrap_or(0),
            active: c["status"] == "ACTIVE",
        });
    }
    let campaign = selected
        .map(str::to_string)
        .or_else(|| snapshot.campaigns.first().map(|c| c.id.clone()));
    if let Some(id) = campaign {
        let recent = client
            .get(&format!(
                "/api/v1/donations/history?campaign_id={id}&limit=8"
            ))
            .await;
        if let Ok(recent) = recent {
            snapshot.donations = recent
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| DonationRow {
                    at: clock(&d["created_at"]),
                    email: text(&d["donor_email"]),
                    amount: format!("{} {}", text(&d["amount"]), text(&d["currency"])),
                    status: text(&d["status"]),
                })
                .collect();
        }
    }
    // Operator views: without a key on a server that needs one, say so instead of failing.
    match client.get("/api/v1/admin/stats").await {
        Ok(stats) => {
            snapshot.at = clock(&stats["at"]);
            snapshot.donations_total = stats["donations_total"].as_i64().unwrap_or(0);
            snapshot.outbox_pending = stats["outbox"]["pending"].as_i64().unwrap_or(0);
            let now = chrono::DateTime::parse_from_rfc3339(&text(&stats["at"])).ok();
            let oldest =
                chrono::DateTime::parse_from_rfc3339(&text(&stats["outbox"]["oldest_pending_at"]))
                    .ok();
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
        }
        Err(ClientError::Refused { status: 401, .. }) => {
            snapshot.at = chrono::Local::now().format("%H:%M:%S").to_string();
            snapshot.notice = Some("operator views need --api-key".into());
        }
        Err(e) => return Err(e),
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
    let (selected_tx, selected_rx) = watch::channel::<Option<String>>(campaign.clone());
    // The poller: one snapshot per interval, whatever the UI is doing.
    let poller = {
        let events = events.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let selected = selected_rx.borrow().clone();
                let polled =
                    poll(&client, selected.as_deref(), start.elapsed().as_secs_f64()).await;
                let (event, pause) = match polled {
                    Ok(snapshot) => (Event::Data(Box::new(snapshot)), None),
                    // The server's rate limit: it is up; wait before asking again.
                    Err(ClientError::Refused {
                        status: 429,
                        detail,
                        ..
                    }) => (
                        Event::Throttled(detail),
                        Some((interval * 2).max(Duration::from_secs(2))),
                    ),
                    Err(e) => (Event::Disconnected(short_error(&e)), None),
                };
                if events.send(event).await.is_err() {
                    return;
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
        })
    };
    // Keys: crossterm's blocking read, on a thread of its own.
    let keys = events.clone();
    std::thread::spawn(move || {
        loop {
            match crossterm::event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    if let Ok(crossterm::event::Event::Key(key)) = crossterm::event::read()
                        && key.kind == crossterm::event::KeyEventKind::Press
                        && keys.blocking_send(Event::Key(key)).is_err()
                    {
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
    let mut app = App::new(&server, campaign);
    let result = async {
        terminal.draw(|f| ui::draw(f, &app))?;
        while let Some(event) = incoming.recv().await {
            app.update(event);
            if app.quit {
                break;
            }
            let _ = selected_tx.send(app.selected_campaign().map(str::to_string));
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

fn short_error(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { reason, .. } => reason.clone(),
        ClientError::Failed { status, .. } => format!("server error {status}"),
        ClientError::Refused { status, detail, .. } => format!("{status}: {detail}"),
    }
}
