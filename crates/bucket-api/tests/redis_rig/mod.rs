//! An app over a replicated Redis of the test kit (a cluster or a sentinel group), and readers for the `nodes` of
//! its `/readyz`.
#![allow(dead_code)] // each suite uses a different subset

use std::time::Duration;

use actix_web::web;
use bucket_api::{AppState, Config};
use bucket_store::redis::{RedisConfig, RedisStore};
use bucket_store::{AnyStore, CacheSettings};
use serde_json::Value;

/// State over a Redis store configured as `redis` says (cluster or sentinel mode), logging nowhere.
pub fn state_over(redis: RedisConfig) -> web::Data<AppState> {
    let store = AnyStore::redis(RedisStore::connect(redis).expect("valid configuration"), CacheSettings::default());
    let log = slog::Logger::root(slog::Discard, slog::o!());
    web::Data::new(AppState::new(Config { workers: 1, ..Config::default() }, store, log).expect("valid config"))
}

/// The kit's store configuration for `url` in `mode`, with bounds short enough for a test that kills nodes.
pub fn redis_config(url: &str, mode: bucket_store::redis::RedisMode) -> RedisConfig {
    let mut config = bucket_testkit::redis_server::config(url);
    config.mode = mode;
    config.command_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_secs(1);
    config
}

/// `(addr, role, up)` of every node of the `redis` dependency in a `/readyz` body.
pub fn nodes(readyz: &Value) -> Vec<(String, String, bool)> {
    readyz["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .find(|dependency| dependency["name"] == "redis")
        .and_then(|redis| redis["nodes"].as_array())
        .map(|nodes| {
            nodes
                .iter()
                .map(|node| {
                    let text = |field: &str| node[field].as_str().expect("a string field").to_owned();
                    (text("addr"), text("role"), node["up"].as_bool().expect("up"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses of the nodes with this role (and this `up`), sorted.
pub fn addrs(nodes: &[(String, String, bool)], role: &str, up: bool) -> Vec<String> {
    let mut addrs: Vec<String> =
        nodes.iter().filter(|(_, r, u)| r == role && *u == up).map(|(addr, _, _)| addr.clone()).collect();
    addrs.sort();
    addrs
}

/// `127.0.0.1:<port>` for each port, sorted.
pub fn loopback(ports: impl IntoIterator<Item = u16>) -> Vec<String> {
    let mut addrs: Vec<String> = ports.into_iter().map(|port| format!("127.0.0.1:{port}")).collect();
    addrs.sort();
    addrs
}
