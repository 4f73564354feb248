//! The one error type at bucket-store's boundary.

use std::time::Duration;

/// Why a store could not answer; [`StoreError::is_transient`] is what fallback logic reads.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or dropped the connection: retry or fall back.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        /// `redis` or `postgres`.
        backend: &'static str,
        /// What the driver said.
        detail: String,
    },
    /// The backend did not answer within the configured timeout: retry or fall back.
    #[error("{backend} did not answer within {after:?}")]
    Timeout {
        /// `redis` or `postgres`.
        backend: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The backend answered with something we cannot use (corrupt state, failed migration): not fixed by retrying.
    #[error("{backend} failed: {detail}")]
    Backend {
        /// `redis` or `postgres`.
        backend: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A stored policy is not a valid policy (edited by hand?).
    #[error("stored policy for this key is invalid: {0}")]
    InvalidPolicy(#[from] bucket_core::PolicyError),
}

impl StoreError {
    /// Whether another backend or a later retry may succeed where this one failed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Timeout { .. })
    }
}
