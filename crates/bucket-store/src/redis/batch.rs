//! Several commands sent as one call: a pipeline on one server, but not in a cluster, where a pipeline may only
//! touch one hash slot (redis-rs refuses a cross-slot pipeline). There each command goes to its own slot's node,
//! in order when the order matters (a policy write bumps the version last), all at once when it does not.

use std::future::Future;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{self, RedisResult, Value};
use futures::future::{try_join_all, BoxFuture, FutureExt};

/// Commands for one call, each with whether its reply is part of the result (as `Pipeline::ignore`).
pub(super) struct Batch {
    commands: Vec<(redis::Cmd, bool)>,
    ordered: bool,
}

impl Batch {
    /// Commands applied in the order given, on every topology.
    pub(super) fn ordered() -> Self {
        Self { commands: Vec::new(), ordered: true }
    }

    /// Commands whose relative order does not matter (independent keys): concurrent in a cluster.
    pub(super) fn unordered() -> Self {
        Self { commands: Vec::new(), ordered: false }
    }

    /// Adds `cmd`; its reply is part of the result.
    pub(super) fn add(&mut self, cmd: redis::Cmd) -> &mut Self {
        self.commands.push((cmd, true));
        self
    }

    /// Adds `cmd`; its reply is dropped (an error reply still fails the call).
    pub(super) fn add_ignored(&mut self, cmd: redis::Cmd) -> &mut Self {
        self.commands.push((cmd, false));
        self
    }

    /// The replies kept, as one array, from replies to every command.
    fn kept(&self, replies: Vec<Value>) -> Value {
        Value::Array(self.commands.iter().zip(replies).filter(|((_, keep), _)| *keep).map(|(_, v)| v).collect())
    }
}

/// How a connection runs a [`Batch`] and a command meant for one node.
pub(super) trait RunBatch {
    /// Runs every command of `batch`; the kept replies as one array.
    fn run_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, RedisResult<Value>>;

    /// Runs `cmd` on the one server (without the boxed future of `ConnectionLike::req_packed_command`: one
    /// allocation less per decision, docs/perf.md §9), or on the node of its key (a cluster).
    fn run_cmd<'a>(&'a mut self, cmd: &'a redis::Cmd) -> impl Future<Output = RedisResult<Value>> + Send + 'a;

    /// Runs `cmd` on the node at `host:port` (a cluster), or on the one server.
    fn run_at<'a>(&'a mut self, cmd: &'a redis::Cmd, host: &'a str, port: u16) -> BoxFuture<'a, RedisResult<Value>>;
}

impl RunBatch for MultiplexedConnection {
    fn run_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, RedisResult<Value>> {
        async move {
            let mut pipe = redis::pipe();
            for (cmd, keep) in &batch.commands {
                pipe.add_command(cmd.clone());
                if !keep {
                    pipe.ignore();
                }
            }
            pipe.query_async(self).await
        }
        .boxed()
    }

    fn run_at<'a>(&'a mut self, cmd: &'a redis::Cmd, _: &'a str, _: u16) -> BoxFuture<'a, RedisResult<Value>> {
        async move { self.req_packed_command(cmd).await }.boxed()
    }

    fn run_cmd<'a>(&'a mut self, cmd: &'a redis::Cmd) -> impl Future<Output = RedisResult<Value>> + Send + 'a {
        self.send_packed_command(cmd)
    }
}

impl RunBatch for ClusterConnection {
    fn run_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, RedisResult<Value>> {
        async move {
            let replies = if batch.ordered {
                let mut replies = Vec::with_capacity(batch.commands.len());
                for (cmd, _) in &batch.commands {
                    replies.push(self.req_packed_command(cmd).await?);
                }
                replies
            } else {
                // Clones share the cluster connection's nodes: every command is in flight at once.
                try_join_all(batch.commands.iter().map(|(cmd, _)| {
                    let mut conn = self.clone();
                    async move { conn.req_packed_command(cmd).await }
                }))
                .await?
            };
            Ok(batch.kept(replies))
        }
        .boxed()
    }

    fn run_cmd<'a>(&'a mut self, cmd: &'a redis::Cmd) -> impl Future<Output = RedisResult<Value>> + Send + 'a {
        self.req_packed_command(cmd)
    }

    fn run_at<'a>(&'a mut self, cmd: &'a redis::Cmd, host: &'a str, port: u16) -> BoxFuture<'a, RedisResult<Value>> {
        let node = SingleNodeRoutingInfo::ByAddress { host: host.to_owned(), port };
        async move { self.route_command(cmd.clone(), RoutingInfo::SingleNode(node)).await }.boxed()
    }
}
