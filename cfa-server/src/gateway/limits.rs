//! Rate limits per client IP and per API key (token buckets, GCRA via the governor crate),
//! applied by the all-in-one process itself, without a gateway hop (SPEC §5).
//!
//! A request carrying a configured operator key (`Authorization: Bearer <key>`, verified) is
//! counted against its key (operators and integrations behind one address get their own
//! budget); any other request, an unknown token included, against its client IP, read through
//! the trusted proxies ([`super::client`]). Health and readiness are never limited. A refused request gets `429` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::client::{KnownKeys, client_ip};
use crate::config::{RateLimitSettings, Secret};
use crate::http::error::json_response;

/// The two sets of buckets, and how a request is told to belong to one.
pub struct RateLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_key: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    keys: KnownKeys,
    trusted: Vec<IpNet>,
}

impl RateLimits {
    /// Limits from the settings, or `None` when they are off. Only `keys` get buckets of their
    /// own; the client address is read through `trusted` proxies.
    pub fn new(
        settings: &RateLimitSettings,
        keys: &[Secret],
        trusted: Vec<IpNet>,
    ) -> Option<Arc<RateLimits>> {
        if !settings.enabled {
            return None;
        }
        let quota = |per_minute: u32| {
            Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN))
        };
        Some(Arc::new(RateLimits {
            per_ip: RateLimiter::keyed(quota(settings.per_ip_per_minute)),
            per_key: RateLimiter::keyed(quota(settings.per_key_per_minute)),
            clock: DefaultClock::default(),
            keys: KnownKeys::new(keys),
            trusted,
        }))
    }

    /// Forgets buckets that are full again, so memory follows the active clients.
    pub fn shrink(&self) {
        self.per_ip.retain_recent();
        self.per_key.retain_recent();
    }
}

/// Whether requests to `path` are rate limited: everything but the probes.
pub fn applies_to(path: &str) -> bool {
    !(path == "/health" || path == "/ready" || path.ends_with("/health"))
}

/// The middleware: 429 with `Retry-After` once a client's bucket is empty.
pub async fn limit(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    if !applies_to(request.uri().path()) {
        return next.run(request).await;
    }
    let verdict = match limits.keys.verified(request.headers()) {
        Some(key) => limits.per_key.check_key(&key),
        None => match request.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => {
                let client = client_ip(addr.ip(), request.headers(), &limits.trusted);
                limits.per_ip.check_key(&client)
            }
            None => Ok(()),
        },
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(limits.clock.now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({
                    "detail": format!("rate limit reached; retry in {seconds} s"),
                    "code": "rate_limited",
                }),
            );
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}
