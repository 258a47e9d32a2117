//! SQLite: how the FTS5 index merges its segments, tuned for one-message commits.
//!
//! FTS5 writes each transaction's new words as a small segment and merges segments of one
//! level into the next: incrementally once a level holds `automerge` segments (4 by
//! default; after every 64 leaf pages written, 64 pages of merging per level), and all at
//! once, inside the writing commit, when a level reaches `crisismerge` (16 by default).
//! At a million messages the defaults cost a `recordMessage` commit 507 µs of CPU on
//! average and 463 µs at p95, against 53 and 89 µs without the index, with a longest
//! commit of 95 ms (a Python `sqlite3` replay of 10,000 one-message commits into a
//! 1M-message index; BENCHMARKS.md, "Search: the SQLite record path").
//!
//! Merging 8 segments at a time rewrites each word fewer times (a level per factor of 8
//! instead of 4), and a crisis threshold of 64 leaves the merging to the incremental
//! steps: 333 µs on average, 324 µs at p95, longest 55 ms. A larger `automerge` with the
//! default crisis threshold is worse: a bulk build (import, the migration's indexing)
//! leaves levels one segment short of the threshold, and the first commits after it
//! cascaded crisis merges through them, one commit taking 1.3-1.6 s. A query reads a few
//! more segments a level; one-word queries stayed within the replay's noise.
//!
//! Both settings live in the index's own `messages_fts_config` table, so they hold for
//! every connection and process. PostgreSQL needs nothing: its GIN index buffers new
//! entries in a pending list of its own.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Segments of one level merged together, incrementally (FTS5's default 4).
const AUTOMERGE: u32 = 8;
/// Segments of one level at which they are merged at once, in the commit (default 16).
const CRISISMERGE: u32 = 64;

async fn configure(
    manager: &SchemaManager<'_>,
    automerge: u32,
    crisismerge: u32,
) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Sqlite {
        return Ok(());
    }
    let db = manager.get_connection();
    for (key, value) in [("automerge", automerge), ("crisismerge", crisismerge)] {
        db.execute_unprepared(&format!(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('{key}', {value})"
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        configure(manager, AUTOMERGE, CRISISMERGE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        configure(manager, 4, 16).await
    }
}
