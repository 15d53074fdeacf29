//! Every command except `watch`: call the API, shape what it answered for people or scripts.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{
    Campaigns, Command, DeadLetters, Donate, Donations, Notifications, Outbox, Outcome, Payments,
    SendWebhook, Totals, Webhooks,
};
use crate::client::{Client, ClientError, signature};
use crate::output::{Output, View, step, text};

/// What a command needs besides its own arguments.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Webhook secret, for `webhooks send`.
    pub webhook_secret: Option<String>,
}

/// A failure: the client's, or one of the command's own (exit 1 unless it says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// From the server.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A usage mistake the parser could not see (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The command ran, and the answer is a failure (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Client(e) => e.exit_code(),
            CommandError::Usage(_) => 2,
            CommandError::Failed(_) => 1,
        }
    }
}

type Result<T> = std::result::Result<T, CommandError>;

fn path_segment(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '~' | ':' => c.to_string(),
            other => format!("%{:02X}", other as u32),
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{k}={}", path_segment(v).replace(':', "%3A")))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

const CAMPAIGN: &[&str] = &[
    "id",
    "title",
    "goal_amount",
    "currency",
    "status",
    "version",
    "created_at",
];
const DONATION: &[&str] = &[
    "id",
    "campaign_id",
    "donor_email",
    "amount",
    "currency",
    "status",
    "payment_intent_id",
    "version",
    "created_at",
    "updated_at",
];
const TOTALS: &[&str] = &[
    "campaign_id",
    "total_amount",
    "goal_amount",
    "total_donations",
    "unique_donors",
    "last_updated",
    "data_source",
    "cache_age_seconds",
];

/// Runs one command.
pub async fn run(ctx: &Context, command: Command) -> Result<Output> {
    let c = &ctx.client;
    match command {
        Command::Campaigns(cmd) => campaigns(c, cmd).await,
        Command::Donate(args) => donate(c, args).await,
        Command::Donations(Donations::Show { id }) => Ok(Output::record(
            c.get(&format!("/api/v1/donations/{}", path_segment(&id)))
                .await?,
            DONATION,
        )),
        Command::Donations(Donations::History {
            email,
            campaign,
            status,
            limit,
            offset,
        }) => {
            let q = query(&[
                ("donor_email", email),
                ("campaign_id", campaign),
                ("status", status),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ]);
            Ok(Output::table(
                c.get(&format!("/api/v1/donations/history{q}")).await?,
                &[
                    "id",
                    "donor_email",
                    "amount",
                    "currency",
                    "status",
                    "created_at",
                ],
            ))
        }
        Command::Payments(Payments::Show { id }) => {
            let id = path_segment(&id);
            let payment = c.get(&format!("/api/v1/payments/{id}")).await?;
            let history = c.get(&format!("/api/v1/payments/{id}/history")).await?;
            let mut out = Output::record(
                payment.clone(),
                &[
                    "id",
                    "payment_intent_id",
                    "status",
                    "amount",
                    "refunded_amount",
                    "currency",
                    "version",
                    "updated_at",
                ],
            );
            let transitions = history["transitions"].clone();
            out.views.push(
                Output::table(
                    transitions.clone(),
                    &["version", "from", "to", "event_id", "event_at", "refund_id"],
                )
                .views
                .remove(0),
            );
            out.json = json!({"payment": payment, "history": history});
            Ok(out)
        }
        Command::Payments(Payments::Refund { id, amount }) => {
            let mut body = json!({});
            if let Some(amount) = amount {
                body["amount"] = amount_value(&amount)?;
            }
            let reply = c
                .post(
                    &format!("/api/v1/payments/{}/refund", path_segment(&id)),
                    &body,
                )
                .await?;
            Ok(Output::record(
                reply,
                &["refund_id", "payment_intent_id", "amount", "status"],
            ))
        }
        Command::Webhooks(cmd) => webhooks(ctx, cmd).await,
        Command::Totals(Totals::Show { id, realtime }) => {
            let q = if realtime { "?realtime=true" } else { "" };
            let totals = c
                .get(&format!(
                    "/api/v1/totals/campaigns/{}{q}",
                    path_segment(&id)
                ))
                .await?;
            Ok(Output::record(totals, TOTALS))
        }
        Command::Outbox(Outbox::Status) => Ok(Output::record(
            c.get("/api/v1/admin/outbox").await?,
            &[
                "pending",
                "oldest_pending_age_seconds",
                "oldest_pending_at",
                "sent",
                "dead",
                "bus",
            ],
        )),
        Command::DeadLetters(DeadLetters::List) => Ok(Output::table(
            c.get("/api/v1/admin/dead-letters").await?,
            &["id", "source", "event_type", "attempts", "last_error"],
        )),
        Command::DeadLetters(DeadLetters::Replay { id }) => Ok(Output::record(
            c.call(
                Method::POST,
                &format!("/api/v1/admin/dead-letters/{}/replay", path_segment(&id)),
                None,
                &[],
            )
            .await?,
            &["id", "status"],
        )),
        Command::Notifications(Notifications::List {
            donation,
            status,
            limit,
        }) => {
            let q = query(&[
                ("donation_id", donation),
                ("status", status),
                ("limit", Some(limit.to_string())),
            ]);
            Ok(Output::table(
                c.get(&format!("/api/v1/notifications{q}")).await?,
                &[
                    "id",
                    "kind",
                    "recipient",
                    "status",
                    "attempts",
                    "sent_at",
                    "last_error",
                ],
            ))
        }
        Command::Health => health(c).await,
        Command::Completions { .. } | Command::Watch { .. } => Err(CommandError::Usage(
            "completions and watch are not API commands".into(),
        )),
    }
}

/// An amount as the API takes it: a JSON number written exactly as given.
fn amount_value(raw: &str) -> Result<Value> {
    serde_json::from_str::<serde_json::Number>(raw.trim())
        .map(Value::Number)
        .map_err(|_| CommandError::Usage(format!("`{raw}` is not an amount; write e.g. 12.34")))
}

async fn campaigns(c: &Client, cmd: Campaigns) -> Result<Output> {
    match cmd {
        Campaigns::Create {
            title,
            goal,
            currency,
        } => {
            let mut body = json!({"title": title, "goal_amount": amount_value(&goal)?});
            if let Some(currency) = currency {
                body["currency"] = json!(currency);
            }
            Ok(Output::record(
                c.post("/api/v1/campaigns", &body).await?,
                CAMPAIGN,
            ))
        }
        Campaigns::List { status, limit } => {
            let q = query(&[("status", status), ("limit", Some(limit.to_string()))]);
            Ok(Output::table(
                c.get(&format!("/api/v1/campaigns{q}")).await?,
                &["id", "title", "goal_amount", "currency", "status"],
            ))
        }
        Campaigns::Show { id } => {
            let id = path_segment(&id);
            let campaign = c.get(&format!("/api/v1/campaigns/{id}")).await?;
            let totals = c.get(&format!("/api/v1/totals/campaigns/{id}")).await?;
            let mut out = Output::record(campaign.clone(), CAMPAIGN);
            out.views.push(View::Record(vec![
                (
                    "raised".into(),
                    format!(
                        "{} of {}",
                        text(&totals["total_amount"]),
                        text(&totals["goal_amount"])
                    ),
                ),
                ("donations".into(), text(&totals["total_donations"])),
                ("donors".into(), text(&totals["unique_donors"])),
            ]));
            out.json = json!({"campaign": campaign, "totals": totals});
            Ok(out)
        }
        Campaigns::Close { id } => {
            let id = path_segment(&id);
            let current = c.get(&format!("/api/v1/campaigns/{id}")).await?;
            let body = json!({
                "title": current["title"],
                "goal_amount": current["goal_amount"],
                "currency": current["currency"],
                "status": "CLOSED",
            });
            let closed = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/campaigns/{id}"),
                    Some(&body),
                    &[],
                )
                .await?;
            Ok(Output::record(closed, CAMPAIGN))
        }
    }
}

async fn donate(c: &Client, args: Donate) -> Result<Output> {
    let amount = amount_value(&args.amount)?;
    let donation = c
        .post(
            "/api/v1/donations",
            &json!({"campaign_id": args.campaign, "donor_email": args.email, "amount": amount}),
        )
        .await?;
    let id = text(&donation["id"]);
    step(&format!(
        "1. donation {id} {} {} PENDING",
        text(&donation["amount"]),
        text(&donation["currency"])
    ));
    let intent = c
        .post(
            "/api/v1/payments/intent",
            &json!({"donation_id": id, "amount": amount}),
        )
        .await?;
    let pi = text(&intent["payment_intent_id"]);
    step(&format!("2. payment intent {pi} INITIATED"));
    let outcome = match args.outcome {
        Outcome::Succeed => "succeed",
        Outcome::Decline => "decline",
        Outcome::AuthorizeOnly => "authorize_only",
    };
    let confirm = c
        .post(
            &format!("/sandbox/v1/intents/{}/confirm", path_segment(&pi)),
            &json!({"outcome": outcome}),
        )
        .await?;
    step(&format!(
        "3. sandbox confirmed the intent ({outcome}); its webhooks are on the way"
    ));
    let settled = wait_settled(c, &id, &args, outcome).await?;
    let status = text(&settled["status"]);
    step(&format!("4. donation {id} {status}"));
    let totals = c
        .get(&format!(
            "/api/v1/totals/campaigns/{}",
            path_segment(&args.campaign)
        ))
        .await?;
    let mut out = Output::record(totals.clone(), TOTALS);
    out.views.insert(
        0,
        View::Lines(vec![format!("donation {id} {status}; campaign totals:")]),
    );
    out.json = json!({
        "donation": settled,
        "payment_intent": intent,
        "confirmation": confirm,
        "totals": totals,
    });
    let expected_failure = matches!(args.outcome, Outcome::Decline);
    if status == "FAILED" && !expected_failure {
        return Err(CommandError::Failed(format!(
            "donation {id} FAILED; see `cfa-cli payments show {pi}`"
        )));
    }
    Ok(out)
}

/// Polls the donation until it leaves PENDING (or, for authorize-only, until its payment is
/// authorized), up to `--wait` seconds.
async fn wait_settled(c: &Client, id: &str, args: &Donate, outcome: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let donation = c
            .get(&format!("/api/v1/donations/{}", path_segment(id)))
            .await?;
        let status = text(&donation["status"]);
        let done = status != "PENDING"
            || (outcome == "authorize_only" && {
                let pi = text(&donation["payment_intent_id"]);
                let payment = c
                    .get(&format!("/api/v1/payments/{}", path_segment(&pi)))
                    .await?;
                payment["status"] == "AUTHORIZED"
            });
        if done {
            return Ok(donation);
        }
        if Instant::now() >= deadline {
            return Err(CommandError::Failed(format!(
                "donation {id} is still PENDING after {} s; the webhook may be delayed: check `cfa-cli webhooks list` and `cfa-cli outbox status`",
                args.wait
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn webhooks(ctx: &Context, cmd: Webhooks) -> Result<Output> {
    let c = &ctx.client;
    match cmd {
        Webhooks::Send(args) => send_webhook(ctx, args).await,
        Webhooks::List { limit } => Ok(Output::table(
            c.get(&format!("/api/v1/admin/webhooks?limit={limit}"))
                .await?,
            &[
                "id",
                "received_at",
                "payment_intent_id",
                "status",
                "outcome",
                "status_code",
                "replay_of",
            ],
        )),
        Webhooks::Replay { id } => {
            let reply = c
                .send(
                    Method::POST,
                    &format!("/api/v1/admin/webhooks/{}/replay", path_segment(&id)),
                    None,
                    &[],
                )
                .await?;
            // A replay the state machine rejects is an answer, not a failure of the command.
            let body = if reply.status == 400 || reply.status == 409 {
                reply.body
            } else {
                c.check(reply)?
            };
            Ok(Output::record(
                body,
                &[
                    "status",
                    "reason",
                    "payment_intent_id",
                    "payment_status",
                    "current_status",
                    "version",
                ],
            ))
        }
    }
}

async fn send_webhook(ctx: &Context, args: SendWebhook) -> Result<Output> {
    let status = args.status.to_ascii_uppercase();
    let timestamp = args
        .timestamp
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let event_id = args
        .event_id
        .clone()
        .unwrap_or_else(|| format!("evt_{}", uuid::Uuid::new_v4().simple()));
    let mut event = json!({
        "id": event_id,
        "event_type": format!("payment_intent.{}", status.to_lowercase()),
        "payment_intent_id": args.intent,
        "status": status,
        "timestamp": timestamp,
    });
    if args.refund_id.is_some() || args.amount.is_some() {
        let mut data = json!({});
        if let Some(r) = &args.refund_id {
            data["refund_id"] = json!(r);
        }
        if let Some(a) = &args.amount {
            data["amount"] = amount_value(a)?;
        }
        event["data"] = data;
    }
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let mut headers = Vec::new();
    if !args.unsigned {
        let secret = ctx.webhook_secret.as_deref().ok_or_else(|| {
            CommandError::Usage(
                "signing needs the webhook secret: pass --webhook-secret, set CFA_WEBHOOK_SECRET, or add webhook_secret to your profile (the all-in-one server keeps a generated one in data/webhook_secret); or send --unsigned".into(),
            )
        })?;
        let mut t = chrono::Utc::now().timestamp();
        if args.stale {
            t -= 3600;
        }
        headers.push(("cfa-signature", signature(secret, t, &body)));
    }
    let n = args.duplicate.max(1) as usize;
    let sends = (0..n).map(|_| {
        ctx.client
            .send_bytes("/api/v1/payments/webhook", body.clone(), &headers)
    });
    let replies = futures::future::join_all(sends).await;
    let mut rows = Vec::new();
    let mut json_replies = Vec::new();
    let mut worst: Option<ClientError> = None;
    for (i, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(r) => {
                rows.push(vec![
                    (i + 1).to_string(),
                    r.status.to_string(),
                    text(&r.body["status"]),
                    text(&r.body["reason"]),
                    text(&r.body["detail"]),
                ]);
                json_replies.push(json!({"status_code": r.status, "body": r.body}));
            }
            Err(e) => {
                worst = Some(e);
            }
        }
    }
    if let Some(e) = worst {
        return Err(e.into());
    }
    let refused = json_replies.iter().all(|r| r["status_code"] == 401);
    let out = Output {
        json: json!({"event": event, "replies": json_replies}),
        views: vec![
            View::Lines(vec![format!(
                "event {event_id} ({status}) sent {n} time(s)"
            )]),
            View::Table {
                headers: ["#", "http", "status", "reason", "detail"]
                    .map(String::from)
                    .to_vec(),
                rows,
            },
        ],
    };
    if refused {
        return Err(CommandError::Failed(format!(
            "the server refused the signature (401: {}); check --webhook-secret",
            text(&out.json["replies"][0]["body"]["detail"])
        )));
    }
    Ok(out)
}

async fn health(c: &Client) -> Result<Output> {
    let reply = c.send(Method::GET, "/ready", None, &[]).await?;
    let body = reply.body.clone();
    let mut pairs = vec![("status".to_string(), text(&body["status"]))];
    if let Some(checks) = body["checks"].as_object() {
        for (name, check) in checks {
            let mut line = format!("{} ({})", text(&check["status"]), text(&check["backend"]));
            if let Some(e) = check["error"].as_str().or(check["detail"].as_str()) {
                line.push_str(&format!(": {e}"));
            }
            pairs.push((name.clone(), line));
        }
    }
    let mut views = vec![View::Record(pairs)];
    if let Some(warnings) = body["warnings"].as_array()
        && !warnings.is_empty()
    {
        views.push(View::Lines(
            warnings
                .iter()
                .map(|w| format!("warning: {}", text(w)))
                .collect(),
        ));
    }
    if reply.status >= 500 {
        let down: Vec<String> = body["checks"]
            .as_object()
            .map(|checks| {
                checks
                    .iter()
                    .filter(|(_, c)| c["status"] != "up")
                    .map(|(name, c)| format!("{name} {}", text(&c["error"])))
                    .collect()
            })
            .unwrap_or_default();
        return Err(ClientError::Failed {
            server: c.base().to_string(),
            status: reply.status,
            detail: format!(
                "the server is {} ({})",
                text(&body["status"]),
                down.join("; ")
            ),
        }
        .into());
    }
    Ok(Output { json: body, views })
}
