//! Who a request comes from, for rate limits and `X-Forwarded-For`.
//!
//! The client is the peer of the connection, unless that peer is a trusted proxy
//! (`gateway.trusted_proxies`): then it is the nearest address in `X-Forwarded-For` that is not
//! a trusted proxy, read from the right, since each proxy appends the address it received the
//! request from and only the entries our own proxies appended can be believed. A client that
//! writes its own `X-Forwarded-For` only adds entries to the left of the true one.
//!
//! An operator is the holder of a configured API key: a bearer token counts as a key only once
//! it is verified, so inventing tokens does not buy new rate-limit buckets.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The client's address behind `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The configured operator keys, by their SHA-256, to recognise a presented one.
#[derive(Clone, Default)]
pub struct KnownKeys(Vec<[u8; 32]>);

impl KnownKeys {
    /// The digests of `keys`.
    pub fn new(keys: &[Secret]) -> KnownKeys {
        KnownKeys(
            keys.iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
        )
    }

    /// A short, stable name of the request's key (8 bytes of its digest, in hex) when it bears
    /// a configured one; `None` for no key, or one that is not configured.
    pub fn verified(&self, headers: &HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| Sha256::digest(key.trim().as_bytes()))?;
        // Every configured key is compared, in constant time, whichever matches.
        let matched = self.0.iter().fold(false, |found, known| {
            found | bool::from(known.ct_eq(presented.as_slice()))
        });
        matched.then(|| hex::encode(&presented[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_address_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // The client forged 1.2.3.4; nginx (10.0.0.2) appended the real client; the gateway
        // (10.0.0.3) appended nginx.
        let h = headers(&["1.2.3.4, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.3"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("10.0.0.3"), &headers(&[]), &trusted),
            ip("10.0.0.3"),
            "a trusted peer that forwards nobody is itself the client"
        );
    }

    #[test]
    fn only_a_configured_key_is_a_key() {
        let keys = KnownKeys::new(&[Secret::from("real")]);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer made-up"),
        );
        assert_eq!(keys.verified(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer real"),
        );
        assert!(keys.verified(&h).is_some());
        assert_eq!(keys.verified(&HeaderMap::new()), None);
    }
}
