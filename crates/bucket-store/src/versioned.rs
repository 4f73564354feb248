//! What the tiered store copies between Redis and PostgreSQL: a state with the version that orders its writes.

use bucket_core::{full_at, BucketState, Decision, Policy};

/// A bucket state and its version; every allowed decision increments the version, and a write carrying a lower
/// or equal version than the stored one is discarded, so an older state never overwrites a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionedState {
    /// The stored `(tokens, last_refill_us)`.
    pub state: BucketState,
    /// Monotonic per key: bumped by each allowed decision, in whichever tier made it.
    pub version: u64,
}

/// A decision together with the exact state it left behind, for the tier that did not make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The answer.
    pub decision: Decision,
    /// The state after the decision (unchanged, same version, when refused).
    pub after: VersionedState,
    /// Whether this decision created the key (PostgreSQL inserted the row / the key was seeded as new).
    pub created: bool,
}

/// A state on its way to PostgreSQL with the instant its bucket is full again, which the row's `full_at` records
/// so that the pruner can forget the row once it has passed (`postgres/prune.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingWrite {
    /// The state and version to write.
    pub after: VersionedState,
    /// `bucket_core::full_at` of the state under the policy that decided it, in µs since the epoch.
    pub full_at_us: u64,
}

impl PendingWrite {
    /// `after` as decided under `policy`.
    pub fn new(policy: &Policy, after: VersionedState) -> Self {
        Self { after, full_at_us: full_at(policy, after.state) }
    }

    /// Whether this write must replace `older` for the same key: a higher version, or a write from a later run of
    /// versions. A key whose bucket refilled was dropped (Redis expired it, the pruner deleted its row) and counts
    /// again from version 0, so a queued write from before is outranked by version alone; but a run only restarts
    /// once the old state was full, so whichever state starts at or after the other's `full_at` is the newer one.
    /// Within one run this reduces to the version order: an allowed decision leaves `last_refill < full_at`, and
    /// `last_refill` never moves back as the version grows.
    pub fn supersedes(&self, older: &PendingWrite) -> bool {
        if self.after.state.last_refill_us >= older.full_at_us {
            return true;
        }
        if older.after.state.last_refill_us >= self.full_at_us {
            return false;
        }
        self.after.version > older.after.version
    }
}
