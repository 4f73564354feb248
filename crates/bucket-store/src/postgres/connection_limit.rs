//! How many connections the server will still accept, read once at start: every instance may open its whole pool,
//! and a pool the server cannot honour turns load into "too many clients" errors, so the service warns before
//! that happens instead of after.

use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures::FutureExt;

use super::PostgresStore;
use crate::StoreError;

/// The server's connection budget as seen at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct ConnectionLimit {
    /// `max_connections` minus the slots reserved for superusers: what every client together may open.
    #[diesel(sql_type = Integer)]
    pub usable: i32,
    /// Client sessions open now, this instance's own included.
    #[diesel(sql_type = Integer)]
    pub in_use: i32,
}

impl ConnectionLimit {
    /// How many instances with a pool of `pool_size` the server can serve at once, each with its whole pool open.
    pub fn instances_that_fit(&self, pool_size: usize) -> usize {
        usize::try_from(self.usable).unwrap_or(0) / pool_size.max(1)
    }

    /// Whether this instance could not open its whole pool now, given the sessions already open (its own one
    /// counted in `in_use`).
    pub fn pool_exceeds_headroom(&self, pool_size: usize) -> bool {
        let headroom = i64::from(self.usable) - i64::from(self.in_use) + 1;
        i64::try_from(pool_size).unwrap_or(i64::MAX) > headroom
    }
}

impl PostgresStore {
    /// Reads the server's connection budget (one unprepared statement: it runs once, at start).
    pub async fn connection_limit(&self) -> Result<ConnectionLimit, StoreError> {
        const SQL: &str = "SELECT current_setting('max_connections')::int \
                               - current_setting('superuser_reserved_connections')::int AS usable, \
                           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use";
        self.statement(|conn| diesel::sql_query(SQL).get_result::<ConnectionLimit>(conn).boxed()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_headroom() {
        let limit = ConnectionLimit { usable: 97, in_use: 40 };
        assert_eq!(limit.instances_that_fit(32), 3);
        assert_eq!(limit.instances_that_fit(16), 6);
        // 97 - 40 others' + our own 1 = 58 more this instance can open.
        assert!(!limit.pool_exceeds_headroom(58));
        assert!(limit.pool_exceeds_headroom(59));
    }
}
