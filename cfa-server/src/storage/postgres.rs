//! The PostgreSQL backend, for production and for several replicas of every role.
//!
//! Rows are locked with `FOR UPDATE`; an idempotency key is owned through a transaction-scoped
//! advisory lock, taken without waiting, so a second request with the same key learns at once
//! that the first is in flight; outbox rows are claimed with `FOR UPDATE SKIP LOCKED` so relays
//! running side by side never claim the same row.
//!
//! The statements themselves are shared with the other backend: every file in `sql/`, and the
//! sandbox provider's `sql.rs`, is declared below as a child module of this one with `#[path]`,
//! so it is compiled here against this backend's types (`Db`, `DbId`, the store and the
//! transaction) and locking fragments (`FOR_UPDATE`, `FOR_SHARE`, `SKIP_LOCKED`).

#![allow(
    clippy::duplicate_mod,
    reason = "each file in sql/ is compiled once per backend, on purpose"
)]

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use crate::config::DatabaseSettings;
use crate::storage::{Backend, StoreResult};

#[path = "sql/admin.rs"]
mod admin;
#[path = "sql/campaigns.rs"]
mod campaigns;
#[path = "sql/donations.rs"]
mod donations;
#[path = "sql/idempotency.rs"]
mod idempotency;
#[path = "sql/inbox.rs"]
mod inbox;
#[path = "sql/lists.rs"]
mod lists;
#[path = "sql/notifications.rs"]
mod notifications;
#[path = "sql/outbox.rs"]
mod outbox;
#[path = "sql/payments.rs"]
mod payments;
#[path = "../services/payments/sandbox/sql.rs"]
mod sandbox;
#[path = "sql/totals.rs"]
mod totals;
#[path = "sql/umbrella.rs"]
mod umbrella;

/// The sqlx database.
type Db = Postgres;
/// A row of this database.
type DbRow = <Db as sqlx::Database>::Row;
/// How a UUID is stored: as `uuid`.
type DbId = uuid::Uuid;
/// The store the shared SQL implements the read traits for.
type BackendStore = PgStore;
/// The transaction the shared SQL implements the transaction traits for.
type BackendTx = PgTx;

/// What [`crate::storage::Store::backend`] answers.
const BACKEND: Backend = Backend::Postgres;

/// Appended to a `SELECT` that locks a row for change.
const FOR_UPDATE: &str = " FOR UPDATE";
/// Appended to a `SELECT` that locks a row against change (a campaign against closing).
const FOR_SHARE: &str = " FOR SHARE";
/// Appended to the inner `SELECT` of a claim, so concurrent claimers pass each other's rows.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

fn db_id(id: uuid::Uuid) -> DbId {
    id
}

fn from_db_id(id: DbId) -> uuid::Uuid {
    id
}

/// `pg_try_advisory_xact_lock` on a 64-bit hash of the scope and key: held until the
/// transaction ends, refused at once if another transaction holds it.
async fn lock_key(tx: &mut PgTx, scope: &str, key: &str) -> StoreResult<bool> {
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("idempotency\u{1f}{scope}\u{1f}{key}"))
            .fetch_one(&mut *tx.tx)
            .await?;
    Ok(locked)
}

/// The store over the pipeline's own connections, when it has them.
fn pipeline(store: &PgStore) -> Option<Arc<dyn crate::storage::Store>> {
    store
        .pipeline
        .clone()
        .map(|pipeline| pipeline as Arc<dyn crate::storage::Store>)
}

/// Starts a write transaction on a connection of the pool.
async fn begin(store: &PgStore) -> StoreResult<PgTx> {
    Ok(PgTx {
        tx: store.write.begin().await?,
    })
}

/// A statement with its arguments bound.
type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

/// Runs a write statement on its own and answers its rows.
async fn write_rows(store: &PgStore, query: DbQuery<'_>) -> StoreResult<Vec<DbRow>> {
    Ok(query.fetch_all(&store.write).await?)
}

/// Runs a write statement on its own and answers the rows it changed.
async fn write(store: &PgStore, query: DbQuery<'_>) -> StoreResult<u64> {
    Ok(query.execute(&store.write).await?.rows_affected())
}

/// The PostgreSQL store.
pub struct PgStore {
    read: Pool<Postgres>,
    write: Pool<Postgres>,
    /// The same database through `database.pipeline_connections` connections of its own.
    pipeline: Option<Arc<PgStore>>,
}

/// One write transaction on PostgreSQL.
pub struct PgTx {
    tx: sqlx::Transaction<'static, Db>,
}

impl PgStore {
    /// Connects a pool to the server a `postgres://` URL names.
    /// With `database.pipeline_connections`, a second pool of that many is opened for the
    /// event pipeline ([`crate::storage::Store::pipeline`]).
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<PgStore> {
        let pool = Self::pool(url, settings, settings.pool_size()).await?;
        let pipeline = match settings.pipeline_pool_size() {
            0 => None,
            size => Some(Arc::new(PgStore::on(
                Self::pool(url, settings, size).await?,
                None,
            ))),
        };
        Ok(PgStore::on(pool, pipeline))
    }

    fn on(pool: Pool<Postgres>, pipeline: Option<Arc<PgStore>>) -> PgStore {
        PgStore {
            read: pool.clone(),
            write: pool,
            pipeline,
        }
    }

    /// A pool of `size` connections to the server `url` names.
    async fn pool(
        url: &str,
        settings: &DatabaseSettings,
        size: u32,
    ) -> anyhow::Result<Pool<Postgres>> {
        use anyhow::Context as _;
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(settings.acquire_timeout())
            .connect(url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL at {}",
                    crate::config::mask_url(url)
                )
            })
    }

    /// Applies the migrations under `migrations/postgres/`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.write)
            .await?;
        Ok(())
    }
}
