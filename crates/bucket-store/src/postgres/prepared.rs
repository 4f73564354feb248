//! The store's statements as prepared statements: each pooled session parses and plans a statement once, then
//! only binds and executes it.
//!
//! diesel's `sql_query` marks itself unsafe to cache (its text could be built at run time), so diesel-async
//! prepared it as an unnamed statement on every call: a Parse round trip, then a Bind/Execute one, and PostgreSQL
//! parsed and planned the long `decide.sql` each time. [`Prepared`] wraps the very same `sql_query(..).bind(..)`
//! chain, so the binds keep diesel's SQL types, and changes two answers: its query id is the statement's own marker
//! type `S` (static, so diesel's per-connection statement cache finds it by `TypeId` without hashing the text), and
//! it declares itself safe to cache. Both are sound because the SQL comes only from [`Statement::SQL`]: one marker
//! type, one constant text, and the binds add values, never SQL.
//!
//! Why a cached statement never runs against another schema's table: prepared statements and diesel's cache both
//! belong to one session (one `AsyncPgConnection`), every session of a pool is opened by `session::open`, which
//! sets the store's one schema as the `search_path` before the first statement, and no statement of the store
//! changes the `search_path` afterwards. A store for another schema has its own pool, so its own sessions and
//! their own prepared statements. Were a `search_path` ever changed in a session, PostgreSQL itself would re-parse
//! the prepared statement with the new path before its next use (documented for `PREPARE` since 9.3).

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId, SqlQuery};
use diesel::sql_types::Untyped;
use diesel::QueryResult;

/// One of the store's statements, named by a type of its own (see `statements.rs`).
pub(super) trait Statement: 'static {
    /// The statement's text, from its `.sql` file; `$1`, `$2`, … are its parameters.
    const SQL: &'static str;
}

/// `S`'s text with its binds, run as a prepared statement cached by each session.
#[must_use = "a statement runs only when executed or loaded"]
pub(super) struct Prepared<S, Q> {
    query: Q,
    statement: PhantomData<fn() -> S>,
}

/// `S`'s statement with the binds `bind` adds to it, in parameter order
/// (`|q| q.bind::<Text, _>(key).bind::<BigInt, _>(cost)`). `bind` only binds: it never calls `.sql(..)`, as the
/// statement's text must be `S::SQL` exactly for the cache key `S` to stand for it.
pub(super) fn prepared<S: Statement, Q>(bind: impl FnOnce(SqlQuery) -> Q) -> Prepared<S, Q> {
    Prepared { query: bind(diesel::sql_query(S::SQL)), statement: PhantomData }
}

/// The marker type is the query id: the same for every call of one statement, different between statements.
impl<S: Statement, Q> QueryId for Prepared<S, Q> {
    type QueryId = S;

    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Statement, Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<S, Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The inner chain pushes `S::SQL` and the bind values; its "unsafe to cache" only answers the question
        // below, which this type answers itself.
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// Rows are read by column name (`QueryableByName`), as with `sql_query`.
impl<S, Q> Query for Prepared<S, Q> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use std::any::TypeId;

    use super::*;

    /// The key diesel's statement cache files `S` under.
    fn cache_key<S: Statement>() -> Option<TypeId> {
        <Prepared<S, SqlQuery> as QueryId>::query_id()
    }

    struct One;
    impl Statement for One {
        const SQL: &'static str = "SELECT 1";
    }
    struct Two;
    impl Statement for Two {
        const SQL: &'static str = "SELECT 2";
    }

    #[test]
    fn each_statement_has_a_static_id_of_its_own_and_is_safe_to_cache() {
        assert_eq!(cache_key::<One>(), Some(TypeId::of::<One>()));
        assert_ne!(cache_key::<One>(), cache_key::<Two>());
        let query = prepared::<One, _>(|q| q.bind::<diesel::sql_types::BigInt, _>(1_i64));
        assert_eq!(query.is_safe_to_cache_prepared(&Pg), Ok(true));
        // The plain `sql_query` it wraps is not: without this type, nothing would be cached.
        assert_eq!(diesel::sql_query(One::SQL).is_safe_to_cache_prepared(&Pg), Ok(false));
        assert_eq!(diesel::debug_query::<Pg, _>(&query).to_string(), "SELECT 1 -- binds: [1]");
    }
}
