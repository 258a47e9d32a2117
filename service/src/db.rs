//! Connecting to the database: pool sizing, timeouts, and the SQLite settings that let
//! concurrent writers queue instead of failing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

/// How to connect.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Maximum pool size. Default 16 (SQLite in memory always uses 1).
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing with
    /// `Unavailable`. Default 2 s.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`. Default 5 s.
    pub statement_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for the write lock. Default 5 s.
    pub sqlite_busy_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens a connection pool for `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, or
/// `postgres://...`).
pub async fn connect(url: &str, options: &DbOptions) -> Result<DatabaseConnection, DbErr> {
    let mut opt = ConnectOptions::new(url.to_owned());
    let in_memory = url.starts_with("sqlite::memory:") || url.contains("mode=memory");
    opt.max_connections(if in_memory {
        1
    } else {
        options.max_connections
    })
    .min_connections(if in_memory { 1 } else { 0 })
    .acquire_timeout(options.acquire_timeout)
    .connect_timeout(options.acquire_timeout)
    // Ping a pooled connection before handing it out when it has been idle a while: after a
    // database restart idle connections are dead, and this lets the pool drop them and
    // reconnect by itself (a refused connect is retried until the acquire timeout, then
    // UNAVAILABLE). Connections in steady use skip the ping, a round trip per request;
    // one that breaks mid-request fails that request with UNAVAILABLE and is discarded.
    .test_before_acquire_if_idle_for(Duration::from_millis(250))
    .sqlx_logging(false);
    if in_memory {
        // Each connection to `sqlite::memory:` is its own database: keep the one forever.
        opt.idle_timeout(None).max_lifetime(None);
    }
    if url.starts_with("postgres") {
        opt.statement_timeout(options.statement_timeout);
    }
    let busy = options.sqlite_busy_timeout;
    opt.map_sqlx_sqlite_opts(move |o| {
        // WAL lets readers run beside the one writer; busy_timeout makes writers wait for
        // the lock instead of failing at once; NORMAL sync is durable across process
        // crashes in WAL mode.
        //
        // Checkpoints (copying the WAL back into the database file, with its fsyncs) run
        // off the commit path: see [`Shared::after_commit`]. The automatic checkpoint,
        // which runs inside the commit that fills the WAL to its threshold and so adds
        // its copy and fsyncs to one writer's latency, stays only as a safety net for
        // writes that do not end in [`WriteTxn::commit`] (migrations): 10,000 pages
        // instead of 1,000. After a checkpoint has emptied a WAL grown past 64 MiB (a
        // bulk import), its file is truncated back to that.
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy)
            .foreign_keys(true)
            .create_if_missing(true)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .pragma("journal_size_limit", (64 << 20).to_string())
    });
    Database::connect(opt).await
}

/// The page count at which SQLite checkpoints the WAL inside a commit by itself, when
/// [`Shared::after_commit`] has not done it sooner (see [`connect`]).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// How often, at most, a commit starts a checkpoint off its path (see [`Shared::after_commit`]).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Commits between two steps of merging the search index's segments (see
/// [`Shared::after_commit`]).
pub const MERGE_EVERY_COMMITS: u32 = 5;

/// Pages of merged index that one step writes, roughly (FTS5's `'merge'` command).
///
/// Replayed over a 1M-message index (`bench/fts-merge-replay.py --commits 30000`), steps of
/// 16 pages every 5 commits took 1.2 ms at p95 in the turn to write, against 9.5-10 ms for
/// 32 pages every 10 commits; both kept the index at 8 segments.
pub const MERGE_STEP_PAGES: u32 = 16;

/// What this process shares per SQLite database file: its turn to write, its checkpoints,
/// and the merging of the search index.
#[derive(Default)]
struct Shared {
    turn: Arc<Mutex<()>>,
    /// A checkpoint is running.
    checkpointing: AtomicBool,
    /// When the last checkpoint started.
    last_checkpoint: std::sync::Mutex<Option<Instant>>,
    /// Commits since the search index was last merged a step.
    unmerged_commits: AtomicU32,
    /// A task is merging the search index.
    merging: AtomicBool,
    /// The database is not in WAL mode (in memory): there is nothing to checkpoint, ever.
    no_wal: AtomicBool,
}

impl Shared {
    /// Starts a checkpoint in a task of its own when none is running and the last began
    /// [`CHECKPOINT_EVERY`] ago or more, and returns at once: the writer that just committed
    /// does not wait for it. The task copies most of the WAL with a passive checkpoint,
    /// which takes no write lock (writers go on appending to the WAL meanwhile), then the
    /// rest in this process's turn to write.
    ///
    /// Without it, SQLite checkpoints inside the commit that fills the WAL to its threshold
    /// (1,000 pages by default): that commit copies the whole WAL and waits for two fsyncs
    /// (75-90 ms for 1,200 pages here), and every writer queued behind it waits as long. The
    /// search index writes about eight pages a message, so at 100 messages a second that
    /// happened every 1.3 s and delayed about eight requests each time.
    ///
    /// Every [`MERGE_EVERY_COMMITS`] commits it also starts merging the search index a step
    /// (see [`Shared::merge_index`]).
    fn after_commit(self: &Arc<Self>, db: &DatabaseConnection) {
        if self.unmerged_commits.fetch_add(1, Ordering::AcqRel) + 1 >= MERGE_EVERY_COMMITS
            && !self.merging.swap(true, Ordering::AcqRel)
        {
            let db = db.clone();
            let shared = Arc::clone(self);
            tokio::spawn(async move { shared.merge_index(&db).await });
        }
        {
            let mut last = self
                .last_checkpoint
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.no_wal.load(Ordering::Acquire)
                || last.is_some_and(|at| at.elapsed() < CHECKPOINT_EVERY)
                || self.checkpointing.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last = Some(Instant::now());
        }
        let db = db.clone();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            // Most of the WAL, beside the writers.
            let in_wal = checkpoint(&db).await;
            if in_wal {
                // Then what they appended meanwhile, in this process's turn to write (a
                // few pages and an fsync: a millisecond or two). Only a WAL checkpointed to
                // its end is started again from its beginning by the next writer; one that
                // writers keep appending to while it is copied would grow until SQLite's
                // own checkpoint at WAL_AUTOCHECKPOINT_PAGES.
                let _turn = write_turn(&shared).await;
                checkpoint(&db).await;
            } else {
                shared.no_wal.store(true, Ordering::Release);
            }
            shared.checkpointing.store(false, Ordering::Release);
        });
    }
}

impl Shared {
    /// Merges the FTS5 search index's segments, a step of about [`MERGE_STEP_PAGES`] pages
    /// for every [`MERGE_EVERY_COMMITS`] commits since the last step, each step a
    /// transaction of its own in this process's turn to write, so writers queue between
    /// steps rather than behind all of them. It stops early when a step finds nothing to
    /// merge (fewer than `usermerge`, 4, segments on every level).
    ///
    /// The index does not merge inside the commits that write it (`automerge` 0, migration
    /// `m20261202_000005`): there, after every 64 leaf pages written, one `recordMessage`
    /// commit merged 64 pages per level of the index while every writer behind it waited,
    /// stalls of tens of milliseconds that grew with the index. Here the same work is done
    /// in steps of about a millisecond (p95) between the commits. Without any merging the index
    /// would keep up to 64 segments a level (`crisismerge`), and every search would read
    /// them all.
    async fn merge_index(&self, db: &DatabaseConnection) {
        while self
            .unmerged_commits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_sub(MERGE_EVERY_COMMITS)
            })
            .is_ok()
        {
            match self.merge_step(db).await {
                Ok(true) => {}
                Ok(false) => {
                    // Nothing to merge until more segments are written.
                    self.unmerged_commits.store(0, Ordering::Release);
                    break;
                }
                Err(e) => {
                    // A database without the index (not migrated yet), or a busy file: the
                    // next commits try again, and FTS5's crisis merge bounds the segments
                    // meanwhile.
                    tracing::debug!(error = %e, "merging the search index failed");
                    self.unmerged_commits.store(0, Ordering::Release);
                    break;
                }
            }
        }
        self.merging.store(false, Ordering::Release);
    }

    /// One step of [`Shared::merge_index`]; `false` when it found nothing to merge.
    async fn merge_step(&self, db: &DatabaseConnection) -> Result<bool, DbErr> {
        let _turn = write_turn(self).await;
        let txn = begin_immediate(db).await?;
        let before = total_changes(&txn).await?;
        txn.execute_unprepared(&format!(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', {MERGE_STEP_PAGES})"
        ))
        .await?;
        // FTS5: a 'merge' that changed fewer than two rows did nothing.
        let merged = total_changes(&txn).await? - before >= 2;
        txn.commit().await?;
        Ok(merged)
    }
}

/// SQLite's count of rows changed on `txn`'s connection since it opened.
async fn total_changes(txn: &DatabaseTransaction) -> Result<i64, DbErr> {
    let row = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT total_changes()".to_owned(),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT total_changes() returned no row".to_owned()))?;
    row.try_get_by_index::<i64>(0)
        .map_err(|e| DbErr::Custom(e.to_string()))
}

/// Waits until no checkpoint or search index merge started by this process's commits on
/// `db`'s SQLite file is running; returns at once on PostgreSQL. Those tasks run beside the
/// writers on `db`'s pool, so a test or benchmark that counts the statements one request
/// runs waits for them first.
pub async fn background_work_done(db: &DatabaseConnection) {
    let Some(shared) = shared(db) else { return };
    while shared.checkpointing.load(Ordering::Acquire) || shared.merging.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A passive checkpoint of `db`'s WAL; `false` when the database is not in WAL mode (in
/// memory), where there is nothing to checkpoint, ever.
async fn checkpoint(db: &DatabaseConnection) -> bool {
    let statement = Statement::from_string(
        DbBackend::Sqlite,
        "PRAGMA wal_checkpoint(PASSIVE)".to_owned(),
    );
    // A row (busy, pages in the WAL, pages checkpointed); the WAL's size is -1 when the
    // database is not in WAL mode.
    match db.query_one_raw(statement).await {
        Ok(row) => row
            .and_then(|row| row.try_get_by_index::<i64>(1).ok())
            .is_none_or(|pages| pages >= 0),
        Err(e) => {
            // The WAL is checkpointed by the next one, or by SQLite itself at
            // WAL_AUTOCHECKPOINT_PAGES; nothing is lost.
            tracing::debug!(error = %e, "background WAL checkpoint failed");
            true
        }
    }
}

/// What this process shares for `db`'s SQLite file; `None` on PostgreSQL.
fn shared(db: &DatabaseConnection) -> Option<Arc<Shared>> {
    static FILES: LazyLock<std::sync::Mutex<HashMap<PathBuf, Arc<Shared>>>> =
        LazyLock::new(Default::default);
    if db.get_database_backend() != DbBackend::Sqlite {
        return None;
    }
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    Some(Arc::clone(
        FILES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(file)
            .or_default(),
    ))
}

/// This process's turn to write to an SQLite database, held by [`WriteTxn`] until the write
/// transaction ends (PostgreSQL's row locks queue writers themselves).
///
/// SQLite has one write lock per database, and a writer that finds it taken sleeps in the
/// busy handler with a growing back-off (up to 100 ms a sleep) rather than queueing: under
/// 16 concurrent writers the median stays at 2 ms while p99 passes 200 ms. Taking turns on
/// an async mutex first makes this process's writers queue in arrival order; `busy_timeout`
/// still arbitrates with other processes. Nothing depends on it for correctness.
async fn write_turn(shared: &Shared) -> OwnedMutexGuard<()> {
    Arc::clone(&shared.turn).lock_owned().await
}

/// Begins a transaction that will write, after this process's turn to write (see
/// [`write_turn`]). On SQLite it is `BEGIN IMMEDIATE`: it takes the write lock up front, so
/// it waits under `busy_timeout` behind other processes' writers. A deferred transaction
/// that reads and then writes would fail with SQLITE_BUSY at once instead.
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTxn, DbErr> {
    let shared = shared(db);
    let turn = match &shared {
        Some(shared) => Some(write_turn(shared).await),
        None => None,
    };
    let txn = begin_immediate(db).await?;
    Ok(WriteTxn {
        txn,
        _turn: turn,
        sqlite: shared.map(|shared| (db.clone(), shared)),
    })
}

/// A transaction that takes SQLite's write lock up front (`BEGIN IMMEDIATE`); a plain one
/// on PostgreSQL.
async fn begin_immediate(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// A write transaction holding this process's turn to write until it commits, rolls back
/// or is dropped. It dereferences to the transaction: pass `&*txn` where a
/// `ConnectionTrait` is asked for.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    // Declared after `txn`, so on drop the turn is released after the transaction's rollback.
    _turn: Option<OwnedMutexGuard<()>>,
    /// SQLite: the pool and its file's shared state, for the checkpoint after commit.
    sqlite: Option<(DatabaseConnection, Arc<Shared>)>,
}

impl WriteTxn {
    /// Commits, then gives up the turn. On SQLite, may then start a checkpoint off the
    /// commit path (see [`Shared::after_commit`]).
    pub async fn commit(self) -> Result<(), DbErr> {
        let WriteTxn {
            txn,
            _turn: turn,
            sqlite,
        } = self;
        let committed = txn.commit().await;
        drop(turn);
        if let (Ok(()), Some((db, shared))) = (&committed, sqlite) {
            shared.after_commit(&db);
        }
        committed
    }

    /// Rolls back, then gives up the turn.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// Whether every connection `db`'s pool may open is open and checked out, so a request
/// that times out waiting for one met an overload, not an outage (after which the pool
/// holds fewer connections than its maximum: the broken ones are dropped, and new ones
/// cannot be opened).
pub fn pool_saturated(db: &DatabaseConnection) -> bool {
    fn full<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> bool {
        pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
    }
    match db.get_database_backend() {
        DbBackend::Postgres => full(db.get_postgres_connection_pool()),
        DbBackend::Sqlite => full(db.get_sqlite_connection_pool()),
        _ => false,
    }
}

/// An identity of `db`'s pool, the same for every clone of it and different from every
/// other pool alive at the same time (the address of its options, which live as long as
/// the pool): what keys per-database state in a process that talks to several databases
/// (tests do).
pub(crate) fn pool_id(db: &DatabaseConnection) -> usize {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            std::ptr::from_ref(db.get_postgres_connection_pool().options()) as usize
        }
        _ => std::ptr::from_ref(db.get_sqlite_connection_pool().options()) as usize,
    }
}

/// Checks that the database answers (for `/readyz`).
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

/// Which engine a connection talks to.
pub fn backend(db: &impl ConnectionTrait) -> DbBackend {
    db.get_database_backend()
}

/// Statement counters attached to pools by [`counting`], by [`pool_id`]; [`COUNTING`] says
/// whether there are any, so the read side pays one relaxed load per statement when none is.
static COUNTERS: std::sync::RwLock<Vec<(usize, Arc<std::sync::atomic::AtomicUsize>)>> =
    std::sync::RwLock::new(Vec::new());
static COUNTING: AtomicBool = AtomicBool::new(false);

/// A clone of `db` that adds one to `counter` for every statement run through it: SeaORM's
/// (by its metric callback, on this clone only) and those the read side runs on the sqlx pool
/// directly ([`crate::query::Reader`]; on any clone of the pool, as long as the guard lives).
/// For tests and benchmarks that hold a request to a number of statements: call
/// [`background_work_done`] before reading or zeroing `counter`.
pub fn counting(
    db: &DatabaseConnection,
    counter: Arc<std::sync::atomic::AtomicUsize>,
) -> (DatabaseConnection, CountingGuard) {
    let mut clone = db.clone();
    let c = counter.clone();
    clone.set_metric_callback(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    let pool = pool_id(db);
    let mut counters = COUNTERS.write().unwrap_or_else(|e| e.into_inner());
    counters.push((pool, counter.clone()));
    COUNTING.store(true, Ordering::Release);
    (clone, CountingGuard { pool, counter })
}

/// Detaches a [`counting`] counter from its pool when dropped.
#[must_use = "the counter stops counting direct statements when the guard is dropped"]
pub struct CountingGuard {
    pool: usize,
    counter: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for CountingGuard {
    fn drop(&mut self) {
        let mut counters = COUNTERS.write().unwrap_or_else(|e| e.into_inner());
        counters.retain(|(p, c)| !(*p == self.pool && Arc::ptr_eq(c, &self.counter)));
        COUNTING.store(!counters.is_empty(), Ordering::Release);
    }
}

/// Counts one statement the read side ran directly on the pool `pool` ([`pool_id`]).
pub(crate) fn direct_statement_ran(pool: impl FnOnce() -> usize) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    let pool = pool();
    let counters = COUNTERS.read().unwrap_or_else(|e| e.into_inner());
    for (p, c) in counters.iter() {
        if *p == pool {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }
}
