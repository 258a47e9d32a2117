//! The mutation root.

use async_graphql::{Context, Object, Result};
use service::{DatabaseConnection, Principal};

use super::error::ServiceResultExt;
use super::types::record::{RecordMessageInput, RecordMessagePayload};
use crate::config::AppConfig;

/// Writes.
#[derive(Default)]
pub struct MutationRoot;

/// Writes.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Records one message and attaches it, atomically, to the one conversation of its
    /// channel and participants (created on first use). Idempotent by
    /// (channel, providerMessageId). Needs `messages:write`: an OUTBOUND message must be sent
    /// from one of your inboxes, an INBOUND one addressed to one of them (`admin`: any).
    async fn record_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The message.")] input: RecordMessageInput,
    ) -> Result<RecordMessagePayload> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let principal = ctx.data::<Principal>()?;
        let input = input.into();
        principal
            .authorize_write(&input, config.settings.default_region)
            .gql(ctx)?;
        tracing::info!(sub = %principal.sub, "recordMessage");
        service::record::record_message(db, &config.settings, input)
            .await
            .gql(ctx)
            .map(Into::into)
    }
}
