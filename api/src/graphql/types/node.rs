//! The Relay `Node` interface and the values behind its two objects, `Conversation` and
//! `Message`. Their fields are resolved in [`super::conversation`] and [`super::message`];
//! the values live here so that those two modules, whose types refer to each other
//! (`Conversation.messages`, `Message.conversation`), do not depend on each other. Their
//! edges live here too, for [`super::plain`], which both pages' fields use.

use std::sync::Arc;

use async_graphql::{ID, Interface, SimpleObject};
use service::{conversation, message};

use crate::graphql::prefetch::Prefetched;

/// An object with a global id, fetchable with `node(id:)`.
// Values live for one field resolution; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Global id, usable with `node(id:)`."))]
pub enum Node {
    /// A conversation.
    Conversation(Conversation),
    /// A message.
    Message(Message),
}

/// A conversation: one channel and one set of participants, with all their messages.
#[derive(Debug, Clone)]
pub struct Conversation(
    pub conversation::Model,
    /// What the page this conversation came on already loaded for all its conversations.
    pub Option<Arc<Prefetched>>,
);

impl Conversation {
    /// A conversation with nothing prefetched.
    pub fn new(model: conversation::Model) -> Self {
        Conversation(model, None)
    }
}

/// One message, inbound or outbound, with its conversation when the caller already has it
/// (a thread page, a conversation's last message), so `conversation` costs nothing then.
#[derive(Debug, Clone)]
pub struct Message(pub message::Model, pub Option<conversation::Model>);

/// A conversation with its cursor.
#[derive(SimpleObject, Debug, Clone)]
pub struct ConversationEdge {
    /// Opaque position of this conversation in the list; pass it as `after` or `before`.
    pub cursor: String,
    /// The conversation.
    pub node: Conversation,
}

/// A message with its cursor.
#[derive(SimpleObject, Debug, Clone)]
pub struct MessageEdge {
    /// Opaque position of this message in the list; pass it as `after` or `before`.
    pub cursor: String,
    /// The message.
    pub node: Message,
}
