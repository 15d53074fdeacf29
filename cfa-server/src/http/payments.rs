//! `/api/v1/payments`: intents, the provider webhook, reads, refunds.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, ErrorBody, json_bytes, json_response, parse_json};
use super::{
    AppState, IdempotencyKeyHeader, amount_json, begin_idempotent, commit_response, replayed,
};
use crate::domain::donation::DonationStatus;
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::domain::payment::{Payment, PaymentStatus, ProviderEvent, parse_timestamp};
use crate::idempotency::Begin;
use crate::services::payments::provider::{PaymentProvider, ProviderError};
use crate::services::payments::{Applied, apply_event, payment_event, signature};
use crate::storage::{Refund, StoreError, Tx, WebhookRecord};

/// The payment routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_intent))
        .routes(routes!(webhook))
        .routes(routes!(show))
        .routes(routes!(history))
        .routes(routes!(refund))
}

/// A payment on the wire.
#[derive(Serialize, ToSchema)]
#[schema(as = Payment)]
struct PaymentBody<'a> {
    id: Uuid,
    #[schema(example = "pi_3b0c6c0e4f2a4b8e9d1f2a3b4c5d6e7f")]
    payment_intent_id: &'a str,
    donation_id: Uuid,
    /// `INITIATED`, `AUTHORIZED`, `CAPTURED`, `FAILED` or `REFUNDED`.
    #[schema(example = "CAPTURED")]
    status: &'static str,
    /// The amount as a decimal number (`25.00`).
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    /// The amount in minor units (cents).
    amount_minor: i64,
    /// How much was refunded, as a decimal number.
    #[schema(value_type = f64)]
    refunded_amount: Box<RawValue>,
    /// How much was refunded, in minor units.
    refunded_amount_minor: i64,
    #[schema(example = "USD")]
    currency: &'static str,
    #[schema(example = "sandbox")]
    gateway: &'a str,
    /// 1 at creation, +1 per applied transition.
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Payment> for PaymentBody<'a> {
    fn from(p: &'a Payment) -> Self {
        PaymentBody {
            id: p.id,
            payment_intent_id: &p.payment_intent_id,
            donation_id: p.donation_id,
            status: p.status.as_str(),
            amount: amount_json(p.amount_minor, p.currency),
            amount_minor: p.amount_minor,
            refunded_amount: amount_json(p.refunded_minor, p.currency),
            refunded_amount_minor: p.refunded_minor,
            currency: p.currency.code(),
            gateway: &p.gateway,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// The answer to an intent creation (SPEC §3).
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentIntent)]
struct IntentBody<'a> {
    /// The payment's id.
    id: Uuid,
    /// The provider's intent id; the sandbox is confirmed with it.
    #[schema(example = "pi_3b0c6c0e4f2a4b8e9d1f2a3b4c5d6e7f")]
    payment_intent_id: &'a str,
    donation_id: Uuid,
    /// The amount as a decimal number (`25.00`).
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    amount_minor: i64,
    #[schema(example = "USD")]
    currency: &'static str,
    /// `INITIATED`.
    #[schema(example = "INITIATED")]
    status: &'static str,
    #[schema(example = "sandbox")]
    gateway: &'a str,
    /// For the donor's client to confirm the intent with the provider.
    client_secret: &'a str,
    /// 1.
    version: i64,
    created_at: DateTime<Utc>,
}

/// The answer to a refund request.
#[derive(Serialize, ToSchema)]
#[schema(as = Refund)]
struct RefundBody<'a> {
    #[schema(example = "re_9f8e7d6c5b4a39281706f5e4d3c2b1a0")]
    refund_id: &'a str,
    payment_id: Uuid,
    payment_intent_id: &'a str,
    /// The refunded amount as a decimal number.
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    amount_minor: i64,
    #[schema(example = "USD")]
    currency: &'static str,
    /// `REQUESTED`: the provider's webhook completes it.
    #[schema(example = "REQUESTED")]
    status: &'a str,
}

/// A payment with its transitions and refunds.
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentHistory)]
struct HistoryBody<'a> {
    payment: PaymentBody<'a>,
    /// Every applied transition: `{from, to, version, event_id, event_at, refund_id,
    /// amount_minor, recorded_at}`.
    #[schema(value_type = Vec<Object>)]
    transitions: Vec<Value>,
    /// Every refund: `{refund_id, amount_minor, status, requested_at, completed_at}`.
    #[schema(value_type = Vec<Object>)]
    refunds: Vec<Value>,
}

/// Body of `POST /api/v1/payments/intent`.
#[derive(Deserialize, ToSchema)]
#[schema(as = PaymentIntentRequest)]
struct CreateIntent {
    /// A `PENDING` donation with no live payment.
    donation_id: Uuid,
    /// The donation's amount, as a decimal number.
    #[schema(value_type = f64, example = 25.00)]
    amount: Box<RawValue>,
    /// The donation's currency (its currency by default).
    #[schema(example = "USD")]
    currency: Option<String>,
    /// The provider; the configured one (`sandbox`) by default.
    #[schema(example = "sandbox")]
    gateway: Option<String>,
}

fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Refused(m) => ApiError::Unprocessable {
            code: "provider_refused",
            field: None,
            message: format!("the payment provider refused: {m}"),
        },
        ProviderError::Store(e) => e.into(),
    }
}

/// Creates a payment intent for a pending donation.
///
/// The payment starts `INITIATED` and is created at the provider too; its
/// `payment.initiated` event records the intent on the donation. Amount and currency must equal
/// the donation's, and a donation has at most one live payment.
#[utoipa::path(
    post,
    path = "/api/v1/payments/intent",
    tag = "payments",
    operation_id = "create_payment_intent",
    params(IdempotencyKeyHeader),
    request_body = CreateIntent,
    responses(
        (status = 201, description = "The intent, `INITIATED`", body = IntentBody),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 404, description = "No such donation", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still in flight", body = ErrorBody),
        (status = 422, description = "A field is invalid; the donation is not `PENDING` (`donation_not_pending`) or already has a payment (`payment_exists`); amount or currency differ from the donation's (`amount_mismatch`, `currency_mismatch`); the gateway is unknown (`unsupported_gateway`); or the `Idempotency-Key` was used for another request", body = ErrorBody),
    )
)]
async fn create_intent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<CreateIntent>,
) -> Result<Response, ApiError> {
    let req = &body.value;
    let requested_currency = req
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(|m| ApiError::field("currency", m))?;
    requested_currency
        .unwrap_or(Currency::USD)
        .parse_amount(req.amount.get(), MAX_DONATION_MAJOR)
        .map_err(|m| ApiError::field("amount", m))?;
    let provider = state
        .provider
        .clone()
        .ok_or_else(|| ApiError::Unprocessable {
            code: "unsupported_gateway",
            field: Some("gateway"),
            message: "no payment provider is configured (payments.sandbox is off)".into(),
        })?;
    let gateway = req.gateway.as_deref().unwrap_or(provider.name());
    if gateway != provider.name() {
        return Err(ApiError::Unprocessable {
            code: "unsupported_gateway",
            field: Some("gateway"),
            message: format!(
                "unknown gateway {gateway:?}; this server offers {:?}",
                provider.name()
            ),
        });
    }
    let mut owned = match begin_idempotent(
        &state,
        &headers,
        "POST /api/v1/payments/intent",
        &body.document,
    )
    .await?
    {
        Begin::Replay(saved) => return Ok(replayed(saved)),
        Begin::Proceed(owned) => owned,
    };
    let payment = match record_intent(
        owned.tx.as_mut(),
        req,
        requested_currency,
        provider.as_ref(),
    )
    .await
    {
        Ok(payment) => payment,
        Err(e) => return Ok(super::refuse(owned, e).await),
    };
    let body = IntentBody {
        id: payment.id,
        payment_intent_id: &payment.payment_intent_id,
        donation_id: payment.donation_id,
        amount: amount_json(payment.amount_minor, payment.currency),
        amount_minor: payment.amount_minor,
        currency: payment.currency.code(),
        status: payment.status.as_str(),
        gateway: &payment.gateway,
        client_secret: &payment.client_secret,
        version: payment.version,
        created_at: payment.created_at,
    };
    let response = commit_response(owned, StatusCode::CREATED, &body).await?;
    state.outbox_written();
    Ok(response)
}

/// The part of an intent's creation decided under its idempotency key.
async fn record_intent(
    tx: &mut dyn Tx,
    req: &CreateIntent,
    requested_currency: Option<Currency>,
    provider: &dyn PaymentProvider,
) -> Result<Payment, ApiError> {
    let donation = tx
        .donation_for_update(req.donation_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("donation {} not found", req.donation_id)))?;
    if donation.status != DonationStatus::Pending {
        return Err(ApiError::Unprocessable {
            code: "donation_not_pending",
            field: Some("donation_id"),
            message: format!(
                "donation {} is {}, not PENDING",
                donation.id,
                donation.status.as_str()
            ),
        });
    }
    if let Some(currency) = requested_currency
        && currency != donation.currency
    {
        return Err(ApiError::Unprocessable {
            code: "currency_mismatch",
            field: Some("currency"),
            message: format!("the donation is in {}, not {currency}", donation.currency),
        });
    }
    let amount_minor = donation
        .currency
        .parse_amount(req.amount.get(), MAX_DONATION_MAJOR)
        .map_err(|m| ApiError::field("amount", m))?;
    if amount_minor != donation.amount_minor {
        return Err(ApiError::Unprocessable {
            code: "amount_mismatch",
            field: Some("amount"),
            message: format!(
                "the donation is for {} {}, the intent must be too",
                donation.currency.format_minor(donation.amount_minor),
                donation.currency
            ),
        });
    }
    if let Some(existing) = tx.live_payment_for_donation(donation.id).await? {
        return Err(ApiError::Unprocessable {
            code: "payment_exists",
            field: Some("donation_id"),
            message: format!(
                "donation {} already has payment {} ({}); use it",
                donation.id,
                existing.id,
                existing.status.as_str()
            ),
        });
    }
    let now = crate::domain::now();
    let intent_id = format!("pi_{}", Uuid::new_v4().simple());
    let payment = Payment {
        id: Uuid::new_v4(),
        client_secret: format!("{intent_id}_secret_{}", Uuid::new_v4().simple()),
        payment_intent_id: intent_id,
        donation_id: donation.id,
        amount_minor,
        currency: donation.currency,
        status: PaymentStatus::Initiated,
        gateway: provider.name().to_string(),
        version: 1,
        refunded_minor: 0,
        last_event_at: None,
        created_at: now,
        updated_at: now,
    };
    provider
        .create_intent(
            tx,
            &payment.payment_intent_id,
            amount_minor,
            payment.currency,
        )
        .await
        .map_err(provider_error)?;
    tx.insert_payment(&payment).await?;
    tx.insert_outbox(&payment_event(PaymentStatus::Initiated, &payment, None))
        .await?;
    Ok(payment)
}

/// Finds a payment by its id or its intent id.
async fn find_payment(state: &AppState, id: &str) -> Result<Payment, ApiError> {
    let found = match Uuid::parse_str(id) {
        Ok(uuid) => state.store.payment(uuid).await?,
        Err(_) => state.store.payment_by_intent(id).await?,
    };
    found.ok_or_else(|| ApiError::NotFound(format!("payment {id} not found")))
}

/// Shows one payment, by its id or its intent id.
#[utoipa::path(
    get,
    path = "/api/v1/payments/{id}",
    tag = "payments",
    operation_id = "show_payment",
    params(("id" = String, Path, description = "The payment id (a UUID) or its intent id (`pi_…`)")),
    responses(
        (status = 200, description = "The payment", body = PaymentBody),
        (status = 404, description = "No such payment", body = ErrorBody),
    )
)]
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let payment = find_payment(&state, &id).await?;
    Ok(json_response(StatusCode::OK, &PaymentBody::from(&payment)))
}

/// A payment with every transition applied to it and every refund (operator).
#[utoipa::path(
    get,
    path = "/api/v1/payments/{id}/history",
    tag = "payments",
    operation_id = "payment_history",
    params(("id" = String, Path, description = "The payment id (a UUID) or its intent id (`pi_…`)")),
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The payment, its transitions and its refunds", body = HistoryBody),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
    )
)]
async fn history(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let payment = find_payment(&state, &id).await?;
    let transitions = state.store.payment_history(payment.id).await?;
    let refunds = state.store.refunds(payment.id).await?;
    Ok(json_response(
        StatusCode::OK,
        &HistoryBody {
            payment: PaymentBody::from(&payment),
            transitions: transitions
                .iter()
                .map(|t| {
                    json!({
                        "from": t.from.as_str(),
                        "to": t.to.as_str(),
                        "version": t.version,
                        "event_id": t.event_id,
                        "event_at": t.event_at,
                        "refund_id": t.refund_id,
                        "amount_minor": t.amount_minor,
                        "recorded_at": t.recorded_at,
                    })
                })
                .collect(),
            refunds: refunds
                .iter()
                .map(|r| {
                    json!({
                        "refund_id": r.refund_id,
                        "amount_minor": r.amount_minor,
                        "status": r.status,
                        "requested_at": r.requested_at,
                        "completed_at": r.completed_at,
                    })
                })
                .collect(),
        },
    ))
}

/// Body of a refund request.
#[derive(Deserialize, ToSchema)]
#[schema(as = RefundRequest)]
struct RefundRequest {
    /// How much to refund, as a decimal number; by default all that is left.
    #[schema(value_type = Option<f64>, example = 10.00)]
    amount: Option<Box<RawValue>>,
}

/// Refunds part or all of a `CAPTURED` payment (operator).
///
/// The amount is reserved at once, so concurrent requests can never refund more than was
/// captured; the provider's webhook completes the refund. An empty body refunds all that is
/// left.
#[utoipa::path(
    post,
    path = "/api/v1/payments/{id}/refund",
    tag = "payments",
    operation_id = "refund_payment",
    params(
        ("id" = String, Path, description = "The payment id (a UUID) or its intent id (`pi_…`)"),
        IdempotencyKeyHeader,
    ),
    request_body(content = Option<RefundRequest>, description = "Optional: `{amount?}`, or no body at all"),
    security(("operator_key" = [])),
    responses(
        (status = 202, description = "The refund, `REQUESTED`", body = RefundBody),
        (status = 400, description = "The payment is not `CAPTURED`, or the amount exceeds what is left (`invalid_refund`, with the reason); or the body is not a JSON object", body = ErrorBody),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still in flight", body = ErrorBody),
        (status = 422, description = "`amount` is invalid, or the `Idempotency-Key` was used for another request", body = ErrorBody),
    )
)]
async fn refund(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let parsed: ApiJson<RefundRequest> = if body.iter().all(u8::is_ascii_whitespace) {
        parse_json(b"{}")?
    } else {
        parse_json(&body)?
    };
    let provider = state
        .provider
        .clone()
        .ok_or_else(|| ApiError::Unavailable("no payment provider is configured".into()))?;
    let target = find_payment(&state, &id).await?;
    let scope = format!("POST /api/v1/payments/{}/refund", target.id);
    let mut owned = match begin_idempotent(&state, &headers, &scope, &parsed.document).await? {
        Begin::Replay(saved) => return Ok(replayed(saved)),
        Begin::Proceed(owned) => owned,
    };
    let (payment, refund) = match record_refund(
        owned.tx.as_mut(),
        &target,
        &id,
        parsed.value.amount.as_deref(),
        provider.as_ref(),
    )
    .await
    {
        Ok(done) => done,
        Err(e) => return Ok(super::refuse(owned, e).await),
    };
    let amount = refund.amount_minor;
    let body = RefundBody {
        refund_id: &refund.refund_id,
        payment_id: payment.id,
        payment_intent_id: &payment.payment_intent_id,
        amount: amount_json(amount, payment.currency),
        amount_minor: amount,
        currency: payment.currency.code(),
        status: &refund.status,
    };
    let response = commit_response(owned, StatusCode::ACCEPTED, &body).await?;
    state.sandbox_wake();
    Ok(response)
}

/// The part of a refund decided under its idempotency key: the amount is checked against what
/// is captured, refunded and already requested, reserved, and asked of the provider.
async fn record_refund(
    tx: &mut dyn Tx,
    target: &Payment,
    id: &str,
    amount: Option<&RawValue>,
    provider: &dyn PaymentProvider,
) -> Result<(Payment, Refund), ApiError> {
    let payment = tx
        .payment_for_update(target.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("payment {id} not found")))?;
    if payment.status != PaymentStatus::Captured {
        return Err(ApiError::InvalidRefund(format!(
            "only CAPTURED payments can be refunded; this one is {}",
            payment.status.as_str()
        )));
    }
    let reserved = tx.requested_refunds_minor(payment.id).await?;
    let available = payment.refundable_minor() - reserved;
    let amount = match amount {
        Some(raw) => payment
            .currency
            .parse_amount(raw.get(), MAX_DONATION_MAJOR)
            .map_err(|m| ApiError::field("amount", m))?,
        None => available,
    };
    if available <= 0 || amount > available {
        return Err(ApiError::InvalidRefund(format!(
            "refund of {} exceeds what is left: {} captured, {} refunded, {} awaiting the provider",
            payment.currency.format_minor(amount.max(0)),
            payment.currency.format_minor(payment.amount_minor),
            payment.currency.format_minor(payment.refunded_minor),
            payment.currency.format_minor(reserved)
        )));
    }
    let refund = Refund {
        refund_id: format!("re_{}", Uuid::new_v4().simple()),
        payment_id: payment.id,
        amount_minor: amount,
        status: "REQUESTED".into(),
        requested_at: crate::domain::now(),
        completed_at: None,
    };
    tx.insert_refund(&refund).await?;
    provider
        .refund(tx, &payment.payment_intent_id, &refund.refund_id, amount)
        .await
        .map_err(|e| match e {
            ProviderError::Refused(m) => {
                ApiError::InvalidRefund(format!("the provider refused the refund: {m}"))
            }
            ProviderError::Store(e) => e.into(),
        })?;
    Ok((payment, refund))
}

/// A webhook event from the payment provider.
#[derive(Deserialize, ToSchema)]
#[schema(as = WebhookEvent)]
struct WebhookEvent {
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
    /// The event id; deduplicates deliveries when there is no `X-Idempotency-Key`.
    id: Option<String>,
    /// For `REFUNDED`: `{refund_id, amount}` (or `amount_minor`).
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// An outcome to store and send.
struct Outcome {
    status: StatusCode,
    label: &'static str,
    body: Value,
    /// The status a processed event moved its payment to, and the payment's gateway.
    moved: Option<(PaymentStatus, String)>,
}

fn rejected(
    status: StatusCode,
    reason: &'static str,
    code: &'static str,
    detail: String,
    extra: Value,
) -> Outcome {
    let mut body = json!({"status": "rejected", "reason": reason, "code": code, "detail": detail});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    Outcome {
        status,
        label: if status == StatusCode::NOT_FOUND {
            "not_found"
        } else {
            "rejected"
        },
        body,
        moved: None,
    }
}

/// Receives a provider webhook.
///
/// Verifies the signature, deduplicates (by `X-Idempotency-Key`, else the event `id`, else the
/// SHA-256 of the body), applies the event to its payment and stores the outcome, which any
/// redelivery gets back byte for byte with `Idempotent-Replayed: true`.
#[utoipa::path(
    post,
    path = "/api/v1/payments/webhook",
    tag = "payments",
    operation_id = "payment_webhook",
    params(
        ("CFA-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`, 5-minute tolerance, several `v1` allowed; required unless `payments.allow_unsigned_webhooks`"),
        ("X-Idempotency-Key" = Option<String>, Header, description = "Deduplicates deliveries of one event"),
    ),
    request_body = WebhookEvent,
    responses(
        (status = 200, description = "`{status: \"processed\", payment_id, payment_intent_id, old_status, new_status, version}`, or `{status: \"ignored\", reason: \"out_of_order\" | \"refund_already_applied\", payment_id, payment_intent_id, current_status, version}`", body = serde_json::Value),
        (status = 400, description = "`{status: \"rejected\", reason: \"invalid_transition\" | \"refund_mismatch\" | \"malformed\", code, detail, …}`", body = serde_json::Value),
        (status = 401, description = "Missing, wrong or stale signature (`invalid_signature`); nothing is stored", body = ErrorBody),
        (status = 404, description = "`{status: \"rejected\", reason: \"unknown_payment_intent\", code: \"not_found\", detail, payment_intent_id}`", body = serde_json::Value),
        (status = 409, description = "The same event is being processed; retry", body = ErrorBody),
    )
)]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let settings = &state.settings.payments;
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    if !(settings.allow_unsigned_webhooks && header.is_none()) {
        let tolerance = i64::try_from(settings.signature_tolerance_seconds).unwrap_or(300);
        if let Err(e) = signature::verify(
            header,
            &body,
            &state.webhook_secrets,
            Utc::now().timestamp(),
            tolerance,
        ) {
            tracing::warn!(reason = %e, "webhook refused: bad signature");
            crate::metrics::webhook("invalid_signature", false);
            return Err(ApiError::InvalidSignature(e.to_string()));
        }
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let dedup_key = match headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(key) if !key.is_empty() && key.len() <= 255 => format!("key:{key}"),
        _ => match parsed.as_ref().and_then(|v| v["id"].as_str()) {
            Some(id) if !id.is_empty() && id.len() <= 255 => format!("event:{id}"),
            _ => format!("sha256:{}", hex::encode(Sha256::digest(&body))),
        },
    };
    if let Some(saved) = state.store.webhook_record(&dedup_key).await? {
        crate::metrics::webhook(&saved.outcome, true);
        return Ok(replay_webhook(saved));
    }
    apply_webhook(&state, dedup_key, &body, None).await
}

/// Claims `dedup_key`, applies the event in `body` and stores the outcome with the request, all
/// in one transaction; answers with the outcome. Deliveries and operator replays both come here.
pub(crate) async fn apply_webhook(
    state: &AppState,
    dedup_key: String,
    body: &[u8],
    replay_of: Option<String>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let mut tx = state.store.begin().await?;
    let now = crate::domain::now();
    if !tx.claim_webhook(&dedup_key, now).await? {
        drop(tx);
        return match state.store.webhook_record(&dedup_key).await? {
            Some(saved) => {
                crate::metrics::webhook(&saved.outcome, true);
                Ok(replay_webhook(saved))
            }
            None => Err(ApiError::Conflict(
                "the same webhook is being processed; retry".into(),
            )),
        };
    }
    let (intent, event_id, outcome) = process_webhook(tx.as_mut(), body).await?;
    let response_body =
        serde_json::to_vec(&outcome.body).map_err(|e| ApiError::Internal(e.to_string()))?;
    tx.complete_webhook(&WebhookRecord {
        dedup_key,
        payment_intent_id: intent,
        event_id,
        outcome: outcome.label.to_string(),
        status_code: outcome.status.as_u16(),
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
    if outcome.label == "processed" {
        state.outbox_written();
    }
    Ok(json_bytes(outcome.status, response_body))
}

fn replay_webhook(saved: WebhookRecord) -> Response {
    let status = StatusCode::from_u16(saved.status_code).unwrap_or(StatusCode::OK);
    let mut response = json_bytes(status, saved.body);
    response.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    response
}

/// Reads and applies one webhook inside its transaction.
async fn process_webhook(
    tx: &mut dyn Tx,
    body: &[u8],
) -> Result<(Option<String>, Option<String>, Outcome), StoreError> {
    let event: WebhookEvent = match parse_json::<WebhookEvent>(body) {
        Ok(parsed) => parsed.value,
        Err(e) => {
            let (field, detail) = match e {
                ApiError::Validation { field, message } => (Some(field), message),
                other => (None, other.to_string()),
            };
            let extra = json!({"field": field});
            return Ok((
                None,
                None,
                rejected(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "malformed_webhook",
                    detail,
                    extra,
                ),
            ));
        }
    };
    let intent = Some(event.payment_intent_id.clone());
    let event_id = event.id.clone();
    let status = match PaymentStatus::parse(&event.status) {
        Ok(s) => s,
        Err(m) => {
            return Ok((
                intent,
                event_id,
                rejected(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "malformed_webhook",
                    format!("status: {m}"),
                    json!({"field": "status"}),
                ),
            ));
        }
    };
    let at = match parse_timestamp(&event.timestamp) {
        Ok(at) => at,
        Err(m) => {
            return Ok((
                intent,
                event_id,
                rejected(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "malformed_webhook",
                    format!("timestamp: {m}"),
                    json!({"field": "timestamp"}),
                ),
            ));
        }
    };
    let Some(payment) = tx
        .payment_for_update_by_intent(&event.payment_intent_id)
        .await?
    else {
        return Ok((
            intent,
            event_id,
            rejected(
                StatusCode::NOT_FOUND,
                "unknown_payment_intent",
                "not_found",
                format!("no payment has intent {}", event.payment_intent_id),
                json!({"payment_intent_id": event.payment_intent_id}),
            ),
        ));
    };
    let refund = if status == PaymentStatus::Refunded {
        let data = event.data.clone().unwrap_or(Value::Null);
        let refund_id = match data["refund_id"].as_str().map(str::trim) {
            Some(id) if !id.is_empty() && id.len() <= 255 => id.to_string(),
            _ => {
                return Ok((
                    intent,
                    event_id,
                    rejected(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "malformed_webhook",
                        "data.refund_id: a REFUNDED event must name its refund".into(),
                        json!({"field": "data.refund_id"}),
                    ),
                ));
            }
        };
        let amount = match (&data["amount_minor"], &data["amount"]) {
            (Value::Number(n), _) => n
                .as_i64()
                .filter(|a| *a > 0)
                .ok_or_else(|| "must be a positive integer".to_string()),
            (Value::Null, Value::Number(n)) => payment
                .currency
                .parse_amount(&n.to_string(), MAX_DONATION_MAJOR),
            _ => Err("data.amount is required (a decimal number)".to_string()),
        };
        match amount {
            Ok(amount) => Some((refund_id, Some(amount))),
            Err(m) => {
                return Ok((
                    intent,
                    event_id,
                    rejected(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "malformed_webhook",
                        format!("data.amount: {m}"),
                        json!({"field": "data.amount"}),
                    ),
                ));
            }
        }
    } else {
        None
    };
    let provider_event = ProviderEvent {
        event_id: event
            .id
            .clone()
            .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(body)))),
        status,
        at,
        refund,
    };
    let outcome = match apply_event(tx, payment, &provider_event).await? {
        Applied::Processed { old, payment } => Outcome {
            status: StatusCode::OK,
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
        },
        Applied::OutOfOrder(payment) => Outcome {
            status: StatusCode::OK,
            label: "ignored",
            body: json!({
                "status": "ignored",
                "reason": "out_of_order",
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "current_status": payment.status.as_str(),
                "version": payment.version,
            }),
            moved: None,
        },
        Applied::RefundAlreadyApplied(payment) => Outcome {
            status: StatusCode::OK,
            label: "ignored",
            body: json!({
                "status": "ignored",
                "reason": "refund_already_applied",
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "current_status": payment.status.as_str(),
                "version": payment.version,
            }),
            moved: None,
        },
        Applied::RefundMismatch { reason, payment } => rejected(
            StatusCode::BAD_REQUEST,
            "refund_mismatch",
            "invalid_refund",
            reason,
            json!({
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "current_status": payment.status.as_str(),
                "version": payment.version,
            }),
        ),
        Applied::Invalid { reason, payment } => rejected(
            StatusCode::BAD_REQUEST,
            "invalid_transition",
            "invalid_transition",
            reason,
            json!({
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
                "current_status": payment.status.as_str(),
                "requested_status": status.as_str(),
                "version": payment.version,
            }),
        ),
    };
    Ok((intent, event_id, outcome))
}
