//! The conversation counters (`conversation_counts`, kept by triggers; see the migration
//! `m20261201_000004_conversation_counts`): what `verify` checks them against and how
//! `verify --repair` rebuilds them.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};

use crate::db;
use crate::error::Result;

/// A counter scope whose sum differs from the rows it counts.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct CountDrift {
    /// `all`, `channel:<CHANNEL>` or `address:<address>`.
    pub scope: String,
    /// The sum of its slots.
    pub stored: i64,
    /// What the conversations (or participant rows) say.
    pub actual: i64,
}

/// Every scope's actual count, in one statement (one snapshot, so concurrent writers cannot
/// make a false drift appear).
const ACTUAL: &str = "SELECT 'all' AS scope, count(*) AS n FROM conversations \
     UNION ALL SELECT 'channel:' || channel, count(*) FROM conversations GROUP BY channel \
     UNION ALL SELECT 'address:' || address, count(*) FROM conversation_participants GROUP BY address";

/// The scopes whose counters differ from the rows, ordered by scope.
pub async fn count_drifts(db: &impl ConnectionTrait) -> Result<Vec<CountDrift>> {
    let backend = db::backend(db);
    // CAST: PostgreSQL's sum of bigint is numeric.
    // One grouping of both sides (a join of the two unindexed sides made SQLite compare
    // every pair).
    let sql = format!(
        "SELECT scope, CAST(sum(stored) AS bigint) AS stored, \
                CAST(sum(actual) AS bigint) AS actual FROM ( \
           SELECT scope, n AS stored, 0 AS actual FROM conversation_counts \
           UNION ALL SELECT scope, 0, n FROM ({ACTUAL}) a \
         ) d GROUP BY scope HAVING sum(stored) <> sum(actual) ORDER BY scope"
    );
    Ok(
        CountDrift::find_by_statement(Statement::from_string(backend, sql))
            .all(db)
            .await?,
    )
}

/// Rebuilds every counter from the rows, inside the caller's write transaction. On
/// PostgreSQL the table is locked first, so the rebuild waits for writers whose counts are
/// not committed yet and writers after it add to the rebuilt rows.
pub async fn rebuild_counts(txn: &impl ConnectionTrait) -> Result<()> {
    let backend = db::backend(txn);
    if backend == DbBackend::Postgres {
        txn.execute_unprepared("LOCK TABLE conversation_counts IN EXCLUSIVE MODE")
            .await?;
    }
    txn.execute_unprepared("DELETE FROM conversation_counts")
        .await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO conversation_counts (scope, slot, n) \
         SELECT scope, 0, n FROM ({ACTUAL}) a WHERE n > 0"
    ))
    .await?;
    Ok(())
}
