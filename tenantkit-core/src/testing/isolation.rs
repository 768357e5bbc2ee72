//! The isolation conformance suite a tenant table must pass.

use std::fmt;

use super::{TestDb, TwoTenants};
use crate::Backend;

/// The isolation conformance suite every tenant table must pass, given a record tenant A
/// created (and committed) in `table`:
///
/// - tenant B cannot find, get, list, update or delete it: each answers exactly like a
///   missing record, and A's record is unchanged afterwards;
/// - on PostgreSQL, with the application's tenant filter deliberately left out, row-level
///   security still hides it: unfiltered `SELECT`, `UPDATE` and `DELETE` through B's scope see
///   or touch none of A's rows, and A's scope cannot move a row to B (`WITH CHECK`).
///
/// # Panics
/// When any of these does not hold.
pub async fn assert_tenant_isolation<T>(
    test_db: &TestDb,
    world: &TwoTenants,
    table: &str,
    record_of_a: &T,
    patch: impl Fn() -> T::Patch,
) where
    T: crate::TenantScoped + PartialEq + fmt::Debug,
    T::Id: PartialEq,
{
    use crate::{Error, Limit, PageRequest};
    let db = &test_db.db;
    let id = record_of_a.id();
    let mut tx = db.begin(&world.b.scope()).await.expect("begin as B");
    assert_eq!(
        T::find(&mut tx, id).await.expect("find"),
        None,
        "B finds A's record"
    );
    assert!(
        matches!(T::get(&mut tx, id).await, Err(Error::NotFound)),
        "B gets A's record"
    );
    let page = T::list(
        &mut tx,
        &Default::default(),
        PageRequest::first(Limit::new(100).expect("limit")),
    )
    .await
    .expect("list");
    assert!(
        page.items.iter().all(|r| r.id() != id),
        "B lists A's record"
    );
    assert!(
        matches!(
            T::update(&mut tx, id, None, patch()).await,
            Err(Error::NotFound)
        ),
        "B updates A's record"
    );
    assert!(
        matches!(T::delete(&mut tx, id, None).await, Err(Error::NotFound)),
        "B deletes A's record"
    );
    drop(tx);
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin as A");
    assert_eq!(
        T::find(&mut tx, id).await.expect("find").as_ref(),
        Some(record_of_a),
        "A's record changed"
    );
    drop(tx);
    if test_db.backend() == Backend::Postgres {
        assert_rls_hides(test_db, world, table).await;
    }
}

/// The PostgreSQL half of [`assert_tenant_isolation`]: unfiltered statements through B's
/// scope see and touch none of `table`'s rows of A (which must have at least one), and A's
/// scope cannot move its rows to B.
///
/// # Panics
/// When row-level security lets any of them through, or the database is not PostgreSQL.
pub async fn assert_rls_hides(test_db: &TestDb, world: &TwoTenants, table: &str) {
    // Without `sqlite`, `RawConn` has only the PostgreSQL variant.
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)]
    {
        let db = &test_db.db;
        let count = format!("SELECT count(*) FROM {table}");
        let mut a = db.begin(&world.a.scope()).await.expect("begin as A");
        let crate::RawConn::Postgres(conn) = a.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let of_a: i64 = sqlx::query_scalar(&count)
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        assert!(of_a > 0, "A has rows in {table}");
        // WITH CHECK: A cannot hand a row to B.
        let moved = sqlx::query(&format!("UPDATE {table} SET tenant_id = $1"))
            .bind(world.b.tenant.id)
            .execute(&mut *conn)
            .await;
        assert!(moved.is_err(), "A moved rows of {table} to B");
        drop(a);

        let mut b = db.begin(&world.b.scope()).await.expect("begin as B");
        let crate::RawConn::Postgres(conn) = b.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let by_id: i64 = sqlx::query_scalar(&format!("{count} WHERE tenant_id = $1"))
            .bind(world.a.tenant.id)
            .fetch_one(&mut *conn)
            .await
            .expect("count A's rows through B");
        assert_eq!(
            by_id, 0,
            "B reads A's rows of {table} by asking for A's tenant id"
        );
        let all: i64 = sqlx::query_scalar(&count)
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        let own: i64 = sqlx::query_scalar(&format!("{count} WHERE tenant_id = $1"))
            .bind(world.b.tenant.id)
            .fetch_one(&mut *conn)
            .await
            .expect("count B's rows");
        assert_eq!(
            all, own,
            "an unfiltered read through B's scope sees other tenants' rows of {table}"
        );
        let updated = sqlx::query(&format!(
            "UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1"
        ))
        .bind(world.a.tenant.id)
        .execute(&mut *conn)
        .await
        .expect("update of A's rows");
        let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(world.a.tenant.id)
            .execute(&mut *conn)
            .await
            .expect("unfiltered delete");
        assert_eq!(
            (updated.rows_affected(), deleted.rows_affected()),
            (0, 0),
            "B changed A's rows of {table}"
        );
        drop(b);

        let mut a = db.begin_read(&world.a.scope()).await.expect("begin as A");
        let crate::RawConn::Postgres(conn) = a.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let after: i64 = sqlx::query_scalar(&count)
            .fetch_one(conn)
            .await
            .expect("count");
        assert_eq!(after, of_a, "A's rows of {table} survived B");
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (test_db, world, table);
        panic!("row-level security needs the postgres feature");
    }
}
