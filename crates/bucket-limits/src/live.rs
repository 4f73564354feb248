//! The limits in force, reloaded when their files change: an edit is parsed, validated and swapped in atomically;
//! an invalid edit leaves the last good set in force and is reported.
//!
//! The watcher sees the configured path's parent directory (so `mv new.yaml limits.yaml`, an editor's
//! write-then-rename, and a swap of the path itself when it is a symlink are all seen) and, when the path is a
//! directory, the directory recursively (so a Kubernetes ConfigMap's `..data` symlink swap inside it is seen).
//! Events are debounced: a reload runs once the files have been quiet for [`DEBOUNCE`], so a burst of writes loads
//! once, complete.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::{load, Limits, LimitsError};

/// How long the files must be quiet before a change is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A changed, valid set is now in force.
    Loaded {
        /// Its rule count.
        rules: usize,
    },
    /// The files changed but are invalid (or unreadable); the last good set stays in force.
    Rejected(LimitsError),
    /// The files hold what is already in force (or the same invalid content already reported).
    Unchanged,
}

type Files = Vec<(String, String)>;

/// The limits in force, with the watcher that keeps them current. Dropping it stops the watcher.
pub struct LiveLimits {
    shared: Arc<Shared>,
    stop: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// `None` for a fixed set that never reloads.
    path: Option<PathBuf>,
    current: ArcSwap<Limits>,
    /// Serialises reloads and remembers what was loaded or refused last.
    state: Mutex<State>,
    report: Box<dyn Fn(ReloadOutcome) + Send + Sync>,
}

#[derive(Default)]
struct State {
    good: Files,
    rejected: Option<Files>,
    last_error: Option<String>,
}

enum Msg {
    Changed,
    Stop,
}

impl LiveLimits {
    /// Loads `path` (an error here is for the process to exit with), then watches it; `report` is told the outcome
    /// of every reload, from the watcher's thread or from [`LiveLimits::reload_now`].
    pub fn watch(
        path: &Path,
        report: impl Fn(ReloadOutcome) + Send + Sync + 'static,
    ) -> Result<LiveLimits, LimitsError> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let watch_error = |e: notify::Error| LimitsError::Io {
            path: path.display().to_string(),
            message: format!("cannot watch for changes: {e}"),
        };
        // The watcher starts before the first read, so no change can slip between the two.
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.as_ref().map_or(true, |e| is_change(&e.kind)) {
                let _ = events.send(Msg::Changed);
            }
        })
        .map_err(watch_error)?;
        let mut target = watch_paths(&mut watcher, path).map_err(watch_error)?;
        let files = load::read_files(path)?;
        let limits = Limits::from_files(&files)?;
        let shared = Arc::new(Shared {
            path: Some(path.to_path_buf()),
            current: ArcSwap::from_pointee(limits),
            state: Mutex::new(State { good: files, ..State::default() }),
            report: Box::new(report),
        });
        let worker = Arc::clone(&shared);
        let owned_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("bucket-limits-watch".into())
            .spawn(move || {
                while wait_for_quiet_change(&rx) {
                    // The path may be a symlink to a directory that was just swapped: watch the new target before
                    // reading it, so an edit made after this read is seen by the new watch.
                    rewatch(&mut watcher, &owned_path, &mut target);
                    let outcome = worker.reload();
                    (worker.report)(outcome);
                }
            })
            .map_err(|e| LimitsError::Io { path: path.display().to_string(), message: e.to_string() })?;
        Ok(LiveLimits { shared, stop: Some(tx), thread: Some(thread) })
    }

    /// A set that never changes: for tests, and for callers configured without a limits path.
    pub fn fixed(limits: Limits) -> LiveLimits {
        let shared = Arc::new(Shared {
            path: None,
            current: ArcSwap::from_pointee(limits),
            state: Mutex::new(State::default()),
            report: Box::new(|_| {}),
        });
        LiveLimits { shared, stop: None, thread: None }
    }

    /// The set in force. Takes no lock and allocates nothing (one atomic reference-count increment).
    pub fn current(&self) -> Arc<Limits> {
        self.shared.current.load_full()
    }

    /// Reloads now (for tests and SIGHUP); the outcome is also given to the report callback.
    pub fn reload_now(&self) -> ReloadOutcome {
        let outcome = self.shared.reload();
        (self.shared.report)(outcome.clone());
        outcome
    }

    /// Why the files on disk are not in force, while they are not (for `/readyz`'s detail).
    pub fn last_error(&self) -> Option<String> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }
}

impl Drop for LiveLimits {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Msg::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for LiveLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLimits").field("path", &self.shared.path).finish_non_exhaustive()
    }
}

impl Shared {
    fn reload(&self) -> ReloadOutcome {
        let Some(path) = &self.path else {
            return ReloadOutcome::Unchanged;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let files = match load::read_files(path) {
            Ok(files) => files,
            Err(e) => {
                state.rejected = None;
                state.last_error = Some(e.to_string());
                return ReloadOutcome::Rejected(e);
            }
        };
        if files == state.good {
            state.rejected = None;
            state.last_error = None;
            return ReloadOutcome::Unchanged;
        }
        if state.rejected.as_ref() == Some(&files) {
            return ReloadOutcome::Unchanged;
        }
        match Limits::from_files(&files) {
            Ok(limits) => {
                let rules = limits.rule_count();
                self.current.store(Arc::new(limits));
                *state = State { good: files, rejected: None, last_error: None };
                ReloadOutcome::Loaded { rules }
            }
            Err(e) => {
                state.rejected = Some(files);
                state.last_error = Some(e.to_string());
                ReloadOutcome::Rejected(e)
            }
        }
    }
}

/// Reads (opens, closes after reading) are not changes; our own reloads cause them.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Blocks until a change arrives and then the files stay quiet for [`DEBOUNCE`]; `false` when told to stop.
fn wait_for_quiet_change(rx: &Receiver<Msg>) -> bool {
    match rx.recv() {
        Ok(Msg::Changed) => {}
        Ok(Msg::Stop) | Err(_) => return false,
    }
    loop {
        match rx.recv_timeout(DEBOUNCE) {
            Ok(Msg::Changed) => {}
            Err(RecvTimeoutError::Timeout) => return true,
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Starts watching: `path`'s parent directory, and `path` itself recursively when it is a directory. Returns the
/// directory's resolved target, which [`rewatch`] compares against.
fn watch_paths(watcher: &mut RecommendedWatcher, path: &Path) -> notify::Result<Option<PathBuf>> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    watcher.watch(parent, RecursiveMode::NonRecursive)?;
    if !path.is_dir() {
        return Ok(None);
    }
    watcher.watch(path, RecursiveMode::Recursive)?;
    Ok(std::fs::canonicalize(path).ok())
}

/// When `path` is a symlink to a directory and now points elsewhere, moves the recursive watch to the new target.
fn rewatch(watcher: &mut RecommendedWatcher, path: &Path, target: &mut Option<PathBuf>) {
    if !path.is_dir() {
        return;
    }
    let now = std::fs::canonicalize(path).ok();
    if now != *target {
        let _ = watcher.unwatch(path);
        if watcher.watch(path, RecursiveMode::Recursive).is_ok() {
            *target = now;
        }
    }
}
