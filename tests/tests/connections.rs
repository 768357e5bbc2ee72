//! Connection-level limits of the server: a client that trickles its request headers is cut
//! off, and no more than the configured number of connections are served at once.

use std::time::Duration;

use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;
use tenantkit_server::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn address(server: &TestServer) -> String {
    server.base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes or `within` passes; `true` when it closed.
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 answer before the close is fine
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let config = Config {
        header_timeout_secs: 1,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let mut slow = TcpStream::connect(address(&server)).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    // The headers never end: the server must hang up (after its 1 s header timeout), not
    // wait forever. The 30 s here only bounds the test; it passes as soon as the close comes.
    assert!(
        closes_within(&mut slow, Duration::from_secs(30)).await,
        "a slowloris connection stays open"
    );
    // Well-behaved clients are served as before.
    let ok = server
        .anonymous(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_configured_connections_are_served_at_once() {
    // A long header timeout: the two held connections must stay open however slowly a busy
    // machine gets through this test (the server would close an idle one after it).
    let config = Config {
        max_connections: 2,
        header_timeout_secs: 300,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two connections hold both slots (each served one request and stays open).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).await.expect("answer");
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // A third waits: the kernel accepts it, the server does not serve it yet.
    let mut third = TcpStream::connect(address(&server)).await.expect("connect");
    third.write_all(request).await.expect("write");
    let mut buffer = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buffer)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the cap"
    );
    // One slot frees up: the waiting connection is served.
    drop(held.pop());
    let read = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buffer))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
}
