//! Which files make up the configuration at a path, read into `(name, text)` pairs.
//!
//! A file path is that one file, whatever its extension. A directory is every `*.yaml` / `*.yml` file under it,
//! recursively and in name order (so errors are reproducible), skipping every entry whose name starts with `.`:
//! a Kubernetes ConfigMap volume holds each file twice, once as `name.yaml` (a symlink through `..data`) and once
//! inside the hidden `..2024_…` directory, and only the former must count. Symlinks to files and directories are
//! followed (that is how ConfigMaps present their files), to a bounded depth so a symlink loop cannot hang a load.

use std::fs;
use std::path::{Path, PathBuf};

use crate::LimitsError;

/// Deepest directory nesting followed under the configured directory.
const MAX_DEPTH: usize = 16;

/// The `(name, text)` of every limits file at `path`; the name is the file's path as found.
pub(crate) fn read_files(path: &Path) -> Result<Vec<(String, String)>, LimitsError> {
    let meta = fs::metadata(path).map_err(|e| LimitsError::io(path, &e))?;
    let mut paths = Vec::new();
    if meta.is_dir() {
        collect(path, 0, &mut paths)?;
    } else {
        paths.push(path.to_path_buf());
    }
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).map_err(|e| LimitsError::io(&p, &e))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), LimitsError> {
    if depth > MAX_DEPTH {
        return Err(LimitsError::Io {
            path: dir.display().to_string(),
            message: format!("directories nested deeper than {MAX_DEPTH} (a symlink loop?)"),
        });
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| LimitsError::io(dir, &e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| LimitsError::io(dir, &e)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        let hidden = entry.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // `metadata` follows symlinks; a dangling one (a ConfigMap mid-swap) is skipped, not an error: the swap's
        // last event brings a complete view.
        let Ok(meta) = fs::metadata(&entry) else {
            continue;
        };
        if meta.is_dir() {
            collect(&entry, depth + 1, out)?;
        } else if meta.is_file() && is_yaml(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}
