//! The goose scenarios over the real HTTP API. Every request is named after the phase it ran
//! in (`baseline`, the fault itself as `postgres-outage`, `recovery`), so reports show
//! `POST baseline: /donations` or `POST redis-outage: /donations`, and a threshold can judge one:
//! `--threshold "p99<2s for POST redis-outage: /donations"`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goose::prelude::*;
use rand::Rng;
use serde_json::{Value, json};

use crate::truth::{Donation, Expected, Truth};

/// The phase names, indexed by [`Shared::phase`].
pub const PHASES: [&str; 3] = ["baseline", "fault", "recovery"];

/// How long a user waits after a request that got no answer.
const NO_ANSWER_PAUSE: Duration = Duration::from_millis(100);

/// What every simulated user shares.
pub struct Shared {
    /// Ground truth.
    pub truth: Truth,
    /// Webhook secret (for signed direct webhooks).
    pub webhook_secret: Option<String>,
    /// Operator key.
    pub api_key: Option<String>,
    /// The current phase, an index into [`PHASES`].
    pub phase: AtomicUsize,
    /// The name of the fault phase's requests (`postgres-outage`).
    pub fault_name: std::sync::RwLock<String>,
    /// Seed of the run (each user mixes in its own number).
    pub seed: u64,
    /// The number of the phase now running: its index in the verdict's phases.
    pub phase_number: AtomicUsize,
    /// The set of campaigns donations go to now: with faults, each fault's cycle has its own,
    /// so its totals stop moving once it ends and can be checked while the load goes on.
    pub campaign_set: AtomicUsize,
    /// Campaigns in a set (0: one set, every campaign).
    pub set_size: AtomicUsize,
    /// The statuses answered in each phase (by phase number; 0 for no response).
    statuses: Mutex<BTreeMap<usize, BTreeMap<u16, u64>>>,
    counter: AtomicU64,
}

impl Shared {
    /// Shared state for a run.
    pub fn new(seed: u64, webhook_secret: Option<String>, api_key: Option<String>) -> Shared {
        Shared {
            truth: Truth::default(),
            webhook_secret,
            api_key,
            phase: AtomicUsize::new(0),
            fault_name: std::sync::RwLock::new("fault".into()),
            seed,
            phase_number: AtomicUsize::new(0),
            campaign_set: AtomicUsize::new(0),
            set_size: AtomicUsize::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// The campaigns of set `set` (every campaign when there is one set).
    pub fn campaigns_of(&self, set: usize) -> Vec<String> {
        let all = self.truth.campaigns();
        let size = self.set_size.load(Ordering::Relaxed);
        if size == 0 {
            return all;
        }
        all.into_iter().skip(set * size).take(size).collect()
    }

    /// How many times each status was answered in each phase, by phase number.
    pub fn statuses(&self) -> BTreeMap<usize, BTreeMap<u16, u64>> {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count_status(&self, status: u16) {
        let phase = self.phase_number.load(Ordering::Relaxed);
        let mut statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        *statuses
            .entry(phase)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    fn name(&self, request: &str) -> String {
        let phase = self.phase.load(Ordering::Relaxed).min(PHASES.len() - 1);
        if phase == 1 {
            let fault = self.fault_name.read().unwrap_or_else(|p| p.into_inner());
            return format!("{fault}: {request}");
        }
        format!("{}: {request}", PHASES[phase])
    }

    fn rng(&self) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        rand::rngs::StdRng::seed_from_u64(
            self.seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(n),
        )
    }
}

/// The scenarios and their weights, from `--mix journey=5,storm=1,totals=10,history=2`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Mix {
    /// Donor journeys.
    pub journey: usize,
    /// Webhook storms.
    pub storm: usize,
    /// Totals reads.
    pub totals: usize,
    /// History reads.
    pub history: usize,
}

/// The mix as `--mix` takes it, so a run can be repeated from its summary.
impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journey={},storm={},totals={},history={}",
            self.journey, self.storm, self.totals, self.history
        )
    }
}

impl Mix {
    /// Parses `name=weight,…`; names not given weigh 0.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut mix = Mix {
            journey: 0,
            storm: 0,
            totals: 0,
            history: 0,
        };
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: write name=weight, e.g. journey=5"))?;
            let weight: usize = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            match name.trim() {
                "journey" => mix.journey = weight,
                "storm" => mix.storm = weight,
                "totals" => mix.totals = weight,
                "history" => mix.history = weight,
                other => {
                    return Err(format!(
                        "`{other}` is not a scenario; use journey, storm, totals or history"
                    ));
                }
            }
        }
        if mix.journey + mix.storm + mix.totals + mix.history == 0 {
            return Err("the mix weighs nothing; give at least one scenario a weight".into());
        }
        Ok(mix)
    }
}

type Shared_ = Arc<Shared>;

/// A goose transaction that runs `$f(shared, user)`.
macro_rules! transaction {
    ($shared:expr, $name:literal, $f:ident) => {{
        let shared = $shared.clone();
        let closure: TransactionFunction = Arc::new(move |user| {
            let shared = shared.clone();
            Box::pin(async move { $f(shared, user).await })
        });
        Transaction::new(closure).set_name($name)
    }};
}

/// The scenarios of `mix` (those with a weight).
pub fn scenarios(shared: &Shared_, mix: &Mix) -> Result<Vec<Scenario>, GooseError> {
    let all = [
        (
            "journey",
            mix.journey,
            transaction!(shared, "journey", journey),
        ),
        ("storm", mix.storm, transaction!(shared, "storm", storm)),
        ("totals", mix.totals, transaction!(shared, "totals", totals)),
        (
            "history",
            mix.history,
            transaction!(shared, "history", history),
        ),
    ];
    let mut out = Vec::new();
    for (name, weight, t) in all {
        if weight > 0 {
            out.push(scenario!(name).set_weight(weight)?.register_transaction(t));
        }
    }
    Ok(out)
}

/// One request of a scenario.
struct Req<'a> {
    method: GooseMethod,
    path: &'a str,
    /// The name reports show, after the phase.
    label: &'a str,
    body: Option<&'a Value>,
    headers: &'a [(&'a str, String)],
    /// The status that counts as success, when not any 2xx.
    expect: Option<u16>,
}

/// Sends a request named for the phase; returns the status and JSON body.
async fn send(
    shared: &Shared,
    user: &mut GooseUser,
    req: Req<'_>,
) -> Result<(u16, Value), Box<TransactionError>> {
    let mut builder = user.get_request_builder(&req.method, req.path)?;
    if let Some(key) = &shared.api_key {
        builder = builder.bearer_auth(key);
    }
    for (k, v) in req.headers {
        builder = builder.header(*k, v);
    }
    if let Some(body) = req.body {
        builder = builder
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let name = shared.name(req.label);
    let mut request = GooseRequest::builder()
        .method(req.method)
        .path(req.path)
        .name(name.as_str())
        .set_request_builder(builder);
    if let Some(code) = req.expect {
        request = request.expect_status_code(code);
    }
    let goose = user.request(request.build()).await?;
    let status = match &goose.response {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    shared.count_status(status);
    if status == 0 {
        // No answer at all (the server is down): a client waits a moment before trying again,
        // rather than spinning on refused connections and starving the restarting server of
        // the machine's cores.
        tokio::time::sleep(NO_ANSWER_PAUSE).await;
    }
    let json = match goose.response {
        Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    Ok((status, json))
}

fn pick(shared: &Shared) -> Option<String> {
    let campaigns = shared.campaigns_of(shared.campaign_set.load(Ordering::Relaxed));
    if campaigns.is_empty() {
        return None;
    }
    let i = shared.rng().random_range(0..campaigns.len());
    Some(campaigns[i].clone())
}

/// Creates a donation (and replays its key once); records it when acknowledged.
async fn donate(
    shared: &Shared,
    user: &mut GooseUser,
) -> Result<Option<Donation>, Box<TransactionError>> {
    let Some(campaign) = pick(shared) else {
        return Ok(None);
    };
    let (cents, donor) = {
        let mut rng = shared.rng();
        // Many donors: the server sends a recipient at most a few notices an hour, and a
        // receipt it holds back for that would look stuck.
        (
            rng.random_range(100..10_000i64),
            rng.random_range(0..1_000_000u32),
        )
    };
    let body = json!({
        "campaign_id": campaign,
        "donor_email": format!("donor{donor}@load.example.org"),
        "amount": format!("{}.{:02}", cents / 100, cents % 100).parse::<f64>().unwrap_or(1.0),
    });
    let key = uuid::Uuid::new_v4().to_string();
    let headers = [("idempotency-key", key.clone())];
    let (status, created) = send(
        shared,
        user,
        Req {
            method: GooseMethod::Post,
            path: "/api/v1/donations",
            label: "/donations",
            body: Some(&body),
            headers: &headers,
            expect: Some(201),
        },
    )
    .await?;
    if status != 201 {
        return Ok(None);
    }
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let donation = Donation {
        id: id.clone(),
        key: key.clone(),
        body: body.clone(),
        campaign,
        amount_minor: cents,
        expected: Expected::Unknown,
        intent: None,
    };
    shared.truth.donation(donation.clone());
    // A client retry: the same key must answer the same donation.
    let (status, replayed) = send(
        shared,
        user,
        Req {
            method: GooseMethod::Post,
            path: "/api/v1/donations",
            label: "/donations (retry)",
            body: Some(&body),
            headers: &headers,
            expect: Some(201),
        },
    )
    .await?;
    if status == 201 && replayed["id"] != created["id"] {
        shared.truth.anomaly(format!(
            "idempotency key {key} answered donation {} on retry, first {id}",
            replayed["id"]
        ));
    }
    Ok(Some(donation))
}

async fn intent(
    shared: &Shared,
    user: &mut GooseUser,
    d: &Donation,
) -> Result<Option<String>, Box<TransactionError>> {
    let body = json!({"donation_id": d.id, "amount": d.body["amount"]});
    let key = [("idempotency-key", uuid::Uuid::new_v4().to_string())];
    let (status, reply) = send(
        shared,
        user,
        Req {
            method: GooseMethod::Post,
            path: "/api/v1/payments/intent",
            label: "/payments/intent",
            body: Some(&body),
            headers: &key,
            expect: Some(201),
        },
    )
    .await?;
    Ok((status == 201).then(|| {
        reply["payment_intent_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }))
}

/// A provider event for `intent` and the headers that sign it (when a secret is given).
fn signed_event(
    shared: &Shared,
    intent: &str,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
    event_id: &str,
) -> (Value, Vec<(&'static str, String)>) {
    let event = json!({
        "id": event_id,
        "event_type": format!("payment_intent.{}", status.to_lowercase()),
        "payment_intent_id": intent,
        "status": status,
        "timestamp": at.to_rfc3339(),
    });
    let mut headers = Vec::new();
    if let Some(secret) = &shared.webhook_secret {
        let bytes = event.to_string();
        headers.push((
            "cfa-signature",
            cfa_cli::client::signature(secret, chrono::Utc::now().timestamp(), bytes.as_bytes()),
        ));
    }
    (event, headers)
}

async fn webhook(
    shared: &Shared,
    user: &mut GooseUser,
    intent: &str,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
    event_id: &str,
) -> Result<(u16, Value), Box<TransactionError>> {
    let (event, headers) = signed_event(shared, intent, status, at, event_id);
    send(
        shared,
        user,
        Req {
            method: GooseMethod::Post,
            path: "/api/v1/payments/webhook",
            label: &format!("/payments/webhook {status}"),
            body: Some(&event),
            headers: &headers,
            expect: None,
        },
    )
    .await
}

/// donation → intent → sandbox confirm (most), a decline (some), or direct signed webhooks.
async fn journey(shared: Shared_, user: &mut GooseUser) -> TransactionResult {
    let Some(d) = donate(&shared, user).await? else {
        return Ok(());
    };
    let Some(pi) = intent(&shared, user, &d).await? else {
        return Ok(());
    };
    let roll = shared.rng().random_range(0..100u32);
    if roll < 15 && shared.webhook_secret.is_some() {
        let t = chrono::Utc::now();
        let (a, _) = webhook(
            &shared,
            user,
            &pi,
            "AUTHORIZED",
            t,
            &format!("evt_{}_a", &pi[3..]),
        )
        .await?;
        let (c, _) = webhook(
            &shared,
            user,
            &pi,
            "CAPTURED",
            t + chrono::TimeDelta::milliseconds(1),
            &format!("evt_{}_c", &pi[3..]),
        )
        .await?;
        let expected = if a == 200 && c == 200 {
            Expected::Completed
        } else {
            Expected::Unknown
        };
        shared.truth.settle(&d.id, expected, Some(pi));
        return Ok(());
    }
    let outcome = if roll < 30 { "decline" } else { "succeed" };
    let (status, _) = send(
        &shared,
        user,
        Req {
            method: GooseMethod::Post,
            path: &format!("/sandbox/v1/intents/{pi}/confirm"),
            label: "/sandbox/confirm",
            body: Some(&json!({"outcome": outcome})),
            headers: &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
            expect: Some(202),
        },
    )
    .await?;
    let expected = match (status, outcome) {
        (202, "succeed") => Expected::Completed,
        (202, _) => Expected::Failed,
        _ => Expected::Unknown,
    };
    shared.truth.settle(&d.id, expected, Some(pi));
    Ok(())
}

/// Each event of a payment delivered several times at once, then a late, older duplicate.
async fn storm(shared: Shared_, user: &mut GooseUser) -> TransactionResult {
    if shared.webhook_secret.is_none() {
        return Ok(());
    }
    let Some(d) = donate(&shared, user).await? else {
        return Ok(());
    };
    let Some(pi) = intent(&shared, user, &d).await? else {
        return Ok(());
    };
    let t = chrono::Utc::now();
    let copies = 3usize;
    let mut applied = true;
    for (status, at, id) in [
        ("AUTHORIZED", t, format!("evt_{}_a", &pi[3..])),
        (
            "CAPTURED",
            t + chrono::TimeDelta::milliseconds(1),
            format!("evt_{}_c", &pi[3..]),
        ),
    ] {
        // All copies at once: one through goose (measured), the others beside it on the
        // user's own HTTP client. A copy that arrives while another is being applied may get
        // 409 (in flight); the event counts as applied when any copy got its 200.
        let (client, url) = (
            user.client.clone(),
            user.base_url.join("/api/v1/payments/webhook"),
        );
        let Ok(url) = url else { return Ok(()) };
        let (event, headers) = signed_event(&shared, &pi, status, at, &id);
        let extra = futures::future::join_all((1..copies).map(|_| {
            let mut request = client
                .post(url.clone())
                .header("content-type", "application/json");
            for (k, v) in &headers {
                request = request.header(*k, v);
            }
            let body = event.to_string();
            async move {
                request
                    .body(body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        }));
        let (first, others) = futures::join!(webhook(&shared, user, &pi, status, at, &id), extra);
        let (code, _) = first?;
        applied &= code == 200 || others.contains(&200);
    }
    // Late and older: must be ignored, not applied. Only judged when the capture was seen
    // applied: when both earlier events failed (a fault), this one is the first authorization.
    let (code, reply) = webhook(
        &shared,
        user,
        &pi,
        "AUTHORIZED",
        t - chrono::TimeDelta::seconds(5),
        &format!("evt_{}_late", &pi[3..]),
    )
    .await?;
    if applied && code == 200 && reply["status"] == "processed" {
        shared.truth.anomaly(format!(
            "a late AUTHORIZED for {pi} was applied after its capture"
        ));
    }
    shared.truth.settle(
        &d.id,
        if applied {
            Expected::Completed
        } else {
            Expected::Unknown
        },
        Some(pi),
    );
    Ok(())
}

async fn totals(shared: Shared_, user: &mut GooseUser) -> TransactionResult {
    if let Some(c) = pick(&shared) {
        send(
            &shared,
            user,
            Req {
                method: GooseMethod::Get,
                path: &format!("/api/v1/totals/campaigns/{c}"),
                label: "/totals",
                body: None,
                headers: &[],
                expect: Some(200),
            },
        )
        .await?;
    }
    Ok(())
}

async fn history(shared: Shared_, user: &mut GooseUser) -> TransactionResult {
    if let Some(c) = pick(&shared) {
        send(
            &shared,
            user,
            Req {
                method: GooseMethod::Get,
                path: &format!("/api/v1/donations/history?campaign_id={c}&limit=20"),
                label: "/donations/history",
                body: None,
                headers: &[],
                expect: Some(200),
            },
        )
        .await?;
    }
    Ok(())
}
