//! `bucket-tester --target <proxy URL>`: the burst, concurrent and multi-user scenarios pass through a real nginx
//! and a real Caddy configured from `deploy/proxies/` in front of bucket-api (`deploy/proxies/bucket.toml`, the
//! README's setup) and an application. The tester only needs the rate-limit headers to come through.

use bucket_api::Config;
use bucket_tester::{run, Options, ScenarioName, Verdict};
use bucket_testkit::snippets::{caddy_site, nginx_site, snippet};
use bucket_testkit::{free_port, Caddy, CountingUpstream, Nginx, SnippetAddrs};

const SCENARIOS: [ScenarioName; 3] = [ScenarioName::Burst, ScenarioName::Concurrent, ScenarioName::MultiUser];

async fn scenarios_pass_through(start_proxy: impl FnOnce(SnippetAddrs) -> (String, Box<dyn FnOnce() -> String>)) {
    let mut config = Config::from_toml_str(&snippet("bucket.toml")).expect("deploy/proxies/bucket.toml parses");
    config.listen = "127.0.0.1:0".into();
    config.workers = 2;
    let api = bucket_api::start(config, slog::Logger::root(slog::Discard, slog::o!())).await.expect("api starts");
    let upstream = CountingUpstream::start().await;
    let addrs = SnippetAddrs { bucket: api.addr(), app: upstream.addr(), listen_port: free_port() };
    let (target, logs) = start_proxy(addrs);

    let options = Options { target, scenarios: SCENARIOS.to_vec(), ..Options::default() };
    let report = run(&options).await.expect("the proxy answers");
    let proxy_logs = logs();
    api.stop().await;

    let policy = report.policy.as_ref().expect("policy learned through the proxy");
    assert_eq!((policy.capacity, policy.refill_per_sec), (10, 1.0), "from RateLimit-Policy q=10;w=10");
    assert_eq!(report.scenarios.len(), SCENARIOS.len());
    for s in &report.scenarios {
        assert_eq!(s.verdict, Verdict::Pass, "{}: {}\n{proxy_logs}", s.name, s.reason);
    }
    assert_eq!(report.exit_code(), 0);
    // What the application received is what bucket allowed: the probe, then capacity per burst and concurrent
    // user and per multi-user user (plus any token refilled while a scenario ran, which the tester allows for).
    let reached = upstream.count();
    assert!((1 + 10 * 5..=1 + 10 * 5 + 5).contains(&reached), "{reached} requests reached the application");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_concurrent_and_multi_user_pass_through_nginx() {
    scenarios_pass_through(|addrs| {
        let nginx = Nginx::start(&nginx_site(addrs), addrs.listen_port);
        (nginx.url(), Box::new(move || nginx.logs()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_concurrent_and_multi_user_pass_through_caddy() {
    scenarios_pass_through(|addrs| {
        let caddy = Caddy::start(&caddy_site(addrs), addrs.listen_port);
        (caddy.url(), Box::new(move || caddy.logs()))
    })
    .await;
}
