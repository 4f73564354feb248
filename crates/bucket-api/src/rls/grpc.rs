//! Envoy's `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over gRPC (tonic, message types from
//! `envoy-types`), beside the standard health service and server reflection: only the mapping between the protobuf
//! messages and [`RlsRequest`]/[`RlsAnswer`] lives here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::web;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use bucket_limits::Unit;

use crate::rls::decide::{should_rate_limit, RlsAnswer, RlsError};
use crate::rls::request::{RlsDescriptor, RlsRequest};
use crate::state::AppState;

/// The gRPC service over the shared application state.
pub struct RateLimiter {
    state: web::Data<AppState>,
}

#[tonic::async_trait]
impl RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let result = self.decide(request.into_inner()).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(status) if status.code() == tonic::Code::InvalidArgument => "invalid_argument",
            Err(_) => "unavailable",
        };
        self.state.metrics.record_grpc("ShouldRateLimit", code, started.elapsed());
        result.map(Response::new)
    }
}

impl RateLimiter {
    async fn decide(&self, request: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        let Some(limits) = self.state.limits.as_ref() else {
            return Err(Status::failed_precondition("no limits configured (BUCKET_LIMITS)"));
        };
        let request = from_proto(request);
        let limits = limits.current();
        match should_rate_limit(&self.state, &limits, &request).await {
            Ok(answer) => Ok(to_proto(&answer)),
            Err(RlsError::Invalid(message)) => Err(Status::invalid_argument(message)),
            Err(e @ RlsError::Unavailable(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}

/// The protocol-neutral request: `hits_addend` widened, descriptor overrides kept per descriptor.
pub fn from_proto(request: RateLimitRequest) -> RlsRequest {
    RlsRequest {
        domain: request.domain,
        descriptors: request
            .descriptors
            .into_iter()
            .map(|d| RlsDescriptor {
                entries: d.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                hits_addend: d.hits_addend.map(|h| h.value),
            })
            .collect(),
        hits_addend: u64::from(request.hits_addend),
    }
}

/// The protobuf response for an answer.
pub fn to_proto(answer: &RlsAnswer) -> RateLimitResponse {
    let code = |over: bool| if over { Code::OverLimit } else { Code::Ok } as i32;
    RateLimitResponse {
        overall_code: code(answer.over_limit),
        statuses: answer
            .statuses
            .iter()
            .map(|s| DescriptorStatus {
                code: code(s.over_limit),
                current_limit: s.limit.as_ref().map(|l| RateLimit {
                    name: l.name.clone(),
                    requests_per_unit: l.requests_per_unit,
                    unit: unit(l.unit) as i32,
                }),
                limit_remaining: s.remaining,
                duration_until_reset: s.until_reset.map(duration),
                ..DescriptorStatus::default()
            })
            .collect(),
        response_headers_to_add: answer
            .headers
            .iter()
            .map(|(key, value)| HeaderValue { key: (*key).into(), value: value.clone(), ..HeaderValue::default() })
            .collect(),
        ..RateLimitResponse::default()
    }
}

fn unit(unit: Unit) -> PbUnit {
    match unit {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}

fn duration(d: Duration) -> PbDuration {
    PbDuration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}

/// A running gRPC server: its address, and how to stop it.
pub struct GrpcServer {
    /// The bound address (the real port when the configuration asked for port 0).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Binds `listen` and serves the rate limit, health and reflection services until [`GrpcServer::stop`].
    pub async fn start(listen: &str, state: web::Data<AppState>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RateLimitServiceServer<RateLimiter>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let service = RateLimitServiceServer::new(RateLimiter { state });
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            });
        Ok(Self { addr, stop, task: tokio::spawn(server) })
    }

    /// Stops accepting, lets in-flight calls finish, and returns when the server is down.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}
