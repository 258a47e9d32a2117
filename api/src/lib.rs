//! The parley server: configuration, the axum router, the async-graphql schema, the REST
//! ingress adapters and the operator subcommands. Domain logic lives in the `service` crate.

pub mod auth;
pub mod cli;
pub mod config;
pub mod database;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod http;
pub mod middleware;
pub mod observability;
pub mod ops;
pub mod request_id;
pub mod rest;
pub mod state;

pub use config::AppConfig;
pub use graphql::schema::{AppSchema, build_schema};
pub use http::router;
pub use state::AppState;

#[cfg(test)]
mod module_graph;
