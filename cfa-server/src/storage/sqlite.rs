//! The embedded SQLite backend: the zero-configuration default.
//!
//! All writes go through one connection (`write`, a pool of one) so transactions never meet
//! `SQLITE_BUSY`; reads use a pool of WAL readers that never block the writer. Because there is
//! one writer, an idempotency key needs no database lock: the in-process gate in
//! [`crate::idempotency`] is enough, and this backend is for one process only.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use crate::config::{DatabaseSettings, SqliteSync};

type Db = Sqlite;
type DbId = uuid::fmt::Hyphenated;

const BACKEND: crate::storage::Backend = crate::storage::Backend::Sqlite;

fn db_id(id: uuid::Uuid) -> DbId {
    id.hyphenated()
}

fn from_db_id(id: DbId) -> uuid::Uuid {
    id.into_uuid()
}

/// With a single writer connection, a transaction that exists already owns every key.
async fn lock_key(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _scope: &str,
    _key: &str,
) -> crate::storage::StoreResult<bool> {
    Ok(true)
}

/// The SQLite store.
pub struct SqliteStore {
    read: Pool<Sqlite>,
    write: Pool<Sqlite>,
}

sql_store!(
    SqliteStore,
    SqliteTx,
    for_update = "",
    for_share = "",
    skip_locked = ""
);

impl SqliteStore {
    /// Opens (creating if needed) the database file a `sqlite://PATH` URL names, and its
    /// directory.
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<SqliteStore> {
        use anyhow::Context as _;
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("database.url: cannot parse {url:?}"))?;
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match settings.sqlite_synchronous {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open the SQLite database {url}"))?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open the SQLite database {url} for reading"))?;
        Ok(SqliteStore { read, write })
    }

    /// Applies the migrations under `migrations/sqlite/`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.write)
            .await?;
        Ok(())
    }
}
