//! The `bucket-tester` command: flags in, report out, exit code 0 (no FAIL), 1 (a FAIL) or 2 (could not run).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use bucket_tester::{run, Descriptors, GrpcTarget, Options, RunError, ScenarioName};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

/// Checks a running bucket server over HTTP, or its gateway front over gRPC as Envoy calls it: burst, refill,
/// concurrency, independent users, drip and caching.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Over gRPC (Envoy's ShouldRateLimit), each request carries the --descriptor entries with {user} \
                  replaced by the scenario's user id, e.g.\n  bucket-tester --grpc http://127.0.0.1:8081 --domain \
                  edge --user-key remote_address\n  bucket-tester --grpc http://127.0.0.1:8081 --domain services \
                  --descriptor 'to_cluster=search,user={user}'\nThe limit is read from the judged descriptor's \
                  current_limit (the first descriptor with {user}): rate = requests_per_unit per unit, capacity = \
                  RateLimit-Policy q when the server adds the header, else what a fresh bucket shows \
                  (limit_remaining + 1, the burst of a burst: rule)."
)]
struct Cli {
    /// Base URL of the server to test: bucket-api, or a proxy in front of it that asks /v1/auth (nginx, Caddy...).
    #[arg(long, env = "BUCKET_TESTER_TARGET", default_value = "http://localhost:8080")]
    target: String,

    /// Test the gateway front instead: URL of Envoy's gRPC rate limit service (bucket-api's BUCKET_GRPC_LISTEN,
    /// e.g. http://127.0.0.1:8081). Needs --domain and descriptors (--descriptor and/or --user-key).
    #[arg(long, value_name = "URL")]
    grpc: Option<String>,

    /// With --grpc: the limits' domain, as Envoy's rate limit filter names it.
    #[arg(long, requires = "grpc")]
    domain: Option<String>,

    /// With --grpc: one descriptor, `key=value[,key=value...]` outermost first (repeatable, sent in order). `{user}`
    /// in a value stands for the scenario's user id; at least one descriptor must contain it (or --user-key).
    #[arg(long = "descriptor", value_name = "KEY=VALUE[,...]", requires = "grpc")]
    descriptors: Vec<String>,

    /// With --grpc: the entry whose value is the user id (written `KEY` or `KEY=anything` in a --descriptor); alone,
    /// the only descriptor is `KEY={user}`.
    #[arg(long, value_name = "KEY", requires = "grpc")]
    user_key: Option<String>,

    /// Comma-separated URLs of API instances sharing one store (gRPC URLs with --grpc); `concurrent` spreads its
    /// requests over them.
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

    /// Header that names the caller (HTTP only).
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
    let matches = Cli::command().get_matches();
    let target_given = matches.value_source("target") == Some(ValueSource::CommandLine);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if target_given && cli.grpc.is_some() {
        eprintln!("bucket-tester: --target and --grpc name two servers; give one");
        return ExitCode::from(2);
    }
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
    let grpc = match &cli.grpc {
        None => None,
        Some(_) => {
            let Some(domain) = cli.domain.clone().filter(|d| !d.is_empty()) else {
                return Err("--grpc needs --domain NAME: the domain of the limits to test".into());
            };
            if cli.require_tiered {
                return Err("--require-tiered needs HTTP: a gRPC answer does not name the store".into());
            }
            Some(GrpcTarget { domain, descriptors: Descriptors::parse(&cli.descriptors, cli.user_key.as_deref())? })
        }
    };
    let target = cli.grpc.clone().unwrap_or(cli.target.clone());
    for url in std::iter::once(&target).chain(&cli.instances) {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("{url}: only http:// targets are supported"));
        }
    }
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(format!("--timeout must be a positive number of seconds, got {}", cli.timeout));
    }
    Ok(Options {
        target,
        grpc,
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
