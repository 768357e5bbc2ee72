//! Projects: the top-level records of the example domain. A project may belong to a team and
//! be restricted to it (core's generic [`Visibility::Team`] rule).

use serde::{Deserialize, Serialize};
use tenantkit_core::validate::{check_optional_text, check_text, finish_validation};
use tenantkit_core::{
    FieldError, Page, PageRequest, Result, TeamId, TenantId, TenantScoped, TenantTable, TenantTx,
    Version, Visibility, double_option, ensure_written, now, read_for_update, with_conn,
};
use time::OffsetDateTime;

use super::ProjectId;

const NAME_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 10_000;

/// A project of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
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
    /// The team it belongs to, if any.
    pub team_id: Option<TeamId>,
    /// Whether only its team's members (and admins and owners) may see and change it.
    pub restricted: bool,
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
#[derive(utoipa::ToSchema)]
pub struct NewProject {
    /// Display name, 1 to 200 characters (trimmed).
    pub name: String,
    /// Optional free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The team it belongs to. Callers who cannot see every project may only pick a team
    /// they are in.
    #[serde(default)]
    pub team_id: Option<TeamId>,
    /// Visible only to the team's members and to admins and owners; needs a `team_id`.
    #[serde(default)]
    pub restricted: bool,
}

/// Changes to a project; absent fields stay, `"description": null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct ProjectPatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description, or `Some(None)` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// A new team, or `Some(None)` to detach it from its team.
    #[serde(default, deserialize_with = "double_option")]
    pub team_id: Option<Option<TeamId>>,
    /// Restrict it to its team, or open it to the whole tenant.
    #[serde(default)]
    pub restricted: Option<bool>,
}

/// Which projects to list (always only those the caller may see).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectFilter {
    /// Only projects of this team.
    pub team_id: Option<TeamId>,
}

impl ProjectFilter {
    /// Projects of one team.
    pub fn team(team_id: TeamId) -> Self {
        Self {
            team_id: Some(team_id),
        }
    }
}

impl Project {
    /// Checks the fields and, when `reach_changed` (a new project, a new team, or newly
    /// restricted), the team: it must be this tenant's, and a caller who does not see every
    /// project may only pick (or restrict to) a team they are in, so nobody can hide work
    /// from others outside a team of their own. A restricted project needs a team.
    async fn validate(&self, tx: &mut TenantTx, reach_changed: bool) -> Result<()> {
        let mut errors = Vec::new();
        check_text(&mut errors, "name", &self.name, NAME_MAX);
        check_optional_text(
            &mut errors,
            "description",
            self.description.as_deref(),
            DESCRIPTION_MAX,
        );
        match self.team_id {
            Some(team) if reach_changed => {
                if !tx.team_exists(team).await? {
                    errors.push(FieldError::new("team_id", "is not a team of this tenant"));
                } else if let Some(viewer) = tx.viewer()
                    && !tx.in_team(team, viewer).await?
                {
                    errors.push(FieldError::new(
                        "team_id",
                        "you are not a member of this team",
                    ));
                }
            }
            Some(_) => {}
            None if self.restricted && reach_changed => {
                errors.push(FieldError::new(
                    "restricted",
                    "a restricted project needs a team_id",
                ));
            }
            None => {}
        }
        finish_validation(errors)
    }
}

const COLUMNS: &str =
    "id, tenant_id, name, description, team_id, restricted, version, created_at, updated_at";
pub(crate) const PROJECTS: TenantTable = TenantTable {
    name: "projects",
    columns: COLUMNS,
    visibility: Visibility::Team,
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
            team_id: new.team_id,
            restricted: new.restricted,
            version: Version::INITIAL,
            created_at: at,
            updated_at: at,
        };
        project.validate(tx, true).await?;
        with_conn!(tx, |c| {
            sqlx::query(
                "INSERT INTO projects (id, tenant_id, name, description, team_id, restricted, \
                 version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(project.id)
            .bind(project.tenant_id)
            .bind(&project.name)
            .bind(&project.description)
            .bind(project.team_id)
            .bind(project.restricted)
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
        let mut project: Self = read_for_update(tx, id, expected).await?;
        // The guard below compares against the version read here, so a write without
        // If-Match still never overwrites a concurrent change it did not see.
        let base = project.version;
        if let Some(name) = patch.name {
            project.name = name.trim().to_owned();
        }
        if let Some(description) = patch.description {
            project.description = description;
        }
        let team_changed = patch.team_id.is_some_and(|team| team != project.team_id);
        let newly_restricted = patch.restricted == Some(true) && !project.restricted;
        if let Some(team) = patch.team_id {
            project.team_id = team;
        }
        if let Some(restricted) = patch.restricted {
            project.restricted = restricted;
        }
        // A project orphaned by a team's deletion stays editable (by admins) as it is.
        project
            .validate(tx, team_changed || newly_restricted)
            .await?;
        project.version = base.next();
        project.updated_at = now();
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        // Checked again at write time: the caller may have left the team since the read.
        let sql = format!(
            "UPDATE projects SET name = $1, description = $2, team_id = $3, restricted = $4, \
             version = $5, updated_at = $6 WHERE tenant_id = $7 AND id = $8 AND version = $9{}",
            PROJECTS.visibility.condition("projects", all, 10)
        );
        let updated = with_conn!(tx, |c| {
            let query = sqlx::query(&sql)
                .bind(&project.name)
                .bind(&project.description)
                .bind(project.team_id)
                .bind(project.restricted)
                .bind(project.version)
                .bind(project.updated_at)
                .bind(tenant)
                .bind(id)
                .bind(base);
            tenantkit_core::bind_visibility!(query, PROJECTS.visibility, all, viewer)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        ensure_written::<Self>(tx, id, updated).await?;
        Ok(project)
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), project = %id))]
    async fn delete(tx: &mut TenantTx, id: ProjectId, expected: Option<Version>) -> Result<()> {
        PROJECTS.delete::<Self>(tx, id, expected).await
    }

    async fn list(
        tx: &mut TenantTx,
        filter: &ProjectFilter,
        page: PageRequest,
    ) -> Result<Page<Self>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT {COLUMNS} FROM projects WHERE tenant_id = $1 AND id > $2 \
             AND ($3 IS NULL OR team_id = $3){} ORDER BY id LIMIT $4",
            PROJECTS.visibility.condition("projects", all, 5)
        );
        let rows: Vec<Project> = with_conn!(tx, |c| {
            let query = sqlx::query_as(&sql)
                .bind(tenant)
                .bind(ProjectId::from_uuid(page.after_key()))
                .bind(filter.team_id)
                .bind(page.fetch_count());
            tenantkit_core::bind_visibility!(query, PROJECTS.visibility, all, viewer)
                .fetch_all(c)
                .await
        })?;
        Ok(Page::from_rows(rows, &page, |p| p.id.as_uuid()))
    }
}

impl Project {
    /// Detaches every project of `team` from it (before the team is deleted, in the same
    /// transaction); each detached project's version moves on. A restricted one is then
    /// visible to admins and owners only.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Database`] on failure.
    pub async fn detach_team(tx: &mut TenantTx, team: TeamId) -> Result<u64> {
        let tenant = tx.tenant_id();
        let at = now();
        Ok(with_conn!(tx, |c| {
            sqlx::query(
                "UPDATE projects SET team_id = NULL, version = version + 1, updated_at = $3 \
                 WHERE tenant_id = $1 AND team_id = $2",
            )
            .bind(tenant)
            .bind(team)
            .bind(at)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?)
    }
}
