//! The GraphQL API. [`schema`] builds it from the roots ([`query`], [`mutation`],
//! [`subscription`]) and the
//! object, input and enum types ([`types`]); [`paging`] validates connection arguments,
//! [`cost`] prices and validates an operation before it runs, [`prefetch`] and [`loaders`]
//! batch nested reads, [`ids`] spells global ids and [`error`] maps service errors.

pub mod cost;
pub mod error;
pub mod ids;
pub mod loaders;
pub mod mutation;
pub mod paging;
pub mod prefetch;
pub mod query;
pub mod schema;
pub mod shape;
pub mod state_loaders;
pub mod subscription;
pub mod types;
pub mod variables;
