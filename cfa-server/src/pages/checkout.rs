//! `/checkout/{intent}`: the sandbox provider's checkout page, standing where a real provider's
//! hosted page would. Served only while the sandbox is on (`payments.sandbox`).
//!
//! The donor picks an outcome (pay, decline, authorize only); the sandbox records it and sends
//! its signed webhooks, exactly as `POST /sandbox/v1/intents/{id}/confirm` does, and the donor is
//! sent to the thank-you page. Confirming again with the same outcome (a double click, a reload)
//! changes nothing.

use std::collections::HashMap;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::layout::{money, shell};
use super::{error_page, failure, page, see_other};
use crate::domain::payment::{Payment, PaymentStatus};
use crate::http::AppState;
use crate::services::payments::provider::ProviderError;
use crate::services::payments::sandbox::{ConfirmOutcome, Sandbox};

#[expect(
    clippy::result_large_err,
    reason = "the error is the page to answer with at once; boxing it would gain nothing"
)]
fn sandbox(state: &AppState) -> Result<&Sandbox, Response> {
    state.sandbox.as_deref().ok_or_else(|| {
        error_page(
            StatusCode::NOT_FOUND,
            "The sandbox payment provider is off on this server, so there is no checkout page.",
        )
    })
}

async fn payment(state: &AppState, intent: &str) -> Result<Payment, Response> {
    match state.store.payment_by_intent(intent).await {
        Ok(Some(payment)) => Ok(payment),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            "There is no such payment.",
        )),
        Err(e) => Err(failure(e.into())),
    }
}

/// `GET /checkout/{intent}`: what is being paid, and the three outcomes.
pub(super) async fn show(State(state): State<AppState>, Path(intent): Path<String>) -> Response {
    if let Err(page) = sandbox(&state) {
        return page;
    }
    let payment = match payment(&state, &intent).await {
        Ok(payment) => payment,
        Err(page) => return page,
    };
    if payment.status != PaymentStatus::Initiated {
        return see_other(&format!("/donations/{}/thanks", payment.donation_id));
    }
    let title = match state.store.donation(payment.donation_id).await {
        Ok(Some(donation)) => match state.store.campaign(donation.campaign_id).await {
            Ok(Some(campaign)) => campaign.title,
            Ok(None) => String::new(),
            Err(e) => return failure(e.into()),
        },
        Ok(None) => String::new(),
        Err(e) => return failure(e.into()),
    };
    let amount = money(payment.currency, payment.amount_minor);
    let action = format!("/checkout/{intent}");
    let body = html! {
        h1 { "Sandbox checkout" }
        p.notice { "This is the built-in sandbox payment provider: no money moves. A real provider's payment page stands here in production." }
        p.amount { "Pay " strong { (amount) } @if !title.is_empty() { " to " (title) } }
        form.checkout method="post" action=(action) {
            button type="submit" name="outcome" value="succeed" { "Pay " (amount) }
            button.secondary type="submit" name="outcome" value="authorize_only" { "Authorize only" }
            button.secondary type="submit" name="outcome" value="decline" { "Decline the payment" }
        }
    };
    page(StatusCode::OK, shell("Sandbox checkout", None, body))
}

/// `POST /checkout/{intent}`: confirms the intent with the chosen outcome.
pub(super) async fn confirm(
    State(state): State<AppState>,
    Path(intent): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let sandbox = match sandbox(&state) {
        Ok(sandbox) => sandbox,
        Err(page) => return page,
    };
    let outcome = form
        .ok()
        .and_then(|Form(fields)| fields.get("outcome").cloned())
        .and_then(|o| ConfirmOutcome::parse(&o).ok());
    let Some(outcome) = outcome else {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose one of the buttons: pay, authorize only or decline.",
        );
    };
    let payment = match payment(&state, &intent).await {
        Ok(payment) => payment,
        Err(page) => return page,
    };
    let mut tx = match state.store.begin().await {
        Ok(tx) => tx,
        Err(e) => return failure(e.into()),
    };
    match sandbox.confirm(tx.as_mut(), &intent, outcome).await {
        Ok(_) => {}
        Err(ProviderError::Refused(m)) => {
            let _ = tx.rollback().await;
            return error_page(StatusCode::CONFLICT, &m);
        }
        Err(ProviderError::Store(e)) => return failure(e.into()),
    }
    if let Err(e) = tx.commit().await {
        return failure(e.into());
    }
    sandbox.wake();
    see_other(&format!("/donations/{}/thanks", payment.donation_id))
}
