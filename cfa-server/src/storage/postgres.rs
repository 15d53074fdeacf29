//! The PostgreSQL backend, for production and for several replicas of every role.
//!
//! Rows are locked with `FOR UPDATE`; an idempotency key is owned through a transaction-scoped
//! advisory lock, taken without waiting, so a second request with the same key learns at once
//! that the first is in flight; outbox rows are claimed with `FOR UPDATE SKIP LOCKED` so relays
//! running side by side never claim the same row.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

use crate::config::DatabaseSettings;

type Db = Postgres;
type DbId = uuid::Uuid;

const BACKEND: crate::storage::Backend = crate::storage::Backend::Postgres;

fn db_id(id: uuid::Uuid) -> DbId {
    id
}

fn from_db_id(id: DbId) -> uuid::Uuid {
    id
}

/// `pg_try_advisory_xact_lock` on a 64-bit hash of the scope and key: held until the
/// transaction ends, refused at once if another transaction holds it.
async fn lock_key(
    tx: &mut sqlx::Transaction<'static, Db>,
    scope: &str,
    key: &str,
) -> crate::storage::StoreResult<bool> {
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("idempotency\u{1f}{scope}\u{1f}{key}"))
            .fetch_one(&mut **tx)
            .await?;
    Ok(locked)
}

/// The PostgreSQL store.
pub struct PgStore {
    read: Pool<Postgres>,
    write: Pool<Postgres>,
}

sql_store!(
    PgStore,
    PgTx,
    for_update = " FOR UPDATE",
    for_share = " FOR SHARE",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);

impl PgStore {
    /// Connects a pool to the server a `postgres://` URL names.
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<PgStore> {
        use anyhow::Context as _;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout())
            .connect(url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL at {}",
                    crate::config::mask_url(url)
                )
            })?;
        Ok(PgStore {
            read: pool.clone(),
            write: pool,
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
