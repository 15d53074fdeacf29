//! Operator authentication: `Authorization: Bearer <key>` against `auth.api_keys`.
//!
//! Keys are compared in constant time and never logged; an operator is identified in audit
//! trails by a short digest of the key. With no keys configured the operator endpoints are open
//! on a loopback address (the embedded development default); on any other they answer only
//! requests from this host ([`from_this_host`]) unless `auth.allow_open` says otherwise. Start-up
//! and `/ready` both report which.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
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
            if state.settings.operators_local_only() && !from_this_host(parts) {
                return Err(ApiError::Forbidden(
                    "no operator keys are configured, so operator endpoints answer only requests \
                     from the server's own host; set auth.api_keys (CFA_AUTH__API_KEYS) and send \
                     Authorization: Bearer <key>"
                        .into(),
                ));
            }
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

/// Whether a request came straight from this host: from a loopback address, and not relayed by a
/// proxy (a proxy on the same host adds `X-Forwarded-For` or `Forwarded`). A request served
/// without a socket (a test calling the router directly) counts as local.
pub fn from_this_host(parts: &Parts) -> bool {
    let peer_is_local = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_none_or(|ConnectInfo(peer)| peer.ip().is_loopback());
    peer_is_local
        && !parts.headers.contains_key("x-forwarded-for")
        && !parts.headers.contains_key(header::FORWARDED)
}
