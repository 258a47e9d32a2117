//! What every handler shares: the schemas, the database, the configuration, the metrics.

use metrics_exporter_prometheus::PrometheusHandle;
use service::DatabaseConnection;

use crate::config::AppConfig;
use crate::graphql::schema::{
    AppSchema, build_introspection_schema, build_probe_schema, build_schema,
};
use crate::http::persisted::PersistedDocuments;
use crate::observability;

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema.
    pub schema: AppSchema,
    /// The same schema with the probe that validates and prices an operation first.
    pub probe_schema: AppSchema,
    /// The same schema with the deeper limit that introspection-only operations get.
    pub introspection_schema: AppSchema,
    /// The database.
    pub db: DatabaseConnection,
    /// The configuration.
    pub config: AppConfig,
    /// The Prometheus registry `/metrics` renders.
    pub metrics: PrometheusHandle,
    /// Persisted documents: the automatic-persisted-queries cache, and the trusted list
    /// when `--trusted-documents` is set.
    pub persisted: PersistedDocuments,
}

impl AppState {
    /// State over `db` with `config`.
    pub fn new(db: DatabaseConnection, config: AppConfig) -> Self {
        AppState {
            schema: build_schema(db.clone(), config),
            probe_schema: build_probe_schema(db.clone(), config),
            introspection_schema: build_introspection_schema(db.clone(), config),
            db,
            config,
            metrics: observability::metrics_handle(),
            persisted: PersistedDocuments::default(),
        }
    }

    /// The same state, running only the documents of `trusted`.
    pub fn with_persisted(mut self, persisted: PersistedDocuments) -> Self {
        self.persisted = persisted;
        self
    }
}
