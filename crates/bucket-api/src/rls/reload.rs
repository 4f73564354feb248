//! Loading the limits file at start and watching it: each reload's result counted
//! (`bucket_limits_reload_total{result}`) and logged, the last error kept for `/readyz`.

use std::path::Path;

use bucket_limits::{LimitsError, LiveLimits, ReloadOutcome};
use slog::{error, info, Logger};

use crate::metrics::Metrics;

/// Loads `path` (an error stops the start) and watches it, reporting every reload to `metrics` and `log`.
pub fn watch_limits(path: &Path, metrics: &Metrics, log: &Logger) -> Result<LiveLimits, LimitsError> {
    let (metrics, log) = (metrics.clone(), log.new(slog::o!("limits" => path.display().to_string())));
    let start_log = log.clone();
    for result in ["loaded", "rejected"] {
        metrics.limits_reloads.with_label_values(&[result]);
    }
    let live = LiveLimits::watch(path, move |outcome| match outcome {
        ReloadOutcome::Loaded { rules } => {
            metrics.limits_reloads.with_label_values(&["loaded"]).inc();
            info!(log, "limits reloaded"; "rules" => rules);
        }
        ReloadOutcome::Rejected(e) => {
            metrics.limits_reloads.with_label_values(&["rejected"]).inc();
            error!(log, "limits file rejected; the last good limits stay live"; "error" => %e);
        }
        ReloadOutcome::Unchanged => {}
    })?;
    let loaded = live.current();
    info!(start_log, "limits loaded"; "rules" => loaded.rule_count(), "domains" => loaded.domain_count());
    // Upstream accepts these (a `replaces` naming no rule): loaded, but worth a line at start.
    for warning in loaded.warnings() {
        slog::warn!(start_log, "limits file: probably a mistake"; "warning" => warning);
    }
    Ok(live)
}
