//! `normalizeAddresses`: what parley makes of some addresses, without writing anything.

use async_graphql::{Context, Object, Result, SimpleObject};
use service::normalize;
use service::query;

use super::enums::Channel;
use super::node::Conversation;
use crate::config::AppConfig;
use crate::graphql::error::ServiceResultExt;

/// One address as given and as normalized.
#[derive(SimpleObject, Debug, Clone)]
pub struct NormalizedAddress {
    /// The address as given.
    pub input: String,
    /// The normalized form; null when the address was rejected.
    pub normalized: Option<String>,
    /// Why it was rejected; null when it was accepted.
    pub error: Option<String>,
}

/// The normalized forms of some addresses and the conversation they would map to.
pub struct NormalizedAddresses {
    pub(crate) channel: Channel,
    pub(crate) addresses: Vec<NormalizedAddress>,
    pub(crate) participants: Option<Vec<String>>,
}

impl NormalizedAddresses {
    /// Normalizes each address on `channel`.
    pub(crate) fn new(channel: Channel, inputs: Vec<String>, region: normalize::Region) -> Self {
        let addresses: Vec<NormalizedAddress> = inputs
            .into_iter()
            .map(
                |input| match normalize::normalize_address(channel.into(), &input, region) {
                    Ok(n) => NormalizedAddress {
                        input,
                        normalized: Some(n),
                        error: None,
                    },
                    Err(e) => NormalizedAddress {
                        input,
                        normalized: None,
                        error: Some(e.to_string()),
                    },
                },
            )
            .collect();
        let participants = addresses
            .iter()
            .map(|a| a.normalized.clone())
            .collect::<Option<Vec<_>>>()
            .filter(|p| !p.is_empty())
            .map(|mut p| {
                p.sort();
                p.dedup();
                p
            });
        NormalizedAddresses {
            channel,
            addresses,
            participants,
        }
    }
}

/// The normalized forms of some addresses and the conversation they would map to.
#[Object]
impl NormalizedAddresses {
    /// Each address, in the order given.
    async fn addresses(&self) -> &[NormalizedAddress] {
        &self.addresses
    }

    /// Whether every address was accepted.
    async fn valid(&self) -> bool {
        self.participants.is_some()
    }

    /// The participant set these addresses form (normalized, deduplicated, sorted); null
    /// when any address was rejected.
    async fn participants(&self) -> Option<&[String]> {
        self.participants.as_deref()
    }

    /// The conversation key (`Conversation.key`) these participants map to; null when any
    /// address was rejected.
    async fn key(&self) -> Option<String> {
        self.participants.as_ref().map(|p| {
            normalize::conversation_key(self.channel.into(), &normalize::participants_key(p))
        })
    }

    /// The existing conversation of these participants, if there is one (needs the `admin`
    /// scope: it would tell whether any two addresses have talked).
    async fn conversation(&self, ctx: &Context<'_>) -> Result<Option<Conversation>> {
        let Some(p) = &self.participants else {
            return Ok(None);
        };
        ctx.data::<service::Principal>()?
            .require_admin("conversation")
            .gql(ctx)?;
        let db = ctx.data::<service::DatabaseConnection>()?;
        let config = ctx.data::<AppConfig>()?;
        let found = query::find_conversation_by_participants(
            db,
            &service::Viewer::Everyone,
            config.settings.default_region,
            self.channel.into(),
            p,
        )
        .await
        .gql(ctx)?;
        Ok(found.map(Conversation::new))
    }
}
