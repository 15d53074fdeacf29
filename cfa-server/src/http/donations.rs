//! `/api/v1/donations`: create (idempotent), show, history, and the operator's status override.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, patch, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Operator;
use super::error::{ApiError, ApiJson, json_response};
use super::{AppState, amount_json, begin_idempotent, commit_response, page, parse_id, replayed};
use crate::domain::campaign::CampaignStatus;
use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::email::DonorEmail;
use crate::domain::event::EventEnvelope;
use crate::domain::money::{Currency, MAX_DONATION_MAJOR};
use crate::idempotency::Begin;
use crate::storage::{HistoryFilter, StatusAudit, Tx};

/// The donation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/donations", post(create))
        .route("/api/v1/donations/history", get(history))
        .route("/api/v1/donations/{id}", get(show))
        .route("/api/v1/donations/{id}/status", patch(set_status))
}

/// Body of `POST /api/v1/donations`. Unknown fields are ignored.
#[derive(Deserialize)]
struct CreateDonation {
    campaign_id: Uuid,
    donor_email: String,
    donor_name: Option<String>,
    amount: Box<RawValue>,
    currency: Option<String>,
    metadata: Option<Value>,
    extra_data: Option<Value>,
}

/// A donation on the wire.
#[derive(Serialize)]
pub struct DonationBody<'a> {
    id: Uuid,
    campaign_id: Uuid,
    donor_email: &'a str,
    donor_name: Option<&'a str>,
    amount: Box<RawValue>,
    amount_minor: i64,
    refunded_amount_minor: i64,
    currency: &'static str,
    status: &'static str,
    payment_intent_id: Option<&'a str>,
    version: i64,
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

/// The event a donation's change publishes: a snapshot of the donation.
pub fn donation_event(d: &Donation) -> EventEnvelope {
    donation_event_of_type(d.status.event_type(), d)
}

/// A donation snapshot event of a given type (`donation.partially_refunded` has no status of
/// its own).
pub fn donation_event_of_type(event_type: &str, d: &Donation) -> EventEnvelope {
    EventEnvelope::new(
        event_type,
        "donation",
        d.id,
        d.version,
        d.updated_at,
        json!({
            "donation_id": d.id,
            "campaign_id": d.campaign_id,
            "donor_email": d.donor_email.as_str(),
            "amount_minor": d.amount_minor,
            "refunded_minor": d.refunded_minor,
            "currency": d.currency.code(),
            "status": d.status.as_str(),
            "payment_intent_id": d.payment_intent_id,
            "version": d.version,
        }),
    )
}

/// `POST /api/v1/donations`: a `PENDING` donation, and its `donation.created` event in the same
/// transaction.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<CreateDonation>,
) -> Result<Response, ApiError> {
    let req = &body.value;
    let donor_email =
        DonorEmail::parse(&req.donor_email).map_err(|m| ApiError::field("donor_email", m))?;
    let donor_name = match req.donor_name.as_deref().map(str::trim) {
        Some(name) if name.chars().count() > 200 => {
            return Err(ApiError::field(
                "donor_name",
                "must be at most 200 characters",
            ));
        }
        Some(name) if name.chars().any(char::is_control) => {
            return Err(ApiError::field(
                "donor_name",
                "must not contain control characters",
            ));
        }
        Some("") | None => None,
        Some(name) => Some(name.to_string()),
    };
    let requested_currency = req
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(|m| ApiError::field("currency", m))?;
    let (metadata_field, metadata) = match (&req.metadata, &req.extra_data) {
        (Some(m), _) => ("metadata", m.clone()),
        (None, Some(m)) => ("extra_data", m.clone()),
        (None, None) => ("metadata", json!({})),
    };
    let metadata = match metadata {
        Value::Null => json!({}),
        Value::Object(map) => Value::Object(map),
        _ => return Err(ApiError::field(metadata_field, "must be a JSON object")),
    };
    if contains_nul(&metadata) {
        return Err(ApiError::field(
            metadata_field,
            "must not contain NUL characters",
        ));
    }
    // Validate the amount before taking the key, with the currency the client named; the
    // campaign's currency is checked again inside the transaction.
    let parse_currency = requested_currency.unwrap_or(Currency::USD);
    parse_currency
        .parse_amount(req.amount.get(), MAX_DONATION_MAJOR)
        .map_err(|m| ApiError::field("amount", m))?;

    let mut owned =
        match begin_idempotent(&state, &headers, "POST /api/v1/donations", &body.document).await? {
            Begin::Replay(saved) => return Ok(replayed(saved)),
            Begin::Proceed(owned) => owned,
        };
    let donation = match record_donation(
        owned.tx.as_mut(),
        req,
        donor_email,
        donor_name,
        requested_currency,
        metadata,
    )
    .await
    {
        Ok(donation) => donation,
        Err(e) => return Ok(super::refuse(owned, e).await),
    };
    let response =
        commit_response(owned, StatusCode::CREATED, &DonationBody::from(&donation)).await?;
    state.outbox_written();
    tracing::info!(donation_id = %donation.id, campaign_id = %donation.campaign_id, donor = %donation.donor_email, amount_minor = donation.amount_minor, "donation created");
    Ok(response)
}

/// The part of a donation's creation decided under its idempotency key: the campaign must
/// accept it; then the donation and its event are written.
async fn record_donation(
    tx: &mut dyn Tx,
    req: &CreateDonation,
    donor_email: DonorEmail,
    donor_name: Option<String>,
    requested_currency: Option<Currency>,
    metadata: Value,
) -> Result<Donation, ApiError> {
    let campaign = tx
        .campaign_for_share(req.campaign_id)
        .await?
        .ok_or_else(|| ApiError::Unprocessable {
            code: "campaign_not_found",
            field: Some("campaign_id"),
            message: format!("campaign {} does not exist", req.campaign_id),
        })?;
    if campaign.status == CampaignStatus::Closed {
        return Err(ApiError::Unprocessable {
            code: "campaign_closed",
            field: Some("campaign_id"),
            message: format!(
                "campaign {} is closed and accepts no donations",
                campaign.id
            ),
        });
    }
    if let Some(currency) = requested_currency
        && currency != campaign.currency
    {
        return Err(ApiError::Unprocessable {
            code: "currency_mismatch",
            field: Some("currency"),
            message: format!(
                "campaign {} takes donations in {}, not {currency}",
                campaign.id, campaign.currency
            ),
        });
    }
    let amount_minor = campaign
        .currency
        .parse_amount(req.amount.get(), MAX_DONATION_MAJOR)
        .map_err(|m| ApiError::field("amount", m))?;
    let now = crate::domain::now();
    let donation = Donation {
        id: Uuid::new_v4(),
        campaign_id: campaign.id,
        donor_email,
        donor_name,
        amount_minor,
        currency: campaign.currency,
        status: DonationStatus::Pending,
        payment_intent_id: None,
        refunded_minor: 0,
        version: 1,
        metadata,
        created_at: now,
        updated_at: now,
    };
    tx.insert_donation(&donation).await?;
    tx.insert_outbox(&donation_event(&donation)).await?;
    Ok(donation)
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

/// `GET /api/v1/donations/{id}`
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

/// `GET /api/v1/donations/history?donor_email=&status=&campaign_id=&limit=&offset=` (operator),
/// or `?token=…` (the signed link in a donor's receipt, no API key): a bare array, newest first.
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
#[derive(Deserialize)]
struct SetStatus {
    status: String,
    reason: Option<String>,
    expected_version: Option<i64>,
}

/// `PATCH /api/v1/donations/{id}/status` (operator): moves a donation along its life cycle by
/// hand, with a reason, an audit row and the same event an automatic change would publish.
async fn set_status(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    body: ApiJson<SetStatus>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let req = body.value;
    let to = DonationStatus::parse(&req.status).map_err(|m| ApiError::field("status", m))?;
    let reason = req.reason.as_deref().map(str::trim).unwrap_or("");
    if reason.is_empty() {
        return Err(ApiError::field(
            "reason",
            "say why the status is changed by hand; it is kept in the audit trail",
        ));
    }
    let mut tx = state.store.begin().await?;
    let current = tx
        .donation_for_update(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("donation {id} not found")))?;
    if let Some(expected) = req.expected_version
        && expected != current.version
    {
        return Err(ApiError::Conflict(format!(
            "donation {id} is at version {}, not {expected}",
            current.version
        )));
    }
    if !current.status.can_become(to) {
        return Err(ApiError::InvalidTransition(format!(
            "a {} donation cannot become {}",
            current.status.as_str(),
            to.as_str()
        )));
    }
    let now = crate::domain::now();
    if !tx
        .update_donation_status(id, to, current.version, now)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "donation {id} changed concurrently; retry"
        )));
    }
    let updated = Donation {
        status: to,
        version: current.version + 1,
        updated_at: now,
        ..current.clone()
    };
    tx.insert_status_audit(&StatusAudit {
        donation_id: id,
        from: current.status,
        to,
        reason: reason.to_string(),
        actor: operator.actor.clone(),
        at: now,
    })
    .await?;
    tx.insert_outbox(&donation_event(&updated)).await?;
    tx.commit().await?;
    state.outbox_written();
    tracing::info!(donation_id = %id, from = current.status.as_str(), to = to.as_str(), actor = %operator.actor, "donation status changed by an operator");
    Ok(json_response(StatusCode::OK, &DonationBody::from(&updated)))
}
