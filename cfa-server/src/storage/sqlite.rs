//! The embedded SQLite backend: the zero-configuration default.
//!
//! All writes go through one connection (`write`, a pool of one) so transactions never meet
//! `SQLITE_BUSY`; reads use a pool of WAL readers that never block the writer. The write
//! transactions waiting for that connection share one commit ([`crate::storage::group_commit`]). Because there is
//! one writer, an idempotency key needs no database lock: the in-process gate in
//! [`crate::idempotency`] is enough, and this backend is for one process only.
//!
//! The statements themselves are shared with the other backend: every file in `sql/`, and the
//! sandbox provider's `sql.rs`, is declared below as a child module of this one with `#[path]`,
//! so it is compiled here against this backend's types (`Db`, `DbId`, the store and the
//! transaction) and locking fragments (`FOR_UPDATE`, `FOR_SHARE`, `SKIP_LOCKED`).

#![allow(
    clippy::duplicate_mod,
    reason = "each file in sql/ is compiled once per backend, on purpose"
)]

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use crate::config::{DatabaseSettings, SqliteSync};
use crate::storage::group_commit::{Member, Writer};
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
type Db = Sqlite;
/// A row of this database.
type DbRow = <Db as sqlx::Database>::Row;
/// How a UUID is stored: as text.
type DbId = uuid::fmt::Hyphenated;
/// The store the shared SQL implements the read traits for.
type BackendStore = SqliteStore;
/// The transaction the shared SQL implements the transaction traits for.
type BackendTx = SqliteTx;

/// What [`crate::storage::Store::backend`] answers.
const BACKEND: Backend = Backend::Sqlite;

// SQLite has no row locks and needs none: a write transaction holds the single writer
// connection, which already keeps every other writer out until it ends.
/// Appended to a `SELECT` that locks a row for change.
const FOR_UPDATE: &str = "";
/// Appended to a `SELECT` that locks a row against change.
const FOR_SHARE: &str = "";
/// Appended to the inner `SELECT` of a claim.
const SKIP_LOCKED: &str = "";

fn db_id(id: uuid::Uuid) -> DbId {
    id.hyphenated()
}

fn from_db_id(id: DbId) -> uuid::Uuid {
    id.into_uuid()
}

/// With a single writer connection, a transaction that exists already owns every key.
async fn lock_key(_tx: &mut SqliteTx, _scope: &str, _key: &str) -> StoreResult<bool> {
    Ok(true)
}

/// The pipeline writes through the one writer like everything else: no store of its own.
fn pipeline(_store: &SqliteStore) -> Option<std::sync::Arc<dyn crate::storage::Store>> {
    None
}

/// Starts a write transaction: a member of the writer's open group ([`group_commit`]).
async fn begin(store: &SqliteStore) -> StoreResult<SqliteTx> {
    Ok(SqliteTx {
        tx: store.writer.begin().await?,
    })
}

/// A statement with its arguments bound.
type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

/// Runs a write statement on its own and answers its rows. It is a member of the writer's group
/// like any transaction, so it takes its turn with them: on the pool it would wait for a group
/// to end, and under a burst of requests a group ends only when it is full, so the relay, the
/// sender and the sandbox got the writer once per group and the event pipeline starved.
async fn write_rows(store: &SqliteStore, query: DbQuery<'_>) -> StoreResult<Vec<DbRow>> {
    let mut member = store.writer.begin().await?;
    let rows = query.fetch_all(&mut *member).await;
    end_alone(member, rows).await
}

/// Runs a write statement on its own (see [`write_rows`]) and answers the rows it changed.
async fn write(store: &SqliteStore, query: DbQuery<'_>) -> StoreResult<u64> {
    let mut member = store.writer.begin().await?;
    let done = query.execute(&mut *member).await;
    end_alone(member, done.map(|d| d.rows_affected())).await
}

/// Commits a statement run on its own, or undoes it if it failed.
async fn end_alone<T>(member: Member, result: Result<T, sqlx::Error>) -> StoreResult<T> {
    match result {
        Ok(value) => {
            member.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The statement's own error is the one to report; its savepoint goes either way.
            let _ = member.rollback().await;
            Err(e.into())
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    read: Pool<Sqlite>,
    /// The writer connection, for migrations; everything else writes through `writer`.
    write: Pool<Sqlite>,
    /// The same connection, for write transactions, which share commits.
    writer: Writer,
}

/// One write transaction on SQLite, on the writer connection: a savepoint in a group commit.
pub struct SqliteTx {
    tx: Member,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file a `sqlite://PATH` URL names, and its
    /// directory.
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<SqliteStore> {
        use anyhow::Context as _;
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("database.url: cannot parse {url:?}"))?;
        let file = options.get_filename();
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            crate::files::private_dir(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        }
        if file.as_os_str() != ":memory:" {
            crate::files::touch_private(file)
                .with_context(|| format!("cannot create the database file {}", file.display()))?;
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
            .max_connections(settings.pool_size().max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("cannot open the SQLite database {url} for reading"))?;
        Ok(SqliteStore {
            read,
            writer: Writer::new(write.clone()),
            write,
        })
    }

    /// Applies the migrations under `migrations/sqlite/`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.write)
            .await?;
        Ok(())
    }
}
