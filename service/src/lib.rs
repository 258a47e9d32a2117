//! parley's domain, free of HTTP and GraphQL: address normalization and the conversation
//! key, snippets, the transactional record path, keyset queries, backfill and verify.
//!
//! Every function that touches storage takes the connection first and works the same on
//! SQLite and PostgreSQL.

pub mod access;
pub mod backfill;
pub mod counts;
pub mod cursor;
pub mod db;
pub mod delivery;
pub mod error;
pub mod headers;
pub mod import;
pub mod live;
pub mod normalize;
pub mod query;
pub mod record;
pub mod search;
pub mod settings;
pub mod snippet;
mod sql;
pub mod state;
mod statements;
pub mod types;
pub mod verify;

pub use access::{Principal, Viewer};
pub use entity::{conversation, conversation_participant, message, message_text};
pub use error::{Error, Result};
pub use sea_orm::{self, DatabaseConnection, DbBackend};
pub use settings::{Limits, Settings};
pub use types::{Channel, Direction, Kind};
