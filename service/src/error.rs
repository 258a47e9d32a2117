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
    /// The principal may not do this (a missing scope, an address that is not one of its
    /// inboxes); `field` names what was refused.
    #[error("{field}: {reason}")]
    Forbidden {
        /// The input field or the GraphQL field refused, e.g. `from` or
        /// `unassignedMessages`.
        field: String,
        /// Why, and what would be allowed.
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
    /// The request would take too long: a search the statement timeout cut off. `field`
    /// names the input to narrow (`query`).
    #[error("{field}: {reason}")]
    TooComplex {
        /// The input to narrow.
        field: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A pagination cursor that this server did not issue for this list.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The database cannot be reached right now; safe to retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// No pooled connection came free within the acquire timeout. Either every connection
    /// is in use (overload: [`Error::in_pool`] makes it [`Error::Overloaded`]) or new ones
    /// cannot be opened (an outage: it stays `Unavailable` when mapped).
    #[error("no database connection within the acquire timeout: {0}")]
    PoolTimeout(String),
    /// Every pooled connection was in use for the whole acquire timeout while the database
    /// was reachable: the server has more work than connections. Safe to retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A broken invariant (a row that vanished under a lock, an upsert that returned
    /// nothing): a bug, not an outage. Logged, never shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
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

    /// An [`Error::Forbidden`] for `field`.
    pub fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Forbidden {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// Tells a [`Error::PoolTimeout`] from `db`'s pool apart: [`Error::Overloaded`] when
    /// every connection the pool may open is open and in use (see
    /// [`crate::db::pool_saturated`]), [`Error::Unavailable`] otherwise (the pool had room
    /// but could not connect). Any other error is returned as it is.
    pub fn in_pool(self, db: &sea_orm::DatabaseConnection) -> Self {
        match self {
            Error::PoolTimeout(detail) if crate::db::pool_saturated(db) => {
                Error::Overloaded(detail)
            }
            Error::PoolTimeout(detail) => Error::Unavailable(detail),
            other => other,
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_pool_timeout(&err) {
            Error::PoolTimeout(err.to_string())
        } else if is_unavailable(&err) {
            Error::Unavailable(err.to_string())
        } else {
            Error::Db(err)
        }
    }
}

/// Whether a database error is the pool's acquire timeout: no connection came free, and
/// none could be opened, in time.
fn is_pool_timeout(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    match err {
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(e.as_ref(), SqlxError::PoolTimedOut)
        }
        _ => false,
    }
}

/// Whether a database error means "cannot reach the database" (pool timeout, refused or
/// broken connection, server shutting down or restarting, statement timeout) rather than a
/// bug. These become `UNAVAILABLE`: the request did not happen (or its commit's answer was
/// lost, and a retry is idempotent), and retrying later is safe.
fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                // Io: refused, reset by peer, EOF mid-message (what a killed server looks
                // like from here).
                SqlxError::Io(_)
                | SqlxError::PoolTimedOut
                | SqlxError::PoolClosed
                | SqlxError::WorkerCrashed
                | SqlxError::Tls(_) => true,
                SqlxError::Database(db) => db.code().is_some_and(|c| unavailable_code(&c)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a database error code (PostgreSQL SQLSTATE, or SQLite extended result code)
/// means the database cannot serve right now.
fn unavailable_code(code: &str) -> bool {
    // A SQLSTATE is always five characters (and often all digits); SQLite's extended codes
    // are numbers below 10000.
    if code.len() < 5
        && let Ok(sqlite) = code.parse::<u32>()
    {
        // SQLite reports extended codes (e.g. 517 SQLITE_BUSY_SNAPSHOT, 773
        // SQLITE_BUSY_TIMEOUT, 262 SQLITE_LOCKED_SHAREDCACHE): the primary code is the low
        // byte. BUSY/LOCKED: the write lock stayed taken past busy_timeout. IOERR/CANTOPEN:
        // the file cannot be read or written right now (volume gone, disk error).
        return matches!(sqlite & 0xff, 5 | 6 | 10 | 14);
    }
    // PostgreSQL: class 08 connection exceptions; 57P01..57P05 admin/crash shutdown,
    // cannot connect now (starting up, shutting down, in recovery); 57014 query cancelled
    // (statement_timeout); class 53 insufficient resources (53300 too many connections,
    // 53100 disk full); 25006 read-only transaction (a failover left us on a standby).
    code.starts_with("08")
        || code.starts_with("57P")
        || code == "57014"
        || code.starts_with("53")
        || code == "25006"
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx::Error as SqlxError;
    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};
    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

    use super::{Error, is_pool_timeout, is_unavailable, unavailable_code};

    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn query(e: SqlxError) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
    }

    fn exec(e: SqlxError) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
    }

    fn coded(code: &'static str) -> DbErr {
        query(SqlxError::Database(Box::new(Coded(code))))
    }

    #[test]
    fn a_vanished_database_is_unavailable() {
        use std::io::{Error as IoError, ErrorKind as Io};
        // What the outage test sees when the server is killed and while it is down.
        for err in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::SqlxError(Arc::new(SqlxError::Io(
                IoError::from(Io::ConnectionRefused),
            )))),
            query(SqlxError::Io(IoError::from(Io::ConnectionReset))),
            exec(SqlxError::Io(IoError::from(Io::UnexpectedEof))),
            query(SqlxError::PoolTimedOut),
            query(SqlxError::PoolClosed),
            coded("57P01"),
            coded("57P03"),
            coded("57014"),
            coded("08006"),
            coded("53300"),
            coded("25006"),
            coded("5"),
            coded("517"),
            coded("773"),
            coded("262"),
            coded("10"),
            coded("8714"), // SQLITE_IOERR_IN_PAGE
        ] {
            assert!(is_unavailable(&err), "{err}");
            // A pool timeout is told apart from an outage by the pool (`in_pool`).
            if is_pool_timeout(&err) {
                assert!(matches!(Error::from(err), Error::PoolTimeout(_)));
            } else {
                assert!(matches!(Error::from(err), Error::Unavailable(_)));
            }
        }
    }

    #[test]
    fn bugs_and_bad_data_are_not_unavailable() {
        for err in [
            coded("23505"), // unique violation
            coded("42P01"), // undefined table
            coded("40P01"), // deadlock: a locking bug, not an outage
            coded("XX000"),
            coded("1"),    // SQLITE_ERROR (no such table, syntax)
            coded("2067"), // SQLITE_CONSTRAINT_UNIQUE
            coded("40001"),
            query(SqlxError::Protocol("unexpected message".into())),
            query(SqlxError::RowNotFound),
            DbErr::Custom("boom".into()),
            DbErr::RecordNotFound("x".into()),
        ] {
            assert!(!is_unavailable(&err), "{err}");
            assert!(matches!(Error::from(err), Error::Db(_)));
        }
        assert!(!unavailable_code(""));
    }
}
