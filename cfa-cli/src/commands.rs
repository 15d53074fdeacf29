//! Every command except `watch`: call the API, shape what it answered for people or scripts.

use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{
    Campaigns, Command, DeadLetters, Donate, Donations, Notifications, Outbox, Outcome, Payments,
    SendWebhook, Totals, Webhooks,
};
use crate::client::{Client, ClientError, signature};
use crate::output::{Output, View, cell, step, text};

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
    /// The command ran and has something to show, but the answer is a failure (exit 1): the
    /// output is printed, then the error.
    #[error("{message}")]
    Answered {
        /// What to print.
        output: Box<Output>,
        /// Why the command fails.
        message: String,
    },
}

impl CommandError {
    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Client(e) => e.exit_code(),
            CommandError::Usage(_) => 2,
            CommandError::Failed(_) | CommandError::Answered { .. } => 1,
        }
    }
}

type Result<T> = std::result::Result<T, CommandError>;

/// Bytes a path segment keeps as they are (RFC 3986 unreserved, plus `:` for ids like
/// `event:evt_1`); everything else, UTF-8 byte by byte, is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':');
/// Bytes a query value keeps as they are (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An id as one path segment.
pub fn path_segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// `?k=v&…` of the pairs that have a value, percent-encoded as UTF-8.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
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
        Command::Completions { .. }
        | Command::Watch { .. }
        | Command::Listen(_)
        | Command::Profiles => Err(CommandError::Usage(
            "completions, watch, listen and profiles are not API commands".into(),
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
        cell(&donation, "amount"),
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
    let settled = wait_settled(c, &id, &pi, &args).await?;
    let status = text(&settled["status"]);
    if matches!(args.outcome, Outcome::AuthorizeOnly) {
        step(&format!(
            "4. payment {pi} AUTHORIZED; donation {id} stays {status} until the capture: POST /sandbox/v1/intents/{pi}/capture"
        ));
    } else {
        step(&format!("4. donation {id} {status}"));
    }
    let totals = settled_totals(c, &args.campaign, &settled).await?;
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

/// The campaign's totals once they count `donation`: the totals consumer applies a completed
/// donation a moment after it completes, so a read right away may predate it (up to 5 s).
async fn settled_totals(c: &Client, campaign: &str, donation: &Value) -> Result<Value> {
    let path = format!("/api/v1/totals/campaigns/{}", path_segment(campaign));
    let changed = chrono::DateTime::parse_from_rfc3339(&text(&donation["updated_at"])).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let totals = c.get(&path).await?;
        let updated = chrono::DateTime::parse_from_rfc3339(&text(&totals["last_updated"])).ok();
        let counted = match (changed, updated) {
            (Some(changed), Some(updated)) => updated >= changed,
            _ => true,
        };
        if counted || donation["status"] != "COMPLETED" || Instant::now() >= deadline {
            return Ok(totals);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the donation until it leaves PENDING (or, for authorize-only, until the payment of
/// intent `pi` is authorized), up to `--wait` seconds. The intent comes from the intent step:
/// the donation learns it only later, from an event.
async fn wait_settled(c: &Client, id: &str, pi: &str, args: &Donate) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let donation = c
            .get(&format!("/api/v1/donations/{}", path_segment(id)))
            .await?;
        let status = text(&donation["status"]);
        let done = status != "PENDING"
            || (matches!(args.outcome, Outcome::AuthorizeOnly) && {
                let payment = c
                    .get(&format!("/api/v1/payments/{}", path_segment(pi)))
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

/// The provider event `webhooks send` delivers: `(event, its id, its status)`.
fn webhook_event(args: &SendWebhook) -> Result<(Value, String, String)> {
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
        "payment_intent_id": args.intent.clone(),
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
    Ok((event, event_id, status))
}

async fn send_webhook(ctx: &Context, args: SendWebhook) -> Result<Output> {
    let (event, event_id, status) = webhook_event(&args)?;
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
    let failed: Vec<String> = json_replies
        .iter()
        .filter(|r| r["status_code"].as_u64().is_none_or(|code| code >= 300))
        .map(|r| {
            let body = &r["body"];
            let why = [&body["reason"], &body["detail"]]
                .into_iter()
                .map(text)
                .find(|t| !t.is_empty())
                .unwrap_or_default();
            format!("{} {why}", r["status_code"]).trim_end().to_string()
        })
        .collect();
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
        return Err(CommandError::Answered {
            message: format!(
                "the server refused the signature (401: {}); check --webhook-secret",
                text(&out.json["replies"][0]["body"]["detail"])
            ),
            output: Box::new(out),
        });
    }
    if !failed.is_empty() {
        return Err(CommandError::Answered {
            message: format!(
                "{} of {n} deliveries were not accepted ({})",
                failed.len(),
                failed.join("; ")
            ),
            output: Box::new(out),
        });
    }
    Ok(out)
}

async fn health(c: &Client) -> Result<Output> {
    let reply = c.send(Method::GET, "/ready", None, &[]).await?;
    let mut body = reply.body.clone();
    let mut pairs = vec![("status".to_string(), text(&body["status"]))];
    // The build it runs (GET /version); a server too old to have one just shows none.
    if let Ok(version) = c.send(Method::GET, "/version", None, &[]).await
        && version.status == 200
    {
        pairs.push(("server_version".to_string(), text(&version.body["version"])));
        pairs.push((
            "server_revision".to_string(),
            text(&version.body["git_revision"]),
        ));
        if let Some(object) = body.as_object_mut() {
            object.insert("server".to_string(), version.body);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths_are_percent_encoded_as_utf8() {
        assert_eq!(
            query(&[
                ("donor_email", Some("josé+1@example.org".into())),
                ("status", None),
                ("limit", Some("5".into())),
            ]),
            "?donor_email=jos%C3%A9%2B1%40example.org&limit=5"
        );
        assert_eq!(query(&[("status", None)]), "");
        assert_eq!(path_segment("event:evt_1"), "event:evt_1");
        assert_eq!(path_segment("a/b é"), "a%2Fb%20%C3%A9");
    }
}
