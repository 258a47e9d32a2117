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
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use super::rows::{FromRow, check_columns};

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
    db: &impl ConnectionTrait,
    select: SelectStatement,
) -> Result<Vec<M>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    let rows = db.query_all_raw(statement).await?;
    if let Some(first) = rows.first() {
        check_columns::<M>(first)?;
    }
    rows.iter().map(M::from_row).collect()
}

/// Runs `select` limited to one row ([`page_statement`]) and decodes it as `M`.
pub(crate) async fn one<M: FromRow>(
    db: &impl ConnectionTrait,
    mut select: SelectStatement,
) -> Result<Option<M>, DbErr> {
    select.limit(1);
    let statement = page_statement(db.get_database_backend(), &select);
    let Some(row) = db.query_one_raw(statement).await? else {
        return Ok(None);
    };
    check_columns::<M>(&row)?;
    M::from_row(&row).map(Some)
}

/// Runs `select`, a `count(*)` ([`page_statement`]), and reads its one value.
pub(crate) async fn count(
    db: &impl ConnectionTrait,
    select: SelectStatement,
) -> Result<Option<i64>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    db.query_one_raw(statement)
        .await?
        .map(|row| row.try_get_by_index(0))
        .transpose()
}

/// Counts the rows `select` returns, reading at most one past `limit` of them: `SELECT
/// count(*) FROM (select LIMIT limit + 1)`, so the database stops after that many matching
/// rows whatever the filter (see [`super::Count`]). `select` should select a constant.
pub(crate) async fn count_up_to(
    db: &impl ConnectionTrait,
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
pub(crate) async fn ids(
    db: &impl ConnectionTrait,
    select: SelectStatement,
) -> Result<Vec<i64>, DbErr> {
    let statement = page_statement(db.get_database_backend(), &select);
    db.query_all_raw(statement)
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
