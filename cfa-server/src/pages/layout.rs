//! The page shell every page shares, and how money, dates and states read to a donor.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::domain::donation::DonationStatus;
use crate::domain::money::Currency;

/// A whole page: the document, its one `h1` (in `body`), the stylesheet and the script.
/// `refresh` makes a browser without JavaScript reload the page every so many seconds.
pub(super) fn shell(title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · CareForAll" }
                link rel="stylesheet" href="/assets/site.css";
                script src="/assets/live.js" defer {}
                @if let Some(seconds) = refresh {
                    noscript { meta http-equiv="refresh" content=(seconds); }
                }
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.site {
                    a.brand href="/" { "CareForAll" }
                }
                main #main { (body) }
                footer.site {
                    p { "CareForAll: every donation counted once, every receipt sent." }
                }
            }
        }
    }
}

/// A page with a heading, a sentence, and the way back.
pub(super) fn message(title: &str, text: &str) -> Markup {
    shell(
        title,
        None,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/" { "See all campaigns" } }
        },
    )
}

/// An amount as people read it in the campaign's currency: `$1,234.50`, `¥500`.
pub(super) fn money(currency: Currency, minor: i64) -> String {
    currency.display(minor)
}

/// A date as the campaign's public writes it: `December 2, 2026` for US dollars, `2026-12-02`
/// for yen and won, `2 December 2026` elsewhere; the exact time is in `datetime`.
pub(super) fn date(currency: Currency, at: DateTime<Utc>) -> Markup {
    let text = match currency.code() {
        "USD" => at.format("%B %-d, %Y").to_string(),
        "JPY" | "KRW" => at.format("%Y-%m-%d").to_string(),
        _ => at.format("%-d %B %Y").to_string(),
    };
    html! { time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) { (text) } }
}

/// What a donation's state means to its donor.
pub(super) fn status_words(status: DonationStatus) -> &'static str {
    match status {
        DonationStatus::Pending => "Waiting for the payment",
        DonationStatus::Completed => "Completed",
        DonationStatus::Failed => "Payment declined",
        DonationStatus::Refunded => "Refunded",
    }
}

/// How far a campaign is toward its goal, in whole percent (0–100).
pub(super) fn percent(total_minor: i64, goal_minor: i64) -> i64 {
    if goal_minor <= 0 {
        return 0;
    }
    (total_minor.saturating_mul(100) / goal_minor).clamp(0, 100)
}

/// A campaign's progress: the figures, and a native progress bar with its label.
pub(super) fn progress(
    id: &str,
    currency: Currency,
    total_minor: i64,
    goal_minor: i64,
    donors: i64,
) -> Markup {
    let percent = percent(total_minor, goal_minor);
    html! {
        div.progress {
            p.figures {
                strong data-total { (money(currency, total_minor)) }
                " raised of "
                span data-goal { (money(currency, goal_minor)) }
                " goal · "
                span data-donors { (donors_words(donors)) }
            }
            label.visually-hidden for=(id) { "Progress toward the goal" }
            progress id=(id) max="100" value=(percent) data-percent { (percent) "%" }
        }
    }
}

/// `1 donor`, `12 donors`.
pub(super) fn donors_words(donors: i64) -> String {
    if donors == 1 {
        "1 donor".into()
    } else {
        format!("{donors} donors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_dates_read_like_the_campaigns_currency() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let currency = |code| Currency::parse(code).expect("a currency");
        let usd = currency("USD");
        let jpy = currency("JPY");
        let eur = currency("EUR");
        assert_eq!(money(usd, 123_450), "$1,234.50");
        assert_eq!(money(jpy, 500), "¥500");
        assert!(date(usd, at).into_string().contains("December 2, 2026"));
        assert!(date(jpy, at).into_string().contains("2026-12-02"));
        assert!(date(eur, at).into_string().contains("2 December 2026"));
        assert_eq!(percent(2_500, 10_000), 25);
        assert_eq!(percent(20_000, 10_000), 100, "capped at the goal");
        assert_eq!(donors_words(1), "1 donor");
    }
}
