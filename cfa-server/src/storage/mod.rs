//! Storage behind traits, one implementation per backend.
//!
//! Each aggregate has its own room: a read trait (`XStore`) for what services read and for
//! maintenance outside any transaction, and a transaction trait (`XTx`) for what is written
//! inside one. [`Store`] gathers every read trait and opens a [`Tx`]; a [`Tx`] gathers every
//! transaction trait and is one database transaction through which every write goes, so that a
//! state change, its outbox event and its idempotency record commit together or not at all.
//! Methods of the aggregate traits are callable on `dyn Store` and `dyn Tx` without importing
//! them, and every data type is re-exported here.
//!
//! # Layout
//! - [`campaigns`]: campaigns ([`CampaignStore`], [`CampaignTx`]).
//! - [`donations`]: donations, the donation history and the operators' status audit.
//! - [`payments`]: payments, their transitions, refunds, webhook records, reconciliation marks.
//! - [`outbox`]: the transactional outbox and its relays' leases.
//! - [`inbox`]: which events each consumer has processed.
//! - [`idempotency`]: saved responses of requests made with an `Idempotency-Key`.
//! - [`totals`]: the totals read model (totals rows, contributions, donors).
//! - [`notifications`]: messages to donors and their send attempts.
//! - [`admin`]: counts for the operator's dashboard.
//! - [`sqlite`]: the embedded default (one writer connection, WAL, a pool of readers), whose
//!   write transactions share commits ([`group_commit`]).
//! - [`postgres`]: the production backend (row locks, advisory locks, `SKIP LOCKED`).
//! - `sql/`: each aggregate's statements, written once. Both backend modules declare every file
//!   there as a child module of their own (`#[path = "sql/campaigns.rs"] mod campaigns;`), so
//!   the compiler checks each statement's code once per backend, with that backend's concrete
//!   types and locking fragments. The sandbox payment provider keeps its tables' traits and SQL
//!   beside itself, in [`crate::services::payments::sandbox::store`], compiled the same way.

use std::sync::Arc;

use async_trait::async_trait;

pub mod admin;
pub mod campaigns;
pub mod donations;
pub mod group_commit;
pub mod idempotency;
pub mod inbox;
pub mod notifications;
pub mod outbox;
pub mod payments;
pub mod postgres;
pub mod sqlite;
pub mod totals;

pub use self::admin::{AdminStats, AdminStore};
pub use self::campaigns::{CampaignStore, CampaignTx};
pub use self::donations::{DonationStore, DonationTx, HistoryFilter, StatusAudit};
pub use self::idempotency::{IdempotencyRecord, IdempotencyStore, IdempotencyTx};
pub use self::inbox::InboxTx;
pub use self::notifications::{
    NOTIFICATION_STATUSES, Notification, NotificationStore, NotificationTx, SendOutcome,
};
pub use self::outbox::{GivenBack, OutboxRow, OutboxStats, OutboxStore, OutboxTx};
pub use self::payments::{PaymentStore, PaymentTx, Refund, WebhookRecord};
pub use self::totals::{CampaignTotals, Contribution, TotalsStore, TotalsTx};
pub use crate::services::payments::sandbox::store::{
    DeliveryOutcome, SandboxDelivery, SandboxIntent, SandboxStore, SandboxTx,
};

/// A storage failure.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out: the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row violated a uniqueness constraint (the constraint's name is given).
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database refused a value (e.g. a NUL character in text on PostgreSQL).
    #[error("invalid value: {0}")]
    InvalidInput(String),
    /// Anything else: a bug or a corrupt row.
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or("unique").to_string())
            }
            // PostgreSQL: character not in repertoire / untranslatable character (NUL in text or
            // JSONB).
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                StoreError::InvalidInput(db.message().to_string())
            }
            _ => StoreError::Other(err.to_string()),
        }
    }
}

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lower-case name for logs and `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Reads, maintenance, and the door to transactions: every aggregate's read trait, and the
/// connection itself.
#[async_trait]
pub trait Store:
    CampaignStore
    + DonationStore
    + PaymentStore
    + OutboxStore
    + IdempotencyStore
    + TotalsStore
    + NotificationStore
    + AdminStore
    + SandboxStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Opens a write transaction.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;
    /// The same database through the connections kept for the event pipeline
    /// (`database.pipeline_connections`), when this store has them; `None` means the pipeline
    /// uses this store.
    fn pipeline(&self) -> Option<Arc<dyn Store>>;
    /// Closes every connection.
    async fn close(&self);
}

/// One write transaction: every aggregate's transaction trait, and the transaction itself.
/// Dropping it without [`Tx::commit`] rolls it back.
///
/// The sandbox provider's writes ([`SandboxTx`]) belong here too: they go in the caller's
/// transaction on purpose, since on SQLite a second transaction would wait for the single
/// writer that the first one holds.
#[async_trait]
pub trait Tx:
    CampaignTx
    + DonationTx
    + PaymentTx
    + OutboxTx
    + InboxTx
    + IdempotencyTx
    + TotalsTx
    + NotificationTx
    + SandboxTx
    + Send
{
    /// Marks a point this transaction can return to with [`Tx::rollback_to_savepoint`].
    async fn savepoint(&mut self) -> StoreResult<()>;
    /// Undoes everything since [`Tx::savepoint`], keeping the transaction and its locks.
    async fn rollback_to_savepoint(&mut self) -> StoreResult<()>;
    /// Commits.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
    /// Rolls back now, releasing every lock before returning (dropping the transaction rolls it
    /// back too, but only when its connection is next used).
    async fn rollback(self: Box<Self>) -> StoreResult<()>;
}

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`), applying pending
/// migrations first when `migrate` is set.
pub async fn connect(
    settings: &crate::config::DatabaseSettings,
    data_dir: &std::path::Path,
    migrate: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    use anyhow::Context as _;
    let url = settings.effective_url(data_dir);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::connect(&url, settings).await?;
        if migrate {
            store
                .migrate()
                .await
                .context("applying PostgreSQL migrations")?;
        }
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::connect(&url, settings).await?;
        if migrate {
            store
                .migrate()
                .await
                .context("applying SQLite migrations")?;
        }
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "database.url: unsupported scheme in {:?}; use sqlite://PATH or postgres://…",
            crate::config::mask_url(&url)
        )
    }
}
