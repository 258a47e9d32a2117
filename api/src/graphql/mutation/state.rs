//! The messaging state mutations' resolvers (SPEC section 14): delivery status reports,
//! archive and read horizons, per inbox. Their fields are declared on the mutation root.

use async_graphql::{Context, ID, Result};
use service::{DatabaseConnection, Error, Principal};

use crate::config::AppConfig;
use crate::graphql::error::ServiceResultExt;
use crate::graphql::ids::{NodeType, decode_id};
use crate::graphql::types::node::Conversation;
use crate::graphql::types::state::{RecordDeliveryStatusInput, RecordDeliveryStatusPayload};

/// A conversation's global id as a row id; `BAD_USER_INPUT` naming `conversationId` when it
/// is not one.
fn conversation_id(ctx: &Context<'_>, id: &ID) -> Result<i64> {
    decode_id(NodeType::Conversation, id)
        .ok_or_else(|| {
            Error::invalid(
                "conversationId",
                "not a conversation id (use a Conversation's `id`)",
            )
        })
        .gql(ctx)
}

/// `archiveConversation` / `unarchiveConversation`.
pub(super) async fn set_archived(
    ctx: &Context<'_>,
    id: &ID,
    inbox: Option<String>,
    archived: bool,
) -> Result<Conversation> {
    let db = ctx.data::<DatabaseConnection>()?;
    let config = ctx.data::<AppConfig>()?;
    let principal = ctx.data::<Principal>()?;
    let id = conversation_id(ctx, id)?;
    let (conversation, _) = service::state::set_archived(
        db,
        principal,
        config.settings.default_region,
        id,
        inbox.as_deref(),
        archived,
    )
    .await
    .gql(ctx)?;
    Ok(Conversation::new(conversation))
}

/// `recordDeliveryStatus`: admin only.
pub(super) async fn record_delivery_status(
    ctx: &Context<'_>,
    input: RecordDeliveryStatusInput,
) -> Result<RecordDeliveryStatusPayload> {
    let db = ctx.data::<DatabaseConnection>()?;
    let principal = ctx.data::<Principal>()?;
    principal.require_admin("recordDeliveryStatus").gql(ctx)?;
    let event = input.event().gql(ctx)?;
    tracing::info!(sub = %principal.sub, "recordDeliveryStatus");
    service::delivery::record_delivery_status(db, event)
        .await
        .gql(ctx)
        .map(Into::into)
}

/// `markConversationRead` / `markConversationUnread`.
pub(super) async fn mark(
    ctx: &Context<'_>,
    id: &ID,
    inbox: Option<String>,
    mark: service::state::Mark,
) -> Result<Conversation> {
    let db = ctx.data::<DatabaseConnection>()?;
    let config = ctx.data::<AppConfig>()?;
    let principal = ctx.data::<Principal>()?;
    let id = conversation_id(ctx, id)?;
    let (conversation, _) = service::state::mark(
        db,
        principal,
        config.settings.default_region,
        id,
        inbox.as_deref(),
        mark,
    )
    .await
    .gql(ctx)?;
    Ok(Conversation::new(conversation))
}
