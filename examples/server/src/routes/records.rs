//! Handlers shared by every tenant-scoped resource: create, read, conditional update,
//! conditional delete. One implementation, so every resource gets the same ETag, If-Match,
//! permission, audit and not-found behaviour; [`record_routes!`] declares each resource's
//! routes once (handler + OpenAPI entry) over it.

use std::fmt::Display;
use std::future::Future;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tenantkit_core::{
    AuditEvent, Permission, Principal, Team, TeamId, TenantScope, TenantScoped, TenantTx,
};

use crate::domain::{Project, Task};
use crate::extract::{Client, etag};
use crate::{AppState, Result};

/// A tenant-scoped record served over HTTP, with the name its audit actions use.
pub(crate) trait Resource: TenantScoped + Serialize {
    /// `project` → `project.created`, `project.updated`, `project.deleted`.
    const NAME: &'static str;
    /// Where its records live: `{COLLECTION}/{id}`.
    const COLLECTION: &'static str;
    /// What creating, changing and deleting one takes.
    const WRITE: Permission = Permission::WriteContent;

    /// Whether records are parents of storage files ([`tenantkit_storage::FileParent`]):
    /// their files are deleted with them.
    const HAS_FILES: bool = false;

    /// Whether its changes change who may receive realtime channels (a team, a project's
    /// restriction): connections re-check their subscriptions before the next delivery.
    const ACCESS_CHANGE: bool = false;

    /// The realtime channel of its events (`tenant`, or a narrower one for records not every
    /// member may see).
    fn channel(&self) -> String {
        tenantkit_realtime::TENANT.to_owned()
    }

    /// Runs in the deleting transaction before the record is deleted (to detach what points
    /// at it).
    fn before_delete(
        _tx: &mut TenantTx,
        _id: Self::Id,
    ) -> impl Future<Output = tenantkit_core::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl Resource for Project {
    const NAME: &'static str = "project";
    const COLLECTION: &'static str = "/v1/projects";
    const HAS_FILES: bool = true;
    const ACCESS_CHANGE: bool = true;

    /// A restricted project is announced only on its own channel, which only those who see
    /// it may receive; the others are announced to the whole tenant.
    fn channel(&self) -> String {
        if self.restricted {
            format!("project:{}", self.id)
        } else {
            tenantkit_realtime::TENANT.to_owned()
        }
    }
}

impl Resource for Task {
    const NAME: &'static str = "task";
    const COLLECTION: &'static str = "/v1/tasks";

    fn channel(&self) -> String {
        format!("project:{}", self.project_id)
    }
}

impl Resource for Team {
    const NAME: &'static str = "team";
    const COLLECTION: &'static str = "/v1/teams";
    const WRITE: Permission = Permission::ManageMembers;
    const ACCESS_CHANGE: bool = true;

    /// The domain's projects name their team: they are detached, and a restricted one is then
    /// visible to admins and owners only.
    async fn before_delete(tx: &mut TenantTx, id: TeamId) -> tenantkit_core::Result<()> {
        Project::detach_team(tx, id).await.map(drop)
    }
}

/// The audit event of a change to a `T`.
pub(crate) fn change_event<T: Resource>(
    client: &Client,
    principal: &Principal,
    change: &str,
    id: impl Display,
) -> AuditEvent {
    client
        .event(&format!("{}.{change}", T::NAME), Some(principal.user_id()))
        .target(T::NAME, id)
}

/// Announces a change of `record` to realtime subscribers once `tx` commits (through the
/// transactional outbox: never for a rolled-back change, still after a crash).
pub(crate) async fn announce<T: Resource>(
    tx: &mut TenantTx,
    record: &T,
    change: &str,
    data: &(impl Serialize + ?Sized),
) -> Result<()> {
    let event = format!("{}.{change}", T::NAME);
    tenantkit_realtime::publish_in(tx, &record.channel(), &event, data, T::ACCESS_CHANGE)
        .await
        .map_err(crate::realtime::problem)?;
    Ok(())
}

/// Reads one record.
pub(crate) async fn get<T: Resource>(
    state: &AppState,
    principal: &Principal,
    id: T::Id,
) -> Result<impl IntoResponse + use<T>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(principal)).await?;
    let record = T::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok((etag(record.version()), Json(record)))
}

/// Changes one record, conditional on `If-Match` when given.
pub(crate) async fn update<T>(
    state: &AppState,
    client: &Client,
    principal: &Principal,
    id: T::Id,
    expected: Option<tenantkit_core::Version>,
    patch: T::Patch,
) -> Result<impl IntoResponse + use<T>>
where
    T: Resource,
    T::Id: Display,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(principal)).await?;
    // Without If-Match the write is unconditional: the repository applies it to the current
    // version.
    let record = T::update(&mut tx, id, expected, patch).await?;
    let event = change_event::<T>(client, principal, "updated", id)
        .details(serde_json::json!({ "version": record.version() }));
    tx.audit(event).await?;
    announce(&mut tx, &record, "updated", &record).await?;
    tx.commit().await?;
    Ok((etag(record.version()), Json(record)))
}

/// Deletes one record, conditional on `If-Match` when given.
pub(crate) async fn delete<T>(
    state: &AppState,
    client: &Client,
    principal: &Principal,
    id: T::Id,
    expected: Option<tenantkit_core::Version>,
) -> Result<StatusCode>
where
    T: Resource,
    T::Id: Display + Into<uuid::Uuid>,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(principal)).await?;
    // Read first: the event goes to the record's channel. Not found here is not found below.
    let record = T::find(&mut tx, id).await?;
    T::before_delete(&mut tx, id).await?;
    let files = if T::HAS_FILES {
        (state.storage)
            .delete_files_of(&mut tx, principal, client, id.into())
            .await?
    } else {
        Vec::new()
    };
    T::delete(&mut tx, id, expected).await?;
    tx.audit(change_event::<T>(client, principal, "deleted", id))
        .await?;
    if let Some(record) = &record {
        announce(
            &mut tx,
            record,
            "deleted",
            &serde_json::json!({ "id": id.to_string() }),
        )
        .await?;
    }
    tx.commit().await?;
    state.storage.delete_objects(files).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a record from its body alone.
pub(crate) async fn create<T>(
    state: &AppState,
    client: &Client,
    principal: &Principal,
    new: T::New,
) -> Result<impl IntoResponse + use<T>>
where
    T: Resource,
    T::Id: Display,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(principal)).await?;
    let record = T::create(&mut tx, new).await?;
    tx.audit(change_event::<T>(client, principal, "created", record.id()))
        .await?;
    announce(&mut tx, &record, "created", &record).await?;
    tx.commit().await?;
    Ok(created::<T>(record))
}

/// The `201 Created` answer: ETag, Location and the record.
pub(crate) fn created<T>(record: T) -> impl IntoResponse
where
    T: Resource,
    T::Id: Display,
{
    let location = format!("{}/{}", T::COLLECTION, record.id());
    (
        StatusCode::CREATED,
        etag(record.version()),
        [(header::LOCATION, location)],
        Json(record),
    )
}

/// Declares the read, update and delete routes of one resource at `$path` (handler and
/// OpenAPI entry in one place), over the generic handlers of this module.
macro_rules! record_routes {
    (
        $record:ty, $patch:ty, $tag:literal, $path:literal,
        get: $get:ident, update: $update:ident $(, delete: $delete:ident)?
    ) => {
        /// Reads one record; its `ETag` is the version to send back in `If-Match`.
        #[utoipa::path(
            get,
            path = $path,
            tag = $tag,
            params(("id" = uuid::Uuid, Path, description = "The record")),
            responses(
                (status = 200, description = "The record", body = $record,
                 headers(("ETag" = String, description = "The version, for If-Match")))
            ),
            security(("bearer" = []))
        )]
        pub(crate) async fn $get(
            axum::extract::State(state): axum::extract::State<$crate::AppState>,
            principal: tenantkit_core::Principal,
            $crate::extract::ApiId(id): $crate::extract::ApiId<<$record as tenantkit_core::TenantScoped>::Id>,
        ) -> $crate::Result<impl axum::response::IntoResponse> {
            $crate::routes::records::get::<$record>(&state, &principal, id).await
        }

        /// Changes some fields (absent ones stay; `null` clears an optional one). With
        /// `If-Match`, only if the record is still at that version.
        #[utoipa::path(
            patch,
            path = $path,
            tag = $tag,
            params(
                ("id" = uuid::Uuid, Path, description = "The record"),
                ("If-Match" = Option<String>, Header, description = "The ETag last read")
            ),
            request_body(content = $patch, content_type = "application/json"),
            responses(
                (status = 200, description = "The changed record", body = $record,
                 headers(("ETag" = String, description = "The new version"))),
                (status = 409, description = "A unique value is taken", body = tenantkit_core::Problem,
                 content_type = "application/problem+json"),
                (status = 412, description = "Changed since the If-Match version", body = tenantkit_core::Problem,
                 content_type = "application/problem+json")
            ),
            security(("bearer" = []))
        )]
        pub(crate) async fn $update(
            axum::extract::State(state): axum::extract::State<$crate::AppState>,
            client: $crate::extract::Client,
            principal: tenantkit_core::Principal,
            $crate::extract::ApiId(id): $crate::extract::ApiId<<$record as tenantkit_core::TenantScoped>::Id>,
            $crate::extract::IfMatch(expected): $crate::extract::IfMatch,
            $crate::extract::ApiJson(patch): $crate::extract::ApiJson<$patch>,
        ) -> $crate::Result<impl axum::response::IntoResponse> {
            $crate::routes::records::update::<$record>(&state, &client, &principal, id, expected, patch).await
        }

        $(
        /// Deletes the record; with `If-Match`, only if it is still at that version.
        #[utoipa::path(
            delete,
            path = $path,
            tag = $tag,
            params(
                ("id" = uuid::Uuid, Path, description = "The record"),
                ("If-Match" = Option<String>, Header, description = "The ETag last read")
            ),
            responses(
                (status = 204, description = "Deleted"),
                (status = 412, description = "Changed since the If-Match version", body = tenantkit_core::Problem,
                 content_type = "application/problem+json")
            ),
            security(("bearer" = []))
        )]
        pub(crate) async fn $delete(
            axum::extract::State(state): axum::extract::State<$crate::AppState>,
            client: $crate::extract::Client,
            principal: tenantkit_core::Principal,
            $crate::extract::ApiId(id): $crate::extract::ApiId<<$record as tenantkit_core::TenantScoped>::Id>,
            $crate::extract::IfMatch(expected): $crate::extract::IfMatch,
        ) -> $crate::Result<axum::http::StatusCode> {
            $crate::routes::records::delete::<$record>(&state, &client, &principal, id, expected).await
        }
        )?
    };
}

/// Declares the create route of a resource created from its body alone, at `$path`.
macro_rules! create_route {
    ($record:ty, $new:ty, $tag:literal, $path:literal, $create:ident) => {
        /// Creates a record.
        #[utoipa::path(
            post,
            path = $path,
            tag = $tag,
            request_body(content = $new, content_type = "application/json"),
            responses(
                (status = 201, description = "Created", body = $record,
                 headers(
                     ("ETag" = String, description = "The version, for If-Match"),
                     ("Location" = String, description = "Where the new record lives")
                 )),
                (status = 409, description = "A unique value is taken", body = tenantkit_core::Problem,
                 content_type = "application/problem+json")
            ),
            security(("bearer" = []))
        )]
        pub(crate) async fn $create(
            axum::extract::State(state): axum::extract::State<$crate::AppState>,
            client: $crate::extract::Client,
            principal: tenantkit_core::Principal,
            $crate::extract::ApiJson(new): $crate::extract::ApiJson<$new>,
        ) -> $crate::Result<impl axum::response::IntoResponse> {
            $crate::routes::records::create::<$record>(&state, &client, &principal, new).await
        }
    };
}

pub(crate) use {create_route, record_routes};
