//! Upgrade: a database built by wave 1's single migration stream (the byte-identical files in
//! `migrations/wave1`, what every earlier release ran) and filled with data migrates to the
//! per-crate layout without checksum or ordering errors, keeps every row, and ends with the
//! same schema as a fresh database.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use tenantkit_auth::{SessionRecord, SessionStore as _};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    AuditEntry, AuditEntryId, Backend, Database, DatabaseOptions, Email, InvitationId, NewTeam,
    RawConn, Role, Team, TenantScope, TenantScoped, now, with_conn,
};
use tenantkit_server::domain::{NewProject, NewTask, Project, Task, all_migrations};

fn wave1(backend: Backend) -> Migrator {
    match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/wave1/sqlite"),
        _ => sqlx::migrate!("./migrations/wave1/postgres"),
    }
}

/// Applies `migrator` as the owner of the tables.
async fn run_as_owner(test_db: &TestDb, migrator: &Migrator) {
    match test_db.backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            migrator.run(&mut conn).await.expect("wave-1 migrations");
        }
        _ => {
            let mut conn = sqlx::PgConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            migrator.run(&mut conn).await.expect("wave-1 migrations");
        }
    }
}

/// What the wave-1 database holds, to find again after the upgrade.
struct Filled {
    world: TwoTenants,
    project: Project,
    task: Task,
    team: Team,
    session: SessionRecord,
    session_hash: Vec<u8>,
    invitation_hash: [u8; 32],
}

/// Fills a wave-1 database through the application role, as a wave-1 server would have.
async fn fill(test_db: &TestDb) -> Filled {
    // Wave 1 had no RLS on sessions and invitations, which today's start-up check refuses:
    // connect without it to write the old data.
    let db = Database::connect_with(
        &test_db.app_url,
        &DatabaseOptions {
            require_rls_safe_role: false,
            ..DatabaseOptions::default()
        },
    )
    .await
    .expect("app role");
    let world = TwoTenants::create(&db).await;
    let (member, _) = world.a.add_user(&db, Role::Member).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let team = Team::create(
        &mut tx,
        NewTeam {
            name: "Platform".into(),
            description: Some("the old team".into()),
        },
    )
    .await
    .expect("team");
    tx.add_team_member(team.id, member.id).await.expect("join");
    let project = Project::create(
        &mut tx,
        NewProject {
            name: "Legacy".into(),
            description: Some("from wave 1".into()),
            team_id: Some(team.id),
            restricted: true,
        },
    )
    .await
    .expect("project");
    let task = Task::create(&mut tx, NewTask::new(project.id, "Carry over"))
        .await
        .expect("task");
    // The audit entry as wave 1 wrote it (no anchor column yet).
    let mut entry = AuditEntry {
        id: AuditEntryId::new(),
        seq: 1,
        at: now(),
        actor_id: Some(world.a.owner.id),
        action: "project.created".into(),
        target_type: Some("project".into()),
        target_id: Some(project.id.to_string()),
        ip: Some("203.0.113.9".into()),
        user_agent: None,
        details: "{}".into(),
        prev_hash: vec![0u8; 32],
        hash: Vec::new(),
        anchor: None,
    };
    entry.hash = entry.expected_hash(world.a.tenant.id);
    let tenant_a = world.a.tenant.id;
    with_conn!(&mut tx, |c| {
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, seq, at, actor_id, action, target_type, \
             target_id, ip, user_agent, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(entry.id)
        .bind(tenant_a)
        .bind(entry.seq)
        .bind(entry.at)
        .bind(entry.actor_id)
        .bind(&entry.action)
        .bind(&entry.target_type)
        .bind(&entry.target_id)
        .bind(&entry.ip)
        .bind(&entry.user_agent)
        .bind(&entry.details)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(c)
        .await
        .map(drop)
    })
    .expect("audit");
    let invitation_hash = [7u8; 32];
    // As wave 1 stored invitations (no operator flag yet).
    let owner = world.a.owner.id;
    with_conn!(&mut tx, |c| {
        sqlx::query(
            "INSERT INTO invitations (id, tenant_id, email, role, token_hash, invited_by, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(InvitationId::new())
        .bind(tenant_a)
        .bind(Email::parse("new@alpha.test").expect("email"))
        .bind(Role::Viewer.as_str())
        .bind(&invitation_hash[..])
        .bind(owner)
        .bind(now())
        .bind(now() + Duration::from_secs(3600))
        .execute(c)
        .await
        .map(drop)
    })
    .expect("invitation");
    tx.commit().await.expect("commit");
    let at = now();
    let session = SessionRecord::new(
        world.a.owner.id,
        world.a.tenant.id,
        at,
        at + Duration::from_secs(3600),
    );
    let session_hash = b"wave-1-refresh-token-hash-0123456".to_vec();
    // As wave 1 stored sessions (no credentials epoch yet).
    let mut tx = db.begin_system().await.expect("begin");
    with_conn!(&mut tx, |c| {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, tenant_id, created_at, last_used_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session.id)
        .bind(session.user_id)
        .bind(session.tenant_id)
        .bind(session.created_at)
        .bind(session.last_used_at)
        .bind(session.expires_at)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
             VALUES ($1, $2, 1, $3)",
        )
        .bind(&session_hash)
        .bind(session.id)
        .bind(session.created_at)
        .execute(&mut *c)
        .await
        .map(drop)
    })
    .expect("session");
    tx.commit().await.expect("commit");
    db.close().await;
    Filled {
        world,
        project,
        task,
        team,
        session,
        session_hash,
        invitation_hash,
    }
}

/// Everything written before the upgrade is still there, through today's APIs.
async fn assert_kept(db: &Database, filled: &Filled) {
    let a = &filled.world.a;
    let mut tx = db.begin_read(&a.scope()).await.expect("begin");
    assert_eq!(
        Project::get(&mut tx, filled.project.id)
            .await
            .expect("project"),
        filled.project
    );
    assert_eq!(
        Task::get(&mut tx, filled.task.id).await.expect("task"),
        filled.task
    );
    assert_eq!(
        Team::get(&mut tx, filled.team.id).await.expect("team"),
        filled.team
    );
    let members = tx
        .team_members(filled.team.id, Default::default())
        .await
        .expect("team members");
    assert_eq!(members.items.len(), 1);
    assert_eq!(
        tx.verify_audit_chain(None, None).await.expect("verify"),
        None
    );
    assert_eq!(tx.audit_entries(0, 10).await.expect("entries").len(), 1);
    tx.commit().await.expect("commit");
    assert_eq!(
        db.memberships_of(a.owner.id)
            .await
            .expect("memberships")
            .len(),
        1
    );
    let (_, session) = db
        .find(&filled.session_hash)
        .await
        .expect("find")
        .expect("the refresh token still works");
    assert_eq!(session, filled.session);
    let invitation = db
        .find_open_invitation(&filled.invitation_hash, now())
        .await
        .expect("lookup")
        .expect("the invitation still works");
    assert_eq!(invitation.tenant_id, a.tenant.id);
    let b = TenantScope::for_system(filled.world.b.tenant.id);
    let mut tx = db.begin_read(&b).await.expect("begin");
    assert_eq!(
        Project::find(&mut tx, filled.project.id)
            .await
            .expect("find"),
        None
    );
}

/// The schema as a set of comparable lines: tables and columns, indexes, constraints,
/// policies and functions.
async fn schema(test_db: &TestDb) -> BTreeSet<String> {
    let mut db = test_db.db.begin_system_read().await.expect("begin");
    match db.raw() {
        RawConn::Sqlite(conn) => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT m.name || '.' || c.name, c.type || ' notnull=' || c.\"notnull\" || \
                        ' default=' || coalesce(c.dflt_value, '') || ' pk=' || c.pk \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                   AND m.name <> '_sqlx_migrations' \
                 UNION ALL \
                 SELECT 'index ' || name, coalesce(sql, '') FROM sqlite_master \
                 WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%' \
                 UNION ALL \
                 SELECT 'fk ' || m.name || '.' || f.\"from\", f.\"table\" || '.' || \
                        coalesce(f.\"to\", '') || ' ' || f.on_delete \
                 FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
                 WHERE m.type = 'table'",
            )
            .fetch_all(conn)
            .await
            .expect("sqlite schema");
            rows.into_iter().map(|(a, b)| format!("{a}: {b}")).collect()
        }
        RawConn::Postgres(conn) => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT table_name || '.' || column_name, data_type || ' null=' || is_nullable \
                        || ' default=' || coalesce(column_default, '') \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                   AND table_name <> '_sqlx_migrations' \
                 UNION ALL \
                 SELECT 'index ' || indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' \
                   AND tablename <> '_sqlx_migrations' \
                 UNION ALL \
                 SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname, \
                        pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE connamespace = 'public'::regnamespace \
                   AND conrelid::regclass::text <> '_sqlx_migrations' \
                 UNION ALL \
                 SELECT 'policy ' || tablename || ' ' || policyname, cmd || ' ' || \
                        array_to_string(roles, ',') || ' ' || coalesce(qual, '') || ' ' || \
                        coalesce(with_check, '') FROM pg_policies WHERE schemaname = 'public' \
                 UNION ALL \
                 SELECT 'rls ' || relname, relrowsecurity::text || relforcerowsecurity::text \
                 FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' \
                 UNION ALL \
                 SELECT 'function ' || proname, pg_get_function_identity_arguments(oid) || ' ' || \
                        prosecdef::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
            )
            .fetch_all(conn)
            .await
            .expect("postgres schema");
            rows.into_iter().map(|(a, b)| format!("{a}: {b}")).collect()
        }
        #[allow(unreachable_patterns)] // Both backends are enabled in this crate.
        _ => unreachable!("both backends are enabled"),
    }
}

/// The versions recorded as applied, read as the owner (the application role may not).
async fn applied_versions(test_db: &TestDb) -> Vec<(i64, bool)> {
    let sql = "SELECT version, success FROM _sqlx_migrations ORDER BY version";
    match test_db.backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            sqlx::query_as(sql)
                .fetch_all(&mut c)
                .await
                .expect("versions")
        }
        _ => {
            let mut c = sqlx::PgConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            sqlx::query_as(sql)
                .fetch_all(&mut c)
                .await
                .expect("versions")
        }
    }
}

async fn a_wave1_database_upgrades_and_keeps_its_data(backend: Backend) {
    let Some(mut test_db) = TestDb::empty(backend).await else {
        return;
    };
    run_as_owner(&test_db, &wave1(backend)).await;
    let filled = fill(&test_db).await;

    test_db.migrate_as_owner(&all_migrations()).await;
    // Twice: the adopted versions are recorded with their checksums, so a second run
    // validates them like any other and applies nothing.
    test_db.migrate_as_owner(&all_migrations()).await;
    test_db.db = test_db
        .reconnect()
        .await
        .expect("today's start-up checks pass on the upgraded database");
    assert_kept(&test_db.db, &filled).await;

    let versions = applied_versions(&test_db).await;
    assert!(versions.iter().all(|(_, ok)| *ok), "{versions:?}");
    let numbers: Vec<i64> = versions.iter().map(|(v, _)| *v).collect();
    for expected in [
        1, 2, 3, 4, 5, 6, 1001, 1002, 1003, 1004, 2001, 2002, 10001, 10002,
    ] {
        assert!(numbers.contains(&expected), "{expected} in {numbers:?}");
    }

    let fresh = TestDb::new(backend, &all_migrations())
        .await
        .expect("a fresh database");
    let (upgraded, fresh) = (schema(&test_db).await, schema(&fresh).await);
    let only_upgraded: Vec<_> = upgraded.difference(&fresh).collect();
    let only_fresh: Vec<_> = fresh.difference(&upgraded).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh one:\n only upgraded: {only_upgraded:#?}\n \
         only fresh: {only_fresh:#?}"
    );
    assert!(upgraded.len() > 50, "the comparison saw the schema");
}

async fn an_older_wave1_release_completes_its_history_first(backend: Backend) {
    let Some(mut test_db) = TestDb::empty(backend).await else {
        return;
    };
    // A database of a release that had only migrations 1 to 4.
    let dir = tempfile::tempdir().expect("tempdir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "migrations/wave1/{}",
        match backend {
            Backend::Sqlite => "sqlite",
            _ => "postgres",
        }
    ));
    for file in std::fs::read_dir(&source).expect("wave-1 folder") {
        let path = file.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < "0005" {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    let older = Migrator::new(dir.path()).await.expect("older release");
    run_as_owner(&test_db, &older).await;

    test_db.migrate_as_owner(&all_migrations()).await;
    test_db.db = test_db.reconnect().await.expect("start-up checks pass");
    let numbers: Vec<i64> = applied_versions(&test_db)
        .await
        .iter()
        .map(|(v, _)| *v)
        .collect();
    for expected in [5, 6, 1003, 1004, 10002] {
        assert!(numbers.contains(&expected), "{expected} in {numbers:?}");
    }
    // And it works: a team, a restricted project, an invitation.
    let world = TwoTenants::create(&test_db.db).await;
    let mut tx = test_db.db.begin(&world.a.scope()).await.expect("begin");
    let team = Team::create(&mut tx, NewTeam::named("Later"))
        .await
        .expect("team");
    Project::create(
        &mut tx,
        NewProject {
            name: "Restricted".into(),
            team_id: Some(team.id),
            restricted: true,
            ..NewProject::default()
        },
    )
    .await
    .expect("project");
    tx.commit().await.expect("commit");
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_core::testing::backend;
    a_wave1_database_upgrades_and_keeps_its_data,
    an_older_wave1_release_completes_its_history_first,
);
