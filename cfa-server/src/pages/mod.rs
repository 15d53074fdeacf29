//! The donor pages: server-rendered HTML (maud) over the same services as the JSON API.
//!
//! A donor never needs JavaScript: every form is a plain `POST` answered with a `303` redirect,
//! and the thank-you page refreshes itself (`<noscript>` meta refresh) until the donation is
//! settled. With JavaScript, one small embedded script moves the campaign's total as the totals
//! stream (`GET /api/v1/totals/campaigns/{id}/stream`) announces changes, and updates the
//! thank-you page in place. Stylesheet and script are compiled into the binary: no CDN, no build
//! step. Every page is sent with a strict Content-Security-Policy (only this origin's script and
//! style, no inline code, no framing).
//!
//! # Layout
//! - this module: the router, the security headers, the assets, error pages.
//! - `layout`: the page shell, money and date formatting, the status words donors read.
//! - `campaigns`: `/` (campaigns and their progress) and `/campaigns/{id}` with the donate form.
//! - `donate`: `POST /campaigns/{id}/donate`, the form's idempotent path to a donation and its
//!   payment intent.
//! - `checkout`: `/checkout/{intent}`, the sandbox provider's checkout page.
//! - `donor`: `/donations/{id}/thanks` (and its live status) and `/history?token=…`.

mod campaigns;
mod checkout;
mod donate;
mod donor;
mod layout;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;

use crate::http::AppState;

/// The policy of every page: this origin's script and style only, nothing inline, no framing,
/// forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("assets/site.css");
const SCRIPT: &str = include_str!("assets/live.js");

/// The pages' routes, with their security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(campaigns::index))
        .route("/campaigns/{id}", get(campaigns::show))
        .route(
            "/campaigns/{id}/donate",
            axum::routing::post(donate::submit),
        )
        .route(
            "/checkout/{intent}",
            get(checkout::show).post(checkout::confirm),
        )
        .route("/donations/{id}/thanks", get(donor::thanks))
        .route("/donations/{id}/progress", get(donor::progress))
        .route("/history", get(donor::history))
        .route("/assets/site.css", get(stylesheet))
        .route("/assets/live.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
}

/// The headers every page and asset is sent with.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // History links carry a token in their query: never leak it to another site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page with a status; never cached (the pages show live state and carry fresh
/// idempotency keys).
fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A page that says what went wrong and where to go from there.
fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => "This link does not work",
        s if s.is_server_error() => "Something went wrong",
        _ => "We could not do that",
    };
    page(status, layout::message(title, message))
}

/// A failure of the database or a service, as a page: the same status the API would give, the
/// detail only when it is meant for people (never an internal error's).
fn failure(error: crate::http::error::ApiError) -> Response {
    let (status, _) = error.status_and_code();
    let message = if status.is_server_error() {
        tracing::warn!(error = %error, "a page failed");
        "The service is busy or a part of it is down. Please try again in a moment.".to_string()
    } else {
        error.to_string()
    };
    error_page(status, &message)
}

/// A `303 See Other` to `location`: the answer to every form, so a reload never posts again.
fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Parses a path id, or answers with a 404 page (a mistyped link is "not found" for a donor).
#[expect(
    clippy::result_large_err,
    reason = "the error is the page to answer with at once; boxing it would gain nothing"
)]
fn path_id(raw: &str) -> Result<uuid::Uuid, Response> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "There is no such page."))
}

#[cfg(test)]
mod tests {
    use super::STYLESHEET;

    /// The colour a custom property of the stylesheet is set to, as RGB.
    fn colour(name: &str) -> [f64; 3] {
        let marker = format!("--{name}: #");
        let start = STYLESHEET.find(&marker).expect("the colour is defined") + marker.len();
        let hex = &STYLESHEET[start..start + 6];
        let channel =
            |i: usize| f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")) / 255.0;
        [channel(0), channel(2), channel(4)]
    }

    /// WCAG 2's relative luminance and contrast ratio.
    fn contrast(a: &str, b: &str) -> f64 {
        let luminance = |[r, g, b]: [f64; 3]| {
            let linear = |c: f64| {
                if c <= 0.039_28 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
        };
        let (x, y) = (luminance(colour(a)), luminance(colour(b)));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn text_and_controls_meet_wcag_aa_contrast() {
        // (foreground, background): every pair the stylesheet puts text on.
        for (fg, bg) in [
            ("ink", "paper"),
            ("ink", "tint"),
            ("muted", "paper"),
            ("muted", "tint"),
            ("brand", "paper"),
            ("brand", "tint"),
            ("paper", "brand"),
            ("link", "paper"),
            ("error", "paper"),
        ] {
            let ratio = contrast(fg, bg);
            assert!(ratio >= 4.5, "{fg} on {bg}: {ratio:.2} < 4.5");
        }
        // Borders of inputs and cards are user-interface components: 3:1.
        let ratio = contrast("line", "paper");
        assert!(ratio >= 3.0, "line on paper: {ratio:.2} < 3");
    }

    #[test]
    fn the_assets_load_nothing_from_elsewhere() {
        for asset in [STYLESHEET, super::SCRIPT] {
            assert!(!asset.contains("http://") && !asset.contains("https://"));
            assert!(!asset.contains("@import"));
        }
    }
}
