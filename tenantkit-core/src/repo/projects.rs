//! Projects: the top-level tenant-owned records.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{double_option, expect_version, missing_or_stale, Table, TenantScoped};
use crate::scope::scoped;
use crate::values::{check_optional_text, check_text, finish_validation, now};
use crate::{Page, PageRequest, ProjectId, Result, TenantId, TenantTx, Version};

const NAME_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 10_000;

/// A project of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Project {
    /// The project's id.
    pub id: ProjectId,
    /// The owning tenant (always the caller's; not sent to clients).
    #[serde(skip_serializing, default = "TenantId::new")]
    pub tenant_id: TenantId,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Free text, up to 10,000 characters.
    pub description: Option<String>,
    /// Optimistic-concurrency version.
    pub version: Version,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The fields of a new project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// Display name, 1 to 200 characters (trimmed).
    pub name: String,
    /// Optional free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to a project; absent fields stay, `"description": null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description, or `Some(None)` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
}

/// Which projects to list. (Filters arrive with teams.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectFilter {}

impl Project {
    fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        check_text(&mut errors, "name", &self.name, NAME_MAX);
        check_optional_text(
            &mut errors,
            "description",
            self.description.as_deref(),
            DESCRIPTION_MAX,
        );
        finish_validation(errors)
    }
}

const COLUMNS: &str = "id, tenant_id, name, description, version, created_at, updated_at";
pub(crate) const PROJECTS: Table = Table {
    name: "projects",
    columns: COLUMNS,
};

impl TenantScoped for Project {
    type Id = ProjectId;
    type New = NewProject;
    type Patch = ProjectPatch;
    type Filter = ProjectFilter;

    fn id(&self) -> ProjectId {
        self.id
    }

    fn version(&self) -> Version {
        self.version
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id()))]
    async fn create(tx: &mut TenantTx, new: NewProject) -> Result<Self> {
        let at = now();
        let project = Project {
            id: ProjectId::new(),
            tenant_id: tx.tenant_id(),
            name: new.name.trim().to_owned(),
            description: new.description,
            version: Version::INITIAL,
            created_at: at,
            updated_at: at,
        };
        project.validate()?;
        scoped!(tx, |c| {
            sqlx::query(
                "INSERT INTO projects (id, tenant_id, name, description, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(project.id)
            .bind(project.tenant_id)
            .bind(&project.name)
            .bind(&project.description)
            .bind(project.version)
            .bind(project.created_at)
            .bind(project.updated_at)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(project)
    }

    async fn find(tx: &mut TenantTx, id: ProjectId) -> Result<Option<Self>> {
        PROJECTS.find(tx, id.into()).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), project = %id))]
    async fn update(
        tx: &mut TenantTx,
        id: ProjectId,
        expected: Option<Version>,
        patch: ProjectPatch,
    ) -> Result<Self> {
        let mut project = Self::get(tx, id).await?;
        // The guard below compares against the version read here, so a write without
        // If-Match still never overwrites a concurrent change it did not see.
        let base = project.version;
        expect_version(base, expected)?;
        if let Some(name) = patch.name {
            project.name = name.trim().to_owned();
        }
        if let Some(description) = patch.description {
            project.description = description;
        }
        project.validate()?;
        project.version = Version::new(base.get() + 1);
        project.updated_at = now();
        let tenant = tx.tenant_id();
        let updated = scoped!(tx, |c| {
            sqlx::query(
                "UPDATE projects SET name = $1, description = $2, version = $3, updated_at = $4 \
                 WHERE tenant_id = $5 AND id = $6 AND version = $7",
            )
            .bind(&project.name)
            .bind(&project.description)
            .bind(project.version)
            .bind(project.updated_at)
            .bind(tenant)
            .bind(id)
            .bind(base)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if updated == 0 {
            return Err(missing_or_stale::<Self>(tx, id).await);
        }
        Ok(project)
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), project = %id))]
    async fn delete(tx: &mut TenantTx, id: ProjectId, expected: Option<Version>) -> Result<()> {
        PROJECTS.delete::<Self>(tx, id, expected).await
    }

    async fn list(
        tx: &mut TenantTx,
        _filter: &ProjectFilter,
        page: PageRequest,
    ) -> Result<Page<Self>> {
        let tenant = tx.tenant_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM projects WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows: Vec<Project> = scoped!(tx, |c| {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(ProjectId::from_uuid(page.after_key()))
                .bind(page.fetch_count())
                .fetch_all(c)
                .await
        })?;
        Ok(Page::from_rows(rows, &page, |p| p.id.as_uuid()))
    }
}
