//! Sharing one round trip among concurrent requests: each request puts its item in the open batch and waits for
//! its own answer; one call runs for a whole batch and answers every request of it.
//!
//! When a batch closes: as soon as a call slot is free (`SLOTS`), or when its first request has waited the
//! window, or when it is full, whichever comes first. So a lone request goes at once (no idle wait: a fixed window
//! was measured slower than no batching at all, docs/perf.md §11), and under load, while the slots' calls are on
//! their way, the next batch fills by itself; the window only bounds how long a request can wait for a slot.
//!
//! Who runs a batch: a task spawned by the request that closed it, on that request's own runtime (an actix worker),
//! and on finishing, the same task takes the batch that gathered meanwhile. There is no gathering task: one lived on
//! the runtime that built the store (actix's main thread), and on two busy cores every batch then waited for that
//! idle thread to be scheduled, milliseconds each time (docs/perf.md §11). A request's future can be dropped at any
//! await (a client that disconnects), so no request ever runs a batch itself: from the moment a batch closes it
//! belongs to its task, and its call runs to the end even if every request that gave to it is gone (a write whose
//! decision was already made in Redis still reaches PostgreSQL). An item whose request is dropped before its batch
//! closes stays in the batch.
//!
//! Invariant: every item handed over is in exactly one batch, and each request is answered from the result of the
//! batch holding its item, never another's. A failed call fails exactly the requests of its batch.
//!
//! Cost per request: one oneshot channel, the item moved into the batch, one short lock. No lock is held across an
//! await. At most `SLOTS` calls run at once, plus batches whose window ran out.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Calls of one batcher on their way at once before the next batch waits (up to the window) for one to finish.
/// One: measured against two on both kinds of machine here, PostgreSQL spent 15–20 % less CPU per synchronous new
/// user (batches about twice as large) at the same throughput and latency (docs/perf.md §16).
const SLOTS: usize = 1;

/// One request waiting: its item and where its answer goes.
struct Job<T, R> {
    item: T,
    answer: oneshot::Sender<R>,
}

/// A batch's call, boxed so the batcher's type does not name it.
type Call<T, R> = Box<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

/// The open batch and the free call slots.
struct Open<T, R> {
    jobs: Vec<Job<T, R>>,
    /// Bumped each time the open batch is taken, so a request's window timer knows whether its batch left.
    generation: u64,
    free_slots: usize,
}

/// What the requests of one batcher and its batches' tasks share.
struct Shared<T, R> {
    open: Mutex<Open<T, R>>,
    window: Duration,
    max: usize,
    run: Call<T, R>,
}

/// Gathers concurrent requests' items into shared calls.
pub(super) struct Batcher<T, R> {
    shared: Arc<Shared<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher whose calls run on the tokio runtime of the request that closes each batch. `run` gets a batch's
    /// items (at most `max`, in the order they arrived) and must answer with one result per item, in the same order.
    pub(super) fn new<F, Fut>(window: Duration, max: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let run: Call<T, R> = Box::new(move |items| Box::pin(run(items)));
        let open = Mutex::new(Open { jobs: Vec::new(), generation: 0, free_slots: SLOTS });
        Self { shared: Arc::new(Shared { open, window, max: max.max(1), run }) }
    }

    /// Puts `item` in the open batch and waits for its result; `None` only if its batch's task is gone (the
    /// runtime is shutting down) or `run` answered fewer results than items: the item's fate is then unknown.
    pub(super) async fn submit(&self, item: T) -> Option<R> {
        let (answer, mut answered) = oneshot::channel();
        let opened = self.hand_over(Job { item, answer });
        // Every slot is busy: the batch goes when one frees; the request that opened it also bounds the wait.
        if let Some(generation) = opened {
            tokio::select! {
                biased;
                result = &mut answered => return result.ok(),
                () = tokio::time::sleep(self.shared.window) => {}
            }
            self.close_if_open(generation);
        }
        answered.await.ok()
    }

    /// Puts a job in the open batch, closing it when a slot is free or it is full; returns the open batch's
    /// generation when this job opened a batch that stays open.
    fn hand_over(&self, job: Job<T, R>) -> Option<u64> {
        let mut open = self.shared.lock();
        let opened = open.jobs.is_empty().then_some(open.generation);
        open.jobs.push(job);
        if open.free_slots == 0 && open.jobs.len() < self.shared.max {
            return opened;
        }
        // A free slot, or a full batch (which goes without one, as when its window ends).
        let slot = open.free_slots > 0;
        open.free_slots -= usize::from(slot);
        let batch = open.take(self.shared.max);
        drop(open);
        tokio::spawn(Shared::run(Arc::clone(&self.shared), batch, slot));
        None
    }

    /// Closes the batch `generation` if it is still open (its opener's window ran out), without a slot.
    fn close_if_open(&self, generation: u64) {
        let mut open = self.shared.lock();
        if open.generation == generation && !open.jobs.is_empty() {
            let batch = open.take(self.shared.max);
            drop(open);
            tokio::spawn(Shared::run(Arc::clone(&self.shared), batch, false));
        }
    }
}

impl<T, R> Open<T, R> {
    /// Closes the open batch (its first `max` items; the rest stay open).
    fn take(&mut self, max: usize) -> Vec<Job<T, R>> {
        self.generation += 1;
        if self.jobs.len() <= max {
            return mem::take(&mut self.jobs);
        }
        let rest = self.jobs.split_off(max);
        mem::replace(&mut self.jobs, rest)
    }
}

impl<T: Send + 'static, R: Send + 'static> Shared<T, R> {
    fn lock(&self) -> MutexGuard<'_, Open<T, R>> {
        // The lock guards no invariant a panic could break halfway (pushes and takes are single moves).
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a batch's call and answers its requests; holding a slot, it then runs whatever gathered meanwhile, and
    /// frees the slot once nothing is waiting.
    async fn run(self: Arc<Self>, mut batch: Vec<Job<T, R>>, slot: bool) {
        // A task dropped mid-call (its runtime stopping) still gives its slot back; the next request then closes
        // whatever gathered.
        let mut held = slot.then(|| SlotGuard { shared: Arc::clone(&self), armed: true });
        loop {
            let (items, answers): (Vec<T>, Vec<oneshot::Sender<R>>) =
                batch.into_iter().map(|j| (j.item, j.answer)).unzip();
            let results = (self.run)(items).await;
            for (answer, result) in answers.into_iter().zip(results) {
                // A request that stopped waiting (its client left) needs no answer.
                let _ = answer.send(result);
            }
            if !slot {
                return;
            }
            let mut open = self.lock();
            if open.jobs.is_empty() {
                // Freed under the same lock that saw nothing waiting, so no request can slip in between.
                open.free_slots += 1;
                if let Some(guard) = held.as_mut() {
                    guard.armed = false;
                }
                return;
            }
            batch = open.take(self.max);
        }
    }
}

/// A call slot held by a batch's task: freed by the task itself when nothing waits, or by this guard if the task
/// is dropped first.
struct SlotGuard<T, R> {
    shared: Arc<Shared<T, R>>,
    armed: bool,
}

impl<T, R> Drop for SlotGuard<T, R> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).free_slots += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Every batch a call received, in order.
    type Seen = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A batcher whose call records each batch and answers each item with itself times ten.
    fn recording(window: Duration, max: usize) -> (Batcher<u32, u32>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let batcher = Batcher::new(window, max, move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            async move { items.into_iter().map(|i| i * 10).collect() }
        });
        (batcher, seen)
    }

    #[test]
    fn batches_run_on_the_runtime_of_the_requests_not_the_one_that_built_the_batcher() {
        // Built on a runtime that is gone before any request: the calls must not need it (an actix server builds
        // its store on the main thread, which then sits idle while the workers serve).
        let builder = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (batcher, seen) = builder.block_on(async { recording(Duration::from_millis(5), 100) });
        drop(builder);
        let worker = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answers = worker.block_on(futures::future::join_all((0..4).map(|i| batcher.submit(i))));
        assert_eq!(answers, (0..4).map(|i| Some(i * 10)).collect::<Vec<_>>());
        assert_eq!(seen.lock().unwrap().iter().map(Vec::len).sum::<usize>(), 4);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_call_and_each_gets_its_own_answer() {
        // A window far longer than the test: only a free slot or reaching `max` can close a batch. The first
        // SLOTS requests find a slot free and go alone; the rest gather into one call while those are on their way.
        let (batcher, seen) = recording(Duration::from_secs(600), 8);
        let answers = futures::future::join_all((0..8).map(|i| batcher.submit(i))).await;
        assert_eq!(answers, (0..8).map(|i| Some(i * 10)).collect::<Vec<_>>());
        let mut batches = seen.lock().unwrap().clone();
        batches.sort_by_key(Vec::len);
        assert_eq!(batches.len(), SLOTS + 1, "{batches:?}");
        let mut items = batches[SLOTS].clone();
        items.sort_unstable();
        assert_eq!(items, (SLOTS as u32..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_batch_closes_and_the_rest_forms_the_next() {
        let (batcher, seen) = recording(Duration::from_millis(20), 3);
        let answers = futures::future::join_all((0..7).map(|i| batcher.submit(i))).await;
        assert!(answers.iter().enumerate().all(|(i, a)| *a == Some(i as u32 * 10)), "{answers:?}");
        let batches = seen.lock().unwrap().clone();
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 3), "{batches:?}");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 7, "each item in exactly one batch: {batches:?}");
    }

    #[tokio::test]
    async fn a_lone_request_goes_at_once_while_a_slot_is_free() {
        let window = Duration::from_secs(600);
        let (batcher, seen) = recording(window, 100);
        let answered = tokio::time::timeout(Duration::from_secs(5), batcher.submit(4)).await;
        assert_eq!(answered, Ok(Some(40)), "a free slot must not wait for the window");
        assert_eq!(*seen.lock().unwrap(), vec![vec![4]]);
    }

    #[tokio::test]
    async fn while_every_slot_is_busy_the_next_batch_gathers_until_one_frees() {
        // Calls that wait for a gate: the first SLOTS batches hold every slot until the gate opens.
        let gate = Arc::new(tokio::sync::Notify::new());
        let seen: Seen = Arc::default();
        let (log, open) = (Arc::clone(&seen), Arc::clone(&gate));
        let batcher = Arc::new(Batcher::new(Duration::from_secs(600), 100, move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            let open = Arc::clone(&open);
            async move {
                open.notified().await;
                items.into_iter().map(|i| i * 10).collect()
            }
        }));
        let submit = |i: u32| {
            let b = Arc::clone(&batcher);
            tokio::spawn(async move { b.submit(i).await })
        };
        let mut tasks = Vec::new();
        for i in 0..SLOTS as u32 {
            tasks.push(submit(i));
            while seen.lock().unwrap().len() <= i as usize {
                tokio::task::yield_now().await;
            }
        }
        // Every slot busy: these five gather into one batch instead of going one by one.
        tasks.extend((10..15).map(submit));
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(seen.lock().unwrap().len(), SLOTS, "no batch may close while every slot is busy");
        while tasks.iter().any(|t| !t.is_finished()) {
            gate.notify_waiters();
            tokio::task::yield_now().await;
        }
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.len(), SLOTS + 1, "{batches:?}");
        let mut last = batches[SLOTS].clone();
        last.sort_unstable();
        assert_eq!(last, (10..15).collect::<Vec<_>>());
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn a_batch_waiting_for_a_slot_goes_when_its_window_ends() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let seen: Seen = Arc::default();
        let (log, open) = (Arc::clone(&seen), Arc::clone(&gate));
        let window = Duration::from_millis(30);
        let batcher = Arc::new(Batcher::new(window, 100, move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            let open = Arc::clone(&open);
            async move {
                if items[0] < 100 {
                    open.notified().await; // the first batches hold the slots until the end
                }
                items.into_iter().map(|i| i * 10).collect()
            }
        }));
        let mut held = Vec::new();
        for i in 0..SLOTS as u32 {
            let b = Arc::clone(&batcher);
            held.push(tokio::spawn(async move { b.submit(i).await }));
            while seen.lock().unwrap().len() <= i as usize {
                tokio::task::yield_now().await;
            }
        }
        let started = tokio::time::Instant::now();
        assert_eq!(batcher.submit(100).await, Some(1000));
        assert!(started.elapsed() >= window, "answered before the window closed");
        while held.iter().any(|t| !t.is_finished()) {
            gate.notify_waiters();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_unanswered_requests_with_none_not_another_result() {
        let batcher = Batcher::new(Duration::from_secs(600), 2, |items: Vec<u32>| async move {
            items.into_iter().take(1).collect::<Vec<_>>()
        });
        // One batch of two, as requests arriving while both slots are busy would form.
        let ((first, one), (second, two)) = (oneshot::channel(), oneshot::channel());
        let batch = vec![Job { item: 1, answer: first }, Job { item: 2, answer: second }];
        Shared::run(Arc::clone(&batcher.shared), batch, false).await;
        let answers = [one.await.ok(), two.await.ok()];
        assert_eq!(answers.iter().filter(|a| a.is_none()).count(), 1, "{answers:?}");
        assert!(answers.iter().flatten().all(|&a| a == 1 || a == 2), "{answers:?}");
    }

    #[tokio::test]
    async fn a_request_that_stops_waiting_does_not_stop_its_batch() {
        let (batcher, seen) = recording(Duration::from_millis(20), 100);
        let abandoned = batcher.submit(7);
        // Polled once, so the item is handed over, then dropped: the caller went away.
        assert!(futures::poll!(Box::pin(abandoned)).is_pending());
        assert_eq!(batcher.submit(8).await, Some(80));
        let all: Vec<u32> = seen.lock().unwrap().iter().flatten().copied().collect();
        assert!(all.contains(&7), "the abandoned item was still run: {all:?}");
    }
}
