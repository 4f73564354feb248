//! The contract between the HTTP layer and every backend.

use std::future::Future;

use bucket_core::{Decision, Policy};

use crate::StoreError;

/// Which part of the system produced a decision: the `X-Data-Source` header and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The in-process store.
    Memory,
    /// Redis decided (the Lua script).
    Redis,
    /// PostgreSQL decided (the atomic statement), or loaded the bucket into Redis first.
    Postgres,
    /// The key was unknown: its row was created in this request.
    NewUser,
    /// Every backend was down and the configured failure mode (`fail_open`) allowed the request undecided.
    FailOpen,
    /// A refusal this process remembered answered, and no store was asked ([`RefusalCache`](crate::RefusalCache)).
    RefusalCache,
}

impl Source {
    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Redis => "redis",
            Source::Postgres => "postgres",
            Source::NewUser => "new-user",
            Source::FailOpen => "fail-open",
            Source::RefusalCache => "refusal-cache",
        }
    }
}

/// A decision and who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The answer, with everything the headers need.
    pub decision: Decision,
    /// The backend that served it.
    pub source: Source,
}

/// One bucket of a request that several limits decide together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit<'a> {
    /// The bucket's key; limits naming the same key share its bucket, and their costs add up.
    pub key: &'a str,
    /// The bucket's limits (for a key named twice, the first limit's policy is the bucket's).
    pub policy: Policy,
    /// Tokens this limit takes.
    pub cost: u64,
}

/// Several limits decided together: all taken, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcomes {
    /// Every bucket had its cost and every cost was taken; when false, no bucket was debited.
    pub allowed: bool,
    /// One per limit, in the order given. `decision.allowed` says whether that bucket on its own had the tokens
    /// (so a caller can tell which limit refused); when `allowed` is false, `remaining` etc. show the bucket untouched.
    pub decisions: Vec<Decision>,
    /// Who decided (one source for the whole request).
    pub source: Source,
}

/// One dependency's reachability, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyHealth {
    /// `memory`, `redis` or `postgres`.
    pub name: &'static str,
    /// Whether it answered just now.
    pub up: bool,
    /// What it said, or why it is considered down.
    pub detail: String,
    /// The servers behind it, each probed on its own (Redis Cluster nodes; the master, replicas and sentinels of
    /// a Sentinel group); empty for a dependency that is one server.
    pub nodes: Vec<NodeHealth>,
}

/// One server behind a dependency, so an operator sees which node is down rather than only that one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// `host:port`, as the cluster or the sentinels name it.
    pub addr: String,
    /// What the server does in its group.
    pub role: NodeRole,
    /// Whether it answered the probe just now (a sentinel-reported replica: whether the sentinels see it up).
    pub up: bool,
    /// What it answered, or why it counts as down.
    pub detail: String,
}

/// The part a server plays in a replicated Redis: a label of `bucket_dependency_up` and a field of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// Serves writes (a cluster master owning slots, or the master the sentinels name).
    Master,
    /// Copies a master and takes over when it fails.
    Replica,
    /// Watches the master and elects a replica when it fails.
    Sentinel,
}

impl NodeRole {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Replica => "replica",
            NodeRole::Sentinel => "sentinel",
        }
    }
}

/// A place that keeps buckets and decides checks on them atomically: what deciding needs.
///
/// Methods return `Send` futures so stores can be used from any runtime thread; the set is kept narrow so that
/// every adapter implements all of it. Policy administration is the separate [`PolicyStore`], so a cache of one
/// never has to pass the other through.
pub trait Store: Send + Sync {
    /// Refills, and takes `cost` tokens if they are there, as one atomic step. A refused check writes nothing.
    fn check(&self, key: &str, policy: &Policy, cost: u64) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Decides several limits as one atomic step, all or nothing: every bucket is debited its cost, or (when any
    /// bucket lacks its cost) none is, not even refilled. Limits naming one key share its bucket and their costs add
    /// up (the bucket is decided once, with the sum, and each of those limits reports that decision); a cost above
    /// the capacity refuses the request with [`Wait::Never`](bucket_core::Wait::Never) on that limit; no limits is
    /// allowed with no decisions; one limit is exactly [`Store::check`].
    ///
    /// Atomic across keys in every store: the memory store holds a lock bit per key (taken in key order), Redis
    /// runs one script over all the keys (in Redis Cluster they must share a hash slot), PostgreSQL locks the rows
    /// in key order in one transaction, and the tiered store does the same through both tiers. The one `source`
    /// is `NewUser` when a bucket was created by the request (tiered: `Postgres` first, when a bucket was loaded from
    /// its row), else the backend that decided; a [`RefusalCache`](crate::RefusalCache) may answer a refusal alone.
    fn check_all(&self, limits: &[Limit<'_>]) -> impl Future<Output = Result<Outcomes, StoreError>> + Send;

    /// The bucket as a check would see it now, taking nothing.
    fn peek(&self, key: &str, policy: &Policy) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Forgets the bucket, which is the same as filling it.
    fn reset(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reachability of each dependency, for `/readyz`.
    fn health(&self) -> impl Future<Output = Vec<DependencyHealth>> + Send;

    /// Flushes anything buffered (write-behind queues) before the process exits.
    fn shutdown(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// Where operators' per-key policies live: what policy administration (and the policy cache) needs.
pub trait PolicyStore: Send + Sync {
    /// The per-key policy set by an operator, if any.
    fn policy(&self, key: &str) -> impl Future<Output = Result<Option<Policy>, StoreError>> + Send;

    /// Sets a per-key policy; the bucket's current tokens are kept.
    fn set_policy(&self, key: &str, policy: &Policy) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a per-key policy; `false` when there was none.
    fn delete_policy(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A number that changes whenever any per-key policy is set or deleted, so a cache can tell in one cheap read
    /// whether its copy of [`all_policies`](PolicyStore::all_policies) is still current.
    fn policy_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every per-key policy, for a cache that answers look-ups from memory; read the version first, then this.
    fn all_policies(&self) -> impl Future<Output = Result<Vec<(String, Policy)>, StoreError>> + Send;
}
