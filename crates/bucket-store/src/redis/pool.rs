//! The connection pool and the one place a Redis call is made: checkout, deadline, discarding broken
//! connections, and sorting driver errors into transient and permanent.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use tokio::time::{timeout_at, Instant};

use super::script::Lua;
use super::{RedisStore, BACKEND};
use crate::StoreError;

/// A pooled connection that has been idle at least this long is probed (`PING`) before reuse: the server or a
/// proxy may have closed it meanwhile.
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// deadpool-redis's manager without its `UNWATCH`+`PING` round trip on every checkout, which doubled the round trips
/// of every check (measured with `INFO commandstats` in `cargo xtask bench`). The probe is redundant on a busy
/// pool: `exec` discards every connection that saw an I/O error or a timeout, so one that came back to the pool
/// had just worked. Connections idle for [`IDLE_PROBE`] or longer are still probed.
pub(super) struct Manager {
    pub(super) inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        managed::Manager::create(&self.inner).await
    }

    async fn recycle(&self, conn: &mut MultiplexedConnection, metrics: &Metrics) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_PROBE {
            return Ok(());
        }
        managed::Manager::recycle(&self.inner, conn, metrics).await
    }
}

pub(super) type Pool = managed::Pool<Manager>;
pub(super) type PoolError = managed::PoolError<RedisError>;
pub(super) type Connection = managed::Object<Manager>;

/// One unit of work on a pooled connection, so that checkout, deadline and error handling live in one place.
pub(super) enum Op<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
    Script { lua: Lua, keys: &'a [String], args: &'a [String] },
}

impl RedisStore {
    /// Checks out a connection and runs `op`, all before `budget` runs out.
    pub(super) async fn exec<T: FromRedisValue>(&self, op: Op<'_>, budget: Duration) -> Result<T, StoreError> {
        let deadline = Instant::now() + budget;
        let timeout = StoreError::Timeout { backend: BACKEND, after: budget };
        let mut conn = match timeout_at(deadline, self.inner.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(PoolError::Timeout(_))) | Err(_) => return Err(timeout),
            Ok(Err(PoolError::Backend(e))) => return Err(classify(&e, budget)),
            Ok(Err(PoolError::Closed)) => {
                return Err(StoreError::Unavailable { backend: BACKEND, detail: "connection pool closed".into() })
            }
            Ok(Err(e)) => return Err(StoreError::Backend { backend: BACKEND, detail: e.to_string() }),
        };
        let result = timeout_at(deadline, async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut *conn).await,
                Op::Pipe(pipe) => pipe.query_async(&mut *conn).await,
                Op::Script { lua, keys, args } => self.eval(&mut conn, lua, keys, args).await,
            }
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // A broken or timed-out connection is replaced; one that carried a server error reply (BUSY,
                // LOADING, a script error) is in sync and goes back to the pool.
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    discard(conn);
                }
                Err(classify(&e, budget))
            }
            Err(_) => {
                // A reply may still be on its way: this connection must not serve another caller.
                discard(conn);
                Err(timeout)
            }
        }
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

/// Takes the connection out of the pool for good (dropping it closes the socket).
fn discard(conn: Connection) {
    drop(Connection::take(conn));
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
