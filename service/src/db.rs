//! Connecting to the database: pool sizing, timeouts, and the SQLite settings that let
//! concurrent writers queue instead of failing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::Error;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
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
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy)
            .foreign_keys(true)
            .create_if_missing(true)
    });
    Database::connect(opt).await
}

/// This process's turn to write to an SQLite database, held by [`WriteTxn`] until the write
/// transaction ends; `None` on PostgreSQL, whose row locks queue writers themselves.
///
/// SQLite has one write lock per database, and a writer that finds it taken sleeps in the
/// busy handler with a growing back-off (up to 100 ms a sleep) rather than queueing: under
/// 16 concurrent writers the median stays at 2 ms while p99 passes 200 ms. Taking turns on
/// an async mutex first makes this process's writers queue in arrival order; `busy_timeout`
/// still arbitrates with other processes. Nothing depends on it for correctness.
async fn write_turn(db: &DatabaseConnection) -> Option<OwnedMutexGuard<()>> {
    static TURNS: LazyLock<std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> =
        LazyLock::new(Default::default);
    if db.get_database_backend() != DbBackend::Sqlite {
        return None;
    }
    let file = db
        .get_sqlite_connection_pool()
        .connect_options()
        .get_filename()
        .to_path_buf();
    let turn = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(file)
        .or_default()
        .clone();
    Some(turn.lock_owned().await)
}

/// Begins a transaction that will write, after this process's turn to write (see
/// [`write_turn`]). On SQLite it is `BEGIN IMMEDIATE`: it takes the write lock up front, so
/// it waits under `busy_timeout` behind other processes' writers. A deferred transaction
/// that reads and then writes would fail with SQLITE_BUSY at once instead.
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTxn, DbErr> {
    let turn = write_turn(db).await;
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    Ok(WriteTxn { txn, _turn: turn })
}

/// A write transaction holding this process's turn to write until it commits, rolls back
/// or is dropped. It dereferences to the transaction: pass `&*txn` where a
/// `ConnectionTrait` is asked for.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    // Declared after `txn`, so on drop the turn is released after the transaction's rollback.
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    /// Commits, then gives up the turn.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
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

/// This process's writers to one conversation, queued in arrival order: each waits here,
/// holding no pooled connection, until the writer before it has committed. Without it
/// every writer to a busy conversation takes a connection and then waits on the
/// conversation's row lock with it, and a few hundred writers to one conversation drain
/// the pool for everyone (issue 11: 26-39% of 1,000 such writers failed waiting for a
/// connection). The database's row lock still orders writers of different processes.
///
/// When the database cannot be reached, the writer holding the turn fails after the
/// acquire timeout, and the writers that queued behind it before it failed fail at once
/// with the same error ([`ConversationTurn::failed_ahead`]) instead of each waiting its
/// own timeout in turn: in an outage every writer is answered within one acquire timeout.
///
/// The map holds one entry per conversation key that has a writer in flight (at most one
/// per concurrent request), and an entry leaves with its last writer.
pub async fn conversation_turn(key: &str) -> ConversationTurn {
    let mutex = {
        let mut turns = conversation_turns();
        turns.entry(key.to_owned()).or_default().clone()
    };
    let queued_at = Instant::now();
    ConversationTurn {
        key: key.to_owned(),
        queued_at,
        guard: Some(mutex.lock_owned().await),
    }
}

/// What the writers of one conversation share: the last failure to reach the database.
#[derive(Default)]
pub struct TurnState {
    failure: Option<(Instant, Error)>,
}

type Turns = HashMap<String, Arc<Mutex<TurnState>>>;

fn conversation_turns() -> std::sync::MutexGuard<'static, Turns> {
    static TURNS: LazyLock<std::sync::Mutex<Turns>> = LazyLock::new(Default::default);
    // Every critical section is a map lookup or removal: a poisoned map is still sound.
    TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A writer's turn on one conversation ([`conversation_turn`]), given up on drop.
pub struct ConversationTurn {
    key: String,
    queued_at: Instant,
    guard: Option<OwnedMutexGuard<TurnState>>,
}

impl ConversationTurn {
    /// The error of a writer ahead of this one that could not reach the database after
    /// this one had queued: this writer fails the same way at once.
    pub fn failed_ahead(&self) -> Option<Error> {
        let (at, err) = self.guard.as_ref()?.failure.as_ref()?;
        if *at < self.queued_at {
            return None;
        }
        unreachable_copy(err)
    }

    /// Records how this writer failed, when it is a failure to reach the database (an
    /// outage or a pool timeout), for the writers queued behind it.
    pub fn failed(&mut self, err: &Error) {
        if let (Some(state), Some(copy)) = (self.guard.as_mut(), unreachable_copy(err)) {
            state.failure = Some((Instant::now(), copy));
        }
    }
}

/// A copy of `err` when it says the database could not be reached (an outage or a pool
/// timeout): the failures a queued writer shares with the one ahead of it.
fn unreachable_copy(err: &Error) -> Option<Error> {
    match err {
        Error::PoolTimeout(d) => Some(Error::PoolTimeout(d.clone())),
        Error::Unavailable(d) => Some(Error::Unavailable(d.clone())),
        _ => None,
    }
}

impl Drop for ConversationTurn {
    fn drop(&mut self) {
        let mut turns = conversation_turns();
        // Release first: then the map's clone is the only one left unless someone waits.
        drop(self.guard.take());
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{conversation_turn, conversation_turns};

    #[tokio::test]
    async fn writers_to_one_conversation_take_turns_and_the_entry_leaves_with_the_last() {
        let key = "test:writers-take-turns";
        let first = conversation_turn(key).await;
        let second = tokio::spawn(conversation_turn(key));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "the second writer waits for the first"
        );
        // Another conversation does not wait.
        let other = conversation_turn("test:another-conversation").await;
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second writer's turn came")
            .unwrap();
        assert!(conversation_turns().contains_key(key));
        drop(second);
        drop(other);
        assert!(!conversation_turns().contains_key(key));
    }

    #[tokio::test]
    async fn writers_queued_behind_a_failed_one_fail_at_once_and_later_ones_try_again() {
        use crate::error::Error;
        let key = "test:failed-ahead";
        let mut first = conversation_turn(key).await;
        assert!(first.failed_ahead().is_none());
        let queued = tokio::spawn(conversation_turn(key));
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.failed(&Error::PoolTimeout("pool timed out".into()));
        drop(first);
        let queued = queued.await.unwrap();
        assert!(matches!(queued.failed_ahead(), Some(Error::PoolTimeout(_))));
        // A writer that queues after the failure tries the database itself; a failure
        // that is not about reaching the database is not passed on.
        let later = tokio::spawn(conversation_turn(key));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(queued);
        let mut later = later.await.unwrap();
        assert!(later.failed_ahead().is_none());
        let behind = tokio::spawn(conversation_turn(key));
        tokio::time::sleep(Duration::from_millis(20)).await;
        later.failed(&Error::invalid("body", "bad"));
        drop(later);
        assert!(behind.await.unwrap().failed_ahead().is_none());
        assert!(!conversation_turns().contains_key("test:another-conversation"));
    }

    #[tokio::test]
    async fn a_writer_cancelled_while_queued_leaves_no_entry() {
        let key = "test:cancelled-while-queued";
        let first = conversation_turn(key).await;
        let queued = tokio::spawn(conversation_turn(key));
        tokio::time::sleep(Duration::from_millis(20)).await;
        queued.abort();
        let _ = queued.await;
        drop(first);
        assert!(!conversation_turns().contains_key(key));
    }
}
