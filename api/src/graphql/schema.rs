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
        .data(loader(ConversationLoader(db.clone())))
        .data(loader(MessageLoader(db.clone())))
        .data(loader(ThreadPageLoader(db.clone())))
        .data(loader(ThreadCountLoader(db.clone())))
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

/// Depth allowed to introspection-only operations. Tools' standard introspection query
/// (GraphiQL, codegen) unwraps `ofType` many levels deep and would fail the ordinary depth
/// limit; introspection reads no data, so a deeper limit costs nothing.
pub const INTROSPECTION_DEPTH: usize = 32;

/// The schema that serves introspection-only operations: the same as [`build_schema`]
/// with the depth limit raised to [`INTROSPECTION_DEPTH`] (introspection itself stays off
/// when the configuration turns it off).
pub fn build_introspection_schema(db: DatabaseConnection, mut config: AppConfig) -> AppSchema {
    config.graphql.max_depth = config.graphql.max_depth.max(INTROSPECTION_DEPTH);
    build_schema(db, config)
}

/// A batching loader with async-graphql's 1 ms window. A zero window was measured to split
/// sibling batches on the multi-threaded runtime (another worker runs the batch task
/// before the siblings have queued their keys), so the window stays; pages of
/// conversations avoid it altogether through `prefetch`.
fn loader<T>(inner: T) -> DataLoader<T> {
    DataLoader::new(inner, tokio::spawn)
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}
