//! Helpers for tests that run against real PostgreSQL and Redis, and break them on purpose.
//!
//! Dev-only (`publish = false`): test code, so failing loudly (`expect`) on a broken environment is the point.
//! Every helper isolates its test (own schema, own key prefix, own server or proxy) and cleans up in `Drop`, so a
//! failing test leaves nothing behind for the next one.

pub mod caddy;
pub mod fault_proxy;
pub mod nginx;
pub mod pg;
pub mod ports;
pub mod proxy_process;
pub mod redis_server;
pub mod snippets;
pub mod tls;
pub mod upstream;

pub use caddy::Caddy;
pub use fault_proxy::{Fault, FaultProxy};
pub use nginx::Nginx;
pub use pg::{database_url, redirect, RawRow, TestSchema};
pub use ports::free_port;
pub use redis_server::{unique_prefix, PrivateRedis, RedisPrefix, Shared};
pub use snippets::SnippetAddrs;
pub use upstream::CountingUpstream;

/// The Redis client the kit uses, so suites can talk to Redis without a dependency of their own.
pub use deadpool_redis::redis;
