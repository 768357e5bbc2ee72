//! The hasher, the policy and the workers, against their claims.

use super::*;

#[test]
fn argon2_memory_is_always_its_own_mapping() {
    // 19 MiB (OWASP's m), a small cost and a cost above the threshold itself: the capacity
    // is past glibc's largest mmap threshold, only the blocks asked for are written.
    for blocks in [19 * 1024, 8, OWN_MAPPING_BLOCKS + 1] {
        let memory = argon2_memory(blocks);
        assert_eq!(memory.len(), blocks);
        assert!(memory.capacity() * argon2::Block::SIZE > 32 << 20);
    }
}

/// Occupies the hasher's only worker until the answer is sent on the returned channel.
async fn occupy(hasher: &PasswordHasher) -> std::sync::mpsc::Sender<()> {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let started = hasher.stats().started;
    let workers = Arc::clone(&hasher.inner);
    let gatekeeper = tokio::spawn(async move {
        workers
            .workers
            .run(move |_| {
                let _ = gate.recv();
            })
            .await
    });
    // Wait for the state, not for a time: the worker has taken the gate.
    while hasher.stats().started == started {
        assert!(!gatekeeper.is_finished(), "the gate was refused");
        tokio::task::yield_now().await;
    }
    release
}

/// With every worker busy and the queue full, the next hash is refused at once; the
/// waiting ones still finish; a cancelled waiter gives its place back; with no queue a
/// free worker still serves. Driven by the hasher's own counters, not by timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_instead_of_waiting() {
    let hasher = PasswordHasher::with_params(8, 1, 1)
        .expect("params")
        .with_concurrency(1)
        .with_queue_limit(2);
    let release = occupy(&hasher).await;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .hash(&Password::new("a long enough passphrase"))
                    .await
            })
        })
        .collect();
    while hasher.stats().waiting < 2 {
        tokio::task::yield_now().await;
    }
    let refused = hasher.hash(&Password::new("one more passphrase")).await;
    assert!(
        matches!(refused, Err(Error::Overloaded { retry_after }) if retry_after.as_secs() >= 1),
        "{refused:?}"
    );
    let refused = hasher
        .verify(&Password::new("one more passphrase"), None)
        .await;
    assert!(
        matches!(refused, Err(Error::Overloaded { .. })),
        "{refused:?}"
    );
    assert_eq!(hasher.stats().refused, 2);
    release.send(()).expect("release");
    for waiter in waiters {
        waiter
            .await
            .expect("join")
            .expect("a queued hash completes");
    }
    // A cancelled waiter gives its place back, and its hash never runs.
    let release = occupy(&hasher).await;
    let cancelled = {
        let hasher = hasher.clone();
        tokio::spawn(async move {
            hasher
                .hash(&Password::new("a long enough passphrase"))
                .await
        })
    };
    while hasher.stats().waiting < 1 {
        tokio::task::yield_now().await;
    }
    cancelled.abort();
    let _ = cancelled.await;
    let started = hasher.stats().started;
    release.send(()).expect("release");
    while hasher.stats().waiting > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        hasher.stats().started,
        started,
        "the cancelled hash was skipped"
    );
    // No queue at all: a free worker still serves, a busy one refuses.
    let no_queue = hasher.with_queue_limit(0);
    no_queue
        .hash(&Password::new("a long enough passphrase"))
        .await
        .expect("a free worker");
    let release = occupy(&no_queue).await;
    assert!(matches!(
        no_queue
            .hash(&Password::new("a long enough passphrase"))
            .await,
        Err(Error::Overloaded { .. })
    ));
    release.send(()).expect("release");
}

/// Hashes made here verify with the argon2 crate's own verifier and the other way round,
/// a hash of another cost still verifies (and asks for a rehash), and a wrong password or
/// a corrupt stored hash never matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_hashes_are_standard_phc_strings() {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
    let hasher = PasswordHasher::with_params(64, 1, 1).expect("params");
    let password = Password::new("correct horse battery staple");
    let ours = hasher.hash(&password).await.expect("hash");
    let parsed = Phc::new(ours.as_str()).expect("phc");
    Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .expect("the argon2 crate verifies ours");
    let salt = SaltString::generate(&mut OsRng);
    let theirs = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(128, 2, 1, None).expect("params"),
    )
    .hash_password(password.expose().as_bytes(), &salt)
    .expect("hash")
    .to_string();
    let theirs = PasswordHash::new(theirs);
    assert_eq!(
        hasher
            .verify(&password, Some(&theirs))
            .await
            .expect("verify"),
        Verification::Match { needs_rehash: true },
        "a larger cost than today's still verifies"
    );
    assert_eq!(
        hasher.verify(&password, Some(&ours)).await.expect("verify"),
        Verification::Match {
            needs_rehash: false
        }
    );
    assert_eq!(
        hasher
            .verify(&Password::new("not the password at all"), Some(&ours))
            .await
            .expect("verify"),
        Verification::Mismatch
    );
    for corrupt in [
        "",
        "$argon2id$v=19$m=64,t=1,p=1$",
        "not a hash",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
    ] {
        assert!(
            !matches!(
                hasher
                    .verify(&password, Some(&PasswordHash::new(corrupt.to_owned())))
                    .await,
                Ok(Verification::Match { .. })
            ),
            "{corrupt}"
        );
    }
}

#[test]
fn the_policy_rejects_short_long_and_common_passwords() {
    let policy = PasswordPolicy::default();
    let fields = |p: &str| match policy.check(&Password::new(p), "password") {
        Ok(()) => vec![],
        Err(Error::WeakPassword(e)) => e.into_iter().map(|e| e.message).collect(),
        Err(other) => panic!("{other:?}"),
    };
    assert!(fields("correct horse battery staple").is_empty());
    assert_eq!(fields("short"), ["must be at least 12 characters"]);
    assert_eq!(fields("password1234"), ["is too common; choose another"]);
    assert_eq!(fields("PASSWORD1234"), ["is too common; choose another"]);
    assert_eq!(fields(&"x".repeat(1025)), ["must be at most 1024 bytes"]);
    assert!(COMMON_PASSWORDS.len() >= 10_000);
}

#[test]
fn debug_never_shows_the_password() {
    assert_eq!(
        format!("{:?}", Password::new("hunter2hunter2")),
        "Password(..)"
    );
}
