//! PostgreSQL row-level security as the second wall, for the whole server's schema (core's
//! directory and teams, auth's sessions, the example domain's projects and tasks): with the
//! application's tenant filter deliberately left out, a tenant-scoped connection still sees
//! and changes only its tenant.

use sqlx::{Connection, PgConnection, Row};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    Backend, Database, DatabaseOptions, Error, RawConn, TenantScope, TenantScoped, TenantTx,
};
use tenantkit_server::domain::{Project, Task};

async fn postgres() -> Option<TestDb> {
    TestDb::new(
        Backend::Postgres,
        &tenantkit_server::domain::all_migrations(),
    )
    .await
}

use tenantkit_server::domain::testing::{create_project, create_task};

struct World {
    test_db: TestDb,
    tenants: TwoTenants,
}

/// Two tenants with two projects and a task each; `None` when PostgreSQL is not available.
async fn world() -> Option<World> {
    let test_db = postgres().await?;
    let tenants = TwoTenants::create(&test_db.db).await;
    for scope in [tenants.a.scope(), tenants.b.scope()] {
        for name in ["one", "two"] {
            let project = create_project(&test_db.db, &scope, name).await;
            create_task(&test_db.db, &scope, project.id, "task").await;
        }
    }
    Some(World { test_db, tenants })
}

fn pg(tx: &mut TenantTx) -> &mut PgConnection {
    match tx.raw() {
        RawConn::Postgres(conn) => conn,
        #[allow(unreachable_patterns)] // Other variants exist only with other features enabled.
        _ => panic!("a PostgreSQL test database gives PostgreSQL connections"),
    }
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.expect(sql)
}

#[tokio::test]
async fn unfiltered_queries_through_a_tenant_scope_see_only_that_tenant() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let mut tx = test_db.db.begin(&tenants.a.scope()).await.expect("begin");
    let conn = pg(&mut tx);
    // No WHERE tenant_id = ...: the application filter is deliberately missing.
    assert_eq!(count(conn, "SELECT count(*) FROM projects").await, 2);
    assert_eq!(count(conn, "SELECT count(*) FROM tasks").await, 2);
    assert_eq!(count(conn, "SELECT count(*) FROM memberships").await, 1);
    let foreign: i64 = sqlx::query_scalar("SELECT count(*) FROM projects WHERE tenant_id = $1")
        .bind(tenants.b.tenant.id)
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(
        foreign, 0,
        "asking for tenant B by id through A's scope finds nothing"
    );
}

#[tokio::test]
async fn unfiltered_writes_through_a_tenant_scope_touch_only_that_tenant() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let db = &test_db.db;
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let conn = pg(&mut tx);
    let renamed = sqlx::query("UPDATE projects SET name = 'renamed by A'")
        .execute(&mut *conn)
        .await
        .expect("update");
    assert_eq!(renamed.rows_affected(), 2, "only tenant A's two projects");
    let deleted = sqlx::query("DELETE FROM tasks")
        .execute(&mut *conn)
        .await
        .expect("delete");
    assert_eq!(deleted.rows_affected(), 1 + 1, "only tenant A's two tasks");
    tx.commit().await.expect("commit");

    let mut tx = db.begin_read(&tenants.b.scope()).await.expect("begin");
    let page = Project::list(&mut tx, &Default::default(), Default::default())
        .await
        .expect("list");
    assert!(
        page.items.iter().all(|p| p.name != "renamed by A"),
        "tenant B untouched"
    );
    let tasks = Task::list(&mut tx, &Default::default(), Default::default())
        .await
        .expect("list");
    assert_eq!(tasks.items.len(), 2, "tenant B's tasks survive");
}

#[tokio::test]
async fn writes_into_another_tenant_are_refused() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let db = &test_db.db;
    let b = tenants.b.tenant.id;

    // Insert a row that claims tenant B through tenant A's scope.
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let err = sqlx::query(
        "INSERT INTO projects (id, tenant_id, name, version, created_at, updated_at) \
         VALUES (gen_random_uuid(), $1, 'smuggled', 1, now(), now())",
    )
    .bind(b)
    .execute(pg(&mut tx))
    .await
    .expect_err("RLS WITH CHECK refuses the row");
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);

    // Move one of A's rows into tenant B.
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let err = sqlx::query("UPDATE projects SET tenant_id = $1")
        .bind(b)
        .execute(pg(&mut tx))
        .await
        .expect_err("RLS WITH CHECK refuses the move");
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);

    // Make oneself a member of tenant B.
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let err = sqlx::query("INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, 'owner', now())")
        .bind(b)
        .bind(tenants.a.owner.id)
        .execute(pg(&mut tx))
        .await
        .expect_err("RLS refuses a membership in another tenant");
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn without_a_tenant_scope_the_app_role_sees_no_tenant_rows() {
    let Some(World { test_db, .. }) = world().await else {
        return;
    };
    let mut conn = PgConnection::connect(&test_db.app_url)
        .await
        .expect("connect as app");
    assert_eq!(count(&mut conn, "SELECT count(*) FROM projects").await, 0);
    assert_eq!(count(&mut conn, "SELECT count(*) FROM tasks").await, 0);
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM memberships").await,
        0
    );
    // A tenant set in one transaction does not leak into the next on the same connection.
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.tenant_id', gen_random_uuid()::text, true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    tx.commit().await.expect("commit");
    let setting: Option<String> = sqlx::query("SELECT current_setting('app.tenant_id', true)")
        .fetch_one(&mut conn)
        .await
        .expect("read")
        .get(0);
    assert!(
        setting.unwrap_or_default().is_empty(),
        "transaction-local setting reset"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) FROM projects").await, 0);
}

#[tokio::test]
async fn the_app_role_cannot_switch_row_level_security_off() {
    let Some(World { test_db, .. }) = world().await else {
        return;
    };
    let mut conn = PgConnection::connect(&test_db.app_url)
        .await
        .expect("connect as app");
    for statement in [
        "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON memberships",
        "CREATE POLICY let_me_in ON projects USING (true)",
        "SET ROLE tenantkit_owner",
    ] {
        let err = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("must be owner")
                || err.to_string().contains("permission denied"),
            "{statement}: {err}"
        );
    }
    // Asking PostgreSQL to skip policies makes the query fail rather than see everything.
    sqlx::query("SET row_security = off")
        .execute(&mut conn)
        .await
        .expect("set");
    let err = sqlx::query("SELECT count(*) FROM projects")
        .fetch_one(&mut conn)
        .await
        .expect_err("row_security=off is refused for a non-bypass role");
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn connecting_as_an_rls_bypassing_role_is_refused() {
    let Some(test_db) = postgres().await else {
        return;
    };
    // The owner of the tables could disable RLS; a superuser bypasses it.
    let admin_url = std::env::var(tenantkit_core::testing::POSTGRES_URL_VAR).expect("set");
    for url in [&test_db.owner_url, &admin_url] {
        match Database::connect(url).await {
            Err(Error::Config(message)) => {
                assert!(message.contains("row-level security"), "{message}")
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
        // Explicitly opting out (for migrations) is allowed.
        let owner = Database::connect_with(url, &DatabaseOptions::for_migrations())
            .await
            .expect("opt out");
        owner.close().await;
    }
}

#[tokio::test]
async fn a_user_scope_sees_its_own_memberships_in_every_tenant_and_no_others() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let db = &test_db.db;
    let (other, _) = tenants.a.add_user(db, tenantkit_core::Role::Viewer).await;
    let mine = db
        .memberships_of(tenants.b.owner.id)
        .await
        .expect("memberships");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].tenant_id, tenants.b.tenant.id);
    let theirs = db.memberships_of(other.id).await.expect("memberships");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].tenant_id, tenants.a.tenant.id);
    // The system scope reads exactly like a principal's.
    let mut tx = db
        .begin_read(&TenantScope::for_system(tenants.b.tenant.id))
        .await
        .expect("begin");
    assert_eq!(
        Project::list(&mut tx, &Default::default(), Default::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn a_user_scope_can_read_but_never_delete_its_memberships_elsewhere() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let mut conn = PgConnection::connect(&test_db.app_url)
        .await
        .expect("connect as app");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.user_id', $1, true)")
        .bind(tenants.a.owner.id.to_string())
        .execute(&mut *tx)
        .await
        .expect("set user");
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(visible, 1, "the user reads their own membership");
    let deleted = sqlx::query("DELETE FROM memberships")
        .execute(&mut *tx)
        .await
        .expect("delete");
    assert_eq!(
        deleted.rows_affected(),
        0,
        "but a user scope deletes nothing, not even their own"
    );
    let updated = sqlx::query("UPDATE memberships SET role = 'viewer'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 0);
}

#[tokio::test]
async fn teams_and_team_members_are_behind_row_level_security_too() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let db = &test_db.db;
    for fixture in [&tenants.a, &tenants.b] {
        let mut tx = db.begin(&fixture.scope()).await.expect("begin");
        let team = tenantkit_core::Team::create(&mut tx, tenantkit_core::NewTeam::named("Core"))
            .await
            .expect("team");
        tx.add_team_member(team.id, fixture.owner.id)
            .await
            .expect("member");
        tx.commit().await.expect("commit");
    }
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let conn = pg(&mut tx);
    assert_eq!(count(conn, "SELECT count(*) FROM teams").await, 1);
    assert_eq!(count(conn, "SELECT count(*) FROM team_members").await, 1);
    // Writing B's owner into A's team is refused by the composite key to A's memberships,
    // and a row claiming tenant B by the RLS check.
    let b_team: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM teams WHERE tenant_id = $1")
            .bind(tenants.b.tenant.id)
            .fetch_optional(&mut *conn)
            .await
            .expect("select");
    assert_eq!(b_team, None, "B's team is invisible through A's scope");
    let err = sqlx::query(
        "INSERT INTO team_members (tenant_id, team_id, user_id, added_at) \
         SELECT $1, id, $2, now() FROM teams",
    )
    .bind(tenants.b.tenant.id)
    .bind(tenants.b.owner.id)
    .execute(&mut *conn)
    .await
    .expect_err("a row for tenant B is refused");
    assert!(
        err.to_string().contains("row-level security") || err.to_string().contains("foreign key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_project_can_never_point_at_another_tenants_team() {
    let Some(World { test_db, tenants }) = world().await else {
        return;
    };
    let db = &test_db.db;
    let mut tx = db.begin(&tenants.b.scope()).await.expect("begin");
    let b_team = tenantkit_core::Team::create(&mut tx, tenantkit_core::NewTeam::named("Theirs"))
        .await
        .expect("team");
    tx.commit().await.expect("commit");
    // Past the repository's check, straight through A's connection: the composite key
    // (tenant_id, team_id) refuses B's team.
    let mut tx = db.begin(&tenants.a.scope()).await.expect("begin");
    let err = sqlx::query("UPDATE projects SET team_id = $1")
        .bind(b_team.id)
        .execute(pg(&mut tx))
        .await
        .expect_err("another tenant's team");
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_foreign_key_violation()),
        "{err}"
    );
}
