//! Direct-to-storage uploads over real HTTP: one conformance suite run against both object
//! stores (the local backend served by the server itself, and SeaweedFS as a real S3 server
//! that verifies signatures, checksums and POST policies), on both databases.
//!
//! Every refused upload is followed by a completion attempt that must find nothing
//! (`upload_incomplete`): a refusal keeps nothing.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::testing::required_service;
use tenantkit_core::{Backend, Principal, Role, TenantId, TenantScope};
use tenantkit_e2e::TestServer;
use tenantkit_server::{Config, StorageBackend};
use tenantkit_storage::{
    NewUpload, ObjectId, ObjectKey, ObjectStore, Sha256, Storage, UploadIntent, UploadMethod,
};

/// Which object store a suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Local,
    S3,
}

/// A running server with its storage configuration.
struct Fixture {
    server: TestServer,
    store: Store,
    config: Config,
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn png(n: usize) -> Vec<u8> {
    let mut bytes = PNG.to_vec();
    bytes.resize(n.max(PNG.len()), 7);
    bytes
}

async fn start(backend: Backend, store: Store, quota: u64) -> Option<Fixture> {
    let mut config = Config {
        storage_quota_bytes: quota,
        storage_sweep_secs: 0,
        ..Config::default()
    };
    if store == Store::S3 {
        let endpoint = required_service("TENANTKIT_TEST_S3_ENDPOINT", "S3 storage")?;
        let access = required_service("TENANTKIT_TEST_S3_ACCESS_KEY", "S3 storage")?;
        let secret = required_service("TENANTKIT_TEST_S3_SECRET_KEY", "S3 storage")?;
        // The server reads the standard AWS variables, as in production (the test script
        // exports them for its S3 server).
        required_service("AWS_ACCESS_KEY_ID", "S3 storage")?;
        required_service("AWS_SECRET_ACCESS_KEY", "S3 storage")?;
        // A bucket per test: the sweeper lists the whole bucket, and other tests' objects
        // must not look like this one's orphans.
        let bucket = format!("tk-{}", uuid::Uuid::new_v4().simple());
        config.storage = StorageBackend::S3;
        config.s3_bucket = Some(bucket.clone());
        config.s3_endpoint = Some(endpoint.clone());
        config.s3_region = Some("us-east-1".into());
        let s3 = tenantkit_storage::S3Store::new(tenantkit_storage::S3Config {
            bucket,
            region: "us-east-1".into(),
            endpoint: Some(endpoint),
            access_key: access,
            secret_key: secret,
            session_token: None,
        });
        s3.ensure_bucket().await.expect("the test bucket");
    }
    let server = TestServer::start_with(backend, config.clone()).await?;
    let config = Config {
        data_dir: server.data_dir.path().to_owned(),
        database_url: Some(server.test_db.app_url.clone()),
        ..config
    };
    Some(Fixture {
        server,
        store,
        config,
    })
}

impl Fixture {
    /// A storage lifecycle over the same database and store as the server's.
    fn storage(&self) -> Storage {
        tenantkit_server::storage(&self.config, &self.server.test_db.db)
            .expect("storage")
            .0
    }

    /// The store itself.
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.storage().store().clone()
    }

    /// Local URLs name the configured public URL; the test server listens elsewhere.
    fn url(&self, url: &str) -> String {
        match self.store {
            Store::Local => {
                let path = url
                    .strip_prefix("http://127.0.0.1:8080")
                    .expect("a local storage URL");
                format!("{}{path}", self.server.base_url)
            }
            Store::S3 => url.to_owned(),
        }
    }

    async fn intent(&self, who: &Principal, body: Value) -> tenantkit_e2e::Reply {
        self.server
            .call(Some(who), Method::POST, "/v1/uploads", Some(body))
            .await
    }

    /// An accepted intent for `bytes` declared as `content_type`.
    async fn ticket(&self, who: &Principal, bytes: &[u8], content_type: &str) -> Value {
        let reply = self
            .intent(
                who,
                json!({
                    "filename": "photo.png",
                    "content_type": content_type,
                    "size": bytes.len(),
                    "sha256": Sha256::of(bytes).to_hex(),
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// Sends `body` to a PUT ticket with its headers, `content_type` replacing the signed one
    /// when given. Each on a connection of its own (a refusing store may close it).
    async fn put(&self, ticket: &Value, body: Vec<u8>, content_type: Option<&str>) -> StatusCode {
        self.put_to(&ticket["url"], ticket, body, content_type)
            .await
    }

    async fn put_to(
        &self,
        url: &Value,
        ticket: &Value,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> StatusCode {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let mut request = client.put(self.url(url.as_str().expect("url")));
        for (name, value) in ticket["headers"].as_object().expect("headers") {
            if name == "content-length" {
                continue; // reqwest sends the body's own length
            }
            let value = match (name.as_str(), content_type) {
                ("content-type", Some(other)) => other,
                _ => value.as_str().expect("header value"),
            };
            request = request.header(name.as_str(), value);
        }
        request.body(body).send().await.expect("upload").status()
    }

    async fn complete(&self, who: &Principal, id: &str) -> tenantkit_e2e::Reply {
        self.server
            .call(
                Some(who),
                Method::POST,
                &format!("/v1/uploads/{id}/complete"),
                None,
            )
            .await
    }

    /// Posts a browser form to `url`: `fields` in order, then the `file` part.
    async fn post_form(&self, url: &str, fields: &[(String, String)], file: &[u8]) -> StatusCode {
        let boundary = format!("tk{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        reqwest::Client::new()
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("post")
            .status()
    }

    /// The file's signed download URL, as answered by `GET /v1/files/{id}`.
    async fn download_url(&self, who: &Principal, file_id: &str) -> String {
        let one = self
            .server
            .call(
                Some(who),
                Method::GET,
                &format!("/v1/files/{file_id}"),
                None,
            )
            .await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.body);
        self.url(one.body["download_url"].as_str().expect("download url"))
    }

    /// The bytes a download of the file returns.
    async fn download(&self, who: &Principal, file_id: &str) -> Vec<u8> {
        let response = reqwest::get(self.download_url(who, file_id).await)
            .await
            .expect("download");
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("bytes").to_vec()
    }

    /// Moves the upload's expiry into the past, as if its instructions had run out.
    async fn expire(&self, upload_id: &str) {
        let id = uuid::Uuid::parse_str(upload_id).expect("uuid");
        let past = tenantkit_core::now() - time::Duration::seconds(1);
        let mut tx = self.server.test_db.db.begin_system().await.expect("tx");
        tenantkit_core::with_conn!(&mut tx, |c| {
            sqlx::query("UPDATE storage_uploads SET expires_at = $1 WHERE id = $2")
                .bind(past)
                .bind(id)
                .execute(c)
                .await
                .map(drop)
        })
        .expect("expire");
        tx.commit().await.expect("commit");
    }

    async fn assert_nothing_kept(&self, who: &Principal, ticket: &Value) {
        let reply = self.complete(who, ticket["id"].as_str().expect("id")).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
        assert_eq!(reply.body["code"], "upload_incomplete");
    }
}

fn owner(fixture: &Fixture) -> &Principal {
    &fixture.server.world.a.principal
}

async fn upload_download_delete(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(5000);
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    assert_eq!(ticket["method"], "PUT");
    let id = ticket["id"].as_str().expect("id").to_owned();
    // Nothing sent yet: completing finds nothing.
    fixture.assert_nothing_kept(who, &ticket).await;
    let status = fixture.put(&ticket, bytes.clone(), None).await;
    assert!(status.is_success(), "{status}");
    let file = fixture.complete(who, &id).await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    assert_eq!(file.body["size"], 5000);
    assert_eq!(file.body["content_type"], "image/png");
    assert_eq!(file.body["sha256"], Sha256::of(&bytes).to_hex());
    assert!(file.body.get("tenant_id").is_none());
    let file_id = file.body["id"].as_str().expect("file id").to_owned();
    // Idempotent.
    let again = fixture.complete(who, &id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], file_id.as_str());

    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().expect("items").len(), 1);
    assert!(listed.body["items"][0].get("download_url").is_none());

    let one = fixture
        .server
        .call(
            Some(who),
            Method::GET,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    let url = fixture.url(one.body["download_url"].as_str().expect("download url"));
    if fixture.store == Store::S3 {
        // S3 serves what the signed URL overrides: attachment and the stored type.
        assert!(
            url.contains("response-content-disposition=attachment"),
            "{url}"
        );
        assert!(url.contains("response-content-type=image%2Fpng"), "{url}");
    }
    let download = reqwest::get(&url).await.expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    let headers = download.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    let disposition = headers["content-disposition"].to_str().expect("text");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    if fixture.store == Store::Local {
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    assert_eq!(download.bytes().await.expect("bytes").as_ref(), &bytes[..]);
    // A tampered download URL is refused.
    let tampered = tamper(&url);
    let refused = reqwest::get(&tampered).await.expect("download");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let deleted = fixture
        .server
        .call(
            Some(who),
            Method::DELETE,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = fixture
        .server
        .call(
            Some(who),
            Method::GET,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let after = reqwest::get(&url).await.expect("download");
    assert_eq!(after.status(), StatusCode::NOT_FOUND, "the object went too");

    // The audit log has the completion and the deletion.
    let log = fixture
        .server
        .call(Some(who), Method::GET, "/v1/audit-log", None)
        .await;
    let actions: Vec<&str> = log.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"upload.completed"), "{actions:?}");
    assert!(actions.contains(&"file.deleted"), "{actions:?}");
}

/// Changes one character of the URL's signature (the last characters of the token, or of
/// `X-Amz-Signature`).
fn tamper(url: &str) -> String {
    let (head, tail) = match url.find("X-Amz-Signature=") {
        Some(at) => {
            let start = at + "X-Amz-Signature=".len();
            (url[..start].to_owned(), url[start..].to_owned())
        }
        None => {
            let cut = url.len() - 4;
            (url[..cut].to_owned(), url[cut..].to_owned())
        }
    };
    let mut chars: Vec<char> = tail.chars().collect();
    chars[0] = if chars[0] == 'a' { 'b' } else { 'a' };
    format!("{head}{}", chars.into_iter().collect::<String>())
}

async fn refused_uploads_keep_nothing(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(2048);

    // Oversize body.
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    let mut longer = bytes.clone();
    longer.push(0);
    let status = fixture.put(&ticket, longer, None).await;
    assert!(status.is_client_error(), "oversize: {status}");
    fixture.assert_nothing_kept(who, &ticket).await;

    // Undersize body.
    let status = fixture.put(&ticket, bytes[..2000].to_vec(), None).await;
    assert!(status.is_client_error(), "undersize: {status}");
    fixture.assert_nothing_kept(who, &ticket).await;

    // Wrong content type.
    let status = fixture
        .put(&ticket, bytes.clone(), Some("image/jpeg"))
        .await;
    assert!(status.is_client_error(), "type: {status}");
    fixture.assert_nothing_kept(who, &ticket).await;

    // Same length, other bytes: the signed sha256 does not match.
    let mut other = bytes.clone();
    other[100] ^= 1;
    let status = fixture.put(&ticket, other, None).await;
    assert!(status.is_client_error(), "sha256: {status}");
    fixture.assert_nothing_kept(who, &ticket).await;

    // Tampered signature, and another key (outside the tenant's prefix) with the same
    // signature.
    let url = ticket["url"].as_str().expect("url");
    let status = fixture
        .put_to(&json!(tamper(url)), &ticket, bytes.clone(), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tampered");
    let other_tenant = TenantId::new();
    let moved = match fixture.store {
        Store::S3 => url.replacen(
            &format!("tenants/{}/", fixture.server.world.a.tenant.id),
            &format!("tenants/{other_tenant}/"),
            1,
        ),
        // A local token names its key inside the signed payload: any change is a tamper.
        Store::Local => tamper(&url.replacen("/upload/", "/upload/x", 1)),
    };
    assert_ne!(moved, url);
    let status = fixture
        .put_to(&json!(moved), &ticket, bytes.clone(), None)
        .await;
    assert!(status.is_client_error(), "moved key: {status}");
    fixture.assert_nothing_kept(who, &ticket).await;

    // Expired: signed in the past by the same store.
    let store = fixture.store();
    let key = ObjectKey::new(fixture.server.world.a.tenant.id, ObjectId::new());
    let intent = UploadIntent {
        filename: "x.png".into(),
        content_type: "image/png".into(),
        size: bytes.len() as u64,
        sha256: Sha256::of(&bytes),
    };
    let past = tenantkit_core::now() - time::Duration::hours(1);
    let expired = store
        .sign_upload(
            &key,
            &intent,
            UploadMethod::Put,
            past,
            time::Duration::minutes(5),
        )
        .await
        .expect("sign");
    let expired = serde_json::to_value(&expired).expect("json");
    let status = fixture
        .put_to(&expired["url"], &expired, bytes.clone(), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "expired");
    assert!(store.head(&key).await.expect("head").is_none());

    // The right upload works; a second upload to the same URL afterwards, with other bytes
    // of the same size or with the same bytes, is refused, and the download still returns
    // the first bytes.
    let status = fixture.put(&ticket, bytes.clone(), None).await;
    assert!(status.is_success(), "{status}");
    let file = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let file_id = file.body["id"].as_str().expect("file id");
    let mut replacement = bytes.clone();
    replacement[bytes.len() - 1] ^= 0x55;
    assert_eq!(replacement.len(), bytes.len());
    let status = fixture.put(&ticket, replacement.clone(), None).await;
    assert!(
        status.is_client_error(),
        "second upload, other bytes: {status}"
    );
    let status = fixture.put(&ticket, bytes.clone(), None).await;
    assert!(
        status.is_client_error(),
        "second upload, same bytes: {status}"
    );
    let downloaded = fixture.download(who, file_id).await;
    assert!(downloaded == bytes, "the download returns the first bytes");
    let again = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], file_id);
}

async fn declared_png_holding_html_is_a_mismatch(fixture: Fixture) {
    let who = owner(&fixture);
    let html = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>".to_vec();
    let ticket = fixture.ticket(who, &html, "image/png").await;
    let status = fixture.put(&ticket, html.clone(), None).await;
    assert!(
        status.is_success(),
        "the store only checks what was signed: {status}"
    );
    let id = ticket["id"].as_str().expect("id");
    let reply = fixture.complete(who, id).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.body["code"], "upload_mismatch");
    // A retrying client learns the same (the upload stays rejected); the object is gone.
    let again = fixture.complete(who, id).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["code"], "upload_mismatch");
    assert_eq!(again.body["detail"], reply.body["detail"]);
    let objects = fixture.store().list(None, 100).await.expect("list");
    assert!(objects.is_empty(), "{objects:?}");
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"], json!([]));
    let log = fixture
        .server
        .call(Some(who), Method::GET, "/v1/audit-log", None)
        .await;
    assert!(
        log.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "upload.rejected"),
        "{}",
        log.body
    );
    // Text types are refused outright.
    for content_type in ["text/html", "image/svg+xml", "application/javascript"] {
        let reply = fixture
            .intent(
                who,
                json!({"filename": "x", "content_type": content_type, "size": 10,
                       "sha256": Sha256::of(b"x").to_hex()}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{content_type}"
        );
    }
}

async fn quota_counts_pending_uploads(fixture: Fixture) {
    // The quota is 10,000 bytes (see the fixture).
    let who = owner(&fixture);
    let first = fixture.ticket(who, &png(6000), "image/png").await;
    let over = fixture
        .intent(
            who,
            json!({"filename": "b.png", "content_type": "image/png", "size": 6000,
                   "sha256": Sha256::of(&png(6000)).to_hex()}),
        )
        .await;
    assert_eq!(over.status, StatusCode::FORBIDDEN, "{}", over.body);
    assert_eq!(over.body["code"], "quota_exceeded");
    drop(first);

    // Tenant B, in parallel: two intents that together exceed it, exactly one admitted.
    let b = &fixture.server.world.b.principal;
    let body = json!({"filename": "b.png", "content_type": "image/png", "size": 6000,
                      "sha256": Sha256::of(&png(6000)).to_hex()});
    let (one, two) = tokio::join!(fixture.intent(b, body.clone()), fixture.intent(b, body));
    let mut statuses = [one.status.as_u16(), two.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 403], "{} / {}", one.body, two.body);
}

async fn other_tenants_and_viewers(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(300);
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    assert!(fixture.put(&ticket, bytes, None).await.is_success());
    let upload = ticket["id"].as_str().expect("id");
    let file = fixture.complete(who, upload).await;
    let file_id = file.body["id"].as_str().expect("id").to_owned();

    let b = &fixture.server.world.b.principal;
    let missing = fixture.complete(b, &uuid::Uuid::now_v7().to_string()).await;
    let foreign = fixture.complete(b, upload).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(foreign.body, missing.body);
    for method in [Method::GET, Method::DELETE] {
        let foreign = fixture
            .server
            .call(
                Some(b),
                method.clone(),
                &format!("/v1/files/{file_id}"),
                None,
            )
            .await;
        let missing = fixture
            .server
            .call(
                Some(b),
                method,
                &format!("/v1/files/{}", uuid::Uuid::now_v7()),
                None,
            )
            .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND);
        assert_eq!(foreign.body, missing.body);
    }
    let theirs = fixture
        .server
        .call(Some(b), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(theirs.body["items"], json!([]));

    // A viewer reads but cannot upload or delete.
    let (_, viewer) = fixture
        .server
        .add_user(&fixture.server.world.a, Role::Viewer)
        .await;
    let refused = fixture
        .intent(
            &viewer,
            json!({"filename": "v.png", "content_type": "image/png", "size": 300,
                   "sha256": Sha256::of(&png(300)).to_hex()}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let read = fixture
        .server
        .call(
            Some(&viewer),
            Method::GET,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let delete = fixture
        .server
        .call(
            Some(&viewer),
            Method::DELETE,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
}

async fn restricted_projects_hide_their_files(fixture: Fixture) {
    let who = owner(&fixture);
    let team = fixture
        .server
        .call(
            Some(who),
            Method::POST,
            "/v1/teams",
            Some(json!({"name": "Secret"})),
        )
        .await;
    assert_eq!(team.status, StatusCode::CREATED, "{}", team.body);
    let project = fixture
        .server
        .call(
            Some(who),
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "Hidden", "team_id": team.body["id"], "restricted": true})),
        )
        .await;
    assert_eq!(project.status, StatusCode::CREATED, "{}", project.body);
    let project_id = project.body["id"].as_str().expect("id").to_owned();
    let bytes = png(900);
    let reply = fixture
        .intent(
            who,
            json!({"filename": "h.png", "content_type": "image/png", "size": bytes.len(),
                   "sha256": Sha256::of(&bytes).to_hex(), "parent_id": project_id}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert!(
        fixture
            .put(&reply.body, bytes.clone(), None)
            .await
            .is_success()
    );
    let file = fixture
        .complete(who, reply.body["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    assert_eq!(file.body["parent_id"], project_id.as_str());
    let file_id = file.body["id"].as_str().expect("id").to_owned();

    // A member outside the team sees neither the file nor the project.
    let (_, outsider) = fixture
        .server
        .add_user(&fixture.server.world.a, Role::Member)
        .await;
    let listed = fixture
        .server
        .call(Some(&outsider), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"], json!([]));
    let filtered = fixture
        .server
        .call(
            Some(&outsider),
            Method::GET,
            &format!("/v1/files?parent_id={project_id}"),
            None,
        )
        .await;
    assert_eq!(filtered.body["items"], json!([]));
    for method in [Method::GET, Method::DELETE] {
        let reply = fixture
            .server
            .call(
                Some(&outsider),
                method,
                &format!("/v1/files/{file_id}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let refused = fixture
        .intent(
            &outsider,
            json!({"filename": "h.png", "content_type": "image/png", "size": bytes.len(),
                   "sha256": Sha256::of(&bytes).to_hex(), "parent_id": project_id}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    // The owner still sees it.
    let mine = fixture
        .server
        .call(
            Some(who),
            Method::GET,
            &format!("/v1/files?parent_id={project_id}"),
            None,
        )
        .await;
    assert_eq!(mine.body["items"].as_array().expect("items").len(), 1);
    // Deleting the project deletes its files (storage's `delete_files_of`, in the project's
    // transaction), their bytes after the commit: nobody sees them, and they no longer count
    // in the quota.
    let deleted = fixture
        .server
        .call(
            Some(who),
            Method::DELETE,
            &format!("/v1/projects/{project_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let gone = fixture
        .server
        .call(
            Some(who),
            Method::GET,
            &format!("/v1/files/{file_id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"], json!([]));
    // The quota is 10,000 bytes: with the 900 of the deleted file still counted, 9,200 more
    // would not fit.
    let big = png(9200);
    let fits = fixture
        .intent(
            who,
            json!({"filename": "big.png", "content_type": "image/png", "size": big.len(),
                   "sha256": Sha256::of(&big).to_hex()}),
        )
        .await;
    assert_eq!(fits.status, StatusCode::CREATED, "{}", fits.body);
}

async fn concurrent_completes_make_one_file(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(4096);
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    assert!(fixture.put(&ticket, bytes, None).await.is_success());
    let id = ticket["id"].as_str().expect("id");
    let replies = futures_util::future::join_all((0..8).map(|_| fixture.complete(who, id))).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one file");
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"].as_array().expect("items").len(), 1);
}

async fn bad_intents_are_422(fixture: Fixture) {
    let who = owner(&fixture);
    let sha = Sha256::of(b"x").to_hex();
    for body in [
        json!({"filename": "a.png", "content_type": "image/png", "size": 10, "sha256": "zz"}),
        json!({"filename": "a.png", "content_type": "image/png", "size": 0, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "image/png", "size": 200_000_000u64, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "image/PNG", "size": 10, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "image/png; x=y", "size": 10, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "application/x-msdownload", "size": 10, "sha256": sha}),
        json!({"filename": "../../etc/passwd", "content_type": "image/png", "size": 10, "sha256": sha}),
        json!({"filename": "", "content_type": "image/png", "size": 10, "sha256": sha}),
        json!({"filename": "a\u{0}b", "content_type": "image/png", "size": 10, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "image/png", "size": 10, "sha256": sha, "key": "tenants/x"}),
        json!({"filename": "a.png", "content_type": "image/png", "size": -1, "sha256": sha}),
        json!({"filename": "a.png", "content_type": "image/png", "size": 10, "sha256": sha, "method": "GET"}),
    ] {
        let reply = fixture.intent(who, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {}",
            reply.body
        );
        assert_eq!(reply.body["code"], "validation_failed");
    }
    // `method` is `PUT` or `POST` exactly: anything else (another method, another spelling,
    // another type) is a validation problem naming `method`, never a 500.
    for method in [
        json!("GET"),
        json!("put"),
        json!(""),
        json!(5),
        json!({"PUT": 1}),
    ] {
        let body = json!({"filename": "a.png", "content_type": "image/png", "size": 10,
                          "sha256": sha, "method": method});
        let reply = fixture.intent(who, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {}",
            reply.body
        );
        assert_eq!(reply.body["code"], "validation_failed");
        let fields: Vec<&str> = reply.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, ["method"], "{body} → {}", reply.body);
    }
    // Both spellings the API documents are taken (POST where the store supports forms).
    let put = fixture
        .intent(
            who,
            json!({"filename": "a.png", "content_type": "image/png", "size": 10,
                   "sha256": sha, "method": "PUT"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    assert_eq!(put.body["method"], "PUT");
    let post = fixture
        .intent(
            who,
            json!({"filename": "a.png", "content_type": "image/png", "size": 10,
                   "sha256": sha, "method": "POST"}),
        )
        .await;
    match fixture.store {
        Store::S3 => assert_eq!(post.status, StatusCode::CREATED, "{}", post.body),
        Store::Local => {
            assert_eq!(
                post.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                post.body
            );
            assert_eq!(post.body["errors"][0]["field"], "method", "{}", post.body);
        }
    }
    // Another tenant's project, or a made-up one: 404.
    let reply = fixture
        .intent(
            who,
            json!({"filename": "a.png", "content_type": "image/png", "size": 10, "sha256": sha,
                   "parent_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

async fn sweeper_removes_expired_uploads_and_orphans(fixture: Fixture) {
    let who = owner(&fixture);
    let storage = fixture.storage().with_limits(tenantkit_storage::Limits {
        upload_ttl: time::Duration::minutes(5),
        sweep_grace: time::Duration::ZERO,
        ..tenantkit_storage::Limits::default()
    });
    let bytes = png(700);
    let new = || NewUpload {
        filename: "s.png".into(),
        content_type: "image/png".into(),
        size: bytes.len() as u64,
        sha256: Sha256::of(&bytes).to_hex(),
        parent_id: None,
        method: None,
    };
    // Expires five minutes after it was made (uploaded, never completed). The sweep below runs
    // at a given instant six minutes on, so no wall-clock wait or race decides the outcome.
    let mut tx = fixture
        .server
        .test_db
        .db
        .begin(&TenantScope::of(who))
        .await
        .expect("tx");
    let expiring = storage
        .create_upload(&mut tx, who, new())
        .await
        .expect("intent");
    tx.commit().await.expect("commit");
    let expiring = serde_json::to_value(&expiring).expect("json");
    assert!(
        fixture
            .put(&expiring, bytes.clone(), None)
            .await
            .is_success()
    );
    // Fresh (the server's default, 15 minutes).
    let fresh = fixture.ticket(who, &bytes, "image/png").await;
    // A completed file.
    let done = fixture.ticket(who, &bytes, "image/png").await;
    assert!(fixture.put(&done, bytes.clone(), None).await.is_success());
    let file = fixture
        .complete(who, done["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK);
    // An orphan: an object no row refers to.
    let orphan = ObjectKey::new(fixture.server.world.a.tenant.id, ObjectId::new());
    let store = fixture.store();
    let intent = UploadIntent {
        filename: "o.png".into(),
        content_type: "image/png".into(),
        size: bytes.len() as u64,
        sha256: Sha256::of(&bytes),
    };
    let signed = store
        .sign_upload(
            &orphan,
            &intent,
            UploadMethod::Put,
            tenantkit_core::now(),
            time::Duration::minutes(5),
        )
        .await
        .expect("sign");
    let signed = serde_json::to_value(&signed).expect("json");
    assert!(fixture.put(&signed, bytes.clone(), None).await.is_success());
    assert!(store.head(&orphan).await.expect("head").is_some());

    let later = tenantkit_core::now() + time::Duration::minutes(6);
    let report = storage.sweep(later).await.expect("sweep");
    assert_eq!(report.expired_uploads, 1, "{report:?}");
    assert_eq!(report.orphans, 1, "{report:?}");
    assert!(store.head(&orphan).await.expect("head").is_none());
    let gone = fixture
        .complete(who, expiring["id"].as_str().expect("id"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // The fresh upload still works; the file is untouched.
    assert!(fixture.put(&fresh, bytes.clone(), None).await.is_success());
    let completed = fixture
        .complete(who, fresh["id"].as_str().expect("id"))
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"].as_array().expect("items").len(), 2);
    // Sweeping again removes nothing more.
    let report = storage.sweep(later).await.expect("sweep");
    assert_eq!((report.expired_uploads, report.orphans), (0, 0));
    // Once the completed uploads' instructions have expired, an S3 upload's staging object
    // (its bytes were copied to the file's own key) is an orphan; the files keep their bytes.
    let much_later = tenantkit_core::now() + time::Duration::minutes(20);
    let report = storage.sweep(much_later).await.expect("sweep");
    let staged = if fixture.store == Store::S3 { 2 } else { 0 };
    assert_eq!((report.expired_uploads, report.orphans), (0, staged));
    for item in listed.body["items"].as_array().expect("items") {
        let file_id = item["id"].as_str().expect("id");
        assert!(fixture.download(who, file_id).await == bytes);
    }
}

/// Browser form uploads (S3 only): the POST policy admits exactly the signed key, type and
/// size.
async fn post_policy_uploads(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(1500);
    let reply = fixture
        .intent(
            who,
            json!({"filename": "f.png", "content_type": "image/png", "size": bytes.len(),
                   "sha256": Sha256::of(&bytes).to_hex(), "method": "POST"}),
        )
        .await;
    if fixture.store == Store::Local {
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        return;
    }
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let ticket = reply.body;
    assert_eq!(ticket["method"], "POST");
    let fields = ticket["fields"].as_object().expect("fields");
    let url = ticket["url"].as_str().expect("url");
    let form = &fixture;
    let post = |fields: Vec<(String, String)>, file: Vec<u8>| async move {
        form.post_form(url, &fields, &file).await
    };
    let signed: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned()))
        .collect();
    // Over the signed size, another key, another type: refused.
    let mut longer = bytes.clone();
    longer.push(1);
    assert!(post(signed.clone(), longer).await.is_client_error());
    let moved: Vec<_> = signed
        .iter()
        .map(|(k, v)| {
            if k == "key" {
                (k.clone(), v.replacen("tenants/", "tenants/x", 1))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    assert!(post(moved, bytes.clone()).await.is_client_error());
    let retyped: Vec<_> = signed
        .iter()
        .map(|(k, v)| {
            if k == "Content-Type" {
                (k.clone(), "image/jpeg".to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    assert!(post(retyped, bytes.clone()).await.is_client_error());
    fixture.assert_nothing_kept(who, &ticket).await;
    // The signed form: accepted, and it completes (the SHA-256 is checked on the stored bytes).
    assert!(post(signed, bytes.clone()).await.is_success());
    let file = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    assert_eq!(file.body["sha256"], Sha256::of(&bytes).to_hex());
}

/// The local store streams and enforces the signed size without a Content-Length too.
async fn local_streamed_oversize_is_cut(fixture: Fixture) {
    if fixture.store != Store::Local {
        return;
    }
    let who = owner(&fixture);
    let bytes = png(8_000);
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..20).map(|_| Ok(png(1_000))).collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let response = client
        .put(fixture.url(ticket["url"].as_str().expect("url")))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server answers 413 and closes; the client may see the answer or a reset.
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    fixture.assert_nothing_kept(who, &ticket).await;
    let tmp = fixture.server.data_dir.path().join("uploads").join("tmp");
    assert_eq!(
        std::fs::read_dir(tmp).expect("tmp").count(),
        0,
        "no partial file left"
    );
}

/// The fields of a POST ticket, in order.
fn form_fields(ticket: &Value) -> Vec<(String, String)> {
    ticket["fields"]
        .as_object()
        .expect("fields")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned()))
        .collect()
}

/// A POST intent for `bytes` (S3 only).
async fn form_ticket(fixture: &Fixture, who: &Principal, bytes: &[u8]) -> Value {
    let reply = fixture
        .intent(
            who,
            json!({"filename": "f.png", "content_type": "image/png", "size": bytes.len(),
                   "sha256": Sha256::of(bytes).to_hex(), "method": "POST"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

/// A POST policy cannot say "create only": the same form, posted again with other bytes of
/// the same length after completion, must not change what the file's download returns.
async fn a_reposted_form_cannot_replace_a_completed_file(fixture: Fixture) {
    let who = owner(&fixture);
    let first = png(1500);
    let mut second = first.clone();
    second[1400] ^= 0x5a;
    let ticket = form_ticket(&fixture, who, &first).await;
    let url = ticket["url"].as_str().expect("url");
    let fields = form_fields(&ticket);
    assert!(fixture.post_form(url, &fields, &first).await.is_success());
    let file = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let file_id = file.body["id"].as_str().expect("file id");
    // The store may well accept the second post (the policy still holds); it changes nothing
    // the file serves.
    let _ = fixture.post_form(url, &fields, &second).await;
    let downloaded = fixture.download(who, file_id).await;
    assert!(
        downloaded == first,
        "the download returns the verified bytes"
    );
    let again = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], file_id);
    assert!(fixture.download(who, file_id).await == first);
}

/// Completions racing reposts of the form with other bytes: every settled answer agrees (one
/// file, or the same mismatch), and a completed file always downloads the verified bytes (a
/// completion that saw the swapped bytes never deletes them).
async fn completing_while_the_form_is_reposted_keeps_the_verified_bytes(fixture: Fixture) {
    let who = owner(&fixture);
    for round in 0..3u8 {
        let first = png(1500 + usize::from(round));
        let mut second = first.clone();
        second[1000] ^= 0x33;
        let ticket = form_ticket(&fixture, who, &first).await;
        let url = ticket["url"].as_str().expect("url");
        let fields = form_fields(&ticket);
        assert!(fixture.post_form(url, &fields, &first).await.is_success());
        let id = ticket["id"].as_str().expect("id");
        let completes = futures_util::future::join_all((0..4).map(|_| fixture.complete(who, id)));
        let posts = futures_util::future::join_all(
            (0..4).map(|_| fixture.post_form(url, &fields, &second)),
        );
        let (replies, _) = tokio::join!(completes, posts);
        let settled: Vec<(StatusCode, Value)> = replies
            .into_iter()
            .filter(|r| r.body["code"] != "upload_incomplete")
            .map(|r| {
                assert!(
                    r.status == StatusCode::OK || r.body["code"] == "upload_mismatch",
                    "{}",
                    r.body
                );
                (r.status, r.body["id"].clone())
            })
            .collect();
        assert!(
            settled.windows(2).all(|pair| pair[0] == pair[1]),
            "round {round}: {settled:?}"
        );
        let last = fixture.complete(who, id).await;
        if let Some((status, file_id)) = settled.first() {
            assert_eq!(last.status, *status, "{}", last.body);
            assert_eq!(&last.body["id"], file_id);
        }
        if last.status == StatusCode::OK {
            let file_id = last.body["id"].as_str().expect("file id");
            let downloaded = fixture.download(who, file_id).await;
            assert!(downloaded == first, "round {round}: the verified bytes");
        } else {
            assert_eq!(last.body["code"], "upload_mismatch", "{}", last.body);
        }
    }
}

/// Text a browser could render: markup anywhere in the object (here after the first KiB)
/// is refused, and completing again answers the same.
async fn text_with_markup_after_the_first_kib_is_refused(fixture: Fixture) {
    let who = owner(&fixture);
    let mut text = "a harmless line of text\n".repeat(60).into_bytes();
    assert!(text.len() > 1024);
    text.extend_from_slice(b"<img src=x onerror=alert(document.domain)>\n");
    let ticket = fixture.ticket(who, &text, "text/plain").await;
    assert!(fixture.put(&ticket, text.clone(), None).await.is_success());
    let id = ticket["id"].as_str().expect("id");
    for _ in 0..2 {
        let reply = fixture.complete(who, id).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
        assert_eq!(reply.body["code"], "upload_mismatch");
    }
    // The same text without the markup is a file.
    let clean = "a harmless line of text\n".repeat(61).into_bytes();
    let ticket = fixture.ticket(who, &clean, "text/plain").await;
    assert!(fixture.put(&ticket, clean.clone(), None).await.is_success());
    let file = fixture
        .complete(who, ticket["id"].as_str().expect("id"))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"].as_array().expect("items").len(), 1);
}

/// An upload whose instructions expired cannot become a file (even with its bytes in the
/// store); a completed one still answers its file.
async fn expired_uploads_cannot_complete(fixture: Fixture) {
    let who = owner(&fixture);
    let bytes = png(800);
    let ticket = fixture.ticket(who, &bytes, "image/png").await;
    assert!(fixture.put(&ticket, bytes.clone(), None).await.is_success());
    let id = ticket["id"].as_str().expect("id");
    fixture.expire(id).await;
    let reply = fixture.complete(who, id).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.body["code"], "upload_incomplete");
    let listed = fixture
        .server
        .call(Some(who), Method::GET, "/v1/files", None)
        .await;
    assert_eq!(listed.body["items"], json!([]));

    let done = fixture.ticket(who, &png(900), "image/png").await;
    assert!(fixture.put(&done, png(900), None).await.is_success());
    let done_id = done["id"].as_str().expect("id");
    let file = fixture.complete(who, done_id).await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    fixture.expire(done_id).await;
    let again = fixture.complete(who, done_id).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], file.body["id"]);
}

async fn local(backend: Backend) -> Option<Fixture> {
    start(backend, Store::Local, 10_000).await
}

async fn s3(backend: Backend) -> Option<Fixture> {
    start(backend, Store::S3, 10_000).await
}

mod local_store {
    use super::*;
    tenantkit_core::backend_tests!(
        fixture = local;
        upload_download_delete, refused_uploads_keep_nothing,
        declared_png_holding_html_is_a_mismatch, quota_counts_pending_uploads,
        other_tenants_and_viewers, concurrent_completes_make_one_file, bad_intents_are_422,
        restricted_projects_hide_their_files,
        sweeper_removes_expired_uploads_and_orphans, post_policy_uploads,
        local_streamed_oversize_is_cut, text_with_markup_after_the_first_kib_is_refused,
        expired_uploads_cannot_complete
    );
}

mod s3_store {
    use super::*;
    tenantkit_core::backend_tests!(
        fixture = s3;
        upload_download_delete, refused_uploads_keep_nothing,
        declared_png_holding_html_is_a_mismatch, quota_counts_pending_uploads,
        other_tenants_and_viewers, concurrent_completes_make_one_file,
        sweeper_removes_expired_uploads_and_orphans, post_policy_uploads,
        text_with_markup_after_the_first_kib_is_refused, expired_uploads_cannot_complete,
        a_reposted_form_cannot_replace_a_completed_file,
        completing_while_the_form_is_reposted_keeps_the_verified_bytes
    );
}
