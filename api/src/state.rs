//! What every handler shares: the schemas, the database, the configuration, the metrics,
//! the security settings.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use service::DatabaseConnection;

use crate::auth::Security;
use crate::config::AppConfig;
use crate::graphql::schema::{
    AppSchema, build_execution_schema, build_introspection_schema, build_probe_schema,
};
use crate::http::persisted::PersistedDocuments;
use crate::observability;

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema operations run on once [`AppState::probe_schema`] has validated
    /// them (it skips async-graphql's full validation rules).
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
    /// Authentication, webhook secrets, CORS and rate limits.
    pub security: Arc<Security>,
    /// Persisted documents: the automatic-persisted-queries cache, and the trusted list
    /// when `--trusted-documents` is set.
    pub persisted: PersistedDocuments,
}

impl AppState {
    /// State over `db` with `config`, in development mode (no authentication).
    pub fn new(db: DatabaseConnection, config: AppConfig) -> Self {
        Self::secured(db, config, Security::development())
    }

    /// State over `db` with `config` and `security`; `config.auth_required` follows
    /// whether `security` authenticates.
    pub fn secured(db: DatabaseConnection, mut config: AppConfig, security: Security) -> Self {
        config.auth_required = security.auth_enabled();
        AppState {
            schema: build_execution_schema(db.clone(), config),
            probe_schema: build_probe_schema(db.clone(), config),
            introspection_schema: build_introspection_schema(db.clone(), config),
            db,
            config,
            metrics: observability::metrics_handle(),
            security: Arc::new(security),
            persisted: PersistedDocuments::default(),
        }
    }

    /// The same state, running only the documents of `trusted`.
    pub fn with_persisted(mut self, persisted: PersistedDocuments) -> Self {
        self.persisted = persisted;
        self
    }
}
