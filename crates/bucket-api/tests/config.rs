//! Configuration: defaults < TOML file < environment, validated once with errors naming the setting.

use std::collections::HashMap;
use std::path::PathBuf;

use bucket_api::config::{Config, ConfigError, FailureMode, LogFormat, StoreKind};
use secrecy::ExposeSecret;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A TOML file in the temp dir, removed when dropped.
struct TempToml(PathBuf);

impl TempToml {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("bucket-api-config-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).expect("write temp config");
        Self(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults_match_the_design_table() {
    let c = Config::load(None, &HashMap::new()).unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080");
    assert_eq!(c.store, StoreKind::Memory);
    assert_eq!((c.database_url.as_deref(), c.redis_url.as_deref()), (None, None));
    assert_eq!((c.capacity, c.refill_per_sec), (10, 1.0));
    assert!(c.admin_token.is_none());
    assert_eq!(c.failure_mode, FailureMode::FailOpen);
    assert_eq!((c.log_level.as_str(), c.log_format), ("info", LogFormat::Json));
    assert_eq!((c.user_header.as_str(), c.peer_fallback), ("X-User-ID", true));
    assert_eq!((c.max_body_bytes, c.evict_interval_ms), (16 * 1024, 1000));
    assert!(c.workers >= 1);
    assert_eq!(c.default_policy().unwrap().interval_us(), 1_000_000);
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let file = TempToml::new(
        r#"
        listen = "127.0.0.1:9000"
        capacity = 20
        refill_per_sec = 2.5
        failure_mode = "fail_closed"
        log_format = "text"

        [policies.premium]
        capacity = 100
        refill_per_sec = 10
        "#,
    );
    let from_file = Config::load(Some(&file.0), &HashMap::new()).unwrap();
    assert_eq!((from_file.listen.as_str(), from_file.capacity, from_file.refill_per_sec), ("127.0.0.1:9000", 20, 2.5));
    assert_eq!(from_file.failure_mode, FailureMode::FailClosed);
    assert_eq!(from_file.log_level, "info", "unset in the file: default kept");
    assert_eq!(from_file.named_policies().unwrap()["premium"].interval_us(), 100_000);

    let vars = env(&[
        ("BUCKET_CAPACITY", "30"),
        ("BUCKET_LOG_LEVEL", "debug"),
        ("BUCKET_ADMIN_TOKEN", "tok"),
        ("BUCKET_PEER_FALLBACK", "false"),
        ("BUCKET_WORKERS", "3"),
        ("BUCKET_EVICT_INTERVAL_MS", "250"),
        ("REDIS_URL", "redis://cache:6379"),
        ("UNRELATED", "ignored"),
    ]);
    let c = Config::load(Some(&file.0), &vars).unwrap();
    assert_eq!(c.capacity, 30, "env beats file");
    assert_eq!(c.refill_per_sec, 2.5, "file beats default when env is silent");
    assert_eq!(c.listen, "127.0.0.1:9000");
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.admin_token.as_ref().map(ExposeSecret::expose_secret), Some("tok"));
    assert!(!c.peer_fallback);
    assert_eq!((c.workers, c.evict_interval_ms), (3, 250));
    assert_eq!(c.redis_url.as_deref(), Some("redis://cache:6379"));
}

#[test]
fn every_documented_variable_is_read() {
    let vars = env(&[
        ("BUCKET_LISTEN", "127.0.0.1:1"),
        ("BUCKET_STORE", "tiered"),
        ("DATABASE_URL", "postgres://u:p@db/x"),
        ("REDIS_URL", "redis://r"),
        ("BUCKET_REFILL_PER_SEC", "0.5"),
        ("BUCKET_FAILURE_MODE", "fail_closed"),
        ("BUCKET_LOG_FORMAT", "text"),
        ("BUCKET_USER_HEADER", "X-Api-Key"),
        ("BUCKET_MAX_BODY_BYTES", "512"),
    ]);
    let c = Config::load(None, &vars).unwrap();
    assert_eq!(c.listen, "127.0.0.1:1");
    assert_eq!(c.store, StoreKind::Tiered);
    assert_eq!(c.database_url.as_deref(), Some("postgres://u:p@db/x"));
    assert_eq!(c.refill_per_sec, 0.5);
    assert_eq!(c.failure_mode, FailureMode::FailClosed);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.user_header, "X-Api-Key");
    assert_eq!(c.max_body_bytes, 512);
}

#[test]
fn invalid_values_are_refused_with_the_setting_named() {
    let cases: [(&[(&str, &str)], &str); 11] = [
        (&[("BUCKET_CAPACITY", "0")], "capacity must be at least 1"),
        (&[("BUCKET_CAPACITY", "ten")], "BUCKET_CAPACITY"),
        (&[("BUCKET_REFILL_PER_SEC", "0")], "refill rate must be above zero"),
        (&[("BUCKET_STORE", "mongo")], "BUCKET_STORE"),
        (&[("BUCKET_STORE", "postgres")], "DATABASE_URL"),
        (&[("BUCKET_STORE", "redis")], "REDIS_URL"),
        (&[("BUCKET_FAILURE_MODE", "shrug")], "BUCKET_FAILURE_MODE"),
        (&[("BUCKET_LOG_LEVEL", "loud")], "log_level"),
        (&[("BUCKET_USER_HEADER", "bad header")], "user_header"),
        (&[("BUCKET_PEER_FALLBACK", "maybe")], "BUCKET_PEER_FALLBACK"),
        (&[("BUCKET_WORKERS", "0")], "workers"),
    ];
    for (vars, fragment) in cases {
        let err = Config::load(None, &env(vars)).expect_err(fragment).to_string();
        assert!(err.contains(fragment), "{vars:?}: {err:?} should mention {fragment:?}");
    }
}

#[test]
fn file_mistakes_are_refused_with_the_file_and_key_named() {
    let typo = TempToml::new("capacty = 5\n");
    let err = Config::load(Some(&typo.0), &HashMap::new()).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("capacty") && chain.contains(&typo.0.display().to_string()), "{chain}");

    let reserved = TempToml::new("[policies.default]\ncapacity = 5\nrefill_per_sec = 1\n");
    let err = Config::load(Some(&reserved.0), &HashMap::new()).unwrap_err().to_string();
    assert!(err.contains("policies.default") && err.contains("reserved"), "{err}");

    let bad_policy = TempToml::new("[policies.slow]\ncapacity = 5\nrefill_per_sec = -1\n");
    let err = Config::load(Some(&bad_policy.0), &HashMap::new()).unwrap_err().to_string();
    assert!(err.contains("policies.slow") && err.contains("refill rate"), "{err}");

    let missing = Config::load(Some(std::path::Path::new("/nonexistent/bucket.toml")), &HashMap::new());
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn the_printed_configuration_hides_secrets_and_shows_every_setting() {
    let vars = env(&[
        ("BUCKET_STORE", "tiered"),
        ("DATABASE_URL", "postgres://app:pg-password@db:5432/bucket"),
        ("REDIS_URL", "redis://:redis-password@cache:6379"),
        ("BUCKET_ADMIN_TOKEN", "admin-token-value"),
    ]);
    let c = Config::load(None, &vars).unwrap();
    let printed = c.redacted().to_string();
    for secret in ["pg-password", "redis-password", "admin-token-value"] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    assert!(printed.contains("database_url = postgres://app:***@db:5432/bucket"), "{printed}");
    assert!(printed.contains("admin_token = <redacted>"), "{printed}");
    for setting in ["listen = 0.0.0.0:8080", "capacity = 10", "refill_per_sec = 1", "failure_mode = fail_open"] {
        assert!(printed.contains(setting), "{setting} missing:\n{printed}");
    }
}

#[test]
fn errors_name_the_toml_key_and_the_variable() {
    let cases: [(&str, &str, &[&str]); 4] = [
        ("BUCKET_PG_POOL_SIZE", "many", &["postgres.pool_size", "many"]),
        ("BUCKET_REDIS_TIMEOUT_MS", "0", &["redis.command_timeout_ms", "at least 1"]),
        ("BUCKET_REDIS_KEY_PREFIX", "a{b}", &["redis.key_prefix", "hash tag"]),
        ("BUCKET_CAPACITY", "0", &["capacity"]),
    ];
    for (var, value, fragments) in cases {
        let vars = [(var, value)];
        let err = Config::load(None, &env(&vars)).expect_err("refused").to_string();
        assert!(err.contains(var), "{err:?} should name {var}");
        for fragment in fragments {
            assert!(err.contains(fragment), "{vars:?}: {err:?} should mention {fragment:?}");
        }
    }
    // In the file: the key is named, units stay in the name and durations are integers.
    for (text, key) in [
        ("[redis]\ncommand_timeout = 5\n", "redis.command_timeout"),
        ("[redis]\ncommand_timeout_ms = \"5ms\"\n", "redis.command_timeout_ms"),
        ("[postgres]\nurl = \"postgres://db/x\"\n", "postgres.url"),
        ("[tiered]\nbatch_size = 5\n", "tiered.batch_size"),
    ] {
        let file = TempToml::new(text);
        let err = Config::load(Some(&file.0), &HashMap::new()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains(&format!("key `{key}`")), "{err}");
    }
}

#[test]
fn the_store_sections_read_from_the_file_and_the_environment() {
    let file = TempToml::new(
        "[postgres]\nstatement_timeout_ms = 250\n[redis]\ncommand_timeout_ms = 75\n[tiered]\nwrite_mode = \"write_behind\"\n",
    );
    let c = Config::load(
        Some(&file.0),
        &env(&[("BUCKET_REDIS_TIMEOUT_MS", " 60 "), ("BUCKET_WRITE_MODE", "write-behind")]),
    )
    .unwrap();
    assert_eq!(c.postgres.statement_timeout, std::time::Duration::from_millis(250));
    assert_eq!(c.postgres.connect_timeout, std::time::Duration::from_secs(2), "unset in the file: default kept");
    assert_eq!(c.redis.command_timeout, std::time::Duration::from_millis(60), "env beats file");
    assert_eq!(c.tiered.write_mode, bucket_api::config::WriteMode::WriteBehind);
}

#[test]
fn an_empty_variable_turns_an_optional_setting_off_even_over_the_file() {
    let file = TempToml::new("admin_token = \"from-file\"\n[postgres]\nschema = \"s\"\n");
    let c = Config::load(Some(&file.0), &env(&[("BUCKET_ADMIN_TOKEN", ""), ("BUCKET_PG_SCHEMA", " ")])).unwrap();
    assert!(c.admin_token.is_none());
    assert_eq!(c.postgres.schema, None);
    // Not every empty value unsets: an empty key prefix is a prefix.
    let c = Config::load(None, &env(&[("BUCKET_REDIS_KEY_PREFIX", "")])).unwrap();
    assert_eq!(c.redis.key_prefix, "");
}

#[test]
fn debug_output_hides_secrets_too() {
    let vars = env(&[
        ("DATABASE_URL", "postgres://app:pg-password@db:5432/bucket"),
        ("REDIS_URL", "redis://:redis-password@cache:6379"),
        ("BUCKET_ADMIN_TOKEN", "admin-token-value"),
    ]);
    let printed = format!("{:?}", Config::load(None, &vars).unwrap());
    for secret in ["pg-password", "redis-password", "admin-token-value"] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    assert!(printed.contains("db:5432"), "{printed}");
}
