//! The service's one error type. The API maps each variant to a GraphQL `extensions.code`
//! and an HTTP status in one place.

use sea_orm::{DbErr, RuntimeErr};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the service layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is invalid; `field` names the offending input field.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The input field, e.g. `to[2]` or `first`.
        field: String,
        /// Why it was rejected and what to do instead.
        reason: String,
    },
    /// No such record.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for (`conversation`, `message`).
        what: &'static str,
        /// The id as given.
        id: String,
    },
    /// A pagination cursor that this server did not issue for this list.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The database cannot be reached right now; safe to retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database error: logged, never shown to clients.
    #[error(transparent)]
    Db(DbErr),
}

impl Error {
    /// An [`Error::InvalidInput`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(err.to_string())
        } else {
            Error::Db(err)
        }
    }
}

/// Whether a database error means "cannot reach the database" (pool timeout, refused or
/// broken connection, server shutting down, statement timeout) rather than a bug.
fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                SqlxError::Io(_)
                | SqlxError::PoolTimedOut
                | SqlxError::PoolClosed
                | SqlxError::WorkerCrashed
                | SqlxError::Tls(_) => true,
                SqlxError::Database(db) => {
                    let code = db.code();
                    let code = code.as_deref().unwrap_or("");
                    // PostgreSQL: 57P01..57P03 admin shutdown / cannot connect now, 57014
                    // statement timeout, 08xxx connection exceptions, 53300 too many
                    // connections. SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED after busy_timeout.
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "57014"
                        || code == "53300"
                        || code == "5"
                        || code == "6"
                        || code == "517"
                }
                _ => false,
            }
        }
        _ => false,
    }
}
