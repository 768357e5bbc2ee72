//! Benchmarks: JWT sign/verify per algorithm, the verified-token cache (hit and miss), the
//! auth layer's per-request overhead, argon2 at the default parameters, refresh rotation per
//! store, and rotation under contention (many sessions rotating at once: the write path).
//!
//! `cargo bench -p tenantkit-auth` (PostgreSQL rotation runs when
//! `TENANTKIT_TEST_POSTGRES_URL` is set, e.g. inside `bash scripts/test.sh --no-run` shells).
#![allow(missing_docs)] // criterion's macros generate undocumented items.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tenantkit_auth::{
    AccessTokens, Algorithm, JwtAuthLayer, JwtConfig, KeySet, MemorySessionStore, Password,
    PasswordHasher, RefreshConfig, RefreshSessions, RefreshToken, SessionStore, SigningKey,
};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Principal, Role, SessionId, TenantId, UserId};
use tower::{Layer as _, Service as _, ServiceExt as _};

const RSA_PEM: &[u8] = include_bytes!("../tests/fixtures/test-only-rsa.pem");
const EC_PEM: &[u8] = include_bytes!("../tests/fixtures/test-only-ec.pem");

fn principal() -> Principal {
    Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Member,
        ["projects:read".to_owned()],
        SessionId::new(),
    )
}

fn jwt(c: &mut Criterion) {
    let keys = [
        ("EdDSA", SigningKey::generate_ed25519().expect("key")),
        (
            "RS256",
            SigningKey::from_pem(Algorithm::RS256, RSA_PEM).expect("key"),
        ),
        (
            "ES256",
            SigningKey::from_pem(Algorithm::ES256, EC_PEM).expect("key"),
        ),
        ("HS256", SigningKey::hmac("bench", &[7u8; 32]).expect("key")),
    ];
    let who = principal();
    let mut group = c.benchmark_group("jwt");
    for (name, key) in keys {
        let tokens = AccessTokens::new(KeySet::new(key), JwtConfig::new("iss", "aud"));
        let token = tokens.issue(&who).expect("issue").token;
        group.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| tokens.issue(black_box(&who)).expect("issue"))
        });
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| tokens.verify(black_box(&token)).expect("verify"))
        });
    }
    group.finish();
}

/// The verified-token cache: a hit is a hash and a shard lookup; a miss is a full signature
/// check plus the insert.
fn token_cache(c: &mut Criterion) {
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("iss", "aud"),
    );
    let who = principal();
    let token = tokens.issue(&who).expect("issue").token;
    tokens.verify(&token).expect("warm");
    let mut group = c.benchmark_group("token_cache");
    group.bench_function("hit/EdDSA", |b| {
        b.iter(|| tokens.verify(black_box(&token)).expect("verify"))
    });
    group.bench_function("miss/EdDSA", |b| {
        b.iter_batched(
            || tokens.issue(&who).expect("issue").token,
            |fresh| tokens.verify(&fresh).expect("verify"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

async fn ok(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::default()))
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("iss", "aud"),
    );
    let bearer = format!(
        "Bearer {}",
        tokens.issue(&principal()).expect("issue").token
    );
    let request = || {
        Request::builder()
            .header(http::header::AUTHORIZATION, bearer.as_str())
            .body(Full::default())
            .expect("request")
    };
    let mut group = c.benchmark_group("layer");
    group.bench_function("bare_service", |b| {
        let mut service = tower::service_fn(ok);
        b.iter_batched(
            request,
            |r| runtime.block_on(service.call(r)).expect("call"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("jwt_auth_layer/EdDSA", |b| {
        let service = JwtAuthLayer::new(tokens.clone()).layer(tower::service_fn(ok));
        b.iter_batched(
            request,
            |r| runtime.block_on(service.clone().oneshot(r)).expect("call"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn argon2(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hasher = PasswordHasher::new();
    let password = Password::new("correct horse battery staple");
    let hash = runtime.block_on(hasher.hash(&password)).expect("hash");
    let mut group = c.benchmark_group("argon2id_default");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.iter(|| runtime.block_on(hasher.hash(&password)).expect("hash"))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            runtime
                .block_on(hasher.verify(&password, Some(&hash)))
                .expect("verify")
        })
    });
    group.bench_function("verify_unknown_account", |b| {
        b.iter(|| {
            runtime
                .block_on(hasher.verify(&password, None))
                .expect("verify")
        })
    });
    group.finish();
}

fn rotation<S: SessionStore>(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    sessions: RefreshSessions<S>,
    user: UserId,
    tenant: TenantId,
) {
    let (_, mut token) = runtime
        .block_on(sessions.start(user, tenant, 0))
        .expect("start");
    c.bench_function(&format!("refresh_rotation/{name}"), |b| {
        b.iter(|| {
            token = runtime
                .block_on(sessions.refresh(&token))
                .expect("refresh")
                .1;
        })
    });
}

/// `CONTENDED` sessions rotating at the same moment, each on its own chain: on SQLite every
/// one of them goes through the single writer connection, on PostgreSQL through the pool.
/// One iteration is one round of `CONTENDED` concurrent rotations.
fn contended<S: SessionStore + Send + Sync + 'static>(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    sessions: RefreshSessions<S>,
    user: UserId,
    tenant: TenantId,
) {
    const CONTENDED: usize = 16;
    let sessions = std::sync::Arc::new(sessions);
    let mut chains: Vec<Option<RefreshToken>> = (0..CONTENDED)
        .map(|_| {
            runtime
                .block_on(sessions.start(user, tenant, 0))
                .expect("start")
                .1
        })
        .map(Some)
        .collect();
    c.bench_function(&format!("refresh_contended_x{CONTENDED}/{name}"), |b| {
        b.iter(|| {
            chains = runtime.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for (i, token) in std::mem::take(&mut chains).into_iter().enumerate() {
                    let sessions = sessions.clone();
                    let token = token.expect("every chain has a token");
                    set.spawn(
                        async move { (i, sessions.refresh(&token).await.expect("refresh").1) },
                    );
                }
                let mut next: Vec<Option<RefreshToken>> = (0..CONTENDED).map(|_| None).collect();
                while let Some(done) = set.join_next().await {
                    let (i, token) = done.expect("task");
                    next[i] = Some(token);
                }
                next
            });
        })
    });
}

fn refresh(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let secret = b"bench-refresh-secret-0123456789abcdef";
    let memory = RefreshSessions::new(MemorySessionStore::new(), secret, RefreshConfig::default())
        .expect("sessions");
    rotation(
        c,
        "memory",
        &runtime,
        memory,
        UserId::new(),
        TenantId::new(),
    );
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(test_db) = runtime.block_on(TestDb::new(
            backend,
            &tenantkit_core::Migrations::new().with(tenantkit_auth::migrations()),
        )) else {
            continue;
        };
        let world = runtime.block_on(TwoTenants::create(&test_db.db));
        let sessions = RefreshSessions::new(test_db.db.clone(), secret, RefreshConfig::default())
            .expect("sessions");
        rotation(
            c,
            &backend.to_string(),
            &runtime,
            sessions.clone(),
            world.a.owner.id,
            world.a.tenant.id,
        );
        contended(
            c,
            &backend.to_string(),
            &runtime,
            sessions,
            world.a.owner.id,
            world.a.tenant.id,
        );
    }
}

criterion_group!(benches, jwt, token_cache, layer, argon2, refresh);
criterion_main!(benches);
