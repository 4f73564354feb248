pub mod cases;
pub mod failover_load;
pub mod pg;
pub mod redis_proxy;
pub mod redis_server;
