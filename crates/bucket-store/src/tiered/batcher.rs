//! Sharing one round trip among concurrent requests: each request hands its item to a gathering task and waits
//! for its own answer; the task runs one call for a whole batch and answers every request of it.
//!
//! When a batch closes: as soon as one of a few call slots is free, or when the window has passed, or when it is
//! full, whichever comes first. So a lone request goes at once (no idle wait: a fixed window was measured slower
//! than no batching at all, docs/perf.md §11), and under load, while the slots' calls are on their way, the next
//! batch fills by itself; the window only bounds how long a request can wait for a slot.
//!
//! Why a task rather than "the first request leads": a request's future can be dropped at any await (a client that
//! disconnects), and a leader dropped while holding its followers' batch would leave them waiting for ever. Here
//! a batch belongs to the task from the moment it is handed over, and its call runs to the end on a task of its
//! own even if every request that gave to it is gone: a write whose decision was already made in Redis still
//! reaches PostgreSQL.
//!
//! Invariant: every item handed over is in exactly one batch, and each request is answered from the result of the
//! batch holding its item, never another's. A failed call fails exactly the requests of its batch.
//!
//! Cost per request: one oneshot channel and the item moved into the batch; the channel to the task allocates in
//! blocks shared by many messages. No lock is held across an await. Batches run concurrently (the next one gathers
//! while the previous one is on its way), bounded by the pool the call uses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Calls of one batcher on their way at once before the next batch waits (up to the window) for one to finish.
const SLOTS: usize = 2;

/// One request waiting: its item and where its answer goes.
struct Job<T, R> {
    item: T,
    answer: oneshot::Sender<R>,
}

/// The requests' side of a gathering task; dropping it ends the task once the batches in progress are answered.
pub(super) struct Batcher<T, R> {
    jobs: mpsc::UnboundedSender<Job<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the gathering task on the current tokio runtime. `run` gets a batch's items (at most `max`, in the
    /// order they arrived) and must answer with one result per item, in the same order.
    pub(super) fn spawn<F, Fut>(window: Duration, max: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(gather(queue, window, max.max(1), Arc::new(run), Arc::new(Semaphore::new(SLOTS))));
        Self { jobs }
    }

    /// Hands `item` to the next batch and waits for its result; `None` only if the task is gone (the runtime is
    /// shutting down) or `run` answered fewer results than items: the item's fate is then unknown.
    pub(super) async fn submit(&self, item: T) -> Option<R> {
        let (answer, answered) = oneshot::channel();
        self.jobs.send(Job { item, answer }).ok()?;
        answered.await.ok()
    }
}

/// The gathering loop: the first item opens a batch; it closes when a call slot is free, the window has passed or
/// it holds `max` items, and its call then runs on a task of its own (holding the slot, if it got one) while the
/// next batch gathers.
async fn gather<T, R, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Job<T, R>>,
    window: Duration,
    max: usize,
    run: Arc<F>,
    slots: Arc<Semaphore>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    loop {
        let mut batch = Vec::new();
        if queue.recv_many(&mut batch, max).await == 0 {
            return; // every sender is gone and nothing is left
        }
        let closes = tokio::time::sleep(window);
        tokio::pin!(closes);
        let slot = loop {
            if batch.len() >= max {
                break Arc::clone(&slots).try_acquire_owned().ok();
            }
            let room = max - batch.len();
            tokio::select! {
                biased;
                slot = Arc::clone(&slots).acquire_owned() => break slot.ok(),
                received = queue.recv_many(&mut batch, room) => {
                    if received == 0 {
                        break None;
                    }
                }
                () = &mut closes => break None,
            }
        };
        tokio::spawn(answer(batch, Arc::clone(&run), slot));
    }
}

/// Runs one batch's call and hands each request its own result.
async fn answer<T, R, F, Fut>(batch: Vec<Job<T, R>>, run: Arc<F>, _slot: Option<OwnedSemaphorePermit>)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    let (items, answers): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.into_iter().map(|j| (j.item, j.answer)).unzip();
    let results = run(items).await;
    for (answer, result) in answers.into_iter().zip(results) {
        // A request that stopped waiting (its client left) needs no answer.
        let _ = answer.send(result);
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
        let batcher = Batcher::spawn(window, max, move |items: Vec<u32>| {
            log.lock().unwrap().push(items.clone());
            async move { items.into_iter().map(|i| i * 10).collect() }
        });
        (batcher, seen)
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_call_and_each_gets_its_own_answer() {
        // A window far longer than the test: only reaching `max` can close the batch.
        let (batcher, seen) = recording(Duration::from_secs(600), 8);
        let answers = futures::future::join_all((0..8).map(|i| batcher.submit(i))).await;
        assert_eq!(answers, (0..8).map(|i| Some(i * 10)).collect::<Vec<_>>());
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.len(), 1, "{batches:?}");
        let mut items = batches[0].clone();
        items.sort_unstable();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
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
        // Calls that wait for a gate: the first SLOTS batches hold both slots until the gate opens.
        let gate = Arc::new(tokio::sync::Notify::new());
        let seen: Seen = Arc::default();
        let (log, open) = (Arc::clone(&seen), Arc::clone(&gate));
        let batcher = Arc::new(Batcher::spawn(Duration::from_secs(600), 100, move |items: Vec<u32>| {
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
        // Both slots busy: these five gather into one batch instead of going one by one.
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
        let batcher = Arc::new(Batcher::spawn(window, 100, move |items: Vec<u32>| {
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
        let batcher = Batcher::spawn(Duration::from_secs(600), 2, |items: Vec<u32>| async move {
            items.into_iter().take(1).collect::<Vec<_>>()
        });
        let answers = futures::future::join_all([batcher.submit(1), batcher.submit(2)]).await;
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
