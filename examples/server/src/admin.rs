//! Operator commands: `tenant create` and `user create`.

use std::io::BufRead as _;

use tenantkit_auth::{Password, PasswordHasher};
use tenantkit_core::{Email, Error, NewTenant, NewUser, Role, Slug, TenantScope};

use crate::{open_database, Config, ServerError};

/// The new account's password: `TENANTKIT_PASSWORD`, else the first line of standard input.
/// Never a command-line argument, which would land in shell history and `ps`.
///
/// # Errors
/// [`ServerError::Io`] when standard input cannot be read.
pub fn read_password() -> Result<Password, ServerError> {
    if let Ok(password) = std::env::var("TENANTKIT_PASSWORD") {
        return Ok(Password::new(password));
    }
    eprintln!("password (one line on standard input):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Password::new(line.trim_end_matches(['\r', '\n'])))
}

/// Creates a tenant with a new owner account; prints `{tenant_id, slug, owner_id}`.
///
/// # Errors
/// Validation (bad email, name, slug or weak password), conflicts, database errors.
pub async fn create_tenant(
    config: &Config,
    name: &str,
    slug: Option<&str>,
    owner_email: &str,
    password: &Password,
) -> Result<serde_json::Value, ServerError> {
    let email = Email::parse(owner_email)?;
    let slug = slug.map(Slug::parse).transpose()?;
    let hash = PasswordHasher::new()
        .hash_new(password, "password")
        .await
        .map_err(auth_error)?;
    let db = open_database(config).await?;
    let (tenant, mut tx) = db
        .create_tenant(NewTenant {
            name: name.to_owned(),
            slug,
        })
        .await?;
    let owner = tx
        .create_user(NewUser {
            email,
            password_hash: Some(hash),
        })
        .await?;
    tx.add_member(owner.id, Role::Owner).await?;
    tx.commit().await?;
    db.close().await;
    Ok(serde_json::json!({ "tenant_id": tenant.id, "slug": tenant.slug, "owner_id": owner.id }))
}

/// Adds a user to a tenant with `role`, creating the account (with `password`) if the email
/// is new; prints `{user_id, tenant_id, role, created}`.
///
/// # Errors
/// Unknown tenant, validation, conflicts (already a member), database errors.
pub async fn create_user(
    config: &Config,
    email: &str,
    tenant_slug: &str,
    role: Role,
    password: Option<&Password>,
) -> Result<serde_json::Value, ServerError> {
    let email = Email::parse(email)?;
    let slug = Slug::parse(tenant_slug)?;
    let db = open_database(config).await?;
    let tenant = db
        .find_tenant_by_slug(&slug)
        .await?
        .ok_or(Error::NotFound)?;
    let existing = db.find_user_by_email(&email).await?;
    // The operator acts for this tenant; its id comes from our own records.
    let mut tx = db.begin(&TenantScope::for_system(tenant.id)).await?;
    let (user, created) = match existing {
        Some(user) => (user, false),
        None => {
            let password = password
                .ok_or_else(|| Error::invalid("password", "a new account needs a password"))?;
            let hash = PasswordHasher::new()
                .hash_new(password, "password")
                .await
                .map_err(auth_error)?;
            (
                tx.create_user(NewUser {
                    email,
                    password_hash: Some(hash),
                })
                .await?,
                true,
            )
        }
    };
    tx.add_member(user.id, role).await?;
    tx.commit().await?;
    db.close().await;
    Ok(
        serde_json::json!({ "user_id": user.id, "tenant_id": tenant.id, "role": role, "created": created }),
    )
}

fn auth_error(err: tenantkit_auth::Error) -> ServerError {
    match err {
        tenantkit_auth::Error::WeakPassword(errors) => ServerError::Core(Error::Validation(errors)),
        other => ServerError::Keys(other.to_string()),
    }
}

/// Verifies every tenant's audit chain; returns one JSON line per tenant and whether all
/// chains are intact.
///
/// # Errors
/// Database errors.
pub async fn verify_audit(config: &Config) -> Result<(Vec<serde_json::Value>, bool), ServerError> {
    let db = open_database(config).await?;
    let mut report = Vec::new();
    let mut intact = true;
    for tenant in db.tenant_ids().await? {
        // The operator verifies every tenant; ids come from the database itself.
        let mut tx = db.begin_read(&TenantScope::for_system(tenant)).await?;
        let line = match tx.verify_audit_chain().await? {
            None => serde_json::json!({ "tenant_id": tenant, "status": "ok" }),
            Some((seq, problem)) => {
                intact = false;
                serde_json::json!({ "tenant_id": tenant, "status": "broken", "seq": seq, "problem": problem })
            }
        };
        report.push(line);
    }
    db.close().await;
    Ok((report, intact))
}
