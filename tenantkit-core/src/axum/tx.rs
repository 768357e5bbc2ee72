//! A transaction scoped to the caller's tenant, as an extractor.

use ::axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiJson;
use crate::{Database, Principal, TenantScope, TenantTx};

/// A read-write transaction scoped to the caller's tenant, as [`Database::begin`] opens it
/// for [`TenantScope::of`] the [`Principal`] in the request extensions. Needs
/// `Database: FromRef<S>`.
///
/// Without a principal the request answers 401 (as the [`Principal`] extractor does); when no
/// connection can be had, the database error's problem. Commit with
/// `TenantWrite(tx)` → `tx.commit().await?`; dropped uncommitted, it rolls back.
///
/// For a request with a body, take [`TenantWriteJson`] instead: axum runs the parts
/// extractors before the body's, so `TenantWrite` next to [`ApiJson`] would hold the write
/// transaction (on SQLite, the one writer lock of the database) while a slow client sends its
/// body.
#[derive(Debug)]
pub struct TenantWrite(pub TenantTx);

/// The JSON body ([`ApiJson`]) and then a read-write transaction scoped to the caller's tenant
/// (as [`TenantWrite`]): the transaction begins only once the whole body is read and parsed,
/// so a client that sends slowly, or sends a bad body, never holds it. Without a principal the
/// request answers 401 before its body is read. Take it last, as any body extractor.
#[derive(Debug)]
pub struct TenantWriteJson<T>(pub TenantTx, pub T);

/// A read-only transaction scoped to the caller's tenant ([`Database::begin_read`]), otherwise
/// as [`TenantWrite`].
#[derive(Debug)]
pub struct TenantRead(pub TenantTx);

/// The caller's principal (401 without one), from the request's parts.
async fn caller<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Principal, Response> {
    <Principal as FromRequestParts<S>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)
}

/// A transaction scoped to `caller`'s tenant, read-only or read-write.
async fn begin_for<S>(caller: &Principal, state: &S, read_only: bool) -> Result<TenantTx, Response>
where
    Database: FromRef<S>,
{
    let (scope, db) = (TenantScope::of(caller), Database::from_ref(state));
    let tx = if read_only {
        db.begin_read(&scope).await
    } else {
        db.begin(&scope).await
    };
    tx.map_err(IntoResponse::into_response)
}

async fn begin<S>(parts: &mut Parts, state: &S, read_only: bool) -> Result<TenantTx, Response>
where
    S: Send + Sync,
    Database: FromRef<S>,
{
    begin_for(&caller(parts, state).await?, state, read_only).await
}

impl<S> FromRequestParts<S> for TenantWrite
where
    S: Send + Sync,
    Database: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        begin(parts, state, false).await.map(TenantWrite)
    }
}

impl<S, T> FromRequest<S> for TenantWriteJson<T>
where
    S: Send + Sync,
    Database: FromRef<S>,
    T: DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let caller = caller(&mut parts, state).await?;
        let ApiJson(value) = ApiJson::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(TenantWriteJson(
            begin_for(&caller, state, false).await?,
            value,
        ))
    }
}

impl<S> FromRequestParts<S> for TenantRead
where
    S: Send + Sync,
    Database: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        begin(parts, state, true).await.map(TenantRead)
    }
}

impl std::ops::Deref for TenantWrite {
    type Target = TenantTx;

    fn deref(&self) -> &TenantTx {
        &self.0
    }
}

impl std::ops::DerefMut for TenantWrite {
    fn deref_mut(&mut self) -> &mut TenantTx {
        &mut self.0
    }
}

impl std::ops::Deref for TenantRead {
    type Target = TenantTx;

    fn deref(&self) -> &TenantTx {
        &self.0
    }
}

impl std::ops::DerefMut for TenantRead {
    fn deref_mut(&mut self) -> &mut TenantTx {
        &mut self.0
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::axum::test_support::send;
    use crate::testing::{TestDb, TwoTenants};
    use crate::{Backend, Migrations, NewTeam, PageRequest, Team, TenantScoped};
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::routing::{get, post};
    use http::{Request, StatusCode};

    async fn db(backend: Backend) -> Option<TestDb> {
        TestDb::new(backend, &Migrations::new()).await
    }

    fn router(db: Database) -> Router {
        Router::new()
            .route(
                "/teams",
                post(|TenantWrite(mut tx): TenantWrite| async move {
                    let team = Team::create(&mut tx, NewTeam::named("Platform")).await?;
                    tx.commit().await?;
                    Ok::<_, crate::Error>(team.id.to_string())
                })
                .get(|mut tx: TenantRead| async move {
                    let page =
                        Team::list(&mut tx, &Default::default(), PageRequest::default()).await?;
                    Ok::<_, crate::Error>(::axum::Json(serde_json::json!({
                        "tenant": tx.tenant_id().to_string(),
                        "teams": page.items.len(),
                    })))
                }),
            )
            .route("/anonymous", get(|_tx: TenantRead| async { "unreachable" }))
            .with_state(db)
    }

    fn as_caller(method: &str, principal: &Principal) -> Request<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri("/teams")
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(principal.clone());
        request
    }

    /// The transaction is the caller's tenant's: a team written through tenant A's is seen
    /// by A's reads and not by B's; without a principal there is no transaction (401).
    async fn the_transaction_is_scoped_to_the_callers_tenant(test_db: TestDb) {
        let world = TwoTenants::create(&test_db.db).await;
        let app = router(test_db.db.clone());
        let (created, _) = send(app.clone(), as_caller("POST", &world.a.principal)).await;
        assert_eq!(created.status(), StatusCode::OK);
        let (_, of_a) = send(app.clone(), as_caller("GET", &world.a.principal)).await;
        assert_eq!(of_a["tenant"], world.a.tenant.id.to_string());
        assert_eq!(of_a["teams"], 1);
        let (_, of_b) = send(app.clone(), as_caller("GET", &world.b.principal)).await;
        assert_eq!(of_b["tenant"], world.b.tenant.id.to_string());
        assert_eq!(of_b["teams"], 0);
        let (anonymous, body) = send(
            app,
            Request::get("/anonymous")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "unauthenticated");
    }

    /// A team named by the JSON body, created in the caller's tenant.
    fn json_router(db: Database) -> Router {
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        Router::new()
            .route(
                "/teams",
                post(
                    |TenantWriteJson(mut tx, body): TenantWriteJson<Named>| async move {
                        let team = Team::create(&mut tx, NewTeam::named(&body.name)).await?;
                        tx.commit().await?;
                        Ok::<_, crate::Error>(team.id.to_string())
                    },
                ),
            )
            .with_state(db)
    }

    /// A body of the chunks sent to `rx`, ending when its sender is dropped.
    fn channel_body(rx: tokio::sync::mpsc::Receiver<&'static str>) -> Body {
        Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, std::convert::Infallible>(chunk), rx))
        }))
    }

    fn json_post(principal: Option<&Principal>, body: Body) -> Request<Body> {
        let mut request = Request::post("/teams")
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal.clone());
        }
        request
    }

    /// The write transaction begins only after the body is in: while a client is still
    /// sending, another writer commits (on SQLite the database's one writer lock is free);
    /// then the body ends and the write lands. An anonymous caller is refused before its body
    /// is read, and a bad body answers its problem with no write.
    async fn a_json_write_begins_after_the_body(test_db: TestDb) {
        let world = TwoTenants::create(&test_db.db).await;
        let app = json_router(test_db.db.clone());
        // A body sent in chunks through a channel of one: once the second chunk is accepted,
        // the first has been read, so the extractor is reading the body.
        let (chunks, rx) = tokio::sync::mpsc::channel::<&'static str>(1);
        let slow = tokio::spawn(send(
            app.clone(),
            json_post(Some(&world.a.principal), channel_body(rx)),
        ));
        chunks.send(r#"{"name":"#).await.expect("first chunk");
        chunks.send(r#""Slow"#).await.expect("second chunk");
        let mut other = test_db.db.begin(&world.a.scope()).await.expect("begin");
        Team::create(&mut other, NewTeam::named("Meanwhile"))
            .await
            .expect("a write while the body is in flight");
        other.commit().await.expect("commit");
        chunks.send(r#""}"#).await.expect("last chunk");
        drop(chunks);
        let (created, _) = slow.await.expect("request");
        assert_eq!(created.status(), StatusCode::OK);

        // Without a principal: 401 before the body is read (this one never ends; the timeout
        // is a hang guard only).
        let (_open, rx) = tokio::sync::mpsc::channel::<&'static str>(1);
        let anonymous = send(app.clone(), json_post(None, channel_body(rx)));
        let anonymous = tokio::time::timeout(std::time::Duration::from_secs(600), anonymous)
            .await
            .expect("answered without reading the body");
        assert_eq!(anonymous.0.status(), StatusCode::UNAUTHORIZED);
        let bad = send(
            app.clone(),
            json_post(Some(&world.a.principal), Body::from(r#"{"name":7}"#)),
        )
        .await;
        assert_eq!(bad.0.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.1["code"], "validation_failed");
        let mut tx = test_db
            .db
            .begin_read(&world.a.scope())
            .await
            .expect("begin");
        let teams = Team::list(&mut tx, &Default::default(), PageRequest::default())
            .await
            .expect("list");
        let mut names: Vec<_> = teams.items.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["Meanwhile", "Slow"]);
    }

    crate::backend_tests!(
        fixture = db;
        the_transaction_is_scoped_to_the_callers_tenant,
        a_json_write_begins_after_the_body,
    );
}
