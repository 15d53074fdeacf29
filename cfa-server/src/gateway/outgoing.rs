//! What the gateway sends upstream and what it sends back: the caller's request read once
//! (within the body limit), with the hop-by-hop headers removed, the path normalised and the
//! client's address appended to `X-Forwarded-For`; and the upstream's answer, with its repeated
//! headers kept.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::Upstream;
use crate::http::error::ApiError;

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded either way; `Host`
/// and `Content-Length` are set again by the client for the next hop.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Whether `name` must not cross this hop: a standard hop-by-hop header, `Content-Length`, or
/// one the sender listed in its `Connection` header.
fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
        || name == header::CONTENT_LENGTH
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

/// `path` with `.` and `..` segments (also percent-encoded) resolved; `None` when it would climb
/// above the root, which no route of ours needs.
pub(super) fn normalise(path: &str) -> Option<String> {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment.to_ascii_lowercase().replace("%2e", ".").as_str() {
            "." => {}
            ".." => {
                segments.pop()?;
            }
            _ => segments.push(segment),
        }
    }
    Some(format!("/{}", segments.join("/")))
}

/// A request read once, to be sent to as many upstreams as it takes.
pub(super) struct Outgoing {
    pub(super) parts: axum::http::request::Parts,
    path_and_query: String,
    body: axum::body::Bytes,
    /// The address this hop received the request from, appended to `X-Forwarded-For`.
    peer: Option<IpAddr>,
    /// Whether that address is a trusted proxy, whose `X-Forwarded-Proto` is kept.
    peer_trusted: bool,
    /// This process's request span, so the upstream's span becomes its child.
    traceparent: Option<String>,
}

impl Outgoing {
    /// Reads the body, since a retry must send it again, but no more than `limit` bytes: a
    /// larger one is refused with 413 before it is held in memory.
    pub(super) async fn read(
        request: Request,
        path: &str,
        limit: usize,
        trusted: &[IpNet],
    ) -> Result<Outgoing, Response> {
        let too_large = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64);
        if too_large {
            return Err(ApiError::PayloadTooLarge.into_response());
        }
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let peer_trusted = peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)));
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, limit).await else {
            return Err(ApiError::PayloadTooLarge.into_response());
        };
        Ok(Outgoing {
            parts,
            path_and_query,
            body,
            peer,
            peer_trusted,
            traceparent: crate::telemetry::current_traceparent(),
        })
    }

    /// The request for `upstream`: the caller's headers (repeated ones kept) but the hop-by-hop
    /// ones, this process's trace context in place of the caller's, the address it came from
    /// appended to `X-Forwarded-For`, and `X-Forwarded-Proto`: a trusted proxy's kept, anyone
    /// else's replaced by the scheme this hop was reached over.
    pub(super) fn to(
        &self,
        client: &reqwest::Client,
        upstream: &Upstream,
    ) -> reqwest::RequestBuilder {
        let mut outgoing = client
            .request(
                self.parts.method.clone(),
                format!("{}{}", upstream.base, self.path_and_query),
            )
            .body(self.body.clone());
        let headers = &self.parts.headers;
        for (name, value) in headers {
            let replaced = (self.traceparent.is_some() && name == "traceparent")
                || (self.peer.is_some() && name == "x-forwarded-for")
                || (!self.keeps_proto() && name == "x-forwarded-proto");
            if !(hop_by_hop(name, headers) || replaced) {
                outgoing = outgoing.header(name, value);
            }
        }
        if let Some(traceparent) = &self.traceparent {
            outgoing = outgoing.header("traceparent", traceparent);
        }
        if let Some(peer) = self.peer {
            let mut chain: Vec<String> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect();
            chain.push(peer.to_string());
            outgoing = outgoing.header("x-forwarded-for", chain.join(", "));
        }
        if !self.keeps_proto() {
            // This process serves plain HTTP; TLS ends at a proxy in front of it, if any.
            outgoing = outgoing.header("x-forwarded-proto", "http");
        }
        outgoing
    }

    /// Whether the caller's `X-Forwarded-Proto` goes on: only a trusted proxy's.
    fn keeps_proto(&self) -> bool {
        self.peer_trusted && self.parts.headers.contains_key("x-forwarded-proto")
    }
}

/// The upstream's answer, for the caller: its status, its headers but the hop-by-hop ones
/// (repeated ones, such as `Set-Cookie`, kept), its body.
pub(super) async fn relay_response(response: reqwest::Response) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    match response.bytes().await {
        Ok(bytes) => {
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            for (name, value) in &headers {
                if !hop_by_hop(name, &headers) {
                    out.headers_mut().append(name.clone(), value.clone());
                }
            }
            out
        }
        Err(e) => ApiError::Unavailable(format!("reading the upstream's answer failed: {e}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn dot_segments_are_resolved_and_escapes_refused() {
        assert_eq!(
            normalise("/api/v1/totals/../donations/1").as_deref(),
            Some("/api/v1/donations/1")
        );
        assert_eq!(
            normalise("/api/v1/./totals/%2E%2e/admin/outbox").as_deref(),
            Some("/api/v1/admin/outbox")
        );
        assert_eq!(normalise("/api/../../etc/passwd"), None);
        assert_eq!(normalise("/health").as_deref(), Some("/health"));
    }

    #[test]
    fn headers_named_in_connection_are_hop_by_hop_too() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        let secret = HeaderName::from_static("x-secret");
        assert!(hop_by_hop(&secret, &headers));
        assert!(hop_by_hop(&header::TRANSFER_ENCODING, &headers));
        assert!(!hop_by_hop(&header::CONTENT_TYPE, &headers));
    }
}
