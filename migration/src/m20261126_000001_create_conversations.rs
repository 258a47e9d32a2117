use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Conversations {
    Table,
    Id,
    Channel,
    ParticipantsKey,
    Participants,
    MessageCount,
    FirstMessageAt,
    LastMessageAt,
    LastMessageId,
    Snippet,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(big_pk_auto(Conversations::Id))
                    .col(string_len(Conversations::Channel, 8))
                    .col(text(Conversations::ParticipantsKey))
                    .col(json_binary(Conversations::Participants))
                    .col(big_integer(Conversations::MessageCount).default(0))
                    .col(timestamp_with_time_zone(Conversations::FirstMessageAt))
                    .col(timestamp_with_time_zone(Conversations::LastMessageAt))
                    .col(big_integer_null(Conversations::LastMessageId))
                    .col(text(Conversations::Snippet).default(""))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .col(timestamp_with_time_zone(Conversations::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // The conversation identity: the upsert's ON CONFLICT target.
        manager
            .create_index(
                Index::create()
                    .name("conversations_channel_participants_key")
                    .table(Conversations::Table)
                    .col(Conversations::Channel)
                    .col(Conversations::ParticipantsKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Keyset listing: newest activity first, ties by id.
        manager
            .create_index(
                Index::create()
                    .name("conversations_last_message_at_id")
                    .table(Conversations::Table)
                    .col((Conversations::LastMessageAt, IndexOrder::Desc))
                    .col((Conversations::Id, IndexOrder::Desc))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Conversations::Table).to_owned())
            .await
    }
}
