//! The store chosen by configuration at start, as an enum so the hot path has no boxing or dynamic dispatch.

use bucket_core::Policy;

use crate::{DependencyHealth, MemoryStore, Outcome, Store, StoreError};

/// One of the configured backends; `bucket-api` holds this.
#[derive(Clone)]
pub enum AnyStore {
    /// In-process, one instance.
    Memory(MemoryStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn check(&self, key: &str, policy: &Policy, cost: u64) -> Result<Outcome, StoreError> {
        dispatch!(self, s => s.check(key, policy, cost).await)
    }

    async fn peek(&self, key: &str, policy: &Policy) -> Result<Outcome, StoreError> {
        dispatch!(self, s => s.peek(key, policy).await)
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.reset(key).await)
    }

    async fn policy(&self, key: &str) -> Result<Option<Policy>, StoreError> {
        dispatch!(self, s => s.policy(key).await)
    }

    async fn set_policy(&self, key: &str, policy: &Policy) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_policy(key, policy).await)
    }

    async fn delete_policy(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_policy(key).await)
    }

    async fn health(&self) -> Vec<DependencyHealth> {
        dispatch!(self, s => s.health().await)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.shutdown().await)
    }
}
