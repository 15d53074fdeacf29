//! `POST /campaigns/{id}/donate`: the donate form, through the donation and intent services.
//!
//! The form carries an idempotency key rendered into it, so a double click, a reload of the
//! `POST` or a retry after a lost answer makes one donation: the first request creates the
//! donation and its payment intent in one transaction and saves where it sent the donor; every
//! later one with the key is redirected to the same place. A second submission that arrives while
//! the first is still running waits for it (a browser shows only the last answer) instead of
//! getting the API's `409`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::campaigns::{DonateForm, render};
use super::{error_page, failure, path_id, see_other};
use crate::domain::email::DonorEmail;
use crate::domain::money::MAX_DONATION_MAJOR;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::idempotency::{self, Begin, IdempotencyError, IdempotencyKey, IdempotentRequest};
use crate::services::donations::{self, NewDonation, parse_donor_name};
use crate::services::payments::intents::{self, NewIntent};

/// How long a second submission waits for the first before giving up.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);

/// A valid form, ready for the services.
struct Valid {
    key: IdempotencyKey,
    donation: NewDonation,
}

/// Reads the form; on a mistake, the form to show again (same key: nothing was saved).
#[expect(
    clippy::result_large_err,
    reason = "the error is the form to show again, built once and answered at once"
)]
fn validate(
    campaign: &crate::domain::campaign::Campaign,
    fields: &HashMap<String, String>,
) -> Result<Valid, DonateForm> {
    let get = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut form = DonateForm {
        key: get("idempotency_key"),
        preset: get("amount"),
        other: get("other_amount"),
        name: get("donor_name"),
        email: get("donor_email"),
        errors: Vec::new(),
        notice: None,
    };
    let key = IdempotencyKey::parse(&form.key);
    if key.is_err() {
        // A form without its key (or a hand-made one): give it a fresh one and ask again.
        form.key = Uuid::new_v4().to_string();
        form.notice = Some("The form expired; please check it and donate again.".into());
    }
    let amount = if form.other.is_empty() {
        form.preset.clone()
    } else {
        form.other.clone()
    };
    let currency = campaign.currency;
    if amount.is_empty() {
        form.errors
            .push(("other_amount", "Choose or enter an amount.".into()));
    } else if let Err(m) = currency.parse_amount(&amount, MAX_DONATION_MAJOR) {
        form.errors.push((
            "other_amount",
            format!(
                "Enter an amount in {} such as 25 or 25.50: {m}.",
                currency.code()
            ),
        ));
    }
    let name = parse_donor_name(Some(&form.name))
        .map_err(|m| form.errors.push(("donor_name", format!("Your name {m}."))))
        .ok()
        .flatten();
    let email = DonorEmail::parse(&form.email)
        .map_err(|m| {
            let message = format!("Enter the e-mail address the receipt goes to ({m}).");
            form.errors.push(("donor_email", message));
        })
        .ok();
    match (key, email) {
        (Ok(key), Some(donor_email)) if form.errors.is_empty() => Ok(Valid {
            key,
            donation: NewDonation {
                campaign_id: campaign.id,
                donor_email,
                donor_name: name,
                amount,
                currency: None,
                metadata: json!({"source": "donate-page"}),
            },
        }),
        _ => Err(form),
    }
}

/// `POST /campaigns/{id}/donate`.
pub(super) async fn submit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(page) => return page,
    };
    let Ok(Form(fields)) = form else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The form could not be read. Please go back and donate again.",
        );
    };
    let campaign = match state.store.campaign(id).await {
        Ok(Some(campaign)) => campaign,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, "There is no such campaign."),
        Err(e) => return failure(e.into()),
    };
    let valid = match validate(&campaign, &fields) {
        Ok(valid) => valid,
        Err(form) => return render(&state, id, StatusCode::UNPROCESSABLE_ENTITY, form).await,
    };
    match donate(&state, &valid).await {
        Ok(location) => see_other(&location),
        Err(Refused::Form(message)) => {
            let mut form = DonateForm::fresh();
            form.notice = Some(message);
            render(&state, id, StatusCode::UNPROCESSABLE_ENTITY, form).await
        }
        Err(Refused::Failed(e)) => failure(e),
    }
}

/// Why a submission did not become a donation.
enum Refused {
    /// A refusal to show on the form (the campaign closed, the key reused for another form).
    Form(String),
    /// Something the donor cannot fix.
    Failed(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Failed(e)
    }
}

/// The request as the idempotency key fingerprints it: what the donor asked for.
fn document(donation: &NewDonation) -> Value {
    json!({
        "campaign_id": donation.campaign_id,
        "donor_email": donation.donor_email.as_str(),
        "donor_name": donation.donor_name,
        "amount": donation.amount,
    })
}

/// Creates the donation and its intent once per key; answers where to send the donor.
async fn donate(state: &AppState, valid: &Valid) -> Result<String, Refused> {
    let scope = format!(
        "page: POST /campaigns/{}/donate",
        valid.donation.campaign_id
    );
    let request = IdempotentRequest::new(&scope, valid.key.clone(), &document(&valid.donation));
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    let mut owned = loop {
        match idempotency::begin(
            state.store.as_ref(),
            &state.gate,
            &state.replays,
            Some(request.clone()),
        )
        .await
        {
            Ok(Begin::Replay(saved)) => return replay(saved.status_code, &saved.body),
            Ok(Begin::Proceed(owned)) => break owned,
            Err(IdempotencyError::InFlight) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(IdempotencyError::Mismatch) => {
                return Err(Refused::Form(
                    "This form was already used for another donation; please check it and \
                     donate again."
                        .into(),
                ));
            }
            Err(e) => return Err(ApiError::from(e).into()),
        }
    };
    let donation =
        match donations::create(owned.tx.as_mut(), valid.donation.clone(), &state.currencies).await
        {
            Ok(donation) => donation,
            Err(e) => {
                let error = ApiError::from(e);
                let message = error.to_string();
                crate::http::refuse(owned, error).await;
                return Err(Refused::Form(message));
            }
        };
    let intent = match &state.provider {
        Some(provider) => {
            let command = NewIntent {
                donation_id: donation.id,
                amount: valid.donation.amount.clone(),
                currency: None,
            };
            match intents::create(owned.tx.as_mut(), command, provider.as_ref()).await {
                Ok(payment) => Some(payment.payment_intent_id),
                Err(e) => {
                    let _ = owned.abandon().await;
                    return Err(ApiError::from(e).into());
                }
            }
        }
        None => None,
    };
    let location = destination(state, donation.id, intent.as_deref());
    let saved = json!({
        "donation_id": donation.id,
        "payment_intent_id": intent,
        "location": location,
    });
    let bytes = serde_json::to_vec(&saved).map_err(|e| ApiError::Internal(e.to_string()))?;
    owned
        .save(201, &bytes)
        .await
        .map_err(|e| Refused::Failed(e.into()))?;
    state.outbox_written();
    crate::metrics::donation(crate::domain::donation::DonationStatus::Pending);
    tracing::info!(donation_id = %donation.id, campaign_id = %donation.campaign_id, donor = %donation.donor_email, amount_minor = donation.amount_minor, "donation created from the donate page");
    Ok(location)
}

/// Where the donor goes next: the sandbox's checkout, or (without one in this process) the
/// thank-you page, which shows the donation waiting for its payment.
fn destination(state: &AppState, donation: Uuid, intent: Option<&str>) -> String {
    match (intent, &state.sandbox) {
        (Some(intent), Some(_)) => format!("/checkout/{intent}"),
        _ => format!("/donations/{donation}/thanks"),
    }
}

/// The answer saved with the key: the same redirect, or the same refusal.
fn replay(status: u16, body: &[u8]) -> Result<String, Refused> {
    let saved: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status == 201
        && let Some(location) = saved["location"].as_str()
    {
        return Ok(location.to_string());
    }
    let detail = saved["detail"]
        .as_str()
        .unwrap_or("this donation was refused");
    Err(Refused::Form(detail.to_string()))
}
