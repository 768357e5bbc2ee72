//! Tasks: records inside a project of the same tenant, visible exactly when their project is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use tenantkit_core::validate::{check_optional_text, check_text, finish_validation};
use tenantkit_core::{
    Error, FieldError, Page, PageRequest, Result, TenantId, TenantScoped, TenantTable, TenantTx,
    UserId, Version, Visibility, double_option, ensure_written, now, read_for_update, with_conn,
};

use super::projects::PROJECTS;
use super::{ProjectId, TaskId};

const TITLE_MAX: usize = 500;
const DESCRIPTION_MAX: usize = 10_000;

/// Where a task stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum TaskStatus {
    /// Not started (the default).
    #[default]
    Todo,
    /// Being worked on.
    InProgress,
    /// Finished.
    Done,
}

impl TaskStatus {
    /// The stable name used in JSON and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Todo => "todo",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when text names no task status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status; expected todo, in_progress or done")]
pub struct ParseTaskStatusError;

impl FromStr for TaskStatus {
    type Err = ParseTaskStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [TaskStatus::Todo, TaskStatus::InProgress, TaskStatus::Done]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(ParseTaskStatusError)
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = ParseTaskStatusError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A task of a tenant's project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// The owning tenant (always the caller's; not sent to clients).
    #[serde(skip_serializing, default = "TenantId::new")]
    pub tenant_id: TenantId,
    /// The project it belongs to, always of the same tenant.
    pub project_id: ProjectId,
    /// Title, 1 to 500 characters.
    pub title: String,
    /// Free text, up to 10,000 characters.
    pub description: Option<String>,
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    /// A member of the tenant it is assigned to.
    pub assignee_id: Option<UserId>,
    /// When it is due.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub due_at: Option<OffsetDateTime>,
    /// Optimistic-concurrency version.
    pub version: Version,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The fields of a new task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct NewTask {
    /// The project, which must belong to the transaction's tenant. (Servers take it from the
    /// path, not the body.)
    #[serde(skip_deserializing, default = "ProjectId::new")]
    pub project_id: ProjectId,
    /// Title, 1 to 500 characters (trimmed).
    pub title: String,
    /// Optional free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Initial status, `todo` by default.
    #[serde(default)]
    pub status: TaskStatus,
    /// A member of the tenant to assign it to.
    #[serde(default)]
    pub assignee_id: Option<UserId>,
    /// When it is due.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub due_at: Option<OffsetDateTime>,
}

impl NewTask {
    /// A `todo` task with just a title.
    pub fn new(project_id: ProjectId, title: impl Into<String>) -> Self {
        Self {
            project_id,
            title: title.into(),
            description: None,
            status: TaskStatus::Todo,
            assignee_id: None,
            due_at: None,
        }
    }
}

/// Changes to a task; absent fields stay, `null` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct TaskPatch {
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new description, or `Some(None)` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    /// A new status.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// A new assignee, or `Some(None)` to unassign.
    #[serde(default, deserialize_with = "double_option")]
    pub assignee_id: Option<Option<UserId>>,
    /// A new due time, or `Some(None)` to clear it.
    #[serde(default, deserialize_with = "double_option_time")]
    pub due_at: Option<Option<OffsetDateTime>>,
}

fn double_option_time<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(deserializer).map(Some)
}

/// Which tasks to list; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks of this project.
    pub project_id: Option<ProjectId>,
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks assigned to this user.
    pub assignee_id: Option<UserId>,
    /// Only tasks whose title contains this text, case-insensitively (ASCII case folding on
    /// SQLite; `%`, `_` and `\` match themselves).
    pub title_contains: Option<String>,
}

/// A LIKE pattern matching `text` anywhere, with LIKE's wildcards escaped (escape char `\`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Task {
    /// Checks the fields; the assignee only when `assignee_changed` (a task assigned to
    /// someone who has since left keeps that record, and stays editable).
    async fn validate(&self, tx: &mut TenantTx, assignee_changed: bool) -> Result<()> {
        let mut errors = Vec::new();
        check_text(&mut errors, "title", &self.title, TITLE_MAX);
        check_optional_text(
            &mut errors,
            "description",
            self.description.as_deref(),
            DESCRIPTION_MAX,
        );
        if assignee_changed
            && let Some(assignee) = self.assignee_id
            && tx.member(assignee).await?.is_none()
        {
            errors.push(FieldError::new(
                "assignee_id",
                "is not a member of this tenant",
            ));
        }
        finish_validation(errors)
    }
}

const COLUMNS: &str = "id, tenant_id, project_id, title, description, status, assignee_id, \
                       due_at, version, created_at, updated_at";
const TASKS: TenantTable = TenantTable {
    name: "tasks",
    columns: COLUMNS,
    // `project_id` is NOT NULL with a cascading foreign key to the project (migration 10001).
    visibility: Visibility::Parent {
        table: "projects",
        key: "project_id",
        enforced: true,
    },
};

impl TenantScoped for Task {
    type Id = TaskId;
    type New = NewTask;
    type Patch = TaskPatch;
    type Filter = TaskFilter;

    fn id(&self) -> TaskId {
        self.id
    }

    fn version(&self) -> Version {
        self.version
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), project = %new.project_id))]
    async fn create(tx: &mut TenantTx, new: NewTask) -> Result<Self> {
        let at = now();
        let task = Task {
            id: TaskId::new(),
            tenant_id: tx.tenant_id(),
            project_id: new.project_id,
            title: new.title.trim().to_owned(),
            description: new.description,
            status: new.status,
            assignee_id: new.assignee_id,
            due_at: new.due_at,
            version: Version::INITIAL,
            created_at: at,
            updated_at: at,
        };
        task.validate(tx, true).await?;
        // A task can only hang off a project of the same tenant that the caller may see;
        // another tenant's project, or a restricted one outside the caller's teams, answers
        // exactly like a missing one. Checked in the INSERT itself (one statement, not two);
        // the composite foreign key is the second wall.
        let (all, viewer) = (tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "INSERT INTO tasks (id, tenant_id, project_id, title, description, status, \
             assignee_id, due_at, version, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE EXISTS \
             (SELECT 1 FROM projects p WHERE p.tenant_id = $2 AND p.id = $3{})",
            PROJECTS.visibility.condition("p", all, 12)
        );
        let inserted = with_conn!(tx, |c| {
            let query = sqlx::query(&sql)
                .bind(task.id)
                .bind(task.tenant_id)
                .bind(task.project_id)
                .bind(&task.title)
                .bind(&task.description)
                .bind(task.status.as_str())
                .bind(task.assignee_id)
                .bind(task.due_at)
                .bind(task.version)
                .bind(task.created_at)
                .bind(task.updated_at);
            tenantkit_core::bind_visibility!(query, PROJECTS.visibility, all, viewer)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        if inserted == 0 {
            return Err(Error::NotFound);
        }
        Ok(task)
    }

    async fn find(tx: &mut TenantTx, id: TaskId) -> Result<Option<Self>> {
        TASKS.find(tx, id.into()).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), task = %id))]
    async fn update(
        tx: &mut TenantTx,
        id: TaskId,
        expected: Option<Version>,
        patch: TaskPatch,
    ) -> Result<Self> {
        let mut task: Self = read_for_update(tx, id, expected).await?;
        // The guard below compares against the version read here, so a write without
        // If-Match still never overwrites a concurrent change it did not see.
        let base = task.version;
        if let Some(title) = patch.title {
            task.title = title.trim().to_owned();
        }
        if let Some(description) = patch.description {
            task.description = description;
        }
        if let Some(status) = patch.status {
            task.status = status;
        }
        let assignee_changed = patch
            .assignee_id
            .is_some_and(|assignee| assignee != task.assignee_id);
        if let Some(assignee) = patch.assignee_id {
            task.assignee_id = assignee;
        }
        if let Some(due_at) = patch.due_at {
            task.due_at = due_at;
        }
        task.validate(tx, assignee_changed).await?;
        task.version = base.next();
        task.updated_at = now();
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        // The project may have been restricted since the read above: check again.
        let sql = format!(
            "UPDATE tasks SET title = $1, description = $2, status = $3, assignee_id = $4, \
             due_at = $5, version = $6, updated_at = $7 \
             WHERE tenant_id = $8 AND id = $9 AND version = $10{}",
            TASKS.visibility.condition("tasks", all, 11)
        );
        let updated = with_conn!(tx, |c| {
            let query = sqlx::query(&sql)
                .bind(&task.title)
                .bind(&task.description)
                .bind(task.status.as_str())
                .bind(task.assignee_id)
                .bind(task.due_at)
                .bind(task.version)
                .bind(task.updated_at)
                .bind(tenant)
                .bind(id)
                .bind(base);
            tenantkit_core::bind_visibility!(query, TASKS.visibility, all, viewer)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        ensure_written::<Self>(tx, id, updated).await?;
        Ok(task)
    }

    #[tracing::instrument(skip_all, fields(tenant = %tx.tenant_id(), task = %id))]
    async fn delete(tx: &mut TenantTx, id: TaskId, expected: Option<Version>) -> Result<()> {
        TASKS.delete::<Self>(tx, id, expected).await
    }

    async fn list(tx: &mut TenantTx, filter: &TaskFilter, page: PageRequest) -> Result<Page<Self>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        // Only the filters in use are in the statement (one prepared statement per
        // combination), not `($n IS NULL OR column = $n)`: PostgreSQL's generic plan of that
        // form can use no index for the filter and sorts the tenant's rows on every page.
        let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id > $2");
        let mut parameters = 2;
        let mut filter_on = |condition: &str| {
            parameters += 1;
            sql.push_str(&condition.replace("$n", &format!("${parameters}")));
        };
        let title = filter.title_contains.as_deref().map(contains_pattern);
        if filter.project_id.is_some() {
            filter_on(" AND project_id = $n");
        }
        if filter.status.is_some() {
            filter_on(" AND status = $n");
        }
        if filter.assignee_id.is_some() {
            filter_on(" AND assignee_id = $n");
        }
        if title.is_some() {
            filter_on(" AND lower(title) LIKE $n ESCAPE '\\'");
        }
        sql.push_str(&TASKS.visibility.condition("tasks", all, parameters + 2));
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", parameters + 1));
        let rows: Vec<Task> = with_conn!(tx, |c| {
            let mut query = sqlx::query_as(&sql)
                .bind(tenant)
                .bind(TaskId::from_uuid(page.after_key()));
            if let Some(project) = filter.project_id {
                query = query.bind(project);
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            if let Some(assignee) = filter.assignee_id {
                query = query.bind(assignee);
            }
            if let Some(title) = &title {
                query = query.bind(title.as_str());
            }
            let query = query.bind(page.fetch_count());
            tenantkit_core::bind_visibility!(query, TASKS.visibility, all, viewer)
                .fetch_all(c)
                .await
        })?;
        Ok(Page::from_rows(rows, &page, |t| t.id.as_uuid()))
    }
}
