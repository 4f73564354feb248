//! Starting and stopping the HTTP server: what `main` and embedding tests call.

use std::io;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use bucket_store::{AnyStore, Store, StoreError};
use slog::{error, info, Logger};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::rls::grpc_server::GrpcServer;
use crate::routes::build_app;
use crate::state::AppState;
use crate::stores::build_store;

/// How long in-flight requests get to finish after a stop signal before connections are closed.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// Why the service could not start; each names what to fix.
///
/// Following the std convention, a message never repeats its `source()`: print the chain (`{:#}` with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configured store needs a URL that was not given.
    #[error("the configured store needs {0}")]
    MissingUrl(&'static str),
    /// The store could not be set up (connection, migration).
    #[error("cannot start the store")]
    Store(#[from] StoreError),
    /// The listen address is taken, malformed or not permitted.
    #[error("cannot listen on {addr} (setting `listen`, BUCKET_LISTEN)")]
    Bind {
        /// The configured address.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The limits file (`BUCKET_LIMITS`) is missing or invalid; the message names the file, the place and the problem.
    #[error("invalid limits (setting `rls.limits`, BUCKET_LIMITS)")]
    Limits(#[from] bucket_limits::LimitsError),
    /// The gRPC address is taken, malformed or not permitted.
    #[error("cannot listen for gRPC on {addr} (setting `rls.grpc_listen`, BUCKET_GRPC_LISTEN)")]
    GrpcBind {
        /// The configured address.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// Metric registration failed (a duplicate name: a bug).
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
}

/// A started server; dropping it leaves the server running until the process ends.
pub struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<io::Result<()>>,
    store: AnyStore,
    grpc: Option<GrpcServer>,
    log: Logger,
}

/// Builds the store, binds `config.listen` and serves on the current tokio runtime.
///
/// SIGINT and SIGTERM stop the server gracefully (actix's default); [`Running::wait`] then returns.
pub async fn start(config: Config, log: Logger) -> Result<Running, StartError> {
    config.validate()?;
    info!(log, "starting"; config.redacted());
    let store = build_store(&config, &log).await?;
    let workers = config.workers;
    let listen = config.listen.clone();
    let state = web::Data::new(AppState::new(config, store.clone(), log.clone())?);
    let app_state = state.clone();
    let server = HttpServer::new(move || build_app(app_state.clone()))
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .bind(listen.as_str())
        .map_err(|source| StartError::Bind { addr: listen.clone(), source })?;
    let addr = server.addrs().first().copied().ok_or_else(|| StartError::Bind {
        addr: listen.clone(),
        source: io::Error::new(io::ErrorKind::AddrNotAvailable, "the address resolved to nothing"),
    })?;
    // The gRPC front serves only with a limits file: without one every descriptor would match nothing.
    let grpc = if state.limits.is_some() {
        let listen = &state.config.rls.grpc_listen;
        let grpc = GrpcServer::start(listen, state.config.workers, state.clone())
            .await
            .map_err(|source| StartError::GrpcBind { addr: listen.clone(), source })?;
        info!(log, "listening for gRPC"; "addr" => %grpc.addr);
        Some(grpc)
    } else {
        None
    };
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    info!(log, "listening"; "addr" => %addr);
    Ok(Running { addr, handle, task, store, grpc, log })
}

impl Running {
    /// The bound address (the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gRPC address, when a limits file turned the gateway front on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|g| g.addr)
    }

    /// Stops accepting, lets in-flight requests finish, then flushes the store.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.wait().await;
    }

    /// Returns once the server has stopped (by signal or [`Running::stop`]), after flushing the store.
    pub async fn wait(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(self.log, "server stopped with an error"; "error" => %e),
            Err(e) => error!(self.log, "server task failed"; "error" => %e),
        }
        // HTTP has stopped (by signal or `stop`): gRPC follows, in-flight calls finishing, before the store flushes.
        if let Some(grpc) = self.grpc {
            if let Err(e) = grpc.stop().await {
                error!(self.log, "gRPC server stopped with an error"; "error" => %e);
            }
        }
        match self.store.shutdown().await {
            Ok(()) => info!(self.log, "stopped"; "addr" => %self.addr),
            Err(e) => error!(self.log, "store shutdown failed"; "error" => %e),
        }
    }
}
