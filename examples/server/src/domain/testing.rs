//! Fixtures for tests of the domain (the server's own tests and the end-to-end tests), behind
//! the `testing` feature.

use tenantkit_core::{Database, TenantScope, TenantScoped as _};

use super::{NewProject, NewTask, Project, ProjectId, Task};

/// Creates and commits a project named `name` in `scope`.
///
/// # Panics
/// When the database refuses.
pub async fn create_project(db: &Database, scope: &TenantScope, name: &str) -> Project {
    let mut tx = db.begin(scope).await.expect("begin");
    let new = NewProject {
        name: name.to_owned(),
        ..NewProject::default()
    };
    let project = Project::create(&mut tx, new).await.expect("create project");
    tx.commit().await.expect("commit project");
    project
}

/// Creates and commits a `todo` task titled `title` in `project`.
///
/// # Panics
/// When the database refuses.
pub async fn create_task(
    db: &Database,
    scope: &TenantScope,
    project: ProjectId,
    title: &str,
) -> Task {
    let mut tx = db.begin(scope).await.expect("begin");
    let task = Task::create(&mut tx, NewTask::new(project, title))
        .await
        .expect("create task");
    tx.commit().await.expect("commit task");
    task
}
