//! `cfa-cli listen`: a live tail of what the platform records, like `stripe listen`.
//!
//! It polls the operator views (donation history, received webhooks, the outbox, dead letters)
//! and prints what changed since the previous poll, one line per change, oldest first. The first
//! poll only learns what already exists. An outage is waited out (and said on standard error);
//! a missing operator key ends it with what to do.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{Listen, Source};
use crate::client::{Client, ClientError};
use crate::commands::{path_segment, query};
use crate::output::{self, Format, cell, text};

/// How many ids of each kind are remembered (far more than a poll's window of 500).
const REMEMBER: usize = 20_000;
/// Rows asked for per page (the API's maximum).
const PAGE: usize = 100;
/// Pages read per poll when every row of a page is new (a burst between two polls).
const MAX_PAGES: usize = 5;

/// Why `listen` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The server refused or could not be reached at the start.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server needs an operator key (exit 1).
    #[error(
        "listen reads the operator views and the server wants a key ({0}): pass --api-key or set CFA_API_KEY"
    )]
    NeedsKey(String),
    /// Standard output was closed (`| head`): not a failure.
    #[error("standard output closed")]
    Closed,
    /// Standard output failed otherwise.
    #[error("cannot write the output: {0}")]
    Write(std::io::Error),
}

impl ListenError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            ListenError::Client(e) => e.exit_code(),
            ListenError::NeedsKey(_) | ListenError::Write(_) => 1,
            ListenError::Closed => 0,
        }
    }
}

/// One change, for people and for scripts.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// `donation`, `webhook`, `outbox` or `dead_letter`.
    pub kind: &'static str,
    /// When it happened, `HH:MM:SS` (local time).
    pub at: String,
    /// The line people read.
    pub line: String,
    /// The object scripts read.
    pub json: Value,
}

/// Ids already seen, the oldest forgotten first.
#[derive(Default)]
struct Seen<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Seen<V> {
    fn get(&self, id: &str) -> Option<&V> {
        self.map.get(id)
    }

    fn put(&mut self, id: &str, value: V) {
        if self.map.insert(id.to_string(), value).is_none() {
            self.order.push_back(id.to_string());
            if self.order.len() > REMEMBER
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }
}

/// What the tail knows so far.
#[derive(Default)]
pub struct Tail {
    donations: Seen<(i64, String, i64)>,
    webhooks: Seen<()>,
    dead: Seen<()>,
    outbox: Option<(i64, i64)>,
    started: bool,
}

fn clock(timestamp: &Value) -> String {
    chrono::DateTime::parse_from_rfc3339(&text(timestamp))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| chrono::Local::now().format("%H:%M:%S").to_string())
}

/// Reads newest-first pages of `path` (which takes `limit` and `offset`) until a page holds an
/// id already `known`, or is short; answers the rows oldest first.
async fn pages(
    client: &Client,
    path: &str,
    filters: &[(&str, Option<String>)],
    known: impl Fn(&Value) -> bool,
    first: bool,
) -> Result<Vec<Value>, ClientError> {
    let mut rows = Vec::new();
    for page in 0..MAX_PAGES {
        let mut pairs = filters.to_vec();
        pairs.push(("limit", Some(PAGE.to_string())));
        pairs.push(("offset", Some((page * PAGE).to_string())));
        let body = client.get(&format!("{path}{}", query(&pairs))).await?;
        let items = body.as_array().cloned().unwrap_or_default();
        let full = items.len() == PAGE;
        let any_known = items.iter().any(&known);
        rows.extend(items);
        if first || !full || any_known {
            break;
        }
    }
    rows.reverse();
    Ok(rows)
}

impl Tail {
    /// One poll: the changes since the previous one (none on the first).
    pub async fn poll(
        &mut self,
        client: &Client,
        args: &Listen,
    ) -> Result<Vec<Change>, ClientError> {
        let wants = |s: Source| args.only.is_empty() || args.only.contains(&s);
        let first = !self.started;
        let mut changes = Vec::new();
        if wants(Source::Donations) {
            let filters = [("campaign_id", args.campaign.clone())];
            let rows = pages(
                client,
                "/api/v1/donations/history",
                &filters,
                |d| self.donations.get(&text(&d["id"])).is_some(),
                first,
            )
            .await?;
            for d in rows {
                changes.extend(self.donation(&d, first));
            }
        }
        if wants(Source::Webhooks) {
            let rows = pages(
                client,
                "/api/v1/admin/webhooks",
                &[],
                |w| self.webhooks.get(&text(&w["id"])).is_some(),
                first,
            )
            .await?;
            for w in rows {
                let id = text(&w["id"]);
                if self.webhooks.get(&id).is_some() {
                    continue;
                }
                self.webhooks.put(&id, ());
                if !first {
                    changes.push(webhook(&w));
                }
            }
        }
        if wants(Source::Outbox) {
            let o = client.get("/api/v1/admin/outbox").await?;
            let now = (
                o["pending"].as_i64().unwrap_or(0),
                o["dead"].as_i64().unwrap_or(0),
            );
            if !first && self.outbox != Some(now) {
                changes.push(outbox(&o));
            }
            self.outbox = Some(now);
        }
        if wants(Source::DeadLetters) {
            let dead = client.get("/api/v1/admin/dead-letters").await?;
            for d in dead.as_array().into_iter().flatten() {
                let id = text(&d["id"]);
                if self.dead.get(&id).is_some() {
                    continue;
                }
                self.dead.put(&id, ());
                if !first {
                    changes.push(dead_letter(d));
                }
            }
        }
        self.started = true;
        Ok(changes)
    }

    fn donation(&mut self, d: &Value, first: bool) -> Option<Change> {
        let id = text(&d["id"]);
        let status = text(&d["status"]);
        let version = d["version"].as_i64().unwrap_or(0);
        let refunded = d["refunded_amount_minor"].as_i64().unwrap_or(0);
        let amount = format!("{} {}", cell(d, "amount"), text(&d["currency"]));
        let before = self.donations.get(&id).cloned();
        self.donations.put(&id, (version, status.clone(), refunded));
        if first {
            return None;
        }
        let (line, change) = match before {
            None => (
                format!(
                    "{id}  {status}  {amount}  {}  campaign {}",
                    text(&d["donor_email"]),
                    text(&d["campaign_id"])
                ),
                json!({"change": "created"}),
            ),
            Some((v, _, _)) if v >= version => return None,
            Some((_, old, old_refunded)) if old == status && old_refunded != refunded => (
                format!(
                    "{id}  {status}  refunded {} of {amount}",
                    cell(
                        &json!({"refunded_amount_minor": refunded, "currency": d["currency"]}),
                        "refunded_amount"
                    )
                ),
                json!({"change": "refunded"}),
            ),
            Some((_, old, _)) if old == status => return None,
            Some((_, old, _)) => (
                format!("{id}  {old} → {status}  {amount}"),
                json!({"change": "status", "from": old, "to": status}),
            ),
        };
        let mut object = change;
        object["kind"] = json!("donation");
        object["donation"] = d.clone();
        Some(Change {
            kind: "donation",
            at: clock(&d["updated_at"]),
            line,
            json: object,
        })
    }
}

fn webhook(w: &Value) -> Change {
    let mut line = format!(
        "{}  {}  {} ({})  {}",
        text(&w["payment_intent_id"]),
        text(&w["status"]),
        text(&w["outcome"]),
        text(&w["status_code"]),
        text(&w["id"]),
    );
    if let Some(reason) = w["response"]["reason"].as_str() {
        line.push_str(&format!("  reason {reason}"));
    }
    if let Some(of) = w["replay_of"].as_str() {
        line.push_str(&format!("  replay of {of}"));
    }
    Change {
        kind: "webhook",
        at: clock(&w["received_at"]),
        line,
        json: json!({"kind": "webhook", "change": "received", "webhook": w}),
    }
}

fn outbox(o: &Value) -> Change {
    let age = o["oldest_pending_age_seconds"]
        .as_f64()
        .map_or("-".to_string(), |a| format!("{a:.1} s"));
    Change {
        kind: "outbox",
        at: chrono::Local::now().format("%H:%M:%S").to_string(),
        line: format!(
            "{} pending, oldest {age}, {} dead",
            text(&o["pending"]),
            text(&o["dead"])
        ),
        json: json!({"kind": "outbox", "change": "backlog", "outbox": o}),
    }
}

fn dead_letter(d: &Value) -> Change {
    Change {
        kind: "dead_letter",
        at: chrono::Local::now().format("%H:%M:%S").to_string(),
        line: format!(
            "{}  {}  attempts {}: {}  (replay: cfa-cli dead-letters replay {})",
            text(&d["id"]),
            text(&d["event_type"]),
            text(&d["attempts"]),
            text(&d["last_error"]),
            path_segment(&text(&d["id"])),
        ),
        json: json!({"kind": "dead_letter", "change": "dead", "dead_letter": d}),
    }
}

/// Renders one change as a line of `format`.
pub fn render(change: &Change, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(&change.json).unwrap_or_default() + "\n",
        Format::Table => output::colour(&format!(
            "{}  {:<11} {}\n",
            change.at,
            change.kind.replace('_', "-"),
            change.line
        )),
    }
}

fn say(line: &str) {
    let _ = writeln!(anstream::stderr(), "{line}");
}

fn print(changes: &[Change], format: Format) -> Result<(), ListenError> {
    let mut stdout = anstream::stdout();
    for change in changes {
        stdout
            .write_all(render(change, format).as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| {
                if output::quiet(&e) {
                    ListenError::Closed
                } else {
                    ListenError::Write(e)
                }
            })?;
    }
    Ok(())
}

fn short(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { reason, .. } => reason.clone(),
        ClientError::Failed { status, .. } => format!("server error {status}"),
        ClientError::Refused { status, detail, .. } => format!("{status}: {detail}"),
    }
}

fn banner(client: &Client, args: &Listen) -> String {
    let sources: Vec<&str> = [
        (Source::Donations, "donations"),
        (Source::Webhooks, "webhooks"),
        (Source::Outbox, "the outbox"),
        (Source::DeadLetters, "dead letters"),
    ]
    .into_iter()
    .filter(|(s, _)| args.only.is_empty() || args.only.contains(s))
    .map(|(_, name)| name)
    .collect();
    format!(
        "Ready! Tailing {} at {} (Ctrl-C to stop)",
        sources.join(", "),
        client.base()
    )
}

/// Tails until Ctrl-C, or until standard output closes.
pub async fn run(client: &Client, args: &Listen, format: Format) -> Result<(), ListenError> {
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let mut tail = Tail::default();
    let mut down: Option<String> = None;
    let mut throttled = false;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let mut pause = interval;
        let first = !tail.started;
        match tail.poll(client, args).await {
            Ok(changes) => {
                if first {
                    say(&banner(client, args));
                }
                if let Some(why) = down.take() {
                    say(&format!(
                        "back: the server answers again (it was away: {why})"
                    ));
                }
                throttled = false;
                print(&changes, format)?;
            }
            Err(ClientError::Refused {
                status: 401,
                detail,
                ..
            }) => return Err(ListenError::NeedsKey(format!("401: {detail}"))),
            Err(ClientError::Refused { status: 429, .. }) => {
                if !throttled {
                    say(
                        "rate limited by the server: polling more slowly (an --api-key has a higher limit)",
                    );
                    throttled = true;
                }
                pause = (interval * 2).max(Duration::from_secs(2));
            }
            Err(e) if first => return Err(e.into()),
            Err(e) => {
                if down.is_none() {
                    say(&format!(
                        "lost the server ({}); retrying every {} ms",
                        short(&e),
                        interval.as_millis()
                    ));
                    down = Some(short(&e));
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
