//! # tenantkit-core
//!
//! The foundation every tenantkit crate stands on:
//!
//! - typed UUIDv7 ids ([`TenantId`], [`UserId`], ...), never a bare `Uuid` across an API;
//! - the verified caller, [`Principal`], with its [`Role`] and the [`Permission`]s it grants;
//! - [`Database`], one handle over SQLite (embedded default) and PostgreSQL (with row-level
//!   security), and [`TenantTx`], the tenant-scoped transaction that is the only way to reach
//!   tenant-owned rows through the [`TenantScoped`] repositories;
//! - keyset pagination ([`PageRequest`], [`Page`]) and optimistic concurrency ([`Version`]);
//! - one [`Error`] type and its single mapping to RFC 9457 [`Problem`] responses.
//!
//! ```
//! use tenantkit_core::{
//!     Database, NewProject, NewTenant, Permission, Principal, Project, Role, SessionId,
//!     TenantScope, TenantScoped, PageRequest,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenantkit_core::Result<()> {
//! let db = Database::connect("sqlite::memory:").await?;
//! db.migrate().await?;
//!
//! let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
//! tx.commit().await?;
//!
//! // In a server the auth layer builds the principal from a verified token.
//! let caller = Principal::new(
//!     tenantkit_core::UserId::new(), tenant.id, Role::Member, [], SessionId::new(),
//! );
//! caller.require(Permission::WriteContent)?;
//!
//! let mut tx = db.begin(&TenantScope::of(&caller)).await?;
//! let project = Project::create(&mut tx, NewProject { name: "Launch".into(), ..NewProject::default() }).await?;
//! let page = Project::list(&mut tx, &Default::default(), PageRequest::default()).await?;
//! tx.commit().await?;
//!
//! assert_eq!(page.items, vec![project]);
//! assert_eq!(tenant.slug.as_str(), "acme");
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//! - `sqlite` (default): the embedded SQLite backend.
//! - `postgres`: the PostgreSQL backend with row-level security.
//! - `axum`: `IntoResponse` for [`Error`] and [`Problem`].
//! - `testing`: fixtures for this workspace's tests (`testing`).
//!
//! Without `sqlite` or `postgres` only the database-free types (ids, `Principal`, roles,
//! errors, problems, pagination, values, clocks) are built, for crates such as
//! tenantkit-auth that need no storage.

#![doc(test(attr(deny(warnings))))]
// Without a database backend the storage helpers of `page` and `values` have no callers.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod audit;
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
mod page;
mod principal;
mod problem;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod repo;
mod role;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod scope;
mod session;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sessions;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod user_tokens;
mod values;

#[cfg(all(feature = "testing", any(feature = "sqlite", feature = "postgres")))]
pub mod testing;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use audit::{AuditEntry, AuditEvent, AuditFilter};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use db::{Backend, Database, DatabaseOptions};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use directory::{Membership, NewTenant, NewUser, Tenant, User};
pub use error::{Error, FieldError, Result};
pub use id::{ParseIdError, ProjectId, SessionId, TaskId, TeamId, TenantId, UserId};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use invitations::Invitation;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use members::Member;
pub use page::{Cursor, Limit, Page, PageRequest};
pub use principal::Principal;
pub use problem::{ErrorCode, Problem, PROBLEM_JSON};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::projects::{NewProject, Project, ProjectFilter, ProjectPatch};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::tasks::{NewTask, ParseTaskStatusError, Task, TaskFilter, TaskPatch, TaskStatus};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::teams::{NewTeam, Team, TeamFilter, TeamMember, TeamPatch};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use repo::TenantScoped;
pub use role::{ParseRoleError, Permission, Role};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use scope::{RawConn, TenantScope, TenantTx};
pub use session::{RefreshTokenRecord, SessionRecord};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use user_tokens::TokenPurpose;
pub use values::{now, Email, PasswordHash, Slug, Version};
