//! The built-in sandbox payment provider.
//!
//! It shares the platform's database: its records (`sandbox_intents`) and its webhook
//! queue (`sandbox_deliveries`) are written in the caller's transaction, so an intent or refund
//! exists at the provider exactly when it exists on our side. A delivery worker then POSTs the
//! queued webhooks, signed, to the configured URL (by default this server's own endpoint),
//! retrying with exponential back-off and jitter until it gets a 2xx or runs out of attempts.
//! An intent's webhooks go out in the order they were queued: each is held by the one queued
//! before it until the platform has decided on that one (a 2xx, or a 4xx other than 429), so a
//! retried AUTHORIZED (after a 429 or a 5xx) is never overtaken by its CAPTURED, which the
//! platform would reject as an invalid transition. Duplicate, delayed and reordered delivery can be switched on
//! for testing.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt as _;
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use self::store::{DeliveryOutcome, SandboxDelivery, SandboxIntent};
use crate::config::{PaymentSettings, Secret};
use crate::domain::money::Currency;
use crate::domain::payment::PaymentStatus;
use crate::services::payments::provider::{PaymentProvider, ProviderError, ProviderIntent};
use crate::services::payments::signature;
use crate::storage::{Store, StoreError, Tx};

/// Webhooks the sandbox sends at once (to different intents). One at a time, a stress run left
/// it 8,000 deliveries behind the load (docs/LOAD.md).
const DELIVERY_CONCURRENCY: usize = 16;

/// Due webhooks read at once; after a full batch the worker goes again without pausing.
const DELIVERY_BATCH: i64 = 64;

/// What a donor does when confirming a sandbox intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Authorize, then capture.
    Succeed,
    /// Decline.
    Decline,
    /// Authorize only; capture later.
    AuthorizeOnly,
}

impl ConfirmOutcome {
    /// Every outcome.
    pub const ALL: [ConfirmOutcome; 3] = [
        ConfirmOutcome::Succeed,
        ConfirmOutcome::Decline,
        ConfirmOutcome::AuthorizeOnly,
    ];

    /// `succeed`, `decline` or `authorize_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmOutcome::Succeed => "succeed",
            ConfirmOutcome::Decline => "decline",
            ConfirmOutcome::AuthorizeOnly => "authorize_only",
        }
    }

    /// The webhooks a confirmation with this outcome queues, in order.
    fn events(self) -> &'static [PaymentStatus] {
        match self {
            ConfirmOutcome::Succeed => &[PaymentStatus::Authorized, PaymentStatus::Captured],
            ConfirmOutcome::Decline => &[PaymentStatus::Failed],
            ConfirmOutcome::AuthorizeOnly => &[PaymentStatus::Authorized],
        }
    }

    /// Parses `succeed`, `decline` or `authorize_only`.
    pub fn parse(raw: &str) -> Result<ConfirmOutcome, String> {
        match raw {
            "succeed" => Ok(ConfirmOutcome::Succeed),
            "decline" => Ok(ConfirmOutcome::Decline),
            "authorize_only" => Ok(ConfirmOutcome::AuthorizeOnly),
            _ => Err(format!(
                "must be \"succeed\", \"decline\" or \"authorize_only\", got {raw:?}"
            )),
        }
    }
}

/// The built-in sandbox provider.
pub struct Sandbox {
    store: Arc<dyn Store>,
    settings: PaymentSettings,
    secrets: Vec<Secret>,
    webhook_url: String,
    client: reqwest::Client,
    wake: Notify,
}

impl Sandbox {
    /// A sandbox delivering to `webhook_url`, signing with the first of `secrets` (unsigned if
    /// there is none).
    pub fn new(
        store: Arc<dyn Store>,
        settings: PaymentSettings,
        secrets: Vec<Secret>,
        webhook_url: String,
    ) -> Sandbox {
        Sandbox {
            store,
            settings,
            secrets,
            webhook_url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            wake: Notify::new(),
        }
    }

    /// Wakes the delivery worker (after a transaction that queued webhooks committed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Where webhooks go.
    pub fn webhook_url(&self) -> &str {
        &self.webhook_url
    }

    /// Confirms an `INITIATED` intent with an outcome and queues its webhooks, in `tx` (the
    /// caller commits, then calls [`Sandbox::wake`]).
    ///
    /// Confirming is idempotent: the same outcome again changes nothing and answers with the
    /// record as the first confirmation left it (a donor's retry after a lost 202 is not an
    /// error); another outcome is refused, naming the one already given.
    pub async fn confirm(
        &self,
        tx: &mut dyn Tx,
        intent: &str,
        outcome: ConfirmOutcome,
    ) -> Result<SandboxIntent, ProviderError> {
        let record = locked(tx, intent).await?;
        match record.confirmed_outcome.as_deref() {
            Some(earlier) if earlier == outcome.as_str() => Ok(as_confirmed(record, outcome)),
            Some(earlier) => Err(ProviderError::Refused(format!(
                "the intent was already confirmed with outcome {earlier:?}; it cannot be \
                 confirmed again with {:?}",
                outcome.as_str()
            ))),
            None => {
                self.advance(tx, record, &[PaymentStatus::Initiated], Some(outcome))
                    .await
            }
        }
    }

    /// Captures an `AUTHORIZED` intent and queues its webhook.
    pub async fn capture(&self, intent: &str) -> Result<SandboxIntent, ProviderError> {
        let mut tx = self.store.begin().await?;
        let record = locked(tx.as_mut(), intent).await?;
        let record = self
            .advance(tx.as_mut(), record, &[PaymentStatus::Authorized], None)
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(record)
    }

    /// Moves a locked intent from one of `from` through the events of `confirmed` (a
    /// confirmation) or to `CAPTURED` (a capture), and queues their webhooks.
    async fn advance(
        &self,
        tx: &mut dyn Tx,
        mut record: SandboxIntent,
        from: &[PaymentStatus],
        confirmed: Option<ConfirmOutcome>,
    ) -> Result<SandboxIntent, ProviderError> {
        if !from.iter().any(|s| s.as_str() == record.status) {
            return Err(ProviderError::Refused(format!(
                "the sandbox intent is {}; this needs it to be {}",
                record.status,
                from.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let events = confirmed.map_or(&[PaymentStatus::Captured][..], ConfirmOutcome::events);
        let intent = record.payment_intent_id.clone();
        let now = crate::domain::now();
        // Like a real provider's, every event says what amount it concerns.
        let money = json!({"amount_minor": record.amount_minor, "currency": record.currency});
        let bodies: Vec<(String, DateTime<Utc>)> = events
            .iter()
            .enumerate()
            .map(|(i, status)| {
                // Each event a millisecond after the previous one, so their order is known.
                let at = now + TimeDelta::milliseconds(i as i64);
                let data = (*status != PaymentStatus::Failed).then(|| money.clone());
                (webhook_body(&intent, *status, at, data), at)
            })
            .collect();
        if let Some(last) = events.last() {
            record.status = last.as_str().to_string();
            record.status_at = now + TimeDelta::milliseconds(events.len() as i64 - 1);
        }
        if let Some(outcome) = confirmed {
            record.confirmed_outcome = Some(outcome.as_str().to_string());
            record.confirmed_at = Some(now);
        }
        tx.sandbox_update_intent(&record).await?;
        self.enqueue(tx, &intent, bodies).await?;
        Ok(record)
    }

    /// Queues webhooks, applying the configured delay, duplication and reordering.
    async fn enqueue(
        &self,
        tx: &mut dyn Tx,
        intent: &str,
        mut bodies: Vec<(String, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (duplicate, reorder) = {
            let mut rng = rand::rng();
            (
                rng.random_bool(self.settings.sandbox_duplicate_probability),
                bodies.len() > 1 && rng.random_bool(self.settings.sandbox_reorder_probability),
            )
        };
        let delay =
            TimeDelta::milliseconds(i64::try_from(self.settings.sandbox_delay_ms).unwrap_or(0));
        if reorder {
            // Deliver the later event first: swap the delivery times, keep the event times, and
            // enqueue in delivery order (an intent's deliveries go out one at a time, in order).
            let n = bodies.len();
            let first_at = bodies[0].1;
            bodies[0].1 = bodies[n - 1].1 + TimeDelta::milliseconds(1);
            bodies[n - 1].1 = first_at;
            bodies.reverse();
        }
        // The request that caused these events: its trace goes on into their deliveries.
        let traceparent = crate::telemetry::current_traceparent();
        let traceparent = traceparent.as_deref();
        for (body, at) in &bodies {
            tx.sandbox_enqueue(intent, body, *at + delay, traceparent)
                .await?;
            if duplicate {
                tx.sandbox_enqueue(intent, body, *at + delay, traceparent)
                    .await?;
            }
        }
        Ok(())
    }

    /// Delivers (up to a batch of) the webhooks that are due, once, several at a time. Returns
    /// how many were due. Order per intent is safe: an intent's later webhooks are held by its
    /// earlier one (`held_by`), so a batch of due deliveries has at most one per intent.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let due = self
            .store
            .sandbox_due_deliveries(crate::domain::now(), DELIVERY_BATCH)
            .await?;
        let count = due.len();
        let outcomes: Vec<Result<(), StoreError>> = futures::stream::iter(due)
            .map(|delivery| self.deliver(delivery))
            .buffer_unordered(DELIVERY_CONCURRENCY)
            .collect()
            .await;
        outcomes.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    /// Sends one webhook and records the attempt.
    async fn deliver(&self, delivery: SandboxDelivery) -> Result<(), StoreError> {
        let span = tracing::info_span!(
            "sandbox.deliver",
            otel.name = "sandbox webhook delivery",
            otel.kind = "client",
            payment_intent_id = %delivery.payment_intent_id,
            attempt = delivery.attempts + 1,
        );
        crate::telemetry::set_parent(&span, delivery.traceparent.as_deref());
        let body = delivery.body.into_bytes();
        let timestamp = Utc::now().timestamp();
        let mut request = self
            .client
            .post(&self.webhook_url)
            .header("content-type", "application/json");
        if let Some(traceparent) = crate::telemetry::traceparent_of(&span) {
            request = request.header("traceparent", traceparent);
        }
        if let Some(secret) = self.secrets.first() {
            request = request.header(
                signature::HEADER,
                signature::header_value(&[secret.expose()], timestamp, &body),
            );
        }
        let status = match request.body(body).send().instrument(span).await {
            Ok(response) => Some(response.status().as_u16()),
            Err(e) => {
                tracing::debug!(error = %e, "sandbox webhook delivery failed");
                None
            }
        };
        let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let outcome = match status {
            Some(s) if (200..300).contains(&s) => DeliveryOutcome::Delivered,
            _ if attempts >= self.settings.sandbox_max_attempts => {
                tracing::warn!(intent = %delivery.payment_intent_id, ?status, attempts, "sandbox gave a webhook up");
                DeliveryOutcome::GiveUp
            }
            _ => DeliveryOutcome::RetryAt(crate::domain::now() + backoff(attempts)),
        };
        self.store
            .sandbox_delivery_attempted(delivery.id, status, outcome, crate::domain::now())
            .await
    }

    /// Runs the delivery worker until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.settings.sandbox_poll_interval_ms);
        loop {
            match self.deliver_due().await {
                // A full batch: there is likely more due now, so no pause.
                Ok(due) if due as i64 == DELIVERY_BATCH => {
                    if cancel.is_cancelled() {
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox delivery worker cannot reach the database");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// The sandbox's record of an intent, locked for change; refused if there is none.
async fn locked(tx: &mut dyn Tx, intent: &str) -> Result<SandboxIntent, ProviderError> {
    tx.sandbox_intent_for_update(intent)
        .await?
        .ok_or_else(|| ProviderError::Refused(format!("no sandbox intent {intent}")))
}

/// The record as the confirmation with `outcome` left it, whatever happened since (a capture, a
/// refund): what that confirmation answered. Refunds need a capture, so none were made yet.
fn as_confirmed(record: SandboxIntent, outcome: ConfirmOutcome) -> SandboxIntent {
    let events = outcome.events();
    let at = record.confirmed_at.unwrap_or(record.status_at);
    SandboxIntent {
        status: events
            .last()
            .map_or(record.status.clone(), |s| s.as_str().to_string()),
        status_at: at + TimeDelta::milliseconds(events.len() as i64 - 1),
        refunded_minor: 0,
        ..record
    }
}

/// Exponential back-off with full jitter: up to 200 ms × 2^(attempt-1), capped at a minute.
fn backoff(attempt: u32) -> TimeDelta {
    let cap = 200_i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(9))
        .min(60_000);
    TimeDelta::milliseconds(rand::rng().random_range(cap / 2..=cap))
}

/// The body of a sandbox webhook.
fn webhook_body(
    intent: &str,
    status: PaymentStatus,
    at: DateTime<Utc>,
    data: Option<serde_json::Value>,
) -> String {
    let mut body = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "event_type": format!("payment_intent.{}", status.as_str().to_ascii_lowercase()),
        "payment_intent_id": intent,
        "status": status.as_str(),
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if let Some(data) = data {
        body["data"] = data;
    }
    body.to_string()
}

#[async_trait]
impl PaymentProvider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    /// The sandbox also stands in for `stripe`, the gateway the clients of the services
    /// CareForAll replaces send; the intent records `sandbox`, so the answer says who served it.
    fn serves(&self, gateway: &str) -> bool {
        ["sandbox", "stripe"]
            .iter()
            .any(|name| gateway.eq_ignore_ascii_case(name))
    }

    async fn create_intent(
        &self,
        tx: &mut dyn Tx,
        intent: &str,
        amount_minor: i64,
        currency: Currency,
    ) -> Result<(), ProviderError> {
        let now = crate::domain::now();
        tx.sandbox_insert_intent(&SandboxIntent {
            payment_intent_id: intent.to_string(),
            amount_minor,
            currency: currency.code().to_string(),
            status: PaymentStatus::Initiated.as_str().to_string(),
            refunded_minor: 0,
            status_at: now,
            created_at: now,
            confirmed_outcome: None,
            confirmed_at: None,
        })
        .await?;
        Ok(())
    }

    async fn refund(
        &self,
        tx: &mut dyn Tx,
        intent: &str,
        refund_id: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError> {
        let mut record = locked(tx, intent).await?;
        if record.status != PaymentStatus::Captured.as_str() {
            return Err(ProviderError::Refused(format!(
                "the provider holds this intent as {}, not CAPTURED",
                record.status
            )));
        }
        if amount_minor > record.amount_minor - record.refunded_minor {
            return Err(ProviderError::Refused(
                "the provider has less than that left to refund".into(),
            ));
        }
        let now = crate::domain::now();
        record.refunded_minor += amount_minor;
        if record.refunded_minor == record.amount_minor {
            record.status = PaymentStatus::Refunded.as_str().to_string();
        }
        record.status_at = now;
        tx.sandbox_update_intent(&record).await?;
        let currency = Currency::parse(&record.currency).map_err(ProviderError::Refused)?;
        let amount: serde_json::Value = serde_json::from_str(&currency.format_minor(amount_minor))
            .map_err(|e| ProviderError::Refused(e.to_string()))?;
        let body = webhook_body(
            intent,
            PaymentStatus::Refunded,
            now,
            Some(json!({"refund_id": refund_id, "amount": amount})),
        );
        self.enqueue(tx, intent, vec![(body, now)]).await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn fetch(&self, intent: &str) -> Result<Option<ProviderIntent>, ProviderError> {
        let Some(record) = self.store.sandbox_intent(intent).await? else {
            return Ok(None);
        };
        Ok(Some(ProviderIntent {
            status: PaymentStatus::parse(&record.status).map_err(ProviderError::Refused)?,
            status_at: record.status_at,
            refunded_minor: record.refunded_minor,
        }))
    }
}
