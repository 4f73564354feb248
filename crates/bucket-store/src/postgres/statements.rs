//! Every statement the store runs, each a type of its own whose text is its `.sql` file: the type is what each
//! session's statement cache knows it by (`prepared.rs`).

use super::prepared::Statement;

/// Declares one marker type per statement, with its text.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl Statement for $name {
            const SQL: &'static str = include_str!($file);
        }
    )*};
}

statements! {
    /// The atomic check; see the file for why it is atomic and how it matches `bucket_core::refill`.
    Decide = "decide.sql";
    /// One bucket as stored plus the server's "now"; decides nothing.
    Read = "read.sql";
    /// Many buckets as stored, for the Redis misses of concurrent requests.
    ReadMany = "read_many.sql";
    /// Version-guarded upsert of many buckets in one statement.
    SaveBatch = "save_batch.sql";
    /// The same upsert for writes already answered: no answer per write, lazy commit.
    SaveAnswered = "save_answered.sql";
    /// Several buckets decided together, step 1: lock (and create) the rows.
    DecideAllLock = "decide_all_lock.sql";
    /// Step 2: read the locked rows and the clock.
    DecideAllRead = "decide_all_read.sql";
    /// Step 3: write the decided states.
    DecideAllWrite = "decide_all_write.sql";
    /// Tells the other instances that a key changed.
    Announce = "announce.sql";
    /// Forgets a bucket.
    Reset = "reset.sql";
    /// The pruner's turn: a per-schema advisory lock held to the end of the transaction.
    PruneLock = "prune_lock.sql";
    /// Deletes a batch of rows whose bucket is full.
    Prune = "prune.sql";
    /// One key's policy.
    PolicyGet = "policy_get.sql";
    /// Removes one key's policy.
    PolicyDelete = "policy_delete.sql";
    /// The policy version.
    PolicyVersion = "policy_version.sql";
    /// Every policy.
    PolicyAll = "policy_all.sql";
    /// Sets one key's policy.
    PolicySet = "policy_set.sql";
    /// What this session has prepared (a diagnostic).
    SessionStatements = "session_statements.sql";
}
