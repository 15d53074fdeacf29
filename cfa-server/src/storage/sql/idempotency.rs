//! The statements of [`crate::storage::idempotency`], compiled once per backend. Locking a key
//! is the backend's own `lock_key`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use const_format::concatcp;
use sqlx::Row as _;

use super::{BackendStore, BackendTx, DbRow, lock_key};
use crate::storage::{IdempotencyRecord, IdempotencyStore, IdempotencyTx};
use crate::storage::{StoreError, StoreResult};

/// The columns of `idempotency_keys`, in the order [`INSERT`] binds them.
const COLUMNS: &str = "scope, key, fingerprint, status_code, body, created_at";
const SELECT: &str = concatcp!(
    "SELECT ",
    COLUMNS,
    " FROM idempotency_keys WHERE scope = $1 AND key = $2"
);
const INSERT: &str = concatcp!(
    "INSERT INTO idempotency_keys (",
    COLUMNS,
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);
const SWEEP: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";

fn idempotency_from_row(row: &DbRow) -> StoreResult<IdempotencyRecord> {
    let status: i32 = row.try_get("status_code")?;
    Ok(IdempotencyRecord {
        scope: row.try_get("scope")?,
        key: row.try_get("key")?,
        fingerprint: row.try_get("fingerprint")?,
        status_code: u16::try_from(status)
            .map_err(|_| StoreError::Other(format!("bad stored status {status}")))?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
    })
}

#[async_trait]
impl IdempotencyStore for BackendStore {
    async fn idempotency_record(
        &self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        sqlx::query(SELECT)
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(idempotency_from_row)
            .transpose()
    }

    async fn sweep_idempotency(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        super::write(self, sqlx::query(SWEEP).bind(before)).await
    }
}

#[async_trait]
impl IdempotencyTx for BackendTx {
    async fn lock_idempotency_key(&mut self, scope: &str, key: &str) -> StoreResult<bool> {
        lock_key(self, scope, key).await
    }

    async fn idempotency_record(
        &mut self,
        scope: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        sqlx::query(SELECT)
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?
            .as_ref()
            .map(idempotency_from_row)
            .transpose()
    }

    async fn insert_idempotency_record(&mut self, r: &IdempotencyRecord) -> StoreResult<()> {
        sqlx::query(INSERT)
            .bind(&r.scope)
            .bind(&r.key)
            .bind(&r.fingerprint)
            .bind(i32::from(r.status_code))
            .bind(&r.body)
            .bind(r.created_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
