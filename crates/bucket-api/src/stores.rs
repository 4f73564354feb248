//! Builds the configured store: the one function to extend when PostgreSQL, Redis and tiered are wired in.

use std::time::Duration;

use bucket_store::{AnyStore, MemoryStore};
use slog::{info, Logger};

use crate::config::{Config, StoreKind};
use crate::server::StartError;

/// The store `config.store` names, connected and ready, with its background tasks (the memory evictor) running on
/// the current tokio runtime.
pub async fn build_store(config: &Config, log: &Logger) -> Result<AnyStore, StartError> {
    match config.store {
        StoreKind::Memory => {
            let store = MemoryStore::new();
            // The evictor holds only a weak reference and ends by itself once the store is dropped.
            drop(store.spawn_evictor(Duration::from_millis(config.evict_interval_ms)));
            info!(log, "store ready"; "store" => "memory", "evict_interval_ms" => config.evict_interval_ms);
            Ok(AnyStore::Memory(store))
        }
        other => Err(StartError::StoreNotAvailable(other.as_str())),
    }
}
