//! A one-line spinner on stderr while a scenario waits for tokens, so a multi-second pause doesn't look like a hang.
//!
//! Hand-written (a few lines) rather than a progress-bar crate. It draws only when asked to (stderr is a terminal
//! and the output isn't `--json`) and always erases its line before returning, so per-request lines printed
//! between waits never interleave with it.

use std::io::Write;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Waits for a deadline, showing a countdown when enabled.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

/// Waits shorter than this are not drawn: a flash of spinner is noise.
const MIN_DRAWN: Duration = Duration::from_millis(300);
const FRAME: Duration = Duration::from_millis(100);
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

impl Progress {
    /// `enabled` is decided once by the caller (TTY and not `--json`).
    pub fn new(enabled: bool) -> Self {
        Progress { enabled }
    }

    /// Sleeps `duration`, with `label` and the time left on stderr.
    pub async fn wait(&self, label: &str, duration: Duration) {
        self.wait_until(label, Instant::now() + duration).await;
    }

    /// Sleeps until `deadline`; an absolute deadline lets a caller pace requests without drift.
    pub async fn wait_until(&self, label: &str, deadline: Instant) {
        if !self.enabled || deadline.saturating_duration_since(Instant::now()) < MIN_DRAWN {
            sleep_until(deadline).await;
            return;
        }
        let mut stderr = std::io::stderr();
        let mut frame = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A failed write to stderr only loses the spinner; the wait itself must go on.
            let _ = write!(stderr, "\r{} {label} ({:.1}s left) ", SPINNER[frame % SPINNER.len()], left.as_secs_f64());
            let _ = stderr.flush();
            frame += 1;
            sleep_until(deadline.min(Instant::now() + FRAME)).await;
        }
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}
