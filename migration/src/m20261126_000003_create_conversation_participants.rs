use sea_orm_migration::{prelude::*, schema::*};

use super::m20261126_000001_create_conversations::Conversations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConversationParticipants {
    Table,
    Address,
    ConversationId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // (address, conversation_id) as the key makes "conversations of this address" an
        // index range scan.
        manager
            .create_table(
                Table::create()
                    .table(ConversationParticipants::Table)
                    .col(text(ConversationParticipants::Address))
                    .col(big_integer(ConversationParticipants::ConversationId))
                    .primary_key(
                        Index::create()
                            .col(ConversationParticipants::Address)
                            .col(ConversationParticipants::ConversationId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("conversation_participants_conversation_id_fkey")
                            .from(
                                ConversationParticipants::Table,
                                ConversationParticipants::ConversationId,
                            )
                            .to(Conversations::Table, Conversations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ConversationParticipants::Table)
                    .to_owned(),
            )
            .await
    }
}
