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
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, ErrorBody, json_bytes, json_response, parse_json};
use super::{
    AppState, IdempotencyKeyHeader, amount_json, begin_idempotent, commit_response, replayed,
};
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::domain::payment::Payment;
use crate::idempotency::Begin;
use crate::services::payments::intents::{self, IntentError, NewIntent};
use crate::services::payments::refunds::{self, RefundError};
use crate::services::payments::signature;
use crate::services::payments::webhooks::{
    self, Delivery, Reply, Verifier, WebhookError, WebhookEvent,
};

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
    #[schema(value_type = f64, example = 25.00, exclusive_minimum = 0, maximum = 1_000_000, multiple_of = 0.01)]
    amount: Box<RawValue>,
    /// The donation's currency (its currency by default).
    #[schema(value_type = Option<super::params::CurrencyCode>, example = "USD")]
    currency: Option<String>,
    /// The provider; the configured one (`sandbox`) by default. The sandbox also answers to
    /// `stripe`, the name older clients send; the response says which provider served it.
    #[schema(example = "sandbox")]
    gateway: Option<String>,
}

impl From<IntentError> for ApiError {
    fn from(e: IntentError) -> Self {
        let message = e.to_string();
        let unprocessable = |code, field| ApiError::Unprocessable {
            code,
            field,
            message: message.clone(),
        };
        match e {
            IntentError::DonationNotFound(_) => ApiError::NotFound(message),
            IntentError::DonationNotPending { .. } => {
                unprocessable("donation_not_pending", Some("donation_id"))
            }
            IntentError::CurrencyMismatch { .. } => {
                unprocessable("currency_mismatch", Some("currency"))
            }
            IntentError::InvalidAmount(e) => ApiError::amount("amount", e),
            IntentError::AmountMismatch { .. } => unprocessable("amount_mismatch", Some("amount")),
            IntentError::PaymentExists { .. } => {
                unprocessable("payment_exists", Some("donation_id"))
            }
            IntentError::ProviderRefused(_) => unprocessable("provider_refused", None),
            IntentError::Store(e) => e.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        let message = e.to_string();
        match e {
            RefundError::NotFound(_) => ApiError::NotFound(message),
            RefundError::InvalidAmount(e) => ApiError::amount("amount", e),
            RefundError::NotCaptured(_)
            | RefundError::ExceedsRefundable(_)
            | RefundError::ProviderRefused(_) => ApiError::InvalidRefund(message),
            RefundError::Store(e) => e.into(),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::InvalidSignature(m) => ApiError::InvalidSignature(m),
            WebhookError::InFlight => ApiError::Conflict(e.to_string()),
            WebhookError::UnknownDelivery(_) | WebhookError::NotReplayable(_) => {
                ApiError::NotFound(e.to_string())
            }
            WebhookError::Store(e) => e.into(),
        }
    }
}

/// How this server authenticates webhooks.
fn verifier(state: &AppState) -> Verifier {
    let settings = &state.settings.payments;
    Verifier {
        secrets: state.webhook_secrets.clone(),
        allow_unsigned: settings.allow_unsigned_webhooks,
        tolerance_seconds: i64::try_from(settings.signature_tolerance_seconds).unwrap_or(300),
    }
}

/// A webhook's answer: stored once, sent the same to every redelivery.
pub(super) fn webhook_reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = json_bytes(status, reply.body);
    if reply.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
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
        .map_err(|e| ApiError::amount("amount", e))?;
    let provider = state
        .provider
        .clone()
        .ok_or_else(|| ApiError::Unprocessable {
            code: "unsupported_gateway",
            field: Some("gateway"),
            message: "no payment provider is configured (payments.sandbox is off)".into(),
        })?;
    let gateway = req.gateway.as_deref().unwrap_or(provider.name());
    if !provider.serves(gateway) {
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
    let command = NewIntent {
        donation_id: req.donation_id,
        amount: req.amount.get().to_string(),
        currency: requested_currency,
    };
    let payment = match intents::create(owned.tx.as_mut(), command, provider.as_ref()).await {
        Ok(payment) => payment,
        Err(e) => return Ok(super::refuse(owned, e.into()).await),
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
    #[schema(value_type = Option<f64>, example = 10.00, exclusive_minimum = 0, maximum = 1_000_000, multiple_of = 0.01)]
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
    let parsed: ApiJson<RefundRequest> = if super::error::absent_body(&body) {
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
    let command = refunds::RefundRequest {
        payment_id: target.id,
        amount: parsed.value.amount.as_deref().map(|a| a.get().to_string()),
    };
    let (payment, refund) =
        match refunds::request(owned.tx.as_mut(), command, provider.as_ref()).await {
            Ok(done) => done,
            Err(e) => return Ok(super::refuse(owned, e.into()).await),
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

/// Receives a provider webhook.
///
/// Verifies the signature, deduplicates (by the signed event `id`, else the SHA-256 of the body;
/// `X-Idempotency-Key` is not signed, so it never decides), applies the event to its payment and stores the outcome, which any
/// redelivery gets back byte for byte with `Idempotent-Replayed: true`.
#[utoipa::path(
    post,
    path = "/api/v1/payments/webhook",
    tag = "payments",
    operation_id = "payment_webhook",
    params(
        ("CFA-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`, 5-minute tolerance, several `v1` allowed; required unless `payments.allow_unsigned_webhooks`"),
        ("X-Idempotency-Key" = Option<String>, Header, description = "Accepted for older providers and ignored: it is not covered by the signature, so the event `id` (else the body's SHA-256) deduplicates; one that differs from the `id` is logged"),
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
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = Delivery {
        signature: header(signature::HEADER),
        idempotency_key: header("x-idempotency-key"),
        body: &body,
    };
    let reply = webhooks::receive(state.store.as_ref(), &verifier(&state), delivery).await?;
    state.webhook_answered(&reply);
    Ok(webhook_reply(reply))
}
