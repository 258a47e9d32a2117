//! Opening the database the server uses, migrated.

use migration::{Migrator, MigratorTrait};
use service::DatabaseConnection;
use service::db::DbOptions;
use service::sea_orm::DbErr;

/// Runs pending migrations, then opens the pool to serve from.
///
/// On SQLite the migrations run on a connection of their own, closed before the serving
/// pool opens: a pooled SQLite connection caches the schema, and one that sat idle while
/// another created an index still plans statements without it, so an `INSERT .. ON
/// CONFLICT` on that index fails ("ON CONFLICT clause does not match any PRIMARY KEY or
/// UNIQUE constraint") until it reloads. `sqlite::memory:` is one connection, so it
/// migrates in place.
pub async fn connect_migrated(url: &str, options: &DbOptions) -> Result<DatabaseConnection, DbErr> {
    let in_memory = url.starts_with("sqlite::memory:") || url.contains("mode=memory");
    if url.starts_with("sqlite") && !in_memory {
        let single = DbOptions {
            max_connections: 1,
            ..options.clone()
        };
        let migrator = service::db::connect(url, &single).await?;
        Migrator::up(&migrator, None).await?;
        migrator.close().await?;
        let db = service::db::connect(url, options).await?;
        index_missing_texts(&db).await?;
        return Ok(db);
    }
    let db = service::db::connect(url, options).await?;
    Migrator::up(&db, None).await?;
    index_missing_texts(&db).await?;
    Ok(db)
}

/// Indexes for search the messages stored before search existed (the last step of
/// migrating: the migration crate does not carry the text rules). Nothing to do after the
/// first run.
pub async fn index_missing_texts(db: &DatabaseConnection) -> Result<(), DbErr> {
    let n = service::search::index_missing_texts(db, 1000)
        .await
        .map_err(|e| DbErr::Custom(format!("indexing messages for search: {e}")))?;
    if n > 0 {
        tracing::info!(messages = n, "indexed existing messages for search");
    }
    Ok(())
}
