//! The connections every call shares: at most `pool_size` redis-rs `MultiplexedConnection`s, each carrying any
//! number of concurrent calls at once. redis-rs writes the commands queued on one connection together and matches
//! the replies in order, so concurrent checks are pipelined without any batching code here (auto-pipelining): one
//! read and one write syscall carry many decisions, where a connection checked out per call carried one.
//!
//! A call leases the open connection with the fewest calls in flight. A new connection is opened (in the
//! background, bounded by the connect timeout) only when every open one is busy and fewer than `pool_size` are
//! open, so a quiet service holds one connection and a busy one at most `pool_size`. A caller finding no open
//! connection waits for the attempt in progress (its own deadline still applies); an attempt outlives a caller that
//! gave up, so a slow link still gets its connection for the next caller. A connection that broke or stalled is
//! removed by the first call that finds out ([`Connections::discard`]); calls already in flight on it keep their
//! own clone and each ends by its own deadline, and the socket closes when the last of them does.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_redis::redis::{RedisError, RedisResult};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

/// A connection that carried nothing for this long is probed (`PING`) before its next call: the server or a proxy
/// may have closed it meanwhile, and a check should not be the call that finds out.
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// Why no connection could be opened.
#[derive(Clone, Debug)]
pub(super) enum ConnectFailure {
    /// The connect timeout passed (TCP, TLS or the handshake hung).
    TimedOut,
    /// Refused, reset, a TLS or an authentication error.
    Failed(RedisError),
}

/// One connection attempt, awaited by every caller that finds no open connection; resolves to the new connection's
/// id and the connection.
type Attempt<C> = Shared<BoxFuture<'static, Result<(u64, C), ConnectFailure>>>;

/// Opens one connection: to the one server (standalone), to the master the sentinels name now (sentinel), or to the
/// whole cluster (a redis-rs `ClusterConnection`, itself multiplexed per node).
pub(super) type Connector<C> = Box<dyn Fn() -> BoxFuture<'static, RedisResult<C>> + Send + Sync>;

enum State<C> {
    Empty,
    Connecting(u64, Attempt<C>),
    Open(u64, C),
}

struct Slot<C> {
    state: Mutex<State<C>>,
    /// Calls holding a lease on this slot's connection.
    in_flight: AtomicUsize,
    /// Milliseconds since [`Connections::epoch`] when a call last leased this slot's connection.
    last_used_ms: AtomicU64,
}

impl<C> Slot<C> {
    fn state(&self) -> MutexGuard<'_, State<C>> {
        // Nothing panics while holding the lock (clones and assignments only), so a poisoned lock's state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Open, in-flight and maximum connections, for `/readyz` detail and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: usize,
    /// Calls in flight over them.
    pub in_flight: usize,
    /// `pool_size`: the most connections ever open at once.
    pub max_size: usize,
}

/// The shared connections of one store (see the module comment).
pub(super) struct Connections<C> {
    slots: Box<[Slot<C>]>,
    connector: Connector<C>,
    connect_timeout: Duration,
    next_id: AtomicU64,
    epoch: Instant,
}

/// A call's use of one connection; the in-flight count drops with it.
pub(super) struct Lease<'a, C> {
    slot: &'a Slot<C>,
    id: u64,
    /// The connection, a cheap clone of the shared one (a handle on its writer task).
    pub(super) conn: C,
    /// Whether the connection sat idle for [`IDLE_PROBE`] and should be probed before use.
    pub(super) idle: bool,
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a caller does next: use an open connection, or wait for slot `usize`'s attempt.
enum Pick<'a, C> {
    Lease(Lease<'a, C>),
    Wait(usize, Attempt<C>),
}

impl<C: Clone + Send + Sync + 'static> Connections<C> {
    /// Up to `size` connections opened by `connector`, none opened yet.
    pub(super) fn new(connector: Connector<C>, size: usize, connect_timeout: Duration) -> Self {
        let slots = (0..size)
            .map(|_| Slot {
                state: Mutex::new(State::Empty),
                in_flight: AtomicUsize::new(0),
                last_used_ms: AtomicU64::new(0),
            })
            .collect();
        Self { slots, connector, connect_timeout, next_id: AtomicU64::new(1), epoch: Instant::now() }
    }

    /// A lease on the least busy open connection, waiting for one to open if none is (the caller bounds the wait).
    pub(super) async fn acquire(self: &Arc<Self>) -> Result<Lease<'_, C>, ConnectFailure> {
        loop {
            match self.pick() {
                Pick::Lease(lease) => return Ok(lease),
                Pick::Wait(index, attempt) => {
                    let (id, conn) = attempt.await?;
                    // Discarded already (another caller saw it break)? Pick again.
                    if let Some(lease) = self.lease(index, id, Some(conn)) {
                        return Ok(lease);
                    }
                }
            }
        }
    }

    /// Removes the lease's connection from its slot (if it is still there), so the next call opens a new one.
    pub(super) fn discard(&self, lease: &Lease<'_, C>) {
        let mut state = lease.slot.state();
        if matches!(&*state, State::Open(id, _) if *id == lease.id) {
            *state = State::Empty;
        }
    }

    /// Open connections and calls in flight.
    pub(super) fn status(&self) -> PoolStatus {
        let size = self.slots.iter().filter(|slot| matches!(&*slot.state(), State::Open(..))).count();
        let in_flight = self.slots.iter().map(|slot| slot.in_flight.load(Ordering::Relaxed)).sum();
        PoolStatus { size, in_flight, max_size: self.slots.len() }
    }

    fn pick(self: &Arc<Self>) -> Pick<'_, C> {
        let mut least: Option<(usize, usize)> = None;
        let mut empty = None;
        let mut connecting = None;
        for (index, slot) in self.slots.iter().enumerate() {
            match &*slot.state() {
                State::Open(..) => {
                    let busy = slot.in_flight.load(Ordering::Relaxed);
                    if least.is_none_or(|(_, fewest)| busy < fewest) {
                        least = Some((index, busy));
                    }
                }
                State::Connecting(_, attempt) => connecting = connecting.or_else(|| Some((index, attempt.clone()))),
                State::Empty => empty = empty.or(Some(index)),
            }
            if least.is_some_and(|(_, busy)| busy == 0) {
                break;
            }
        }
        if let Some((index, busy)) = least {
            // Every open connection is busy and there is room: open one more for the calls to come, one at a time.
            if busy > 0 && connecting.is_none() {
                if let Some(empty) = empty {
                    let _ = self.start(empty);
                }
            }
            if let Some(lease) = self.lease(index, 0, None) {
                return Pick::Lease(lease);
            }
        }
        if let Some((index, attempt)) = connecting {
            return Pick::Wait(index, attempt);
        }
        match empty {
            Some(index) => match self.start(index) {
                Some(attempt) => Pick::Wait(index, attempt),
                None => self.pick(),
            },
            // Unreachable: every slot is open, connecting or empty, and an open one was found or would be leased
            // above; picking again covers a slot that changed meanwhile.
            None => self.pick(),
        }
    }

    /// Leases slot `index`'s open connection: any (`conn` `None`) or the one with this id just opened.
    fn lease(&self, index: usize, id: u64, conn: Option<C>) -> Option<Lease<'_, C>> {
        let slot = &self.slots[index];
        let state = slot.state();
        let (id, conn) = match (&*state, conn) {
            (State::Open(open, conn), None) => (*open, conn.clone()),
            (State::Open(open, _), Some(conn)) if *open == id => (id, conn),
            _ => return None,
        };
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        drop(state);
        let now = self.now_ms();
        let last = slot.last_used_ms.swap(now, Ordering::Relaxed);
        let idle = now.saturating_sub(last) >= IDLE_PROBE.as_millis() as u64;
        Some(Lease { slot, id, conn, idle })
    }

    /// Starts opening a connection in empty slot `index`; `None` if the slot is no longer empty.
    fn start(self: &Arc<Self>, index: usize) -> Option<Attempt<C>> {
        let mut state = self.slots[index].state();
        if !matches!(&*state, State::Empty) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let connect = (this.connector)();
            let result = match tokio::time::timeout(this.connect_timeout, connect).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(ConnectFailure::Failed(e)),
                Err(_) => Err(ConnectFailure::TimedOut),
            };
            let slot = &this.slots[index];
            let mut state = slot.state();
            if matches!(&*state, State::Connecting(current, _) if *current == id) {
                *state = match &result {
                    Ok(conn) => State::Open(id, conn.clone()),
                    Err(_) => State::Empty,
                };
                // A fresh connection needs no probe.
                slot.last_used_ms.store(this.now_ms(), Ordering::Relaxed);
            }
            result.map(|conn| (id, conn))
        });
        let attempt = task
            .map(|joined| {
                joined
                    .unwrap_or_else(|e| Err(ConnectFailure::Failed(RedisError::from(io::Error::other(e.to_string())))))
            })
            .boxed()
            .shared();
        *state = State::Connecting(id, attempt.clone());
        Some(attempt)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
