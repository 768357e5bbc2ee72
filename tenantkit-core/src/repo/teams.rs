//! Teams: groups of members inside a tenant, which projects may belong to.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{TenantScoped, TenantTable, double_option, ensure_written, read_for_update};
use crate::directory::conflict_as;
use crate::values::{check_optional_text, check_text, finish_validation, now};
use crate::with_conn;
use crate::{
    Email, Error, FieldError, Page, PageRequest, Result, TeamId, TenantId, TenantTx, UserId,
    Version,
};

const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 2_000;
const NAME_TAKEN: &str = "a team with this name already exists";

/// A team of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Team {
    /// The team's id.
    pub id: TeamId,
    /// The owning tenant (always the caller's; not sent to clients).
    #[serde(skip_serializing, default = "TenantId::new")]
    pub tenant_id: TenantId,
    /// Display name, 1 to 100 characters, unique in the tenant (case-insensitively).
    pub name: String,
    /// Free text, up to 2,000 characters.
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

/// The fields of a new team.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewTeam {
    /// Display name, 1 to 100 characters (trimmed).
    pub name: String,
    /// Optional free text.
    #[serde(default)]
    pub description: Option<String>,
}

impl NewTeam {
    /// A team with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
        }
    }
}

/// Changes to a team; absent fields stay, `"description": null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamPatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description, or `Some(None)` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
}

/// Which teams to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamFilter {
    /// Only teams this user belongs to.
    pub member: Option<UserId>,
}

/// A member of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamMember {
    /// The user.
    pub user_id: UserId,
    /// Their email address.
    pub email: Email,
    /// When they were added to the team.
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

impl Team {
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
pub(crate) const TEAMS: TenantTable = TenantTable {
    name: "teams",
    columns: COLUMNS,
    visibility: super::Visibility::Tenant,
};

impl TenantScoped for Team {
    type Id = TeamId;
    type New = NewTeam;
    type Patch = TeamPatch;
    type Filter = TeamFilter;

    fn id(&self) -> TeamId {
        self.id
    }

    fn version(&self) -> Version {
        self.version
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id()))]
    async fn create(tx: &mut TenantTx, new: NewTeam) -> Result<Self> {
        let at = now();
        let team = Team {
            id: TeamId::new(),
            tenant_id: tx.tenant_id(),
            name: new.name.trim().to_owned(),
            description: new.description,
            version: Version::INITIAL,
            created_at: at,
            updated_at: at,
        };
        team.validate()?;
        with_conn!(tx, |c| {
            sqlx::query(
                "INSERT INTO teams (id, tenant_id, name, description, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(team.id)
            .bind(team.tenant_id)
            .bind(&team.name)
            .bind(&team.description)
            .bind(team.version)
            .bind(team.created_at)
            .bind(team.updated_at)
            .execute(c)
            .await
            .map(drop)
            .map_err(conflict_as(NAME_TAKEN))
        })?;
        Ok(team)
    }

    async fn find(tx: &mut TenantTx, id: TeamId) -> Result<Option<Self>> {
        TEAMS.find(tx, id.into()).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), team = %id))]
    async fn update(
        tx: &mut TenantTx,
        id: TeamId,
        expected: Option<Version>,
        patch: TeamPatch,
    ) -> Result<Self> {
        let mut team: Self = read_for_update(tx, id, expected).await?;
        let base = team.version;
        if let Some(name) = patch.name {
            team.name = name.trim().to_owned();
        }
        if let Some(description) = patch.description {
            team.description = description;
        }
        team.validate()?;
        team.version = base.next();
        team.updated_at = now();
        let tenant = tx.tenant_id();
        let updated = with_conn!(tx, |c| {
            sqlx::query(
                "UPDATE teams SET name = $1, description = $2, version = $3, updated_at = $4 \
                 WHERE tenant_id = $5 AND id = $6 AND version = $7",
            )
            .bind(&team.name)
            .bind(&team.description)
            .bind(team.version)
            .bind(team.updated_at)
            .bind(tenant)
            .bind(id)
            .bind(base)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
            .map_err(conflict_as(NAME_TAKEN))
        })?;
        ensure_written::<Self>(tx, id, updated).await?;
        Ok(team)
    }

    /// Deletes the team and its memberships. Rows of team-restricted tables
    /// ([`super::Visibility::Team`]) that still name it keep the deletion from happening
    /// ([`Error::Conflict`]): detach them first, in the same transaction (a restricted row
    /// whose team is gone is then visible to admins and owners only).
    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), team = %id))]
    async fn delete(tx: &mut TenantTx, id: TeamId, expected: Option<Version>) -> Result<()> {
        match TEAMS.delete::<Self>(tx, id, expected).await {
            Err(Error::Conflict(_)) => Err(Error::Conflict(
                "records still belong to this team; detach them first".into(),
            )),
            other => other,
        }
    }

    async fn list(tx: &mut TenantTx, filter: &TeamFilter, page: PageRequest) -> Result<Page<Self>> {
        let tenant = tx.tenant_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM teams t WHERE tenant_id = $1 AND id > $2 \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM team_members tm \
                  WHERE tm.team_id = t.id AND tm.user_id = $3)) \
             ORDER BY id LIMIT $4"
        );
        let rows: Vec<Team> = with_conn!(tx, |c| {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(TeamId::from_uuid(page.after_key()))
                .bind(filter.member)
                .bind(page.fetch_count())
                .fetch_all(c)
                .await
        })?;
        Ok(Page::from_rows(rows, &page, |t| t.id.as_uuid()))
    }
}

impl TenantTx {
    /// Adds a member of this tenant to one of its teams.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the team is not this tenant's; [`Error::Validation`] (field
    /// `user_id`) when the user is not a member of this tenant; [`Error::Conflict`] when they
    /// already are in the team.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant_id(), team = %team))]
    pub async fn add_team_member(&mut self, team: TeamId, user: UserId) -> Result<TeamMember> {
        if !TEAMS.contains(self, team.into()).await? {
            return Err(Error::NotFound);
        }
        let tenant = self.tenant_id();
        // The member's email, for the answer; none when they are not in this tenant.
        let email: Option<Email> = with_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
                 WHERE m.tenant_id = $1 AND m.user_id = $2",
            )
            .bind(tenant)
            .bind(user)
            .fetch_optional(c)
            .await
        })?;
        let Some(email) = email else {
            return Err(Error::Validation(vec![FieldError::new(
                "user_id",
                "is not a member of this tenant",
            )]));
        };
        let added_at = now();
        with_conn!(self, |c| {
            sqlx::query(
                "INSERT INTO team_members (tenant_id, team_id, user_id, added_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(tenant)
            .bind(team)
            .bind(user)
            .bind(added_at)
            .execute(c)
            .await
            .map(drop)
            .map_err(conflict_as("the user is already a member of this team"))
        })?;
        Ok(TeamMember {
            user_id: user,
            email,
            added_at,
        })
    }

    /// Removes a user from a team of this tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the team is not this tenant's or the user is not in it.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant_id(), team = %team))]
    pub async fn remove_team_member(&mut self, team: TeamId, user: UserId) -> Result<()> {
        let tenant = self.tenant_id();
        let removed = with_conn!(self, |c| {
            sqlx::query(
                "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3",
            )
            .bind(tenant)
            .bind(team)
            .bind(user)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if removed == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// One member of a team, if they are in it.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn team_member(&mut self, team: TeamId, user: UserId) -> Result<Option<TeamMember>> {
        let tenant = self.tenant_id();
        Ok(with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT tm.user_id, u.email, tm.added_at FROM team_members tm \
                 JOIN users u ON u.id = tm.user_id \
                 WHERE tm.tenant_id = $1 AND tm.team_id = $2 AND tm.user_id = $3",
            )
            .bind(tenant)
            .bind(team)
            .bind(user)
            .fetch_optional(c)
            .await
        })?)
    }

    /// One page of a team's members, by user id.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the team is not this tenant's.
    pub async fn team_members(
        &mut self,
        team: TeamId,
        page: PageRequest,
    ) -> Result<Page<TeamMember>> {
        if !TEAMS.contains(self, team.into()).await? {
            return Err(Error::NotFound);
        }
        let tenant = self.tenant_id();
        let rows: Vec<TeamMember> = with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT tm.user_id, u.email, tm.added_at FROM team_members tm \
                 JOIN users u ON u.id = tm.user_id \
                 WHERE tm.tenant_id = $1 AND tm.team_id = $2 AND tm.user_id > $3 \
                 ORDER BY tm.user_id LIMIT $4",
            )
            .bind(tenant)
            .bind(team)
            .bind(UserId::from_uuid(page.after_key()))
            .bind(page.fetch_count())
            .fetch_all(c)
            .await
        })?;
        Ok(Page::from_rows(rows, &page, |m| m.user_id.as_uuid()))
    }

    /// Whether `user` is in `team` (of this tenant).
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn in_team(&mut self, team: TeamId, user: UserId) -> Result<bool> {
        Ok(self.team_member(team, user).await?.is_some())
    }

    /// Whether `team` is a team of this tenant.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn team_exists(&mut self, team: TeamId) -> Result<bool> {
        TEAMS.contains(self, team.into()).await
    }
}
