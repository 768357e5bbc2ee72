//! # tenantkit-core
//!
//! The kernel every tenantkit crate (and your own code) stands on:
//!
//! - typed UUIDv7 ids ([`TenantId`], [`UserId`], ..., and your own with [`define_id!`]),
//!   never a bare `Uuid` across an API;
//! - the verified caller, [`Principal`], with its [`Role`] and the [`Permission`]s it grants;
//! - an open data layer over sqlx: [`Database`] (SQLite embedded default, PostgreSQL with
//!   row-level security), three transaction kinds ([`TenantTx`], [`UserTx`], [`SystemTx`]),
//!   [`with_conn!`] to write one SQL text for both backends, [`Migrations`] composing every
//!   crate's own migrations, and the [`TenantScoped`] repository trait with [`TenantTable`] and
//!   team-restricted [`Visibility`];
//! - the directory: tenants, users, memberships, invitations and teams, and the hash-chained
//!   audit log;
//! - hooks for work after a commit: `after_commit` on every transaction kind, and the
//!   transactional [`outbox`] (messages written with the change, relayed at least once, with
//!   [`Database::listen`] to wake relays);
//! - keyset pagination ([`PageRequest`], [`Page`]) and optimistic concurrency ([`Version`]);
//! - secrets encrypted at rest ([`Keyring`]: AEAD under a server key file, key ids, rotation,
//!   ciphertexts bound to their row);
//! - one [`Error`] type and its single mapping to RFC 9457 [`Problem`] responses.
//!
//! ## Guide: your own tenant table
//!
//! An application adds its tables as its own [`MigrationSet`] (in your crate,
//! `migrations/sqlite/10001_notes.sql` and `migrations/postgres/10001_notes.sql`, read by
//! [`migration_set!`]) composed with tenantkit's in one [`Migrations`] registry. On
//! PostgreSQL the migration puts each tenant table behind row-level security, which also
//! registers it for the start-up check of [`Database::connect`] (see [`migrate`]):
//!
//! ```sql
//! CREATE TABLE notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants (id), body text NOT NULL);
//! SELECT tenantkit_enable_tenant_rls('notes');   -- ENABLE + FORCE RLS, tenant policy, registered
//! GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO tenantkit_app;
//! ```
//!
//! A request then opens a [`TenantTx`] from the caller's [`Principal`]: it sees only that
//! tenant's rows (on PostgreSQL, RLS checks again), and [`with_conn!`] runs one SQL text on
//! either backend. Typed repositories implement [`TenantScoped`] over such a table.
//!
//! ```
//! use tenantkit_core::{
//!     Database, MigrationSet, Migrations, NewTenant, Permission, Principal, Role, SessionId,
//!     TenantScope, UserId, with_conn,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenantkit_core::Result<()> {
//! // Your crate's set: `tenantkit_core::migration_set!("notes-app")`. (This example reads
//! // the notes migrations of tenantkit-core's own tests.)
//! let notes = MigrationSet::new(
//!     "notes-app",
//!     || sqlx::migrate!("./tests/notes/sqlite"),
//!     || sqlx::migrate!("./tests/notes/postgres"),
//! );
//! let db = Database::connect("sqlite::memory:").await?; // or "postgres://..."
//! db.migrate(&Migrations::new().with(notes)).await?;
//!
//! let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
//! tx.commit().await?;
//!
//! // In a server the auth layer builds the principal from a verified token.
//! let caller = Principal::new(UserId::new(), tenant.id, Role::Member, [], SessionId::new());
//! caller.require(Permission::WriteContent)?;
//!
//! let mut tx = db.begin(&TenantScope::of(&caller)).await?;
//! let tenant_id = tx.tenant_id();
//! with_conn!(&mut tx, |conn| {
//!     sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES ($1, $2, $3)")
//!         .bind(uuid::Uuid::now_v7())
//!         .bind(tenant_id)
//!         .bind("Ship it")
//!         .execute(conn)
//!         .await
//!         .map(drop)
//! })?;
//! tx.commit().await?; // nothing is written before this
//!
//! let mut tx = db.begin_read(&TenantScope::of(&caller)).await?;
//! let tenant_id = tx.tenant_id();
//! let bodies: Vec<String> = with_conn!(&mut tx, |conn| {
//!     sqlx::query_scalar("SELECT body FROM notes WHERE tenant_id = $1")
//!         .bind(tenant_id)
//!         .fetch_all(conn)
//!         .await
//! })?;
//! tx.commit().await?;
//! assert_eq!(bodies, ["Ship it"]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//! - `sqlite` (default): the embedded SQLite backend.
//! - `postgres`: the PostgreSQL backend with row-level security.
//! - `axum`: `IntoResponse` for [`Error`] and [`Problem`], and the `axum` module: extractors
//!   for the [`Principal`] (and `Option<Principal>`), the client behind trusted proxies, a
//!   tenant transaction, JSON bodies, path ids, `If-Match` and (with `openapi`) list queries;
//!   the problem, panic and not-found layers, security headers and CORS.
//! - `openapi`: `utoipa::ToSchema` for the public record, page, problem and id types.
//! - `testing`: fixtures for tests ([`testing`]): throwaway databases on both backends, two
//!   tenants, one macro that runs a test on every backend.
//!
//! Without `sqlite` or `postgres` only the database-free types (ids, `Principal`, roles,
//! errors, problems, pagination, values, clocks) are built, for crates that need no storage.

#![doc(test(attr(deny(warnings))))]
// Without a database backend the storage helpers of `page` and `values` have no callers.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod audit;
#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod clock;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod db;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod directory;
mod error;
mod id;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod invitations;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod members;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod migrate;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod outbox;
mod page;
mod principal;
mod problem;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod repo;
mod role;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod scope;
pub mod secret_box;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
mod values;

#[cfg(all(feature = "testing", any(feature = "sqlite", feature = "postgres")))]
pub mod testing;

/// Checks for the text fields of records, shared by every repository.
pub mod validate {
    pub use crate::values::{
        check_free_text, check_optional_text, check_text, finish_validation, free_text,
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use audit::{
    AuditEntry, AuditEvent, AuditFilter, AuditKey, ChainHead, ChainProblem, ClientInfo,
};
pub use client::{ForwardedHeader, ParseForwardedHeaderError, ParseProxiesError, TrustedProxies};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use db::{Backend, Database, DatabaseOptions};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use directory::{Membership, NewTenant, NewUser, Tenant, User};
pub use error::{Error, FieldError, Result};
pub use id::{AuditEntryId, InvitationId, ParseIdError, SessionId, TeamId, TenantId, UserId};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use invitations::{Invitation, MAX_PENDING_INVITATIONS};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use members::Member;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use migrate::{MigrationSet, Migrations};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use outbox::{Listener, Notification, OUTBOX_CHANNEL, OutboxMessage};
pub use page::{Cursor, Limit, Page, PageRequest};
pub use principal::{Principal, amr};
pub use problem::{ErrorCode, PROBLEM_JSON, Problem};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::teams::{NewTeam, Team, TeamFilter, TeamMember, TeamPatch};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::{
    TenantScoped, TenantTable, Value, Visibility, double_option, ensure_written, read_for_update,
    team_visible,
};
pub use role::{ParseRoleError, Permission, Role};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use scope::TenantScope;
pub use secret_box::{Keyring, SECRET_KEY_LEN, Secret, SecretError, SecretKey, write_key_file};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{InTenant, RawConn, Row, SystemTx, TenantTx, Transaction, UserTx};
pub use values::{Email, PasswordHash, PlanName, Slug, Version, now};

/// What the macros of this crate expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use uuid::Uuid;

    #[cfg(feature = "openapi")]
    pub use crate::id::uuid_schema;
    pub use crate::id::{deserialize_id, parse_id};
    #[cfg(feature = "openapi")]
    pub use utoipa;

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub use crate::sql::{Conn, core_of};
    pub use sqlx;
}
