//! SeaORM entities of parley. Nothing but table shapes and the closed vocabularies their
//! columns hold lives here: the rules that keep the rows consistent are in the `service`
//! crate.

pub mod conversation;
pub mod conversation_participant;
pub mod conversation_state;
pub mod delivery_event;
pub mod delivery_status;
pub mod message;
pub mod message_header;
pub mod message_text;
pub mod types;

pub use sea_orm;
pub use types::{Channel, Direction, Kind};
