//! A TCP proxy in front of Redis that can swallow the replies to one script run, to produce a connection that
//! stalls in the middle of a command (after the pool's health check passed), which freezing the server cannot,
//! nor can `bucket_testkit::FaultProxy` (its `Stall` holds the health check's PING as well).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards 127.0.0.1:<port> to an upstream Redis; stops forwarding when dropped.
pub struct ReplyTrap {
    port: u16,
    trap: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl ReplyTrap {
    /// Listens on a free port and forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let trap = Arc::new(AtomicBool::new(false));
        let armed = trap.clone();
        let accept = tokio::spawn(async move {
            // Owned here so that aborting this task aborts every connection's tasks too.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                connections.spawn(relay(client, server, armed.clone()));
            }
        });
        Self { port, trap, accept }
    }

    /// The URL to give a store.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next connection that sends an `EVALSHA` gets no reply to it, nor to anything after it, ever.
    pub fn arm(&self) {
        self.trap.store(true, Ordering::SeqCst);
    }
}

impl Drop for ReplyTrap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, trap: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let stalled = Arc::new(AtomicBool::new(false));
    let stalled_up = stalled.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.windows(7).any(|w| w.eq_ignore_ascii_case(b"EVALSHA")) && trap.swap(false, Ordering::SeqCst) {
                stalled_up.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stalled.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side closing ends the relay, closing the other side too.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
