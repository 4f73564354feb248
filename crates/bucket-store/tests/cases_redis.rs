//! The shared case table run through the Lua script in a real Redis, at the case's explicit instant.

mod common;

use std::collections::HashMap;

use bucket_core::{Policy, Wait};
use bucket_store::redis::OnMiss;
use bucket_store::Limit;
use bucket_testkit::Shared;
use common::cases::CASES;
use deadpool_redis::redis;

#[tokio::test]
async fn script_matches_every_case() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    for (i, case) in CASES.iter().enumerate() {
        let policy = Policy::from_interval_us(case.capacity, case.interval_us).unwrap();
        let key = format!("case-{i}");
        let bucket = store.bucket_key(&key);
        if let Some((tokens, last)) = case.stored {
            let _: () = redis::cmd("HSET")
                .arg(&bucket)
                .arg("t")
                .arg(tokens)
                .arg("l")
                .arg(last)
                .arg("v")
                .arg(0)
                .query_async(&mut conn)
                .await
                .unwrap();
        }

        let decided = store.decide_at(&key, &policy, case.cost, Some(case.now_us), OnMiss::Full).await.unwrap();
        let decided = decided.expect("full mode never reports a miss");
        assert_eq!(decided.decision.allowed, case.allowed, "{}", case.name);
        assert_eq!(decided.decision.remaining, case.remaining, "{}", case.name);
        let retry = decided.decision.retry_after.map(|wait| match wait {
            Wait::After(us) => us,
            Wait::Never => u64::MAX,
        });
        assert_eq!(retry, case.retry_after_us, "{}", case.name);
        assert!(!decided.created, "{}", case.name);

        let hash: HashMap<String, String> = redis::cmd("HGETALL").arg(&bucket).query_async(&mut conn).await.unwrap();
        match case.after {
            // A refused check on a key never seen writes nothing.
            None => assert!(hash.is_empty(), "{}: {hash:?}", case.name),
            Some((tokens, last)) => {
                // Allowed checks bump the version; refused ones leave it (and everything else) alone.
                let version = u64::from(case.allowed);
                let expected: HashMap<String, String> =
                    [("t", tokens.to_string()), ("l", last.to_string()), ("v", version.to_string())]
                        .into_iter()
                        .map(|(field, value)| (field.to_owned(), value))
                        .collect();
                assert_eq!(hash, expected, "{}", case.name);
                assert_eq!((decided.after.state.tokens, decided.after.state.last_refill_us), (tokens, last));
                assert_eq!(decided.after.version, version, "{}", case.name);
            }
        }
    }
}

/// The same table through the multi-key script (`token_buckets.lua`), each case beside a limit of cost 0 that is
/// always allowed: the request's verdict and the case's hash must be exactly the single-key script's.
#[tokio::test]
async fn multi_key_script_matches_every_case() {
    let shared = Shared::new();
    let store = &shared.store;
    let mut conn = shared.raw().await;
    for (i, case) in CASES.iter().enumerate() {
        let policy = Policy::from_interval_us(case.capacity, case.interval_us).unwrap();
        let (key, free) = (format!("case-{i}"), format!("free-{i}"));
        let bucket = store.bucket_key(&key);
        if let Some((tokens, last)) = case.stored {
            let fields = [("t", tokens), ("l", last), ("v", 0)];
            let _: () = redis::cmd("HSET").arg(&bucket).arg(&fields[..]).query_async(&mut conn).await.unwrap();
        }
        let limits = [Limit { key: &free, policy, cost: 0 }, Limit { key: &key, policy, cost: case.cost }];
        let out = store.check_all_at(&limits, Some(case.now_us)).await.unwrap();
        assert_eq!(out.allowed, case.allowed, "{}", case.name);
        let d = out.decisions[1];
        assert_eq!((d.allowed, d.remaining), (case.allowed, case.remaining), "{}", case.name);
        let retry = d.retry_after.map(|wait| match wait {
            Wait::After(us) => us,
            Wait::Never => u64::MAX,
        });
        assert_eq!(retry, case.retry_after_us, "{}", case.name);
        let hash: HashMap<String, String> = redis::cmd("HGETALL").arg(&bucket).query_async(&mut conn).await.unwrap();
        match case.after {
            None => assert!(hash.is_empty(), "{}: {hash:?}", case.name),
            Some((tokens, last)) => {
                let version = u64::from(case.allowed);
                let expected: HashMap<String, String> =
                    [("t", tokens.to_string()), ("l", last.to_string()), ("v", version.to_string())]
                        .into_iter()
                        .map(|(field, value)| (field.to_owned(), value))
                        .collect();
                assert_eq!(hash, expected, "{}", case.name);
            }
        }
    }
}
