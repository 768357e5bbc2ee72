//! PostgreSQL's connections: a connection serves transaction after transaction of every kind
//! with exactly the settings of each (a finished read's `COMMIT` travels with the next
//! `BEGIN`), a finished read does not keep its table locks, and a cancelled statement, a
//! dropped transaction or a connection the server killed leave the next transaction clean.
//! Each test holds the database to one connection, so every transaction reuses it.

#![cfg(feature = "postgres")]

use std::time::Duration;

use tenantkit_core::testing::{POSTGRES_URL_VAR, TestDb, TwoTenants, required_service};
use tenantkit_core::{
    Backend, Database, DatabaseOptions, Migrations, NewTeam, Team, TenantScoped, Transaction,
    with_conn,
};

async fn postgres() -> Option<TestDb> {
    TestDb::new(Backend::Postgres, &Migrations::new()).await
}

/// The test database through one connection.
async fn one_connection(test_db: &TestDb) -> Database {
    Database::connect_with(
        &test_db.app_url,
        &DatabaseOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(60),
            ..DatabaseOptions::default()
        },
    )
    .await
    .expect("connect with one connection")
}

/// What a transaction runs under: (tenant, user, system, read only), and the teams it sees.
async fn seen<T: Transaction>(tx: &mut T) -> ((String, String, String, String), i64) {
    with_conn!(tx, |c| {
        let settings = sqlx::query_as(
            "SELECT current_setting('app.tenant_id', true), current_setting('app.user_id', true), \
             current_setting('app.system', true), current_setting('transaction_read_only')",
        )
        .fetch_one(&mut *c)
        .await?;
        let teams = sqlx::query_scalar("SELECT count(*) FROM teams")
            .fetch_one(&mut *c)
            .await?;
        Ok::<_, sqlx::Error>((settings, teams))
    })
    .expect("read the settings")
}

/// The PostgreSQL backend (server process) of the transaction's connection.
async fn backend_pid<T: Transaction>(tx: &mut T) -> i32 {
    with_conn!(tx, |c| {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(c)
            .await
    })
    .expect("pid")
}

fn settings(
    tenant: &str,
    user: &str,
    system: &str,
    read_only: bool,
) -> (String, String, String, String) {
    let on = if read_only { "on" } else { "off" };
    (tenant.into(), user.into(), system.into(), on.into())
}

#[tokio::test]
async fn one_connection_serves_every_kind_in_turn_with_only_its_own_settings() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    for (fixture, name) in [(&world.a, "Alpha team"), (&world.b, "Beta team")] {
        let mut tx = test_db.db.begin(&fixture.scope()).await.expect("begin");
        Team::create(&mut tx, NewTeam::named(name))
            .await
            .expect("team");
        tx.commit().await.expect("commit");
    }
    let db = one_connection(&test_db).await;
    let (a, b) = (world.a.tenant.id.to_string(), world.b.tenant.id.to_string());
    let user = world.a.owner.id.to_string();
    for round in 0..3 {
        // Reads, each ended by commit (its COMMIT rides on the next BEGIN) or by drop.
        let mut tx = db.begin_read(&world.a.scope()).await.expect("read A");
        assert_eq!(
            seen(&mut tx).await,
            (settings(&a, "", "", true), 1),
            "round {round}"
        );
        tx.commit().await.expect("commit");
        let mut tx = db.begin_read(&world.b.scope()).await.expect("read B");
        assert_eq!(seen(&mut tx).await, (settings(&b, "", "", true), 1));
        drop(tx);
        let mut tx = db.begin_system_read().await.expect("system read");
        assert_eq!(seen(&mut tx).await, (settings("", "", "on", true), 0));
        tx.commit().await.expect("commit");
        let mut tx = db
            .begin_user_read(world.a.owner.id)
            .await
            .expect("user read");
        assert_eq!(seen(&mut tx).await, (settings("", &user, "", true), 0));
        tx.commit().await.expect("commit");
        // Writes: one committed, one dropped (rolled back), one that failed.
        let mut tx = db.begin(&world.b.scope()).await.expect("write B");
        assert_eq!(seen(&mut tx).await, (settings(&b, "", "", false), 1));
        tx.commit().await.expect("commit");
        let mut tx = db.begin(&world.a.scope()).await.expect("write A");
        Team::create(&mut tx, NewTeam::named("never committed"))
            .await
            .expect("team");
        drop(tx);
        let mut tx = db.begin(&world.a.scope()).await.expect("write A");
        let failed = with_conn!(&mut tx, |c| {
            sqlx::query("SELECT 1 / 0").execute(c).await.map(drop)
        });
        assert!(failed.is_err(), "division by zero fails");
        assert!(
            tx.commit().await.is_err(),
            "a failed transaction does not commit"
        );
        let mut tx = db.begin_system().await.expect("system write");
        assert_eq!(seen(&mut tx).await, (settings("", "", "on", false), 0));
        tx.commit().await.expect("commit");
    }
    let mut tx = db.begin_read(&world.a.scope()).await.expect("read A");
    assert_eq!(
        seen(&mut tx).await.1,
        1,
        "the dropped transactions' teams were rolled back"
    );
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_finished_read_soon_lets_go_of_its_table_locks() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    let db = one_connection(&test_db).await;
    let mut tx = db.begin_read(&world.a.scope()).await.expect("read A");
    seen(&mut tx).await;
    tx.commit().await.expect("commit");
    // Nothing else uses the connection: the settling task ends the read's transaction, so
    // the owner's exclusive lock is granted (it would wait out the lock timeout otherwise).
    test_db
        .execute_as_owner(
            "SET lock_timeout = '60s'; BEGIN; LOCK TABLE teams IN ACCESS EXCLUSIVE MODE; COMMIT",
        )
        .await;
}

#[tokio::test]
async fn cancelled_statements_and_killed_connections_leave_the_next_transaction_clean() {
    let Some(test_db) = postgres().await else {
        return;
    };
    let Some(admin_url) = required_service(POSTGRES_URL_VAR, "PostgreSQL") else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    let db = one_connection(&test_db).await;
    let b = world.b.tenant.id.to_string();

    // A request cancelled in the middle of a statement, inside a write transaction.
    let mut tx = db.begin(&world.a.scope()).await.expect("write A");
    Team::create(&mut tx, NewTeam::named("cancelled"))
        .await
        .expect("team");
    // (Were the machine so slow that the statement finished first, what follows holds too.)
    let _cut_off = tokio::time::timeout(Duration::from_millis(50), async {
        with_conn!(&mut tx, |c| {
            sqlx::query("SELECT pg_sleep(2)").execute(c).await.map(drop)
        })
    })
    .await;
    drop(tx);
    let mut tx = db.begin_read(&world.b.scope()).await.expect("read B");
    assert_eq!(seen(&mut tx).await, (settings(&b, "", "", true), 0));
    let pid = backend_pid(&mut tx).await;
    tx.commit().await.expect("commit");
    let mut tx = db.begin_read(&world.a.scope()).await.expect("read A");
    assert_eq!(
        seen(&mut tx).await.1,
        0,
        "the cancelled team was rolled back"
    );
    tx.commit().await.expect("commit");

    // The server ends the connection (a restart, an administrator).
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect as admin");
    admin
        .execute(format!("SELECT pg_terminate_backend({pid})").as_str())
        .await
        .expect("terminate");
    for _ in 0..600 {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .expect("activity");
        if alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await.ok();
    // Nothing of the next transaction has run when its BEGIN fails on the dead connection:
    // it gets a new one instead of the error.
    let mut tx = db
        .begin_read(&world.b.scope())
        .await
        .expect("a new connection");
    assert_eq!(seen(&mut tx).await, (settings(&b, "", "", true), 0));
    let new_pid = backend_pid(&mut tx).await;
    assert_ne!(new_pid, pid, "the killed connection was replaced");
    tx.commit().await.expect("commit");
}
