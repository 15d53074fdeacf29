//! Group commit on the embedded SQLite backend: the write transactions waiting for the single
//! writer connection share one commit.
//!
//! With `synchronous = full` every commit waits for the disk (an fsync of the WAL), and with one
//! writer connection the transactions queue behind each other's fsync: the disk, not the work,
//! bounds the writes a second. Here a write transaction is a *member* of a *group*: one
//! `BEGIN IMMEDIATE … COMMIT` on the writer connection, in which each member's work is a savepoint
//! (`cfa_member`). A member that ends while others wait for the connection releases its savepoint
//! and hands the connection on; the group commits when nobody else is waiting to join it (or it
//! has [`MAX_MEMBERS`]), and each member's commit returns only then, with the group's outcome. So
//! a caller acknowledges only what a commit holds, and at low load every transaction commits
//! alone, as before.
//!
//! A member rolled back (or dropped) undoes its own savepoint only. A failure of the group's own
//! statements (a savepoint SQLite no longer has because an I/O error rolled the whole transaction
//! back, a failed `COMMIT`) rolls the group back and fails every member in it: none of them is
//! acknowledged, and each caller answers as it would to a failed commit.
//!
//! A member whose commit waits for the others is followed by a task of its own, which commits the
//! group if it finds it still open when the connection comes back to it (the members that were
//! waiting have joined by then, or gave up), so a group never waits on a caller that went away.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Pool, Sqlite, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::storage::{StoreError, StoreResult};

/// The most transactions one commit holds.
pub const MAX_MEMBERS: usize = 128;

/// What a group's members learn when it ends: `None` while it is open.
type Outcome = Option<Result<(), StoreError>>;

/// The writer connection's door: [`Writer::begin`] makes a member of the open group.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

struct Shared {
    /// The pool of one writer connection; a group holds it from `BEGIN` to `COMMIT`.
    pool: Pool<Sqlite>,
    state: Arc<Mutex<State>>,
    /// Callers of [`Writer::begin`] waiting for the connection.
    joining: AtomicUsize,
}

#[derive(Default)]
struct State {
    group: Option<Group>,
    /// A member's savepoint is open although no member holds the connection (it was dropped
    /// while its roll-back was still to run): whoever takes the connection next rolls it back.
    open_member: bool,
    last_id: u64,
}

struct Group {
    id: u64,
    conn: PoolConnection<Sqlite>,
    /// Members that released their savepoint and wait for the commit.
    released: usize,
    outcome: watch::Sender<Outcome>,
}

/// One write transaction: a savepoint in its group's transaction, holding the writer connection
/// until it commits or rolls back.
pub struct Member {
    shared: Arc<Shared>,
    guard: Option<OwnedMutexGuard<State>>,
}

impl Writer {
    /// The writer over `pool`, a pool of one connection.
    pub fn new(pool: Pool<Sqlite>) -> Writer {
        Writer(Arc::new(Shared {
            pool,
            state: Arc::new(Mutex::new(State::default())),
            joining: AtomicUsize::new(0),
        }))
    }

    /// Waits for the writer connection (at most the pool's `acquire_timeout`, like a pool's
    /// connection) and starts a write transaction in the open group (opening one if none is).
    pub async fn begin(&self) -> StoreResult<Member> {
        let mut guard = {
            let _joining = Joining::new(&self.0.joining);
            let patience = self.0.pool.options().get_acquire_timeout();
            tokio::time::timeout(patience, self.0.state.clone().lock_owned())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "timed out after {patience:?} waiting for the SQLite writer"
                    ))
                })?
        };
        // A failed roll-back ended that group; this member starts the next one.
        let _ = guard.tidy().await;
        if guard.group.is_none() {
            guard.open(&self.0.pool).await?;
        } else if let Err(e) = execute(guard.conn(), "SAVEPOINT cfa_member").await {
            guard.fail(e.clone()).await;
            return Err(e);
        }
        guard.open_member = true;
        Ok(Member {
            shared: self.0.clone(),
            guard: Some(guard),
        })
    }
}

impl Member {
    /// Releases this member's savepoint and returns once the commit that holds it is done (or
    /// failed). The commit runs in a task of its own, so a caller that goes away mid-way (a
    /// client that hung up) cannot leave its group half-ended.
    pub async fn commit(mut self) -> StoreResult<()> {
        let Some(guard) = self.guard.take() else {
            return Err(ended());
        };
        tokio::spawn(finish(self.shared.clone(), guard))
            .await
            .unwrap_or_else(|e| Err(StoreError::Other(format!("group commit: {e}"))))
    }

    /// Undoes this member's work, leaving the rest of its group as it was.
    ///
    /// What this member read may have come from members before it in its group, not committed
    /// yet: a caller that answers from it (a duplicate webhook finding the first one's claim)
    /// must not answer before they are. So when earlier members are waiting for the commit, the
    /// rollback waits for it too, and fails if that commit does.
    pub async fn rollback(mut self) -> StoreResult<()> {
        let Some(guard) = self.guard.take() else {
            return Ok(());
        };
        tokio::spawn(withdraw(self.shared.clone(), guard))
            .await
            .unwrap_or_else(|e| Err(StoreError::Other(format!("group rollback: {e}"))))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Dropped without commit or rollback: roll back now, in a task of its own; without a
        // runtime, the next taker of the connection does it (`State::open_member`).
        if let Some(guard) = self.guard.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = self.shared.clone();
            runtime.spawn(async move { abandon(&shared, guard).await });
        }
    }
}

impl Deref for Member {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        let group = self.guard.as_ref().and_then(|g| g.group.as_ref());
        group
            .expect("a member's group is open while the member lives")
            .conn
            .deref()
    }
}

impl DerefMut for Member {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        let group = self.guard.as_mut().and_then(|g| g.group.as_mut());
        group
            .expect("a member's group is open while the member lives")
            .conn
            .deref_mut()
    }
}

impl State {
    /// The open group's connection.
    fn conn(&mut self) -> &mut SqliteConnection {
        let group = self.group.as_mut();
        group.expect("checked by the caller").conn.deref_mut()
    }

    async fn open(&mut self, pool: &Pool<Sqlite>) -> StoreResult<()> {
        // One round trip to the writer's thread for both statements.
        const OPEN: &str = "BEGIN IMMEDIATE; SAVEPOINT cfa_member";
        let mut conn = pool.acquire().await?;
        if execute(&mut conn, OPEN).await.is_err() {
            // A caller that went away while opening a group may have left its `BEGIN` behind.
            let _ = execute(&mut conn, "ROLLBACK").await;
            execute(&mut conn, OPEN).await?;
        }
        self.last_id += 1;
        self.group = Some(Group {
            id: self.last_id,
            conn,
            released: 0,
            outcome: watch::channel(None).0,
        });
        Ok(())
    }

    /// Rolls back the savepoint of a member dropped while holding the connection.
    /// Fails the group (and returns why) if the roll-back does.
    async fn tidy(&mut self) -> StoreResult<()> {
        if !std::mem::take(&mut self.open_member) || self.group.is_none() {
            return Ok(());
        }
        let undone = match execute(self.conn(), "ROLLBACK TO cfa_member").await {
            Ok(()) => execute(self.conn(), "RELEASE cfa_member").await,
            Err(e) => Err(e),
        };
        if let Err(e) = &undone {
            self.fail(e.clone()).await;
        }
        undone
    }

    /// Commits the open group with `statements` (a `COMMIT`, after whatever must precede it in
    /// the same round trip) and tells its members.
    async fn commit(&mut self, statements: &'static str) -> StoreResult<()> {
        self.tidy().await?;
        let Some(mut group) = self.group.take() else {
            return Err(ended());
        };
        let result = execute(&mut group.conn, statements).await;
        if result.is_err() {
            let _ = execute(&mut group.conn, "ROLLBACK").await;
        }
        crate::metrics::group_commit(group.released);
        group.outcome.send_replace(Some(result.clone()));
        result
    }

    /// Rolls the open group back and fails its members.
    async fn fail(&mut self, error: StoreError) {
        self.open_member = false;
        if let Some(mut group) = self.group.take() {
            let _ = execute(&mut group.conn, "ROLLBACK").await;
            group.outcome.send_replace(Some(Err(error)));
        }
    }
}

/// Releases the savepoint of the member holding `guard`, then commits its group if nobody waits
/// to join it, or else hands the connection on and waits for the group's end.
async fn finish(shared: Arc<Shared>, mut guard: OwnedMutexGuard<State>) -> StoreResult<()> {
    guard.open_member = false;
    let Some(group) = guard.group.as_mut() else {
        return Err(ended());
    };
    group.released += 1;
    if shared.joining.load(Ordering::SeqCst) == 0 || group.released >= MAX_MEMBERS {
        return guard.commit("RELEASE cfa_member; COMMIT").await;
    }
    let (id, outcome) = (group.id, group.outcome.subscribe());
    if let Err(e) = execute(guard.conn(), "RELEASE cfa_member").await {
        guard.fail(e.clone()).await;
        return Err(e);
    }
    drop(guard);
    follow(shared, id, outcome).await
}

/// Undoes the savepoint of the member holding `guard`, then waits for the end of its group if
/// members before it wait for it (see [`Member::rollback`]).
async fn withdraw(shared: Arc<Shared>, mut guard: OwnedMutexGuard<State>) -> StoreResult<()> {
    let Some(group) = guard.group.as_ref() else {
        return Ok(());
    };
    if group.released == 0 {
        abandon(&shared, guard).await;
        return Ok(());
    }
    let (id, outcome) = (group.id, group.outcome.subscribe());
    guard.tidy().await?;
    drop(guard);
    follow(shared, id, outcome).await
}

/// Undoes the savepoint of the member holding `guard`; a group left with no member ends, so that
/// the connection goes back to the pool.
async fn abandon(shared: &Shared, mut guard: OwnedMutexGuard<State>) {
    let _ = guard.tidy().await;
    let idle = guard.group.as_ref().is_some_and(|g| g.released == 0);
    if idle
        && shared.joining.load(Ordering::SeqCst) == 0
        && let Some(mut group) = guard.group.take()
    {
        let _ = execute(&mut group.conn, "ROLLBACK").await;
    }
}

/// Waits for the end of group `id`, committing it if the connection comes back while it is
/// still open.
async fn follow(
    shared: Arc<Shared>,
    id: u64,
    mut outcome: watch::Receiver<Outcome>,
) -> StoreResult<()> {
    let state = shared.state.clone();
    tokio::select! {
        ended = told(&mut outcome) => return ended,
        mut guard = state.lock_owned() => {
            if guard.group.as_ref().is_some_and(|g| g.id == id) {
                return guard.commit("COMMIT").await;
            }
        }
    }
    told(&mut outcome).await
}

/// What a group's end told its members.
async fn told(outcome: &mut watch::Receiver<Outcome>) -> StoreResult<()> {
    match outcome.wait_for(Option::is_some).await.as_deref() {
        Ok(Some(result)) => result.clone(),
        _ => Err(ended()),
    }
}

fn ended() -> StoreError {
    StoreError::Unavailable("the write transaction's group ended without a commit".into())
}

/// Runs `statements` (one or several, separated by `;`) in one round trip.
async fn execute(conn: &mut SqliteConnection, statements: &'static str) -> StoreResult<()> {
    sqlx::raw_sql(statements).execute(conn).await?;
    Ok(())
}

/// Counts a caller waiting for the connection while it lives (also when its wait is cancelled).
struct Joining<'a>(&'a AtomicUsize);

impl<'a> Joining<'a> {
    fn new(count: &'a AtomicUsize) -> Joining<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Joining(count)
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> (Writer, Pool<Sqlite>) {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("group.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_millis(300))
            .connect_with(options.clone())
            .await
            .expect("open the database");
        sqlx::query("CREATE TABLE gifts (id INTEGER PRIMARY KEY)")
            .execute(&write)
            .await
            .expect("create the table");
        let read = SqlitePoolOptions::new()
            .connect_with(options.read_only(true))
            .await
            .expect("open a reader");
        (Writer::new(write), read)
    }

    async fn gift(member: &mut Member, id: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO gifts (id) VALUES ($1)")
            .bind(id)
            .execute(&mut **member)
            .await?;
        Ok(())
    }

    async fn stored(read: &Pool<Sqlite>) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM gifts ORDER BY id")
            .fetch_all(read)
            .await
            .expect("read the gifts")
    }

    /// Runs `n` transactions at once, each inserting its number; what `act` returns for a number
    /// decides how that transaction ends.
    async fn concurrently(
        writer: &Writer,
        n: i64,
        act: fn(i64) -> &'static str,
    ) -> HashMap<i64, StoreResult<()>> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut member = writer.begin().await?;
                    gift(&mut member, i).await?;
                    match act(i) {
                        "rollback" => member.rollback().await.and(Err(ended())),
                        "drop" => Err(ended()),
                        "break" => {
                            // What SQLite does to the whole transaction after an I/O error.
                            execute(&mut member, "ROLLBACK").await?;
                            member.commit().await
                        }
                        _ => member.commit().await,
                    }
                })
            })
            .collect();
        let mut results = HashMap::new();
        for (i, task) in (0..n).zip(tasks) {
            results.insert(i, task.await.expect("the task ends"));
        }
        results
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_sharing_commits_are_acknowledged_exactly_when_stored() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (writer, read) = writer(&dir).await;
        let results = concurrently(&writer, 200, |i| match i % 10 {
            3 => "rollback",
            7 => "drop",
            _ => "commit",
        })
        .await;
        let mut acknowledged: Vec<i64> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        acknowledged.sort_unstable();
        let expected: Vec<i64> = (0..200).filter(|i| i % 10 != 3 && i % 10 != 7).collect();
        assert_eq!(
            acknowledged, expected,
            "every committed transaction is acknowledged"
        );
        assert_eq!(
            stored(&read).await,
            expected,
            "the stored rows are the acknowledged ones: rolled back and dropped ones left nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_group_acknowledges_nothing_it_held_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (writer, read) = writer(&dir).await;
        let results =
            concurrently(&writer, 100, |i| if i == 50 { "break" } else { "commit" }).await;
        assert!(results[&50].is_err(), "the broken transaction fails");
        let rows = stored(&read).await;
        for (i, result) in &results {
            assert_eq!(
                result.is_ok(),
                rows.contains(i),
                "transaction {i}: acknowledged ({result:?}) exactly when its row is stored"
            );
        }
        let mut member = writer
            .begin()
            .await
            .expect("a new transaction after the failure");
        gift(&mut member, 1_000).await.expect("insert");
        member.commit().await.expect("commit");
        assert!(stored(&read).await.contains(&1_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_after_reading_an_earlier_members_row_returns_once_that_row_is_committed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (writer, read) = writer(&dir).await;
        let mut first = writer.begin().await.expect("begin");
        let second = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut member = writer.begin().await?;
                let seen: Option<i64> = sqlx::query_scalar("SELECT id FROM gifts WHERE id = 7")
                    .fetch_optional(&mut *member)
                    .await?;
                member.rollback().await?;
                Ok::<_, StoreError>(seen)
            }
        });
        while writer.0.joining.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gift(&mut first, 7).await.expect("insert");
        let committed = tokio::spawn(first.commit());
        let seen = second.await.expect("the task ends").expect("the read");
        assert_eq!(
            seen,
            Some(7),
            "the second transaction joined the first one's group"
        );
        assert_eq!(
            stored(&read).await,
            vec![7],
            "what it read is committed by the time its rollback returns"
        );
        committed.await.expect("the task ends").expect("the commit");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_that_cannot_get_the_writer_in_time_is_told_the_database_is_unavailable()
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (writer, _read) = writer(&dir).await;
        let held = writer.begin().await.expect("begin");
        let waited = writer.begin().await;
        assert!(
            matches!(waited, Err(StoreError::Unavailable(_))),
            "a second transaction of the same task waits the pool's acquire_timeout, then fails"
        );
        held.commit().await.expect("the first one still commits");
    }
}
