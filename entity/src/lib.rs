//! SeaORM entities of parley. Nothing but table shapes lives here: the rules that keep the
//! rows consistent are in the `service` crate.

pub mod conversation;
pub mod conversation_participant;
pub mod message;

pub use sea_orm;
