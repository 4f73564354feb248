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
