//! The `bucket-tester` command: flags in, report out, exit code 0 (no FAIL), 1 (a FAIL) or 2 (could not run).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use bucket_tester::{run, Options, RunError, ScenarioName};
use clap::Parser;

/// Checks a running bucket server over HTTP: burst, refill, concurrency, independent users, drip and caching.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Base URL of the server to test: bucket-api, or a proxy in front of it that asks /v1/auth (nginx, Caddy...).
    #[arg(long, env = "BUCKET_TESTER_TARGET", default_value = "http://localhost:8080")]
    target: String,

    /// Comma-separated URLs of API instances sharing one store; `concurrent` spreads its requests over them.
    #[arg(long, value_delimiter = ',')]
    instances: Vec<String>,

    /// Scenario to run (repeatable); all when absent.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<ScenarioName>,

    /// Print only a JSON report on stdout.
    #[arg(long)]
    json: bool,

    /// No per-request lines; just the banner and the summary.
    #[arg(long, short)]
    quiet: bool,

    /// Header that names the caller.
    #[arg(long, default_value = "X-User-ID")]
    user_header: String,

    /// Seconds each request may take, connection included.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,

    /// Requests fired at once by the concurrent scenario [default: 4 × capacity, at most 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: Option<u64>,

    /// Paced requests the drip scenario sends after draining [default: capacity + 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    drip_requests: Option<u64>,

    /// Fail cache-vs-db, instead of skipping it, when the server does not use the tiered store.
    #[arg(long)]
    require_tiered: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match options(cli) {
        Ok(opts) => ExitCode::from(execute(&opts)),
        Err(msg) => {
            eprintln!("bucket-tester: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Turns flags into `Options`, rejecting values clap can't check (URLs, the timeout).
fn options(cli: Cli) -> Result<Options, String> {
    for url in std::iter::once(&cli.target).chain(&cli.instances) {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("{url}: only http:// targets are supported"));
        }
    }
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(format!("--timeout must be a positive number of seconds, got {}", cli.timeout));
    }
    Ok(Options {
        target: cli.target,
        instances: cli.instances,
        scenarios: cli.scenarios,
        json: cli.json,
        quiet: cli.quiet,
        progress: std::io::stderr().is_terminal(),
        user_header: cli.user_header,
        timeout: Duration::from_secs_f64(cli.timeout),
        concurrency: cli.concurrency.map(|c| c as usize),
        drip_requests: cli.drip_requests,
        require_tiered: cli.require_tiered,
    })
}

fn execute(opts: &Options) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bucket-tester: cannot start the async runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(report) => {
            if opts.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.summary_table());
            }
            report.exit_code() as u8
        }
        Err(e) => {
            eprintln!("bucket-tester: {e}");
            if opts.json {
                let kind = if matches!(e, RunError::Usage(_)) { "usage" } else { "unreachable" };
                println!("{}", serde_json::json!({ "ok": false, "error": kind, "detail": e.to_string() }));
            }
            2
        }
    }
}
