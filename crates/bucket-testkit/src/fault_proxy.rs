//! A TCP proxy that tests put between a store and its server to make the server slow, hung, crashing or gone,
//! without touching the shared servers; the fault can be switched at any time, for every connection at once.
//!
//! Each direction of a connection is a reader and a writer joined by a queue of timestamped chunks: the reader
//! keeps reading whatever the fault (so a stalled connection holds its bytes instead of pushing back on the
//! sender), and the writer delivers each chunk when the fault allows, `Latency(d)` meaning `d` after the chunk
//! arrived. Latency is therefore a property of the pipe, not a per-chunk sleep: pipelined requests on one
//! multiplexed connection are each delayed by `d`, not by `d` times their position in the queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything untouched.
    Pass,
    /// Deliver every chunk this long after it arrived (a slow network or an overloaded server).
    Latency(Duration),
    /// Keep connections open and accept new ones, but deliver nothing until the fault changes; the held bytes
    /// are delivered then (a hung server, or a partition that heals).
    Stall,
    /// Reset every open connection, and every new one as soon as it is accepted (a server crashing in a loop,
    /// or a firewall sending RSTs).
    Reset,
    /// Reset every open connection and close the listening socket, so connecting is refused (a stopped server);
    /// the same port is listened on again when the fault changes.
    Refuse,
}

impl Fault {
    /// Whether open connections must be torn down.
    fn kills(self) -> bool {
        matches!(self, Fault::Reset | Fault::Refuse)
    }
}

/// A running proxy; dropping it stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicUsize,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`), in mode [`Fault::Pass`].
    pub async fn start(upstream: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, watcher) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(serve(listener, addr, upstream.into(), watcher, Arc::clone(&counters)));
        Self { addr, fault, counters, task }
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<addr>`, for a Redis behind the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Switches the fault for every open and future connection.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted since start, reset ones included: shows whether a client reconnects or reuses.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections relayed now: a client that leaks connections makes this grow.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection's task and closes its sockets.
        self.task.abort();
    }
}

/// Accepts connections while the fault is not `Refuse`; closes the listener while it is.
async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: String,
    mut fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        while connections.try_join_next().is_some() {}
        let Some(open) = listener.as_ref() else {
            if fault.wait_for(|f| *f != Fault::Refuse).await.is_err() {
                return;
            }
            listener = Some(rebind(addr).await);
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                // An accept error (e.g. out of file descriptors) concerns one connection; keep serving.
                let Ok((client, _)) = accepted else { continue };
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                connections.spawn(relay(client, upstream.clone(), fault.clone(), Arc::clone(&counters)));
            }
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
                if *fault.borrow_and_update() == Fault::Refuse {
                    // Closing the socket makes the kernel refuse connections, and reset those not yet accepted.
                    listener = None;
                }
            }
        }
    }
}

/// Listens on `addr` again; SO_REUSEADDR (tokio's default on Unix) lets it despite connections in TIME_WAIT.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() >= deadline => panic!("the proxy cannot listen on {addr} again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side; the close was passed on after every held byte.
    Eof,
    /// A socket failed, or the fault killed the connection.
    Broken,
}

/// Relays one connection until both sides closed or the fault kills it.
async fn relay(mut client: TcpStream, upstream: String, mut fault: watch::Receiver<Fault>, counters: Arc<Counters>) {
    if fault.borrow_and_update().kills() {
        reset(client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        reset(client);
        return;
    };
    counters.open.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let broken = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, fault.clone());
        let down = pump(server_read, client_write, fault);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        let mut broken = false;
        let finished = |up: bool, down: bool, broken: bool| broken || (up && down);
        // A clean close of one direction leaves the other running (a half-close); anything else ends both.
        while !finished(up_done, down_done, broken) {
            tokio::select! {
                end = &mut up, if !up_done => { up_done = true; broken = end == End::Broken; }
                end = &mut down, if !down_done => { down_done = true; broken = end == End::Broken; }
            }
        }
        broken
    };
    counters.open.fetch_sub(1, Ordering::Relaxed);
    if broken {
        reset(client);
        reset(server);
    }
}

/// Closes with a RST rather than a FIN, as the kernel of a crashed peer would: the client sees "connection reset".
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One direction: a reader that never stops reading, and a writer that delivers as the fault allows.
async fn pump(from: ReadHalf<'_>, to: WriteHalf<'_>, fault: watch::Receiver<Fault>) -> End {
    let (chunks, queued) = mpsc::unbounded_channel();
    let reader = read_side(from, chunks, fault.clone());
    let writer = write_side(queued, to, fault);
    tokio::pin!(reader, writer);
    tokio::select! {
        // After a clean close the writer still owes the held bytes and the FIN.
        end = &mut reader => if end == End::Eof { writer.await } else { end },
        end = &mut writer => end,
    }
}

async fn read_side(
    mut from: ReadHalf<'_>,
    chunks: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    mut fault: watch::Receiver<Fault>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return End::Broken;
                    }
                }
                Err(_) => return End::Broken,
            },
            changed = fault.changed() => {
                if changed.is_err() || fault.borrow_and_update().kills() {
                    return End::Broken;
                }
            }
        }
    }
}

async fn write_side(
    mut queued: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut to: WriteHalf<'_>,
    mut fault: watch::Receiver<Fault>,
) -> End {
    while let Some((arrived, chunk)) = queued.recv().await {
        loop {
            let current = *fault.borrow_and_update();
            match current {
                Fault::Pass => break,
                Fault::Latency(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(arrived + delay) => break,
                        // A new fault is re-evaluated from the top: Pass delivers at once, Reset ends.
                        changed = fault.changed() => if changed.is_err() { return End::Broken },
                    }
                }
                Fault::Stall => {
                    if fault.changed().await.is_err() {
                        return End::Broken;
                    }
                }
                Fault::Reset | Fault::Refuse => return End::Broken,
            }
        }
        if to.write_all(&chunk).await.is_err() {
            return End::Broken;
        }
    }
    // The sender closed cleanly and everything it sent is delivered: pass the close on.
    let _ = to.shutdown().await;
    End::Eof
}
