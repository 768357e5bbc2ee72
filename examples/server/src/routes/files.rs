//! `/v1/uploads` and `/v1/files`: direct-to-storage uploads (tenantkit-storage's lifecycle;
//! these handlers only adapt HTTP to it).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tenantkit_core::{Page, Principal, TenantScope};
use tenantkit_storage::{FileId, NewUpload, StoredFile, UploadId, UploadTicket};
use utoipa::IntoParams;

use crate::extract::{
    ApiId, ApiJson, Client, Listing, PageQuery, QueryFilter, TenantRead, TenantWrite,
};
use crate::{AppState, Result};

/// `POST /v1/uploads`: a pending upload and the signed instructions to send its bytes
/// straight to the store (members and above). The size, type and SHA-256 are signed: the
/// store refuses anything else.
#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = "files",
    request_body = NewUpload,
    responses(
        (status = 201, description = "Where and how to send the bytes", body = UploadTicket),
        (status = 403, description = "Viewer, or `quota_exceeded`", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, a type not allowed, or over the per-file limit", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_upload(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewUpload>,
) -> Result<(StatusCode, Json<UploadTicket>)> {
    // The transaction opens once the body is read (an extractor would hold it meanwhile).
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let ticket = state
        .storage
        .create_upload(&mut tx, &principal, body)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}

/// `POST /v1/uploads/{id}/complete`: verifies the stored object (size, SHA-256, type
/// against its bytes) and makes it a file; idempotent.
#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/complete",
    tag = "files",
    params(("id" = uuid::Uuid, Path, description = "The upload")),
    responses(
        (status = 200, description = "The file", body = StoredFile),
        (status = 404, description = "No such upload in this tenant", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`upload_incomplete` (nothing uploaded, or the upload expired), or `upload_mismatch` (the object was deleted; answered again on every retry)", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn complete_upload(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiId(id): ApiId<UploadId>,
) -> Result<Json<StoredFile>> {
    // The object store is read with no transaction open; the file is made in one.
    let file = state.storage.complete_upload(&principal, &client, id);
    Ok(Json(file.await?))
}

/// Filters of `GET /v1/files`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileQuery {
    /// Only files of this project (their `parent_id`).
    #[param(inline)]
    parent_id: Option<uuid::Uuid>,
}

impl QueryFilter for FileQuery {}

/// `GET /v1/files`: the files the caller may see, in keyset pages.
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "files",
    params(PageQuery, FileQuery),
    responses((status = 200, description = "The files", body = Page<StoredFile>)),
    security(("bearer" = []))
)]
pub(crate) async fn list_files(
    State(state): State<AppState>,
    principal: Principal,
    TenantRead(mut tx): TenantRead,
    query: Listing<FileQuery>,
) -> Result<Json<Page<StoredFile>>> {
    let files = state
        .storage
        .files(&mut tx, &principal, query.filter.parent_id, query.page)
        .await?;
    tx.commit().await?;
    Ok(Json(files))
}

/// `GET /v1/files/{id}`: the file's metadata and a signed, expiring download URL.
#[utoipa::path(
    get,
    path = "/v1/files/{id}",
    tag = "files",
    params(("id" = uuid::Uuid, Path, description = "The file")),
    responses(
        (status = 200, description = "The file, with `download_url`", body = StoredFile),
        (status = 404, description = "No such file in this tenant", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_file(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<FileId>,
    TenantRead(mut tx): TenantRead,
) -> Result<Json<StoredFile>> {
    let file = state.storage.file(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok(Json(file))
}

/// `DELETE /v1/files/{id}`: deletes the file and its object (members and above).
#[utoipa::path(
    delete,
    path = "/v1/files/{id}",
    tag = "files",
    params(("id" = uuid::Uuid, Path, description = "The file")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such file in this tenant", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiId(id): ApiId<FileId>,
    TenantWrite(mut tx): TenantWrite,
) -> Result<StatusCode> {
    let deleted = state
        .storage
        .delete_file(&mut tx, &principal, &client, id)
        .await?;
    tx.commit().await?;
    // The bytes go once the rows are gone for good.
    state.storage.delete_object(deleted).await;
    Ok(StatusCode::NO_CONTENT)
}
