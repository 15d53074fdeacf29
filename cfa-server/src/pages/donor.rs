//! The donor's own pages: `/donations/{id}/thanks` (the donation's state until its receipt is
//! sent, with `/donations/{id}/progress` for the script that updates it in place) and
//! `/history?token=…`, opened from the signed link in every receipt.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Serialize;
use uuid::Uuid;

use super::layout::{self, money, shell, status_words};
use super::{error_page, failure, page, path_id};
use crate::domain::donation::{Donation, DonationStatus};
use crate::domain::payment::PaymentStatus;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::storage::HistoryFilter;

/// Seconds between reloads of the thank-you page in a browser without JavaScript.
const REFRESH_SECONDS: u32 = 2;

/// Where a donation stands, in the donor's words.
#[derive(Serialize)]
pub(super) struct Progress {
    /// `PENDING`, `COMPLETED`, `FAILED` or `REFUNDED`.
    status: &'static str,
    /// One line: what happened.
    headline: String,
    /// What happens next.
    detail: String,
    /// Nothing more will change by itself: stop refreshing.
    settled: bool,
}

async fn progress_of(state: &AppState, donation: &Donation) -> Result<Progress, ApiError> {
    let receipt = state
        .store
        .notifications(Some(donation.id), None, 10, 0)
        .await?
        .into_iter()
        .find(|n| n.kind == "receipt");
    let to = donation.donor_email.masked();
    let (headline, detail, settled) = match donation.status {
        DonationStatus::Completed => match receipt.as_ref().map(|r| r.status.as_str()) {
            Some("SENT") => (
                "Thank you! Your donation is complete.".to_string(),
                format!("Your receipt was sent to {to}. It has a link to all your donations."),
                true,
            ),
            Some("DEAD") => (
                "Thank you! Your donation is complete.".to_string(),
                format!("We could not send the receipt to {to}; the charity has been told."),
                true,
            ),
            _ => (
                "Thank you! Your donation is complete.".to_string(),
                format!("Sending your receipt to {to}…"),
                false,
            ),
        },
        DonationStatus::Pending => {
            let authorized = match &donation.payment_intent_id {
                Some(intent) => state
                    .store
                    .payment_by_intent(intent)
                    .await?
                    .is_some_and(|p| p.status == PaymentStatus::Authorized),
                None => false,
            };
            // Not settled: the capture often follows within a second (a provider sends
            // AUTHORIZED, then CAPTURED), and a page that stopped refreshing here would say
            // "later" for good. An authorize-only payment keeps its page refreshing until the
            // donor leaves it, which is one cheap read every few seconds.
            if authorized {
                (
                    "Your payment is authorized.".to_string(),
                    "The charity captures it later; your receipt follows then.".to_string(),
                    false,
                )
            } else {
                (
                    "Waiting for the payment…".to_string(),
                    "This page updates by itself as soon as the payment provider confirms."
                        .to_string(),
                    false,
                )
            }
        }
        DonationStatus::Failed => (
            "The payment was declined.".to_string(),
            "Nothing was charged. You can try again from the campaign's page.".to_string(),
            true,
        ),
        DonationStatus::Refunded => (
            "This donation was refunded.".to_string(),
            "The money went back to you.".to_string(),
            true,
        ),
    };
    Ok(Progress {
        status: donation.status.as_str(),
        headline,
        detail,
        settled,
    })
}

async fn donation(state: &AppState, raw: &str) -> Result<Donation, Response> {
    let id = path_id(raw)?;
    match state.store.donation(id).await {
        Ok(Some(donation)) => Ok(donation),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            "There is no such donation.",
        )),
        Err(e) => Err(failure(e.into())),
    }
}

/// `GET /donations/{id}/thanks`.
pub(super) async fn thanks(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let donation = match donation(&state, &id).await {
        Ok(donation) => donation,
        Err(page) => return page,
    };
    let progress = match progress_of(&state, &donation).await {
        Ok(progress) => progress,
        Err(e) => return failure(e),
    };
    let campaign = match state.store.campaign(donation.campaign_id).await {
        Ok(campaign) => campaign,
        Err(e) => return failure(e.into()),
    };
    let campaign_link = format!("/campaigns/{}", donation.campaign_id);
    let body = html! {
        section.thanks data-progress=(format!("/donations/{}/progress", donation.id)) {
            h1 data-headline { (progress.headline) }
            p role="status" data-detail { (progress.detail) }
            dl.summary {
                dt { "Amount" } dd { (money(donation.currency, donation.amount_minor)) }
                @if let Some(campaign) = &campaign {
                    dt { "Campaign" } dd { a href=(campaign_link) { (campaign.title) } }
                }
                dt { "Date" } dd { (layout::date(donation.currency, donation.created_at)) }
                dt { "State" } dd data-state { (status_words(donation.status)) }
            }
            p { a href=(campaign_link) { "Back to the campaign" } }
        }
    };
    let refresh = (!progress.settled).then_some(REFRESH_SECONDS);
    page(StatusCode::OK, shell("Your donation", refresh, body))
}

/// `GET /donations/{id}/progress`: the thank-you page's state as JSON, for its script.
pub(super) async fn progress(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let donation = match donation(&state, &id).await {
        Ok(donation) => donation,
        Err(page) => return page,
    };
    match progress_of(&state, &donation).await {
        Ok(progress) => {
            let mut response = Json(serde_json::json!({
                "status": progress.status,
                "state": status_words(donation.status),
                "headline": progress.headline,
                "detail": progress.detail,
                "settled": progress.settled,
            }))
            .into_response();
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) => failure(e),
    }
}

/// `GET /history?token=…`: the donations of the address the signed link was made for.
pub(super) async fn history(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(token) = query.get("token") else {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "Open your history from the link in one of your receipts.",
        );
    };
    let email = match state.history_links.verify(token) {
        Ok(email) => email,
        Err(m) => {
            return error_page(
                StatusCode::UNAUTHORIZED,
                &format!("This history link does not work: {m}."),
            );
        }
    };
    let filter = HistoryFilter {
        donor_email: Some(email.clone()),
        status: None,
        campaign_id: None,
        limit: 100,
        offset: 0,
    };
    let donations = match state.store.donation_history(&filter).await {
        Ok(donations) => donations,
        Err(e) => return failure(e.into()),
    };
    let mut titles: HashMap<Uuid, String> = HashMap::new();
    for d in &donations {
        if titles.contains_key(&d.campaign_id) {
            continue;
        }
        match state.store.campaign(d.campaign_id).await {
            Ok(c) => titles.insert(d.campaign_id, c.map(|c| c.title).unwrap_or_default()),
            Err(e) => return failure(e.into()),
        };
    }
    let masked = crate::domain::email::mask_email(&email);
    let body = html! {
        h1 { "Your donations" }
        p { "Every donation made with " strong { (masked) } ", newest first." }
        @if donations.is_empty() {
            p { "There are no donations yet." }
        } @else {
            div.table {
                table {
                    caption.visually-hidden { "Your donations" }
                    thead { tr { th scope="col" { "Date" } th scope="col" { "Campaign" }
                        th scope="col" { "Amount" } th scope="col" { "State" } } }
                    tbody {
                        @for d in &donations {
                            tr {
                                td { (layout::date(d.currency, d.created_at)) }
                                td { a href=(format!("/campaigns/{}", d.campaign_id)) {
                                    (titles.get(&d.campaign_id).map_or("", String::as_str)) } }
                                td.num { (money(d.currency, d.amount_minor)) }
                                td { (status_words(d.status)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, shell("Your donations", None, body))
}
