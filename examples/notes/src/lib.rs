//! A multi-tenant notes API on tenantkit's public APIs: sign-in, the app's own tenant table
//! `notes` (RLS on PostgreSQL), files of notes, a Stripe webhook that upgrades the tenant.

use std::{path::Path, sync::Arc, time::Duration};

use axum::extract::{FromRef, State};
use axum::routing::{get, post};
use axum::{Json, Router, http::StatusCode};
use serde::{Deserialize, Serialize};
use tenantkit_auth::extract::{ApiId, Listing, NoFilter, TenantRead, TenantWrite, layers};
use tenantkit_auth::{AccessTokens, JwtAuthLayer, JwtConfig, KeyDir, RefreshSessions};
use tenantkit_auth::{extract::TenantWriteJson, flows::AuthFlows, routes::AuthRoutes};
use tenantkit_billing::{Billing, BoxFuture, EventRouter, HandlerError, StoredEvent, Worker};
use tenantkit_billing::{WebhookVerifier, axum::webhook_route, stripe_shared::CheckoutSession};
use tenantkit_core::{ClientInfo, Database, Error, Migrations, Page, Permission, Principal};
use tenantkit_core::{SystemTx, TenantId, TenantTable, TrustedProxies, UserId, Visibility};
use tenantkit_core::{Value, validate, with_conn};
use tenantkit_storage::{Error as StorageError, FileParent, LocalStore, NewUpload, Storage};
use tenantkit_storage::{StoredFile, Sweeper, UploadId, UploadTicket, axum::local_routes};
use time::OffsetDateTime;

/// Any error of the set-up.
pub type BoxError = Box<dyn std::error::Error>;

tenantkit_core::define_id! { #[doc = "Identifies a note."] NoteId, "note id" }

/// tenantkit's migration sets and the app's own (`migrations/`, versions 10000 and up).
pub fn migrations() -> Migrations {
    Migrations::new()
        .with(tenantkit_auth::migrations())
        .with(tenantkit_storage::migrations())
        .with(tenantkit_billing::migrations())
        .with(tenantkit_core::migration_set!("tenantkit-notes"))
}

/// The app: tenantkit's services over one database; handlers take their part (`FromRef`).
#[derive(Debug, Clone, FromRef)]
pub struct Notes {
    db: Database,
    auth: AuthFlows,
    storage: Storage,
    files: LocalStore,
    billing: Billing,
    proxies: Arc<TrustedProxies>,
}

impl Notes {
    /// The app over `db` ([`migrations`] applied), keys and files in `dir`, served at `url`.
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
        let parent = FileParent::new("notes", "id")?; // files hang off notes
        Ok(Self {
            auth: AuthFlows::new(db.clone(), tokens, sessions),
            storage: Storage::new(db.clone(), Arc::new(files.clone())).with_parent(parent),
            billing: Billing::new(db.clone(), Some(WebhookVerifier::new(&[whsec])?)),
            proxies: Arc::new(TrustedProxies::default()),
            files,
            db,
        })
    }

    /// Every route; serve with `ConnectInfo<SocketAddr>` (rate limits key on the client).
    pub fn router(&self) -> Router {
        let auth = AuthRoutes::new(self.auth.clone()).with_trusted_proxies(self.proxies.clone());
        Router::new()
            .route("/notes", get(list_notes).post(create_note))
            .route("/notes/{id}", get(get_note).delete(delete_note))
            .route("/notes/{id}/files", post(attach_file))
            .route("/uploads/{id}/complete", post(complete_upload))
            .route_layer(JwtAuthLayer::new(self.auth.tokens().clone())) // the routes above
            .nest("/auth", auth.router()) // signup, login, refresh, logout, logout-all
            .route("/stripe/webhook", webhook_route(self.billing.clone()))
            .with_state(self.clone())
            .nest("/files", local_routes(self.files.service()))
            .fallback(layers::not_found)
            .layer(layers::problem_layer())
            .layer(layers::panic_layer())
    }

    /// The billing worker, which runs the webhook's handlers ([`Worker::run`]).
    pub fn worker(&self) -> Worker {
        let events = EventRouter::new().on_object_fn("checkout.session.completed", upgrade);
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
    TenantWriteJson(mut tx, new): TenantWriteJson<NewNote>,
) -> Result<(StatusCode, Json<Note>), Error> {
    caller.require(Permission::WriteContent)?;
    validate::free_text("body", &new.body, 10_000)?;
    let (id, author) = (Value::id(NoteId::new()), caller.user_id().into());
    let (body, now) = (new.body.as_str().into(), tenantkit_core::now().into());
    let note = NOTES.insert(&mut tx, &[id, author, body, now]).await?; // tenant_id: tx's
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

/// `?limit=&cursor=`: one page of the tenant's notes, oldest first.
async fn list_notes(mut tx: TenantRead, q: Listing<NoFilter>) -> Result<Json<Page<Note>>, Error> {
    let page = NOTES.list(&mut tx, &q.page, |note: &Note| note.id.into());
    Ok(Json(page.await?))
}

/// Another tenant's note answers 404, exactly like a missing one.
async fn get_note(mut tx: TenantRead, ApiId(id): ApiId<NoteId>) -> Result<Json<Note>, Error> {
    let note = NOTES.find(&mut tx, id.into()).await?;
    note.map(Json).ok_or(Error::NotFound)
}

/// The note goes with its files, in one transaction; their bytes once it is committed.
async fn delete_note(
    State(storage): State<Storage>,
    (caller, client): (Principal, ClientInfo),
    TenantWrite(mut tx): TenantWrite,
    ApiId(id): ApiId<NoteId>,
) -> Result<StatusCode, StorageError> {
    let files = (storage.delete_files_of(&mut tx, &caller, &client, id.into())).await?;
    NOTES.remove(&mut tx, id.into()).await?;
    tx.commit().await?;
    storage.delete_objects(files).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An upload intent (name, type, size and SHA-256 signed into the URL) for a visible note.
async fn attach_file(
    State(storage): State<Storage>,
    caller: Principal,
    ApiId(note): ApiId<NoteId>,
    TenantWriteJson(mut tx, mut new): TenantWriteJson<NewUpload>,
) -> Result<(StatusCode, Json<UploadTicket>), StorageError> {
    new.parent_id = Some(note.into()); // the path names the note, whatever the body said
    let ticket = storage.create_upload(&mut tx, &caller, new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// The uploaded bytes, verified against the intent (no transaction held), become a file.
async fn complete_upload(
    State(storage): State<Storage>,
    (caller, client): (Principal, ClientInfo),
    ApiId(id): ApiId<UploadId>,
) -> Result<Json<StoredFile>, StorageError> {
    Ok(Json(storage.complete_upload(&caller, &client, id).await?))
}

/// A completed checkout moves its tenant (the session's `client_reference_id`) to `pro`.
fn upgrade<'a>(
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
