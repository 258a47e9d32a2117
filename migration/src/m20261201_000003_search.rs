//! Full-text search over message text, and the address-prefix indexes of participant search.
//!
//! The indexed text is not the raw body: HTML email is reduced to text, accents are folded
//! and the text is split into words by parley itself (service `search::search_text`), so
//! both engines index exactly the same words. That text lives in `message_texts`, one row
//! per message, written in the same transaction as the message. PostgreSQL indexes it as a
//! generated `tsvector` (the `simple` configuration: no stemming, no stop words) with a GIN
//! index; SQLite as an FTS5 external-content table over `message_texts`, kept in sync by
//! triggers (`unicode61 remove_diacritics 2`). Rows that existed before this migration are
//! indexed by the server right after migrating (`search::index_missing_texts`): the
//! migration crate does not carry the text rules.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "CREATE TABLE message_texts (
        message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED
    )",
    "CREATE INDEX message_texts_tsv ON message_texts USING GIN (tsv)",
    // Newest-first search pages walk this index when a term matches many messages.
    "CREATE INDEX messages_sent_at_id ON messages (sent_at, id)",
    // Participant prefix search is a range on the primary key (address, ..): in byte order
    // (the C collation, whatever the database's), a range [p, p || U+10FFFF) is exactly
    // "starts with p". Addresses are normalized ASCII, compared only for equality elsewhere.
    "ALTER TABLE conversation_participants ALTER COLUMN address TYPE TEXT COLLATE \"C\"",
    // SQLite's instr(), so that the domain index and its queries are one text on both
    // engines (inlined by the planner: it is strpos()).
    "CREATE FUNCTION instr(text, text) RETURNS integer
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT strpos($1, $2)'",
    "CREATE INDEX conversation_participants_domain_prefix
        ON conversation_participants (substr(address, instr(address, '@') + 1), conversation_id)
        WHERE instr(address, '@') > 0",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS conversation_participants_domain_prefix",
    "DROP FUNCTION IF EXISTS instr(text, text)",
    "ALTER TABLE conversation_participants ALTER COLUMN address TYPE TEXT COLLATE \"default\"",
    "DROP INDEX IF EXISTS messages_sent_at_id",
    "DROP TABLE IF EXISTS message_texts",
];

const SQLITE_UP: &[&str] = &[
    // INTEGER PRIMARY KEY: the rowid itself, which FTS5's content_rowid reads.
    "CREATE TABLE message_texts (
        message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        text TEXT NOT NULL
    )",
    "CREATE VIRTUAL TABLE messages_fts USING fts5(
        text,
        content = 'message_texts',
        content_rowid = 'message_id',
        tokenize = 'unicode61 remove_diacritics 2'
    )",
    "CREATE TRIGGER message_texts_ai AFTER INSERT ON message_texts BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text);
    END",
    "CREATE TRIGGER message_texts_ad AFTER DELETE ON message_texts BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.message_id, old.text);
    END",
    "CREATE TRIGGER message_texts_au AFTER UPDATE ON message_texts BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.message_id, old.text);
        INSERT INTO messages_fts (rowid, text) VALUES (new.message_id, new.text);
    END",
    "CREATE INDEX messages_sent_at_id ON messages (sent_at, id)",
    // The primary key (address, conversation_id) already serves address prefixes (BINARY
    // collation is byte order); domains need their own expression index.
    "CREATE INDEX conversation_participants_domain_prefix
        ON conversation_participants (substr(address, instr(address, '@') + 1), conversation_id)
        WHERE instr(address, '@') > 0",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS conversation_participants_domain_prefix",
    "DROP INDEX IF EXISTS messages_sent_at_id",
    "DROP TRIGGER IF EXISTS message_texts_au",
    "DROP TRIGGER IF EXISTS message_texts_ad",
    "DROP TRIGGER IF EXISTS message_texts_ai",
    "DROP TABLE IF EXISTS messages_fts",
    "DROP TABLE IF EXISTS message_texts",
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
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}
