//! Where the server's signing keys come from: a PEM file in production, or development keys
//! created on first run under `<data dir>/keys`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tenantkit_auth::{Algorithm, KeySet, SigningKey, generate_ed25519_pem};

use crate::{Config, ServerError};

/// The folder of development keys.
pub fn dev_key_dir(config: &Config) -> PathBuf {
    config.data_dir.join("keys")
}

/// The keys to sign and verify with.
///
/// With `TENANTKIT_JWT_KEY_FILE` that key signs. Otherwise every `*.pem` in the development
/// folder verifies and the newest signs; an empty folder gets a fresh Ed25519 key.
///
/// # Errors
/// [`ServerError::Keys`] when a key cannot be read or parsed.
pub fn load_key_set(config: &Config) -> Result<KeySet, ServerError> {
    if let Some(path) = &config.jwt_key_file {
        let pem = fs::read(path).map_err(|e| keys_error(path, &e.to_string()))?;
        let key = SigningKey::from_pem(config.jwt_algorithm, &pem)
            .map_err(|e| keys_error(path, &e.to_string()))?;
        tracing::info!(kid = key.kid(), algorithm = ?key.algorithm(), "signing key loaded");
        return Ok(KeySet::new(key));
    }
    let dir = dev_key_dir(config);
    let mut files = pem_files(&dir)?;
    if files.is_empty() {
        files.push(rotate_dev_key(config)?);
        tracing::warn!(dir = %dir.display(), "created a development signing key; set TENANTKIT_JWT_KEY_FILE in production");
    }
    let mut keys = Vec::new();
    for file in &files {
        let pem = fs::read(file).map_err(|e| keys_error(file, &e.to_string()))?;
        keys.push(
            SigningKey::from_pem(Algorithm::EdDSA, &pem)
                .map_err(|e| keys_error(file, &e.to_string()))?,
        );
    }
    // Files are named by creation time, so the last one is the newest.
    let signing = keys.pop().ok_or_else(|| keys_error(&dir, "no key"))?;
    tracing::info!(
        kid = signing.kid(),
        verify_only = keys.len(),
        "development signing keys loaded"
    );
    Ok(keys.into_iter().fold(KeySet::new(signing), |set, old| {
        set.with_verifier(old.verifying_key().clone())
    }))
}

/// Creates a new development key that will sign from the next start on; older keys keep
/// verifying until their files are deleted.
///
/// # Errors
/// [`ServerError::Keys`] when the key cannot be written.
pub fn rotate_dev_key(config: &Config) -> Result<PathBuf, ServerError> {
    let dir = dev_key_dir(config);
    fs::create_dir_all(&dir).map_err(|e| keys_error(&dir, &e.to_string()))?;
    let pem = generate_ed25519_pem().map_err(|e| keys_error(&dir, &e.to_string()))?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let path = dir.join(format!("{stamp:024}.pem"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // A private key: readable by the server's user only.
    }
    let mut file = options
        .open(&path)
        .map_err(|e| keys_error(&path, &e.to_string()))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| keys_error(&path, &e.to_string()))?;
    Ok(path)
}

/// The secret that derives refresh-token successors: `TENANTKIT_REFRESH_SECRET` in
/// production, else a random development secret kept in `<data dir>/keys/refresh.secret`.
///
/// # Errors
/// [`ServerError::Keys`] when the secret is too short or cannot be read or written.
pub fn load_refresh_secret(config: &Config) -> Result<Vec<u8>, ServerError> {
    if let Some(secret) = &config.refresh_secret {
        if secret.len() < 32 {
            return Err(ServerError::Keys(
                "TENANTKIT_REFRESH_SECRET must be at least 32 bytes".into(),
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = dev_key_dir(config).join("refresh.secret");
    match fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => return Err(keys_error(&path, "shorter than 32 bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(keys_error(&path, &e.to_string())),
    }
    let mut secret = vec![0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    write_private(&path, &secret)?;
    Ok(secret)
}

/// The key that anchors audit entries: `TENANTKIT_AUDIT_KEY_FILE` in production (shared by
/// every instance, kept away from the database), else a random development key kept in
/// `<data dir>/keys/audit.key`.
///
/// # Errors
/// [`ServerError::Keys`] when the key is too short or cannot be read or written.
pub fn load_audit_key(config: &Config) -> Result<tenantkit_core::AuditKey, ServerError> {
    let path = config
        .audit_key_file
        .clone()
        .unwrap_or_else(|| dev_key_dir(config).join("audit.key"));
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.audit_key_file.is_none() => {
            let mut key = vec![0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            write_private(&path, &key)?;
            key
        }
        Err(e) => return Err(keys_error(&path, &e.to_string())),
    };
    tenantkit_core::AuditKey::new(&bytes).map_err(|e| keys_error(&path, &e.to_string()))
}

/// The key that signs local storage URLs: `TENANTKIT_STORAGE_KEY_FILE`, else a development
/// key created under `<data dir>/keys/storage.key`.
///
/// # Errors
/// [`ServerError::Keys`] when the file cannot be read or created, or is shorter than 32 bytes.
pub fn load_storage_key(config: &Config) -> Result<Vec<u8>, ServerError> {
    let path = config
        .storage_key_file
        .clone()
        .unwrap_or_else(|| dev_key_dir(config).join("storage.key"));
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.storage_key_file.is_none() => {
            let mut key = vec![0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            write_private(&path, &key)?;
            key
        }
        Err(e) => return Err(keys_error(&path, &e.to_string())),
    };
    if bytes.len() < 32 {
        return Err(keys_error(
            &path,
            "the storage key must be at least 32 bytes",
        ));
    }
    Ok(bytes)
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| keys_error(dir, &e.to_string()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // Secret material: readable by the server's user only.
    }
    let mut file = options
        .open(path)
        .map_err(|e| keys_error(path, &e.to_string()))?;
    file.write_all(contents)
        .map_err(|e| keys_error(path, &e.to_string()))
}

fn pem_files(dir: &Path) -> Result<Vec<PathBuf>, ServerError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(keys_error(dir, &e.to_string())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
        .collect();
    files.sort();
    Ok(files)
}

fn keys_error(path: &Path, why: &str) -> ServerError {
    ServerError::Keys(format!("{}: {why}", path.display()))
}
