//! Where the workspace is and where the xtask keeps its own state, so every command agrees on both.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of xtask/), whatever directory the command was started from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `<target dir>/xtask`: data directories and logs of the servers `cargo xtask test` starts, kept between runs and
/// removed by `cargo clean`. Follows `CARGO_TARGET_DIR` so that separate checkouts or target dirs never share a server.
pub fn state_dir() -> PathBuf {
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    target.join("xtask")
}

/// Path of a file of this workspace given relative to its root, for messages and commands.
pub fn in_workspace(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}
