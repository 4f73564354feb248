//! Helpers shared by the integration suites: an app on a manual clock, and readers for headers and metrics.
#![allow(dead_code)] // each suite uses a different subset

use std::sync::Arc;

use actix_web::dev::ServiceResponse;
use actix_web::web;
use bucket_api::{AppState, Config};
use bucket_core::ManualClock;
use bucket_store::{AnyStore, MemoryStore};

/// State over a memory store on `clock`, logging nowhere.
pub fn state(config: Config, clock: &ManualClock) -> web::Data<AppState> {
    let store = AnyStore::Memory(MemoryStore::with_clock(Arc::new(clock.clone())));
    let log = slog::Logger::root(slog::Discard, slog::o!());
    web::Data::new(AppState::new(config, store, log).expect("valid test configuration"))
}

/// The defaults (capacity 10, 1 token/s) with one worker.
pub fn config() -> Config {
    Config { workers: 1, ..Config::default() }
}

/// A header's value as text; panics with the header's name when absent, so a failing test says which.
pub fn header<B>(res: &ServiceResponse<B>, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .expect("ASCII header")
        .to_string()
}

/// A header parsed as an integer.
pub fn header_u64<B>(res: &ServiceResponse<B>, name: &str) -> u64 {
    header(res, name).parse().unwrap_or_else(|_| panic!("header {name} is not an integer"))
}

/// The integer parameter `param` (`r`, `t`, `q`, `w`) of a structured-field header like `"default";r=3;t=1`.
pub fn sf_param(value: &str, param: &str) -> u64 {
    value
        .split(';')
        .filter_map(|part| part.split_once('='))
        .find(|(k, _)| *k == param)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer parameter {param} in {value:?}"))
}

/// The value of the sample `name{labels...}` in a Prometheus text exposition, whatever the label order.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = metric_name == name
            && labels.iter().all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if wanted {
            value.parse().ok()
        } else {
            None
        }
    })
}
