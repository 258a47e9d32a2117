//! GraphQL object, input and enum types, one file per domain type.

pub mod connection;
pub mod conversation;
pub mod enums;
pub mod message;
pub mod node;
pub mod normalized;
pub mod record;

pub use connection::{ConversationConnection, MessageConnection, PageInfo};
pub use conversation::Conversation;
pub use enums::{Channel, Direction, MessageKind};
pub use message::Message;
pub use node::Node;
