pub mod cases;
pub mod pg;
pub mod redis_proxy;
pub mod redis_server;
