//! Webhook signatures: `CFA-Signature: t=<unix seconds>,v1=<hex>` where the hex is
//! HMAC-SHA256(secret, "<t>.<raw body>").
//!
//! Several `v1` values may be sent and several secrets configured, so a provider and the
//! platform can rotate secrets without a window of rejected webhooks, but at most
//! [`MAX_SIGNATURES`] in a header of at most [`MAX_HEADER_LEN`] bytes, and the body's MAC is
//! computed once per configured secret: a forged header cannot cost more than a real one.
//! Comparison is constant time, and a timestamp outside the tolerance is refused so a captured
//! request cannot be replayed later.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signature.
pub const HEADER: &str = "cfa-signature";

/// Why a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `CFA-Signature` header.
    #[error("missing CFA-Signature header")]
    Missing,
    /// The header is not `t=…,v1=…`.
    #[error("malformed CFA-Signature header (expected t=<unix>,v1=<hex>)")]
    Malformed,
    /// The header is longer than [`MAX_HEADER_LEN`].
    #[error("CFA-Signature header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// The header carries more than [`MAX_SIGNATURES`] signatures.
    #[error("CFA-Signature header carries more than {MAX_SIGNATURES} v1 signatures")]
    TooMany,
    /// The timestamp is too old or too far in the future.
    #[error("signature timestamp is outside the {0}-second tolerance")]
    Stale(i64),
    /// No `v1` matches any configured secret.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hex signature of a body at a time.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// A complete header value signed with each of `secrets`.
pub fn header_value(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for secret in secrets {
        value.push_str(",v1=");
        value.push_str(&sign(secret, timestamp, body));
    }
    value
}

/// The longest `CFA-Signature` header read: a timestamp and [`MAX_SIGNATURES`] signatures fit
/// with room to spare. A longer one is refused before any MAC is computed.
pub const MAX_HEADER_LEN: usize = 1024;

/// The most `v1` signatures one header may carry (a rotation needs two or three).
pub const MAX_SIGNATURES: usize = 8;

/// Checks a header against the configured secrets at time `now` (Unix seconds).
///
/// The MAC of the body is computed once per configured secret, whatever the header holds, and
/// each candidate is compared with each MAC in constant time: a request cannot make the server
/// hash its body more times than there are secrets.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::TooLong);
    }
    let (timestamp, candidates) = parse(header)?;
    if now.abs_diff(timestamp) > tolerance_seconds.unsigned_abs() {
        return Err(SignatureError::Stale(tolerance_seconds));
    }
    let expected: Vec<_> = secrets
        .iter()
        .map(|secret| {
            mac(secret.expose(), timestamp, body)
                .finalize()
                .into_bytes()
        })
        .collect();
    let matched = expected.iter().fold(false, |found, mac| {
        candidates.iter().fold(found, |found, candidate| {
            found | bool::from(mac.as_slice().ct_eq(candidate.as_slice()))
        })
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The timestamp and the `v1` candidates of a header.
fn parse(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", sig)) => {
                if candidates.len() == MAX_SIGNATURES {
                    return Err(SignatureError::TooMany);
                }
                let sig = hex::decode(sig).map_err(|_| SignatureError::Malformed)?;
                if sig.len() != 32 {
                    return Err(SignatureError::Malformed);
                }
                candidates.push(sig);
            }
            Some(_) => {} // other schemes are ignored, as providers add them over time
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok((timestamp, candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::from(*s)).collect()
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let header = header_value(&["s1"], NOW, b"{}");
        assert_eq!(
            verify(Some(&header), b"{}", &secrets(&["s1"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_or_wrong_secret_is_refused() {
        let header = header_value(&["s1"], NOW, b"{}");
        assert_eq!(
            verify(Some(&header), b"{ }", &secrets(&["s1"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), b"{}", &secrets(&["s2"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_any_listed_signature_against_any_configured_secret() {
        let header = header_value(&["old", "new"], NOW, b"x");
        assert_eq!(
            verify(Some(&header), b"x", &secrets(&["new"]), NOW, 300),
            Ok(())
        );
        let header = header_value(&["old"], NOW, b"x");
        assert_eq!(
            verify(Some(&header), b"x", &secrets(&["new", "old"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn a_header_with_too_many_signatures_or_bytes_is_refused_before_hashing() {
        let good = header_value(&["s"], NOW, b"x");
        let mut many = good.clone();
        for _ in 0..MAX_SIGNATURES {
            many.push_str(&format!(",v1={}", "0".repeat(64)));
        }
        assert_eq!(
            verify(Some(&many), b"x", &secrets(&["s"]), NOW, 300),
            Err(SignatureError::TooMany),
            "the valid first signature does not excuse the rest"
        );
        let empties = format!("t={NOW}{}", ",v1=".repeat(90_000));
        assert_eq!(
            verify(Some(&empties), b"x", &secrets(&["s"]), NOW, 300),
            Err(SignatureError::TooLong)
        );
        let mut rotation = header_value(&["a", "b", "c"], NOW, b"x");
        rotation.push_str(&format!(",v1={}", "0".repeat(64)));
        assert_eq!(
            verify(Some(&rotation), b"x", &secrets(&["c"]), NOW, 300),
            Ok(()),
            "a handful of signatures still verify"
        );
    }

    #[test]
    fn stale_missing_and_malformed_headers_are_refused() {
        let old = header_value(&["s"], NOW - 301, b"x");
        assert_eq!(
            verify(Some(&old), b"x", &secrets(&["s"]), NOW, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(None, b"x", &secrets(&["s"]), NOW, 300),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1",
            "t=1,v1=zz",
            "garbage",
            "t=-9223372036854775808,v1=00",
        ] {
            assert!(
                verify(Some(bad), b"x", &secrets(&["s"]), NOW, 300).is_err(),
                "{bad}"
            );
        }
    }
}
