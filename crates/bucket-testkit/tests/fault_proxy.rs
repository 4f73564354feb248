//! The fault proxy against a tiny echo server: each fault does what the tests that rely on it assume.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bucket_testkit::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port; returns its `host:port`.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` and reads the echo, within `within`.
async fn round_trip(conn: &mut TcpStream, msg: &[u8], within: Duration) -> std::io::Result<Vec<u8>> {
    conn.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(within, conn.read_exact(&mut got)).await {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ErrorKind::TimedOut.into()),
    }
}

#[tokio::test]
async fn pass_forwards_both_ways_and_closes_cleanly() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut conn, b"hello", Duration::from_secs(2)).await.unwrap(), b"hello");
    assert_eq!(proxy.open_connections(), 1);
    drop(conn);
    // The close travels through to the server and back: the relay ends and is no longer counted.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the relay outlived both sides");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn latency_delays_every_reply_by_the_pipe_delay_not_by_queue_position() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set(Fault::Latency(Duration::from_millis(150)));
    let started = Instant::now();
    assert_eq!(round_trip(&mut conn, b"slow", Duration::from_secs(2)).await.unwrap(), b"slow");
    // Both directions are delayed: at least two delays for a round trip.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    // Five pipelined messages still take about one round trip, not five.
    let started = Instant::now();
    for _ in 0..5 {
        conn.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got = [0u8; 5];
    conn.read_exact(&mut got).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    proxy.set(Fault::Pass);
    assert_eq!(round_trip(&mut conn, b"fast", Duration::from_millis(100)).await.unwrap(), b"fast");
}

#[tokio::test]
async fn stall_holds_bytes_and_delivers_them_on_release() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set(Fault::Stall);
    let error = round_trip(&mut conn, b"held", Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    // New connections are still accepted (the kernel does that for a hung server), and stall too.
    let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut late, b"late", Duration::from_millis(200)).await.unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    proxy.set(Fault::Pass);
    let mut got = [0u8; 4];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"held", "the held bytes arrive once released, on the same connection");
    late.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"late");
}

#[tokio::test]
async fn reset_breaks_open_connections_and_every_new_one() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut conn, b"up", Duration::from_secs(2)).await.unwrap();
    proxy.set(Fault::Reset);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await.expect("not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Connecting still succeeds, but the connection dies at once.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), again.read(&mut buf)).await.expect("not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    proxy.set(Fault::Pass);
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"back", Duration::from_secs(2)).await.unwrap(), b"back");
}

#[tokio::test]
async fn refuse_closes_the_port_and_reopens_the_same_one() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut conn, b"up", Duration::from_secs(2)).await.unwrap();
    proxy.set(Fault::Refuse);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await.expect("not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The listener closes asynchronously: poll (bounded) until connecting is refused.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(proxy.addr()).await {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the port still accepts"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut fresh = loop {
        match TcpStream::connect(proxy.addr()).await {
            Ok(conn) => break conn,
            Err(e) => assert!(Instant::now() < deadline, "the port did not reopen: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(round_trip(&mut fresh, b"back", Duration::from_secs(2)).await.unwrap(), b"back");
}
