//! The tiered store's background tasks; each holds the store weakly and ends once it is dropped.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{Inner, TieredEvent, WriteMode};
use crate::Store;

/// Write-behind batches, and replay of writes queued while PostgreSQL was down.
///
/// The next batch goes at once only after a full one (a backlog); otherwise the loop waits `flush_interval`, so a
/// batch gathers what arrived during that interval. Flushing again as soon as any write had arrived made batches
/// as small as PostgreSQL was fast, and each statement carries a fixed cost besides its rows.
pub(super) async fn flush_loop(inner: Weak<Inner>) {
    loop {
        let pause = {
            let Some(inner) = inner.upgrade() else { return };
            match inner.flush_batch().await {
                Ok(sent) if sent >= inner.config.batch_size => Duration::ZERO,
                Ok(_) if inner.config.write_mode == WriteMode::WriteBehind => inner.config.flush_interval,
                Ok(_) => inner.config.flush_interval.max(Duration::from_millis(50)),
                Err(_) => inner.config.retry_interval,
            }
        };
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Brings dependencies marked down back: Redis only after the keys PostgreSQL changed are deleted from it.
pub(super) async fn probe_loop(inner: Weak<Inner>) {
    loop {
        let every = {
            let Some(inner) = inner.upgrade() else { return };
            if !inner.redis_up.load(Ordering::Acquire) && inner.redis.ping().await.is_ok() {
                match inner.invalidate_stale().await {
                    Ok(()) => inner.redis_recovered(),
                    Err(e) => (inner.events)(TieredEvent::RedisInvalidationFailed { error: e.to_string() }),
                }
            }
            if !inner.pg_up.load(Ordering::Acquire) && inner.pg.health().await.iter().all(|h| h.up) {
                inner.pg_recovered();
            }
            inner.config.retry_interval
        };
        tokio::time::sleep(every).await;
    }
}
