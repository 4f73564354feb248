//! A Redis Cluster master killed under a running app: `/readyz` shows that node down at once and the service not
//! ready while its slots are unserved, then ready again once its replica took over, the dead node still listed
//! (down) for the operator. Hung nodes cost the probe one command timeout, not one each. A binary of its own: the
//! tests break their clusters.

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

/// Two replicas hung (SIGSTOP: the kernel still accepts connections, nothing answers): `/readyz` stays ready (every
/// master answers), lists both down with the bound that passed, and answers after about one command timeout (500
/// ms), where pinging one node after the other would take two.
#[actix_web::test]
async fn hung_nodes_cost_one_command_timeout_not_one_each() {
    let cluster = RedisCluster::start();
    let app = init_service(build_app(state_over(redis_config(&cluster.url(), RedisMode::Cluster)))).await;
    let readyz = || async {
        let res = call_service(&app, TestRequest::get().uri("/readyz").to_request()).await;
        let status = res.status().as_u16();
        (status, read_body_json::<Value, _>(res).await)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while addrs(&nodes(&readyz().await.1), "replica", true).len() < 3 {
        assert!(Instant::now() < deadline, "the replicas never all answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let masters = cluster.master_ports();
    let replicas: Vec<u16> = (0..6).map(|i| cluster.node(i).port()).filter(|p| !masters.contains(p)).collect();
    for &port in &replicas[..2] {
        cluster.node(cluster.index_of(port)).freeze();
    }
    let started = Instant::now();
    let (status, body) = readyz().await;
    let took = started.elapsed();
    for &port in &replicas[..2] {
        cluster.node(cluster.index_of(port)).thaw();
    }
    assert_eq!((status, &body["status"]), (200, &Value::from("ready")), "{body}");
    let hung = loopback_down(&body);
    assert_eq!(hung, redis_rig::loopback(replicas[..2].iter().copied()), "{body}");
    let text = body.to_string();
    assert!(text.contains("timed out") || text.contains("no answer within 500 ms"), "{body}");
    println!("/readyz with two hung replicas answered in {took:?}");
    assert!(took < Duration::from_millis(950), "{took:?}: the hung nodes were not probed at once");
}

/// The addresses of the nodes listed down, sorted.
fn loopback_down(body: &Value) -> Vec<String> {
    let mut down: Vec<String> = nodes(body).into_iter().filter(|(_, _, up)| !up).map(|(addr, _, _)| addr).collect();
    down.sort();
    down
}
