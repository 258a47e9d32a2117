//! SQLite: the FTS5 index no longer merges its segments inside the commits that write it.
//!
//! With `automerge` 8 (migration `m20261202_000004`), after every 64 leaf pages written
//! one `recordMessage` commit did 64 pages of merging per level of the index, inside the
//! commit and in the process's turn to write: stalls of tens of milliseconds that grew
//! with the index and put the record path's p95 at twice that of a database without the
//! index (BENCHMARKS.md, "Search: the SQLite record path with the index").
//!
//! `automerge` 0 stops that. The merging is done instead by `service::db`, beside the
//! writers: after every few commits a task runs `INSERT INTO messages_fts(messages_fts,
//! rank) VALUES('merge', N)` in small steps, each a transaction of its own in the
//! process's turn to write. `crisismerge` stays at 64, so a process that writes without
//! that task (another tool on the file) still keeps each level to 64 segments.
//!
//! The setting lives in the index's own `messages_fts_config` table: it holds for every
//! connection and process. PostgreSQL needs nothing.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn automerge(manager: &SchemaManager<'_>, value: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Sqlite {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', {value})"
        ))
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        automerge(manager, 0).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        automerge(manager, 8).await
    }
}
