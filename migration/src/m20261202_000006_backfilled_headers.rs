//! Email headers of messages that `backfill` attached to a conversation before it moved
//! them too: their `message_headers` row kept a NULL `conversation_id`, so the
//! conversation's subject and `In-Reply-To` threading, which read the headers by
//! conversation, missed them. This gives each such row its message's conversation (rows of
//! messages still unassigned stay NULL). Nothing to undo.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE message_headers SET conversation_id = (SELECT m.conversation_id \
                 FROM messages m WHERE m.id = message_headers.message_id) \
                 WHERE conversation_id IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
