//! Unit tests of the secret box.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::*;

const ROW: &str = "sso_client_secret:tenant-1:connection-1";

fn key(kid: &str, byte: u8) -> SecretKey {
    SecretKey::from_bytes(kid, &[byte; SECRET_KEY_LEN]).expect("key")
}

fn ring() -> Keyring {
    Keyring::new(key("k1", 1))
}

/// `sealed` with its payload bytes changed by `edit`.
fn edit_payload(sealed: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let (head, payload) = sealed.rsplit_once('.').expect("format");
    let mut bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64");
    edit(&mut bytes);
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantkit-secret-box-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn round_trip_with_fresh_nonces() {
    let ring = ring();
    let a = ring.encrypt(b"s3cret", ROW).expect("seal");
    let b = ring.encrypt(b"s3cret", ROW).expect("seal");
    assert_ne!(a, b, "a fresh nonce every time");
    assert!(a.starts_with("v1.k1."), "{a}");
    assert_eq!(ring.decrypt(&a, ROW).expect("open").expose(), b"s3cret");
    assert_eq!(
        ring.decrypt(&b, ROW)
            .expect("open")
            .expose_str()
            .expect("utf-8"),
        "s3cret"
    );
    let empty = ring.encrypt(b"", ROW).expect("seal");
    assert_eq!(ring.decrypt(&empty, ROW).expect("open").expose(), b"");
}

#[test]
fn tampered_ciphertext_nonce_tag_kid_and_version_are_refused() {
    let ring = Keyring::new(key("k1", 1))
        .with_old_key(key("k2", 2))
        .expect("ring");
    let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
    let last = URL_SAFE_NO_PAD
        .decode(sealed.rsplit_once('.').expect("format").1)
        .expect("base64")
        .len()
        - 1;
    for (what, edited) in [
        ("nonce", edit_payload(&sealed, |b| b[0] ^= 1)),
        ("ciphertext", edit_payload(&sealed, |b| b[NONCE_LEN] ^= 1)),
        ("tag", edit_payload(&sealed, |b| b[last] ^= 0x80)),
    ] {
        assert!(
            matches!(ring.decrypt(&edited, ROW), Err(SecretError::Decrypt)),
            "{what}"
        );
    }
    // Relabelled to another key of the ring: that key did not seal it.
    let relabelled = sealed.replacen("v1.k1.", "v1.k2.", 1);
    assert!(matches!(
        ring.decrypt(&relabelled, ROW),
        Err(SecretError::Decrypt)
    ));
    let v2 = sealed.replacen("v1.", "v2.", 1);
    assert!(matches!(
        ring.decrypt(&v2, ROW),
        Err(SecretError::UnsupportedVersion)
    ));
    assert!(matches!(
        ring.decrypt(&sealed.replacen("v1.", "x1.", 1), ROW),
        Err(SecretError::Malformed)
    ));
}

#[test]
fn malformed_and_truncated_input_is_an_error_never_a_panic() {
    let ring = ring();
    let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
    let mut inputs: Vec<String> = [
        "",
        ".",
        "..",
        "v1",
        "v1.k1",
        "v1.k1.",
        "v1..AAAA",
        "v1.k1.***",
        "v1.k.1.AAAA",
        "v1.k1.AAAA",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for cut in 0..sealed.len() {
        inputs.push(sealed[..cut].to_owned());
    }
    inputs.push(format!("v1.{}.AAAA", "k".repeat(40)));
    inputs.push(edit_payload(&sealed, |b| {
        b.truncate(NONCE_LEN + TAG_LEN - 1)
    }));
    for input in &inputs {
        assert!(ring.decrypt(input, ROW).is_err(), "{input:?}");
        let _ = ring.needs_rotation(input);
    }
}

#[test]
fn another_context_is_refused() {
    let ring = ring();
    let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
    for other in [
        "sso_client_secret:tenant-2:connection-1",
        "sso_client_secret:tenant-1:connection-2",
        "totp_seed:tenant-1:connection-1",
        "",
    ] {
        assert!(
            matches!(ring.decrypt(&sealed, other), Err(SecretError::Decrypt)),
            "{other}"
        );
    }
}

#[test]
fn rotation_old_keys_decrypt_the_current_key_encrypts() {
    let old_ring = Keyring::new(key("2025", 1));
    let old = old_ring.encrypt(b"s3cret", ROW).expect("seal");
    assert!(!old_ring.needs_rotation(&old));

    let ring = Keyring::new(key("2026", 2))
        .with_old_key(key("2025", 1))
        .expect("ring");
    assert_eq!(ring.current_key_id(), "2026");
    assert_eq!(
        ring.decrypt(&old, ROW).expect("old key").expose(),
        b"s3cret"
    );
    assert!(ring.needs_rotation(&old));
    let new = ring.encrypt(b"s3cret", ROW).expect("seal");
    assert!(new.starts_with("v1.2026."), "{new}");
    assert!(!ring.needs_rotation(&new));

    let (secret, resealed) = ring.rotate(&old, ROW).expect("rotate");
    assert_eq!(secret.expose(), b"s3cret");
    let resealed = resealed.expect("re-sealed");
    assert!(!ring.needs_rotation(&resealed));
    assert_eq!(
        ring.decrypt(&resealed, ROW).expect("open").expose(),
        b"s3cret"
    );
    let (_, again) = ring.rotate(&resealed, ROW).expect("rotate");
    assert!(again.is_none(), "current ciphertexts stay as they are");
    // The moved row does not rotate either.
    assert!(matches!(
        ring.rotate(&old, "another row"),
        Err(SecretError::Decrypt)
    ));
    assert!(matches!(
        Keyring::new(key("2026", 2)).with_old_key(key("2026", 3)),
        Err(SecretError::DuplicateKeyId(_))
    ));
}

#[test]
fn an_unknown_key_is_refused() {
    let sealed = Keyring::new(key("gone", 1))
        .encrypt(b"s3cret", ROW)
        .expect("seal");
    let ring = Keyring::new(key("k2", 1));
    assert!(matches!(
        ring.decrypt(&sealed, ROW),
        Err(SecretError::UnknownKey(kid)) if kid == "gone"
    ));
}

#[test]
fn key_ids_and_key_bytes_are_checked() {
    for kid in ["", "a.b", "a b", "ключ", &"k".repeat(33)] {
        assert!(
            matches!(
                SecretKey::from_bytes(kid, &[1; 32]),
                Err(SecretError::InvalidKeyId)
            ),
            "{kid:?}"
        );
    }
    for bytes in [&[1u8; 31][..], &[1u8; 33][..], &[0u8; 32][..], &[][..]] {
        assert!(matches!(
            SecretKey::from_bytes("k", bytes),
            Err(SecretError::InvalidKey(_))
        ));
    }
}

#[test]
fn key_files_raw_or_base64_of_32_bytes_only() {
    let dir = temp_dir();
    let raw: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37) ^ 0x80).collect();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("raw", raw.clone(), true),
        (
            "b64",
            format!("{}\n", STANDARD.encode(&raw)).into_bytes(),
            true,
        ),
        ("b64url", URL_SAFE_NO_PAD.encode(&raw).into_bytes(), true),
        ("short-raw", raw[..31].to_vec(), false),
        ("long-raw", [raw.clone(), vec![0x80]].concat(), false),
        ("short-b64", STANDARD.encode(&raw[..31]).into_bytes(), false),
        (
            "long-b64",
            STANDARD
                .encode([raw.clone(), vec![1]].concat())
                .into_bytes(),
            false,
        ),
        (
            "password",
            b"correct horse battery staple 123".to_vec(),
            false,
        ),
        ("garbage", vec![0xff; 40], false),
        ("empty", Vec::new(), false),
    ];
    let reference = SecretKey::from_bytes("k", &raw).expect("key");
    let sealed = Keyring::new(reference).encrypt(b"x", ROW).expect("seal");
    for (name, contents, ok) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &contents).expect("write");
        match SecretKey::from_file("k", &path) {
            Ok(key) => {
                assert!(ok, "{name} was accepted");
                assert_eq!(
                    Keyring::new(key)
                        .decrypt(&sealed, ROW)
                        .expect(name)
                        .expose(),
                    b"x"
                );
            }
            Err(err) => {
                assert!(!ok, "{name}: {err}");
                assert!(matches!(err, SecretError::InvalidKey(_)), "{name}: {err}");
            }
        }
    }
    assert!(matches!(
        SecretKey::from_file("k", dir.join("missing")),
        Err(SecretError::KeyFile { .. })
    ));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_created_key_file_is_private_random_and_never_overwritten() {
    let dir = temp_dir();
    let path = dir.join("keys").join("secret.key");
    let first = SecretKey::load_or_create("dev", &path).expect("created");
    let contents = std::fs::read(&path).expect("read");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = SecretKey::load_or_create("dev", &path).expect("loaded");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        contents,
        "not overwritten"
    );
    assert!(matches!(
        write_key_file(&path),
        Err(SecretError::KeyFile { .. })
    ));
    let sealed = Keyring::new(first).encrypt(b"x", ROW).expect("seal");
    assert_eq!(
        Keyring::new(again)
            .decrypt(&sealed, ROW)
            .expect("open")
            .expose(),
        b"x"
    );
    let other = SecretKey::load_or_create("dev", dir.join("other.key")).expect("created");
    assert!(
        matches!(
            Keyring::new(other).decrypt(&sealed, ROW),
            Err(SecretError::Decrypt)
        ),
        "each new file holds a new random key"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn debug_never_shows_a_secret_or_a_key() {
    let secret = Secret::from("hunter2-hunter2");
    assert_eq!(format!("{secret:?}"), "Secret(..)");
    assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(..))");
    let k1 = SecretKey::from_bytes("k1", &[0xab; 32]).expect("key");
    let ring = Keyring::new(k1.clone())
        .with_old_key(key("k0", 1))
        .expect("ring");
    for shown in [format!("{k1:?}"), format!("{ring:?}"), format!("{k1:#?}")] {
        assert!(
            !shown.contains("ab, ab") && !shown.contains("171"),
            "{shown}"
        );
        assert!(shown.contains("k1"), "{shown}");
    }
    let opened = ring
        .decrypt(&ring.encrypt(b"hunter2-hunter2", ROW).expect("seal"), ROW)
        .expect("open");
    assert!(!format!("{opened:?}").contains("hunter2"));
    let err = ring.decrypt("v1.k1.AAAA", ROW).expect_err("malformed");
    assert!(!format!("{err:?} {err}").contains("hunter2"));
}

#[test]
fn errors_map_into_the_core_error_as_internal() {
    let err: crate::Error = SecretError::Decrypt.into();
    assert!(err.is_internal());
    let problem = crate::Problem::from(&err);
    assert_eq!(problem.status, 500);
}
