//! The parts the server is built from, each from the configuration: the database, the keys
//! and the auth flows, storage, the plans. The admin commands use them too.

use std::sync::Arc;

use tenantkit_auth::flows::AuthFlows;
use tenantkit_auth::{
    AccessTokens, JwtConfig, Mailer, OutboxMailer, RateLimits, RefreshConfig, RefreshSessions,
};
use tenantkit_core::{Backend, Database};

use super::ServerError;
use crate::{Config, redact_url};

/// Applies the migrations: on SQLite to the database file, on PostgreSQL as the table owner
/// (`DATABASE_MIGRATION_URL`, else `DATABASE_URL`).
///
/// # Errors
/// [`ServerError::Core`] when the database is unreachable or a migration fails.
pub async fn migrate(config: &Config) -> Result<(), ServerError> {
    let url = config
        .database_migration_url
        .clone()
        .unwrap_or_else(|| config.database_url());
    tracing::info!(database = %redact_url(&url), "applying migrations");
    Ok(Database::migrate_at(&url, &crate::domain::all_migrations()).await?)
}

/// Opens the application database, applying migrations first where the server may.
///
/// # Errors
/// [`ServerError::Core`] when the database is unreachable, a migration fails, or (PostgreSQL)
/// the application role could bypass row-level security.
pub async fn open_database(config: &Config) -> Result<Database, ServerError> {
    let url = config.database_url();
    let backend = if url.starts_with("postgres") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    // PostgreSQL: migrate as the owner first, so the application role's start-up checks (an
    // RLS-safe role, every tenant table behind RLS) see the current schema.
    match backend {
        Backend::Postgres if config.database_migration_url.is_some() => migrate(config).await?,
        Backend::Postgres => tracing::warn!(
            "DATABASE_MIGRATION_URL is not set: assuming `tenantkit-server migrate` has been run"
        ),
        _ => {}
    }
    let db = Database::connect(&url)
        .await?
        .with_audit_key(crate::keys::load_audit_key(config)?);
    if db.backend() == Backend::Sqlite {
        db.migrate(&crate::domain::all_migrations()).await?;
    }
    tracing::info!(database = %redact_url(&url), backend = %db.backend(), "database ready");
    Ok(db)
}

/// The access-token issuer and verifier configured by `config`.
///
/// # Errors
/// [`ServerError::Keys`] when the keys cannot be loaded.
pub fn access_tokens(config: &Config) -> Result<AccessTokens, ServerError> {
    let keys = crate::keys::load_key_set(config)?;
    Ok(AccessTokens::new(
        keys,
        JwtConfig::new(&config.jwt_issuer, &config.jwt_audience),
    ))
}

/// Refresh sessions in `db`, with the configured secret and grace window.
///
/// # Errors
/// [`ServerError::Keys`] when the secret cannot be loaded.
pub fn refresh_sessions(
    config: &Config,
    db: &Database,
) -> Result<RefreshSessions<Database>, ServerError> {
    refresh_sessions_on(config, db, None)
}

/// [`refresh_sessions`] publishing revocations on `revocations` (a bus shared by every
/// instance) instead of an in-process one.
///
/// # Errors
/// [`ServerError::Keys`] when the secret cannot be loaded.
pub fn refresh_sessions_on(
    config: &Config,
    db: &Database,
    revocations: Option<tenantkit_auth::Revocations>,
) -> Result<RefreshSessions<Database>, ServerError> {
    let secret = crate::keys::load_refresh_secret(config)?;
    let settings = RefreshConfig {
        grace: std::time::Duration::from_secs(config.refresh_grace_secs),
        ..RefreshConfig::default()
    };
    let sessions = RefreshSessions::new(db.clone(), &secret, settings)
        .map_err(|e| ServerError::Keys(e.to_string()))?;
    Ok(match revocations {
        Some(revocations) => sessions.with_revocations(revocations),
        None => sessions,
    })
}

/// The auth flows configured by `config` over `db`: keys, refresh sessions, rate limits,
/// mailer (SMTP when configured, else the development outbox) and the links' base URL.
///
/// # Errors
/// [`ServerError::Keys`] when a key, the refresh secret or the SMTP relay cannot be set up.
pub fn auth_flows(config: &Config, db: &Database) -> Result<AuthFlows, ServerError> {
    auth_flows_on(config, db, None)
}

/// [`auth_flows`] publishing revocations on `revocations` (a bus shared by every instance).
///
/// # Errors
/// As [`auth_flows`].
pub fn auth_flows_on(
    config: &Config,
    db: &Database,
    revocations: Option<tenantkit_auth::Revocations>,
) -> Result<AuthFlows, ServerError> {
    let tokens = access_tokens(config)?;
    let sessions = refresh_sessions_on(config, db, revocations)?;
    let mailer: Arc<dyn Mailer> = match &config.smtp_url {
        Some(url) => {
            let mailer = tenantkit_auth::SmtpMailer::from_url(url, &config.mail_from)
                .map_err(|e| ServerError::Keys(e.to_string()))?;
            tracing::info!(relay = %redact_url(url), "emails go through SMTP");
            Arc::new(mailer)
        }
        None => Arc::new(OutboxMailer::new(config.data_dir.join("outbox"))),
    };
    let mut passwords = tenantkit_auth::PasswordHasher::new();
    if let Some(waiting) = config.password_queue {
        passwords = passwords.with_queue_limit(waiting);
    }
    let mfa = tenantkit_auth::mfa::Mfa::new(secret_keyring(config)?, config.mfa_issuer.as_str());
    Ok(AuthFlows::new(db.clone(), tokens, sessions)
        .with_mfa(mfa)
        .with_passwords(passwords)
        .with_limits(Arc::new(RateLimits::new(config.rate_limits())))
        .with_mailer(mailer)
        .with_public_url(&config.public_url())
        .with_signup_mode(config.signup_mode.into())
        .with_member_events(Arc::new(tenantkit_realtime::MemberEventsToRealtime)))
}

/// The key that seals secrets at rest (second-factor seeds, single sign-on client secrets):
/// `TENANTKIT_SECRET_KEY_FILE`, or `<data dir>/secret.key`, made on first use.
///
/// # Errors
/// [`ServerError::Keys`] when the key cannot be loaded or made.
pub(crate) fn secret_keyring(config: &Config) -> Result<tenantkit_core::Keyring, ServerError> {
    let key_file = config
        .secret_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("secret.key"));
    let key = tenantkit_core::SecretKey::load_or_create(&config.secret_key_id, &key_file)
        .map_err(|e| ServerError::Keys(format!("the secret key {}: {e}", key_file.display())))?;
    Ok(tenantkit_core::Keyring::new(key))
}

/// Single sign-on over `auth` as `config` says: the public URL, the app URL, the CORS
/// origins as allowed redirect targets, the operator's allowed issuer hosts.
///
/// # Errors
/// [`ServerError::Keys`] when the secret key or a URL setting is bad.
pub(crate) fn sso(
    config: &Config,
    auth: &AuthFlows,
) -> Result<tenantkit_auth::sso::Sso, ServerError> {
    use tenantkit_auth::sso::{OutboundPolicy, Sso, SsoConfig};
    let bad = |e: tenantkit_auth::Error| ServerError::Keys(format!("single sign-on: {e}"));
    let mut settings = SsoConfig::new(&config.public_url()).map_err(bad)?;
    if let Some(app) = &config.sso_app_url {
        settings = settings.with_app_url(app).map_err(bad)?;
    }
    for origin in &config.cors_origins {
        settings = settings.allow_redirect_origin(origin);
    }
    let outbound = config
        .sso_allow_hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .fold(OutboundPolicy::new(), OutboundPolicy::allow_host);
    Sso::new(
        auth.clone(),
        secret_keyring(config)?,
        settings.with_outbound(outbound),
    )
    .map_err(bad)
}

/// The upload lifecycle configured by `config` over `db`: the local store under
/// `<data dir>/uploads` (and the service answering its URLs), or the S3 bucket.
///
/// # Errors
/// [`ServerError::Keys`] or [`ServerError::Storage`] when the store cannot be set up.
pub fn storage(
    config: &Config,
    db: &Database,
) -> Result<
    (
        tenantkit_storage::Storage,
        Option<tenantkit_storage::LocalStorageService>,
    ),
    ServerError,
> {
    let (store, local): (Arc<dyn tenantkit_storage::ObjectStore>, _) = match config.storage {
        crate::StorageBackend::Local => {
            let key = crate::keys::load_storage_key(config)?;
            let store = tenantkit_storage::LocalStore::new(
                config.data_dir.join("uploads"),
                &format!("{}/v1/storage", config.public_url()),
                &key,
            )?
            .with_transfer_limits(config.transfer_limits());
            let service = store.service();
            (Arc::new(store), Some(service))
        }
        crate::StorageBackend::S3 => {
            let bucket = config.s3_bucket.as_deref().ok_or_else(|| {
                ServerError::Storage(tenantkit_storage::Error::Config(
                    "TENANTKIT_STORAGE=s3 needs TENANTKIT_S3_BUCKET".into(),
                ))
            })?;
            let s3 = tenantkit_storage::S3Config::from_env(
                bucket,
                config.s3_endpoint.as_deref(),
                config.s3_region.as_deref(),
            )?;
            tracing::info!(bucket, endpoint = ?config.s3_endpoint, "files go to S3");
            (Arc::new(tenantkit_storage::S3Store::new(s3)), None)
        }
    };
    let mut limits = tenantkit_storage::Limits {
        max_file_bytes: config.upload_max_bytes,
        ..tenantkit_storage::Limits::default()
    };
    let types: Vec<String> = config
        .upload_types
        .iter()
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if !types.is_empty() {
        limits.allowed_types = types;
    }
    let storage = tenantkit_storage::Storage::new(db.clone(), store)
        .with_limits(limits)
        .with_quota(Arc::new(tenantkit_storage::FixedQuota(Some(
            config.storage_quota_bytes,
        ))))
        // Files may hang off projects (`parent_id`), seen by whoever sees the project.
        .with_parent(tenantkit_storage::FileParent::new("projects", "id")?.team_restricted());
    Ok((storage, local))
}

/// The plans: `TENANTKIT_PLANS_FILE`, else only the free plan. One rule for the free plan
/// either way: a `[plans.free]` in the file says what it grants; otherwise it has unlimited
/// seats and `TENANTKIT_STORAGE_QUOTA_BYTES` of storage. Logs which limits the free plan has.
///
/// # Errors
/// [`ServerError::Billing`] for an unreadable or invalid plans file.
pub fn plans(config: &Config) -> Result<tenantkit_billing::PlanBook, ServerError> {
    let built_in_free = tenantkit_billing::Plan {
        stripe_prices: Vec::new(),
        seats: None,
        storage_bytes: Some(config.storage_quota_bytes),
        features: Vec::new(),
    };
    let plans = match &config.plans_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServerError::Billing(tenantkit_billing::Error::Config(format!(
                    "plans file {}: {e}",
                    path.display()
                )))
            })?;
            tenantkit_billing::Plans::from_toml_with_free(&text, built_in_free)?
        }
        None => tenantkit_billing::Plans::with_free(built_in_free),
    };
    let (free, configured) = plans.free();
    let limit =
        |value: Option<u64>| value.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    tracing::info!(
        seats = %limit(free.seats),
        storage_bytes = %limit(free.storage_bytes),
        source = if configured {
            "[plans.free] of the plans file"
        } else {
            "built-in (unlimited seats, TENANTKIT_STORAGE_QUOTA_BYTES)"
        },
        "free plan limits"
    );
    Ok(tenantkit_billing::PlanBook::new(Arc::new(plans)))
}
