//! bucket's HTTP service as a library: configuration, routes, headers and metrics wired to `bucket-store`.
//!
//! It holds no rate-limit logic: handlers extract, ask the store, and hand the [`bucket_store::Outcome`] to
//! `headers.rs`, the one place a decision becomes an HTTP answer. `main.rs` only parses arguments and calls
//! [`start`]; tests call [`build_app`] or [`start`] the same way.

// The gateway front awaits `AnyStore::check_all`, whose future nests the refusal cache, the tiered store and both
// tiers' futures: its layout is deeper than rustc's default query depth of 128 (clippy hits it first).
#![recursion_limit = "256"]

pub mod auth;
pub mod config;
pub mod config_env;
mod config_print;
pub mod decision_json;
pub mod error;
pub mod failure_mode;
pub mod headers;
pub mod identity;
pub mod log_throttle;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod rls;
pub mod routes;
pub mod server;
pub mod state;
pub mod store_metrics;
pub mod stores;

pub use config::Config;
pub use routes::build_app;
pub use server::{start, Running, StartError};
pub use state::AppState;
