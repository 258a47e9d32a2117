//! Messaging state (SPEC section 14): per-(conversation, inbox) read horizon and archive
//! flag, delivery statuses of outbound messages (keyed by the provider's id, so a callback
//! that arrives before its message is already that message's status when it is stored),
//! every delivery event in arrival order, and the email threading headers.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ConversationStates {
    Table,
    ConversationId,
    Inbox,
    ReadUpTo,
    SentAfter,
    Archived,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum DeliveryStatuses {
    Table,
    Channel,
    ProviderMessageId,
    Status,
    Rank,
    StatusAt,
    ErrorCode,
    ErrorMessage,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum DeliveryEvents {
    Table,
    Id,
    Channel,
    ProviderMessageId,
    Status,
    OccurredAt,
    ErrorCode,
    ErrorMessage,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum MessageHeaders {
    Table,
    MessageId,
    ConversationId,
    SentAt,
    Subject,
    RfcMessageId,
    InReplyTo,
    References,
}

const EVENT_KEY: &str = "delivery_events_key";
const HEADERS_THREAD: &str = "message_headers_conversation_id_sent_at";
const HEADERS_RFC_ID: &str = "message_headers_conversation_id_rfc_message_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per (conversation, inbox) that has state: the horizon (a message
        // sequence), how many of the inbox's own messages lie after it (so the unread count
        // is last_sequence - read_up_to - sent_after, O(1) per row), and the archive flag.
        manager
            .create_table(
                Table::create()
                    .table(ConversationStates::Table)
                    .col(big_integer(ConversationStates::ConversationId))
                    .col(text(ConversationStates::Inbox))
                    .col(big_integer(ConversationStates::ReadUpTo).default(0))
                    .col(big_integer(ConversationStates::SentAfter).default(0))
                    .col(boolean(ConversationStates::Archived).default(false))
                    .col(timestamp_with_time_zone(ConversationStates::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ConversationStates::ConversationId)
                            .col(ConversationStates::Inbox),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("conversation_states_conversation_id_fkey")
                            .from(
                                ConversationStates::Table,
                                ConversationStates::ConversationId,
                            )
                            .to(Conversations::Table, Conversations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The current status per provider message id. `rank` orders the statuses
        // (QUEUED 1 < SENT 2 < DELIVERED 3 < READ 4 < FAILED = UNDELIVERED 10): an event
        // replaces the status only with a higher rank, so failures override and are final.
        manager
            .create_table(
                Table::create()
                    .table(DeliveryStatuses::Table)
                    .col(string_len(DeliveryStatuses::Channel, 8))
                    .col(text(DeliveryStatuses::ProviderMessageId))
                    .col(string_len(DeliveryStatuses::Status, 16))
                    .col(integer(DeliveryStatuses::Rank))
                    .col(timestamp_with_time_zone(DeliveryStatuses::StatusAt))
                    .col(text_null(DeliveryStatuses::ErrorCode))
                    .col(text_null(DeliveryStatuses::ErrorMessage))
                    .col(timestamp_with_time_zone(DeliveryStatuses::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(DeliveryStatuses::Channel)
                            .col(DeliveryStatuses::ProviderMessageId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeliveryEvents::Table)
                    .col(big_pk_auto(DeliveryEvents::Id))
                    .col(string_len(DeliveryEvents::Channel, 8))
                    .col(text(DeliveryEvents::ProviderMessageId))
                    .col(string_len(DeliveryEvents::Status, 16))
                    .col(timestamp_with_time_zone(DeliveryEvents::OccurredAt))
                    .col(text_null(DeliveryEvents::ErrorCode))
                    .col(text_null(DeliveryEvents::ErrorMessage))
                    .col(timestamp_with_time_zone(DeliveryEvents::ReceivedAt))
                    .to_owned(),
            )
            .await?;
        // A redelivered event (same message, status and time) is the same event: stored once.
        // The key also serves the history lookup of one message.
        manager
            .create_index(
                Index::create()
                    .name(EVENT_KEY)
                    .table(DeliveryEvents::Table)
                    .col(DeliveryEvents::Channel)
                    .col(DeliveryEvents::ProviderMessageId)
                    .col(DeliveryEvents::Status)
                    .col(DeliveryEvents::OccurredAt)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MessageHeaders::Table)
                    .col(big_integer(MessageHeaders::MessageId).primary_key())
                    .col(big_integer_null(MessageHeaders::ConversationId))
                    .col(timestamp_with_time_zone(MessageHeaders::SentAt))
                    .col(text_null(MessageHeaders::Subject))
                    .col(text_null(MessageHeaders::RfcMessageId))
                    .col(text_null(MessageHeaders::InReplyTo))
                    .col(json_binary(MessageHeaders::References))
                    .foreign_key(
                        ForeignKey::create()
                            .name("message_headers_message_id_fkey")
                            .from(MessageHeaders::Table, MessageHeaders::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A conversation's first subject: the first row of its headers by (sent_at, id).
        manager
            .create_index(
                Index::create()
                    .name(HEADERS_THREAD)
                    .table(MessageHeaders::Table)
                    .col(MessageHeaders::ConversationId)
                    .col(MessageHeaders::SentAt)
                    .col(MessageHeaders::MessageId)
                    .to_owned(),
            )
            .await?;
        // `inReplyToMessage`: the message of the same conversation with that Message-ID.
        manager
            .create_index(
                Index::create()
                    .name(HEADERS_RFC_ID)
                    .table(MessageHeaders::Table)
                    .col(MessageHeaders::ConversationId)
                    .col(MessageHeaders::RfcMessageId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MessageHeaders::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DeliveryEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DeliveryStatuses::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ConversationStates::Table).to_owned())
            .await
    }
}
