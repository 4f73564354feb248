//! An unreachable target is a usage problem (exit 2, a message saying how to start the server), not a FAIL, and
//! the tester says so at once instead of retrying.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn an_unreachable_target_exits_2_quickly_with_advice() {
    // A port that was free a moment ago: nothing listens there, so connecting is refused at once.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let target = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_bucket-tester"))
        .args(["--target", &target, "--timeout", "3"])
        .output()
        .expect("binary runs");
    let elapsed = started.elapsed();

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot reach {target}: is bucket-api running?")), "{stderr}");
    assert!(stderr.contains("cargo run -p bucket-api"), "{stderr}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(output.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn a_malformed_target_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_bucket-tester")).args(["--target", "not a url"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a URL"));
}
