//! Where buckets live: one narrow async trait for deciding ([`Store`]), one for per-key policies
//! ([`PolicyStore`]), and one file per backend.
//!
//! Every adapter makes read-refill-consume-write one atomic step, so N concurrent checks on a full bucket of
//! capacity C are allowed exactly C times (plus what refills meanwhile), from any number of API instances. Several
//! limits of one request ([`Store::check_all`]) are one atomic step too: every bucket debited, or none.

mod any;
mod error;
pub mod invalidation;
mod key;
mod limits;
mod memory;
mod millis;
mod policy_cache;
pub mod postgres;
pub mod redact;
pub mod redis;
mod refusal_cache;
mod shared;
mod store;
pub mod tiered;
mod versioned;
mod write_queue;

pub use any::AnyStore;
pub use error::StoreError;
pub use key::{Key, KeyError};
pub use memory::{MemoryStore, TscClock};
pub use policy_cache::CachedPolicies;
pub use refusal_cache::RefusalCache;
pub use shared::{CacheSettings, Shared};
pub use store::{DependencyHealth, Limit, NodeHealth, NodeRole, Outcome, Outcomes, PolicyStore, Source, Store};
pub use versioned::{Decided, PendingWrite, VersionedState};
