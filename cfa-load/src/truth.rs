//! Ground truth: what the server acknowledged during the run, so the invariant check knows what
//! its state must be at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// What a donation must end as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expected {
    /// Paid: captured, counted, receipted.
    Completed,
    /// Declined: failed, not counted.
    Failed,
    /// The run cannot know: it left it unpaid, or a request failed midway (a 503 during a
    /// fault may come after the server committed). The server's own final state is taken, and
    /// must still be consistent (counted in totals exactly when COMPLETED, receipted once).
    Unknown,
}

/// One acknowledged donation.
#[derive(Clone, Debug, Serialize)]
pub struct Donation {
    /// Its id, from the 201.
    pub id: String,
    /// The idempotency key it was created with.
    pub key: String,
    /// The exact request body (for replaying the key).
    pub body: Value,
    /// Its campaign.
    pub campaign: String,
    /// Amount in cents.
    pub amount_minor: i64,
    /// What it must end as.
    pub expected: Expected,
    /// Its payment intent, once one was created.
    pub intent: Option<String>,
}

/// Everything recorded.
#[derive(Debug, Default, Serialize)]
pub struct Record {
    /// Campaign ids the run created.
    pub campaigns: Vec<String>,
    /// Donations by id.
    pub donations: BTreeMap<String, Donation>,
    /// Things that went wrong during the run itself (a replay answering another id, …).
    pub anomalies: Vec<String>,
}

/// The ground truth, shared by every simulated user.
#[derive(Debug, Default)]
pub struct Truth(Mutex<Record>);

impl Truth {
    fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a campaign the run created.
    pub fn campaign(&self, id: String) {
        self.with(|r| r.campaigns.push(id));
    }

    /// The run's campaigns.
    pub fn campaigns(&self) -> Vec<String> {
        self.with(|r| r.campaigns.clone())
    }

    /// Records an acknowledged donation.
    pub fn donation(&self, donation: Donation) {
        self.with(|r| r.donations.insert(donation.id.clone(), donation));
    }

    /// Updates what a donation must end as, and its intent.
    pub fn settle(&self, id: &str, expected: Expected, intent: Option<String>) {
        self.with(|r| {
            if let Some(d) = r.donations.get_mut(id) {
                d.expected = expected;
                if intent.is_some() {
                    d.intent = intent;
                }
            }
        });
    }

    /// Records something that broke a promise while it happened.
    pub fn anomaly(&self, what: String) {
        self.with(|r| r.anomalies.push(what));
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> (Vec<String>, Vec<Donation>, Vec<String>) {
        self.with(|r| {
            (
                r.campaigns.clone(),
                r.donations.values().cloned().collect(),
                r.anomalies.clone(),
            )
        })
    }
}
