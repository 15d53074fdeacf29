//! Operator authentication: `Authorization: Bearer <key>` against `auth.api_keys`.
//!
//! Keys are compared in constant time and never logged; an operator is identified in audit
//! trails by a short digest of the key. With no keys configured the operator endpoints are open
//! (the embedded development default), which start-up and `/ready` both report.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};

/// Proof that the request comes from an operator.
#[derive(Clone, Debug)]
pub struct Operator {
    /// Who, for audit trails: `key:<8 hex digits of the key's SHA-256>`, or `open-access`.
    pub actor: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let keys = &state.settings.auth.api_keys;
        if keys.is_empty() {
            return Ok(Operator {
                actor: "open-access".into(),
            });
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "this endpoint needs an operator key: send Authorization: Bearer <key>".into(),
                )
            })?;
        let presented_digest = Sha256::digest(presented.as_bytes());
        // Compare digests so the comparison time depends on neither key's length.
        let matched = keys.iter().fold(false, |found, key| {
            let digest = Sha256::digest(key.expose().as_bytes());
            found | bool::from(digest.ct_eq(&presented_digest))
        });
        if !matched {
            return Err(ApiError::Unauthorized(
                "the operator key is not valid".into(),
            ));
        }
        Ok(Operator {
            actor: format!("key:{}", &hex::encode(presented_digest)[..8]),
        })
    }
}
