//! The small closed vocabularies of the domain: channel, kind and direction. They are the
//! entity crate's active enums, so what is stored and what the domain speaks are one type.

pub use entity::types::{Channel, Direction, Kind};
