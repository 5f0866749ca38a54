//! One careless or hostile client must not take a replica down: connections that never finish
//! their request, and more connections than the replica allows. Real sockets, a real server.

use std::sync::Arc;
use std::time::Duration;

use s3lock::clock::SystemClock;
use s3lock::lock::Engine;
use s3lock::startup::Server;
use s3lock::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::engine_config;

/// A replica on the memory store allowing `max_connections`, with a header timeout of
/// `header_timeout`; its address.
async fn replica(max_connections: usize, header_timeout: Duration) -> String {
    s3lock::telemetry::init_for_tests();
    let engine = Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        engine_config("default", &[]),
    );
    engine.mark_store_checked();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(Arc::new(engine), Duration::from_secs(90))
        .with_connection_limits(max_connections, header_timeout);
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// Reads until the server closes the connection (EOF or reset), for `bound` at most: whether it
/// did.
async fn closed_by_server(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// One whole request on a connection of its own; the status line's code.
async fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn half_sent_requests_and_silent_connections_are_closed_while_an_honest_client_is_served() {
    let addr = replica(1000, Duration::from_secs(1)).await;
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        match i % 3 {
            // Half a request line, then nothing.
            0 => stream.write_all(b"GET /healthz HTTP/1.1").await.unwrap(),
            // A request line and a header, never the blank line.
            1 => stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap(),
            // Nothing at all.
            _ => {}
        }
        slow.push(stream);
    }
    assert_eq!(get_status(&addr, "/healthz").await, Some(200));
    // The header timeout is 1 s; the bound only keeps a broken server from hanging the test.
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, Duration::from_secs(20)).await,
            "slow connection {i} is still open"
        );
    }
    assert_eq!(get_status(&addr, "/healthz").await, Some(200));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let addr = replica(1000, Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut stream, Duration::from_secs(20)).await);
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_counted_while_those_under_it_work() {
    let addr = replica(4, Duration::from_secs(60)).await;
    // Four connections that each sent a whole request and keep the connection open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // A fifth is closed without an answer, long before its header timeout.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), fifth.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // One of the four goes away: a new connection is served again, and says what was refused.
    drop(held.pop());
    let mut metrics = None;
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        if !answer.is_empty() {
            metrics = Some(String::from_utf8_lossy(&answer).into_owned());
            break;
        }
        // The server may not have seen the dropped connection's end yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = metrics.expect("a connection under the cap is served");
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("s3lock_connections_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refusal counted: {metrics}"));
    assert!(refused >= 1, "{metrics}");
}
