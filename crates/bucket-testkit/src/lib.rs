//! Helpers for tests that run against real PostgreSQL and Redis, and break them on purpose.
//!
//! Dev-only (`publish = false`): test code, so failing loudly (`expect`) on a broken environment is the point.
//! Every helper isolates its test (own schema, own key prefix, own server or proxy) and cleans up in `Drop`, so a
//! failing test leaves nothing behind for the next one.

//!
//! The server launchers ([`PrivatePostgres`], [`PrivateRedis`]) need nothing but std, so `cargo xtask` uses them
//! too, without the `stores` feature (on by default) that brings the store crates and their clients.

#[cfg(feature = "stores")]
pub mod caddy;
#[cfg(feature = "stores")]
pub mod fault_proxy;
#[cfg(feature = "stores")]
pub mod nginx;
#[cfg(feature = "stores")]
pub mod pg;
pub mod ports;
pub mod private_postgres;
pub mod private_redis;
pub mod process;
#[cfg(feature = "stores")]
pub mod proxy_process;
#[cfg(feature = "stores")]
pub mod redis_cluster;
#[cfg(feature = "stores")]
mod redis_cluster_form;
#[cfg(feature = "stores")]
pub mod redis_cluster_slots;
#[cfg(feature = "stores")]
pub mod redis_security;
#[cfg(feature = "stores")]
pub mod redis_sentinel;
#[cfg(feature = "stores")]
pub mod redis_server;
#[cfg(feature = "stores")]
pub mod snippets;
#[cfg(feature = "stores")]
pub mod tls;
#[cfg(feature = "stores")]
pub mod upstream;

#[cfg(feature = "stores")]
pub use caddy::Caddy;
#[cfg(feature = "stores")]
pub use fault_proxy::{Fault, FaultProxy};
#[cfg(feature = "stores")]
pub use nginx::Nginx;
#[cfg(feature = "stores")]
pub use pg::{database_url, redirect, RawRow, TestSchema};
pub use ports::{free_cluster_port, free_port};
pub use private_postgres::{PostgresOptions, PrivatePostgres};
pub use private_redis::{PrivateRedis, RedisOptions, RedisTls};
pub use process::LaunchError;
#[cfg(feature = "stores")]
pub use redis_cluster::{ClusterShape, RedisCluster};
#[cfg(feature = "stores")]
pub use redis_cluster_slots::ClusterNode;
#[cfg(feature = "stores")]
pub use redis_security::RedisSecurity;
#[cfg(feature = "stores")]
pub use redis_sentinel::RedisSentinelGroup;
#[cfg(feature = "stores")]
pub use redis_server::{unique_prefix, RedisPrefix, Shared};
#[cfg(feature = "stores")]
pub use snippets::SnippetAddrs;
#[cfg(feature = "stores")]
pub use upstream::CountingUpstream;

/// The Redis client the kit uses, so suites can talk to Redis without a dependency of their own.
#[cfg(feature = "stores")]
pub use deadpool_redis::redis;
