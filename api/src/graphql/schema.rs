//! Building the schema: roots, limits, loaders. Pure: no environment reads, no I/O, so
//! tests and `parley schema` build it the same way the server does.

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::Analyzer;
use async_graphql::{EmptySubscription, Schema};
use service::DatabaseConnection;

use super::loaders::{ConversationLoader, MessageLoader, ThreadCountLoader, ThreadPageLoader};
use super::mutation::MutationRoot;
use super::query::QueryRoot;
use crate::AppConfig;

/// parley's GraphQL schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema over `db` with `config`'s limits.
pub fn build_schema(db: DatabaseConnection, config: AppConfig) -> AppSchema {
    let limits = config.graphql;
    let mut builder = Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(limits.max_nesting)
        .limit_directives(limits.max_directives)
        .extension(Analyzer)
        .data(DataLoader::new(
            ConversationLoader(db.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(MessageLoader(db.clone()), tokio::spawn))
        .data(DataLoader::new(ThreadPageLoader(db.clone()), tokio::spawn))
        .data(DataLoader::new(ThreadCountLoader(db.clone()), tokio::spawn))
        .data(db)
        .data(config);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if !limits.suggestions {
        builder = builder.disable_suggestions();
    }
    builder.finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}
