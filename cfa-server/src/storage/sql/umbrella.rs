//! A backend's umbrella [`Store`] and [`Tx`]: the connection, the door to transactions, and the
//! transaction's own savepoint, commit and rollback. Every aggregate's statements are in the
//! files beside this one.

use async_trait::async_trait;

use super::{BACKEND, BackendStore, BackendTx};
use crate::storage::{Backend, Store, StoreResult, Tx};

#[async_trait]
impl Store for BackendStore {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(super::begin(self).await?))
    }

    fn pipeline(&self) -> Option<std::sync::Arc<dyn Store>> {
        super::pipeline(self)
    }

    async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
        if let Some(pipeline) = self.pipeline() {
            pipeline.close().await;
        }
    }
}

#[async_trait]
impl Tx for BackendTx {
    async fn savepoint(&mut self) -> StoreResult<()> {
        sqlx::query("SAVEPOINT cfa_work")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> StoreResult<()> {
        sqlx::query("ROLLBACK TO SAVEPOINT cfa_work")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> StoreResult<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}
