//! Idempotency keys with Stripe's semantics (SPEC §4).
//!
//! A request carrying `Idempotency-Key` is fingerprinted (endpoint + canonical JSON body). The
//! saved outcome of an earlier request with that key is replayed byte for byte; the same key with
//! a different request is refused (422); the same key while the first request is still running is
//! refused (409). The key and its response are written in the transaction that performs the
//! effect, so either both exist or neither does.
//!
//! "Still running" is known in two ways: an in-process gate (which is all the single-writer SQLite
//! backend needs) and, on PostgreSQL, a transaction-scoped advisory lock that covers replicas.
//! Outcomes decided once the request owns its key are saved, refusals included (an unknown or
//! closed campaign, a refund that does not fit): a retry gets the same answer even if the world
//! changed in between. Requests refused before that point (malformed, invalid fields, a key in
//! flight) save nothing, so the client can correct them and retry with the same key.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::redis_cache::FastPath;
use crate::storage::{IdempotencyRecord, Store, StoreError, Tx};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's idempotency key, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accepts 1–255 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<IdempotencyKey, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces".into());
        }
        Ok(IdempotencyKey(raw.to_string()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an idempotent request cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Another request with this key is still being processed.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InFlight,
    /// The key was used for a different request.
    #[error("this Idempotency-Key was already used for a different request")]
    Mismatch,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keys being processed in this process.
#[derive(Default)]
pub struct InFlightGate {
    keys: Mutex<HashSet<(String, String)>>,
}

impl InFlightGate {
    fn enter(self: &Arc<Self>, scope: &str, key: &str) -> Option<GateGuard> {
        let entry = (scope.to_string(), key.to_string());
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(entry.clone()).then(|| GateGuard {
            gate: Arc::clone(self),
            entry,
        })
    }
}

/// Holds a key in the gate until dropped.
pub struct GateGuard {
    gate: Arc<InFlightGate>,
    entry: (String, String),
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut keys = self.gate.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&self.entry);
    }
}

/// One idempotent request: where the key applies and what the request was.
#[derive(Clone, Debug)]
pub struct IdempotentRequest {
    /// Endpoint, e.g. `POST /api/v1/donations`.
    pub scope: String,
    /// The client's key.
    pub key: IdempotencyKey,
    /// SHA-256 of the scope and the canonical body.
    pub fingerprint: String,
}

impl IdempotentRequest {
    /// Fingerprints a request by its endpoint and its JSON body, whose key order and spacing do
    /// not matter.
    pub fn new(scope: &str, key: IdempotencyKey, body: &Value) -> IdempotentRequest {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update(b"\n");
        let mut canonical = String::new();
        write_canonical(body, &mut canonical);
        hasher.update(canonical.as_bytes());
        IdempotentRequest {
            scope: scope.to_string(),
            key,
            fingerprint: hex::encode(hasher.finalize()),
        }
    }
}

/// Writes JSON with object keys sorted, whatever order serde_json keeps them in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What to do with a request.
pub enum Begin {
    /// Send this saved response again.
    Replay(IdempotencyRecord),
    /// Do the work in this transaction, then call [`Owned::save`].
    Proceed(Owned),
}

/// Ownership of a key: the transaction to do the work in, and the gate entry.
pub struct Owned {
    /// The transaction the effect and the saved response go into.
    pub tx: Box<dyn Tx>,
    request: Option<IdempotentRequest>,
    _guard: Option<GateGuard>,
    fast: Option<Arc<FastPath>>,
    retention: std::time::Duration,
}

/// Where saved responses are looked up first, and how long they are kept there.
#[derive(Clone)]
pub struct Replays {
    /// Redis, if configured.
    pub fast: Option<Arc<FastPath>>,
    /// How long a saved response is kept (`idempotency.retention_hours`).
    pub retention: std::time::Duration,
}

fn fast_key(scope: &str, key: &str) -> String {
    format!(
        "idem:{}:{key}",
        hex::encode(Sha256::digest(scope.as_bytes()))
    )
}

impl Owned {
    /// Saves the response with the key (for keyed requests) in the transaction, and commits;
    /// then copies it to Redis, if configured, for faster replays.
    pub async fn save(mut self, status: u16, body: &[u8]) -> Result<(), StoreError> {
        let record = self.request.as_ref().map(|request| IdempotencyRecord {
            scope: request.scope.clone(),
            key: request.key.as_str().to_string(),
            fingerprint: request.fingerprint.clone(),
            status_code: status,
            body: body.to_vec(),
            created_at: crate::domain::now(),
        });
        if let Some(record) = &record {
            self.tx.insert_idempotency_record(record).await?;
        }
        self.tx.commit().await?;
        if let (Some(fast), Some(record)) = (&self.fast, &record)
            && let Ok(bytes) = serde_json::to_vec(record)
        {
            fast.set(
                &fast_key(&record.scope, &record.key),
                &bytes,
                self.retention,
            )
            .await;
        }
        Ok(())
    }
}

impl Owned {
    /// Undoes the work (back to the savepoint taken when the key was owned) and saves a refusal
    /// under the key in the same transaction, which still holds the key's lock.
    pub async fn save_refusal(mut self, status: u16, body: &[u8]) -> Result<(), StoreError> {
        if self.request.is_none() {
            return self.tx.rollback().await;
        }
        self.tx.rollback_to_savepoint().await?;
        self.save(status, body).await
    }

    /// Gives the key up without saving anything, so a retry with it can succeed: rolls the work
    /// back now rather than on drop, which would keep the key's lock until the connection is
    /// next used.
    pub async fn abandon(self) -> Result<(), StoreError> {
        self.tx.rollback().await
    }
}

/// Decides whether a request goes ahead, replays, or is refused; for a request without a key,
/// just opens the transaction.
pub async fn begin(
    store: &dyn Store,
    gate: &Arc<InFlightGate>,
    replays: &Replays,
    request: Option<IdempotentRequest>,
) -> Result<Begin, IdempotencyError> {
    let Some(request) = request else {
        return Ok(Begin::Proceed(Owned {
            tx: store.begin().await?,
            request: None,
            _guard: None,
            fast: None,
            retention: replays.retention,
        }));
    };
    let (scope, key) = (request.scope.as_str(), request.key.as_str());
    if let Some(fast) = &replays.fast
        && let Some(saved) = fast
            .get(&fast_key(scope, key))
            .await
            .and_then(|bytes| serde_json::from_slice::<IdempotencyRecord>(&bytes).ok())
    {
        crate::metrics::idempotency_hit("redis");
        return replay(saved, &request);
    }
    if let Some(saved) = store.idempotency_record(scope, key).await? {
        crate::metrics::idempotency_hit("database");
        return replay(saved, &request);
    }
    let guard = gate.enter(scope, key).ok_or(IdempotencyError::InFlight)?;
    // The first look ran outside the gate: a request that finished in between is seen now. With
    // SQLite this process is the only writer, so the gate is the lock, and a look outside the
    // transaction sees every request that left the gate (each commits before it leaves); it
    // spares the single writer a statement. PostgreSQL's replicas share keys: the look there is
    // made under the key's lock, in the transaction.
    let one_writer = store.backend() == crate::storage::Backend::Sqlite;
    if one_writer && let Some(saved) = store.idempotency_record(scope, key).await? {
        crate::metrics::idempotency_hit("database");
        return replay(saved, &request);
    }
    let mut tx = store.begin().await?;
    if !tx.lock_idempotency_key(scope, key).await? {
        tx.rollback().await?;
        return Err(IdempotencyError::InFlight);
    }
    if !one_writer && let Some(saved) = tx.idempotency_record(scope, key).await? {
        tx.rollback().await?;
        crate::metrics::idempotency_hit("database");
        return replay(saved, &request);
    }
    tx.savepoint().await?;
    Ok(Begin::Proceed(Owned {
        tx,
        request: Some(request),
        _guard: Some(guard),
        fast: replays.fast.clone(),
        retention: replays.retention,
    }))
}

fn replay(
    saved: IdempotencyRecord,
    request: &IdempotentRequest,
) -> Result<Begin, IdempotencyError> {
    if saved.fingerprint == request.fingerprint {
        Ok(Begin::Replay(saved))
    } else {
        Err(IdempotencyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> IdempotencyKey {
        IdempotencyKey::parse("k-1").expect("valid key")
    }

    #[test]
    fn key_order_and_spacing_do_not_change_the_fingerprint() {
        let a = IdempotentRequest::new("POST /x", key(), &json!({"a": 1, "b": {"c": [1, 2]}}));
        let b: Value = serde_json::from_str(r#"{ "b": {"c":[1,2]}, "a":1 }"#).expect("json");
        let b = IdempotentRequest::new("POST /x", key(), &b);
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn a_different_body_or_endpoint_changes_the_fingerprint() {
        let a = IdempotentRequest::new("POST /x", key(), &json!({"a": 1}));
        let b = IdempotentRequest::new("POST /x", key(), &json!({"a": 2}));
        let c = IdempotentRequest::new("POST /y", key(), &json!({"a": 1}));
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("order-42/retry_1").is_ok());
    }

    #[test]
    fn the_gate_admits_one_holder_per_key() {
        let gate = Arc::new(InFlightGate::default());
        let first = gate.enter("s", "k");
        assert!(first.is_some());
        assert!(gate.enter("s", "k").is_none());
        assert!(gate.enter("s", "other").is_some());
        drop(first);
        assert!(gate.enter("s", "k").is_some());
    }
}
