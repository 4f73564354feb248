//! `cargo xtask test`'s schema-fuzzing step: schemathesis, from PyPI in a virtualenv under the target dir, throws
//! generated and mutated requests at a real `bucket-api` (memory store, admin token set) and fails on any 5xx or
//! any answer the OpenAPI document does not describe, once with the admin bearer token and once without it.
//!
//! Bounded: a fixed number of examples per operation keeps the step to well under a minute on two cores once the
//! virtualenv exists (creating it downloads schemathesis once; pip's cache serves later installs). The seed is
//! random so every run explores new inputs; schemathesis prints it, and `BUCKET_FUZZ_SEED` replays a run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::process::{self, GroupChild};
use crate::{interrupt, paths};

/// The schemathesis release the step installs: pinned, so a new release cannot turn CI red by itself.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Its generator, pinned too: it releases several times a week and decides what inputs exist.
const HYPOTHESIS_VERSION: &str = "6.170.15";
/// Generated cases per operation and run: about 5 to 20 s per run here, and enough to find the classes of bug
/// (undocumented status, wrong schema, 5xx on odd input) schema fuzzing is for.
const MAX_EXAMPLES: &str = "100";
/// What a response must satisfy: no 5xx, and status, content type, headers and body as the document says.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
/// How long the API gets to answer `/healthz` after start (it is already built).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the whole step: virtualenv, build, start, two fuzzing runs, stop.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let state = paths::state_dir();
    std::fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;
    let schemathesis = ensure_schemathesis(&state.join("schemathesis-venv"))?;
    println!("  schemathesis ready in {:.1}s", started.elapsed().as_secs_f64());
    let api_binary = build_api()?;

    let port = process::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let token = format!("fuzz-{}-{}", std::process::id(), unix_nanos());
    let log_path = state.join("schemathesis-api.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(&api_binary);
    // Only what this step sets: a developer's own DATABASE_URL or BUCKET_STORE must not leak into the run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BUCKET_") || name == "DATABASE_URL" || name == "REDIS_URL" {
            command.env_remove(name.as_ref());
        }
    }
    command
        .env("BUCKET_LISTEN", addr.to_string())
        .env("BUCKET_STORE", "memory")
        .env("BUCKET_ADMIN_TOKEN", &token)
        .env("BUCKET_LOG_LEVEL", "warn")
        .env("BUCKET_LOG_FORMAT", "text")
        .env("BUCKET_WORKERS", "2")
        // The example limits, so `POST /v1/ratelimit` is fuzzed against real rules, not only its 404.
        .env("BUCKET_LIMITS", paths::workspace_root().join("deploy/limits"))
        .env("BUCKET_GRPC_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let mut api = GroupChild::spawn("bucket-api", &mut command)?;
    wait_healthy(&mut api, addr, &log_path)?;
    println!("  bucket-api answering at http://{addr}/ (log: {})", log_path.display());

    let schema_url = format!("http://{addr}/api-docs/openapi.json");
    let mut failures = Vec::new();
    for (label, auth) in [("with the admin token", Some(token.as_str())), ("without a token", None)] {
        if interrupt::requested() {
            bail!("interrupted");
        }
        let clock = Instant::now();
        println!("  schemathesis {label}:");
        let ok = fuzz(&schemathesis, &schema_url, auth)?;
        println!(
            "  schemathesis {label}: {} in {:.1}s",
            if ok { "passed" } else { "FAILED" },
            clock.elapsed().as_secs_f64()
        );
        if !ok {
            failures.push(label);
        }
        if let Some(status) = api.try_wait()? {
            bail!(
                "bucket-api exited with {status} during fuzzing\n{}",
                bucket_testkit::process::log_tail(&log_path, 30)
            );
        }
    }
    api.stop(Duration::from_secs(10));
    if !failures.is_empty() {
        bail!(
            "schemathesis found failures ({}); the report above has a curl command for each, and \
             BUCKET_FUZZ_SEED=<seed> replays the run",
            failures.join(", ")
        );
    }
    Ok(())
}

/// The virtualenv's `schemathesis`, creating the virtualenv and installing the pinned release when needed.
fn ensure_schemathesis(venv: &Path) -> Result<PathBuf> {
    let binary = venv.join("bin").join("schemathesis");
    let marker = venv.join(format!(".schemathesis-{SCHEMATHESIS_VERSION}-hypothesis-{HYPOTHESIS_VERSION}"));
    if binary.is_file() && marker.is_file() {
        return Ok(binary);
    }
    let Some(python) = which::which("python3").ok() else {
        bail!("python3 is not installed; schema fuzzing needs it (Debian: apt-get install python3 python3-venv)");
    };
    if venv.exists() {
        // A different pinned version or a half-finished install: start over rather than patch it.
        std::fs::remove_dir_all(venv).with_context(|| format!("cannot remove the old {}", venv.display()))?;
    }
    println!("  creating a virtualenv at {}", venv.display());
    process::run_checked(Command::new(&python).arg("-m").arg("venv").arg(venv))
        .context("`python3 -m venv` failed (Debian: apt-get install python3-venv)")?;
    println!("  installing schemathesis=={SCHEMATHESIS_VERSION} from PyPI (pip's cache makes reinstalls quick)");
    let pip = venv.join("bin").join("pip");
    process::run_checked(
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}"))
            .arg(format!("hypothesis=={HYPOTHESIS_VERSION}")),
    )?;
    std::fs::write(&marker, SCHEMATHESIS_VERSION).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(binary)
}

/// Builds `bucket-api` (a no-op after `cargo test`, which built it) and returns the binary's path.
fn build_api() -> Result<PathBuf> {
    let mut command = process::cargo();
    command.args(["build", "--quiet", "-p", "bucket-api", "--bin", "bucket-api"]).current_dir(paths::workspace_root());
    let status = process::run_foreground(&mut command)?;
    if !status.success() {
        bail!("`{}` exited with {status}", process::display(&command));
    }
    // `state_dir` is `<target dir>/xtask`, following CARGO_TARGET_DIR as cargo does.
    let target = paths::state_dir().parent().map(Path::to_path_buf).context("the target dir has no parent")?;
    let binary = target.join("debug").join("bucket-api");
    if !binary.is_file() {
        bail!("built bucket-api, but {} does not exist", binary.display());
    }
    Ok(binary)
}

/// Polls `GET /healthz` until it answers 200; the API exiting ends the wait with its log.
fn wait_healthy(api: &mut GroupChild, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = api.try_wait()? {
            bail!("bucket-api exited with {status} at start\n{}", bucket_testkit::process::log_tail(log, 30));
        }
        if healthz_ok(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline || interrupt::requested() {
            bail!(
                "bucket-api did not answer /healthz at {addr} within {START_TIMEOUT:?}\n{}",
                bucket_testkit::process::log_tail(log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// One schemathesis run; `Ok(false)` when it found failures (its report is on the terminal).
fn fuzz(schemathesis: &Path, schema_url: &str, token: Option<&str>) -> Result<bool> {
    let mut command = Command::new(schemathesis);
    command
        .args(["run", schema_url, "--checks", CHECKS, "--max-examples", MAX_EXAMPLES])
        // One worker: schemathesis' workers are threads, and Python 3.11.7 (this machine's) can fail `ast.parse`
        // in concurrent threads ("AST constructor recursion depth mismatch"), which reports as a run error.
        .args(["--no-color", "--generation-database", "none", "--request-timeout", "10", "--workers", "1"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    if let Ok(seed) = std::env::var("BUCKET_FUZZ_SEED") {
        command.args(["--seed", seed.trim()]);
    }
    if let Some(token) = token {
        command.arg("--header").arg(format!("Authorization: Bearer {token}"));
    }
    let status = process::run_foreground(&mut command)?;
    Ok(status.success())
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}
