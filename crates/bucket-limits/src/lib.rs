//! envoyproxy/ratelimit's limits files for bucket: the same YAML, read into typed rules, matched against a
//! request's descriptors, and reloaded when the files change.
//!
//! - `schema.rs`: the YAML as written (unknown keys refused, with line:column).
//! - `build.rs`: validation into a per-domain tree (`tree.rs`) of [`Rule`]s, each with its [`bucket_core::Policy`].
//! - `resolve.rs`: [`Limits::resolve`], upstream's matching order and `replaces`; `key.rs`: the bucket key;
//!   `wildcard.rs`: `*` in values.
//! - `load.rs`: which files a path means; `live.rs`: [`LiveLimits`], the watched, atomically swapped set.
//!
//! No I/O happens on the request path: [`LiveLimits::current`] is one atomic load, [`Limits::resolve`] walks
//! in-memory maps.
//!
//! Where bucket deliberately differs from envoyproxy/ratelimit:
//! - A rule is a token bucket (capacity `requests_per_unit`, or `burst`; refilled at `requests_per_unit` per
//!   `unit`), not a fixed window: the same long-run rate, no double burst at a window edge.
//! - A missing `requests_per_unit` is refused (upstream reads it as 0); an explicit 0 still refuses every request.
//! - Keys are checked per block: a known key in the wrong block (`unit` beside `key`) is refused; `unit` with
//!   `unlimited` is refused whatever its text; `quota_mode` is refused; `MERGE_DOMAIN_CONFIG` does not exist.
//! - Entries are matched on (key, value), never on upstream's `key_value` string, so keys or values holding `_`
//!   cannot collide, and a `*` in a key is literal (upstream treats it as a wildcard over `key_value`).
//! - The bucket key is length-prefixed (`key.rs`), hashed past 255 bytes; the metric label is the rule's name when
//!   it has one.
//! - A directory means its `*.yaml`/`*.yml` files, hidden entries skipped (upstream's loader reads every file under
//!   its directory, hidden ones too unless `RUNTIME_IGNOREDOTFILES=true`).

mod build;
mod error;
mod key;
mod limits;
mod live;
mod load;
mod resolve;
mod rule;
mod schema;
mod tree;
mod unit;
mod wildcard;

pub use error::LimitsError;
pub use key::MAX_KEY_BYTES;
pub use limits::Limits;
pub use live::{LiveLimits, ReloadOutcome, DEBOUNCE};
pub use resolve::{Descriptor, Matched};
pub use rule::{Action, Rule};
pub use unit::Unit;
