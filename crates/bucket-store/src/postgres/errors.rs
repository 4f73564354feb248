//! Sorting the driver's and the pool's errors into the three kinds the fallback logic acts on.
//!
//! Transient (`Unavailable`, `Timeout`): the server could not be reached, dropped the connection, or did not answer
//! in time; another tier or a later retry may succeed. Everything else (`Backend`) is an answer we cannot use, and
//! retrying the same statement would get the same answer.

use std::time::Duration;

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::pooled_connection::PoolError as ManagerError;

use crate::StoreError;

/// The name in every error and in `/readyz`.
pub(super) const BACKEND: &str = "postgres";

pub(super) fn unavailable(detail: impl Into<String>) -> StoreError {
    StoreError::Unavailable { backend: BACKEND, detail: detail.into() }
}

pub(super) fn backend(detail: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: BACKEND, detail: detail.into() }
}

pub(super) fn timeout(after: Duration) -> StoreError {
    StoreError::Timeout { backend: BACKEND, after }
}

/// A statement's failure; `statement_timeout` is what the server enforced if it cancelled the statement.
pub(super) fn query(error: QueryError, statement_timeout: Duration) -> StoreError {
    match &error {
        // No SQLSTATE: tokio-postgres could not send or lost the socket.
        QueryError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => {
            unavailable(error.to_string())
        }
        // diesel-async reports SQLSTATEs it has no kind for as `Unknown`, so the server's own statement_timeout
        // (57014) and an administrator's shutdown (57P01..57P03) are recognised by their message. The client-side
        // deadline, which expires at the same time, is the primary guard; this only classifies the server's copy.
        QueryError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            if message.contains("statement timeout") || message.contains("lock timeout") {
                timeout(statement_timeout)
            } else if message.contains("terminating connection") || message.contains("shutting down") {
                unavailable(message.to_owned())
            } else {
                backend(error.to_string())
            }
        }
        _ => backend(error.to_string()),
    }
}

/// Opening a connection failed: the server is down, refusing, or not accepting this login yet.
///
/// A wrong password or database name also lands here as `Unavailable`: diesel-async flattens the server's answer
/// into a string, and treating it as transient only means the caller retries or falls back, never that it grants.
/// A TLS refusal (a certificate that does not verify, a server without TLS under `sslmode=require`) is a
/// configuration error: retrying it at start would loop forever, so it is said once, as `Backend`.
pub(super) fn connection(error: ConnectionError) -> StoreError {
    match error {
        ConnectionError::InvalidConnectionUrl(detail) => backend(format!("invalid connection URL: {detail}")),
        ConnectionError::BadConnection(detail) if detail.starts_with(super::tls::TLS_REFUSED) => backend(detail),
        other => unavailable(other.to_string()),
    }
}

/// Waiting for a pooled connection failed.
pub(super) fn pool(error: PoolError, connect_timeout: Duration) -> StoreError {
    match error {
        PoolError::Timeout(_) => timeout(connect_timeout),
        PoolError::Backend(ManagerError::ConnectionError(e)) => connection(e),
        PoolError::Backend(ManagerError::QueryError(e)) => unavailable(format!("connection check failed: {e}")),
        PoolError::Closed => unavailable("the connection pool is closed"),
        other => backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_timeouts_are_transient_and_sql_errors_are_not() {
        let t = Duration::from_secs(1);
        let closed = QueryError::DatabaseError(DatabaseErrorKind::ClosedConnection, Box::new("gone".to_owned()));
        assert!(matches!(query(closed, t), StoreError::Unavailable { .. }));
        let cancelled = QueryError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to statement timeout".to_owned()),
        );
        assert!(matches!(query(cancelled, t), StoreError::Timeout { after, .. } if after == t));
        let syntax = QueryError::DatabaseError(DatabaseErrorKind::Unknown, Box::new("syntax error".to_owned()));
        assert!(!query(syntax, t).is_transient());
        assert!(!query(QueryError::NotFound, t).is_transient());
        assert!(pool(PoolError::Closed, t).is_transient());
        assert!(!connection(ConnectionError::InvalidConnectionUrl("x".into())).is_transient());
        let tls = format!("{}invalid peer certificate: UnknownIssuer", super::super::tls::TLS_REFUSED);
        assert!(!connection(ConnectionError::BadConnection(tls)).is_transient());
        assert!(connection(ConnectionError::BadConnection("connection refused".into())).is_transient());
    }
}
