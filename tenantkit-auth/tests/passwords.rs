//! argon2id hashing: verification, constant work for unknown accounts, rehash on parameter
//! change, and policy errors as 422 problems.

use tenantkit_auth::{Error, Password, PasswordHasher, Verification};
use tenantkit_core::{ErrorCode, Problem};

#[tokio::test]
async fn right_password_matches_and_wrong_or_unknown_do_not() {
    let hasher = PasswordHasher::new();
    let password = Password::new("correct horse battery staple");
    let hash = hasher.hash_new(&password, "password").await.expect("hash");
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "OWASP defaults"
    );
    assert_eq!(
        hasher.verify(&password, Some(&hash)).await.expect("verify"),
        Verification::Match {
            needs_rehash: false
        }
    );
    let wrong = Password::new("correct horse battery stapler");
    assert_eq!(
        hasher.verify(&wrong, Some(&hash)).await.expect("verify"),
        Verification::Mismatch
    );
    // An unknown account does the same work against a dummy hash and still never matches,
    // even for the dummy's own (random) password or an empty one.
    assert_eq!(
        hasher.verify(&password, None).await.expect("verify"),
        Verification::Mismatch
    );
    assert_eq!(
        hasher
            .verify(&Password::new(""), None)
            .await
            .expect("verify"),
        Verification::Mismatch
    );
    // Two hashes of one password differ (random salt).
    let again = hasher.hash(&password).await.expect("hash");
    assert_ne!(again, hash);
}

#[tokio::test]
async fn changed_parameters_ask_for_a_rehash_on_login() {
    let old = PasswordHasher::with_params(8 * 1024, 1, 1).expect("params");
    let password = Password::new("a perfectly fine passphrase");
    let legacy = old.hash(&password).await.expect("hash");
    let current = PasswordHasher::new();
    assert_eq!(
        current
            .verify(&password, Some(&legacy))
            .await
            .expect("verify"),
        Verification::Match { needs_rehash: true }
    );
    let upgraded = current.hash(&password).await.expect("rehash");
    assert_eq!(
        current
            .verify(&password, Some(&upgraded))
            .await
            .expect("verify"),
        Verification::Match {
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn over_long_passwords_are_never_hashed_and_never_match() {
    let hasher = PasswordHasher::new();
    let long = Password::new("x".repeat(1_000_000));
    let hash = hasher
        .hash(&Password::new("a normal passphrase"))
        .await
        .expect("hash");
    assert_eq!(
        hasher.verify(&long, Some(&hash)).await.expect("verify"),
        Verification::Mismatch
    );
}

#[tokio::test]
async fn weak_passwords_are_422_validation_problems_naming_the_field() {
    let hasher = PasswordHasher::new();
    for (password, message) in [
        ("short", "must be at least 12 characters"),
        ("password1234", "is too common; choose another"),
        ("Qwertyuiop123", "is too common; choose another"),
    ] {
        let err = hasher
            .hash_new(&Password::new(password), "new_password")
            .await
            .expect_err(password);
        let problem = Problem::from(&err);
        assert_eq!(problem.code, ErrorCode::ValidationFailed);
        assert_eq!(problem.errors[0].field, "new_password");
        assert_eq!(problem.errors[0].message, message, "{password}");
        assert!(matches!(err, Error::WeakPassword(_)));
    }
    let too_long = hasher
        .hash_new(&Password::new("y".repeat(1025)), "password")
        .await;
    assert!(matches!(too_long, Err(Error::WeakPassword(_))));
}

#[tokio::test]
async fn a_burst_of_hashes_completes_with_bounded_concurrency() {
    let hasher = PasswordHasher::with_params(4 * 1024, 1, 1)
        .expect("params")
        .with_concurrency(1);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let hasher = hasher.clone();
        tasks.push(tokio::spawn(async move {
            hasher
                .hash(&Password::new(format!("burst password {i}")))
                .await
        }));
    }
    for task in tasks {
        assert!(task.await.expect("join").is_ok());
    }
}
