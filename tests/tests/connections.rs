//! Connection-level limits of the server: a client that trickles its request headers is cut
//! off, no more than the configured number of connections are served at once, one client
//! network cannot hold them all, stalled uploads and unread downloads end, one upload per
//! signed URL is received at a time with nothing left behind, and a shutdown ends after its
//! grace period whatever clients do.
//!
//! No assertion here depends on timing: the long timeouts only bound a test that would
//! otherwise hang, and each passes as soon as the awaited event happens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;
use tenantkit_server::Config;
use tenantkit_storage::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Bounds a test that would hang without the behaviour under test.
const HANG_GUARD: Duration = Duration::from_secs(60);

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

/// A connection from `source` (any 127.0.0.0/8 address: each is its own client network).
async fn connect_from(server: &TestServer, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let address: SocketAddr = address(server).parse().expect("server address");
    socket.connect(address).await.expect("connect")
}

/// `GET /healthz` on a new connection from `source`; the status line, or `None` when the
/// server closed the connection unanswered.
async fn healthz_from(server: &TestServer, source: [u8; 4]) -> Option<String> {
    let mut stream = connect_from(server, source).await;
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) if !answer.is_empty() => {
            let text = String::from_utf8_lossy(&answer);
            text.lines().next().map(str::to_owned)
        }
        _ => None,
    }
}

/// An upload intent for `bytes` as tenant a's owner: the path of its signed local PUT URL.
async fn upload_path(server: &TestServer, bytes: &[u8]) -> String {
    upload_intent(server, bytes).await.1
}

/// An upload intent for `bytes` as tenant a's owner: its id and the path of its signed URL.
async fn upload_intent(server: &TestServer, bytes: &[u8]) -> (String, String) {
    let reply = server
        .call(
            Some(&server.world.a.principal),
            reqwest::Method::POST,
            "/v1/uploads",
            Some(json!({
                "filename": "notes.txt",
                "content_type": "text/plain",
                "size": bytes.len(),
                "sha256": Sha256::of(bytes).to_hex(),
            })),
        )
        .await;
    assert_eq!(reply.status, reqwest::StatusCode::CREATED, "{}", reply.body);
    let url = reply.body["url"].as_str().expect("a signed URL");
    let path = url
        .strip_prefix("http://127.0.0.1:8080")
        .expect("a local storage URL");
    assert!(path.starts_with("/v1/storage/upload/"), "{path}");
    let id = reply.body["id"].as_str().expect("an upload id");
    (id.to_owned(), path.to_owned())
}

/// Sends the headers of a PUT of `size` bytes to `path`, and `body` (possibly only a part).
async fn start_put(stream: &mut TcpStream, path: &str, size: usize, body: &[u8]) {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    stream.write_all(body).await.expect("body");
}

/// The status line of the answer on `stream`.
async fn status_line(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(HANG_GUARD, stream.read(&mut buffer))
            .await
            .expect("an answer comes")
            .expect("read");
        answer.extend_from_slice(&buffer[..read]);
        if read == 0 || answer.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The local store's temporary folder.
fn temp_folder(server: &TestServer) -> PathBuf {
    server.data_dir.path().join("uploads").join("tmp")
}

fn temp_files(server: &TestServer) -> Vec<PathBuf> {
    std::fs::read_dir(temp_folder(server))
        .expect("the temporary folder")
        .map(|entry| entry.expect("entry").path())
        .collect()
}

/// Waits until the temporary folder holds a file with data (an upload is being received).
async fn wait_for_temp_data(server: &TestServer) {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let receiving = temp_files(server)
                .iter()
                .any(|path| std::fs::metadata(path).is_ok_and(|m| m.len() > 0));
            if receiving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upload's first bytes reach the temporary folder");
}

/// Waits until the temporary folder is empty.
async fn wait_for_empty_temp_folder(server: &TestServer) {
    tokio::time::timeout(HANG_GUARD, async {
        while !temp_files(server).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("temporary files left: {:?}", temp_files(server)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_from_one_client_do_not_starve_others() {
    // Stalled uploads stay stalled for the whole test (a 10-minute idle timeout): only the
    // per-client cap can keep the server reachable.
    let config = Config {
        max_connections: 8,
        max_connections_per_client: 3,
        transfer_idle_secs: 600,
        header_timeout_secs: 300,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'x'; 4096];
    // Each its own intent (one URL takes one upload at a time), all made first: the test's
    // API client speaks from 127.0.0.1, the staller from 127.0.0.9 (another client network),
    // so the API client never competes for the staller's share.
    let mut paths = Vec::new();
    for _ in 0..8 {
        paths.push(upload_path(&server, &bytes).await);
    }
    let mut held = Vec::new();
    for path in paths {
        let mut stream = connect_from(&server, [127, 0, 0, 9]).await;
        // Headers, then nothing: the body never comes.
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
             Content-Length: 4096\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes()).await;
        held.push(stream);
    }
    // Another client gets its answer while the eight are held (without the per-client cap,
    // they fill every slot and this waits in the backlog until the test's guard fails it).
    let answer = tokio::time::timeout(HANG_GUARD, healthz_from(&server, [127, 0, 1, 1]))
        .await
        .expect("another client is served while one client stalls");
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"));
    // The stalling client's own extra connections are closed unanswered.
    let answer = tokio::time::timeout(HANG_GUARD, healthz_from(&server, [127, 0, 0, 9]))
        .await
        .expect("closed at once");
    assert_eq!(answer, None, "a client over its share was served");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stops_sending_is_refused_and_keeps_nothing() {
    let config = Config {
        transfer_idle_secs: 1,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'y'; 8192];
    let path = upload_path(&server, &bytes).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut stream, &path, bytes.len(), &bytes[..1000]).await;
    // The rest never comes: 408 once the body has been idle for a second.
    assert_eq!(
        status_line(&mut stream).await,
        "HTTP/1.1 408 Request Timeout"
    );
    wait_for_empty_temp_folder(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_on_one_url_one_wins_one_is_409_and_no_temp_file_is_left() {
    let config = Config {
        transfer_idle_secs: 600,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'z'; 64 * 1024];
    let path = upload_path(&server, &bytes).await;
    // The first upload is under way: half its body is in the temporary folder.
    let mut first = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut first, &path, bytes.len(), &bytes[..32 * 1024]).await;
    wait_for_temp_data(&server).await;
    // A second body for the same URL is refused at once, unread.
    let mut second = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut second, &path, bytes.len(), &[]).await;
    assert_eq!(status_line(&mut second).await, "HTTP/1.1 409 Conflict");
    // The first one finishes and wins.
    first
        .write_all(&bytes[32 * 1024..])
        .await
        .expect("the rest");
    assert_eq!(status_line(&mut first).await, "HTTP/1.1 201 Created");
    // And the URL is spent: a later upload is a 409 too (already used).
    let mut third = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut third, &path, bytes.len(), &bytes).await;
    assert_eq!(status_line(&mut third).await, "HTTP/1.1 409 Conflict");
    wait_for_empty_temp_folder(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_its_deadline_leaves_no_temp_file() {
    // The transfer deadline (1 s) ends the request while the store still waits for the body
    // (idle timeout 10 minutes): the request's future is dropped midway, and its temporary
    // file must go with it.
    let config = Config {
        transfer_timeout_secs: 1,
        transfer_idle_secs: 600,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'w'; 64 * 1024];
    let path = upload_path(&server, &bytes).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut stream, &path, bytes.len(), &bytes[..16 * 1024]).await;
    assert_eq!(
        status_line(&mut stream).await,
        "HTTP/1.1 408 Request Timeout"
    );
    wait_for_empty_temp_folder(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_download_is_cut_off() {
    // One client may hold two connections; both download a file larger than the socket
    // buffers and never read it. Only the write timeout can free the client's slots.
    let config = Config {
        max_connections_per_client: 2,
        write_timeout_secs: 1,
        header_timeout_secs: 300,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'd'; 32 * 1024 * 1024];
    let download = completed_file_download_path(&server, &bytes).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(&server, [127, 0, 0, 7]).await;
        let request = format!("GET {download} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        stalled.push(stream);
    }
    // While both stall, the client's next connection is closed unanswered; once the write
    // timeout has cut a stalled download, it is served. (Without the timeout: never.)
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            if healthz_from(&server, [127, 0, 0, 7]).await.as_deref() == Some("HTTP/1.1 200 OK") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a download nobody reads ends, and frees its slot");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_stalled_connections_after_the_grace_period() {
    // A stalled upload (idle timeout 10 minutes) would hold the shutdown forever without the
    // grace period of one second.
    let config = Config {
        shutdown_grace_secs: 1,
        transfer_idle_secs: 600,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b's'; 8192];
    let path = upload_path(&server, &bytes).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    start_put(&mut stream, &path, bytes.len(), &bytes[..100]).await;
    wait_for_temp_data(&server).await;
    let mut server = server;
    tokio::time::timeout(HANG_GUARD, server.stop())
        .await
        .expect("the server stops after its grace period");
    // The stalled upload's connection is closed and nothing of it is kept.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut rest)).await;
    assert_eq!(
        temp_files(&server),
        Vec::<PathBuf>::new(),
        "temporary files left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_a_download_too_slowly_is_cut_off() {
    // Bodies must move at 1 MiB/s after their first 10 s. The upload below goes at loopback
    // speed; the download is read at about 80 KiB/s, far below, so the server ends it. (A
    // busier machine only makes the reader slower: it cannot pass by timing.)
    let config = Config {
        transfer_min_rate: 1024 * 1024,
        header_timeout_secs: 300,
        ..Config::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, config)
        .await
        .expect("server");
    let bytes = vec![b'r'; 32 * 1024 * 1024];
    let download = completed_file_download_path(&server, &bytes).await;
    // A small receive buffer, so little of the file waits in the kernel on this side.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    socket
        .bind(SocketAddr::from(([127, 0, 3, 1], 0)))
        .expect("bind");
    let mut stream = socket
        .connect(address(&server).parse().expect("address"))
        .await
        .expect("connect");
    let request = format!("GET {download} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let received = tokio::time::timeout(Duration::from_secs(120), async {
        let mut received = 0_usize;
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received += n,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server ends a download read too slowly");
    assert!(
        received < bytes.len(),
        "the whole file went to a client reading at a trickle ({received} bytes)"
    );
}

/// Uploads `bytes`, completes the upload as tenant a's owner and answers the path of the
/// file's signed download URL.
async fn completed_file_download_path(server: &TestServer, bytes: &[u8]) -> String {
    let (upload_id, path) = upload_intent(server, bytes).await;
    let mut upload = connect_from(server, [127, 0, 2, 1]).await;
    start_put(&mut upload, &path, bytes.len(), bytes).await;
    assert_eq!(status_line(&mut upload).await, "HTTP/1.1 201 Created");
    drop(upload);
    let complete = server
        .call(
            Some(&server.world.a.principal),
            reqwest::Method::POST,
            &format!("/v1/uploads/{upload_id}/complete"),
            None,
        )
        .await;
    assert_eq!(
        complete.status,
        reqwest::StatusCode::OK,
        "{}",
        complete.body
    );
    let file_id = complete.body["id"].as_str().expect("file id");
    let file = server
        .call(
            Some(&server.world.a.principal),
            reqwest::Method::GET,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    let url = file.body["download_url"].as_str().expect("download url");
    url.strip_prefix("http://127.0.0.1:8080")
        .expect("a local URL")
        .to_owned()
}
