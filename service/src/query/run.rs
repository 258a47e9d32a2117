//! How the read side runs its `SELECT`s: built with every `LIMIT` written into the text as
//! an integer literal, then executed and decoded.
//!
//! sea-query binds a `LIMIT` as a parameter. SQLite reads a bound `LIMIT` value while it
//! plans (the value is part of the plan), so every new binding expires the prepared
//! statement and each execution re-prepared it (`sqlite3Reprepare`, about 227,000
//! instructions of a 50-row conversation page). A literal `LIMIT` keeps one prepared
//! statement per page size in the connection's statement cache. Only integers reach the
//! text: a `LIMIT` is a `u64` (page sizes are validated and bounded by
//! [`crate::settings::Limits::max_page_size`], so there are few of them).

use std::fmt::Write;

use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, PostgresQueryBuilder, Query, QueryBuilder, SelectStatement,
    SqlWriter, SqliteQueryBuilder, Value,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, PgPool, SqlitePool};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryResult, QuerySelect, QueryTrait, RuntimeErr, Select, Statement,
};
use sea_query_sqlx::SqlxValues;

use super::rows::{FromRow, check_columns};

/// A connection the read side's statements run on.
///
/// On a pool (a [`DatabaseConnection`]) they run on sqlx directly: SeaORM's
/// `query_all_raw`/`query_one_raw` run the same sqlx calls, but as boxed trait futures in a
/// tracing span, which cost about 20,000 instructions a statement (a thread request runs
/// two), and rows come back as the same [`QueryResult`]s. In a transaction they run through
/// SeaORM. Statements run directly are counted by [`crate::db::counting`], as SeaORM's are
/// by its metric callback.
pub trait Reader: ConnectionTrait + Sync {
    /// The sqlx pool to run on directly; `None` runs through SeaORM.
    fn pool(&self) -> Option<Pool<'_>> {
        None
    }
}

/// Where a [`Reader`] runs its statements directly.
#[derive(Clone, Copy)]
pub enum Pool<'a> {
    /// PostgreSQL's pool: a connection acquired and released for each statement.
    Postgres(&'a PgPool),
    /// SQLite's pool, likewise.
    Sqlite(&'a SqlitePool),
    /// One connection for several statements ([`OneConnection`]).
    One(&'a OneConnection),
}

/// A [`Reader`] that runs every statement given to it on one pooled connection, acquired by
/// its first statement and given back to the pool when it is dropped.
///
/// sqlx pings a connection as it goes back to its pool (`Sync`, then a wait for
/// `ReadyForQuery`: a round trip to the database, in a task of its own), so each statement
/// run on the pool costs two round trips. Statements that follow one another in one
/// resolver (a conversation looked up, then its thread page) share one release here. Every
/// statement goes through the held connection, SeaORM's included, so none waits for a second
/// connection from a pool the first one may have exhausted (SQLite in memory has one). Hold
/// it only for statements run one after the other, and drop it before anything else waits.
/// It is for reads: a write on SQLite takes the process's turn to write
/// ([`crate::db::begin_write`]), which this does not.
///
/// Made with [`OneConnection::warm`], it takes its connection from a [`Warm`] when one is
/// kept there and leaves it there when dropped, and neither acquire nor release costs a
/// round trip.
pub struct OneConnection {
    db: DatabaseConnection,
    warm: Option<Arc<Warm>>,
    held: tokio::sync::OnceCell<tokio::sync::Mutex<Holding>>,
}

/// A connection taken from the pool.
enum Held {
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

/// The connection a [`OneConnection`] holds, and what [`Warm`] needs to know of it.
struct Holding {
    conn: Held,
    /// Every statement run on it has run to its end without an error: nothing of one is
    /// left on the wire, so it can be used again without sqlx's ping. A statement whose
    /// future was dropped half-way, or that failed, leaves it `false`.
    clean: bool,
    /// When it left the pool: it goes back after [`WARM_FOR_AT_MOST`], whatever its use.
    since: Instant,
}

/// How long a connection kept by [`Warm`] may wait there unused. The pool pings a
/// connection idle for 250 ms before handing it out (see [`crate::db::connect`]); one
/// idle in a [`Warm`] for longer goes back to the pool instead of being used.
pub const WARM_IDLE: Duration = Duration::from_millis(100);

/// How long a connection may go from one [`Warm`] use to the next before it is given back
/// to the pool, where its lifetime and idle limits apply.
pub const WARM_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// Connections the read side keeps between requests, so that the next request's
/// statements run on one without a round trip spent on handing it over.
///
/// sqlx pings every connection it takes back into its pool (`Sync`, then a wait for
/// `ReadyForQuery`, in a task of its own): a round trip to the database and two wake-ups
/// per request, about as much as the statement itself for a small page. A
/// [`OneConnection::warm`] that ran its statements to the end leaves its connection here
/// instead, and the next one takes it (newest first).
///
/// One per pool ([`Warm::of`]). It keeps at most half of the pool's maximum, none while
/// the pool has none to spare (another request may be waiting for one: all go back then),
/// none idle for longer than [`WARM_IDLE`] (a task gives each back as it gets there), and
/// none for longer than [`WARM_FOR_AT_MOST`] in all. A connection on which a statement
/// failed or was dropped half-way goes back to the pool as before, through sqlx's ping. A
/// pool with a minimum of connections (SQLite in memory: one) keeps none.
pub struct Warm {
    db: DatabaseConnection,
    cap: usize,
    kept: std::sync::Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Oldest first; each with when it was left here.
    idle: Vec<(Holding, Instant)>,
    /// A task is giving back the connections idle too long.
    reaping: bool,
}

impl Warm {
    /// The warm connections of `db`'s pool: the same [`Warm`] for every caller while one
    /// is alive, so that what it keeps is bounded per pool.
    pub fn of(db: &DatabaseConnection) -> Arc<Warm> {
        static LIVE: std::sync::Mutex<Vec<(usize, std::sync::Weak<Warm>)>> =
            std::sync::Mutex::new(Vec::new());
        let pool = crate::db::pool_id(db);
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, w)| w.strong_count() > 0);
        if let Some(warm) = live
            .iter()
            .find(|(p, _)| *p == pool)
            .and_then(|(_, w)| w.upgrade())
        {
            return warm;
        }
        let (max, min) = match db.get_database_backend() {
            DbBackend::Postgres => {
                let o = db.get_postgres_connection_pool().options();
                (o.get_max_connections(), o.get_min_connections())
            }
            DbBackend::Sqlite => {
                let o = db.get_sqlite_connection_pool().options();
                (o.get_max_connections(), o.get_min_connections())
            }
            _ => (0, 0),
        };
        let warm = Arc::new(Warm {
            db: db.clone(),
            // A pool that keeps a minimum spawns a task for every connection that leaves it
            // (to replace it), which `Drop for Warm` may not do: none kept there (SQLite in
            // memory is such a pool, of one connection).
            cap: if min > 0 {
                0
            } else {
                usize::try_from(max / 2).unwrap_or(0)
            },
            kept: std::sync::Mutex::default(),
        });
        live.push((pool, Arc::downgrade(&warm)));
        warm
    }

    /// How many connections are kept now.
    pub fn len(&self) -> usize {
        self.lock().idle.len()
    }

    /// Whether none is kept now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection left here last, unless it has idled too long (then it and every
    /// older one go back to the pool).
    fn take(&self) -> Option<Holding> {
        let mut kept = self.lock();
        let (holding, left) = kept.idle.pop()?;
        if left.elapsed() < WARM_IDLE {
            metrics::counter!("parley_db_warm_reused_total").increment(1);
            return Some(holding);
        }
        let stale = std::mem::take(&mut kept.idle);
        drop(kept);
        drop((holding, stale));
        None
    }

    /// Keeps `holding` if it may be kept; otherwise it is dropped, back to the pool. While
    /// the pool has no connection to spare, every kept one goes back with it.
    fn keep(self: &Arc<Self>, holding: Holding) {
        if !holding.clean || self.cap == 0 || holding.since.elapsed() >= WARM_FOR_AT_MOST {
            return;
        }
        if crate::db::pool_saturated(&self.db) {
            let all = std::mem::take(&mut self.lock().idle);
            drop((holding, all));
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut kept = self.lock();
        if kept.idle.len() >= self.cap {
            drop(kept);
            return;
        }
        kept.idle.push((holding, Instant::now()));
        if !kept.reaping {
            kept.reaping = true;
            runtime.spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// Gives back to the pool each connection a [`Warm`] kept as it reaches [`WARM_IDLE`]
/// unused (all of them while the pool has none to spare), until it keeps none.
async fn reap(warm: std::sync::Weak<Warm>) {
    let mut next = Instant::now() + WARM_IDLE;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let Some(warm) = warm.upgrade() else {
            return;
        };
        let saturated = crate::db::pool_saturated(&warm.db);
        let mut kept = warm.lock();
        let fresh = if saturated {
            kept.idle.len()
        } else {
            kept.idle
                .iter()
                .position(|(_, left)| left.elapsed() < WARM_IDLE)
                .unwrap_or(kept.idle.len())
        };
        let stale: Vec<_> = kept.idle.drain(..fresh).collect();
        let done = kept.idle.is_empty();
        match kept.idle.first() {
            Some((_, left)) => next = *left + WARM_IDLE,
            None => kept.reaping = false,
        }
        drop(kept);
        drop(stale);
        if done {
            return;
        }
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        let kept = std::mem::take(&mut self.lock().idle);
        if tokio::runtime::Handle::try_current().is_ok() {
            return; // each back to its pool as it is dropped
        }
        // No runtime for sqlx to give them back on (it spawns that): detached from the pool
        // (its count and permit given back, nothing spawned: a pool with a minimum has no
        // `Warm` connections, see [`Warm::of`]) and dropped, which closes their sockets.
        for (holding, _) in kept {
            match holding.conn {
                Held::Postgres(conn) => drop(conn.detach()),
                Held::Sqlite(conn) => drop(conn.detach()),
            }
        }
    }
}

impl Drop for OneConnection {
    fn drop(&mut self) {
        if let (Some(warm), Some(held)) = (&self.warm, self.held.take()) {
            warm.keep(held.into_inner());
        }
    }
}

/// Runs `$statement` (a SeaORM [`Statement`]) on `$conn` (a sqlx connection): its rows, at
/// most one when `$one`, as SeaORM's `query_all_raw` gives them.
macro_rules! fetch_on {
    ($conn:expr, $statement:expr, $one:expr) => {{
        let statement: Statement = $statement;
        let values = SqlxValues(statement.values.unwrap_or(sea_orm::Values(Vec::new())));
        let query = sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), values);
        let rows = if $one {
            query.fetch_optional($conn).await.map(Vec::from_iter)
        } else {
            query.fetch_all($conn).await
        };
        rows.map_err(query_err).map(|rows| {
            rows.into_iter()
                .map(Into::into)
                .collect::<Vec<QueryResult>>()
        })
    }};
}

impl OneConnection {
    /// Statements on `db`'s pool, on one connection from the first until this is dropped.
    pub fn new(db: &DatabaseConnection) -> Self {
        OneConnection {
            db: db.clone(),
            warm: None,
            held: tokio::sync::OnceCell::new(),
        }
    }

    /// The same, taking its connection from `warm` when one is kept there, and leaving it
    /// there when dropped ([`Warm`]).
    pub fn warm(db: &DatabaseConnection, warm: &Arc<Warm>) -> Self {
        debug_assert_eq!(crate::db::pool_id(db), crate::db::pool_id(&warm.db));
        OneConnection {
            db: db.clone(),
            warm: Some(warm.clone()),
            held: tokio::sync::OnceCell::new(),
        }
    }

    /// The held connection, acquired from the pool (as [`Pool::fetch`] does) by the first
    /// statement; counts the statement about to run on it ([`crate::db::counting`]).
    async fn connection(&self) -> Result<tokio::sync::MutexGuard<'_, Holding>, DbErr> {
        let held = self
            .held
            .get_or_try_init(|| async {
                if let Some(kept) = self.warm.as_ref().and_then(|warm| warm.take()) {
                    return Ok(tokio::sync::Mutex::new(kept));
                }
                let conn = match self.db.get_database_backend() {
                    DbBackend::Postgres => Held::Postgres(
                        self.db
                            .get_postgres_connection_pool()
                            .acquire()
                            .await
                            .map_err(acquire_err)?,
                    ),
                    _ => Held::Sqlite(
                        self.db
                            .get_sqlite_connection_pool()
                            .acquire()
                            .await
                            .map_err(acquire_err)?,
                    ),
                };
                Ok::<_, DbErr>(tokio::sync::Mutex::new(Holding {
                    conn,
                    clean: true,
                    since: Instant::now(),
                }))
            })
            .await?;
        crate::db::direct_statement_ran(|| crate::db::pool_id(&self.db));
        Ok(held.lock().await)
    }

    /// Runs `statement` on the held connection.
    async fn fetch(&self, statement: Statement, one: bool) -> Result<Vec<QueryResult>, DbErr> {
        let mut holding = self.connection().await?;
        let clean = std::mem::replace(&mut holding.clean, false);
        let rows = match &mut holding.conn {
            Held::Postgres(conn) => fetch_on!(&mut **conn, statement, one),
            Held::Sqlite(conn) => fetch_on!(&mut **conn, statement, one),
        };
        holding.clean = clean && rows.is_ok();
        rows
    }

    /// Executes `statement` on the held connection.
    async fn execute(&self, statement: Statement) -> Result<sea_orm::ExecResult, DbErr> {
        use sqlx::Executor as _;
        let exec_err = |e| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)));
        let values = SqlxValues(statement.values.unwrap_or(sea_orm::Values(Vec::new())));
        let sql = sqlx::AssertSqlSafe(statement.sql);
        let mut holding = self.connection().await?;
        let clean = std::mem::replace(&mut holding.clean, false);
        let done = match &mut holding.conn {
            Held::Postgres(conn) => (&mut **conn)
                .execute(sqlx::query_with(sql, values))
                .await
                .map(Into::into)
                .map_err(exec_err),
            Held::Sqlite(conn) => (&mut **conn)
                .execute(sqlx::query_with(sql, values))
                .await
                .map(Into::into)
                .map_err(exec_err),
        };
        holding.clean = clean && done.is_ok();
        done
    }
}

#[sea_orm::prelude::async_trait::async_trait]
impl ConnectionTrait for OneConnection {
    fn get_database_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<sea_orm::ExecResult, DbErr> {
        Box::pin(self.execute(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        let stmt = Statement::from_string(self.get_database_backend(), sql.to_owned());
        Box::pin(self.execute(stmt)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        Ok(Box::pin(self.fetch(stmt, true)).await?.pop())
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        Box::pin(self.fetch(stmt, false)).await
    }
}

impl Reader for OneConnection {
    fn pool(&self) -> Option<Pool<'_>> {
        Some(Pool::One(self))
    }
}

impl Reader for DatabaseConnection {
    fn pool(&self) -> Option<Pool<'_>> {
        match self.get_database_backend() {
            DbBackend::Postgres => Some(Pool::Postgres(self.get_postgres_connection_pool())),
            DbBackend::Sqlite => Some(Pool::Sqlite(self.get_sqlite_connection_pool())),
            _ => None,
        }
    }
}

impl Reader for DatabaseTransaction {}

impl Pool<'_> {
    /// The identity [`crate::db::pool_id`] gives the pool.
    fn id(self) -> usize {
        match self {
            Pool::Postgres(p) => std::ptr::from_ref(p.options()) as usize,
            Pool::Sqlite(p) => std::ptr::from_ref(p.options()) as usize,
            Pool::One(one) => crate::db::pool_id(&one.db),
        }
    }

    /// Runs `statement` and returns its rows (at most one when `one`), as SeaORM's
    /// `query_all_raw` would: the same acquire, the same errors.
    async fn fetch(self, statement: Statement, one: bool) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Pool::Postgres(pool) => {
                crate::db::direct_statement_ran(|| self.id());
                let mut conn = pool.acquire().await.map_err(acquire_err)?;
                fetch_on!(&mut *conn, statement, one)
            }
            Pool::Sqlite(pool) => {
                crate::db::direct_statement_ran(|| self.id());
                let mut conn = pool.acquire().await.map_err(acquire_err)?;
                fetch_on!(&mut *conn, statement, one)
            }
            Pool::One(held) => held.fetch(statement, one).await,
        }
    }
}

/// What SeaORM makes of a failed acquire (its `sqlx_conn_acquire_err`, private to it): the
/// service tells a pool timeout from a broken database by it.
fn acquire_err(e: sqlx::Error) -> DbErr {
    match e {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        e => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
    }
}

/// What SeaORM makes of a failed query (its `sqlx_error_to_query_err`).
fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

/// `statement`'s rows, on the pool when there is one ([`Reader`]).
///
/// The fetch is boxed: its future (sqlx's acquire and fetch) is large, and held inline it
/// would grow every future that awaits a read, up to async-graphql's root field future,
/// which the executor moves into a box for every field of every request.
async fn rows(db: &impl Reader, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
    match db.pool() {
        Some(pool) => Box::pin(pool.fetch(statement, false)).await,
        None => db.query_all_raw(statement).await,
    }
}

/// `statement`'s first row, on the pool when there is one ([`Reader`]; boxed, as in
/// [`rows`]).
async fn row(db: &impl Reader, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
    match db.pool() {
        Some(pool) => Ok(Box::pin(pool.fetch(statement, true)).await?.pop()),
        None => db.query_one_raw(statement).await,
    }
}

/// `select` with its column list written once, as one piece of SQL text: what a read-side
/// template is made from.
///
/// A select that lists each column (SeaORM's `Entity::find()` lists them all) costs, for
/// every statement made from it, a clone of each column's expression and then their
/// building, quoted identifier by identifier: about 30,000 instructions for a page of
/// messages (16 columns) and 13,000 for a conversation lookup. The same text taken from
/// one build of `select` is copied instead. PostgreSQL and SQLite quote identifiers alike
/// (`"table"."column"`), so the text holds on both (the templates' tests compare the whole
/// statement with a fresh build on each).
pub(crate) fn columns_prebuilt<E: EntityTrait>(select: Select<E>) -> Select<E> {
    let built = select.build(DbBackend::Postgres).sql;
    let list = built
        .strip_prefix("SELECT ")
        .and_then(|rest| rest.split_once(" FROM "))
        .map(|(list, _)| list.to_owned())
        .expect("a plain SELECT ... FROM");
    select.select_only().expr(Expr::cust(list))
}

/// `select` as it runs on `backend`: every `LIMIT` (the only `u64` values of the read
/// side's statements) written as a literal, every other value bound. What the listing
/// functions execute, so a test can `EXPLAIN` the very statement.
pub fn page_statement(backend: DbBackend, select: &SelectStatement) -> Statement {
    let (sql, values) = match backend {
        DbBackend::Postgres => build(select, &PostgresQueryBuilder),
        _ => build(select, &SqliteQueryBuilder),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

fn build(select: &SelectStatement, builder: &impl QueryBuilder) -> (String, Vec<Value>) {
    let (placeholder, numbered) = builder.placeholder();
    let mut writer = InlineLimits {
        sql: String::with_capacity(512),
        values: Vec::new(),
        placeholder,
        numbered,
    };
    select.build_collect_any_into(builder, &mut writer);
    (writer.sql, writer.values)
}

/// sea-query's `SqlWriterValues`, except that a `u64` value is written as a literal.
struct InlineLimits {
    sql: String,
    values: Vec<Value>,
    placeholder: &'static str,
    numbered: bool,
}

impl Write for InlineLimits {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.sql.push_str(s);
        Ok(())
    }

    fn write_char(&mut self, c: char) -> std::fmt::Result {
        self.sql.push(c);
        Ok(())
    }
}

impl std::fmt::Display for InlineLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sql)
    }
}

impl SqlWriter for InlineLimits {
    fn push_param<T: QueryBuilder>(&mut self, value: Value, _: &T) {
        if let Value::BigUnsigned(Some(n)) = value {
            // An integer: nothing but digits enters the text.
            write!(self.sql, "{n}").expect("writing to a String");
            return;
        }
        self.sql.push_str(self.placeholder);
        self.values.push(value);
        if self.numbered {
            write!(self.sql, "{}", self.values.len()).expect("writing to a String");
        }
    }

    fn as_writer(&mut self) -> &mut dyn Write {
        self as _
    }
}

/// Runs `select` ([`page_statement`]) and decodes each row as `M`, by position (see
/// [`super::rows`]).
pub(crate) async fn all<M: FromRow>(
    db: &impl Reader,
    select: SelectStatement,
) -> Result<Vec<M>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    let rows = rows(db, statement).await?;
    if let Some(first) = rows.first() {
        check_columns::<M>(first)?;
    }
    rows.iter().map(M::from_row).collect()
}

/// Runs `select` ([`page_statement`]) and returns its rows as they are, for a decoder of
/// its own.
pub(crate) async fn raw(
    db: &impl Reader,
    select: SelectStatement,
) -> Result<Vec<QueryResult>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    rows(db, statement).await
}

/// Runs `select` limited to one row ([`page_statement`]) and decodes it as `M`.
pub(crate) async fn one<M: FromRow>(
    db: &impl Reader,
    mut select: SelectStatement,
) -> Result<Option<M>, DbErr> {
    select.limit(1);
    let statement = page_statement(db.get_database_backend(), &select);
    let Some(row) = row(db, statement).await? else {
        return Ok(None);
    };
    check_columns::<M>(&row)?;
    M::from_row(&row).map(Some)
}

/// Runs `select`, a `count(*)` ([`page_statement`]), and reads its one value.
pub(crate) async fn count(db: &impl Reader, select: SelectStatement) -> Result<Option<i64>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    row(db, statement)
        .await?
        .map(|row| row.try_get_by_index(0))
        .transpose()
}

/// Counts the rows `select` returns, reading at most one past `limit` of them: `SELECT
/// count(*) FROM (select LIMIT limit + 1)`, so the database stops after that many matching
/// rows whatever the filter (see [`super::Count`]). `select` should select a constant.
pub(crate) async fn count_up_to(
    db: &impl Reader,
    mut select: SelectStatement,
    limit: u64,
) -> Result<super::Count, DbErr> {
    select.limit(super::count_probe(limit));
    let outer = Query::select()
        .expr_as(Expr::col(Asterisk).count(), Alias::new("n"))
        .from_subquery(select, Alias::new("counted"))
        .to_owned();
    let found = count(db, outer).await?.unwrap_or(0);
    Ok(super::Count::up_to(
        u64::try_from(found).unwrap_or(0),
        limit,
    ))
}

/// Runs `select`, whose first column is an id ([`page_statement`]), and reads the ids.
pub(crate) async fn ids(db: &impl Reader, select: SelectStatement) -> Result<Vec<i64>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    rows(db, statement)
        .await?
        .iter()
        .map(|row| row.try_get_by_index(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Viewer;
    use crate::cursor::Cursor;
    use crate::query::{MessageFilter, Window, message_batch_pages};
    use sea_orm::QueryTrait;
    use sea_orm::sea_query::{Expr, ExprTrait, Query};

    fn window(size: u64, after: Option<Cursor>) -> Window {
        Window {
            forward: true,
            size,
            after,
            before: None,
        }
    }

    #[test]
    fn limits_are_literals_and_the_other_values_stay_bound() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let w = window(50, Some(Cursor { at, id: 7 }));
        let select = crate::query::conversation_page(
            &Viewer::Everyone,
            Default::default(),
            &Default::default(),
            &w,
        )
        .unwrap();
        let pg = page_statement(DbBackend::Postgres, select.as_query());
        assert!(pg.sql.ends_with(" LIMIT 51"), "{}", pg.sql);
        assert!(pg.sql.contains("($1, $2)"), "{}", pg.sql);
        assert_eq!(pg.values.as_ref().unwrap().0.len(), 2);
        let lite = page_statement(DbBackend::Sqlite, select.as_query());
        assert!(lite.sql.ends_with(" LIMIT 51"), "{}", lite.sql);
        assert!(lite.sql.contains("(?, ?)"), "{}", lite.sql);
        // The same text as sea-query's, but for the limit.
        let built = select.build(DbBackend::Postgres);
        assert_eq!(built.sql.replace("LIMIT $3", "LIMIT 51"), pg.sql);
        assert_eq!(built.values.unwrap().0[..2], pg.values.unwrap().0[..]);
    }

    #[test]
    fn every_arm_of_a_batched_page_has_its_literal_limit_and_numbering_continues() {
        let statements = message_batch_pages(&[3, 8], &MessageFilter::default(), &window(20, None));
        let pg = page_statement(DbBackend::Postgres, &statements[0]);
        assert_eq!(pg.sql.matches(" LIMIT 21").count(), 2, "{}", pg.sql);
        assert!(pg.sql.contains("$1") && pg.sql.contains("$2") && !pg.sql.contains("$3"));
        assert_eq!(pg.values.unwrap().0.len(), 2);
    }

    #[test]
    fn only_u64_values_are_written_into_the_text() {
        let mut select = Query::select();
        select
            .expr(Expr::val(1))
            .and_where(Expr::val("x' OR 1=1 --").eq("y"))
            .and_where(Expr::val(5i64).eq(5i64))
            .limit(3);
        let pg = page_statement(DbBackend::Postgres, &select);
        assert!(!pg.sql.contains("OR 1=1"), "{}", pg.sql);
        assert!(pg.sql.ends_with("LIMIT 3"), "{}", pg.sql);
        assert_eq!(pg.values.unwrap().0.len(), 5);
    }
}
