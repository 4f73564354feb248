//! Ctrl-C, SIGTERM and SIGHUP become a flag that the long-running loops poll, so the xtask always gets to stop the
//! servers it started and remove its temporary directories instead of dying half-way.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler; call once at the start of a command that starts processes.
pub fn install() -> Result<()> {
    ctrlc::set_handler(|| REQUESTED.store(true, Ordering::SeqCst)).context("could not install the Ctrl-C handler")
}

/// Whether the user asked to stop; loops check it between steps and while waiting.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
