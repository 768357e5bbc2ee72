//! A transaction scoped to the caller's tenant, as an extractor.

use ::axum::extract::{FromRef, FromRequestParts};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{Database, Principal, TenantScope, TenantTx};

/// A read-write transaction scoped to the caller's tenant, as [`Database::begin`] opens it
/// for [`TenantScope::of`] the [`Principal`] in the request extensions. Needs
/// `Database: FromRef<S>`.
///
/// Without a principal the request answers 401 (as the [`Principal`] extractor does); when no
/// connection can be had, the database error's problem. Commit with
/// `TenantWrite(tx)` → `tx.commit().await?`; dropped uncommitted, it rolls back.
#[derive(Debug)]
pub struct TenantWrite(pub TenantTx);

/// A read-only transaction scoped to the caller's tenant ([`Database::begin_read`]), otherwise
/// as [`TenantWrite`].
#[derive(Debug)]
pub struct TenantRead(pub TenantTx);

async fn begin<S>(parts: &mut Parts, state: &S, read_only: bool) -> Result<TenantTx, Response>
where
    S: Send + Sync,
    Database: FromRef<S>,
{
    let caller = <Principal as FromRequestParts<S>>::from_request_parts(parts, state).await?;
    let scope = TenantScope::of(&caller);
    let db = Database::from_ref(state);
    let tx = if read_only {
        db.begin_read(&scope).await
    } else {
        db.begin(&scope).await
    };
    tx.map_err(IntoResponse::into_response)
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

    crate::backend_tests!(fixture = db; the_transaction_is_scoped_to_the_callers_tenant);
}
