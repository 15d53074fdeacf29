//! The statements of [`crate::storage::inbox`], compiled once per backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BackendTx, db_id};
use crate::storage::{InboxTx, StoreResult};

const INSERT: &str = "INSERT INTO consumer_inbox (consumer, event_id, processed_at) \
                      VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING";

#[async_trait]
impl InboxTx for BackendTx {
    async fn insert_inbox(
        &mut self,
        consumer: &str,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(INSERT)
            .bind(consumer)
            .bind(db_id(event_id))
            .bind(at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
