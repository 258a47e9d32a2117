use sea_orm_migration::{prelude::*, schema::*};

use super::m20261126_000001_create_conversations::Conversations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    Channel,
    Kind,
    Direction,
    FromRaw,
    ToRaw,
    FromAddress,
    ToAddresses,
    Body,
    Attachments,
    ProviderMessageId,
    SentAt,
    RecordedAt,
    AssignmentError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(big_pk_auto(Messages::Id))
                    .col(big_integer_null(Messages::ConversationId))
                    .col(string_len(Messages::Channel, 8))
                    .col(string_len(Messages::Kind, 8))
                    .col(string_len(Messages::Direction, 8))
                    .col(text(Messages::FromRaw))
                    .col(json_binary(Messages::ToRaw))
                    .col(text_null(Messages::FromAddress))
                    .col(json_binary_null(Messages::ToAddresses))
                    .col(text(Messages::Body))
                    .col(json_binary(Messages::Attachments))
                    .col(text_null(Messages::ProviderMessageId))
                    .col(timestamp_with_time_zone(Messages::SentAt))
                    .col(timestamp_with_time_zone(Messages::RecordedAt))
                    .col(text_null(Messages::AssignmentError))
                    .foreign_key(
                        ForeignKey::create()
                            .name("messages_conversation_id_fkey")
                            .from(Messages::Table, Messages::ConversationId)
                            .to(Conversations::Table, Conversations::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // A conversation's thread, oldest first, keyset on (sent_at, id).
        manager
            .create_index(
                Index::create()
                    .name("messages_conversation_id_sent_at_id")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::SentAt)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await?;
        // Idempotency: a provider's id is stored once per channel. NULLs are distinct in both
        // engines, so messages without a provider id never collide.
        manager
            .create_index(
                Index::create()
                    .name("messages_channel_provider_message_id")
                    .table(Messages::Table)
                    .col(Messages::Channel)
                    .col(Messages::ProviderMessageId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Messages::Table).to_owned())
            .await
    }
}
