//! The one place a Redis call is made: leasing a shared connection, the per-call deadline, dropping broken
//! connections, and sorting driver errors into transient and permanent.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{self, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use tokio::time::{timeout_at, Instant};

use super::batch::{Batch, RunBatch};
use super::connections::{ConnectFailure, Connections, Lease};
use super::script::Lua;
use super::topology::Conns;
use super::{RedisStore, BACKEND};
use crate::StoreError;

/// One unit of work on a shared connection, so that leasing, deadline and error handling live in one place.
pub(super) enum Op<'a> {
    Cmd(&'a redis::Cmd),
    /// Several commands: one pipeline on one server, one command per slot in a cluster (`batch.rs`).
    Batch(&'a Batch),
    Script {
        lua: Lua,
        args: &'a dyn ScriptArgs,
    },
    /// A command for the cluster node at `host:port` (`SCAN` visits each master); on one server, the command.
    At(&'a redis::Cmd, &'a str, u16),
}

/// The keys and arguments of one script run, written straight into its command, so a run needs no `String` per
/// argument (docs/perf.md §9). Written again only if the first `EVALSHA` answers `NOSCRIPT`.
pub(super) trait ScriptArgs: Sync {
    /// How many of the written arguments are keys (written first).
    fn keys(&self) -> usize;
    /// Writes the keys, then the arguments.
    fn write(&self, cmd: &mut redis::Cmd);
    /// How many arguments [`ScriptArgs::write`] writes and at most how many bytes, to size the command once.
    fn size(&self) -> (usize, usize);
    /// Whether this run only reads (`token_bucket.lua`'s peek mode), so it never waits for replicas.
    fn peek(&self) -> bool {
        false
    }
}

/// Keys and arguments already formatted: the multi-key and maintenance scripts, off the one-bucket path.
pub(super) struct Strings<'a> {
    /// The keys.
    pub(super) keys: &'a [String],
    /// The arguments.
    pub(super) args: &'a [String],
}

impl ScriptArgs for Strings<'_> {
    fn keys(&self) -> usize {
        self.keys.len()
    }

    fn write(&self, cmd: &mut redis::Cmd) {
        cmd.arg(self.keys).arg(self.args);
    }

    fn size(&self) -> (usize, usize) {
        let bytes = self.keys.iter().chain(self.args).map(String::len).sum();
        (self.keys.len() + self.args.len(), bytes)
    }
}

/// What `exec` needs of a connection: plain and cluster connections both carry every kind of [`Op`].
pub(super) trait Conn: ConnectionLike + RunBatch + Clone + Send + Sync + 'static {}

impl<C: ConnectionLike + RunBatch + Clone + Send + Sync + 'static> Conn for C {}

impl RedisStore {
    /// Leases a connection and runs `op` on it, all before `budget` runs out. Other calls share the connection
    /// meanwhile; this call's deadline is its own.
    pub(super) async fn exec<T: FromRedisValue>(&self, op: Op<'_>, budget: Duration) -> Result<T, StoreError> {
        match &self.inner.connections {
            Conns::Single(connections) => self.exec_on(connections, op, budget).await,
            Conns::Cluster(connections) => self.exec_on(connections, op, budget).await,
        }
    }

    async fn exec_on<C: Conn, T: FromRedisValue>(
        &self,
        connections: &Arc<Connections<C>>,
        op: Op<'_>,
        budget: Duration,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + budget;
        let mut lease = self.lease(connections, deadline, budget).await?;
        let result = timeout_at(deadline, async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut lease.conn).await,
                Op::Batch(batch) => {
                    let value = lease.conn.run_batch(batch).await?;
                    T::from_redis_value(value).map_err(RedisError::from)
                }
                Op::Script { lua, args } => self.eval(&mut lease.conn, lua, args).await,
                Op::At(cmd, host, port) => {
                    let value = lease.conn.run_at(cmd, host, port).await?;
                    T::from_redis_value(value).map_err(RedisError::from)
                }
            }
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // A broken or stalled connection is replaced; one that carried a server error reply (BUSY,
                // LOADING, a script error) is in sync and keeps serving. READONLY means the server was demoted
                // to a replica (a Sentinel failover): a new connection asks the sentinels for the new master.
                let demoted = e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || demoted {
                    connections.discard(&lease);
                }
                Err(classify(&e, budget))
            }
            Err(_) => {
                // No reply within the deadline: the connection may be stalled, so later calls get a new one. The
                // late reply, if any, is matched to this abandoned request by redis-rs and dropped.
                connections.discard(&lease);
                Err(StoreError::Timeout { backend: BACKEND, after: budget })
            }
        }
    }

    /// A lease on a shared connection before `deadline`. One that sat idle is probed first and, if the probe
    /// fails, replaced once: a server or proxy may close idle connections, and a check should not find out.
    async fn lease<'c, C: Conn>(
        &self,
        connections: &'c Arc<Connections<C>>,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Lease<'c, C>, StoreError> {
        let timeout = || StoreError::Timeout { backend: BACKEND, after: budget };
        for first in [true, false] {
            let mut lease = match timeout_at(deadline, connections.acquire()).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(ConnectFailure::TimedOut)) | Err(_) => return Err(timeout()),
                Ok(Err(ConnectFailure::Failed(e))) => return Err(classify(&e, budget)),
            };
            if !(first && lease.idle) {
                return Ok(lease);
            }
            match timeout_at(deadline, redis::cmd("PING").query_async::<()>(&mut lease.conn)).await {
                Ok(Ok(())) => return Ok(lease),
                _ => connections.discard(&lease),
            }
        }
        Err(timeout())
    }

    /// `EVALSHA`, loading the script first if this process has not yet, and again if Redis lost it (`NOSCRIPT`).
    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        conn: &mut impl Conn,
        lua: Lua,
        args: &dyn ScriptArgs,
    ) -> Result<T, RedisError> {
        // In a cluster `SCRIPT LOAD` goes to every node and fails while one is unreachable (a master just killed,
        // not yet out of the slot map): then `EVAL` runs the script, and caches it, on the node serving the keys.
        let cluster = matches!(self.inner.connections, Conns::Cluster(_));
        let loaded;
        let sha: &str = match self.sha(lua).get() {
            Some(sha) => sha,
            None => match self.load(conn, lua).await {
                Ok(sha) => {
                    loaded = sha;
                    &loaded
                }
                Err(_) if cluster => return script_cmd("EVAL", lua.source(), args).query_async(conn).await,
                Err(e) => return Err(e),
            },
        };
        if self.waits(lua, args) {
            return self.eval_and_wait(conn, lua, sha, args).await;
        }
        match query(conn, &script_cmd("EVALSHA", sha, args)).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => match self.load(conn, lua).await {
                Ok(sha) => script_cmd("EVALSHA", &sha, args).query_async(conn).await,
                Err(_) if cluster => script_cmd("EVAL", lua.source(), args).query_async(conn).await,
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// Whether this script run must wait for replicas: a decision script that may write (not a peek, not a
    /// refund, which only gives tokens back, nor a drop, which only forgets), with `wait_replicas` set.
    fn waits(&self, lua: Lua, args: &dyn ScriptArgs) -> bool {
        self.inner.wait_replicas > 0
            && match lua {
                Lua::One => !args.peek(),
                Lua::All => true,
                Lua::Refund | Lua::DropOlder => false,
            }
    }

    /// `EVALSHA` then `WAIT n` in one pipeline, so both reach the same node on the same connection and the WAIT
    /// covers the script's write. An allowed decision (reply code 1) that fewer than `n` replicas acknowledged is a
    /// transient error: the caller must not count on a grant a failover could undo.
    async fn eval_and_wait<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
        lua: Lua,
        sha: &str,
        args: &dyn ScriptArgs,
    ) -> Result<T, RedisError> {
        let wait_ms = (self.inner.command_timeout.as_millis() * 3 / 4).max(1) as u64;
        let pipe = |sha: &str| {
            let mut pipe = redis::pipe();
            pipe.add_command(script_cmd("EVALSHA", sha, args)).cmd("WAIT").arg(self.inner.wait_replicas).arg(wait_ms);
            pipe
        };
        let (reply, acked): (redis::Value, u32) = match pipe(sha).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let sha = self.load(conn, lua).await?;
                pipe(&sha).query_async(conn).await?
            }
            other => other?,
        };
        let allowed =
            matches!(&reply, redis::Value::Array(items) if matches!(items.first(), Some(redis::Value::Int(1))));
        if allowed && acked < self.inner.wait_replicas {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::MasterDown),
                "too few replicas acknowledged the decision",
                format!("{acked} of {} within {wait_ms} ms", self.inner.wait_replicas),
            )));
        }
        T::from_redis_value(reply).map_err(RedisError::from)
    }

    /// `SCRIPT LOAD`: on one server, that server; in a cluster redis-rs sends it to every node, so a node that
    /// answered `NOSCRIPT` (restarted, or a replica promoted) has it afterwards, as do all the others.
    pub(super) async fn load(&self, conn: &mut impl ConnectionLike, lua: Lua) -> Result<String, RedisError> {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(lua.source()).query_async(conn).await?;
        // Racing loaders all get the same SHA, so losing the `set` race is fine.
        let _ = self.sha(lua).set(sha.clone());
        Ok(sha)
    }

    fn sha(&self, lua: Lua) -> &std::sync::OnceLock<String> {
        match lua {
            Lua::One => &self.inner.sha,
            Lua::All => &self.inner.sha_all,
            Lua::Refund => &self.inner.sha_refund,
            Lua::DropOlder => &self.inner.sha_drop_older,
        }
    }
}

/// `EVALSHA sha` or `EVAL source`, then the keys and arguments, in a command sized once.
fn script_cmd(name: &str, script: &str, args: &dyn ScriptArgs) -> redis::Cmd {
    let (count, bytes) = args.size();
    let mut cmd = redis::Cmd::with_capacity(3 + count, name.len() + script.len() + 4 + bytes);
    cmd.arg(name).arg(script).arg(args.keys());
    args.write(&mut cmd);
    cmd
}

/// `cmd`'s reply as a `T`, as `Cmd::query_async` gives it, through [`RunBatch::run_cmd`](super::batch::RunBatch).
async fn query<T: FromRedisValue>(conn: &mut impl Conn, cmd: &redis::Cmd) -> Result<T, RedisError> {
    let value = conn.run_cmd(cmd).await?;
    Ok(redis::from_redis_value(value.extract_error()?)?)
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
        // The sentinels name no reachable master: a failover in progress (or a wrong name, which /readyz shows).
        || e.kind() == ErrorKind::MasterNameNotFoundBySentinel
        || transient_server
        || transient_code
    {
        StoreError::Unavailable { backend: BACKEND, detail: e.to_string() }
    } else {
        StoreError::Backend { backend: BACKEND, detail: e.to_string() }
    }
}
