//! The writing transaction of each message (PostgreSQL), for the resume cursor of live
//! feeds over many conversations (SPEC section 13, `Subscription.messageFeed`).
//!
//! `messages.txid` (`xid8`) defaults to `pg_current_xact_id()`, the id of the transaction
//! that inserts the row, so every write path (record, import, repair) sets it without
//! knowing; a btree index lets a resume read the messages of the transactions a snapshot
//! did not see (`txid >= xmin`). The column is added without a default first, so existing
//! rows keep NULL (they committed before any cursor existed) and the table is not
//! rewritten; the default then applies to new rows only.
//!
//! SQLite needs nothing: its writers are serialized, so message ids are assigned in commit
//! order and a feed's position is a message id.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: [&str; 3] = [
    "ALTER TABLE messages ADD COLUMN txid xid8",
    "ALTER TABLE messages ALTER COLUMN txid SET DEFAULT pg_current_xact_id()",
    "CREATE INDEX messages_txid ON messages (txid)",
];

const POSTGRES_DOWN: [&str; 2] = [
    "DROP INDEX IF EXISTS messages_txid",
    "ALTER TABLE messages DROP COLUMN IF EXISTS txid",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for sql in POSTGRES_UP {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for sql in POSTGRES_DOWN {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
