//! The OpenAPI document and the route that serves it. The document is generated from the same
//! router [`super::app`] serves, so what is documented is what answers.

use std::sync::LazyLock;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

/// The OpenAPI document of the whole platform, every role included: behind the gateway a client
/// sees all of it, whichever process answers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    use utoipa::openapi::tag::TagBuilder;
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder};

    let mut document = super::api(|_| true).into_openapi();
    document.info = InfoBuilder::new()
        .title("CareForAll API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Campaigns, donations, payments and their provider webhooks, live totals, donor \
             notifications and operator views. Bodies are compact JSON; amounts are decimal \
             numbers with at most two decimals, and responses also carry the integer \
             `amount_minor`. Errors are `{detail, code, field?}`. Operator endpoints need \
             `Authorization: Bearer <key>` whenever `auth.api_keys` is configured. Every \
             `/api/v1` endpoint may also answer 429 (rate limited, with `Retry-After`), 503 \
             `overloaded` (too many requests are waiting for the database: retry after \
             `Retry-After`) and 503 `backend_unavailable` (the database is down).",
        ))
        .build();
    let components = document
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        "operator_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An operator key from `auth.api_keys`."))
                .build(),
        ),
    );
    document.tags = Some(
        [
            ("campaigns", "Fundraising campaigns (donation service)."),
            (
                "donations",
                "Donations, donor history and the operator's status override (donation service).",
            ),
            (
                "payments",
                "Payment intents, provider webhooks and refunds (payment service).",
            ),
            (
                "sandbox",
                "The built-in sandbox payment provider, where a donor confirms an intent.",
            ),
            ("totals", "Live campaign totals (totals service)."),
            (
                "notifications",
                "Receipts and other mail to donors (notification service).",
            ),
            (
                "admin",
                "Operator views: outbox, dead letters, webhook deliveries, counts.",
            ),
            ("health", "Liveness, readiness and this document."),
        ]
        .into_iter()
        .map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        })
        .collect(),
    );
    document
}

/// The document, serialised once: it depends only on the code.
static OPENAPI_JSON: LazyLock<bytes::Bytes> = LazyLock::new(|| {
    serde_json::to_vec(&openapi())
        .expect("an OpenAPI document serialises to JSON")
        .into()
});

/// This OpenAPI document, generated from the handlers' types.
///
/// Open (no key) in every process; behind the gateway it describes every service.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value))
)]
pub(super) async fn openapi_json() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON.clone(),
    )
        .into_response()
}
