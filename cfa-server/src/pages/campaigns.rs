//! `/` (the campaigns and their progress) and `/campaigns/{id}` (one campaign, its live total
//! and the donate form).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use uuid::Uuid;

use super::layout::{self, money, progress, shell};
use super::{failure, page, path_id};
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::money::Currency;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::services::totals::current;
use crate::storage::CampaignTotals;

/// How many campaigns the front page lists.
const LISTED: i64 = 50;

/// What the donate form shows: the donor's input (kept after an error), the idempotency key it
/// carries, and what was wrong.
#[derive(Clone, Debug, Default)]
pub(super) struct DonateForm {
    /// The key that makes a double click or a reload one donation.
    pub key: String,
    /// The preset amount chosen.
    pub preset: String,
    /// The amount typed.
    pub other: String,
    /// The donor's name.
    pub name: String,
    /// The donor's address.
    pub email: String,
    /// `(field, message)` for each invalid field.
    pub errors: Vec<(&'static str, String)>,
    /// A refusal that concerns no single field (the campaign closed meanwhile).
    pub notice: Option<String>,
}

impl DonateForm {
    /// An empty form with a fresh key.
    pub fn fresh() -> DonateForm {
        DonateForm {
            key: Uuid::new_v4().to_string(),
            ..DonateForm::default()
        }
    }

    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }
}

/// The amounts offered with one click, in major units of the currency.
fn presets(currency: Currency) -> [i64; 4] {
    if currency.exponent() == 0 {
        [1_000, 3_000, 5_000, 10_000]
    } else {
        [10, 25, 50, 100]
    }
}

/// Totals for a campaign through the totals service (cache, then read model).
async fn totals_of(state: &AppState, campaign: &Campaign) -> Result<CampaignTotals, ApiError> {
    let found = current(
        state.store.as_ref(),
        state.totals_cache.as_ref(),
        campaign.id,
    )
    .await?;
    Ok(found.map_or_else(|| CampaignTotals::empty(campaign), |c| c.totals))
}

/// `GET /`: the active campaigns with their progress.
pub(super) async fn index(State(state): State<AppState>) -> Response {
    let campaigns = match state
        .store
        .campaigns(Some(CampaignStatus::Active), LISTED, 0)
        .await
    {
        Ok(campaigns) => campaigns,
        Err(e) => return failure(e.into()),
    };
    let mut cards = Vec::with_capacity(campaigns.len());
    for campaign in &campaigns {
        match totals_of(&state, campaign).await {
            Ok(totals) => cards.push(card(campaign, &totals)),
            Err(e) => return failure(e),
        }
    }
    let body = html! {
        h1 { "Give to a campaign" }
        @if cards.is_empty() {
            p { "There are no open campaigns yet. An operator creates them with "
                code { "cfa-cli campaigns create" } "." }
        } @else {
            ul.cards { @for card in &cards { li { (card) } } }
        }
    };
    page(StatusCode::OK, shell("Campaigns", None, body))
}

fn card(campaign: &Campaign, totals: &CampaignTotals) -> Markup {
    let href = format!("/campaigns/{}", campaign.id);
    html! {
        article.card {
            h2 { a href=(href) { (campaign.title) } }
            (progress(&format!("progress-{}", campaign.id), campaign.currency,
                totals.total_minor, totals.goal_minor, totals.unique_donors))
        }
    }
}

/// `GET /campaigns/{id}`: the campaign, its live total and a fresh donate form.
pub(super) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(page) => return page,
    };
    render(&state, id, StatusCode::OK, DonateForm::fresh()).await
}

/// The campaign page with `form` as given (after an error, the donor's input and its key).
pub(super) async fn render(
    state: &AppState,
    id: Uuid,
    status: StatusCode,
    form: DonateForm,
) -> Response {
    let campaign = match state.store.campaign(id).await {
        Ok(Some(campaign)) => campaign,
        Ok(None) => {
            return super::error_page(StatusCode::NOT_FOUND, "There is no such campaign.");
        }
        Err(e) => return failure(e.into()),
    };
    let totals = match totals_of(state, &campaign).await {
        Ok(totals) => totals,
        Err(e) => return failure(e),
    };
    let title = if form.errors.is_empty() && form.notice.is_none() {
        campaign.title.clone()
    } else {
        format!("Check your donation: {}", campaign.title)
    };
    page(
        status,
        shell(&title, None, campaign_body(&campaign, &totals, &form)),
    )
}

fn campaign_body(campaign: &Campaign, totals: &CampaignTotals, form: &DonateForm) -> Markup {
    let stream = format!("/api/v1/totals/campaigns/{}/stream", campaign.id);
    let currency = campaign.currency;
    html! {
        article.campaign data-stream=(stream) data-currency=(currency.code())
            data-exponent=(currency.exponent()) data-symbol=(symbol(currency)) {
            h1 { (campaign.title) }
            p.started { "Started " (layout::date(currency, campaign.created_at)) }
            div aria-live="polite" {
                (progress("progress", currency, totals.total_minor, totals.goal_minor,
                    totals.unique_donors))
            }
            @if campaign.status == CampaignStatus::Closed {
                p.notice { "This campaign is closed and takes no more donations. Thank you to everyone who gave." }
            } @else {
                (donate_form(campaign, form))
            }
        }
    }
}

/// The prefix `Currency::display` writes, for the script that formats live totals the same way.
fn symbol(currency: Currency) -> String {
    let shown = currency.display(0);
    shown.trim_end_matches(['0', '.']).to_string()
}

fn donate_form(campaign: &Campaign, form: &DonateForm) -> Markup {
    let currency = campaign.currency;
    let action = format!("/campaigns/{}/donate", campaign.id);
    let chosen = if form.preset.is_empty() && form.other.is_empty() {
        presets(currency)[1].to_string()
    } else {
        form.preset.clone()
    };
    html! {
        form.donate #donate method="post" action=(action) novalidate {
            h2 { "Donate" }
            @if !form.errors.is_empty() || form.notice.is_some() {
                div.errors role="alert" tabindex="-1" #errors {
                    h3 { "Please check your donation" }
                    ul {
                        @if let Some(notice) = &form.notice { li { (notice) } }
                        @for (field, message) in &form.errors {
                            li { a href=(format!("#{field}")) { (message) } }
                        }
                    }
                }
            }
            input type="hidden" name="idempotency_key" value=(form.key);
            fieldset {
                legend { "Amount (" (currency.code()) ")" }
                div.presets {
                    @for major in presets(currency) {
                        @let value = major.to_string();
                        @let radio = format!("amount-{major}");
                        div.preset {
                            input type="radio" name="amount" id=(radio) value=(value)
                                checked[value == chosen];
                            label for=(radio) {
                                (money(currency, major * 10_i64.pow(currency.exponent())))
                            }
                        }
                    }
                }
                (field("other_amount", &format!("Other amount in {}", currency.code()),
                    "text", &form.other, "off", form.error("other_amount"), false))
            }
            (field("donor_name", "Your name (optional)", "text", &form.name, "name",
                form.error("donor_name"), false))
            (field("donor_email", "Your e-mail address (for the receipt)", "email", &form.email,
                "email", form.error("donor_email"), true))
            button type="submit" { "Donate" }
        }
    }
}

/// A labelled input with its error, tied together for screen readers.
fn field(
    name: &'static str,
    label: &str,
    kind: &str,
    value: &str,
    autocomplete: &str,
    error: Option<&str>,
    required: bool,
) -> Markup {
    let hint = format!("{name}-error");
    html! {
        div.field {
            label for=(name) { (label) }
            @if let Some(error) = error {
                p.error id=(hint) { (error) }
            }
            input type=(kind) id=(name) name=(name) value=(value) autocomplete=(autocomplete)
                inputmode=[(name == "other_amount").then_some("decimal")]
                required[required]
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| hint.as_str())];
        }
    }
}
