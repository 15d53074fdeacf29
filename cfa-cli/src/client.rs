//! A small typed client over the CareForAll HTTP API: every call answers JSON or an error that
//! knows its exit status and what the operator should do.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Sha256;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request (4xx); exit status 1.
    #[error("the server refused it ({status}{code}): {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// `: <code>` when the server named one.
        code: String,
        /// The server's `detail`.
        detail: String,
        /// The whole body.
        body: Value,
    },
    /// The server failed (5xx); exit status 3.
    #[error(
        "the server at {server} failed ({status}): {detail}; check its logs and `cfa-cli health`"
    )]
    Failed {
        /// Base URL.
        server: String,
        /// HTTP status.
        status: u16,
        /// The server's `detail`, or the body.
        detail: String,
    },
    /// No answer at all; exit status 3.
    #[error(
        "cannot reach the server at {server} ({reason}); is it running there? Start it with `cfa-server run`, or pass --server"
    )]
    Unreachable {
        /// Base URL.
        server: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The process exit status this error maps to: 1 refused, 3 unreachable or failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } => 1,
            ClientError::Failed { .. } | ClientError::Unreachable { .. } => 3,
        }
    }
}

/// A reply: status and JSON body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body (`null` when empty or not JSON).
    pub body: Value,
}

/// The client.
#[derive(Clone)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base: &str, api_key: Option<String>, timeout: Duration) -> Client {
        // reqwest is built without a TLS provider of its own; ring is the one the workspace uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .unwrap_or_default();
        Client {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the reply whatever its status (errors only when unreachable).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.read(request).await
    }

    /// Sends raw bytes (for webhooks, whose signature covers the exact body).
    pub async fn send_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.read(request).await
    }

    async fn read(&self, request: reqwest::RequestBuilder) -> Result<Reply, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            server: self.base.clone(),
            reason: reason(&e),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                server: self.base.clone(),
                reason: reason(&e),
            })?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            if bytes.is_empty() {
                Value::Null
            } else {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
        });
        Ok(Reply { status, body })
    }

    /// Sends a request and turns a 4xx or 5xx into an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        let reply = self.send(method, path, body, headers).await?;
        self.check(reply)
    }

    /// `Ok(body)` for a 1xx–3xx reply, the matching error otherwise.
    pub fn check(&self, reply: Reply) -> Result<Value, ClientError> {
        let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
        let detail = reply.body["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reply.body.to_string());
        if status.is_client_error() {
            let code = reply.body["code"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            return Err(ClientError::Refused {
                status: reply.status,
                code,
                detail,
                body: reply.body,
            });
        }
        if status.is_server_error() {
            return Err(ClientError::Failed {
                server: self.base.clone(),
                status: reply.status,
                detail,
            });
        }
        Ok(reply.body)
    }

    /// `GET` that must succeed.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// `POST` that must succeed, with an idempotency key so a retry never repeats the effect.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let key = uuid::Uuid::new_v4().to_string();
        self.call(Method::POST, path, Some(body), &[("idempotency-key", key)])
            .await
    }
}

fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.to_string()
    }
}

/// The `CFA-Signature` header value for `body` signed with `secret` at `timestamp` (Unix
/// seconds): `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}
