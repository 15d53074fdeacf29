//! `/api/v1/donations`: create (idempotent), show, history, and the operator's status override.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
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
use super::error::{ApiError, ApiJson, ErrorBody, json_response};
use super::{
    AppState, IdempotencyKeyHeader, PageParams, amount_json, begin_idempotent, commit_response,
    page, parse_id, replayed,
};
use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::email::DonorEmail;
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::idempotency::Begin;
use crate::services::donations::{
    self, DonationError, NewDonation, StatusOverride, parse_donor_name,
};
use crate::storage::HistoryFilter;

/// The donation routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(history))
        .routes(routes!(show))
        .routes(routes!(set_status))
}

/// Body of `POST /api/v1/donations`. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[schema(as = DonationRequest)]
struct CreateDonation {
    /// An `ACTIVE` campaign.
    campaign_id: Uuid,
    #[schema(example = "ada@example.org", format = "email", max_length = 254)]
    donor_email: String,
    /// At most 200 characters, no control characters; blank means none.
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    donor_name: Option<String>,
    /// A decimal number with at most as many decimals as the currency has (two for most, none
    /// for `JPY` and `KRW`), > 0 and ≤ 1,000,000.
    #[schema(value_type = f64, example = 25.00, exclusive_minimum = 0, maximum = 1_000_000, multiple_of = 0.01)]
    amount: Box<RawValue>,
    /// ISO 4217 code; must be the campaign's (its currency by default).
    #[schema(value_type = Option<super::params::CurrencyCode>, example = "USD")]
    currency: Option<String>,
    /// Any JSON object, kept with the donation.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The seed's name for `metadata`, used when `metadata` is absent.
    #[schema(value_type = Option<Object>)]
    extra_data: Option<Value>,
}

/// A donation on the wire.
#[derive(Serialize, ToSchema)]
#[schema(as = Donation)]
pub struct DonationBody<'a> {
    id: Uuid,
    campaign_id: Uuid,
    donor_email: &'a str,
    donor_name: Option<&'a str>,
    /// The amount as a decimal number (`25.00`).
    #[schema(value_type = f64)]
    amount: Box<RawValue>,
    /// The amount in minor units (cents).
    amount_minor: i64,
    /// How much of it was refunded, in minor units.
    refunded_amount_minor: i64,
    #[schema(example = "USD")]
    currency: &'static str,
    /// `PENDING`, `COMPLETED`, `FAILED` or `REFUNDED`.
    #[schema(example = "PENDING")]
    status: &'static str,
    /// The payment intent, once one is created.
    payment_intent_id: Option<&'a str>,
    /// 1 at creation, +1 per change.
    version: i64,
    /// The JSON object sent as `metadata` (or `extra_data`).
    #[schema(value_type = Object)]
    metadata: &'a Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Donation> for DonationBody<'a> {
    fn from(d: &'a Donation) -> Self {
        DonationBody {
            id: d.id,
            campaign_id: d.campaign_id,
            donor_email: d.donor_email.as_str(),
            donor_name: d.donor_name.as_deref(),
            amount: amount_json(d.amount_minor, d.currency),
            amount_minor: d.amount_minor,
            refunded_amount_minor: d.refunded_minor,
            currency: d.currency.code(),
            status: d.status.as_str(),
            payment_intent_id: d.payment_intent_id.as_deref(),
            version: d.version,
            metadata: &d.metadata,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

impl From<DonationError> for ApiError {
    fn from(e: DonationError) -> Self {
        let message = e.to_string();
        match e {
            DonationError::CampaignNotFound(_) => ApiError::Unprocessable {
                code: "campaign_not_found",
                field: Some("campaign_id"),
                message,
            },
            DonationError::CampaignClosed(_) => ApiError::Unprocessable {
                code: "campaign_closed",
                field: Some("campaign_id"),
                message,
            },
            DonationError::CurrencyMismatch { .. } => ApiError::Unprocessable {
                code: "currency_mismatch",
                field: Some("currency"),
                message,
            },
            DonationError::InvalidAmount(e) => ApiError::amount("amount", e),
            DonationError::NotFound(_) => ApiError::NotFound(message),
            DonationError::VersionMismatch { .. }
            | DonationError::ChangedConcurrently(_)
            | DonationError::OtherPaymentIntent { .. } => ApiError::Conflict(message),
            DonationError::InvalidTransition { .. } => ApiError::InvalidTransition(message),
            DonationError::Store(e) => e.into(),
        }
    }
}

/// Creates a `PENDING` donation to an active campaign.
///
/// Its `donation.created` event is written to the outbox in the same transaction.
#[utoipa::path(
    post,
    path = "/api/v1/donations",
    tag = "donations",
    operation_id = "create_donation",
    params(IdempotencyKeyHeader),
    request_body = CreateDonation,
    responses(
        (status = 201, description = "The new donation, `PENDING`", body = DonationBody),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still in flight", body = ErrorBody),
        (status = 422, description = "A field is invalid (named in `field`); the campaign is unknown (`campaign_not_found`) or closed (`campaign_closed`); the currency is not the campaign's (`currency_mismatch`); or the `Idempotency-Key` was used for another request", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<CreateDonation>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let req = &body.value;
    let donor_email =
        DonorEmail::parse(&req.donor_email).map_err(|m| ApiError::field("donor_email", m))?;
    let donor_name = parse_donor_name(req.donor_name.as_deref())
        .map_err(|m| ApiError::field("donor_name", m))?;
    let currency = req
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(|m| ApiError::field("currency", m))?;
    let metadata = metadata(req)?;
    // Validate the amount before taking the key, with the currency the client named; the
    // campaign's currency is checked again inside the transaction.
    currency
        .unwrap_or(Currency::USD)
        .parse_amount(req.amount.get(), MAX_DONATION_MAJOR)
        .map_err(|e| ApiError::amount("amount", e))?;
    let mut owned =
        match begin_idempotent(&state, &headers, "POST /api/v1/donations", &body.document).await? {
            Begin::Replay(saved) => return Ok(replayed(saved)),
            Begin::Proceed(owned) => owned,
        };
    let command = NewDonation {
        campaign_id: req.campaign_id,
        donor_email,
        donor_name,
        amount: req.amount.get().to_string(),
        currency,
        metadata,
    };
    let donation = match donations::create(owned.tx.as_mut(), command, &state.currencies).await {
        Ok(donation) => donation,
        Err(e) => return Ok(super::refuse(owned, e.into()).await),
    };
    let response =
        commit_response(owned, StatusCode::CREATED, &DonationBody::from(&donation)).await?;
    state.outbox_written();
    crate::metrics::donation(DonationStatus::Pending);
    crate::metrics::donation_creation(started.elapsed().as_secs_f64());
    tracing::info!(donation_id = %donation.id, campaign_id = %donation.campaign_id, donor = %donation.donor_email, amount_minor = donation.amount_minor, "donation created");
    Ok(response)
}

/// The request's JSON object (`metadata`, else the seed's `extra_data`; none is `{}`). Each of
/// the two that is sent must be an object or `null`, whichever is used.
fn metadata(req: &CreateDonation) -> Result<Value, ApiError> {
    for (field, value) in [("metadata", &req.metadata), ("extra_data", &req.extra_data)] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Object(_)) if contains_nul(value.as_ref().unwrap_or(&Value::Null)) => {
                return Err(ApiError::field(field, "must not contain NUL characters"));
            }
            Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::field(field, "must be a JSON object or null")),
        }
    }
    let sent = |value: &Option<Value>| value.clone().filter(Value::is_object);
    Ok(sent(&req.metadata)
        .or_else(|| sent(&req.extra_data))
        .unwrap_or_else(|| json!({})))
}

/// Whether any key or string in a JSON document holds a NUL character (which PostgreSQL's JSONB
/// cannot store).
fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Shows one donation.
#[utoipa::path(
    get,
    path = "/api/v1/donations/{id}",
    tag = "donations",
    operation_id = "show_donation",
    params(("id" = Uuid, Path, description = "The donation id")),
    responses(
        (status = 200, description = "The donation", body = DonationBody),
        (status = 404, description = "No such donation", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
    )
)]
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let donation = state
        .store
        .donation(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("donation {id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &DonationBody::from(&donation),
    ))
}

/// A donor's donations, newest first.
///
/// Operators filter by `donor_email`, `status` and `campaign_id` with their key; a donor uses
/// the signed, expiring `token` from a receipt, with no key, and sees that donor's donations.
#[utoipa::path(
    get,
    path = "/api/v1/donations/history",
    tag = "donations",
    operation_id = "donation_history",
    params(
        ("token" = Option<String>, Query, description = "The signed link from a receipt; no operator key needed"),
        ("donor_email" = Option<String>, Query, format = "email", description = "Operator: the donor's e-mail address"),
        ("status" = Option<super::params::DonationStatusName>, Query, description = "`PENDING`, `COMPLETED`, `FAILED` or `REFUNDED`"),
        ("campaign_id" = Option<Uuid>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only this campaign's donations"),
        PageParams,
    ),
    security(("operator_key" = []), ()),
    responses(
        (status = 200, description = "A bare array of donations, newest first", body = Vec<DonationBody>),
        (status = 401, description = "No valid operator key, or a forged or expired `token`", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid", body = ErrorBody),
    )
)]
async fn history(
    State(state): State<AppState>,
    operator: Result<Operator, ApiError>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, offset) = page(&query)?;
    let donor_email = match query.get("token") {
        Some(token) => {
            let email = state
                .history_links
                .verify(token)
                .map_err(|m| ApiError::Unauthorized(format!("token: {m}")))?;
            Some(email)
        }
        None => {
            operator?;
            query
                .get("donor_email")
                .map(|e| DonorEmail::parse(e).map(|e| e.as_str().to_string()))
                .transpose()
                .map_err(|m| ApiError::field("donor_email", m))?
        }
    };
    let filter = HistoryFilter {
        donor_email,
        status: query
            .get("status")
            .map(|s| DonationStatus::parse(s))
            .transpose()
            .map_err(|m| ApiError::field("status", m))?,
        campaign_id: query
            .get("campaign_id")
            .map(|c| Uuid::parse_str(c))
            .transpose()
            .map_err(|_| ApiError::field("campaign_id", "must be a UUID"))?,
        limit,
        offset,
    };
    let donations = state.store.donation_history(&filter).await?;
    let bodies: Vec<DonationBody> = donations.iter().map(DonationBody::from).collect();
    Ok(json_response(StatusCode::OK, &bodies))
}

/// Body of the status override.
#[derive(Deserialize, ToSchema)]
#[schema(as = DonationStatusOverride)]
struct SetStatus {
    /// The new status; it must follow the life cycle (`PENDING` → `COMPLETED` | `FAILED`,
    /// `COMPLETED` → `REFUNDED`).
    #[schema(value_type = super::params::DonationStatusName, example = "FAILED")]
    status: String,
    /// Why, for the audit trail; without one the trail records that the operator key gave none.
    reason: Option<String>,
    /// Refuse (409) unless the donation is at this version.
    #[serde(default, deserialize_with = "super::params::whole_number")]
    #[schema(minimum = 1)]
    expected_version: Option<i64>,
    /// The payment intent the donation belongs to: recorded if it has none, 409 if it has
    /// another (as the older services' clients send it).
    payment_intent_id: Option<String>,
}

/// Moves a donation along its life cycle by hand (operator).
///
/// The change is audited with the reason and the operator, and publishes the same event an
/// automatic change would.
#[utoipa::path(
    patch,
    path = "/api/v1/donations/{id}/status",
    tag = "donations",
    operation_id = "set_donation_status",
    params(("id" = Uuid, Path, description = "The donation id")),
    request_body = SetStatus,
    security(("operator_key" = [])),
    responses(
        (status = 200, description = "The donation after the change", body = DonationBody),
        (status = 400, description = "The life cycle forbids this change (`invalid_transition`), or the body is not a JSON object", body = ErrorBody),
        (status = 401, description = "No valid operator key", body = ErrorBody),
        (status = 404, description = "No such donation", body = ErrorBody),
        (status = 409, description = "The donation is not at `expected_version`, changed concurrently, or belongs to another `payment_intent_id`", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    )
)]
async fn set_status(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    body: ApiJson<SetStatus>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let req = body.value;
    let to = DonationStatus::parse(&req.status).map_err(|m| ApiError::field("status", m))?;
    let reason = match req.reason.as_deref().map(str::trim) {
        Some(reason) if !reason.is_empty() => reason.to_string(),
        _ => format!("no reason given by {}", operator.actor),
    };
    let payment_intent_id = req
        .payment_intent_id
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    if payment_intent_id.as_ref().is_some_and(|p| p.len() > 255) {
        return Err(ApiError::field(
            "payment_intent_id",
            "at most 255 characters",
        ));
    }
    let command = StatusOverride {
        donation_id: id,
        to,
        reason,
        actor: operator.actor,
        expected_version: req.expected_version,
        payment_intent_id,
    };
    let updated = donations::override_status(state.store.as_ref(), command).await?;
    state.outbox_written();
    Ok(json_response(StatusCode::OK, &DonationBody::from(&updated)))
}
