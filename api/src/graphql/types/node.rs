//! The Relay `Node` interface.

use async_graphql::{ID, Interface};

use super::{Conversation, Message};

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
