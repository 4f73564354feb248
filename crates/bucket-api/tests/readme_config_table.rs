//! The README's configuration table is the contract with operators: every environment variable it lists is read,
//! and sets exactly the setting its row names, the same way the TOML key does; every variable the service reads
//! is listed there.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use bucket_api::config::Config;
use bucket_api::config_env;

/// A value for each variable that differs from the default and passes validation.
const SAMPLES: &[(&str, &str)] = &[
    ("BUCKET_LISTEN", "127.0.0.1:9"),
    ("BUCKET_STORE", "tiered"),
    ("DATABASE_URL", "postgres://app@db:5432/x"),
    ("REDIS_URL", "redis://cache:6380"),
    ("BUCKET_CAPACITY", "20"),
    ("BUCKET_REFILL_PER_SEC", "0.5"),
    ("BUCKET_ADMIN_TOKEN", "s3cret"),
    ("BUCKET_FAILURE_MODE", "fail_closed"),
    ("BUCKET_LOG_LEVEL", "debug"),
    ("BUCKET_LOG_FORMAT", "text"),
    ("BUCKET_USER_HEADER", "X-Api-Key"),
    ("BUCKET_PEER_FALLBACK", "false"),
    ("BUCKET_MAX_BODY_BYTES", "512"),
    ("BUCKET_WORKERS", "3"),
    ("BUCKET_EVICT_INTERVAL_MS", "250"),
    ("BUCKET_TRUSTED_PROXIES", "10.0.0.0/8"),
    ("BUCKET_IPV6_PREFIX", "56"),
    ("BUCKET_PG_POOL_SIZE", "4"),
    ("BUCKET_PG_CONNECT_TIMEOUT_MS", "300"),
    ("BUCKET_PG_STATEMENT_TIMEOUT_MS", "400"),
    ("BUCKET_PG_SCHEMA", "tenant_a"),
    ("BUCKET_PG_TLS_CA_FILE", "/etc/bucket/pg-ca.pem"),
    ("BUCKET_PG_PRUNE_INTERVAL_MS", "30000"),
    ("BUCKET_PG_PRUNE_BATCH_SIZE", "500"),
    ("BUCKET_REDIS_POOL_SIZE", "8"),
    ("BUCKET_REDIS_TIMEOUT_MS", "50"),
    ("BUCKET_REDIS_CONNECT_TIMEOUT_MS", "700"),
    ("BUCKET_REDIS_KEY_PREFIX", "app:"),
    ("BUCKET_REDIS_TLS_CA_FILE", "/etc/bucket/redis-ca.pem"),
    ("BUCKET_REDIS_MODE", "cluster"),
    ("BUCKET_REDIS_SENTINEL_MASTER", "mymaster"),
    ("BUCKET_REDIS_WAIT_REPLICAS", "1"),
    ("BUCKET_WRITE_MODE", "write_behind"),
    ("BUCKET_FLUSH_INTERVAL_MS", "9"),
    ("BUCKET_RETRY_INTERVAL_MS", "900"),
    ("BUCKET_WRITE_QUEUE_CAPACITY", "77"),
    ("BUCKET_COMMIT_WINDOW_US", "250"),
    ("BUCKET_POLICY_CACHE_TTL_MS", "2500"),
    ("BUCKET_REFUSAL_CACHE_TTL_MS", "750"),
    ("BUCKET_LIMITS", "/etc/bucket/limits"),
    ("BUCKET_GRPC_LISTEN", "127.0.0.1:9081"),
    ("BUCKET_SHADOW_MODE", "true"),
    ("BUCKET_RLS_RESPONSE_HEADERS", "all"),
];

/// (TOML key as `section.key`, variable) for every row of the README's configuration table that has a variable.
fn readme_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let section = readme.split("\n## Configuration\n").nth(1).expect("README has a Configuration section");
    // The first table of the section, up to its first subsection (TLS has tables of its own).
    let section = section.split("\n#").next().unwrap();
    let backticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (keys, vars) = (backticked(cells[1]), backticked(cells[2]));
        if cells[2] == "TOML only" {
            continue;
        }
        assert_eq!(keys.len(), vars.len(), "README row pairs keys with variables one to one: {line}");
        // `[postgres] connect_timeout_ms`, `statement_timeout_ms`: the section applies to the whole row.
        let prefix = keys[0].strip_prefix('[').and_then(|k| k.split_once("] ")).map(|(s, _)| format!("{s}."));
        for (key, var) in keys.iter().zip(vars) {
            let key = key.split_once("] ").map_or(key.as_str(), |(_, k)| k);
            rows.push((format!("{}{key}", prefix.as_deref().unwrap_or("")), var));
        }
    }
    assert!(rows.len() > 20, "the table parsed: {rows:?}");
    rows
}

/// The same value as a TOML literal: numbers and booleans bare, lists as arrays, the rest quoted.
fn toml_literal(key: &str, text: &str) -> String {
    if key == "trusted_proxies" {
        format!("[{text:?}]")
    } else if text.parse::<f64>().is_ok() || text.parse::<bool>().is_ok() {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

fn toml_file(key: &str, literal: &str) -> String {
    match key.split_once('.') {
        Some((section, field)) => format!("[{section}]\n{field} = {literal}\n"),
        None => format!("{key} = {literal}\n"),
    }
}

#[test]
fn every_readme_variable_sets_its_own_setting_as_the_toml_key_does() {
    // Both URLs present, so `store = tiered` validates; a row about a URL replaces its own.
    let base: HashMap<String, String> = [("DATABASE_URL", "postgres://base@db/x"), ("REDIS_URL", "redis://base")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    let baseline = Config::load(None, &base).unwrap().redacted().entries();
    let dir = std::env::temp_dir().join(format!("bucket-readme-table-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (key, var) in readme_rows() {
        assert_eq!(config_env::variable_for(&key), Some(var.as_str()), "README maps {var} to {key}");
        let (_, text) = SAMPLES.iter().find(|(v, _)| *v == var).unwrap_or_else(|| panic!("no sample for {var}"));

        let mut env = base.clone();
        env.insert(var.clone(), text.to_string());
        let from_env = Config::load(None, &env).unwrap_or_else(|e| panic!("{var}={text}: {e}")).redacted().entries();

        let file = dir.join(format!("{var}.toml"));
        std::fs::write(&file, toml_file(&key, &toml_literal(&key, text))).unwrap();
        let mut without_var = base.clone();
        without_var.remove(&var);
        let from_toml =
            Config::load(Some(&file), &without_var).unwrap_or_else(|e| panic!("{key}: {e}")).redacted().entries();

        assert_eq!(from_env, from_toml, "{var} and `{key}` set the same");
        let changed: Vec<&str> =
            from_env.iter().zip(&baseline).filter(|(a, b)| a != b).map(|((name, _), _)| *name).collect();
        assert_eq!(changed, [key.as_str()], "{var}={text} changes exactly `{key}`");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_variable_the_service_reads_is_in_the_readme() {
    let documented: BTreeSet<String> = readme_rows().into_iter().map(|(_, var)| var).collect();
    let read: BTreeSet<String> = config_env::variables().map(|(var, _)| var.to_owned()).collect();
    assert_eq!(read, documented);
}
