//! Batching loaders: every nested field a page asks for (a conversation's last message, a
//! message's conversation, a page of each thread, filtered counts) costs one statement per
//! page, not one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use service::query::{self, MessageFilter, Page, Window};
use service::{DatabaseConnection, Viewer, conversation, message};

/// A record id as one viewer asks for it: the loaders are shared by all requests, so the
/// viewer is part of the key, and one batch statement runs per viewer.
pub type ViewedId = (Viewer, i64);

/// Groups keys by viewer.
fn by_viewer(keys: &[ViewedId]) -> HashMap<&Viewer, Vec<i64>> {
    let mut groups: HashMap<&Viewer, Vec<i64>> = HashMap::new();
    for (viewer, id) in keys {
        groups.entry(viewer).or_default().push(*id);
    }
    groups
}

/// Loads conversations by id, as their viewer may see them.
pub struct ConversationLoader(pub DatabaseConnection);

impl Loader<ViewedId> for ConversationLoader {
    type Value = conversation::Model;
    type Error = Arc<service::Error>;

    async fn load(&self, keys: &[ViewedId]) -> Result<HashMap<ViewedId, Self::Value>, Self::Error> {
        let mut out = HashMap::new();
        for (viewer, ids) in by_viewer(keys) {
            let found = query::conversations_by_ids(&self.0, viewer, &ids)
                .await
                .map_err(Arc::new)?;
            out.extend(found.into_iter().map(|(id, c)| ((viewer.clone(), id), c)));
        }
        Ok(out)
    }
}

/// Loads messages by id, as their viewer may see them.
pub struct MessageLoader(pub DatabaseConnection);

impl Loader<ViewedId> for MessageLoader {
    type Value = message::Model;
    type Error = Arc<service::Error>;

    async fn load(&self, keys: &[ViewedId]) -> Result<HashMap<ViewedId, Self::Value>, Self::Error> {
        let mut out = HashMap::new();
        for (viewer, ids) in by_viewer(keys) {
            let found = query::messages_by_ids(&self.0, viewer, &ids)
                .await
                .map_err(Arc::new)?;
            out.extend(found.into_iter().map(|(id, m)| ((viewer.clone(), id), m)));
        }
        Ok(out)
    }
}

/// One conversation's page of messages, under a given filter and window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadPageKey {
    /// The conversation.
    pub conversation_id: i64,
    /// The filter.
    pub filter: MessageFilter,
    /// The page window.
    pub window: Window,
}

/// Loads pages of several threads at once (one statement per distinct filter and window).
pub struct ThreadPageLoader(pub DatabaseConnection);

impl Loader<ThreadPageKey> for ThreadPageLoader {
    type Value = Page<message::Model>;
    type Error = Arc<service::Error>;

    async fn load(
        &self,
        keys: &[ThreadPageKey],
    ) -> Result<HashMap<ThreadPageKey, Self::Value>, Self::Error> {
        let mut groups: HashMap<(MessageFilter, Window), Vec<i64>> = HashMap::new();
        for k in keys {
            groups
                .entry((k.filter, k.window))
                .or_default()
                .push(k.conversation_id);
        }
        let mut out = HashMap::new();
        for ((filter, window), ids) in groups {
            let pages = query::list_messages_batch(&self.0, &ids, &filter, &window)
                .await
                .map_err(Arc::new)?;
            for (conversation_id, page) in pages {
                out.insert(
                    ThreadPageKey {
                        conversation_id,
                        filter,
                        window,
                    },
                    page,
                );
            }
        }
        Ok(out)
    }
}

/// Loads filtered message counts of several threads at once, each counted up to the
/// limit (`--max-count-rows`).
pub struct ThreadCountLoader(pub DatabaseConnection, pub u64);

impl Loader<(i64, MessageFilter)> for ThreadCountLoader {
    type Value = query::Count;
    type Error = Arc<service::Error>;

    async fn load(
        &self,
        keys: &[(i64, MessageFilter)],
    ) -> Result<HashMap<(i64, MessageFilter), Self::Value>, Self::Error> {
        let mut groups: HashMap<MessageFilter, Vec<i64>> = HashMap::new();
        for (id, filter) in keys {
            groups.entry(*filter).or_default().push(*id);
        }
        let mut out = HashMap::new();
        for (filter, ids) in groups {
            let counts = query::count_messages_batch(&self.0, &ids, &filter, self.1)
                .await
                .map_err(Arc::new)?;
            out.extend(counts.into_iter().map(|(id, n)| ((id, filter), n)));
        }
        Ok(out)
    }
}
