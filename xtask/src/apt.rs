//! Installs missing Debian packages, so a fresh machine (or CI on one) gets the servers the tests need without a
//! manual step. Only as root; anyone else is told the exact command to run.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

use crate::process;

/// apt-get's package lists must be fetched once per machine before an install; once per run is enough.
static UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs `packages` (without recommends) when running as root on a Debian-like system; otherwise fails with a
/// message saying what is missing (`what`) and how to install it.
pub fn install(what: &str, packages: &[&str]) -> Result<()> {
    let command_line = format!("apt-get install -y --no-install-recommends {}", packages.join(" "));
    if !bucket_testkit::process::is_root() {
        bail!("{what} is not installed. Install it with `sudo {command_line}` (or your system's equivalent), then run again");
    }
    if which::which("apt-get").is_err() {
        bail!("{what} is not installed and there is no apt-get here: install the packages {packages:?} yourself");
    }
    println!("  {what} is missing: installing {}", packages.join(" "));
    if !UPDATED.swap(true, Ordering::SeqCst) {
        process::run_checked(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    process::run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}
