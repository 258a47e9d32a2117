//! The mutation root.

use async_graphql::{Context, Object, Result};
use service::DatabaseConnection;

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
    /// (channel, providerMessageId).
    async fn record_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The message.")] input: RecordMessageInput,
    ) -> Result<RecordMessagePayload> {
        let db = ctx.data::<DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        service::record::record_message(db, &config.settings, input.into())
            .await
            .gql(ctx)
            .map(Into::into)
    }
}
