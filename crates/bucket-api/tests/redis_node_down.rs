//! A Redis Cluster master killed under a running app: `/readyz` shows that node down at once and the service not
//! ready while its slots are unserved, then ready again once its replica took over, the dead node still listed
//! (down) for the operator. A binary of its own: the test breaks its cluster.

mod common;
mod redis_rig;

use std::time::{Duration, Instant};

use actix_web::test::{call_service, init_service, read_body, read_body_json, TestRequest};
use bucket_api::build_app;
use bucket_store::redis::RedisMode;
use bucket_testkit::RedisCluster;
use common::metric;
use redis_rig::{addrs, nodes, redis_config, state_over};
use serde_json::Value;

#[actix_web::test]
async fn a_killed_master_shows_down_and_readiness_follows_the_cluster() {
    let cluster = RedisCluster::start();
    let app = init_service(build_app(state_over(redis_config(&cluster.url(), RedisMode::Cluster)))).await;
    let readyz = || async {
        let res = call_service(&app, TestRequest::get().uri("/readyz").to_request()).await;
        let status = res.status().as_u16();
        (status, read_body_json::<Value, _>(res).await)
    };
    let (status, body) = readyz().await;
    assert_eq!((status, &body["status"]), (200, &Value::from("ready")), "{body}");

    let victim = cluster.master_ports()[0];
    let addr = format!("127.0.0.1:{victim}");
    cluster.node(cluster.index_of(victim)).kill();
    let killed = Instant::now();

    // Its slots are unserved until the replica takes over (after the 2 s node timeout): not ready, node down.
    let deadline = killed + Duration::from_secs(10);
    loop {
        let (status, body) = readyz().await;
        let down = nodes(&body).iter().any(|(a, role, up)| a == &addr && role == "master" && !up);
        if status == 503 && body["status"] == "not_ready" && down {
            break;
        }
        assert!(Instant::now() < deadline, "the killed master never showed down: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The replica took over: every slot served again, so ready, with the dead node still listed down.
    let deadline = killed + Duration::from_secs(30);
    let body = loop {
        let (status, body) = readyz().await;
        if status == 200 && body["status"] == "ready" {
            break body;
        }
        assert!(Instant::now() < deadline, "not ready again after the failover: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let found = nodes(&body);
    assert_eq!(addrs(&found, "master", true).len(), 3, "{body}");
    assert!(found.iter().any(|(a, _, up)| a == &addr && !up), "the dead node is listed down: {body}");
    assert!(!addrs(&found, "master", true).contains(&addr));
    println!("ready again {:?} after the kill", killed.elapsed());

    let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(read_body(res).await.to_vec()).unwrap();
    assert_eq!(metric(&text, "bucket_dependency_up", &[("node", &addr)]), Some(0.0), "{text}");
}
