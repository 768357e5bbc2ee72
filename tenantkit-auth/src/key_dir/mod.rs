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
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{Algorithm, KeySet, Result, SigningKey, generate_ed25519_pem};

mod files;

use files::{
    NOT_A_REGULAR_FILE, file_error, io_error, path_error, read_limited, remove_stale_temporaries,
    writable_by_others, write_new,
};

/// The file name of the key [`KeyDir::load`] creates in an empty folder: it sorts before every
/// key [`KeyDir::rotate`] adds.
const FIRST_KEY: &str = "000000000000000000000000.pem";

impl KeySet {
    /// A set whose only key is the private key in the PEM file at `path` (PKCS#8, or PKCS#1
    /// for RSA), of `algorithm`: what a production deployment provisions.
    ///
    /// # Errors
    /// [`Error::Key`](crate::Error::Key) naming the file when it cannot be read or is not a private key of
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
    /// [`Error::Key`](crate::Error::Key) naming the folder or the file that cannot be read, created, or is not an
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
    /// [`Error::Key`](crate::Error::Key) naming the folder or file that cannot be created or written.
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
    /// [`Error::Key`](crate::Error::Key) naming the file when it cannot be read or created, or is too short.
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
            .map_err(|e| io_error(&self.path, &e))?;
        remove_stale_temporaries(&self.path);
        Ok(())
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
/// [`Error::Key`](crate::Error::Key) naming the file when it cannot be read or is shorter than `min_len`; the
/// message never includes its contents.
pub fn read_secret(path: impl AsRef<Path>, min_len: usize) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let secret = read_limited(path)?;
    if secret.len() < min_len {
        return Err(path_error(path, &format!("shorter than {min_len} bytes")));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests;
