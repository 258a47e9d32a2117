//! Building the schema: roots, limits, loaders. Pure: no environment reads, no I/O, so
//! tests and `parley schema` build it the same way the server does.

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::Analyzer;
use async_graphql::{Schema, SchemaBuilder};
use service::{DatabaseConnection, Principal, Viewer, query};

use super::cost::{DocumentCache, Probe};
use super::loaders::{ConversationLoader, MessageLoader, ThreadCountLoader, ThreadPageLoader};
use super::mutation::MutationRoot;
use super::query::QueryRoot;
use super::state_loaders::{
    DeliveryHistoryLoader, DeliveryStatusLoader, HeadersLoader, RfcIdLoader, StateLoader,
    SubjectLoader,
};
use super::subscription::SubscriptionRoot;
use crate::config::AppConfig;

/// parley's GraphQL schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over `db` with `config`'s limits. It has no extension, so fields
/// resolve on async-graphql's fast path; the HTTP layer validates and prices each operation
/// with a run of [`build_probe_schema`] first (see [`super::cost`]), which also enforces the
/// cost budget (`config.graphql.max_complexity`).
pub fn build_schema(db: DatabaseConnection, config: AppConfig) -> AppSchema {
    builder(db, config).finish()
}

/// The schema the HTTP layer executes operations on, once the probe has validated them:
/// [`build_schema`] with async-graphql's `Fast` validation (only what execution needs:
/// fragment cycles, depth), since the full rules have run on the probe (or on the same
/// text before, see [`super::cost::DocumentCache`]). Not for operations that did not pass
/// the probe.
pub fn build_execution_schema(db: DatabaseConnection, config: AppConfig) -> AppSchema {
    builder(db, config)
        .validation_mode(async_graphql::ValidationMode::Fast)
        .finish()
}

/// The probe: the same schema and limits, with the [`Probe`] extension that validates an
/// operation, keeps its document and cost, and stops before executing it; it remembers the
/// documents that passed ([`DocumentCache`]).
pub fn build_probe_schema(db: DatabaseConnection, config: AppConfig) -> AppSchema {
    builder(db, config)
        .extension(Probe)
        .data(DocumentCache::default())
        .finish()
}

fn builder(
    db: DatabaseConnection,
    config: AppConfig,
) -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    let limits = config.graphql;
    let mut builder = with_descriptions(Schema::build(QueryRoot, MutationRoot, SubscriptionRoot))
        .limit_depth(limits.max_depth)
        .limit_recursive_depth(limits.max_nesting)
        .limit_directives(limits.max_directives)
        .data(loader(ConversationLoader(db.clone())))
        .data(loader(MessageLoader(db.clone())))
        .data(loader(ThreadPageLoader(db.clone())))
        .data(loader(ThreadCountLoader(
            db.clone(),
            config.settings.limits.max_count_rows,
        )))
        .data(loader(DeliveryStatusLoader(db.clone())))
        .data(loader(DeliveryHistoryLoader(db.clone())))
        .data(loader(HeadersLoader(db.clone())))
        .data(loader(SubjectLoader(db.clone())))
        .data(loader(RfcIdLoader(db.clone())))
        .data(loader(StateLoader(db.clone())))
        .data(query::Warm::of(&db))
        .data(db)
        .data(config);
    // Without authentication, an operation run without a principal (the schema used
    // directly, as tests do) acts as the development principal; with it, the HTTP layer
    // puts one in every request, and a request without one fails.
    if !config.auth_required {
        builder = builder
            .data(Principal::development())
            .data(Viewer::Everyone);
    }
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if !limits.suggestions {
        builder = builder.disable_suggestions();
    }
    builder
}

/// Depth allowed to introspection-only operations. Tools' standard introspection query
/// (GraphiQL, codegen) unwraps `ofType` many levels deep and would fail the ordinary depth
/// limit; introspection reads no data, so a deeper limit costs nothing.
pub const INTROSPECTION_DEPTH: usize = 32;

/// The schema that serves introspection-only operations: the same as [`build_schema`]
/// with the depth limit raised to [`INTROSPECTION_DEPTH`] (introspection itself stays off
/// when the configuration turns it off). Introspection is rare and small, so it runs in one
/// pass with async-graphql's `Analyzer` reporting its cost.
pub fn build_introspection_schema(db: DatabaseConnection, mut config: AppConfig) -> AppSchema {
    config.graphql.max_depth = config.graphql.max_depth.max(INTROSPECTION_DEPTH);
    builder(db, config).extension(Analyzer).finish()
}

/// A batching loader with async-graphql's 1 ms window. A zero window was measured to split
/// sibling batches on the multi-threaded runtime (another worker runs the batch task
/// before the siblings have queued their keys), so the window stays; pages of
/// conversations avoid it altogether through `prefetch`.
fn loader<T>(inner: T) -> DataLoader<T> {
    DataLoader::new(inner, tokio::spawn)
}

/// What `DateTime` means, for every client's generated docs.
const DATE_TIME: &str = "An instant in UTC, as an RFC 3339 date-time string with the offset `Z`, \
     e.g. `2024-11-01T14:05:00Z` (fractional seconds appear when the instant has them). \
     Inputs may carry any offset; they are converted to UTC.";

/// The descriptions of the types parley takes from libraries (the library's own would name
/// Rust internals).
fn with_descriptions(
    builder: SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot>,
) -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    builder
        .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME)
        .override_input_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME)
}

/// The SDL of the schema, as committed in `schema.graphql` (with `@specifiedBy`, as live
/// introspection reports it).
pub fn sdl() -> String {
    with_descriptions(Schema::build(QueryRoot, MutationRoot, SubscriptionRoot))
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}
