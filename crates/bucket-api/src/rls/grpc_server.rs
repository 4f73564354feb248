//! The gRPC listener: HTTP/2 connections served by hyper on one current-thread runtime per worker, each call of
//! `ShouldRateLimit` handed straight to its generated service, the health and reflection services behind tonic's
//! router.
//!
//! Why not tonic's `Server`: on a gateway's hot path it wraps every call in layers this service does not use (a
//! connection-info extension, error recovery for services that cannot fail, a tracing span, a boxed service and a
//! path router in front of the one method that matters); docs/perf.md §4b counted them at about a tenth of the
//! instructions of a call. What it did that matters is kept: HTTP/2 only, the same HTTP/2 settings (hyper's
//! defaults, no limit on concurrent streams), `TCP_NODELAY`, the `grpc-timeout` a client sends (the call is
//! answered `CANCELLED` past it, as tonic does), and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use actix_web::web;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::Status;

use crate::rls::grpc::{RateLimiter, RLS_DESCRIPTOR};
use crate::state::AppState;

/// Pause after a failed `accept` (EMFILE and the like), which would otherwise fail again immediately.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Every method of Envoy's rate limit service starts with this path.
const RLS_PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/";

/// A running gRPC server: its address, and how to stop it.
///
/// `workers` threads, each with a current-thread tokio runtime of its own accepting on its own handle of the one
/// listening socket: a connection, and the task hyper spawns for each of its HTTP/2 streams, stay on the thread
/// that accepted it, as an actix worker keeps its connections. On one multi-threaded runtime the stream tasks of a
/// connection were spread over every worker (wake-ups across threads, contention on the connection's shared
/// state): docs/perf.md §4b. The stores are shared across these runtimes as they already are across actix's
/// workers.
pub struct GrpcServer {
    /// The bound address (the real port when the configuration asked for port 0).
    pub addr: SocketAddr,
    /// Sending (or dropping) it starts every worker's graceful shutdown.
    stop: watch::Sender<bool>,
    /// One per worker, sent once it has stopped accepting and its connections have closed.
    done: Vec<oneshot::Receiver<()>>,
}

impl GrpcServer {
    /// Binds `listen` and serves the rate limit, health and reflection services on `workers` threads until
    /// [`GrpcServer::stop`] (or until it is dropped).
    pub async fn start(listen: &str, workers: usize, state: web::Data<AppState>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RateLimitServiceServer<RateLimiter>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(RLS_DESCRIPTOR)
            .build_v1()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut others = Routes::builder();
        others.add_service(health_service).add_service(reflection);
        let dispatch =
            Dispatch { rls: RateLimitServiceServer::new(RateLimiter::new(state)), others: others.routes().prepare() };
        let (stop, stopped) = watch::channel(false);
        let mut done = Vec::with_capacity(workers.max(1));
        for worker in 0..workers.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // Registered with this worker's reactor: the kernel hands each new connection to one accepting thread.
            let listener = {
                let _context = runtime.enter();
                TcpListener::from_std(listener.try_clone()?)?
            };
            let (dispatch, stopped) = (dispatch.clone(), stopped.clone());
            let (finished, finished_rx) = oneshot::channel();
            std::thread::Builder::new().name(format!("grpc-{worker}")).spawn(move || {
                runtime.block_on(accept(listener, dispatch, stopped));
                let _ = finished.send(());
            })?;
            done.push(finished_rx);
        }
        Ok(Self { addr, stop, done })
    }

    /// Stops accepting, lets in-flight calls finish, and returns when every worker is down.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        for done in self.done {
            if done.await.is_err() {
                result = Err("a gRPC worker thread ended without finishing (panic)".to_owned());
            }
        }
        result
    }
}

/// One worker's accept loop: serves each connection on this thread until a stop, then waits for them to close.
async fn accept(listener: TcpListener, dispatch: Dispatch, mut stopped: watch::Receiver<bool>) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    // tonic's settings, kept: hyper's window sizes and keep-alive timeout, no limit on concurrent streams.
    builder.timer(TokioTimer::new()).max_concurrent_streams(None).adaptive_window(false);
    let mut connections = JoinSet::new();
    let for_connections = stopped.clone();
    loop {
        tokio::select! {
            // A stop, or the server dropped: either way, stop accepting and finish what is in flight.
            _ = stopped.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or memory: the error repeats at once, so back off instead of spinning
                    // a core; connections already open keep being served meanwhile.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                // Without TCP_NODELAY, small HTTP/2 frames wait for the peer's delayed ACK: the bench's p99 was 42 ms.
                let _ = stream.set_nodelay(true);
                connections.spawn(serve(stream, builder.clone(), dispatch.clone(), for_connections.clone()));
            }
        }
    }
    // Closes the listening handle now, so new clients are refused rather than left hanging.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection until the peer closes it, or a stop has let its in-flight calls finish.
async fn serve(
    stream: TcpStream,
    builder: http2::Builder<TokioExecutor>,
    dispatch: Dispatch,
    mut stopped: watch::Receiver<bool>,
) {
    let connection = builder.serve_connection(TokioIo::new(stream), dispatch);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stopped.wait_for(|stop| *stop), if !stopping => {
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// What answers a call: `ShouldRateLimit` directly, anything else through tonic's router.
#[derive(Clone)]
struct Dispatch {
    rls: RateLimitServiceServer<RateLimiter>,
    others: Routes,
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let request = request.map(Body::new);
        let deadline = grpc_timeout(&request);
        let call: BoxResponse = if request.uri().path().starts_with(RLS_PATH) {
            self.rls.clone().call(request)
        } else {
            Box::pin(self.others.clone().call(request))
        };
        match deadline {
            None => call,
            Some(deadline) => Box::pin(async move {
                match tokio::time::timeout(deadline, call).await {
                    Ok(response) => response,
                    Err(_) => Ok(Status::cancelled(tonic::TimeoutExpired(()).to_string()).into_http()),
                }
            }),
        }
    }
}

/// The `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a unit); an unreadable one is ignored, as
/// tonic ignores it.
fn grpc_timeout<B>(request: &Request<B>) -> Option<Duration> {
    let value = request.headers().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        grpc_timeout(&Request::builder().header("grpc-timeout", value).body(()).unwrap())
    }

    #[test]
    fn grpc_timeouts_read_as_the_protocol_spells_them() {
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(timeout("5x"), None);
        assert_eq!(timeout("S"), None);
        assert_eq!(grpc_timeout(&Request::new(())), None);
    }
}
