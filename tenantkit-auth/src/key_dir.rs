//! Keys on disk: a signing key from a PEM file ([`KeySet::from_pem_file`]), a folder of keys
//! that rotates ([`KeyDir`]), and random secrets kept in files ([`KeyDir::secret`]).
//!
//! In production, point [`KeySet::from_pem_file`] at the private key your deployment
//! provisions. For development (and small single-server deployments), a [`KeyDir`] keeps its
//! own Ed25519 keys: the first [`KeyDir::load`] creates one, [`KeyDir::rotate`] adds a new one
//! that signs from the next load on while the older ones keep verifying, and deleting an old
//! key's file retires it. [`read_secret`] reads a secret file the deployment provides.
//!
//! Files are created readable by their owner only (mode `0600` on Unix, in a folder of mode
//! `0700` when it is created), and atomically: a file is written and flushed under a temporary
//! name, then linked into place, so a crash never leaves a half-written key and two processes
//! creating the same secret at once end up sharing one. Errors name the file and what is wrong
//! with it, never its contents.
//!
//! This is blocking file I/O, meant for start-up (or [`tokio::task::spawn_blocking`]).
//!
//! ```
//! use tenantkit_auth::KeyDir;
//!
//! # fn main() -> tenantkit_auth::Result<()> {
//! # let temp = tempfile::tempdir().map_err(|e| tenantkit_auth::Error::Key(e.to_string()))?;
//! let dir = KeyDir::open(temp.path().join("keys"));
//! let first = dir.load()?; // An empty folder gets one fresh Ed25519 key.
//! dir.rotate()?; // A new key signs from the next load on...
//! let second = dir.load()?;
//! assert_ne!(first.signing().map(|k| k.kid()), second.signing().map(|k| k.kid()));
//! // ...and the old one still verifies the tokens it signed.
//! assert_eq!(second.verifiers().count(), 2);
//! let refresh_secret = dir.secret("refresh.secret", 32)?; // Created once, then read back.
//! assert_eq!(refresh_secret, dir.secret("refresh.secret", 32)?);
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use crate::{Algorithm, Error, KeySet, Result, SigningKey, generate_ed25519_pem};

/// Longest key or secret file read, in bytes: a PEM of an RSA-4096 key is about 3.3 KB; a
/// larger file is a mistake (a log, a dump), refused before it is read whole.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The file name of the key [`KeyDir::load`] creates in an empty folder: it sorts before every
/// key [`KeyDir::rotate`] adds.
const FIRST_KEY: &str = "000000000000000000000000.pem";

impl KeySet {
    /// A set whose only key is the private key in the PEM file at `path` (PKCS#8, or PKCS#1
    /// for RSA), of `algorithm`: what a production deployment provisions.
    ///
    /// # Errors
    /// [`Error::Key`] naming the file when it cannot be read or is not a private key of
    /// `algorithm`. The message never includes the file's contents.
    pub fn from_pem_file(algorithm: Algorithm, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = read_limited(path)?;
        let key = SigningKey::from_pem(algorithm, &pem).map_err(|e| file_error(path, e))?;
        Ok(KeySet::new(key))
    }
}

/// A folder of Ed25519 signing keys, one PEM file each (`*.pem`): the newest (the last by
/// file name) signs, every other one verifies. [`KeyDir::rotate`] names files by creation
/// time so that the newest sorts last. The folder also keeps random secrets
/// ([`KeyDir::secret`]): the refresh-token secret, an audit key, a URL-signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDir {
    path: PathBuf,
}

impl KeyDir {
    /// The folder at `path`. Nothing is read or created until it is used.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys of the folder: the newest `*.pem` signs, the older ones verify (tokens they
    /// signed stay valid until they expire; delete a file to retire its key). An empty or
    /// missing folder first gets one fresh Ed25519 key: one in all, also when several
    /// processes load it at once.
    ///
    /// # Errors
    /// [`Error::Key`] naming the folder or the file that cannot be read, created, or is not an
    /// Ed25519 private key.
    pub fn load(&self) -> Result<KeySet> {
        self.check_dir()?;
        let mut files = self.pem_files()?;
        if files.is_empty() {
            // The first key has a fixed name (sorting before every rotated one), so processes
            // starting at once on an empty folder create one key between them, not one each.
            self.create_dir()?;
            let first = self.path.join(FIRST_KEY);
            match write_new(&first, generate_ed25519_pem()?.as_bytes()) {
                Ok(()) => tracing::warn!(
                    dir = %self.path.display(),
                    "created a development signing key; provision a key file in production"
                ),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&first, &e)),
            }
            files = self.pem_files()?;
        }
        let mut keys = Vec::with_capacity(files.len());
        for file in &files {
            let pem = read_limited(file)?;
            keys.push(
                SigningKey::from_pem(Algorithm::EdDSA, &pem).map_err(|e| file_error(file, e))?,
            );
        }
        let signing = keys
            .pop()
            .ok_or_else(|| path_error(&self.path, "holds no key"))?;
        tracing::info!(
            kid = signing.kid(),
            verify_only = keys.len(),
            "signing keys loaded"
        );
        Ok(keys.into_iter().fold(KeySet::new(signing), |set, old| {
            set.with_verifier(old.verifying_key().clone())
        }))
    }

    /// Creates a new Ed25519 key that signs from the next [`KeyDir::load`] on; the older keys
    /// keep verifying until their files are deleted. Returns the new file's path.
    ///
    /// # Errors
    /// [`Error::Key`] naming the folder or file that cannot be created or written.
    pub fn rotate(&self) -> Result<PathBuf> {
        self.create_dir()?;
        let pem = generate_ed25519_pem()?;
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        // Never replace an existing key, however unlikely a clash of nanoseconds is.
        let mut last = None;
        for attempt in 0..8u32 {
            let name = match attempt {
                // `.` sorts before every digit, so a retry sorts after the first try.
                0 => format!("{stamp:024}.pem"),
                n => format!("{stamp:024}{n:02}.pem"),
            };
            let path = self.path.join(name);
            match write_new(&path, pem.as_bytes()) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(e) => return Err(io_error(&path, &e)),
            }
        }
        Err(match last {
            Some((path, e)) => io_error(&path, &e),
            None => path_error(&self.path, "cannot name a new key"),
        })
    }

    /// The secret kept in the file `name` of this folder, created with `len` random bytes
    /// when missing. A secret shorter than `len` is refused (it was not made here, or was
    /// truncated).
    ///
    /// # Errors
    /// [`Error::Key`] naming the file when it cannot be read or created, or is too short.
    pub fn secret(&self, name: &str, len: usize) -> Result<Vec<u8>> {
        let path = self.path.join(name);
        if Path::new(name).file_name().is_none_or(|file| file != name) {
            return Err(path_error(&path, "a secret's name is a plain file name"));
        }
        self.check_dir()?;
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, &e)),
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(path_error(&path, NOT_A_REGULAR_FILE));
            }
            Ok(_) => return read_secret(&path, len),
        }
        self.create_dir()?;
        let mut secret = vec![0u8; len];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
        match write_new(&path, &secret) {
            Ok(()) => Ok(secret),
            // Another process created it meanwhile: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.secret(name, len),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    fn create_dir(&self) -> Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder
            .create(&self.path)
            .map_err(|e| io_error(&self.path, &e))
    }

    /// Refuses a folder that others may write to: whoever can add a file to it chooses the
    /// signing key (and so can forge every token). A missing folder is fine (it is created
    /// owner-only).
    fn check_dir(&self) -> Result<()> {
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.path, &e)),
        };
        if meta.file_type().is_symlink() {
            // A link to a folder is a deployment's choice; check the folder it names.
            let target = fs::metadata(&self.path).map_err(|e| io_error(&self.path, &e))?;
            return writable_by_others(&self.path, &target);
        }
        writable_by_others(&self.path, &meta)
    }

    fn pem_files(&self) -> Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.path, &e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.path, &e))?;
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "pem") {
                continue;
            }
            // The entry's own type: a symbolic link is not followed, it is refused (whoever
            // points it could choose the signing key).
            let kind = entry.file_type().map_err(|e| io_error(&path, &e))?;
            if !kind.is_file() {
                return Err(path_error(&path, NOT_A_REGULAR_FILE));
            }
            files.push(path);
        }
        files.sort();
        Ok(files)
    }
}

/// The secret in the file at `path` (one the deployment provisions, never created here), of
/// at least `min_len` bytes.
///
/// # Errors
/// [`Error::Key`] naming the file when it cannot be read or is shorter than `min_len`; the
/// message never includes its contents.
pub fn read_secret(path: impl AsRef<Path>, min_len: usize) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let secret = read_limited(path)?;
    if secret.len() < min_len {
        return Err(path_error(path, &format!("shorter than {min_len} bytes")));
    }
    Ok(secret)
}

/// Reads a key file of at most [`MAX_KEY_FILE_BYTES`].
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    // Opened once; the checks are on the open file, so the path cannot change in between.
    let file = fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    // A FIFO or a device (`/dev/zero`) reports no length and never ends: refused.
    if !meta.is_file() {
        return Err(path_error(path, NOT_A_REGULAR_FILE));
    }
    let mut contents = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| io_error(path, &e))?;
    if contents.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(path_error(
            path,
            &format!("larger than {MAX_KEY_FILE_BYTES} bytes; not a key file"),
        ));
    }
    Ok(contents)
}

/// Why a key path that is not a plain file is refused.
const NOT_A_REGULAR_FILE: &str =
    "not a regular file (symbolic links, folders and devices are refused)";

/// Refuses `meta` (of the folder `path`) when its group or others may write to it.
fn writable_by_others(path: &Path, meta: &fs::Metadata) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(path_error(
                path,
                "group or others may write to this key folder; make it owner-only (chmod 700)",
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// Creates `path` with `contents`, readable by its owner only, atomically: written and
/// flushed under a temporary name first, then hard-linked into place (which, unlike a
/// rename, fails when `path` exists: an existing key or secret is never replaced).
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = dir.join(format!(".tenantkit-{nonce}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // Secret material: readable by its owner only.
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    linked?;
    // The new name is durable once the folder is (best effort: not every platform can
    // open a folder for syncing).
    if let Ok(folder) = fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

fn path_error(path: &Path, why: &str) -> Error {
    Error::Key(format!("{}: {why}", path.display()))
}

fn io_error(path: &Path, err: &std::io::Error) -> Error {
    path_error(path, &err.to_string())
}

/// Prefixes a key error with the file it came from. Key errors describe the key's type or
/// format, never its bytes.
fn file_error(path: &Path, err: Error) -> Error {
    match err {
        Error::Key(why) => path_error(path, &why),
        other => path_error(path, &other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
