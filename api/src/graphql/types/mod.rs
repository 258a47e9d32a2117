//! GraphQL object, input and enum types, one file per domain type. The values behind the
//! `Node` objects are in [`node`]; each object's fields are in its own file.

pub mod conversation;
pub mod enums;
pub mod filter;
pub mod message;
pub mod node;
pub mod normalized;
pub mod page_info;
pub mod plain;
pub mod record;
pub mod search;
pub mod snippet;
pub mod state;

pub use conversation::ConversationConnection;
pub use enums::{Channel, Direction, MessageKind};
pub use filter::{ConversationFilter, MessageFilter};
pub use message::MessageConnection;
pub use node::{Conversation, ConversationEdge, Message, MessageEdge, Node};
pub use page_info::PageInfo;
