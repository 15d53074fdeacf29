//! What several resources parse the same way: list paging, path ids, and amounts as JSON
//! decimals.

use std::collections::HashMap;

use serde_json::value::RawValue;
use uuid::Uuid;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::error::ApiError;
use crate::domain::campaign::CampaignStatus;
use crate::domain::donation::DonationStatus;
use crate::domain::money::Currency;

/// Formats minor units as the JSON decimal the API carries (`25.50`).
pub fn amount_json(minor: i64, currency: Currency) -> Box<RawValue> {
    RawValue::from_string(currency.format_minor(minor))
        .expect("a formatted decimal is a valid JSON number")
}

/// `limit` and `offset` of a list, as [`page`] reads them; for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "describes the query to the OpenAPI document; `page` parses it"
)]
pub struct PageParams {
    /// How many items, from 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
    /// How many items to skip.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// An optional integer field that also takes a JSON number with a zero fraction (`3.0`), as
/// JSON Schema's `integer` does.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    use serde::de::Error;

    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "whole and within i64's range"
        )]
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!(
            "must be a whole number, got {number}"
        ))),
    }
}

/// Parses an id from the path.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::field("id", format!("must be a UUID, got {raw:?}")))
}

/// `limit` (1–100, default 50) and `offset` (default 0) of a list.
pub fn page(query: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let limit = match query.get("limit") {
        None => 50,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::field("limit", "must be an integer from 1 to 100")),
        },
    };
    let offset = match query.get("offset") {
        None => 0,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => return Err(ApiError::field("offset", "must be a non-negative integer")),
        },
    };
    Ok((limit, offset))
}

/// A string schema listing the values a parser accepts (as the server spells them).
fn one_of(values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// Declares a schema-only type: a name in the OpenAPI document whose values come from the code
/// that parses them, so the document cannot list a value the server refuses.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $values:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                one_of($values)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_enum!(
    /// An ISO 4217 code the platform supports.
    CurrencyCode,
    Currency::codes()
);
string_enum!(
    /// A campaign's status.
    CampaignStatusName,
    [CampaignStatus::Active, CampaignStatus::Closed].map(CampaignStatus::as_str)
);
string_enum!(
    /// A donation's status.
    DonationStatusName,
    DonationStatus::ALL.map(DonationStatus::as_str)
);
string_enum!(
    /// A notification's status.
    NotificationStatusName,
    crate::storage::NOTIFICATION_STATUSES.iter().copied()
);
string_enum!(
    /// What the donor does at the sandbox's checkout.
    SandboxOutcome,
    crate::services::payments::sandbox::ConfirmOutcome::ALL
        .map(crate::services::payments::sandbox::ConfirmOutcome::as_str)
);
