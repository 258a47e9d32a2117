//! Per-conversation message sequence (SPEC section 13): `messages.sequence` numbers a
//! conversation's messages 1, 2, 3, .. in the order they were attached (NULL while a
//! message is unassigned), `conversations.last_sequence` is the highest number handed out,
//! and `(conversation_id, sequence)` is unique. Existing rows are numbered in id order,
//! the order the record path inserted them under the conversation's row lock.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    ConversationId,
    Sequence,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    LastSequence,
}

const INDEX: &str = "messages_conversation_id_sequence";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(big_integer_null(Messages::Sequence))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Conversations::Table)
                    .add_column(big_integer(Conversations::LastSequence).default(0))
                    .to_owned(),
            )
            .await?;
        // Both engines take `UPDATE .. FROM` and window functions (SQLite since 3.33).
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE messages SET sequence = numbered.n FROM (\
               SELECT id, ROW_NUMBER() OVER (PARTITION BY conversation_id ORDER BY id) AS n \
               FROM messages WHERE conversation_id IS NOT NULL\
             ) AS numbered WHERE messages.id = numbered.id",
        )
        .await?;
        db.execute_unprepared(
            "UPDATE conversations SET last_sequence = COALESCE((\
               SELECT MAX(m.sequence) FROM messages m WHERE m.conversation_id = conversations.id\
             ), 0)",
        )
        .await?;
        // Gap-free numbering rests on this: two writers can never hand out one number.
        // NULLs are distinct in both engines, so unassigned messages never collide.
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::Sequence)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Messages::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Conversations::Table)
                    .drop_column(Conversations::LastSequence)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::Sequence)
                    .to_owned(),
            )
            .await
    }
}
