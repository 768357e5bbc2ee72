//! The realtime scenario: memory per idle WebSocket connection, fan-out latency and publish
//! throughput of the reference server's broadcaster (in-memory backplane).
//!
//! The server runs in this process; the WebSocket clients run in a child process (this same
//! binary, `realtime-clients`), so the server's resident memory is measured without theirs.
//! Every timestamp is the system clock of this one machine: a latency is the time from the
//! publish call to the client reading the frame.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tenantkit_core::TenantId;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Microseconds since the epoch: the send time events and records carry.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The `p` quantile (0.0–1.0) of `sorted` latencies in microseconds, in milliseconds.
pub(crate) fn quantile_ms(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |us| *us as f64 / 1000.0)
}

/// This process's resident set size in bytes (Linux).
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The server side: `tokens` (one owner per tenant, `tenants` in order) are handed to the
/// child, which opens `sockets` connections spread over the tenants and subscribes each to
/// `tenant`; then `rounds` rounds each publish one event on every tenant's channel, paced at
/// `rate` rounds per second; then a publish-throughput run on a channel nobody follows.
pub(crate) async fn run(
    base_url: &str,
    realtime: &tenantkit_realtime::Realtime,
    tenants: &[TenantId],
    tokens: &[String],
    sockets: usize,
    rounds: usize,
    rate: u32,
) {
    let ws_url = base_url.replacen("http://", "ws://", 1);
    let rss_before = rss_bytes();
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .args(["realtime-clients", "--url", &ws_url])
        .args(["--sockets", &sockets.to_string()])
        .args(["--expect", &(sockets * rounds).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for token in tokens {
            writeln!(stdin, "{token}").expect("tokens to the clients");
        }
    }
    drop(child.stdin.take());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("the clients report").expect("a line");
    assert!(ready.starts_with("READY"), "{ready}");
    // Let the server settle (allocator, tasks parked) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_bytes();
    let stats = realtime.stats();
    println!(
        "realtime: {} idle connections ({} subscriptions) on the server: RSS {:.1} MB -> {:.1} MB, {:.1} KB per connection",
        stats.connections,
        stats.subscriptions,
        rss_before as f64 / 1e6,
        rss_idle as f64 / 1e6,
        (rss_idle.saturating_sub(rss_before)) as f64 / 1024.0 / sockets.max(1) as f64
    );

    // Fan-out: each round one event per tenant channel, each reaching its subscribers.
    let pace = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    for round in 0..rounds {
        let at = start + pace * u32::try_from(round).unwrap_or(u32::MAX);
        tokio::time::sleep_until(at.into()).await;
        for tenant in tenants {
            realtime
                .publish(
                    *tenant,
                    "tenant",
                    "bench.tick",
                    &json!({ "sent_us": now_micros(), "round": round }),
                )
                .await
                .expect("publish");
        }
    }
    let report = tokio::task::spawn_blocking(move || {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = child.wait();
        line
    })
    .await
    .expect("the clients' report");
    println!(
        "realtime fan-out: {rounds} rounds x {} tenant channels ({} subscribers each) at {rate}/s -> {report}",
        tenants.len(),
        sockets / tenants.len().max(1)
    );
    let stats = realtime.stats();
    println!(
        "realtime: server counters after fan-out: {} connections, {} messages sent, {} dropped, disconnects {:?}, backplane lagged {}",
        stats.connections,
        stats.messages_sent,
        stats.messages_dropped,
        stats.disconnects,
        stats.backplane_lagged
    );

    // Publish throughput with no subscriber: the backplane and the hub's routing alone.
    let channel = TenantId::new();
    let n = 50_000;
    let start = Instant::now();
    for i in 0..n {
        realtime
            .publish(channel, "tenant", "bench.publish", &json!({ "i": i }))
            .await
            .expect("publish");
    }
    let elapsed = start.elapsed();
    println!(
        "realtime publish (memory backplane, no subscriber): {n} events in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        f64::from(n) / elapsed.as_secs_f64()
    );
}

/// A client socket.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a protocol-v1 WebSocket on `{url}/v1/realtime` (`ws://…`) with `token` as its bearer,
/// with small buffers (thousands of these share the machine with the server); `None` when the
/// handshake fails.
pub(crate) async fn connect(url: &str, token: &str) -> Option<Socket> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut request = format!("{url}/v1/realtime").into_client_request().ok()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().ok()?);
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "tenantkit.v1".parse().ok()?);
    tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .ok()
        .map(|(socket, _)| socket)
}

/// The child: reads tokens (one per line) from stdin, opens `sockets` connections round-robin
/// over them (each subscribed to `tenant`), prints `READY`, then counts `expect` event
/// deliveries (or stops after 120 s) and prints one line of latency percentiles.
pub(crate) async fn clients(url: &str, sockets: usize, expect: usize) {
    let tokens: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!tokens.is_empty(), "no tokens");
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::with_capacity(expect)));
    let received = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut subscribed = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let token = &tokens[i % tokens.len()];
        let mut socket = connect(url, token).await.expect("connect");
        socket
            .send(Message::text(
                json!({"type": "subscribe", "channel": "tenant"}).to_string(),
            ))
            .await
            .expect("subscribe");
        subscribed.push(socket);
    }
    // Wait for every `subscribed` answer, then hand each socket to a reader.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(sockets.max(1));
    for mut socket in subscribed {
        let (latencies, received, closed, done_tx, ready_tx) = (
            latencies.clone(),
            received.clone(),
            closed.clone(),
            done_tx.clone(),
            ready_tx.clone(),
        );
        tokio::spawn(async move {
            while let Some(message) = socket.next().await {
                let Ok(Message::Text(text)) = message else {
                    if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                        break;
                    }
                    continue;
                };
                let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                match value["type"].as_str() {
                    Some("subscribed") => drop(ready_tx.send(()).await),
                    Some("event") => {
                        let sent = value["data"]["sent_us"].as_u64().unwrap_or(0);
                        let latency = now_micros().saturating_sub(sent);
                        latencies.lock().expect("latencies").push(latency);
                        if received.fetch_add(1, Ordering::Relaxed) + 1 == expect {
                            let _ = done_tx.send(()).await;
                        }
                    }
                    _ => {}
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(ready_tx);
    for _ in 0..sockets {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    println!("READY {sockets}");
    std::io::stdout().flush().expect("flush");
    let _ = tokio::time::timeout(Duration::from_secs(120), done_rx.recv()).await;
    let mut all = std::mem::take(&mut *latencies.lock().expect("latencies"));
    all.sort_unstable();
    let pct = |p: f64| quantile_ms(&all, p);
    println!(
        "{} of {expect} deliveries, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} sockets closed",
        all.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        closed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().expect("flush");
}
