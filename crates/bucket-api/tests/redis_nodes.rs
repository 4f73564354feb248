//! `/readyz` and `/metrics` name every server of a replicated Redis, with its address and role: the masters and
//! replicas of a real Redis Cluster, the master, replicas and sentinels of a real Sentinel group (the test kit's,
//! each started once for this binary).

mod common;
mod redis_rig;

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test::{call_service, init_service, read_body, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_store::redis::RedisMode;
use bucket_testkit::redis_sentinel::MASTER_NAME;
use bucket_testkit::{RedisCluster, RedisSentinelGroup};
use common::metric;
use redis_rig::{addrs, loopback, nodes, redis_config, state_over};
use serde_json::Value;

#[actix_web::test]
async fn readyz_and_metrics_list_every_cluster_node_with_its_role() {
    let cluster = RedisCluster::shared();
    let app = init_service(build_app(state_over(redis_config(&cluster.url(), RedisMode::Cluster)))).await;
    // A cluster just formed may still tell a node's role late (a replica listed as a master without slots).
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let res = call_service(&app, TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = read_body_json(res).await;
        assert_eq!(body["status"], "ready", "{body}");
        let detail = body["dependencies"][0]["detail"].as_str().unwrap();
        if detail.starts_with("cluster_state ok; 3 of 3 masters and 3 of 3 replicas answer") {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let found = nodes(&body);
    let masters = loopback(cluster.master_ports());
    assert_eq!(masters.len(), 3);
    assert_eq!(addrs(&found, "master", true), masters, "{body}");
    let all = loopback(cluster.urls().iter().map(|url| url.rsplit(':').next().unwrap().parse::<u16>().unwrap()));
    let replicas: Vec<String> = all.iter().filter(|addr| !masters.contains(addr)).cloned().collect();
    assert_eq!(addrs(&found, "replica", true), replicas, "{body}");
    assert_eq!(found.len(), 6);

    let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(read_body(res).await.to_vec()).unwrap();
    for addr in &masters {
        assert_eq!(metric(&text, "bucket_dependency_up", &[("node", addr), ("role", "master")]), Some(1.0), "{text}");
    }
    for addr in &replicas {
        assert_eq!(metric(&text, "bucket_dependency_up", &[("node", addr), ("role", "replica")]), Some(1.0));
    }
    assert!(text.lines().any(|line| line == r#"bucket_dependency_up{dependency="redis"} 1"#), "the aggregate stays");
}

#[actix_web::test]
async fn readyz_and_metrics_list_the_sentinel_groups_master_replicas_and_sentinels() {
    let group = RedisSentinelGroup::shared();
    let mut config = redis_config(&group.url(), RedisMode::Sentinel);
    config.sentinel_master = Some(MASTER_NAME.to_owned());
    let app = init_service(build_app(state_over(config))).await;
    let res = call_service(&app, TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = read_body_json(res).await;
    assert_eq!(body["status"], "ready", "{body}");
    let master = format!("127.0.0.1:{}", group.master_port());
    let detail = body["dependencies"][0]["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("master {master} answers (named by 3 of 3 sentinels)")), "{detail}");

    let found = nodes(&body);
    assert_eq!(addrs(&found, "master", true), vec![master.clone()], "{body}");
    assert_eq!(addrs(&found, "replica", true).len(), 2, "{body}");
    let sentinels = loopback(group.url().split(',').map(|url| url.rsplit(':').next().unwrap().parse::<u16>().unwrap()));
    assert_eq!(addrs(&found, "sentinel", true), sentinels, "{body}");

    let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(read_body(res).await.to_vec()).unwrap();
    assert_eq!(metric(&text, "bucket_dependency_up", &[("node", &master), ("role", "master")]), Some(1.0), "{text}");
    for addr in &sentinels {
        assert_eq!(metric(&text, "bucket_dependency_up", &[("node", addr), ("role", "sentinel")]), Some(1.0));
    }
}
