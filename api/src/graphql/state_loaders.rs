//! Batching loaders of the messaging state (SPEC section 14): delivery statuses and
//! histories, email headers, conversation subjects, replied-to messages and per-inbox
//! state. Each costs one statement per page, not one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use service::DatabaseConnection;
use service::delivery::{self, ProviderKey, delivery_event, delivery_status};
use service::headers::{self, message_header};
use service::state::{self, conversation_state};

macro_rules! loader {
    ($(#[$doc:meta])* $name:ident, $key:ty => $value:ty, |$db:ident, $keys:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name(pub DatabaseConnection);

        impl Loader<$key> for $name {
            type Value = $value;
            type Error = Arc<service::Error>;

            async fn load(&self, $keys: &[$key]) -> Result<HashMap<$key, $value>, Self::Error> {
                let $db = &self.0;
                $body.await.map_err(Arc::new)
            }
        }
    };
}

loader!(
    /// Loads delivery statuses by (channel, provider message id).
    DeliveryStatusLoader, ProviderKey => delivery_status::Model,
    |db, keys| delivery::statuses(db, keys)
);

loader!(
    /// Loads delivery event histories by (channel, provider message id).
    DeliveryHistoryLoader, ProviderKey => Vec<delivery_event::Model>,
    |db, keys| delivery::histories(db, keys)
);

loader!(
    /// Loads email headers by message id.
    HeadersLoader, i64 => message_header::Model,
    |db, keys| headers::headers_by_message_ids(db, keys)
);

loader!(
    /// Loads conversation subjects by conversation id.
    SubjectLoader, i64 => String,
    |db, keys| headers::subjects(db, keys)
);

loader!(
    /// Loads the id of the message carrying a Message-ID in a conversation.
    RfcIdLoader, (i64, String) => i64,
    |db, keys| headers::messages_by_rfc_ids(db, keys)
);

loader!(
    /// Loads per-(conversation, inbox) state rows.
    StateLoader, (i64, String) => conversation_state::Model,
    |db, keys| state::states(db, keys)
);
