//! Each fault's own verdict, taken while the load goes on. Every fault's cycle (baseline and
//! fault) sends its donations to a set of campaigns of its own, and the load moves to the next
//! set when the fault ends; so the cycle's donations and totals stop changing then and can be
//! judged while the recovery's load runs. The watch starts with the cycle and settles each
//! donation as soon as it can (so only what the fault touched is left when the fault ends),
//! then, from the fault's end, looks every half second until the cycle's donations are all
//! settled, its totals exact and there are no dead letters, or until the wait runs out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cfa_cli::client::Client;
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::scenarios::Shared;
use crate::truth::{Donation, Expected};

/// The product's promise: every invariant holds again within this long after a fault ends.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(15);

/// How long a fault's convergence is waited for after its end: the server's claim leases
/// (outbox and notifications, 15 s each) run out in that time after a crash, with margin.
pub const CONVERGE_WAIT: Duration = Duration::from_secs(30);

const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// What one fault left behind, in verdict.json's `faults_outcome`.
#[derive(Clone, Debug, Serialize)]
pub struct FaultOutcome {
    /// The fault, as its requests are named (`redis-blackhole`).
    pub fault: String,
    /// Donations acknowledged (201) in the fault's cycle: its baseline and the fault itself.
    pub acknowledged_donations: usize,
    /// Acknowledged donations the server no longer has.
    pub lost: usize,
    /// Counted more than once: a key that answered a second donation, a payment captured
    /// twice, a second receipt, a campaign total with more donations than were made.
    pub double_counted: usize,
    /// Not settled when the wait ran out: a donation not in the state its payment calls for,
    /// a receipt not sent, a campaign total short of its donations, a dead letter.
    pub stuck: usize,
    /// Seconds from the fault's end until all of the above held (`None`: not within the wait).
    pub converged_seconds_after_fault: Option<f64>,
    /// The promise it is judged against.
    pub converge_limit_seconds: u64,
    /// Answers other than 2xx to requests made during the fault, by status (`no answer`
    /// when the connection failed or timed out).
    pub non_2xx_during_fault: BTreeMap<String, u64>,
    /// What was still wrong at the end (the first few).
    pub failures: Vec<String>,
    /// Nothing lost, double-counted or stuck, and converged within the limit.
    pub ok: bool,
}

/// What one look at a donation found.
#[derive(Clone, Debug)]
enum Look {
    /// In its end state, paid once and receipted once when completed.
    Settled,
    /// An outcome the load cannot know whose payment is neither captured nor declined yet: as
    /// settled as anyone can tell (a journey the load stopped before paying stays so), but
    /// looked at again each round, since a late capture still completes it and then it counts.
    Open,
    /// Not there yet (or the server did not answer).
    Waiting(String),
    /// The server does not have it.
    Lost(String),
    /// Counted twice; nothing will undo it.
    Double(String),
}

/// A donation's state as last seen.
#[derive(Clone, Debug)]
struct Seen {
    look: Look,
    status: Option<String>,
    replayed: bool,
}

/// The watch over one fault's cycle.
pub struct Watch {
    client: Client,
    shared: Arc<Shared>,
    set: usize,
    seen: BTreeMap<String, Seen>,
}

/// What the watch found: the outcome without the fault's name and statuses.
pub struct Found {
    /// Donations of the cycle.
    pub acknowledged: usize,
    /// See [`FaultOutcome`].
    pub lost: usize,
    /// See [`FaultOutcome`].
    pub double_counted: usize,
    /// See [`FaultOutcome`].
    pub stuck: usize,
    /// See [`FaultOutcome`].
    pub converged_after: Option<f64>,
    /// See [`FaultOutcome`].
    pub failures: Vec<String>,
}

impl Watch {
    /// A watch over the donations made to campaign set `set`.
    pub fn new(client: Client, shared: Arc<Shared>, set: usize) -> Watch {
        Watch {
            client,
            shared,
            set,
            seen: BTreeMap::new(),
        }
    }

    /// Watches until the fault's end arrives on `fault_end`, then until the cycle converged
    /// or [`CONVERGE_WAIT`] passed.
    pub async fn run(mut self, mut fault_end: watch::Receiver<Option<Instant>>) -> Found {
        loop {
            self.round().await;
            let end = *fault_end.borrow();
            if let Some(end) = end {
                let (double, stuck, failures) = self.cycle_totals().await;
                let settled = self
                    .seen
                    .values()
                    .all(|s| matches!(s.look, Look::Settled | Look::Open));
                if settled && double == 0 && stuck == 0 {
                    return self.found(Some(end.elapsed().as_secs_f64()), 0, 0, failures);
                }
                if end.elapsed() >= CONVERGE_WAIT {
                    return self.found(None, double, stuck, failures);
                }
            }
            // A fault's end ends the pause early: the first look after it comes at once.
            let closed = tokio::time::timeout(ROUND_PAUSE, fault_end.changed())
                .await
                .is_ok_and(|changed| changed.is_err());
            if closed {
                if end.is_none() {
                    let why = "the load ended before the fault did".to_string();
                    return self.found(None, 0, 0, vec![why]);
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }

    fn found(
        &self,
        converged_after: Option<f64>,
        double: usize,
        stuck: usize,
        mut failures: Vec<String>,
    ) -> Found {
        let mut found = Found {
            acknowledged: self.seen.len(),
            lost: 0,
            double_counted: double,
            stuck,
            converged_after,
            failures: Vec::new(),
        };
        for seen in self.seen.values() {
            match &seen.look {
                Look::Settled | Look::Open => {}
                Look::Waiting(why) => {
                    found.stuck += 1;
                    failures.push(why.clone());
                }
                Look::Lost(why) => {
                    found.lost += 1;
                    failures.push(why.clone());
                }
                Look::Double(why) => {
                    found.double_counted += 1;
                    failures.push(why.clone());
                }
            }
        }
        found.failures = failures.into_iter().take(10).collect();
        found
    }

    fn cycle(&self) -> (Vec<String>, Vec<Donation>) {
        let campaigns = self.shared.campaigns_of(self.set);
        let (_, donations, _) = self.shared.truth.snapshot();
        let donations = donations
            .into_iter()
            .filter(|d| campaigns.contains(&d.campaign))
            .collect();
        (campaigns, donations)
    }

    /// Looks at every donation of the cycle not settled yet.
    async fn round(&mut self) {
        let (_, donations) = self.cycle();
        let todo: Vec<(Donation, bool)> = donations
            .into_iter()
            .filter_map(|d| match self.seen.get(&d.id) {
                Some(Seen {
                    look: Look::Settled | Look::Double(_),
                    ..
                }) => None,
                // Looked at again each round: its status decides whether the totals count it.
                Some(s) => Some((d, s.replayed)),
                None => Some((d, false)),
            })
            .collect();
        let client = &self.client;
        let looked: Vec<(String, Seen)> = futures::stream::iter(todo)
            .map(|(d, replayed)| async move { (d.id.clone(), look(client, &d, replayed).await) })
            .buffer_unordered(16)
            .collect()
            .await;
        self.seen.extend(looked);
    }

    /// The cycle's campaign totals against its donations, and the dead letters: donations
    /// counted twice, donations missing (or a dead letter), and what is wrong.
    async fn cycle_totals(&self) -> (usize, usize, Vec<String>) {
        let (campaigns, donations) = self.cycle();
        let (mut double, mut stuck, mut failures) = (0, 0, Vec::new());
        for c in &campaigns {
            let counted: Vec<&Donation> = donations
                .iter()
                .filter(|d| &d.campaign == c && self.counts(d))
                .collect();
            let want = counted.len() as u64;
            let cents: i64 = counted.iter().map(|d| d.amount_minor).sum();
            let Ok(t) = get(&self.client, &format!("/api/v1/totals/campaigns/{c}")).await else {
                stuck += 1;
                failures.push(format!("campaign {c}: no totals"));
                continue;
            };
            let got = t["total_donations"].as_u64().unwrap_or(0);
            let amount = crate::invariants::minor(&t["total_amount"]);
            if got != want || amount != Some(cents) {
                failures.push(format!(
                    "campaign {c}: {} in {got} donations, expected {}.{:02} in {want}",
                    t["total_amount"],
                    cents / 100,
                    cents % 100
                ));
                match got.cmp(&want) {
                    std::cmp::Ordering::Greater => double += (got - want) as usize,
                    std::cmp::Ordering::Less => stuck += (want - got) as usize,
                    std::cmp::Ordering::Equal => stuck += 1,
                }
            }
        }
        match get(&self.client, "/api/v1/admin/dead-letters").await {
            Ok(d) => {
                for dead in d.as_array().into_iter().flatten() {
                    stuck += 1;
                    failures.push(format!(
                        "dead letter {} ({}): {}",
                        dead["id"], dead["event_type"], dead["last_error"]
                    ));
                }
            }
            Err(e) => {
                stuck += 1;
                failures.push(format!("dead letters: {e}"));
            }
        }
        (double, stuck, failures)
    }

    /// Whether a donation counts in its campaign's totals: paid, or, when the load cannot
    /// know, completed as the server last showed it.
    fn counts(&self, d: &Donation) -> bool {
        match d.expected {
            Expected::Completed => true,
            Expected::Failed => false,
            Expected::Unknown => self
                .seen
                .get(&d.id)
                .is_some_and(|s| s.status.as_deref() == Some("COMPLETED")),
        }
    }
}

async fn get(client: &Client, path: &str) -> Result<Value, String> {
    match client.send(Method::GET, path, None, &[]).await {
        Ok(r) if r.status == 200 => Ok(r.body),
        Ok(r) => Err(format!("{path}: HTTP {}", r.status)),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// One look at a donation: it exists, its key answers it, it is in the state its payment
/// calls for, and, completed, it was captured once and receipted once.
async fn look(client: &Client, d: &Donation, replayed: bool) -> Seen {
    let waiting = |status: Option<String>, why: String, replayed| Seen {
        look: Look::Waiting(why),
        status,
        replayed,
    };
    let path = format!("/api/v1/donations/{}", d.id);
    let body = match client.send(Method::GET, &path, None, &[]).await {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) if r.status == 404 => {
            return Seen {
                look: Look::Lost(format!("donation {} acknowledged, now 404", d.id)),
                status: None,
                replayed,
            };
        }
        Ok(r) => {
            return waiting(
                None,
                format!("donation {}: HTTP {}", d.id, r.status),
                replayed,
            );
        }
        Err(e) => return waiting(None, format!("donation {}: {e}", d.id), replayed),
    };
    let status = body["status"].as_str().unwrap_or_default().to_string();
    if !replayed {
        let headers = [("idempotency-key", d.key.clone())];
        let reply = client
            .send(Method::POST, "/api/v1/donations", Some(&d.body), &headers)
            .await;
        match reply {
            Ok(r) if r.body["id"].as_str() == Some(d.id.as_str()) => {}
            Ok(r) if r.status == 201 || r.status == 200 => {
                return Seen {
                    look: Look::Double(format!(
                        "key {} answered donation {}, first {}",
                        d.key, r.body["id"], d.id
                    )),
                    status: Some(status),
                    replayed: true,
                };
            }
            Ok(r) => {
                return waiting(
                    Some(status),
                    format!("key {}: HTTP {}", d.key, r.status),
                    false,
                );
            }
            Err(e) => return waiting(Some(status), format!("key {}: {e}", d.key), false),
        }
    }
    let look = settled(client, d, &body, &status).await;
    Seen {
        look,
        status: Some(status),
        replayed: true,
    }
}

/// Whether a donation the server has is where it must end.
async fn settled(client: &Client, d: &Donation, body: &Value, status: &str) -> Look {
    let intent = d
        .intent
        .clone()
        .or_else(|| body["payment_intent_id"].as_str().map(str::to_string));
    let want = match d.expected {
        Expected::Completed => "COMPLETED",
        Expected::Failed => "FAILED",
        // The load cannot know (a request failed midway, or it stopped before paying): the
        // payment, when there is one, says. One never captured nor declined stays as it is.
        Expected::Unknown => {
            let Some(pi) = &intent else {
                return Look::Open;
            };
            match get(client, &format!("/api/v1/payments/{pi}")).await {
                Ok(p) if p["status"] == "CAPTURED" => "COMPLETED",
                Ok(p) if p["status"] == "FAILED" => "FAILED",
                Ok(_) => return Look::Open,
                Err(e) => return Look::Waiting(format!("payment {pi}: {e}")),
            }
        }
    };
    if status != want {
        return Look::Waiting(format!("donation {} is {status}, expected {want}", d.id));
    }
    match (status, intent) {
        ("COMPLETED", Some(pi)) => paid_once(client, &d.id, &pi).await,
        ("COMPLETED", None) => {
            Look::Waiting(format!("donation {} completed without a payment", d.id))
        }
        _ => Look::Settled,
    }
}

/// A completed donation: its payment captured once (versions matching the transitions) and
/// one receipt sent.
async fn paid_once(client: &Client, id: &str, pi: &str) -> Look {
    let history = match get(client, &format!("/api/v1/payments/{pi}/history")).await {
        Ok(h) => h,
        Err(e) => return Look::Waiting(format!("payment {pi}: {e}")),
    };
    let payment = match get(client, &format!("/api/v1/payments/{pi}")).await {
        Ok(p) => p,
        Err(e) => return Look::Waiting(format!("payment {pi}: {e}")),
    };
    let transitions = history["transitions"].as_array().map_or(0, Vec::len);
    let captures = history["transitions"]
        .as_array()
        .map_or(0, |t| t.iter().filter(|t| t["to"] == "CAPTURED").count());
    if captures > 1 {
        return Look::Double(format!("payment {pi} captured {captures} times"));
    }
    let version = payment["version"].as_u64().unwrap_or(0);
    if captures == 0 || version != transitions as u64 + 1 {
        return Look::Waiting(format!(
            "payment {pi}: {captures} captures, version {version} after {transitions} transitions"
        ));
    }
    let receipts = match get(client, &format!("/api/v1/notifications?donation_id={id}")).await {
        Ok(list) => list.as_array().map_or(0, |l| {
            l.iter()
                .filter(|n| n["kind"] == "receipt" && n["status"] == "SENT")
                .count()
        }),
        Err(e) => return Look::Waiting(format!("donation {id} receipts: {e}")),
    };
    match receipts {
        1 => Look::Settled,
        0 => Look::Waiting(format!("donation {id}: no receipt sent")),
        n => Look::Double(format!("donation {id}: {n} receipts sent")),
    }
}
