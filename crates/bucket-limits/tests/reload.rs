//! Hot reload through the real file watcher: edits, `mv` replacements and ConfigMap symlink swaps are picked up, an
//! invalid edit keeps the last good set. Each test waits for the reload by polling with a deadline.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_limits::{LimitsError, LiveLimits, ReloadOutcome};

const DEADLINE: Duration = Duration::from_secs(20);

/// A valid file for `domain` with `rules` rules.
fn limits_text(domain: &str, rules: usize) -> String {
    let mut text = format!("domain: {domain}\ndescriptors:\n");
    for i in 0..rules {
        text.push_str(&format!("  - key: k{i}\n    rate_limit: {{ unit: second, requests_per_unit: 1 }}\n"));
    }
    text
}

fn watch(path: &Path) -> (LiveLimits, Receiver<ReloadOutcome>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let live = LiveLimits::watch(path, move |outcome| {
        let _ = tx.lock().map(|tx| tx.send(outcome));
    })
    .expect("initial load");
    (live, rx)
}

fn wait_for_rules(live: &LiveLimits, rules: usize) {
    let start = Instant::now();
    while live.current().rule_count() != rules {
        assert!(start.elapsed() < DEADLINE, "still {} rules, expected {rules}", live.current().rule_count());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_outcome(rx: &Receiver<ReloadOutcome>, wanted: impl Fn(&ReloadOutcome) -> bool) -> ReloadOutcome {
    let start = Instant::now();
    loop {
        let left = DEADLINE.checked_sub(start.elapsed()).expect("no matching reload outcome before the deadline");
        let outcome = rx.recv_timeout(left).expect("no matching reload outcome before the deadline");
        if wanted(&outcome) {
            return outcome;
        }
    }
}

#[test]
fn an_edit_in_place_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, limits_text("d", 1)).expect("write");
    let (live, rx) = watch(&file);
    assert_eq!(live.current().rule_count(), 1);
    fs::write(&file, limits_text("d", 3)).expect("write");
    wait_for_rules(&live, 3);
    wait_for_outcome(&rx, |o| *o == ReloadOutcome::Loaded { rules: 3 });
    assert_eq!(live.last_error(), None);
}

#[test]
fn an_invalid_edit_keeps_the_last_good_set_until_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, limits_text("d", 2)).expect("write");
    let (live, rx) = watch(&file);
    let before = live.current();
    fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
    )
    .expect("write");
    let rejected = wait_for_outcome(&rx, |o| matches!(o, ReloadOutcome::Rejected(_)));
    let ReloadOutcome::Rejected(LimitsError::Invalid { problem, .. }) = rejected else {
        panic!("expected a validation error, got {rejected:?}");
    };
    assert_eq!(problem, "invalid rate limit unit 'fortnight'");
    assert!(Arc::ptr_eq(&before, &live.current()), "the last good set stays in force");
    assert!(live.last_error().is_some_and(|e| e.contains("fortnight")));
    assert_eq!(live.reload_now(), ReloadOutcome::Unchanged, "the same bad content is not reported twice");

    fs::write(&file, limits_text("d", 4)).expect("write");
    wait_for_rules(&live, 4);
    assert_eq!(live.last_error(), None);
}

#[test]
fn a_file_moved_over_the_watched_one_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, limits_text("d", 1)).expect("write");
    let (live, _rx) = watch(&file);
    let staged = dir.path().join("limits.yaml.tmp");
    fs::write(&staged, limits_text("d", 5)).expect("write");
    fs::rename(&staged, &file).expect("mv");
    wait_for_rules(&live, 5);
}

#[test]
fn a_configmap_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path();
    let first = mount.join("..2026_12_02_01_00_00.1");
    fs::create_dir(&first).expect("mkdir");
    fs::write(first.join("limits.yaml"), limits_text("cm", 1)).expect("write");
    symlink("..2026_12_02_01_00_00.1", mount.join("..data")).expect("symlink");
    symlink("..data/limits.yaml", mount.join("limits.yaml")).expect("symlink");
    let (live, _rx) = watch(mount);
    assert_eq!(live.current().rule_count(), 1);

    // The kubelet's update: a new timestamped directory, a new `..data` link renamed over the old one, the old
    // directory removed.
    let second = mount.join("..2026_12_02_01_05_00.2");
    fs::create_dir(&second).expect("mkdir");
    fs::write(second.join("limits.yaml"), limits_text("cm", 2)).expect("write");
    symlink("..2026_12_02_01_05_00.2", mount.join("..data_tmp")).expect("symlink");
    fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    fs::remove_dir_all(&first).expect("rm old");
    wait_for_rules(&live, 2);
}

#[test]
fn a_watched_file_inside_a_configmap_follows_the_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path();
    fs::create_dir(mount.join("..v1")).expect("mkdir");
    fs::write(mount.join("..v1/limits.yaml"), limits_text("cm", 1)).expect("write");
    symlink("..v1", mount.join("..data")).expect("symlink");
    symlink("..data/limits.yaml", mount.join("limits.yaml")).expect("symlink");
    let (live, _rx) = watch(&mount.join("limits.yaml"));
    fs::create_dir(mount.join("..v2")).expect("mkdir");
    fs::write(mount.join("..v2/limits.yaml"), limits_text("cm", 3)).expect("write");
    symlink("..v2", mount.join("..data_tmp")).expect("symlink");
    fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    wait_for_rules(&live, 3);
}

#[test]
fn a_swapped_directory_symlink_is_followed_for_later_edits() {
    // upstream's default layout: the configured root is a symlink that deployments point at a new directory.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("v1")).expect("mkdir");
    fs::write(dir.path().join("v1/limits.yaml"), limits_text("d", 1)).expect("write");
    fs::create_dir(dir.path().join("v2")).expect("mkdir");
    fs::write(dir.path().join("v2/limits.yaml"), limits_text("d", 2)).expect("write");
    let current = dir.path().join("current");
    symlink("v1", &current).expect("symlink");
    let (live, _rx) = watch(&current);
    symlink("v2", dir.path().join("current.tmp")).expect("symlink");
    fs::rename(dir.path().join("current.tmp"), &current).expect("swap");
    wait_for_rules(&live, 2);
    fs::write(dir.path().join("v2/limits.yaml"), limits_text("d", 6)).expect("write");
    wait_for_rules(&live, 6);
}

#[test]
fn reload_now_reports_unchanged_files_as_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, limits_text("d", 1)).expect("write");
    let (live, rx) = watch(&file);
    assert_eq!(live.reload_now(), ReloadOutcome::Unchanged);
    wait_for_outcome(&rx, |o| *o == ReloadOutcome::Unchanged);
}

#[test]
fn an_invalid_initial_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, "domain: ''\n").expect("write");
    let err = LiveLimits::watch(&file, |_| {}).expect_err("invalid");
    assert!(err.to_string().contains("config file cannot have empty domain"), "{err}");
}

#[test]
fn dropping_the_live_limits_stops_the_watcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.yaml");
    fs::write(&file, limits_text("d", 1)).expect("write");
    let witness = Arc::new(());
    let held = Arc::clone(&witness);
    let live = LiveLimits::watch(&file, move |_| {
        let _ = &held;
    })
    .expect("initial load");
    assert_eq!(Arc::strong_count(&witness), 2);
    drop(live);
    assert_eq!(Arc::strong_count(&witness), 1, "the watcher thread and its callback are gone");
}
