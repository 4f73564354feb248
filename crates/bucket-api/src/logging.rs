//! The process logger: slog to stdout, JSON for collectors or text for terminals, written off the request path.

use std::str::FromStr;

use slog::{o, Drain, Logger};

use crate::config::LogFormat;

/// Keeps the logging thread alive; dropping it flushes the lines still queued, so `main` holds it until exit.
pub struct LogGuard {
    _guard: slog_async::AsyncGuard,
}

/// Builds the root logger at `level` (an slog level name; unknown names fall back to `info`, since `Config`
/// validation has already rejected them) in `format`.
pub fn build(level: &str, format: LogFormat) -> (Logger, LogGuard) {
    let level = slog::Level::from_str(level).unwrap_or(slog::Level::Info);
    let (drain, guard) = match format {
        LogFormat::Json => {
            let json = slog_json::Json::new(std::io::stdout()).add_default_keys().build().fuse();
            async_drain(json)
        }
        LogFormat::Text => {
            let decorator = slog_term::PlainDecorator::new(std::io::stdout());
            async_drain(slog_term::FullFormat::new(decorator).build().fuse())
        }
    };
    let logger = Logger::root(drain.filter_level(level).fuse(), o!("service" => "bucket-api"));
    (logger, LogGuard { _guard: guard })
}

fn async_drain<D>(drain: D) -> (slog_async::Async, slog_async::AsyncGuard)
where
    D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
{
    // On overflow lines are dropped and the drop is counted in the log, never blocking: a stalled stdout must not
    // stall rate-limit decisions.
    slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("bucket-log".into())
        .build_with_guard()
}
