//! Where the server's keys come from (over [`tenantkit_auth::KeyDir`]): the files the
//! configuration names in production, else development keys created on first run under
//! `<data dir>/keys`.

use std::path::PathBuf;

use tenantkit_auth::{KeyDir, KeySet};

use crate::{Config, ServerError};

/// The folder of development keys.
pub fn dev_keys(config: &Config) -> KeyDir {
    KeyDir::open(config.data_dir.join("keys"))
}

/// The keys to sign and verify with: `TENANTKIT_JWT_KEY_FILE`, else the development folder
/// (the newest key signs, older ones verify; an empty folder gets a fresh Ed25519 key).
///
/// # Errors
/// [`ServerError::Keys`] when a key cannot be read, created or parsed.
pub fn load_key_set(config: &Config) -> Result<KeySet, ServerError> {
    match &config.jwt_key_file {
        Some(path) => KeySet::from_pem_file(config.jwt_algorithm, path),
        None => dev_keys(config).load(),
    }
    .map_err(keys_error)
}

/// Creates a new development key that signs from the next start on.
///
/// # Errors
/// [`ServerError::Keys`] when the key cannot be written.
pub fn rotate_dev_key(config: &Config) -> Result<PathBuf, ServerError> {
    dev_keys(config).rotate().map_err(keys_error)
}

/// The refresh-token secret: `TENANTKIT_REFRESH_SECRET`, else a development secret.
///
/// # Errors
/// [`ServerError::Keys`] when the secret is too short or cannot be read or written.
pub fn load_refresh_secret(config: &Config) -> Result<Vec<u8>, ServerError> {
    match &config.refresh_secret {
        Some(secret) if secret.len() < 32 => Err(ServerError::Keys(
            "TENANTKIT_REFRESH_SECRET must be at least 32 bytes".into(),
        )),
        Some(secret) => Ok(secret.as_bytes().to_vec()),
        None => dev_keys(config)
            .secret("refresh.secret", 32)
            .map_err(keys_error),
    }
}

/// The key that anchors audit entries: `TENANTKIT_AUDIT_KEY_FILE`, else a development key.
///
/// # Errors
/// [`ServerError::Keys`] when the key is too short or cannot be read or written.
pub fn load_audit_key(config: &Config) -> Result<tenantkit_core::AuditKey, ServerError> {
    let bytes = secret_file(config, config.audit_key_file.as_ref(), "audit.key")?;
    tenantkit_core::AuditKey::new(&bytes).map_err(|e| ServerError::Keys(e.to_string()))
}

/// The key that signs local storage URLs: `TENANTKIT_STORAGE_KEY_FILE`, else a development
/// key.
///
/// # Errors
/// [`ServerError::Keys`] when the file cannot be read or created, or is shorter than 32 bytes.
pub fn load_storage_key(config: &Config) -> Result<Vec<u8>, ServerError> {
    secret_file(config, config.storage_key_file.as_ref(), "storage.key")
}

/// The secret of at least 32 bytes in `configured`, else `name` in the development folder.
fn secret_file(
    config: &Config,
    configured: Option<&PathBuf>,
    name: &str,
) -> Result<Vec<u8>, ServerError> {
    match configured {
        Some(path) => tenantkit_auth::key_dir::read_secret(path, 32),
        None => dev_keys(config).secret(name, 32),
    }
    .map_err(keys_error)
}

fn keys_error(err: tenantkit_auth::Error) -> ServerError {
    match err {
        tenantkit_auth::Error::Key(why) => ServerError::Keys(why),
        other => ServerError::Keys(other.to_string()),
    }
}
