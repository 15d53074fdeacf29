//! The verdict on the platform's promises, compared with the ground truth the load recorded:
//! checked until every invariant holds or a convergence deadline passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cfa_cli::client::Client;
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::truth::{Donation, Expected};

/// One invariant's result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// How many things it looked at.
    pub checked: usize,
    /// What breaks it (the first few).
    pub failures: Vec<String>,
}

/// Every invariant, and how long they took to hold.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether all hold.
    pub ok: bool,
    /// Each invariant, at the last look.
    pub checks: Vec<Check>,
    /// Seconds from the start of the check until all held (`None` if they never did).
    pub converged_after_seconds: Option<f64>,
    /// Looks taken.
    pub rounds: usize,
}

fn check(name: &str, checked: usize, failures: Vec<String>) -> Check {
    Check {
        name: name.into(),
        ok: failures.is_empty(),
        checked,
        failures: failures.into_iter().take(10).collect(),
    }
}

pub(crate) fn minor(amount: &Value) -> Option<i64> {
    let text = match amount {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + frac[..2].parse::<i64>().ok()?)
}

/// The checker is a client like any other: every look it takes waits out the server's rate
/// limit (a 429 is retried after a pause, up to 20 times) rather than counting as a failure.
async fn patient(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> Result<cfa_cli::client::Reply, String> {
    for attempt in 0..20 {
        match client.send(method.clone(), path, body, headers).await {
            Ok(r) if r.status == 429 => {
                tokio::time::sleep(Duration::from_millis(250 * (attempt + 1).min(4))).await;
            }
            Ok(r) => return Ok(r),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("still rate limited (429) after 20 tries".into())
}

async fn get(client: &Client, path: &str) -> Result<Value, String> {
    let reply = patient(client, Method::GET, path, None, &[]).await?;
    client.check(reply).map_err(|e| e.to_string())
}

/// One look at everything.
pub async fn check_once(
    client: &Client,
    campaigns: &[String],
    donations: &[Donation],
    anomalies: &[String],
) -> Vec<Check> {
    let mut checks = Vec::new();
    // Each acknowledged donation exists, in the state its payment outcome calls for.
    let states: Vec<(String, Result<Value, String>)> = futures::stream::iter(donations.iter())
        .map(|d| async move {
            let path = format!("/api/v1/donations/{}", d.id);
            let result = match patient(client, Method::GET, &path, None, &[]).await {
                Ok(r) if r.status == 200 => Ok(r.body),
                Ok(r) => Err(format!("HTTP {}", r.status)),
                Err(e) => Err(e),
            };
            (d.id.clone(), result)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let by_id: BTreeMap<String, Result<Value, String>> = states.into_iter().collect();
    let lost: Vec<String> = by_id
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("donation {id}: {e}")))
        .collect();
    checks.push(check(
        "no acknowledged donation lost",
        donations.len(),
        lost,
    ));
    let wrong: Vec<String> = donations
        .iter()
        .filter_map(|d| {
            let body = by_id.get(&d.id)?.as_ref().ok()?;
            let want = match d.expected {
                Expected::Completed => "COMPLETED",
                Expected::Failed => "FAILED",
                Expected::Unknown => return None,
            };
            (body["status"] != want)
                .then(|| format!("donation {} is {}, expected {want}", d.id, body["status"]))
        })
        .collect();
    checks.push(check(
        "each donation settled as its payment did",
        donations.len(),
        wrong,
    ));

    // Each idempotency key: replaying it answers the same donation.
    let replays: Vec<String> = futures::stream::iter(donations.iter())
        .map(|d| async move {
            let headers = [("idempotency-key", d.key.clone())];
            match patient(
                client,
                Method::POST,
                "/api/v1/donations",
                Some(&d.body),
                &headers,
            )
            .await
            {
                Ok(r) if r.body["id"].as_str() == Some(d.id.as_str()) => None,
                Ok(r) => Some(format!(
                    "key {} answered {} ({})",
                    d.key, r.body["id"], r.status
                )),
                Err(e) => Some(format!("key {}: {e}", d.key)),
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    checks.push(check(
        "each idempotency key produced exactly one donation",
        donations.len(),
        replays,
    ));

    // Totals equal the ground truth to the cent. A donation whose outcome the load could not
    // know (a request failed midway through a fault) counts as the server settled it; the checks
    // above made sure the known ones match.
    let counts = |d: &Donation| match d.expected {
        Expected::Completed => true,
        Expected::Failed => false,
        Expected::Unknown => by_id
            .get(&d.id)
            .and_then(|r| r.as_ref().ok())
            .is_some_and(|b| b["status"] == "COMPLETED"),
    };
    let mut totals_wrong = Vec::new();
    for c in campaigns {
        let expected: i64 = donations
            .iter()
            .filter(|d| &d.campaign == c && counts(d))
            .map(|d| d.amount_minor)
            .sum();
        let count = donations
            .iter()
            .filter(|d| &d.campaign == c && counts(d))
            .count();
        match get(client, &format!("/api/v1/totals/campaigns/{c}")).await {
            Ok(t) => {
                let got = minor(&t["total_amount"]);
                if got != Some(expected) || t["total_donations"].as_u64() != Some(count as u64) {
                    totals_wrong.push(format!(
                        "campaign {c}: {} in {} donations, expected {}.{:02} in {count}",
                        t["total_amount"],
                        t["total_donations"],
                        expected / 100,
                        expected % 100
                    ));
                }
            }
            Err(e) => totals_wrong.push(format!("campaign {c}: {e}")),
        }
    }
    checks.push(check(
        "totals equal the ground truth to the cent",
        campaigns.len(),
        totals_wrong,
    ));

    // Payments: captured once, versions consistent with the transitions applied.
    let paid: Vec<&Donation> = donations.iter().filter(|d| counts(d)).collect();
    let payment_failures: Vec<String> = futures::stream::iter(paid.iter())
        .map(|d| {
            // The intent the load saw, else the one the server recorded.
            let known = by_id.get(&d.id).and_then(|r| r.as_ref().ok());
            d.intent
                .clone()
                .or_else(|| known.and_then(|b| b["payment_intent_id"].as_str().map(str::to_string)))
        })
        .map(|pi| async move {
            let pi = pi?;
            let pi = pi.as_str();
            let history = match get(client, &format!("/api/v1/payments/{pi}/history")).await {
                Ok(h) => h,
                Err(e) => return Some(format!("payment {pi}: {e}")),
            };
            let payment = get(client, &format!("/api/v1/payments/{pi}")).await.ok()?;
            let transitions = history["transitions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let captures = transitions.iter().filter(|t| t["to"] == "CAPTURED").count();
            let version = payment["version"].as_u64().unwrap_or(0);
            if captures != 1 {
                return Some(format!("payment {pi} captured {captures} times"));
            }
            if version != transitions.len() as u64 + 1 {
                return Some(format!(
                    "payment {pi} is at version {version} after {} transitions",
                    transitions.len()
                ));
            }
            None
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    checks.push(check(
        "no payment captured twice; versions match the transitions",
        paid.len(),
        payment_failures,
    ));

    // One receipt per completed donation.
    let receipt_failures: Vec<String> = futures::stream::iter(paid.iter())
        .map(|d| async move {
            match get(
                client,
                &format!("/api/v1/notifications?donation_id={}", d.id),
            )
            .await
            {
                Ok(list) => {
                    let receipts = list
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter(|n| n["kind"] == "receipt" && n["status"] == "SENT")
                                .count()
                        })
                        .unwrap_or(0);
                    (receipts != 1)
                        .then(|| format!("donation {} has {receipts} receipts sent", d.id))
                }
                Err(e) => Some(format!("donation {}: {e}", d.id)),
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    checks.push(check(
        "one receipt per completed donation",
        paid.len(),
        receipt_failures,
    ));

    // The outbox drained; no dead letters.
    let mut outbox = Vec::new();
    match get(client, "/api/v1/admin/outbox").await {
        Ok(o) if o["pending"].as_i64() == Some(0) => {}
        Ok(o) => outbox.push(format!("{} events still pending", o["pending"])),
        Err(e) => outbox.push(format!("outbox status: {e}")),
    }
    match get(client, "/api/v1/admin/dead-letters").await {
        Ok(d) => {
            for dead in d.as_array().into_iter().flatten() {
                outbox.push(format!(
                    "dead letter {} ({}): {}",
                    dead["id"], dead["event_type"], dead["last_error"]
                ));
            }
        }
        Err(e) => outbox.push(format!("dead letters: {e}")),
    }
    checks.push(check("outbox drained and no dead letters", 1, outbox));
    checks.push(check(
        "no anomaly seen during the run",
        anomalies.len(),
        anomalies.to_vec(),
    ));
    checks
}

/// Looks until every invariant holds or `deadline` passes.
pub async fn verify(
    client: &Client,
    campaigns: &[String],
    donations: &[Donation],
    anomalies: &[String],
    deadline: Duration,
) -> Report {
    let start = Instant::now();
    let mut rounds = 0;
    // The full look costs several requests per donation: first wait, cheaply, for the platform
    // to finish its backlog (an empty outbox), then look at everything.
    while start.elapsed() < deadline {
        match get(client, "/api/v1/admin/outbox").await {
            Ok(o) if o["pending"].as_i64() == Some(0) => break,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    loop {
        rounds += 1;
        let checks = check_once(client, campaigns, donations, anomalies).await;
        let ok = checks.iter().all(|c| c.ok);
        if ok || start.elapsed() >= deadline {
            return Report {
                ok,
                converged_after_seconds: ok.then(|| start.elapsed().as_secs_f64()),
                checks,
                rounds,
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_to_the_cent() {
        assert_eq!(minor(&serde_json::json!(12.34)), Some(1234));
        assert_eq!(minor(&serde_json::json!(12.3)), Some(1230));
        assert_eq!(minor(&serde_json::json!(7)), Some(700));
        assert_eq!(minor(&serde_json::json!("0.05")), Some(5));
    }
}
