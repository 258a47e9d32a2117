//! SQLite: the FTS5 index merges its segments 16 at a time instead of 4.
//!
//! FTS5 writes each transaction's new words as a small segment and merges segments of one
//! level into the next as it goes (`automerge`, 4 by default): after every 64 leaf pages
//! written, 64 pages of merging per level of the index. At a million messages that merging,
//! done inside the commits of `recordMessage`, cost more CPU than the segment itself: 550 µs
//! a commit on average against 55 µs without the index (a Python `sqlite3` replay of 10,000
//! one-message commits on a 1M-message index; BENCHMARKS.md, "Search: the SQLite record
//! path"). Merging 16 segments at a time, the most FTS5 allows, rewrites each word fewer
//! times (a level per factor of 16 instead of 4): 217 µs a commit, p99 844 µs against
//! 2,959 µs. A query reads at most 15 segments a level instead of 3, which the same replay
//! saw as noise (0.37 against 0.33 ms for four one-word queries).
//!
//! `automerge` is stored in the index's own `messages_fts_config` table, so it holds for
//! every connection and process. PostgreSQL needs nothing: its GIN index has a pending list
//! of its own.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Segments of one level merged together (FTS5 default 4, maximum 16).
const AUTOMERGE: u32 = 16;

async fn set_automerge(manager: &SchemaManager<'_>, segments: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Sqlite {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', {segments})"
        ))
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_automerge(manager, AUTOMERGE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_automerge(manager, 4).await
    }
}
