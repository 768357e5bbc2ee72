//! The notes example end to end, in-process through its router, on SQLite and PostgreSQL
//! (`CI=true bash scripts/with-services.sh cargo test --workspace --test notes`).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tenantkit_billing::testing::SubscriptionLife;
use tenantkit_billing::{Inbox, Outcome};
use tenantkit_core::testing::TestDb;
use tenantkit_core::{Backend, TenantId, TenantScope, with_conn};
use tenantkit_notes::{Notes, migrations};
use tenantkit_storage::Sha256;
use tower::ServiceExt as _;

const STRIPE_SECRET: &str = "whsec_notes_example_test";
const PUBLIC_URL: &str = "http://notes.test";
const PASSWORD: &str = "correct horse battery staple";

struct World {
    notes: Notes,
    app: Router,
    test_db: TestDb,
    _dir: tempfile::TempDir,
}

/// One answer: status, content type and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    json: Value,
}

impl Answer {
    /// The problem's `code`, after checking the answer is a problem document.
    fn problem_code(&self) -> &str {
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        self.json["code"].as_str().expect("a problem has a code")
    }
}

async fn world(backend: Backend) -> Option<World> {
    let test_db = TestDb::new(backend, &migrations()).await?;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let notes = Notes::new(test_db.db.clone(), dir.path(), PUBLIC_URL, STRIPE_SECRET)
        .expect("the app starts");
    Some(World {
        app: notes.router(),
        notes,
        test_db,
        _dir: dir,
    })
}

impl World {
    /// Sends `request` from one client address, as a server with `ConnectInfo` would.
    async fn send(&self, mut request: Request<Body>) -> Answer {
        let peer = SocketAddr::from(([203, 0, 113, 7], 40_000));
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            json,
        }
    }

    /// `method path` with a JSON body (when given) and a bearer token (when given).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).expect("a request")).await
    }

    /// Signs up a new tenant with its owner; the answer (tokens, user, tenant).
    async fn signup(&self, email: &str, tenant: &str) -> Value {
        let body = json!({"email": email, "password": PASSWORD, "tenant_name": tenant});
        let answer = self.call("POST", "/auth/signup", None, Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.json
    }

    /// A note written by the holder of `token`.
    async fn create_note(&self, token: &str, text: &str) -> Value {
        let answer = self
            .call("POST", "/notes", Some(token), Some(json!({ "body": text })))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.json
    }

    /// The plan row the webhook handler writes for `tenant`, read in that tenant's scope.
    async fn plan_of(&self, tenant: TenantId) -> Option<String> {
        let scope = TenantScope::for_system(tenant);
        let mut tx = self.test_db.db.begin_read(&scope).await.expect("begin");
        let plan = with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT plan FROM note_plans WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(c)
                .await
        })
        .expect("read the plan");
        tx.commit().await.expect("commit");
        plan
    }
}

impl World {
    /// The objects under the app's `files/objects` folder (the local store's bytes; each has
    /// a `.meta` companion, not counted).
    fn files_on_disk(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|entry| match entry.file_type() {
                        Ok(kind) if kind.is_dir() => count(&entry.path()),
                        Ok(kind) if kind.is_file() => {
                            usize::from(!entry.file_name().to_string_lossy().ends_with(".meta"))
                        }
                        _ => 0,
                    })
                    .sum()
            })
        }
        count(&self._dir.path().join("files").join("objects"))
    }
}

fn token(answer: &Value) -> &str {
    answer["access_token"].as_str().expect("an access token")
}

fn tenant_of(answer: &Value) -> TenantId {
    answer["tenant"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a tenant id")
}

/// Signup, login, a note created and listed; another tenant can neither read nor delete it
/// (404, exactly like a missing note), and on PostgreSQL row-level security hides it even from
/// a query without the tenant filter.
async fn a_note_is_its_tenants_alone(world: World) {
    world.signup("ada@example.com", "Acme").await;
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    let logged_in = world.call("POST", "/auth/login", None, Some(login)).await;
    assert_eq!(logged_in.status, StatusCode::OK, "{logged_in:?}");
    let ada = token(&logged_in.json).to_owned();

    let note = world.create_note(&ada, "Buy milk").await;
    assert_eq!(note["body"], "Buy milk");
    let id = note["id"].as_str().expect("an id");
    let listed = world.call("GET", "/notes", Some(&ada), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json["items"], json!([note.clone()]));
    assert_eq!(listed.json["next_cursor"], Value::Null, "one page");
    let read = world
        .call("GET", &format!("/notes/{id}"), Some(&ada), None)
        .await;
    assert_eq!(read.json, note);

    let other = world.signup("bob@example.com", "Globex").await;
    let bob = token(&other);
    for method in ["GET", "DELETE"] {
        let answer = world
            .call(method, &format!("/notes/{id}"), Some(bob), None)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}: {answer:?}");
        assert_eq!(answer.problem_code(), "not_found");
    }
    let of_bob = world.call("GET", "/notes", Some(bob), None).await;
    assert_eq!(of_bob.json["items"], json!([]));
    if world.test_db.backend() == Backend::Postgres {
        // Without `WHERE tenant_id`: only the policy stands between Globex and Acme's note.
        let scope = TenantScope::for_system(tenant_of(&other));
        let mut tx = world.test_db.db.begin_read(&scope).await.expect("begin");
        let seen: i64 = with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT count(*) FROM notes")
                .fetch_one(c)
                .await
        })
        .expect("count");
        assert_eq!(seen, 0, "row-level security hides another tenant's notes");
        // Both tables are registered, so a start-up would refuse them without RLS.
        let registered: i64 = with_conn!(&mut tx, |c| {
            sqlx::query_scalar(
                "SELECT count(*) FROM tenantkit_tenant_tables \
                 WHERE relid IN ('notes'::regclass, 'note_plans'::regclass)",
            )
            .fetch_one(c)
            .await
        })
        .expect("the registry");
        assert_eq!(registered, 2);
    }

    // Still there for its own tenant, until its owner deletes it.
    let read = world
        .call("GET", &format!("/notes/{id}"), Some(&ada), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let deleted = world
        .call("DELETE", &format!("/notes/{id}"), Some(&ada), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = world
        .call("GET", &format!("/notes/{id}"), Some(&ada), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

/// Without a token, or with a forged one, a protected route answers 401 as a problem.
async fn a_caller_without_a_valid_token_is_refused(world: World) {
    let anonymous = world.call("GET", "/notes", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.problem_code(), "unauthenticated");
    let forged = world.call("GET", "/notes", Some("not.a.token"), None).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.problem_code(), "invalid_token");
    let unknown = world.call("GET", "/nowhere", None, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.problem_code(), "not_found");
}

/// Malformed JSON is 400 `bad_request`; a wrong shape or a bad value 422
/// `validation_failed` naming the field; a body that is not JSON at all 415.
async fn bad_bodies_are_problems_with_stable_codes(world: World) {
    let ada = world.signup("ada@example.com", "Acme").await;
    let ada = token(&ada);
    let send = |body: &'static str, content_type: &'static str| {
        let request = Request::post("/notes")
            .header(header::AUTHORIZATION, format!("Bearer {ada}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a request");
        world.send(request)
    };
    let malformed = send("{\"body\": ", "application/json").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.problem_code(), "bad_request");
    for (body, field) in [
        (r#"{"body": 5}"#, "body"),
        (r#"{"text": "hi"}"#, "text"),
        (r#"{"body": ""}"#, "body"),
        (r#"{"body": "a\u0000b"}"#, "body"),
    ] {
        let answer = send(body, "application/json").await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.problem_code(), "validation_failed");
        assert_eq!(
            answer.json["errors"][0]["field"], field,
            "{body}: {answer:?}"
        );
    }
    let not_json = send("body=hi", "application/x-www-form-urlencoded").await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(not_json.problem_code(), "unsupported_media_type");
    let signup = Request::post("/auth/signup")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .expect("a request");
    let signup = world.send(signup).await;
    assert_eq!(signup.status, StatusCode::BAD_REQUEST);
    assert_eq!(signup.problem_code(), "bad_request");
}

/// A refresh answers a new pair and spends the old refresh token: once its successor has
/// been used in turn, presenting the old one again is a replay, refused, and it ends the
/// session (whatever the grace window for concurrent refreshes).
async fn refresh_rotates_the_refresh_token(world: World) {
    let signed_up = world.signup("ada@example.com", "Acme").await;
    let refresh = |token: &Value| {
        let token = token["refresh_token"].as_str().expect("a refresh token");
        let body = json!({ "refresh_token": token });
        world.call("POST", "/auth/refresh", None, Some(body))
    };
    let second = refresh(&signed_up).await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_ne!(second.json["refresh_token"], signed_up["refresh_token"]);
    let listed = world
        .call("GET", "/notes", Some(token(&second.json)), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let third = refresh(&second.json).await;
    assert_eq!(third.status, StatusCode::OK, "{third:?}");
    assert_ne!(third.json["refresh_token"], second.json["refresh_token"]);

    let replayed = refresh(&signed_up).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replayed.problem_code(), "refresh_token_reused");
    let after = refresh(&third.json).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "the session is over"
    );
}

/// An upload intent for a note answers a signed URL on this app; the bytes sent there, then
/// completed, are a file. Another tenant's note takes no file.
async fn a_file_is_attached_to_a_note(world: World) {
    let ada = world.signup("ada@example.com", "Acme").await;
    let ada = token(&ada);
    let note = world.create_note(ada, "With a file").await;
    let bytes = b"hello, notes\n";
    let intent = json!({
        "filename": "hello.txt",
        "content_type": "text/plain",
        "size": bytes.len(),
        "sha256": Sha256::of(bytes).to_hex(),
    });
    let path = format!("/notes/{}/files", note["id"].as_str().expect("an id"));
    let ticket = world
        .call("POST", &path, Some(ada), Some(intent.clone()))
        .await;
    assert_eq!(ticket.status, StatusCode::CREATED, "{ticket:?}");
    assert_eq!(ticket.json["method"], "PUT");
    let url = ticket.json["url"].as_str().expect("a URL");
    let upload_path = url.strip_prefix(PUBLIC_URL).expect("a URL of this app");

    let mut put = Request::put(upload_path);
    for (name, value) in ticket.json["headers"].as_object().expect("headers to send") {
        put = put.header(name.as_str(), value.as_str().expect("a header value"));
    }
    let stored = world
        .send(put.body(Body::from(&bytes[..])).expect("a request"))
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{stored:?}");

    let id = ticket.json["id"].as_str().expect("an upload id");
    let path = format!("/uploads/{id}/complete");
    let file = world.call("POST", &path, Some(ada), None).await;
    assert_eq!(file.status, StatusCode::OK, "{file:?}");
    assert_eq!(file.json["filename"], "hello.txt");
    assert_eq!(file.json["size"], bytes.len());
    assert_eq!(file.json["content_type"], "text/plain");
    // The sweeper keeps a completed file (and its bytes).
    let swept = world
        .notes
        .sweeper()
        .sweep_once(tenantkit_core::now())
        .await;
    let swept = swept.expect("a sweep");
    assert_eq!((swept.expired_uploads, swept.orphans), (0, 0));

    let bob = world.signup("bob@example.com", "Globex").await;
    let path = format!("/notes/{}/files", note["id"].as_str().expect("an id"));
    let refused = world
        .call("POST", &path, Some(token(&bob)), Some(intent))
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(refused.problem_code(), "not_found");
    // Nor can Globex delete Acme's note, or its files.
    let note_path = format!("/notes/{}", note["id"].as_str().expect("an id"));
    let refused = world
        .call("DELETE", &note_path, Some(token(&bob)), None)
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(world.files_on_disk(), 1);

    // Deleting the note deletes its file in the same transaction, then the bytes.
    let deleted = world.call("DELETE", &note_path, Some(ada), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(world.files_on_disk(), 0, "the bytes went with the note");
    let again = world.call("GET", &note_path, Some(ada), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// The list is paged by the library's cursor: `limit` and `cursor` are checked (out of range
/// or unknown parameters answer 422, every one named), pages follow creation order.
async fn notes_are_listed_in_pages(world: World) {
    let ada = world.signup("ada@example.com", "Acme").await;
    let ada = token(&ada);
    let mut written = Vec::new();
    for text in ["one", "two", "three"] {
        written.push(world.create_note(ada, text).await["body"].clone());
    }
    let (mut read, mut path) = (Vec::new(), "/notes?limit=2".to_owned());
    loop {
        let page = world.call("GET", &path, Some(ada), None).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let items = page.json["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        read.extend(items.iter().map(|note| note["body"].clone()));
        match page.json["next_cursor"].as_str() {
            Some(cursor) => path = format!("/notes?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(read, written, "every note once, oldest first");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("colour=red", "colour"),
    ] {
        let answer = world
            .call("GET", &format!("/notes?{query}"), Some(ada), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(answer.problem_code(), "validation_failed");
        assert_eq!(answer.json["errors"][0]["field"], field, "{answer:?}");
    }
    let forged = world
        .call("GET", "/notes?cursor=not-a-cursor", Some(ada), None)
        .await;
    assert_eq!(
        forged.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{forged:?}"
    );
}

/// A signed `checkout.session.completed` is stored by the webhook route; the worker then runs
/// the handler, which writes the tenant's plan row (and no other tenant's). A delivery with a
/// bad signature is refused and stores nothing.
async fn a_signed_webhook_upgrades_the_tenant_through_the_worker(world: World) {
    let acme = tenant_of(&world.signup("ada@example.com", "Acme").await);
    let globex = tenant_of(&world.signup("bob@example.com", "Globex").await);
    let now = tenantkit_core::now().unix_timestamp();
    let life = SubscriptionLife::new(&acme.to_string(), "price_pro", "notes", now);
    let event = life.checkout_completed(0).events()[0].clone();
    let deliver = |signature: String| {
        let request = Request::post("/stripe/webhook")
            .header(header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", signature)
            .body(Body::from(event.body.clone()))
            .expect("a request");
        world.send(request)
    };

    let forged = deliver(event.signature("whsec_someone_else", now)).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert_eq!(forged.problem_code(), "invalid_signature");
    let inbox = Inbox::new(world.test_db.db.clone());
    assert!(inbox.get(&event.id).await.expect("inbox").is_none());

    let delivered = deliver(event.signature(STRIPE_SECRET, now)).await;
    assert_eq!(delivered.status, StatusCode::OK, "{delivered:?}");
    assert_eq!(
        world.plan_of(acme).await,
        None,
        "handlers run in the worker, not the request"
    );
    let worker = world.notes.worker();
    let at = tenantkit_core::now();
    assert_eq!(
        worker.run_once(at).await.expect("the worker"),
        Outcome::Done(event.id.clone())
    );
    assert_eq!(
        worker.run_once(at).await.expect("the worker"),
        Outcome::Idle
    );
    assert_eq!(world.plan_of(acme).await.as_deref(), Some("pro"));
    assert_eq!(world.plan_of(globex).await, None);
}

/// The background work of `main` is library calls that return once their shutdown future
/// completes (here: at once, already complete).
async fn background_work_stops_on_shutdown(world: World) {
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    let (worker, sweeper) = (world.notes.worker(), world.notes.sweeper());
    let both = async {
        tokio::join!(worker.run(stop.cancelled()), sweeper.run(stop.cancelled()));
    };
    // A hang guard only: both return without waiting.
    tokio::time::timeout(std::time::Duration::from_secs(600), both)
        .await
        .expect("the worker and the sweeper stop");
}

tenantkit_core::backend_tests!(
    fixture = world;
    a_note_is_its_tenants_alone,
    a_caller_without_a_valid_token_is_refused,
    bad_bodies_are_problems_with_stable_codes,
    refresh_rotates_the_refresh_token,
    a_file_is_attached_to_a_note,
    notes_are_listed_in_pages,
    a_signed_webhook_upgrades_the_tenant_through_the_worker,
    background_work_stops_on_shutdown,
);
