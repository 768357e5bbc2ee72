//! Tests of key and secret files.

use super::*;
use crate::Error;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn kid(set: &KeySet) -> String {
    set.signing().expect("a signing key").kid().to_owned()
}

#[test]
fn an_empty_folder_gets_exactly_one_key_and_keeps_it() {
    let temp = temp();
    let dir = KeyDir::open(temp.path().join("keys"));
    let first = dir.load().expect("load");
    assert_eq!(first.verifiers().count(), 1);
    assert_eq!(
        dir.pem_files().expect("files").len(),
        1,
        "exactly one key file"
    );
    let again = dir.load().expect("load again");
    assert_eq!(kid(&again), kid(&first), "the same key on the next load");
    assert_eq!(dir.pem_files().expect("files").len(), 1, "no second key");
    assert_eq!(
        fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no temporary file is left behind"
    );
}

/// Servers starting at once on an empty folder share one new key, whoever wins the race.
#[test]
fn processes_loading_an_empty_folder_at_once_create_one_key_between_them() {
    let temp = temp();
    let dir = KeyDir::open(temp.path().join("keys"));
    let start = std::sync::Barrier::new(8);
    let kids: Vec<String> = std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    kid(&dir.load().expect("load"))
                })
            })
            .collect();
        loaders
            .into_iter()
            .map(|loader| loader.join().expect("loader"))
            .collect()
    });
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    assert_eq!(dir.pem_files().expect("files").len(), 1);
}

#[test]
fn rotation_signs_with_the_new_key_and_keeps_the_old_one_verifying() {
    use crate::{AccessTokens, JwtConfig};
    use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};

    let temp = temp();
    let dir = KeyDir::open(temp.path());
    let config = JwtConfig::new("https://auth.example", "api");
    let before = AccessTokens::new(dir.load().expect("load"), config.clone());
    let caller = Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Member,
        [],
        SessionId::new(),
    );
    let old_token = before.issue(&caller).expect("issue").token;

    let new_file = dir.rotate().expect("rotate");
    assert_eq!(
        dir.pem_files().expect("files").last(),
        Some(&new_file),
        "sorts last"
    );
    let after_keys = dir.load().expect("load");
    assert_ne!(kid(&after_keys), kid(&before.keys()), "the new key signs");
    assert!(
        after_keys.verifier(&kid(&before.keys())).is_some(),
        "the old key verifies"
    );
    let after = AccessTokens::new(after_keys, config);
    assert!(
        after.verify(&old_token).is_ok(),
        "tokens of the old key stay valid"
    );
    let new_token = after.issue(&caller).expect("issue").token;
    assert!(after.verify(&new_token).is_ok());
    assert!(
        before.verify(&new_token).is_err(),
        "signed by the new key, which the old set does not know"
    );

    // Deleting the old file retires its key.
    for file in dir.pem_files().expect("files") {
        if file != new_file {
            fs::remove_file(file).expect("remove");
        }
    }
    let retired = AccessTokens::new(
        dir.load().expect("load"),
        JwtConfig::new("https://auth.example", "api"),
    );
    assert!(retired.verify(&old_token).is_err());
    assert!(retired.verify(&new_token).is_ok());
}

#[test]
fn a_bad_pem_is_an_error_naming_the_file_and_not_its_contents() {
    let temp = temp();
    let bad = temp.path().join("0001-broken.pem");
    let contents = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFsLW5vdC1hLWtleQ==\n-----END PRIVATE KEY-----\n";
    fs::write(&bad, contents).expect("write");
    for err in [
        KeyDir::open(temp.path())
            .load()
            .expect_err("a folder with a bad key"),
        KeySet::from_pem_file(Algorithm::EdDSA, &bad).expect_err("a bad key file"),
        KeySet::from_pem_file(Algorithm::RS256, &bad).expect_err("a bad key file"),
    ] {
        let message = err.to_string();
        assert!(matches!(err, Error::Key(_)), "{err:?}");
        assert!(message.contains(&bad.display().to_string()), "{message}");
        assert!(!message.contains("c2VjcmV0"), "key material in {message}");
    }
    let missing = temp.path().join("missing.pem");
    let err = KeySet::from_pem_file(Algorithm::EdDSA, &missing).expect_err("no file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn a_key_file_loads_as_a_signing_set() {
    let temp = temp();
    let path = temp.path().join("signing.pem");
    fs::write(&path, generate_ed25519_pem().expect("pem")).expect("write");
    let set = KeySet::from_pem_file(Algorithm::EdDSA, &path).expect("load");
    assert!(!set.is_verify_only());
    assert_eq!(set.verifiers().count(), 1);
}

#[test]
fn secrets_are_created_once_and_short_ones_refused() {
    let temp = temp();
    let dir = KeyDir::open(temp.path().join("nested").join("keys"));
    let secret = dir.secret("refresh.secret", 32).expect("create");
    assert_eq!(secret.len(), 32);
    assert_eq!(dir.secret("refresh.secret", 32).expect("read"), secret);
    assert_ne!(dir.secret("audit.key", 32).expect("another"), secret);
    fs::write(dir.path().join("short.key"), b"too short").expect("write");
    let err = dir.secret("short.key", 32).expect_err("short");
    assert!(err.to_string().contains("short.key"), "{err}");
    assert!(!err.to_string().contains("too short"), "{err}");
    assert!(
        dir.secret("../escape", 32).is_err(),
        "a plain file name only"
    );
    assert_eq!(
        read_secret(dir.path().join("audit.key"), 32)
            .expect("read")
            .len(),
        32
    );
    let err = read_secret(dir.path().join("absent.key"), 32).expect_err("never created");
    assert!(err.to_string().contains("absent.key"), "{err}");
    assert!(!dir.path().join("absent.key").exists());
    assert!(
        dir.load().expect("keys").verifiers().count() == 1,
        "secrets are not keys"
    );
}

#[cfg(unix)]
#[test]
fn a_retried_rotation_name_sorts_after_the_first_of_its_instant() {
    let stamp: i128 = 1_800_000_000_000_000_000;
    let first = format!("{stamp:024}.pem");
    let retry = format!("{stamp:024}{:02}.pem", 1);
    let later = format!("{:024}.pem", stamp + 1);
    assert!(FIRST_KEY < first.as_str());
    assert!(first < retry, "{first} < {retry}");
    assert!(retry < later, "{retry} < {later}");
}

#[cfg(unix)]
#[test]
fn a_symlinked_key_or_secret_is_refused() {
    let dir = temp();
    let keys = KeyDir::open(dir.path().join("keys"));
    keys.load().expect("first key");
    let elsewhere = dir.path().join("elsewhere.pem");
    fs::write(&elsewhere, generate_ed25519_pem().expect("pem")).expect("write");
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("keys/zzz.pem")).expect("link");
    let err = keys.load().expect_err("a linked key must not sign");
    assert!(err.to_string().contains("zzz.pem"), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("keys/s.secret")).expect("link");
    let err = keys.secret("s.secret", 16).expect_err("a linked secret");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_folder_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp();
    let keys = KeyDir::open(dir.path().join("keys"));
    keys.load().expect("first key");
    let folder = dir.path().join("keys");
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = keys.load().expect_err("a world-writable key folder");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    assert!(keys.secret("s.secret", 16).is_err());
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).expect("chmod");
    keys.load().expect("owner-only again");
}

#[cfg(unix)]
#[test]
fn a_device_or_fifo_is_not_read_as_a_secret() {
    let err = read_secret("/dev/zero", 16).expect_err("/dev/zero never ends");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn keys_and_secrets_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = temp();
    let dir = KeyDir::open(temp.path().join("keys"));
    dir.load().expect("load");
    dir.rotate().expect("rotate");
    dir.secret("refresh.secret", 32).expect("secret");
    let mode = |path: &Path| fs::metadata(path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700, "the folder it created");
    let mut files = 0;
    for entry in fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert_eq!(files, 3, "two keys and a secret, no temporary file");
}

#[test]
fn a_killed_writers_stale_temporary_is_removed_and_a_fresh_one_kept() {
    let temp = temp();
    let dir = KeyDir::open(temp.path().join("keys"));
    dir.secret("refresh.secret", 32).expect("create");
    let (stale, fresh) = (
        dir.path().join(".tenantkit-00aa.tmp"),
        dir.path().join(".tenantkit-00bb.tmp"),
    );
    for path in [&stale, &fresh] {
        fs::write(path, b"key material of a killed writer").expect("write");
    }
    let long_ago = std::time::SystemTime::now() - files::STALE_TEMPORARY * 2;
    let file = fs::File::options().write(true).open(&stale).expect("open");
    file.set_modified(long_ago).expect("age it");
    drop(file);
    dir.secret("another.secret", 32).expect("create another");
    assert!(!stale.exists(), "the stale temporary is gone");
    assert!(fresh.exists(), "a temporary a live writer may own stays");
}
