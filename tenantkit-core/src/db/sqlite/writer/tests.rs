//! The writer's transactions begun ahead: taken by the next writer, limited to four in a row,
//! ended when nobody takes them, never visible to autocommit users.

use std::str::FromStr as _;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::SqliteConnectOptions;

use super::*;
use crate::db::DatabaseOptions;
use crate::db::sqlite::{SqlitePools, connect};

async fn database() -> (tempfile::TempDir, SqlitePools, SqliteConnectOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let pools = connect(&url, &DatabaseOptions::default())
        .await
        .expect("connect");
    let mut conn = pools.writer.lock().await.expect("lock");
    sqlx::query("CREATE TABLE t (x INTEGER NOT NULL)")
        .execute(&mut *conn)
        .await
        .expect("table");
    drop(conn);
    // Another process, as the admin commands are: it waits for the write lock (long
    // enough for any machine; the settling task ends it within milliseconds).
    let other = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .busy_timeout(Duration::from_secs(120));
    (dir, pools, other)
}

async fn insert(conn: &mut SqliteConnection, x: i64) {
    sqlx::query("INSERT INTO t (x) VALUES ($1)")
        .bind(x)
        .execute(conn)
        .await
        .expect("insert");
}

async fn count(options: &SqliteConnectOptions) -> i64 {
    let mut conn = options.connect().await.expect("other connection");
    sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_commit_with_a_writer_waiting_begins_its_transaction() {
    let (_dir, pools, other) = database().await;
    let writer = pools.writer.clone();
    let mut first = writer.begin().await.expect("begin");
    insert(&mut first, 1).await;
    let next = tokio::spawn({
        let writer = writer.clone();
        async move {
            let mut second = writer.begin().await.expect("begin");
            insert(&mut second, 2).await;
            second.commit().await.expect("commit");
        }
    });
    while writer.waiting.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    first.commit().await.expect("commit");
    next.await.expect("second writer");
    assert_eq!(writer.taken_ahead.load(Ordering::Relaxed), 1);
    assert_eq!(count(&other).await, 2, "both committed");
    // Nobody waited for the second: its commit began nothing.
    assert!(!writer.begun_ahead().await);
    pools.close().await;
}

#[tokio::test]
async fn every_fifth_commit_under_sustained_writes_leaves_the_lock_free() {
    let (_dir, pools, other) = database().await;
    let writer = pools.writer.clone();
    // Writers always waiting: commits begin ahead four times in a row, then one commits
    // alone (another process's busy handler gets its chance), and the run starts again.
    let always = Waiting::new(&writer.waiting);
    for x in 0..11 {
        let mut tx = writer.begin().await.expect("begin");
        insert(&mut tx, x).await;
        tx.commit().await.expect("commit");
    }
    drop(always);
    // Begins 2-5 and 7-10 took a transaction begun ahead; 1, 6 and 11 began their own.
    assert_eq!(writer.taken_ahead.load(Ordering::Relaxed), 8);
    assert_eq!(count(&other).await, 11);
    pools.close().await;
}

#[tokio::test]
async fn a_transaction_begun_ahead_for_nobody_never_keeps_others_from_writing() {
    let (_dir, pools, other) = database().await;
    let writer = pools.writer.clone();
    let begin_ahead = || async {
        let mut tx = writer.begin().await.expect("begin");
        insert(&mut tx, 1).await;
        // A writer that waits, then gives up (its request dropped) after the commit.
        let gave_up = Waiting::new(&writer.waiting);
        tx.commit().await.expect("commit");
        drop(gave_up);
        assert!(writer.begun_ahead().await);
    };

    // Another process's write waits for the write lock, which the settling task frees.
    begin_ahead().await;
    let mut process = other.connect().await.expect("other connection");
    insert(&mut process, 10).await;
    process.close().await.expect("close");
    assert!(!writer.begun_ahead().await, "settled");

    // A statement in autocommit mode ends such a transaction first, so it commits.
    begin_ahead().await;
    let mut conn = writer.lock().await.expect("lock");
    insert(&mut conn, 20).await;
    assert_eq!(count(&other).await, 4, "the statement committed by itself");
    drop(conn);

    // A transaction dropped unfinished after taking one is rolled back, as any other.
    begin_ahead().await;
    let mut dropped = writer.begin().await.expect("begin");
    insert(&mut dropped, 30).await;
    drop(dropped);
    let mut conn = writer.lock().await.expect("lock");
    insert(&mut conn, 40).await;
    drop(conn);
    let rows: Vec<i64> = {
        let mut conn = other.connect().await.expect("other connection");
        sqlx::query_scalar("SELECT x FROM t ORDER BY rowid")
            .fetch_all(&mut conn)
            .await
            .expect("rows")
    };
    assert_eq!(rows, [1, 10, 1, 20, 1, 40]);
    pools.close().await;
}
