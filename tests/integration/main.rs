//! Black-box tests of parley. Storage tests run on SQLite and on PostgreSQL (when
//! `TEST_DATABASE_URL` is set) through `on_both_engines!`.

mod auth;
mod bulk_limits;
mod contract;
mod correctness;
mod counts;
mod graphql;
mod group;
mod harness;
mod hostile;
mod http_limits;
mod live;
mod ops;
mod ops_runtime;
mod persisted;
mod plain;
mod plans;
mod rest;
mod search;
mod service_layer;
mod state;
mod visibility;
