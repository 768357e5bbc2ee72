//! A small multi-tenant notes API on tenantkit's public APIs: sign-in, the app's own tenant
//! table `notes` (behind row-level security on PostgreSQL), files attached to notes, and a
//! Stripe webhook whose handler moves the tenant to the `pro` plan. See the README.

use std::{path::Path, sync::Arc, time::Duration};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tenantkit_auth::extract::{ApiId, ApiJson, TenantRead, TenantWrite, layers};
use tenantkit_auth::{AccessTokens, JwtAuthLayer, JwtConfig, KeyDir, RefreshSessions};
use tenantkit_auth::{flows::AuthFlows, routes::AuthRoutes};
use tenantkit_billing::stripe_shared::CheckoutSession;
use tenantkit_billing::{Billing, BoxFuture, EventRouter, HandlerError, ObjectHandler};
use tenantkit_billing::{StoredEvent, WebhookVerifier, Worker, axum::webhook_route};
use tenantkit_core::{ClientInfo, Database, Error, Migrations, Permission, Principal};
use tenantkit_core::{FieldError, Visibility, validate, with_conn};
use tenantkit_core::{SystemTx, TenantId, TenantScope, TenantTable, TrustedProxies, UserId};
use tenantkit_storage::{Error as StorageError, FileParent, UploadTicket, axum::local_routes};
use tenantkit_storage::{LocalStore, NewUpload, Storage, StoredFile, Sweeper, UploadId};
use time::OffsetDateTime;

/// Any error of the set-up.
pub type BoxError = Box<dyn std::error::Error>;

tenantkit_core::define_id!(
    /// Identifies a note.
    NoteId, "note id"
);

/// tenantkit's migration sets and the app's own (`migrations/`, versions 10000 and up).
pub fn migrations() -> Migrations {
    Migrations::new()
        .with(tenantkit_auth::migrations())
        .with(tenantkit_storage::migrations())
        .with(tenantkit_billing::migrations())
        .with(tenantkit_core::migration_set!("tenantkit-notes"))
}

/// The app: tenantkit's services over one database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notes {
    db: Database,
    auth: AuthFlows,
    storage: Storage,
    files: LocalStore,
    billing: Billing,
    proxies: Arc<TrustedProxies>,
}

impl FromRef<Notes> for Database {
    fn from_ref(app: &Notes) -> Database {
        app.db.clone()
    }
}

impl FromRef<Notes> for Arc<TrustedProxies> {
    fn from_ref(app: &Notes) -> Arc<TrustedProxies> {
        app.proxies.clone()
    }
}

impl Notes {
    /// The app over `db` (migrated with [`migrations`]), with its keys and files in `dir`,
    /// served at `url`, taking Stripe webhooks signed with `whsec`.
    ///
    /// # Errors
    /// When a key or secret in `dir` cannot be read or created.
    pub fn new(db: Database, dir: &Path, url: &str, whsec: &str) -> Result<Self, BoxError> {
        // Development keys and secrets, made on first start (provision them in production).
        let keys = KeyDir::open(dir.join("keys"));
        let tokens = AccessTokens::new(keys.load()?, JwtConfig::new(url, "notes"));
        let refresh_secret = keys.secret("refresh.secret", 32)?;
        let sessions = RefreshSessions::new(db.clone(), &refresh_secret, Default::default())?;
        let (files_dir, files_secret) = (dir.join("files"), keys.secret("files.secret", 32)?);
        let files = LocalStore::new(files_dir, &format!("{url}/files"), &files_secret)?;
        let verifier = WebhookVerifier::new(&[whsec])?;
        let parent = FileParent::new("notes", "id")?; // files hang off notes
        Ok(Self {
            auth: AuthFlows::new(db.clone(), tokens, sessions),
            storage: Storage::new(db.clone(), Arc::new(files.clone())).with_parent(parent),
            billing: Billing::new(db.clone(), Some(verifier)),
            proxies: Arc::new(TrustedProxies::default()),
            files,
            db,
        })
    }

    /// Every route, with problem answers for errors, panics and unknown routes. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: rate limits key on the client.
    pub fn router(&self) -> Router {
        let protected = Router::new()
            .route("/notes", get(list_notes).post(create_note))
            .route("/notes/{id}", get(get_note).delete(delete_note))
            .route("/notes/{id}/files", post(attach_file))
            .route("/uploads/{id}/complete", post(complete_upload))
            .route_layer(JwtAuthLayer::new(self.auth.tokens().clone()));
        let auth = AuthRoutes::new(self.auth.clone()).with_trusted_proxies(self.proxies.clone());
        Router::new()
            .nest("/auth", auth.router()) // signup, login, refresh, logout, logout-all
            .route("/stripe/webhook", webhook_route(self.billing.clone()))
            .merge(protected)
            .with_state(self.clone())
            .nest("/files", local_routes(self.files.service()))
            .fallback(layers::not_found)
            .layer(layers::problem_layer())
            .layer(layers::panic_layer())
    }

    /// The billing worker, which runs the webhook's handlers ([`Worker::run`]).
    pub fn worker(&self) -> Worker {
        let (event, upgrade) = ("checkout.session.completed", Arc::new(Upgrade));
        let events = EventRouter::new().on_object::<CheckoutSession, _>(event, upgrade);
        Worker::new(self.db.clone(), events)
    }

    /// The storage sweeper, which removes expired uploads and orphans ([`Sweeper::run`]).
    pub fn sweeper(&self) -> Sweeper {
        Sweeper::new(self.storage.clone(), Duration::from_secs(600))
    }
}

/// A note: a row of the app's own tenant table.
#[derive(Serialize, sqlx::FromRow)]
struct Note {
    id: NoteId,
    author: UserId,
    body: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

const NOTES: TenantTable = TenantTable {
    name: "notes",
    columns: "id, author, body, created_at",
    visibility: Visibility::Tenant,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    body: String,
}

async fn create_note(
    caller: Principal,
    TenantWrite(mut tx): TenantWrite,
    ApiJson(new): ApiJson<NewNote>,
) -> Result<(StatusCode, Json<Note>), Error> {
    caller.require(Permission::WriteContent)?;
    let mut errors = Vec::new();
    validate::check_optional_text(&mut errors, "body", Some(&new.body), 10_000);
    if new.body.trim().is_empty() {
        errors.push(FieldError::new("body", "must not be empty"));
    }
    validate::finish_validation(errors)?;
    let (tenant, author) = (tx.tenant_id(), caller.user_id());
    let note = with_conn!(&mut tx, |c| {
        sqlx::query_as(
            "INSERT INTO notes (id, tenant_id, author, body, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id, author, body, created_at",
        )
        .bind(NoteId::new())
        .bind(tenant)
        .bind(author)
        .bind(&new.body)
        .bind(tenantkit_core::now())
        .fetch_one(c)
        .await
    })?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn list_notes(TenantRead(mut tx): TenantRead) -> Result<Json<Vec<Note>>, Error> {
    let tenant = tx.tenant_id();
    let notes = with_conn!(&mut tx, |c| {
        sqlx::query_as(
            "SELECT id, author, body, created_at FROM notes WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant)
        .fetch_all(c)
        .await
    })?;
    Ok(Json(notes))
}

/// Another tenant's note answers 404, exactly like a missing one.
async fn get_note(mut tx: TenantRead, ApiId(id): ApiId<NoteId>) -> Result<Json<Note>, Error> {
    let note = NOTES.find(&mut tx, id.into()).await?;
    note.map(Json).ok_or(Error::NotFound)
}

async fn delete_note(
    caller: Principal,
    TenantWrite(mut tx): TenantWrite,
    ApiId(id): ApiId<NoteId>,
) -> Result<StatusCode, Error> {
    caller.require(Permission::WriteContent)?;
    let tenant = tx.tenant_id();
    let deleted = with_conn!(&mut tx, |c| {
        sqlx::query("DELETE FROM notes WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    if deleted == 0 {
        return Err(Error::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An upload intent for a file of the note: its name, type, size and SHA-256 are signed into
/// the URL the bytes go to. Storage checks the note in the same transaction (another tenant's
/// is not found) and records the upload with whatever the app writes there.
async fn attach_file(
    State(app): State<Notes>,
    caller: Principal,
    TenantWrite(mut tx): TenantWrite,
    ApiId(note): ApiId<NoteId>,
    ApiJson(mut new): ApiJson<NewUpload>,
) -> Result<(StatusCode, Json<UploadTicket>), StorageError> {
    new.parent_id = Some(note.into()); // the path names the note, whatever the body said
    let ticket = app.storage.create_upload(&mut tx, &caller, new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// The uploaded bytes, verified against the intent (no transaction held), become a file.
async fn complete_upload(
    State(app): State<Notes>,
    (caller, client): (Principal, ClientInfo),
    ApiId(id): ApiId<UploadId>,
) -> Result<Json<StoredFile>, StorageError> {
    let verified = app.storage.verify_upload(&caller, &client, id).await?;
    let mut tx = app.db.begin(&TenantScope::of(&caller)).await?;
    let file = app
        .storage
        .complete(&mut tx, &caller, &client, verified)
        .await?;
    tx.commit().await?;
    Ok(Json(file))
}

/// Moves a tenant to the `pro` plan when its Stripe checkout completes: the tenant is the
/// session's `client_reference_id` (set when the app creates the checkout session).
#[derive(Debug)]
struct Upgrade;

impl ObjectHandler<CheckoutSession> for Upgrade {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
        session: CheckoutSession,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let tenant: TenantId = (session.client_reference_id.as_deref())
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| HandlerError::permanent("no tenant in client_reference_id"))?;
            // The tenant's own row (behind RLS), in the transaction that marks the event done.
            let (mut tx, now) = (tx.in_tenant(tenant).await?, tenantkit_core::now());
            with_conn!(&mut tx, |c| {
                sqlx::query(
                    "INSERT INTO note_plans (tenant_id, plan, updated_at) VALUES ($1, 'pro', $2) \
                     ON CONFLICT (tenant_id) DO UPDATE SET plan = 'pro', updated_at = $2",
                )
                .bind(tenant)
                .bind(now)
                .execute(c)
                .await
                .map(drop) // the same type on every backend
            })?;
            Ok(tx.leave().await?)
        })
    }
}
