//! The intake of provider webhooks (SPEC §4): verify the signature, deduplicate, apply the event
//! to its payment and store the outcome with the request, all in one transaction, so that any
//! redelivery gets the first answer back byte for byte and concurrent deliveries apply it once.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Applied, apply_event, signature};
use crate::config::Secret;
use crate::domain::money::MAX_DONATION_MAJOR;
use crate::domain::payment::{Payment, PaymentStatus, ProviderEvent, parse_timestamp};
use crate::storage::{Store, StoreError, Tx, WebhookRecord};
use crate::wire::{self, JsonError};

/// A webhook event from the payment provider, as the provider sends it.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = WebhookEvent)]
pub struct WebhookEvent {
    /// Informational; `status` names the target state.
    #[allow(dead_code)] // informational (SPEC §2); the status names the target state
    #[schema(example = "payment.captured")]
    event_type: Option<String>,
    #[schema(example = "pi_3b0c6c0e4f2a4b8e9d1f2a3b4c5d6e7f")]
    payment_intent_id: String,
    /// The target state: `AUTHORIZED`, `CAPTURED`, `FAILED` or `REFUNDED`.
    #[schema(example = "CAPTURED")]
    status: String,
    /// When the provider made the event: RFC 3339 (`2026-11-26T10:00:00Z`, an offset, or naive
    /// and read as UTC), or Unix seconds.
    #[schema(value_type = String, example = "2026-11-26T10:00:00Z")]
    timestamp: Value,
    /// The event id (signed with the body); deduplicates deliveries of one event.
    id: Option<String>,
    /// For `REFUNDED`: `{refund_id, amount}` (or `amount_minor`).
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// How deliveries are authenticated.
#[derive(Clone)]
pub struct Verifier {
    /// The secrets a signature may be made with (several during a rotation).
    pub secrets: Arc<Vec<Secret>>,
    /// Whether a delivery without a signature header is accepted.
    pub allow_unsigned: bool,
    /// How far a signature's timestamp may be from now.
    pub tolerance_seconds: i64,
}

/// One delivery as received.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The `CFA-Signature` header, if any.
    pub signature: Option<&'a str>,
    /// The `X-Idempotency-Key` header, if any.
    pub idempotency_key: Option<&'a str>,
    /// The raw body (the signature covers it byte for byte).
    pub body: &'a [u8],
}

/// The answer to a delivery: stored with the first one, the same for every redelivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Whether this is the stored answer of an earlier delivery.
    pub replayed: bool,
    /// Whether the event moved its payment (so the outbox has a new event).
    pub processed: bool,
    /// The payment this event was *ahead* of (a capture before its authorization): rejected,
    /// but the provider already knows more than we do, so the payment should be reconciled now
    /// ([`super::Reconciler::reconcile_soon`]) rather than after the reconciliation deadline.
    pub reconcile: Option<Uuid>,
}

/// Why a delivery got no stored answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signature is missing, wrong or stale; nothing is stored.
    #[error("{0}")]
    InvalidSignature(String),
    /// No delivery is stored under this key.
    #[error("no webhook delivery {0}")]
    UnknownDelivery(String),
    /// The delivery was stored without its request, so it cannot be applied again.
    #[error("webhook delivery {0} was received before requests were kept; it cannot be replayed")]
    NotReplayable(String),
    /// The same event is being processed by another request.
    #[error("the same webhook is being processed; retry")]
    InFlight,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Receives one delivery: checks its signature, answers a known one from its stored outcome,
/// applies a new one.
pub async fn receive(
    store: &dyn Store,
    verifier: &Verifier,
    delivery: Delivery<'_>,
) -> Result<Reply, WebhookError> {
    if !(verifier.allow_unsigned && delivery.signature.is_none()) {
        let now = Utc::now().timestamp();
        let secrets = verifier.secrets.as_slice();
        let checked = signature::verify(
            delivery.signature,
            delivery.body,
            secrets,
            now,
            verifier.tolerance_seconds,
        );
        if let Err(e) = checked {
            tracing::warn!(reason = %e, "webhook refused: bad signature");
            crate::metrics::webhook("invalid_signature", false);
            return Err(WebhookError::InvalidSignature(e.to_string()));
        }
    }
    let dedup_key = dedup_key(delivery.idempotency_key, delivery.body);
    if let Some(saved) = store.webhook_record(&dedup_key).await? {
        crate::metrics::webhook(&saved.outcome, true);
        return Ok(stored(saved));
    }
    apply(store, dedup_key, delivery.body, None).await
}

/// The signed event id, else the SHA-256 of the (signed) body. `X-Idempotency-Key` is not
/// covered by the signature, so it never decides: one that differs from the event id is ignored,
/// and a forged header cannot make a new event look like a delivered one.
fn dedup_key(idempotency_key: Option<&str>, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v["id"].as_str()) {
        Some(id) if !id.is_empty() && id.len() <= 255 => {
            if let Some(key) = idempotency_key.map(str::trim)
                && key != id
            {
                tracing::warn!(header = %key, event_id = %id, "X-Idempotency-Key differs from the signed event id; the event id decides");
            }
            format!("event:{id}")
        }
        _ => format!("sha256:{}", hex::encode(Sha256::digest(body))),
    }
}

fn stored(saved: WebhookRecord) -> Reply {
    Reply {
        status: saved.status_code,
        body: saved.body,
        replayed: true,
        processed: false,
        reconcile: None,
    }
}

/// An operator's replay of a stored delivery: its request is applied again under a fresh key, so
/// the outcome is recorded beside the original's, which stays as it was.
pub async fn replay(store: &dyn Store, id: &str) -> Result<Reply, WebhookError> {
    let record = store
        .webhook_record(id)
        .await?
        .ok_or_else(|| WebhookError::UnknownDelivery(id.to_string()))?;
    if record.request.is_empty() {
        return Err(WebhookError::NotReplayable(id.to_string()));
    }
    let key = format!("replay:{id}:{}", uuid::Uuid::new_v4());
    tracing::info!(%id, replay = %key, "webhook replayed by an operator");
    apply(store, key, &record.request, Some(id.to_string())).await
}

/// Claims `dedup_key`, applies the event in `body` and stores the outcome with the request, all
/// in one transaction. Deliveries and an operator's replays (`replay_of`) both come here.
pub async fn apply(
    store: &dyn Store,
    dedup_key: String,
    body: &[u8],
    replay_of: Option<String>,
) -> Result<Reply, WebhookError> {
    let started = std::time::Instant::now();
    let mut tx = store.begin().await?;
    let now = crate::domain::now();
    if !tx.claim_webhook(&dedup_key, now).await? {
        // On SQLite the claim may be an earlier transaction's of the same group commit: the
        // roll-back returns once that one is committed, so the record is there to read.
        tx.rollback().await?;
        let saved = store.webhook_record(&dedup_key).await?;
        let saved = saved.ok_or(WebhookError::InFlight)?;
        crate::metrics::webhook(&saved.outcome, true);
        return Ok(stored(saved));
    }
    let (intent, event_id, outcome) = process(tx.as_mut(), body).await?;
    let response_body = serde_json::to_vec(&outcome.body)
        .map_err(|e| StoreError::Other(format!("serialising a webhook outcome: {e}")))?;
    tx.complete_webhook(&WebhookRecord {
        dedup_key,
        payment_intent_id: intent,
        event_id,
        outcome: outcome.label.to_string(),
        status_code: outcome.status,
        body: response_body.clone(),
        received_at: now,
        request: body.to_vec(),
        replay_of,
    })
    .await?;
    tx.commit().await?;
    crate::metrics::webhook(outcome.label, false);
    crate::metrics::payment_processing(started.elapsed().as_secs_f64());
    if let Some((status, gateway)) = &outcome.moved {
        crate::metrics::payment(*status, gateway);
    }
    Ok(Reply {
        status: outcome.status,
        body: response_body,
        replayed: false,
        processed: outcome.label == "processed",
        reconcile: outcome.ahead_of,
    })
}

/// An outcome to store and send.
struct Outcome {
    status: u16,
    label: &'static str,
    body: Value,
    /// The status a processed event moved its payment to, and the payment's gateway.
    moved: Option<(PaymentStatus, String)>,
    /// The payment a rejected event was ahead of.
    ahead_of: Option<Uuid>,
}

fn rejected(status: u16, reason: &str, code: &str, detail: String, extra: Value) -> Outcome {
    let mut body = json!({"status": "rejected", "reason": reason, "code": code, "detail": detail});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    Outcome {
        status,
        label: if status == 404 {
            "not_found"
        } else {
            "rejected"
        },
        body,
        moved: None,
        ahead_of: None,
    }
}

/// A 400 for a body that is not a webhook event, naming the field when there is one.
fn malformed(detail: String, field: Option<&str>) -> Outcome {
    rejected(
        400,
        "malformed",
        "malformed_webhook",
        detail,
        json!({ "field": field }),
    )
}

/// The intent and event id a delivery named, and what became of it.
type Processed = (Option<String>, Option<String>, Outcome);

/// Reads and applies one webhook inside its transaction.
async fn process(tx: &mut dyn Tx, body: &[u8]) -> Result<Processed, StoreError> {
    let event: WebhookEvent = match wire::object(body) {
        Ok(event) => event,
        Err(JsonError::Field { field, message }) => {
            return Ok((None, None, malformed(message, Some(&field))));
        }
        Err(e @ JsonError::Malformed(_)) => {
            let detail = format!("request body is not valid JSON: {e}");
            return Ok((None, None, malformed(detail, None)));
        }
    };
    let intent = Some(event.payment_intent_id.clone());
    let event_id = event.id.clone();
    let outcome = match read(&event, body) {
        Err(outcome) => outcome,
        Ok(provider_event) => match tx
            .payment_for_update_by_intent(&event.payment_intent_id)
            .await?
        {
            None => rejected(
                404,
                "unknown_payment_intent",
                "not_found",
                format!("no payment has intent {}", event.payment_intent_id),
                json!({"payment_intent_id": event.payment_intent_id}),
            ),
            Some(payment) => match with_refund(provider_event, &event, &payment)
                .and_then(|e| same_money(e, &event, &payment))
            {
                Err(outcome) => outcome,
                Ok(provider_event) => {
                    let status = provider_event.status;
                    outcome_of(apply_event(tx, payment, &provider_event).await?, status)
                }
            },
        },
    };
    Ok((intent, event_id, outcome))
}

/// The provider event a webhook names (its refund is read once the payment is known).
fn read(event: &WebhookEvent, body: &[u8]) -> Result<ProviderEvent, Outcome> {
    let status = PaymentStatus::parse(&event.status)
        .map_err(|m| malformed(format!("status: {m}"), Some("status")))?;
    let at = parse_timestamp(&event.timestamp)
        .and_then(within_window)
        .map_err(|m| malformed(format!("timestamp: {m}"), Some("timestamp")))?;
    let event_id = event
        .id
        .clone()
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(body))));
    Ok(ProviderEvent {
        event_id,
        status,
        at,
        refund: None,
    })
}

/// How far ahead of our clock an event may be: a provider's clock may run a little fast, but an
/// event from the future would hold back every later event as out of order.
const FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);

/// Refuses event times no provider makes: before 2000, or more than [`FUTURE_SKEW`] ahead.
fn within_window(at: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let earliest = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or(DateTime::UNIX_EPOCH);
    if at < earliest {
        return Err("is before 2000-01-01".into());
    }
    if at > Utc::now() + FUTURE_SKEW {
        return Err(format!(
            "is more than {} minutes in the future",
            FUTURE_SKEW.num_minutes()
        ));
    }
    Ok(at)
}

/// A `REFUNDED` event's refund id and amount, read in the payment's currency.
fn with_refund(
    mut provider_event: ProviderEvent,
    event: &WebhookEvent,
    payment: &Payment,
) -> Result<ProviderEvent, Outcome> {
    if provider_event.status != PaymentStatus::Refunded {
        return Ok(provider_event);
    }
    let data = event.data.clone().unwrap_or(Value::Null);
    let refund_id = match data["refund_id"].as_str().map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= 255 => id.to_string(),
        _ => {
            let detail = "data.refund_id: a REFUNDED event must name its refund".to_string();
            return Err(malformed(detail, Some("data.refund_id")));
        }
    };
    let amount = match (&data["amount_minor"], &data["amount"]) {
        (Value::Number(n), _) => n
            .as_i64()
            .filter(|a| *a > 0)
            .ok_or_else(|| "must be a positive integer".to_string()),
        (Value::Null, Value::Number(n)) => payment
            .currency
            .parse_amount(&n.to_string(), MAX_DONATION_MAJOR)
            .map_err(|e| e.to_string()),
        _ => Err("data.amount is required (a decimal number)".to_string()),
    }
    .map_err(|m| malformed(format!("data.amount: {m}"), Some("data.amount")))?;
    provider_event.refund = Some((refund_id, Some(amount)));
    Ok(provider_event)
}

/// An `AUTHORIZED` or `CAPTURED` event that names an amount or a currency must name the
/// payment's: a capture of 0.01 JPY does not pay a 10.00 USD intent.
fn same_money(
    provider_event: ProviderEvent,
    event: &WebhookEvent,
    payment: &Payment,
) -> Result<ProviderEvent, Outcome> {
    if !matches!(
        provider_event.status,
        PaymentStatus::Authorized | PaymentStatus::Captured
    ) {
        return Ok(provider_event);
    }
    let data = event.data.clone().unwrap_or(Value::Null);
    let mismatch = |detail: String, field: &str| {
        let mut extra = current(payment);
        extra["field"] = json!(field);
        rejected(400, "amount_mismatch", "amount_mismatch", detail, extra)
    };
    if let Some(currency) = data["currency"].as_str()
        && !currency.eq_ignore_ascii_case(payment.currency.code())
    {
        let detail = format!("the payment is in {}, not {currency}", payment.currency);
        return Err(mismatch(detail, "data.currency"));
    }
    let amount = match (&data["amount_minor"], &data["amount"]) {
        (Value::Number(n), _) => Some(n.as_i64().ok_or("must be an integer".to_string())),
        (Value::Null, Value::Number(n)) => Some(
            payment
                .currency
                .parse_amount(&n.to_string(), MAX_DONATION_MAJOR)
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    };
    match amount {
        Some(Ok(minor)) if minor != payment.amount_minor => {
            let c = payment.currency;
            let detail = format!(
                "the payment is for {} {c}, not {} {c}",
                c.format_minor(payment.amount_minor),
                c.format_minor(minor.max(0))
            );
            Err(mismatch(detail, "data.amount"))
        }
        Some(Err(m)) => Err(malformed(format!("data.amount: {m}"), Some("data.amount"))),
        Some(Ok(_)) | None => Ok(provider_event),
    }
}

/// The payment as the outcomes other than `processed` describe it.
fn current(payment: &Payment) -> Value {
    json!({
        "payment_id": payment.id,
        "payment_intent_id": payment.payment_intent_id,
        "current_status": payment.status.as_str(),
        "version": payment.version,
    })
}

fn ignored(reason: &str, payment: &Payment) -> Outcome {
    let mut body = json!({"status": "ignored", "reason": reason});
    if let (Some(body), Value::Object(more)) = (body.as_object_mut(), current(payment)) {
        body.extend(more);
    }
    Outcome {
        status: 200,
        label: "ignored",
        body,
        moved: None,
        ahead_of: None,
    }
}

fn outcome_of(applied: Applied, requested: PaymentStatus) -> Outcome {
    match applied {
        Applied::Processed { old, payment } => Outcome {
            status: 200,
            label: "processed",
            body: json!({
                "status": "processed",
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "old_status": old.as_str(),
                "new_status": payment.status.as_str(),
                "version": payment.version,
            }),
            moved: Some((payment.status, payment.gateway.clone())),
            ahead_of: None,
        },
        Applied::OutOfOrder(payment) => ignored("out_of_order", &payment),
        Applied::RefundAlreadyApplied(payment) => ignored("refund_already_applied", &payment),
        Applied::RefundMismatch { reason, payment } => rejected(
            400,
            "refund_mismatch",
            "invalid_refund",
            reason,
            current(&payment),
        ),
        Applied::Invalid { reason, payment } => {
            let extra = json!({
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "current_status": payment.status.as_str(),
                "requested_status": requested.as_str(),
                "version": payment.version,
            });
            let ahead = !super::reconciliation::steps(payment.status, requested).is_empty();
            Outcome {
                ahead_of: ahead.then_some(payment.id),
                ..rejected(
                    400,
                    "invalid_transition",
                    "invalid_transition",
                    reason,
                    extra,
                )
            }
        }
    }
}
