//! The gateway front as Envoy reaches it: a real server with a limits file in a temporary directory, its gRPC port
//! called by the generated `RateLimitService` client over TCP, and `POST /v1/ratelimit` by HTTP.
#![allow(dead_code)] // each suite uses its own subset

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bucket_api::{Config, Running};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Channel;

/// A started service with a limits file.
pub struct Gateway {
    pub running: Running,
    pub url: String,
    pub http: reqwest::Client,
    pub grpc: RateLimitServiceClient<Channel>,
    pub limits: PathBuf,
    pub dir: tempfile::TempDir,
}

/// Writes `yaml` as the limits file of `config` (in a fresh directory) and points the gRPC front at a free port.
pub fn with_limits(mut config: Config, yaml: &str) -> (Config, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let limits = dir.path().join("limits.yaml");
    std::fs::write(&limits, yaml).expect("limits written");
    config.rls.limits = Some(limits.clone());
    config.rls.grpc_listen = "127.0.0.1:0".into();
    config.listen = "127.0.0.1:0".into();
    (config, dir, limits)
}

impl Gateway {
    /// Starts the service on `config` with `yaml` as its limits, logs discarded.
    pub async fn start(config: Config, yaml: &str) -> Self {
        let (config, dir, limits) = with_limits(config, yaml);
        Self::start_prepared(config, dir, limits).await
    }

    /// Starts a second instance sharing `other`'s limits file (and whatever stores `config` names).
    pub async fn beside(config: Config, other: &Gateway) -> Self {
        let mut config = config;
        config.rls.limits = Some(other.limits.clone());
        config.rls.grpc_listen = "127.0.0.1:0".into();
        config.listen = "127.0.0.1:0".into();
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::start_prepared(config, dir, other.limits.clone()).await
    }

    async fn start_prepared(config: Config, dir: tempfile::TempDir, limits: PathBuf) -> Self {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let running = bucket_api::start(config, log).await.expect("bucket-api starts");
        let grpc_addr = running.grpc_addr().expect("the gRPC front is on with a limits file");
        let grpc = RateLimitServiceClient::connect(format!("http://{grpc_addr}")).await.expect("gRPC connects");
        let url = format!("http://{}", running.addr());
        Self { running, url, http: reqwest::Client::new(), grpc, limits, dir }
    }

    /// `ShouldRateLimit`, expecting an answer.
    pub async fn ask(&self, request: RateLimitRequest) -> RateLimitResponse {
        self.try_ask(request).await.expect("an OK gRPC status")
    }

    /// `ShouldRateLimit`, the gRPC status kept.
    pub async fn try_ask(&self, request: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        self.grpc.clone().should_rate_limit(request).await.map(tonic::Response::into_inner)
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }

    /// One sample of `/metrics`, 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::common::metric(&self.metrics().await, name, labels).unwrap_or(0.0)
    }

    /// `GET /readyz` as JSON.
    pub async fn readyz(&self) -> serde_json::Value {
        self.http.get(format!("{}/readyz", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// Asks `request` until `ok` holds for its answer, for at most five seconds (a reload is asynchronous).
    pub async fn eventually(&self, request: RateLimitRequest, ok: impl Fn(&RateLimitResponse) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self.ask(request.clone()).await;
            if ok(&answer) {
                return;
            }
            assert!(Instant::now() < deadline, "still {answer:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops HTTP and gRPC, flushing the store.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A request in `domain` with one descriptor per entry list, each entry a (key, value).
pub fn request(domain: &str, descriptors: &[&[(&str, &str)]], hits_addend: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| Entry { key: (*key).into(), value: (*value).into() })
                    .collect(),
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend,
    }
}

/// Whether the whole request was allowed.
pub fn ok(response: &RateLimitResponse) -> bool {
    response.overall_code == Code::Ok as i32
}

/// Whether descriptor `i` was over its limit.
pub fn over(response: &RateLimitResponse, i: usize) -> bool {
    response.statuses[i].code == Code::OverLimit as i32
}

/// A response header's value.
pub fn header<'a>(response: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    response.response_headers_to_add.iter().find(|h| h.key == name).map(|h| h.value.as_str())
}
