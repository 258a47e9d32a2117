//! The named write statements: the few that are tuned by hand (the conversation
//! upsert-and-lock, PostgreSQL's data-modifying `WITH`, the set-based backfill updates) and
//! the inserts that record, backfill and import share. Column lists come from the entities
//! (`Column::iter()`, `Column::as_str()`), never from strings. Also the keyset batch scan
//! that backfill and verify walk their tables with.
//!
//! Every multi-row statement is split so that one statement binds at most [`MAX_PARAMS`]
//! values: SQLite refuses more than 32,766 and PostgreSQL more than 65,535.

mod conversation;
mod message;

pub(crate) use conversation::*;
pub(crate) use message::*;

use sea_orm::sea_query::{Expr, InsertStatement, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, EntityName, EntityTrait, Iterable,
    JsonValue, QueryFilter, QueryOrder, QuerySelect, Select, Value,
};

use crate::db;
use crate::error::{Error, Result};
use crate::sql::Sql;

/// The most values one statement binds, with room under SQLite's 32,766.
pub(crate) const MAX_PARAMS: usize = 30_000;

/// How many rows of `params_per_row` values fit in one statement.
pub(crate) fn rows_per_statement(params_per_row: usize) -> usize {
    (MAX_PARAMS / params_per_row.max(1)).max(1)
}

/// `INSERT INTO <table> (..) VALUES (..), ..` of `models`, one statement per chunk that
/// stays under [`MAX_PARAMS`]. The columns are the entity's columns set in the first model
/// (every model is built the same way).
fn insert_rows<A: ActiveModelTrait>(models: &[A]) -> Result<Vec<InsertStatement>> {
    let Some(first) = models.first() else {
        return Ok(Vec::new());
    };
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter()
        .filter(|c| !matches!(first.get(*c), ActiveValue::NotSet))
        .collect();
    let mut statements = Vec::new();
    for chunk in models.chunks(rows_per_statement(columns.len())) {
        let mut insert = Query::insert();
        insert
            .into_table(<A::Entity as Default>::default().table_ref())
            .columns(columns.iter().copied());
        for model in chunk {
            let values = columns.iter().map(|c| match model.get(*c) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => Expr::val(v),
                ActiveValue::NotSet => Expr::val(Value::String(None)),
            });
            insert
                .values(values)
                .map_err(|e| Error::Internal(format!("insert row: {e}")))?;
        }
        statements.push(insert);
    }
    Ok(statements)
}

/// `UPDATE <table> SET .. FROM (VALUES ..) AS v WHERE <table>.id = v.column1 ..`: one
/// statement per chunk of `rows`, each row binding `width` values (`v.column1` ..
/// `v.column{width}`) through `bind`. `set` and `filter` are the text after `SET` and
/// after the id match.
async fn update_from_values<T>(
    conn: &impl ConnectionTrait,
    table: &str,
    set: &str,
    filter: &str,
    rows: &[T],
    width: usize,
    mut bind: impl FnMut(&mut Sql, &T),
) -> Result<()> {
    let backend = db::backend(conn);
    for chunk in rows.chunks(rows_per_statement(width)) {
        let mut sql = Sql::new(&format!("UPDATE {table} SET {set} FROM (VALUES "));
        sql.push_rows(chunk, |sql, row| bind(sql, row));
        sql.push(&format!(") AS v WHERE {table}.id = v.column1{filter}"));
        conn.execute_raw(sql.build(backend)).await?;
    }
    Ok(())
}

/// The next batch of `select`: up to `size` rows with `id` above `after`, in `id` order.
/// Backfill and verify walk their tables with it, one keyset batch at a time.
pub(crate) fn batch_after<E: EntityTrait>(
    select: Select<E>,
    id: E::Column,
    after: i64,
    size: usize,
) -> Select<E> {
    select
        .filter(id.gt(after))
        .order_by_asc(id)
        .limit(size as u64)
}

/// A JSON array of strings, as the JSON columns store address and URL lists.
pub(crate) fn json_strings(values: &[String]) -> JsonValue {
    JsonValue::Array(values.iter().cloned().map(JsonValue::String).collect())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use sea_orm::DbBackend;

    use super::*;
    use crate::types::Channel;

    #[test]
    fn multi_row_statements_stay_under_the_parameter_limit() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let rows: Vec<_> = (0..10_000)
            .map(|i| {
                new_conversation(
                    Channel::Sms,
                    &format!("k{i}"),
                    &[format!("a{i}")],
                    at,
                    at,
                    at,
                )
            })
            .collect();
        let inserts = insert_rows(&rows).expect("built");
        assert_eq!(inserts.len(), 4);
        for insert in &inserts {
            let built = DbBackend::Postgres.build(insert);
            let values = built.values.map_or(0, |v| v.0.len());
            assert!(values <= MAX_PARAMS, "{values}");
        }
        assert_eq!(rows_per_statement(10), 3000);
        assert_eq!(rows_per_statement(0), MAX_PARAMS);
    }
}
