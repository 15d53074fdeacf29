//! The statements of [`crate::storage::inbox`], compiled once per backend.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BackendTx, Db, DbId, db_id, from_db_id};
use crate::storage::{InboxTx, StoreResult};

/// Rows per multi-row insert: three bound values each, well under SQLite's 32,766.
const ROWS_PER_INSERT: usize = 1000;

#[async_trait]
impl InboxTx for BackendTx {
    async fn insert_inbox_all(
        &mut self,
        consumer: &str,
        event_ids: &[Uuid],
        at: DateTime<Utc>,
    ) -> StoreResult<HashSet<Uuid>> {
        let mut new = HashSet::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO consumer_inbox (consumer, event_id, processed_at) ",
            );
            insert.push_values(chunk, |mut row, id| {
                row.push_bind(consumer.to_string())
                    .push_bind(db_id(*id))
                    .push_bind(at);
            });
            insert.push(" ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id");
            let inserted: Vec<DbId> = insert.build_query_scalar().fetch_all(&mut *self.tx).await?;
            new.extend(inserted.into_iter().map(from_db_id));
        }
        Ok(new)
    }
}
