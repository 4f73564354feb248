//! Which files a path means: one file, or every YAML file under a directory, ConfigMap volumes included.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use bucket_limits::{Descriptor, Limits, LimitsError};

fn rule(domain: &str) -> String {
    format!("domain: {domain}\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: second, requests_per_unit: 1 }}\n")
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, text).expect("write");
}

#[test]
fn a_directory_loads_every_yaml_file_recursively_and_skips_hidden_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("a.yaml"), &rule("a"));
    write(&dir.path().join("b.yml"), &rule("b"));
    write(&dir.path().join("sub/c.YAML"), &rule("c"));
    write(&dir.path().join("notes.txt"), "not: limits\n");
    write(&dir.path().join(".hidden.yaml"), &rule("hidden"));
    write(&dir.path().join(".git/x.yaml"), &rule("git"));
    let limits = Limits::load(dir.path()).expect("valid directory");
    assert_eq!((limits.domain_count(), limits.rule_count()), (3, 3));
    for domain in ["a", "b", "c"] {
        assert!(limits.has_domain(domain), "{domain}");
    }
    assert!(!limits.has_domain("hidden") && !limits.has_domain("git"));
}

#[test]
fn a_configmap_volume_counts_each_file_once() {
    // What the kubelet writes: the data in a hidden timestamped directory, `..data` pointing at it, and one
    // symlink per key through `..data`.
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("..2026_12_02_01_00_00.1/limits.yaml"), &rule("cm"));
    symlink("..2026_12_02_01_00_00.1", dir.path().join("..data")).expect("symlink");
    symlink("..data/limits.yaml", dir.path().join("limits.yaml")).expect("symlink");
    let limits = Limits::load(dir.path()).expect("no duplicate domain");
    assert_eq!(limits.domain_count(), 1);
    let matched = limits.resolve("cm", &[Descriptor::new([("k", "v")])]);
    assert!(matched[0].is_some());
}

#[test]
fn a_file_path_loads_that_file_whatever_its_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.conf");
    write(&file, &rule("f"));
    assert_eq!(Limits::load(&file).expect("valid").rule_count(), 1);
}

#[test]
fn errors_name_the_file_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("good.yaml"), &rule("good"));
    write(
        &dir.path().join("zbad.yaml"),
        "domain: bad\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
    );
    let err = Limits::load(dir.path()).expect_err("invalid");
    let bad = dir.path().join("zbad.yaml").display().to_string();
    assert_eq!(err.to_string(), format!("{bad}: bad.k: invalid rate limit unit 'fortnight'"));
    write(&dir.path().join("zbad.yaml"), &rule("good"));
    let err = Limits::load(dir.path()).expect_err("duplicate");
    assert!(matches!(err, LimitsError::DuplicateDomain { ref file, .. } if *file == bad), "{err}");
}

#[test]
fn a_missing_path_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let err = Limits::load(&missing).expect_err("missing");
    assert!(matches!(err, LimitsError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{}: cannot read: ", missing.display())), "{err}");
}

#[test]
fn an_empty_directory_is_an_empty_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits::load(dir.path()).expect("empty is valid, as upstream");
    assert_eq!((limits.domain_count(), limits.rule_count()), (0, 0));
}
