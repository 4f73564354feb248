//! A stand-in for the application behind a proxy: answers every request with 200 and counts what reached it, so a
//! test can compare what the proxy let through with what the rate limiter allowed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// The counting upstream, on a free loopback port until dropped.
pub struct CountingUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl CountingUpstream {
    /// Starts it on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the counting upstream");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = Arc::clone(&recorder);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let recorder = Arc::clone(&recorder);
                        async move {
                            record(&recorder, &req);
                            Ok::<_, Infallible>(Response::new(Full::new(&b"upstream ok\n"[..])))
                        }
                    });
                    // A client that hangs up mid-request is the proxy's business, not the count's.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests that reached it so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("upstream lock").len()
    }

    /// Every request that reached it so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("upstream lock").clone()
    }
}

fn record(recorder: &Mutex<Vec<Seen>>, req: &Request<Incoming>) {
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let seen = Seen { method: req.method().to_string(), uri: req.uri().to_string(), headers };
    recorder.lock().expect("upstream lock").push(seen);
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
