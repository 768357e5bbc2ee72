//! The example domain's behaviour suite (projects and tasks), run against every backend: the
//! domain is an outside crate of tenantkit-core, with its own tables, migrations and RLS
//! policies, and passes core's isolation conformance suite like any tenant table must.

use tenantkit_core::testing::{TestDb, TwoTenants, assert_tenant_isolation};
use tenantkit_core::{
    Backend, Database, Error, Limit, NewTeam, Page, PageRequest, Role, Team, TenantScope,
    TenantScoped, Version,
};
use tenantkit_server::domain::{
    NewProject, NewTask, Project, ProjectFilter, ProjectId, ProjectPatch, Task, TaskFilter, TaskId,
    TaskPatch, TaskStatus,
};

/// A fresh database with every migration the server applies.
async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &tenantkit_server::domain::all_migrations()).await
}

use tenantkit_server::domain::testing::{create_project, create_task};

async fn list_all<T: TenantScoped>(
    db: &Database,
    scope: &TenantScope,
    filter: &T::Filter,
) -> Vec<T> {
    let mut tx = db.begin_read(scope).await.expect("begin");
    let page = T::list(
        &mut tx,
        filter,
        PageRequest::first(Limit::new(100).expect("limit")),
    )
    .await
    .expect("list");
    assert!(page.next_cursor.is_none(), "fixture lists fit one page");
    page.items
}

mod suite {
    use super::*;

    pub(crate) async fn project_crud_round_trips(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let created = create_project(db, &scope, "  Launch  ").await;
        assert_eq!(created.name, "Launch", "names are trimmed");
        assert_eq!(created.version, Version::INITIAL);

        let mut tx = db.begin(&scope).await.expect("begin");
        assert_eq!(
            Project::get(&mut tx, created.id).await.expect("get"),
            created
        );
        let patch = ProjectPatch {
            name: Some("Relaunch".into()),
            description: Some(Some("v2".into())),
            ..Default::default()
        };
        let updated = Project::update(&mut tx, created.id, Some(created.version), patch)
            .await
            .expect("update");
        assert_eq!(
            (updated.name.as_str(), updated.description.as_deref()),
            ("Relaunch", Some("v2"))
        );
        assert_eq!(updated.version, Version::new(2));
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(
            Project::get(&mut tx, created.id).await.expect("reread"),
            updated
        );

        let cleared = Project::update(
            &mut tx,
            created.id,
            Some(updated.version),
            ProjectPatch {
                name: None,
                description: Some(None),
                ..Default::default()
            },
        )
        .await
        .expect("clear description");
        assert_eq!(cleared.description, None);
        assert_eq!(cleared.name, "Relaunch");

        Project::delete(&mut tx, created.id, Some(cleared.version))
            .await
            .expect("delete");
        assert_eq!(
            Project::find(&mut tx, created.id).await.expect("find"),
            None
        );
        assert!(matches!(
            Project::delete(&mut tx, created.id, None).await,
            Err(Error::NotFound)
        ));
        tx.commit().await.expect("commit");
    }

    pub(crate) async fn task_crud_and_filters(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let (member, _) = world.a.add_user(db, Role::Member).await;
        let p1 = create_project(db, &scope, "One").await;
        let p2 = create_project(db, &scope, "Two").await;

        let mut tx = db.begin(&scope).await.expect("begin");
        let due = time::macros::datetime!(2030-01-02 03:04:05.123456 UTC);
        let mut new = NewTask::new(p1.id, "Write spec");
        new.status = TaskStatus::InProgress;
        new.assignee_id = Some(member.id);
        new.due_at = Some(due);
        new.description = Some("details".into());
        let t1 = Task::create(&mut tx, new).await.expect("create t1");
        let t2 = Task::create(&mut tx, NewTask::new(p1.id, "Review"))
            .await
            .expect("create t2");
        let t3 = Task::create(&mut tx, NewTask::new(p2.id, "Ship"))
            .await
            .expect("create t3");
        tx.commit().await.expect("commit");

        let mut tx = db.begin(&scope).await.expect("begin");
        let read = Task::get(&mut tx, t1.id).await.expect("get");
        assert_eq!(read, t1);
        assert_eq!(
            read.due_at,
            Some(due),
            "times round-trip at microsecond precision"
        );
        tx.commit().await.expect("commit");

        let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let by_project = TaskFilter {
            project_id: Some(p1.id),
            ..Default::default()
        };
        assert_eq!(
            ids(list_all::<Task>(db, &scope, &by_project).await),
            vec![t1.id, t2.id]
        );
        let by_status = TaskFilter {
            status: Some(TaskStatus::Todo),
            ..Default::default()
        };
        assert_eq!(
            ids(list_all::<Task>(db, &scope, &by_status).await),
            vec![t2.id, t3.id]
        );
        let by_assignee = TaskFilter {
            assignee_id: Some(member.id),
            ..Default::default()
        };
        assert_eq!(
            ids(list_all::<Task>(db, &scope, &by_assignee).await),
            vec![t1.id]
        );

        let mut tx = db.begin(&scope).await.expect("begin");
        let patch = TaskPatch {
            status: Some(TaskStatus::Done),
            assignee_id: Some(None),
            due_at: Some(None),
            ..Default::default()
        };
        let done = Task::update(&mut tx, t1.id, Some(t1.version), patch)
            .await
            .expect("update");
        assert_eq!(
            (done.status, done.assignee_id, done.due_at),
            (TaskStatus::Done, None, None)
        );
        assert_eq!(done.title, "Write spec");
        tx.commit().await.expect("commit");

        // Deleting a project deletes its tasks.
        let mut tx = db.begin(&scope).await.expect("begin");
        Project::delete(&mut tx, p1.id, None)
            .await
            .expect("delete project");
        assert_eq!(Task::find(&mut tx, t2.id).await.expect("find"), None);
        assert!(Task::find(&mut tx, t3.id).await.expect("find").is_some());
        tx.commit().await.expect("commit");
    }

    pub(crate) async fn pagination_has_no_gaps_or_duplicates_under_inserts(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let mut originals = Vec::new();
        for i in 0..23 {
            originals.push(create_project(db, &scope, &format!("p{i}")).await.id);
        }
        // Noise in the other tenant must never show up.
        for i in 0..5 {
            create_project(db, &world.b.scope(), &format!("b{i}")).await;
        }
        let mut seen: Vec<ProjectId> = Vec::new();
        let mut inserted = Vec::new();
        let mut request = PageRequest::first(Limit::new(7).expect("limit"));
        let mut pages = 0;
        loop {
            let mut tx = db.begin_read(&scope).await.expect("begin");
            let page: Page<Project> = Project::list(&mut tx, &Default::default(), request)
                .await
                .expect("list");
            tx.commit().await.expect("commit");
            pages += 1;
            assert!(page.items.len() <= 7);
            seen.extend(page.items.iter().map(|p| p.id));
            // Insert between page reads, as other clients would.
            inserted.push(create_project(db, &scope, &format!("late{pages}")).await.id);
            match page.next_cursor {
                Some(cursor) => {
                    request.after = Some(tenantkit_core::Cursor::decode(&cursor).expect("cursor"))
                }
                None => break,
            }
            assert!(pages < 50, "pagination must terminate");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "stable creation order");
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "no duplicates");
        for id in &originals {
            assert!(seen.contains(id), "no gaps: {id:?} missing");
        }
        for id in &seen {
            assert!(
                originals.contains(id) || inserted.contains(id),
                "only tenant A's rows"
            );
        }
    }

    pub(crate) async fn stale_versions_are_rejected(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let project = create_project(db, &scope, "Versioned").await;
        let mut tx = db.begin(&scope).await.expect("begin");
        let rename = |name: &str| ProjectPatch {
            name: Some(name.into()),
            description: None,
            ..Default::default()
        };
        let v2 = Project::update(&mut tx, project.id, Some(Version::INITIAL), rename("first"))
            .await
            .expect("first");
        match Project::update(
            &mut tx,
            project.id,
            Some(Version::INITIAL),
            rename("second"),
        )
        .await
        {
            Err(Error::VersionMismatch { current }) => assert_eq!(current, v2.version),
            other => panic!("expected a version mismatch, got {other:?}"),
        }
        match Project::delete(&mut tx, project.id, Some(Version::INITIAL)).await {
            Err(Error::VersionMismatch { current }) => assert_eq!(current, v2.version),
            other => panic!("expected a version mismatch, got {other:?}"),
        }
        assert_eq!(
            Project::get(&mut tx, project.id).await.expect("get").name,
            "first"
        );
        tx.commit().await.expect("commit");
    }

    pub(crate) async fn concurrent_updates_with_one_version_let_exactly_one_win(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let project = create_project(db, &scope, "Contended").await;
        let project_id = project.id;
        let mut handles = Vec::new();
        for i in 0..8 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                let mut tx = db.begin(&scope).await?;
                let patch = ProjectPatch {
                    name: Some(format!("writer {i}")),
                    description: None,
                    ..Default::default()
                };
                let result =
                    Project::update(&mut tx, project_id, Some(Version::INITIAL), patch).await?;
                tx.commit().await?;
                Ok::<_, Error>(result)
            }));
        }
        let mut wins = Vec::new();
        for handle in handles {
            match handle.await.expect("join") {
                Ok(project) => wins.push(project),
                Err(Error::VersionMismatch { current }) => assert_eq!(current, Version::new(2)),
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(wins.len(), 1, "exactly one writer wins");
        let mut tx = db.begin_read(&scope).await.expect("begin");
        let stored = Project::get(&mut tx, project_id).await.expect("get");
        assert_eq!(
            stored, wins[0],
            "the winner's write is the stored one; no lost update"
        );
    }

    pub(crate) async fn other_tenants_rows_are_indistinguishable_from_missing(db: &Database) {
        let world = TwoTenants::create(db).await;
        let (a, b) = (world.a.scope(), world.b.scope());
        let project = create_project(db, &a, "Secret").await;
        let task = create_task(db, &a, project.id, "Secret task").await;

        let mut tx = db.begin(&b).await.expect("begin");
        // Read.
        assert_eq!(
            Project::find(&mut tx, project.id).await.expect("find"),
            None
        );
        assert_eq!(Task::find(&mut tx, task.id).await.expect("find"), None);
        // List.
        let projects = Project::list(&mut tx, &Default::default(), PageRequest::default())
            .await
            .expect("list");
        assert!(projects.items.is_empty());
        let tasks = Task::list(
            &mut tx,
            &TaskFilter {
                project_id: Some(project.id),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .expect("list");
        assert!(tasks.items.is_empty());
        // Update and delete answer exactly like a random id.
        let patch = || ProjectPatch {
            name: Some("pwned".into()),
            description: None,
            ..Default::default()
        };
        let foreign = Project::update(&mut tx, project.id, Some(project.version), patch()).await;
        let random =
            Project::update(&mut tx, ProjectId::new(), Some(project.version), patch()).await;
        assert!(
            matches!(
                (&foreign, &random),
                (Err(Error::NotFound), Err(Error::NotFound))
            ),
            "{foreign:?} {random:?}"
        );
        assert!(matches!(
            Task::update(&mut tx, task.id, Some(task.version), TaskPatch::default()).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Project::delete(&mut tx, project.id, None).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Task::delete(&mut tx, task.id, Some(task.version)).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Task::delete(&mut tx, TaskId::new(), None).await,
            Err(Error::NotFound)
        ));
        // A task cannot be hung off another tenant's project.
        assert!(matches!(
            Task::create(&mut tx, NewTask::new(project.id, "intruder")).await,
            Err(Error::NotFound)
        ));
        tx.commit().await.expect("commit");

        // Tenant A's rows are untouched.
        let mut tx = db.begin_read(&a).await.expect("begin");
        assert_eq!(
            Project::get(&mut tx, project.id).await.expect("get"),
            project
        );
        assert_eq!(Task::get(&mut tx, task.id).await.expect("get"), task);
    }

    pub(crate) async fn invalid_input_is_rejected_with_field_errors(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let (outsider, _) = world.b.add_user(db, Role::Member).await;
        let project = create_project(db, &scope, "Valid").await;
        let mut tx = db.begin(&scope).await.expect("begin");
        let fields = |result: tenantkit_core::Result<_>| match result {
            Err(Error::Validation(errors)) => {
                errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
            }
            other => panic!(
                "expected validation errors, got {:?}",
                other.map(|_: ()| ())
            ),
        };
        let empty = Project::create(
            &mut tx,
            NewProject {
                name: "   ".into(),
                description: None,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(fields(empty.map(drop)), ["name"]);
        let long = Project::create(
            &mut tx,
            NewProject {
                name: "x".repeat(201),
                description: Some("y".repeat(10_001)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(fields(long.map(drop)), ["name", "description"]);
        let mut assigned = NewTask::new(project.id, "t");
        assigned.assignee_id = Some(outsider.id);
        assert_eq!(
            fields(Task::create(&mut tx, assigned).await.map(drop)),
            ["assignee_id"]
        );
        tx.commit().await.expect("commit");
        assert_eq!(
            list_all::<Task>(db, &scope, &TaskFilter::default()).await,
            vec![],
            "nothing partial stored"
        );
    }

    pub(crate) async fn deleting_a_team_detaches_its_projects(db: &Database) {
        let world = TwoTenants::create(db).await;
        let scope = world.a.scope();
        let mut tx = db.begin(&scope).await.expect("begin");
        let team = Team::create(&mut tx, NewTeam::named("Design"))
            .await
            .expect("create team");
        let project = Project::create(
            &mut tx,
            NewProject {
                name: "Site".into(),
                team_id: Some(team.id),
                restricted: true,
                ..NewProject::default()
            },
        )
        .await
        .expect("project");
        tx.commit().await.expect("commit");

        // Core refuses to delete a team that a team-restricted row still names (the foreign
        // key, on both backends)...
        let mut tx = db.begin(&scope).await.expect("begin");
        let refused = Team::delete(&mut tx, team.id, Some(team.version)).await;
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
        drop(tx);
        // ...so the domain detaches its projects first, in the same transaction.
        let mut tx = db.begin(&scope).await.expect("begin");
        assert_eq!(
            Project::detach_team(&mut tx, team.id)
                .await
                .expect("detach"),
            1
        );
        Team::delete(&mut tx, team.id, Some(team.version))
            .await
            .expect("delete team");
        let detached = Project::get(&mut tx, project.id).await.expect("get");
        assert_eq!(detached.team_id, None);
        assert!(detached.restricted, "still restricted: admins only now");
        assert_eq!(detached.version, Version::new(2));
        // It stays editable as it is.
        let renamed = ProjectPatch {
            name: Some("Site (archived)".into()),
            ..ProjectPatch::default()
        };
        Project::update(&mut tx, project.id, None, renamed)
            .await
            .expect("an orphaned restricted project can still be renamed");
        tx.commit().await.expect("commit");
    }

    pub(crate) async fn restricted_projects_are_hidden_outside_their_team(db: &Database) {
        let world = TwoTenants::create(db).await;
        let owner = world.a.scope();
        let (insider, insider_p) = world.a.add_user(db, Role::Member).await;
        let (_, outsider_p) = world.a.add_user(db, Role::Member).await;
        let (_, admin_p) = world.a.add_user(db, Role::Admin).await;
        let (insider_scope, outsider, admin) = (
            TenantScope::of(&insider_p),
            TenantScope::of(&outsider_p),
            TenantScope::of(&admin_p),
        );
        assert!(admin.sees_all_teams() && owner.sees_all_teams());
        assert!(!outsider.sees_all_teams());

        let mut tx = db.begin(&owner).await.expect("begin");
        let team = Team::create(&mut tx, NewTeam::named("Secret"))
            .await
            .expect("team");
        tx.add_team_member(team.id, insider.id).await.expect("add");
        let hidden = Project::create(
            &mut tx,
            NewProject {
                name: "Hidden".into(),
                team_id: Some(team.id),
                restricted: true,
                ..NewProject::default()
            },
        )
        .await
        .expect("restricted project");
        tx.commit().await.expect("commit");
        let open = create_project(db, &owner, "Open").await;
        let secret_task = create_task(db, &owner, hidden.id, "secret").await;
        let open_task = create_task(db, &owner, open.id, "open").await;

        // The outsider: the restricted project and its tasks answer like missing ones.
        let mut tx = db.begin(&outsider).await.expect("begin");
        assert_eq!(Project::find(&mut tx, hidden.id).await.expect("find"), None);
        assert_eq!(
            Task::find(&mut tx, secret_task.id).await.expect("find"),
            None
        );
        let rename = ProjectPatch {
            name: Some("mine".into()),
            ..ProjectPatch::default()
        };
        assert!(matches!(
            Project::update(&mut tx, hidden.id, None, rename.clone()).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Project::delete(&mut tx, hidden.id, None).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Task::update(&mut tx, secret_task.id, None, TaskPatch::default()).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Task::delete(&mut tx, secret_task.id, None).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Task::create(&mut tx, NewTask::new(hidden.id, "sneak")).await,
            Err(Error::NotFound)
        ));
        // Nobody can hand a project to a team they are not in.
        match Project::create(
            &mut tx,
            NewProject {
                name: "Into the team".into(),
                team_id: Some(team.id),
                ..NewProject::default()
            },
        )
        .await
        {
            Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "team_id"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        match Project::create(
            &mut tx,
            NewProject {
                name: "Teamless".into(),
                restricted: true,
                ..NewProject::default()
            },
        )
        .await
        {
            Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "restricted"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        drop(tx);
        // Nor restrict a project of a team they are not in (it would vanish for everyone
        // outside that team).
        let mut tx = db.begin(&owner).await.expect("begin");
        let team_open = Project::create(
            &mut tx,
            NewProject {
                name: "Team, open".into(),
                team_id: Some(team.id),
                ..NewProject::default()
            },
        )
        .await
        .expect("open team project");
        tx.commit().await.expect("commit");
        let mut tx = db.begin(&outsider).await.expect("begin");
        let restrict = ProjectPatch {
            restricted: Some(true),
            ..ProjectPatch::default()
        };
        match Project::update(&mut tx, team_open.id, None, restrict).await {
            Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "team_id"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        drop(tx);
        let mut tx = db.begin(&owner).await.expect("begin");
        Project::delete(&mut tx, team_open.id, None)
            .await
            .expect("clean up");
        tx.commit().await.expect("commit");
        let projects = list_all::<Project>(db, &outsider, &ProjectFilter::default()).await;
        assert_eq!(projects, vec![open.clone()]);
        let tasks = list_all::<Task>(db, &outsider, &TaskFilter::default()).await;
        assert_eq!(tasks, vec![open_task.clone()]);
        let by_project = TaskFilter {
            project_id: Some(hidden.id),
            ..TaskFilter::default()
        };
        assert!(
            list_all::<Task>(db, &outsider, &by_project)
                .await
                .is_empty()
        );
        let by_team = ProjectFilter::team(team.id);
        assert!(
            list_all::<Project>(db, &outsider, &by_team)
                .await
                .is_empty()
        );

        // The team member and the admin see and change it.
        for scope in [&insider_scope, &admin] {
            let projects = list_all::<Project>(db, scope, &ProjectFilter::default()).await;
            assert_eq!(projects.len(), 2);
            let tasks = list_all::<Task>(db, scope, &TaskFilter::default()).await;
            assert_eq!(tasks.len(), 2);
        }
        let mut tx = db.begin(&insider_scope).await.expect("begin");
        Project::update(&mut tx, hidden.id, None, rename)
            .await
            .expect("the team member writes");
        Task::create(&mut tx, NewTask::new(hidden.id, "inside"))
            .await
            .expect("the team member adds tasks");
        tx.commit().await.expect("commit");

        // Opening it up makes it visible to the whole tenant; B never sees it.
        let mut tx = db.begin(&admin).await.expect("begin");
        Project::update(
            &mut tx,
            hidden.id,
            None,
            ProjectPatch {
                restricted: Some(false),
                ..ProjectPatch::default()
            },
        )
        .await
        .expect("open up");
        tx.commit().await.expect("commit");
        let mut tx = db.begin_read(&outsider).await.expect("begin");
        assert!(
            Project::find(&mut tx, hidden.id)
                .await
                .expect("find")
                .is_some()
        );
        drop(tx);
        let mut tx = db.begin_read(&world.b.scope()).await.expect("begin");
        assert_eq!(Project::find(&mut tx, hidden.id).await.expect("find"), None);
    }
}

mod tests {
    use super::*;

    macro_rules! on_db {
        ($($name:ident),* $(,)?) => {
            $(
                pub(crate) async fn $name(test_db: TestDb) {
                    super::suite::$name(&test_db.db).await;
                }
            )*
        };
    }

    on_db!(
        project_crud_round_trips,
        task_crud_and_filters,
        pagination_has_no_gaps_or_duplicates_under_inserts,
        stale_versions_are_rejected,
        concurrent_updates_with_one_version_let_exactly_one_win,
        other_tenants_rows_are_indistinguishable_from_missing,
        invalid_input_is_rejected_with_field_errors,
        deleting_a_team_detaches_its_projects,
        restricted_projects_are_hidden_outside_their_team,
    );

    /// Projects and tasks pass tenantkit-core's isolation conformance suite (on PostgreSQL
    /// also with the application's filter removed: row-level security).
    pub(crate) async fn projects_and_tasks_pass_the_isolation_suite(test_db: TestDb) {
        let db = &test_db.db;
        let world = TwoTenants::create(db).await;
        let project = create_project(db, &world.a.scope(), "Secret").await;
        let task = create_task(db, &world.a.scope(), project.id, "Hidden").await;
        assert_tenant_isolation(
            &test_db,
            &world,
            "projects",
            &project,
            ProjectPatch::default,
        )
        .await;
        assert_tenant_isolation(&test_db, &world, "tasks", &task, TaskPatch::default).await;
    }

    tenantkit_core::backend_tests!(
        fixture = db;
        project_crud_round_trips,
        task_crud_and_filters,
        pagination_has_no_gaps_or_duplicates_under_inserts,
        stale_versions_are_rejected,
        concurrent_updates_with_one_version_let_exactly_one_win,
        other_tenants_rows_are_indistinguishable_from_missing,
        invalid_input_is_rejected_with_field_errors,
        deleting_a_team_detaches_its_projects,
        restricted_projects_are_hidden_outside_their_team,
        projects_and_tasks_pass_the_isolation_suite,
    );
}
