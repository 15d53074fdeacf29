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
    add_layer_responses(&mut document);
    document
}

/// The answers the layers in front of every handler give, added to each operation they can
/// reach, so a generated client finds every status on the operation itself: 503 (timeout,
/// database, admission), 429 (rate limits), 400/413/415 (the JSON body extractor) and 401 (the
/// operator key). Which operation each applies to comes from the same predicates the layers use.
fn add_layer_responses(document: &mut utoipa::openapi::OpenApi) {
    use axum::http::Method;

    for (path, item) in &mut document.paths.paths {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, response: utoipa::openapi::Response| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| response.into());
            };
            let needs_turn = super::admission::needs_a_turn(&method, path, None);
            add("503", unavailable(needs_turn));
            if crate::gateway::limits::applies_to(path) {
                add(
                    "429",
                    error_response(
                        "Rate limited (`rate_limited`): retry after `Retry-After` seconds",
                        true,
                    ),
                );
            }
            if operation.request_body.is_some() {
                add(
                    "400",
                    error_response("The body is not valid JSON (`malformed_json`)", false),
                );
                add(
                    "413",
                    error_response(
                        "The body is larger than `server.body_limit_bytes` (`payload_too_large`)",
                        false,
                    ),
                );
                add(
                    "415",
                    error_response(
                        "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)",
                        false,
                    ),
                );
            }
            if requires_operator_key(operation.security.as_deref()) {
                add(
                    "401",
                    error_response("No valid operator key (`unauthorized`)", false),
                );
            }
            if mentions_operator_key(operation.security.as_deref()) || path.starts_with("/sandbox/")
            {
                add(
                    "403",
                    error_response(
                        "`local_only`: the server listens off loopback without `auth.api_keys` \
                         (or, for the sandbox, without `payments.sandbox`), so it answers this \
                         only from its own host",
                        false,
                    ),
                );
            }
        }
    }
}

/// The 503 an operation can answer: `overloaded` only where it waits for a database turn.
fn unavailable(needs_turn: bool) -> utoipa::openapi::Response {
    if needs_turn {
        error_response(
            "`overloaded`: too many requests are waiting for the database, retry after \
             `Retry-After` seconds; `backend_unavailable`: the database cannot be reached; \
             `timeout`: the request ran longer than `server.request_timeout_seconds`",
            true,
        )
    } else {
        error_response(
            "`timeout`: the request ran longer than `server.request_timeout_seconds`",
            false,
        )
    }
}

/// An `Error` response, with a `Retry-After` header when `retry_after`.
fn error_response(description: &str, retry_after: bool) -> utoipa::openapi::Response {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, header::HeaderBuilder};

    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    response.build()
}

/// Whether some way to call the operation uses the operator key.
fn mentions_operator_key(
    security: Option<&[utoipa::openapi::security::SecurityRequirement]>,
) -> bool {
    security.is_some_and(|alternatives| {
        alternatives.iter().any(|requirement| {
            serde_json::to_value(requirement).is_ok_and(|v| v.get("operator_key").is_some())
        })
    })
}

/// Whether every way to call the operation needs the operator key (none is open).
fn requires_operator_key(
    security: Option<&[utoipa::openapi::security::SecurityRequirement]>,
) -> bool {
    security.is_some_and(|alternatives| {
        !alternatives.is_empty()
            && alternatives.iter().all(|requirement| {
                serde_json::to_value(requirement).is_ok_and(|v| v != serde_json::json!({}))
            })
    })
}

/// The document as served and printed: [`openapi()`] plus the rules that tie one field to
/// another, which utoipa's types cannot state: an amount in a currency without a minor unit
/// (`JPY`) is whole (JSON Schema's `if`/`then`).
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(openapi()).expect("an OpenAPI document is JSON");
    let whole: Vec<&str> = crate::domain::money::Currency::whole_unit_codes().collect();
    for (schema, amount) in [
        ("CampaignRequest", "goal_amount"),
        ("DonationRequest", "amount"),
        ("PaymentIntentRequest", "amount"),
    ] {
        let pointer = format!("/components/schemas/{schema}");
        if let Some(object) = document
            .pointer_mut(&pointer)
            .and_then(serde_json::Value::as_object_mut)
        {
            object.insert(
                "if".into(),
                serde_json::json!({"required": ["currency"], "properties": {"currency": {"enum": whole}}}),
            );
            object.insert(
                "then".into(),
                serde_json::json!({"properties": {amount: {"multipleOf": 1}}}),
            );
        }
    }
    document
}

/// The document, serialised once: it depends only on the code.
static OPENAPI_JSON: LazyLock<bytes::Bytes> = LazyLock::new(|| {
    serde_json::to_vec(&document())
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
