//! What several resources parse the same way: list paging, path ids, and amounts as JSON
//! decimals.

use std::collections::HashMap;

use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::ApiError;
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
