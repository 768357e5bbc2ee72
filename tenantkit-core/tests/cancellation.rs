//! A request that is dropped mid-transaction (its client went away) must never leave its
//! connection unusable: every later write still works. On SQLite all writes share one
//! connection, so a transaction left open there would fail every write until a restart.

use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Migrations, TenantScope};

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &Migrations::new()).await
}

async fn cancelled_transactions_never_poison_later_writes(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let scope = TenantScope::for_system(world.a.tenant.id);
    // Abort begins at many points: before the BEGIN is sent, while it runs, while the
    // connection checks it, inside the transaction, during the commit; many at once, so some
    // wait for the connection and some hold it.
    for round in 0..150u32 {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (db, scope) = (test_db.db.clone(), scope);
                tokio::spawn(async move {
                    let mut tx = db.begin(&scope).await?;
                    let _ = tx.tenant().await?;
                    tx.commit().await
                })
            })
            .collect();
        let wait = std::time::Duration::from_micros(u64::from(round % 13) * 40);
        tokio::time::sleep(wait).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if round % 25 == 0 {
            let tx = test_db
                .db
                .begin(&scope)
                .await
                .expect("a write after cancellations");
            tx.commit().await.expect("commit");
        }
    }
    for _ in 0..3 {
        let mut tx = test_db
            .db
            .begin(&scope)
            .await
            .expect("a write after cancellations");
        assert_eq!(tx.tenant().await.expect("read").id, world.a.tenant.id);
        tx.commit().await.expect("commit");
    }
}

tenantkit_core::backend_tests!(
    fixture = db;
    cancelled_transactions_never_poison_later_writes
);
