//! The gateway front: Envoy's rate limit service protocol (gRPC, and JSON over HTTP) deciding
//! envoyproxy/ratelimit-format limits (`bucket-limits`), several per request, all or nothing.
//!
//! `request.rs` is what a request must look like, `decide.rs` how one is decided, `grpc.rs` the protobuf mapping,
//! `grpc_server.rs` the listener, `reload.rs` what a limits reload reports; the JSON mapping is the route
//! `routes/ratelimit.rs`.

pub mod config;
pub mod decide;
pub mod grpc;
pub mod grpc_server;
pub mod reload;
pub mod request;
pub mod series;
