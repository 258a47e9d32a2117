//! The page keys of a search kept beside the searchable text: `message_texts` gains copies
//! of its message's `conversation_id`, `channel`, `direction` and `sent_at`.
//!
//! A word matching few messages is spread over the whole table. Answering its first page
//! from `messages` cost two random reads per match (the text row the full-text index points
//! to, then the message for its `sent_at`): at 1,000 matches in 1,000,000 messages about
//! 2,000 reads per page. With the keys in `message_texts`, the full-text index's rows are
//! the page's keys, filters and visibility (one read per match, and a top-N sort), and only
//! the page's own messages are read from `messages`.
//!
//! The copies are written with the text (the record statement, import, the catch-up of
//! older messages) and follow `messages.conversation_id` when backfill attaches a message.
//! `channel`, `direction` and `sent_at` never change once stored. Existing rows are filled
//! here from `messages`. On SQLite the update trigger of the FTS5 table now fires only when
//! `text` changes, so that syncing a key does not reindex the row's words.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE message_texts
        ADD COLUMN conversation_id BIGINT,
        ADD COLUMN channel VARCHAR(8),
        ADD COLUMN direction VARCHAR(8),
        ADD COLUMN sent_at TIMESTAMPTZ",
    "UPDATE message_texts SET conversation_id = m.conversation_id, channel = m.channel,
        direction = m.direction, sent_at = m.sent_at
        FROM messages m WHERE m.id = message_texts.message_id",
    "ALTER TABLE message_texts
        ALTER COLUMN channel SET NOT NULL,
        ALTER COLUMN direction SET NOT NULL,
        ALTER COLUMN sent_at SET NOT NULL",
];

const POSTGRES_DOWN: &[&str] = &["ALTER TABLE message_texts
        DROP COLUMN IF EXISTS sent_at,
        DROP COLUMN IF EXISTS direction,
        DROP COLUMN IF EXISTS channel,
        DROP COLUMN IF EXISTS conversation_id"];

const SQLITE_UP: &[&str] = &[
    // SQLite adds a NOT NULL column only with a default; the statements that write rows
    // always give all four.
    "ALTER TABLE message_texts ADD COLUMN conversation_id INTEGER NULL",
    "ALTER TABLE message_texts ADD COLUMN channel varchar(8) NULL",
    "ALTER TABLE message_texts ADD COLUMN direction varchar(8) NULL",
    "ALTER TABLE message_texts ADD COLUMN sent_at timestamp_with_timezone_text NULL",
    "DROP TRIGGER message_texts_au",
    "CREATE TRIGGER message_texts_au AFTER UPDATE OF text ON message_texts BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.message_id, old.text);
        INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text);
    END",
    "UPDATE message_texts SET conversation_id = m.conversation_id, channel = m.channel,
        direction = m.direction, sent_at = m.sent_at
        FROM messages m WHERE m.id = message_texts.message_id",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS message_texts_au",
    "CREATE TRIGGER message_texts_au AFTER UPDATE ON message_texts BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.message_id, old.text);
        INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text);
    END",
    "ALTER TABLE message_texts DROP COLUMN sent_at",
    "ALTER TABLE message_texts DROP COLUMN direction",
    "ALTER TABLE message_texts DROP COLUMN channel",
    "ALTER TABLE message_texts DROP COLUMN conversation_id",
];

async fn run(manager: &SchemaManager<'_>, postgres: &[&str], sqlite: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let statements = match db.get_database_backend() {
        DbBackend::Postgres => postgres,
        DbBackend::Sqlite => sqlite,
        other => {
            return Err(DbErr::Migration(format!(
                "search supports PostgreSQL and SQLite, not {other:?}"
            )));
        }
    };
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too (sea-orm runs SQLite migrations statement by
    /// statement on any of the pool's connections otherwise): the update trigger is dropped
    /// and created again under the same name, which a connection with the schema of before
    /// the drop refused ("trigger message_texts_au already exists").
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}
