//! PostgreSQL row-level security over tenantkit-core's own tables, and the start-up check that
//! finds every tenant table in the catalog.

#![cfg(feature = "postgres")]

use std::time::Duration;

use tenantkit_core::testing::{TestDb, TwoTenants, assert_rls_hides};
use tenantkit_core::{
    Backend, Email, Error, Migrations, NewTeam, RawConn, Role, Team, TenantScoped, now, with_conn,
};

async fn postgres() -> Option<TestDb> {
    TestDb::new(Backend::Postgres, &Migrations::new()).await
}

/// Brownfield: an application's own table with a `tenant_id` column that nobody registered
/// does not stop start-up (issue 20: the check covered every table of the schema); once
/// registered, it is checked and refused until it is behind row-level security, and the
/// refusal names the table and the call that fixes it.
#[tokio::test]
async fn a_tenant_table_without_row_level_security_is_refused_at_start_up() {
    let Some(test_db) = postgres().await else {
        return;
    };
    test_db
        .execute_as_owner(
            "CREATE TABLE leaky_notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, body text); \
             GRANT SELECT ON leaky_notes TO tenantkit_app; \
             CREATE VIEW leaky_view AS SELECT id, tenant_id FROM leaky_notes; \
             GRANT SELECT ON leaky_view TO tenantkit_app",
        )
        .await;
    test_db
        .reconnect()
        .await
        .expect("an application's own table, not registered, does not stop start-up");
    test_db
        .execute_as_owner("SELECT tenantkit_register_tenant_table('leaky_notes')")
        .await;
    match test_db.reconnect().await {
        Err(Error::Config(message)) => {
            assert!(
                message.contains("leaky_notes"),
                "names the table: {message}"
            );
            assert!(
                message.contains("tenantkit_enable_tenant_rls")
                    && !message.contains("tenantkit-server"),
                "names the library's call, not the example's CLI: {message}"
            );
        }
        other => panic!("expected a refusal naming the table, got {other:?}"),
    }
    // Enabled but not forced (the owner would not be bound) is still refused.
    test_db
        .execute_as_owner("ALTER TABLE leaky_notes ENABLE ROW LEVEL SECURITY")
        .await;
    assert!(matches!(test_db.reconnect().await, Err(Error::Config(_))));
    // With core's helper the table gets ENABLE + FORCE and the tenant policy; the view over
    // it, now over a registered table, must run with the invoker's rights.
    test_db
        .execute_as_owner("SELECT tenantkit_enable_tenant_rls('leaky_notes')")
        .await;
    match test_db.reconnect().await {
        Err(Error::Config(message)) => assert!(message.contains("leaky_view"), "{message}"),
        other => panic!("expected the definer view to be refused, got {other:?}"),
    }
    test_db
        .execute_as_owner("ALTER VIEW leaky_view SET (security_invoker = true)")
        .await;
    test_db
        .reconnect()
        .await
        .expect("a protected tenant table passes the check");
}

/// Without tenantkit's migrations (no registry in the schema) the refusal names the library's
/// migration call.
#[tokio::test]
async fn a_schema_without_the_migrations_is_refused_naming_the_call() {
    let Some(test_db) = postgres().await else {
        return;
    };
    test_db
        .execute_as_owner(
            "ALTER TABLE tenantkit_tenant_tables RENAME TO tenantkit_tenant_tables_gone",
        )
        .await;
    match test_db.reconnect().await {
        Err(Error::Config(message)) => assert!(
            message.contains("Database::migrate") && !message.contains("tenantkit-server"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn open_policies_views_and_missing_tenant_policies_are_refused_at_start_up() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let test_db = &test_db;
    let refused = |what: &'static str| async move {
        match test_db.reconnect().await {
            Err(Error::Config(message)) => message,
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    };
    // RLS on, but no tenant policy: not a wall of the intended shape.
    test_db
        .execute_as_owner(
            "CREATE TABLE odd_notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL); \
             ALTER TABLE odd_notes ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE odd_notes FORCE ROW LEVEL SECURITY; \
             SELECT tenantkit_register_tenant_table('odd_notes')",
        )
        .await;
    assert!(refused("no tenant policy").await.contains("odd_notes"));
    test_db
        .execute_as_owner("SELECT tenantkit_enable_tenant_rls('odd_notes')")
        .await;
    test_db.reconnect().await.expect("now protected");
    // A policy that lets everything through, applying to everyone.
    test_db
        .execute_as_owner("CREATE POLICY everyone ON odd_notes USING (true)")
        .await;
    assert!(refused("open policy").await.contains("odd_notes.everyone"));
    test_db
        .execute_as_owner("DROP POLICY everyone ON odd_notes")
        .await;
    // A view over tenant rows that runs with its owner's rights skips RLS.
    test_db
        .execute_as_owner("CREATE VIEW odd_view AS SELECT id, tenant_id FROM odd_notes")
        .await;
    assert!(refused("definer view").await.contains("odd_view"));
    test_db
        .execute_as_owner("ALTER VIEW odd_view SET (security_invoker = true)")
        .await;
    test_db.reconnect().await.expect("an invoker view is fine");
}

#[tokio::test]
async fn core_tenant_tables_hide_other_tenants_rows_without_the_app_filter() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let (member, _) = world.a.add_user(db, Role::Member).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let team = Team::create(&mut tx, NewTeam::named("Platform"))
        .await
        .expect("team");
    tx.add_team_member(team.id, member.id).await.expect("join");
    tx.create_invitation(
        Email::parse("guest@alpha.test").expect("email"),
        Role::Viewer,
        Some(world.a.owner.id),
        &[1u8; 32],
        now() + Duration::from_secs(3600),
    )
    .await
    .expect("invitation");
    tx.commit().await.expect("commit");
    for table in ["memberships", "teams", "team_members", "invitations"] {
        assert_rls_hides(&test_db, &world, table).await;
    }
}

#[tokio::test]
async fn a_tenant_sees_and_changes_only_its_own_tenant_row() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    let mut b = test_db.db.begin(&world.b.scope()).await.expect("begin");
    let RawConn::Postgres(conn) = b.raw() else {
        panic!("PostgreSQL");
    };
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(visible, 1, "only its own tenant row");
    let renamed = sqlx::query("UPDATE tenants SET name = 'pwned' WHERE id = $1")
        .bind(world.a.tenant.id)
        .execute(&mut *conn)
        .await
        .expect("update");
    assert_eq!(
        renamed.rows_affected(),
        0,
        "another tenant's row cannot be changed"
    );
    drop(b);
    let a = test_db
        .db
        .find_tenant(world.a.tenant.id)
        .await
        .expect("find")
        .expect("tenant");
    assert_eq!(a.name, world.a.tenant.name);
}

#[tokio::test]
async fn invitations_are_reached_only_by_their_token_outside_their_tenant() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let hash = [9u8; 32];
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let invitation = tx
        .create_invitation(
            Email::parse("guest@alpha.test").expect("email"),
            Role::Member,
            Some(world.a.owner.id),
            &hash,
            now() + Duration::from_secs(3600),
        )
        .await
        .expect("invitation");
    tx.commit().await.expect("commit");
    // The system scope (where accept-by-token runs) cannot list invitations...
    let mut system = db.begin_system_read().await.expect("begin");
    let visible: i64 = with_conn!(&mut system, |c| {
        sqlx::query_scalar("SELECT count(*) FROM invitations")
            .fetch_one(c)
            .await
    })
    .expect("count");
    assert_eq!(
        visible, 0,
        "invitations are not readable outside their tenant"
    );
    drop(system);
    // ...nor can another tenant's scope, even naming the token hash...
    let mut b = db.begin_read(&world.b.scope()).await.expect("begin");
    let RawConn::Postgres(conn) = b.raw() else {
        panic!("PostgreSQL");
    };
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE token_hash = $1")
        .bind(&hash[..])
        .fetch_one(conn)
        .await
        .expect("count");
    assert_eq!(found, 0);
    drop(b);
    // ...but the holder of the token finds exactly its invitation, through the narrow
    // SECURITY DEFINER lookup, and nothing with a wrong token.
    let open = db
        .find_open_invitation(&hash, now())
        .await
        .expect("lookup")
        .expect("found by its token");
    assert_eq!(open.id, invitation.id);
    assert!(
        db.find_open_invitation(&[8u8; 32], now())
            .await
            .expect("lookup")
            .is_none()
    );
    // Expired ones are not open.
    assert!(
        db.find_open_invitation(&hash, now() + Duration::from_secs(7200))
            .await
            .expect("lookup")
            .is_none()
    );
}

/// Every table of core's migrations with a `tenant_id` column is registered (so the start-up
/// check covers it): the registry's backfill and `tenantkit_enable_tenant_rls` miss none.
#[tokio::test]
async fn every_core_table_with_a_tenant_id_is_registered() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let mut tx = test_db.db.begin_system_read().await.expect("begin");
    let unregistered: Vec<String> = with_conn!(&mut tx, |c| {
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
             AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
                         AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
             AND c.oid NOT IN (SELECT relid::oid FROM tenantkit_tenant_tables) ORDER BY 1",
        )
        .fetch_all(c)
        .await
    })
    .expect("query");
    assert!(unregistered.is_empty(), "{unregistered:?}");
}
