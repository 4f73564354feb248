//! What one pooled session has prepared: the evidence that checks reuse their statements instead of having
//! PostgreSQL parse and plan each one.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures::FutureExt;

use super::prepared::prepared;
use super::statements::SessionStatements;
use super::{unsigned, PostgresStore};
use crate::StoreError;

/// A statement prepared in a session, as PostgreSQL's `pg_prepared_statements` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatement {
    /// The statement's text exactly as prepared.
    pub sql: String,
    /// How many times the session ran it since preparing it (generic plus custom plans).
    pub executions: u64,
    /// How many of them PostgreSQL planned again for their own arguments: none, when plans are cached as meant.
    pub custom_plans: u64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    sql: String,
    #[diesel(sql_type = BigInt)]
    executions: i64,
    #[diesel(sql_type = BigInt)]
    custom_plans: i64,
}

impl PostgresStore {
    /// The statements one pooled session has prepared (with a pool of one: the session every call used), so an
    /// operator or a test can see each statement prepared once and then reused.
    pub async fn session_statements(&self) -> Result<Vec<SessionStatement>, StoreError> {
        let query = prepared::<SessionStatements, _>(|q| q);
        let rows = self.statement(move |conn| query.load::<Row>(conn).boxed()).await?;
        rows.into_iter()
            .map(|row| {
                Ok(SessionStatement {
                    sql: row.sql,
                    executions: unsigned(row.executions, "executions")?,
                    custom_plans: unsigned(row.custom_plans, "custom_plans")?,
                })
            })
            .collect()
    }
}
