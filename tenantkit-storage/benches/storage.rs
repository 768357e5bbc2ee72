//! Benchmarks: signing an upload intent on both backends.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use tenantkit_core::TenantId;
use tenantkit_storage::{
    LocalStore, ObjectId, ObjectKey, ObjectStore, S3Config, S3Store, Sha256, UploadIntent,
    UploadMethod,
};
use time::Duration;

fn sign(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let local =
        LocalStore::new(dir.path(), "http://127.0.0.1/v1/storage", &[7u8; 32]).expect("store");
    let s3 = S3Store::new(S3Config {
        bucket: "bench".into(),
        region: "us-east-1".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        access_key: "AKIDEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    });
    let key = ObjectKey::new(TenantId::new(), ObjectId::new());
    let intent = UploadIntent {
        filename: "photo.png".into(),
        content_type: "image/png".into(),
        size: 123_456,
        sha256: Sha256::of(b"bench"),
    };
    let now = time::OffsetDateTime::now_utc();
    let ttl = Duration::minutes(15);
    let mut group = c.benchmark_group("sign_upload");
    group.bench_function("local/PUT", |b| {
        b.iter(|| {
            runtime
                .block_on(local.sign_upload(&key, &intent, UploadMethod::Put, now, ttl))
                .expect("sign")
        })
    });
    group.bench_function("s3/PUT", |b| {
        b.iter(|| {
            runtime
                .block_on(s3.sign_upload(&key, &intent, UploadMethod::Put, now, ttl))
                .expect("sign")
        })
    });
    group.bench_function("s3/POST", |b| {
        b.iter(|| {
            runtime
                .block_on(s3.sign_upload(&key, &intent, UploadMethod::Post, now, ttl))
                .expect("sign")
        })
    });
    group.finish();
}

criterion_group!(benches, sign);
criterion_main!(benches);
