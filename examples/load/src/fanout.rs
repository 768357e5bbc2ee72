//! The fan-out scenario against servers that run elsewhere (other processes on 127.0.0.1):
//! `--subscribers` clients subscribe to one tenant's records, then `--rounds` records are
//! created over HTTP at `--rate` per second, and every subscriber's delivery of every record
//! is timed from just before the create request to the client reading the event. The same
//! measurement for both servers it knows:
//!
//! - **tenantkit**: WebSockets on `/v1/realtime` subscribed to `project:<id>`; the records are
//!   tasks of that project (`POST /v1/projects/{id}/tasks`), announced through the outbox.
//!   The harness signs up its own tenant at the first URL. With several `--subscribe-url`s
//!   (instances sharing a database and a backplane) the subscribers are spread over them
//!   round-robin and the records are created through `--publish-url`.
//! - **PocketBase**: its realtime API (Server-Sent Events on `/api/realtime`, then
//!   `POST /api/realtime` subscribing to the `tasks` collection with the user's token, so the
//!   collection's tenant rule decides who hears a record); records created with
//!   `POST /api/collections/tasks/records`. `--token` and `--tenant` come from the seeding
//!   (scripts/compare/pocketbase.sh).
//!
//! It prints one line, `FANOUT target=… subscribers=… delivered=…/… p50_ms=… p99_ms=…
//! max_ms=… publish_errors=… lost_subscribers=… rss_mb_before=… rss_mb_subscribed=…
//! rss_mb_after=…`, for scripts to read; the memory is the summed VmRSS of the `--server-pid`
//! processes before the subscribers connect, once they are subscribed, and after the fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::realtime::{now_micros, quantile_ms};

/// How the harness talks to the server under test.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Target {
    /// tenantkit's reference server: WebSockets, tasks of a project.
    Tenantkit,
    /// PocketBase: Server-Sent Events, records of the `tasks` collection.
    Pocketbase,
}

/// What to measure.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) publish_url: String,
    pub(crate) subscribe_urls: Vec<String>,
    /// PocketBase: a user's token and their tenant's id.
    pub(crate) token: String,
    pub(crate) tenant: String,
    pub(crate) subscribers: usize,
    pub(crate) rounds: usize,
    pub(crate) rate: u32,
    /// Server processes whose resident memory is reported (summed).
    pub(crate) server_pids: Vec<u32>,
}

/// The summed VmRSS of `pids`, in MB (Linux; 0 for a process that is gone).
fn rss_mb(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

/// A record title carrying its send time: `fanout <µs since the epoch>`.
const TITLE_PREFIX: &str = "fanout ";
/// How many subscribers connect at once (a handshake burst the server's accept queue takes).
const CONNECTING_AT_ONCE: usize = 64;
/// How long to wait for the last deliveries after the last create.
const GRACE: Duration = Duration::from_secs(30);

/// What the subscribers share: the latencies seen, and a wake-up when all have arrived.
#[derive(Debug, Default)]
struct Deliveries {
    latencies: std::sync::Mutex<Vec<u64>>,
    count: AtomicUsize,
    expected: AtomicUsize,
    lost: AtomicUsize,
    all_in: Notify,
}

impl Deliveries {
    /// Records one delivery of a record whose title is `title`.
    fn heard(&self, title: Option<&str>) {
        let Some(sent) = title
            .and_then(|t| t.strip_prefix(TITLE_PREFIX))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let latency = now_micros().saturating_sub(sent);
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(latency);
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if count >= self.expected.load(Ordering::Relaxed) {
            self.all_in.notify_one();
        }
    }
}

/// Where the records go and what the subscribers subscribe to.
struct Setup {
    /// The bearer (tenantkit) or raw (PocketBase) token of the subscribers and the publisher.
    token: String,
    /// tenantkit: the project id; PocketBase: the tenant id.
    scope: String,
}

/// Runs the plan and prints the `FANOUT` line.
pub(crate) async fn run(plan: Plan) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let setup = match plan.target {
        Target::Tenantkit => tenantkit_setup(&client, &plan.publish_url).await,
        Target::Pocketbase => Setup {
            token: plan.token.clone(),
            scope: plan.tenant.clone(),
        },
    };
    let deliveries = Arc::new(Deliveries::default());
    // No stream client outside this (SSE) one: a separate client without the overall timeout.
    let streams = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");

    let rss_before = rss_mb(&plan.server_pids);
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut ready = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        let url = plan.subscribe_urls[i % plan.subscribe_urls.len()].clone();
        let (deliveries, connecting, streams) =
            (deliveries.clone(), connecting.clone(), streams.clone());
        let (token, scope) = (setup.token.clone(), setup.scope.clone());
        let target = plan.target;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            match target {
                Target::Tenantkit => {
                    tenantkit_subscriber(&url, &token, &scope, permit, ready_tx, &deliveries).await;
                }
                Target::Pocketbase => {
                    pocketbase_subscriber(&streams, &url, &token, permit, ready_tx, &deliveries)
                        .await;
                }
            }
            deliveries.lost.fetch_add(1, Ordering::Relaxed);
        });
    }
    let started = Instant::now();
    let mut subscribed = 0;
    for rx in ready {
        if tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            subscribed += 1;
        }
    }
    eprintln!(
        "[fanout] {subscribed} of {} subscribers ready in {:.1} s",
        plan.subscribers,
        started.elapsed().as_secs_f64()
    );
    deliveries
        .expected
        .store(subscribed * plan.rounds, Ordering::Relaxed);
    // Let the servers settle (tasks parked, allocator) before reading their memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_subscribed = rss_mb(&plan.server_pids);

    let (path, auth) = match plan.target {
        Target::Tenantkit => (
            format!("/v1/projects/{}/tasks", setup.scope),
            format!("Bearer {}", setup.token),
        ),
        Target::Pocketbase => ("/api/collections/tasks/records".to_owned(), setup.token),
    };
    let pace = Duration::from_secs_f64(1.0 / f64::from(plan.rate.max(1)));
    let start = Instant::now();
    let mut publish_errors = 0_usize;
    for round in 0..plan.rounds {
        let at = start + pace * u32::try_from(round).unwrap_or(u32::MAX);
        tokio::time::sleep_until(at.into()).await;
        let mut body =
            json!({"title": format!("{TITLE_PREFIX}{}", now_micros()), "status": "todo"});
        if let Target::Pocketbase = plan.target {
            body["tenant"] = json!(setup.scope);
        }
        let ok = client
            .request(Method::POST, format!("{}{path}", plan.publish_url))
            .header("authorization", &auth)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            publish_errors += 1;
        }
    }
    let expected = deliveries.expected.load(Ordering::Relaxed);
    if deliveries.count.load(Ordering::Relaxed) < expected {
        let _ = tokio::time::timeout(GRACE, deliveries.all_in.notified()).await;
    }
    let rss_fanout = rss_mb(&plan.server_pids);
    let mut all = std::mem::take(
        &mut *deliveries
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    all.sort_unstable();
    let pct = |p: f64| quantile_ms(&all, p);
    println!(
        "FANOUT target={:?} instances={} subscribers={subscribed} rounds={} rate={} delivered={}/{expected} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} publish_errors={publish_errors} lost_subscribers={} rss_mb_before={rss_before:.1} rss_mb_subscribed={rss_subscribed:.1} rss_mb_after={rss_fanout:.1}",
        plan.target,
        plan.subscribe_urls.len(),
        plan.rounds,
        plan.rate,
        all.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        deliveries.lost.load(Ordering::Relaxed)
    );
}

/// Signs up a fresh tenant at `base` and creates its project.
async fn tenantkit_setup(client: &reqwest::Client, base: &str) -> Setup {
    let email = format!("fanout-{}@example.com", now_micros());
    let signup = crate::signup(client, base, &email, "Fanout").await;
    let token = signup["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let project = crate::post_json(
        client,
        &format!("{base}/v1/projects"),
        Some(&token),
        &json!({"name": "fanout"}),
    )
    .await;
    Setup {
        token,
        scope: project["id"].as_str().expect("project id").to_owned(),
    }
}

/// One WebSocket subscriber of `project:<project>`; returns when its socket ends.
async fn tenantkit_subscriber(
    base: &str,
    token: &str,
    project: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: tokio::sync::oneshot::Sender<()>,
    deliveries: &Deliveries,
) {
    let ws_url = base.replacen("http://", "ws://", 1);
    let Some(mut socket) = crate::realtime::connect(&ws_url, token).await else {
        return;
    };
    let subscribe = json!({"type": "subscribe", "channel": format!("project:{project}")});
    if socket
        .send(Message::text(subscribe.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let mut ready = Some(ready);
    let mut permit = Some(permit);
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            if let Message::Close(_) = message {
                return;
            }
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap_or_default();
        match value["type"].as_str() {
            Some("subscribed") => {
                drop(permit.take());
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Some("event") => deliveries.heard(value["data"]["title"].as_str()),
            _ => {}
        }
    }
}

/// One PocketBase realtime subscriber of the `tasks` collection; returns when its stream ends.
async fn pocketbase_subscriber(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: tokio::sync::oneshot::Sender<()>,
    deliveries: &Deliveries,
) {
    let Ok(response) = client.get(format!("{base}/api/realtime")).send().await else {
        return;
    };
    if !response.status().is_success() {
        return;
    }
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    let mut ready = Some(ready);
    let mut permit = Some(permit);
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.extend_from_slice(&chunk);
        // One SSE message ends at an empty line.
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = buffer.drain(..end + 2).collect();
            let Some((event, data)) = sse_fields(&message) else {
                continue;
            };
            if event == "PB_CONNECT" {
                let client_id =
                    serde_json::from_str::<Value>(&data).unwrap_or_default()["clientId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                let subscribed = client
                    .post(format!("{base}/api/realtime"))
                    .header("authorization", token)
                    .json(&json!({"clientId": client_id, "subscriptions": ["tasks"]}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !subscribed {
                    return;
                }
                drop(permit.take());
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if event == "tasks" {
                let value: Value = serde_json::from_str(&data).unwrap_or_default();
                if value["action"] == "create" {
                    deliveries.heard(value["record"]["title"].as_str());
                }
            }
        }
    }
}

/// The `event` and the joined `data` lines of one SSE message.
fn sse_fields(message: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut event = String::from("message");
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            value.trim_start().clone_into(&mut event);
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    Some((event, data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_split_into_event_and_data() {
        let (event, data) =
            sse_fields(b"id:abc\nevent:PB_CONNECT\ndata:{\"clientId\":\"abc\"}\n\n").unwrap();
        assert_eq!(
            (event.as_str(), data.as_str()),
            ("PB_CONNECT", "{\"clientId\":\"abc\"}")
        );
        let (event, data) = sse_fields(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!((event.as_str(), data.as_str()), ("message", "a\nb"));
    }

    #[test]
    fn only_titles_with_a_send_time_count() {
        let deliveries = Deliveries::default();
        deliveries.expected.store(10, Ordering::Relaxed);
        deliveries.heard(Some("fanout 1"));
        deliveries.heard(Some("something else"));
        deliveries.heard(None);
        deliveries.heard(Some("fanout x"));
        assert_eq!(deliveries.count.load(Ordering::Relaxed), 1);
    }
}
