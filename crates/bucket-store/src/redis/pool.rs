//! The one place a Redis call is made: leasing a shared connection, the per-call deadline, dropping broken
//! connections, and sorting driver errors into transient and permanent.

use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use tokio::time::{timeout_at, Instant};

use super::connections::{ConnectFailure, Lease};
use super::script::Lua;
use super::{RedisStore, BACKEND};
use crate::StoreError;

/// One unit of work on a shared connection, so that leasing, deadline and error handling live in one place.
pub(super) enum Op<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
    Script { lua: Lua, keys: &'a [String], args: &'a [String] },
}

impl RedisStore {
    /// Leases a connection and runs `op` on it, all before `budget` runs out. Other calls share the connection
    /// meanwhile; this call's deadline is its own.
    pub(super) async fn exec<T: FromRedisValue>(&self, op: Op<'_>, budget: Duration) -> Result<T, StoreError> {
        let deadline = Instant::now() + budget;
        let mut lease = self.lease(deadline, budget).await?;
        let result = timeout_at(deadline, async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut lease.conn).await,
                Op::Pipe(pipe) => pipe.query_async(&mut lease.conn).await,
                Op::Script { lua, keys, args } => self.eval(&mut lease.conn, lua, keys, args).await,
            }
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // A broken or stalled connection is replaced; one that carried a server error reply (BUSY,
                // LOADING, a script error) is in sync and keeps serving.
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.inner.connections.discard(&lease);
                }
                Err(classify(&e, budget))
            }
            Err(_) => {
                // No reply within the deadline: the connection may be stalled, so later calls get a new one. The
                // late reply, if any, is matched to this abandoned request by redis-rs and dropped.
                self.inner.connections.discard(&lease);
                Err(StoreError::Timeout { backend: BACKEND, after: budget })
            }
        }
    }

    /// A lease on a shared connection before `deadline`. One that sat idle is probed first and, if the probe
    /// fails, replaced once: a server or proxy may close idle connections, and a check should not find out.
    async fn lease(&self, deadline: Instant, budget: Duration) -> Result<Lease<'_>, StoreError> {
        let timeout = || StoreError::Timeout { backend: BACKEND, after: budget };
        for first in [true, false] {
            let mut lease = match timeout_at(deadline, self.inner.connections.acquire()).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(ConnectFailure::TimedOut)) | Err(_) => return Err(timeout()),
                Ok(Err(ConnectFailure::Failed(e))) => return Err(classify(&e, budget)),
            };
            if !(first && lease.idle) {
                return Ok(lease);
            }
            match timeout_at(deadline, redis::cmd("PING").query_async::<()>(&mut lease.conn)).await {
                Ok(Ok(())) => return Ok(lease),
                _ => self.inner.connections.discard(&lease),
            }
        }
        Err(timeout())
    }

    /// `EVALSHA`, loading the script first if this process has not yet, and again if Redis lost it (`NOSCRIPT`).
    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        lua: Lua,
        keys: &[String],
        args: &[String],
    ) -> Result<T, RedisError> {
        let sha = match self.sha(lua).get() {
            Some(sha) => sha.clone(),
            None => self.load(conn, lua).await?,
        };
        match evalsha(&sha, keys, args).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let sha = self.load(conn, lua).await?;
                evalsha(&sha, keys, args).query_async(conn).await
            }
            other => other,
        }
    }

    pub(super) async fn load(&self, conn: &mut MultiplexedConnection, lua: Lua) -> Result<String, RedisError> {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(lua.source()).query_async(conn).await?;
        // Racing loaders all get the same SHA, so losing the `set` race is fine.
        let _ = self.sha(lua).set(sha.clone());
        Ok(sha)
    }

    fn sha(&self, lua: Lua) -> &std::sync::OnceLock<String> {
        match lua {
            Lua::One => &self.inner.sha,
            Lua::All => &self.inner.sha_all,
        }
    }
}

fn evalsha(sha: &str, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// Splits driver errors into "Redis is away, fall back" and "Redis answered something wrong".
fn classify(e: &RedisError, budget: Duration) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout { backend: BACKEND, after: budget };
    }
    let transient_server = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    // BUSY: another script is running too long; OOM: maxmemory reached. Both pass without our doing anything.
    let transient_code = matches!(e.code(), Some("BUSY" | "OOM"));
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::ClusterConnectionNotFound
        || transient_server
        || transient_code
    {
        StoreError::Unavailable { backend: BACKEND, detail: e.to_string() }
    } else {
        StoreError::Backend { backend: BACKEND, detail: e.to_string() }
    }
}
