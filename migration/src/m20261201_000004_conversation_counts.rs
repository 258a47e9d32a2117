//! Exact conversation counts kept by the database itself, so `totalCount` of the unfiltered
//! list, of a channel and of one address (an inbox) is a sum of at most 16 rows rather than a
//! `count(*)` over every conversation.
//!
//! `conversation_counts (scope, slot, n)`: `scope` is `all`, `channel:<CHANNEL>` or
//! `address:<normalized address>`; a scope's count is the sum of its slots. Triggers add 1
//! for each inserted conversation (to `all` and its channel) and each inserted participant
//! row (to its address), so every write path (record, backfill, import, repair) keeps them
//! without knowing. An upsert that finds its conversation adds nothing. On PostgreSQL the
//! triggers run once per statement over its transition table (one counter update per scope
//! and statement: updating one row many times in one transaction would walk an ever longer
//! chain of row versions); SQLite updates in place and counts per row.
//!
//! Why slots: one business number is a participant of every new conversation, so a single
//! counter row would serialize all conversation creation on its row lock. On PostgreSQL a
//! transaction adds to slot `txid % 16`, one slot for all its rows, so writers spread over 16
//! rows, and the lock order within a transaction (`all`, then its channel, then addresses)
//! is the same for all of them. SQLite has one writer at a time and uses slot 0.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE conversation_counts (
    scope text NOT NULL,
    slot smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, slot)
);

CREATE FUNCTION parley_count_conversation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (txid_current() % 16)::smallint;
BEGIN
    INSERT INTO conversation_counts (scope, slot, n)
    SELECT scope, s, n FROM (
        SELECT 'all' AS scope, count(*) AS n FROM inserted HAVING count(*) > 0
        UNION ALL
        SELECT 'channel:' || channel, count(*) FROM inserted GROUP BY channel
    ) c ORDER BY scope = 'all' DESC, scope
    ON CONFLICT (scope, slot) DO UPDATE SET n = conversation_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION parley_count_participant() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (txid_current() % 16)::smallint;
BEGIN
    INSERT INTO conversation_counts (scope, slot, n)
    SELECT 'address:' || address, s, count(*) FROM inserted GROUP BY address ORDER BY 1
    ON CONFLICT (scope, slot) DO UPDATE SET n = conversation_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER conversations_count AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION parley_count_conversation();
CREATE TRIGGER conversation_participants_count AFTER INSERT ON conversation_participants
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION parley_count_participant();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TRIGGER conversation_participants_count ON conversation_participants;
DROP TRIGGER conversations_count ON conversations;
DROP FUNCTION parley_count_participant();
DROP FUNCTION parley_count_conversation();
DROP TABLE conversation_counts;
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE conversation_counts (
    scope TEXT NOT NULL,
    slot INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (scope, slot)
) WITHOUT ROWID;

CREATE TRIGGER conversations_count AFTER INSERT ON conversations BEGIN
    INSERT INTO conversation_counts (scope, slot, n) VALUES ('all', 0, 1)
        ON CONFLICT (scope, slot) DO UPDATE SET n = n + 1;
    INSERT INTO conversation_counts (scope, slot, n) VALUES ('channel:' || NEW.channel, 0, 1)
        ON CONFLICT (scope, slot) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER conversation_participants_count AFTER INSERT ON conversation_participants BEGIN
    INSERT INTO conversation_counts (scope, slot, n) VALUES ('address:' || NEW.address, 0, 1)
        ON CONFLICT (scope, slot) DO UPDATE SET n = n + 1;
END;
"#;

const SQLITE_DOWN: &str = r#"
DROP TRIGGER conversation_participants_count;
DROP TRIGGER conversations_count;
DROP TABLE conversation_counts;
"#;

/// The counts of the rows already stored, all in slot 0.
const FILL: &str = r#"
INSERT INTO conversation_counts (scope, slot, n)
SELECT 'all', 0, (SELECT count(*) FROM conversations) WHERE EXISTS (SELECT 1 FROM conversations);
INSERT INTO conversation_counts (scope, slot, n)
SELECT 'channel:' || channel, 0, count(*) FROM conversations GROUP BY channel;
INSERT INTO conversation_counts (scope, slot, n)
SELECT 'address:' || address, 0, count(*) FROM conversation_participants GROUP BY address;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let up = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_UP,
            DbBackend::Sqlite => SQLITE_UP,
            other => {
                return Err(DbErr::Migration(format!(
                    "parley runs on PostgreSQL and SQLite, not {other:?}"
                )));
            }
        };
        db.execute_unprepared(up).await?;
        db.execute_unprepared(FILL).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let down = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        manager.get_connection().execute_unprepared(down).await?;
        Ok(())
    }
}
