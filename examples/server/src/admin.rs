//! Operator commands: `tenant create` and `user create`.

use std::io::BufRead as _;

use tenantkit_auth::Password;
use tenantkit_core::{ChainHead, ClientInfo, Role, TenantScope};

use crate::{Config, ServerError, auth_flows, open_database};

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

/// Creates a tenant with a new owner account (audited); prints `{tenant_id, slug, owner_id}`.
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
    let db = open_database(config).await?;
    let flows = auth_flows(config, &db)?;
    let result = flows
        .create_tenant(&ClientInfo::operator(), name, slug, owner_email, password)
        .await;
    db.close().await;
    Ok(serde_json::to_value(result?).unwrap_or_default())
}

/// Adds `email` to a tenant with `role` (audited): a verified account is attached; for an
/// unknown address or an unverified account an invitation is mailed instead (see
/// `AuthFlows::add_user`). Prints `{outcome, ...}`.
///
/// # Errors
/// Unknown tenant, validation, conflicts (already a member), database errors.
pub async fn create_user(
    config: &Config,
    email: &str,
    tenant_slug: &str,
    role: Role,
) -> Result<serde_json::Value, ServerError> {
    let db = open_database(config).await?;
    let flows = auth_flows(config, &db)?;
    let result = flows
        .add_user(&ClientInfo::operator(), email, tenant_slug, role)
        .await;
    db.close().await;
    Ok(serde_json::to_value(result?).unwrap_or_default())
}

/// Marks `domain` verified for the tenant `slug`'s single sign-on (audited as
/// `sso.domain_verified`); prints `{tenant, domain, verified}`.
///
/// # Errors
/// Unknown tenant or a domain it does not claim (404), a domain another tenant verified
/// (409), database errors.
pub async fn sso_verify_domain(
    config: &Config,
    slug: &str,
    domain: &str,
) -> Result<serde_json::Value, ServerError> {
    let db = open_database(config).await?;
    let flows = auth_flows(config, &db)?;
    let sso = crate::run::parts::sso(config, &flows)?;
    let parsed = tenantkit_core::Slug::parse(slug).map_err(tenantkit_auth::Error::from);
    let result = match parsed {
        Ok(parsed) => {
            sso.verify_domain(&ClientInfo::operator(), &parsed, domain)
                .await
        }
        Err(err) => Err(err),
    };
    db.close().await;
    result?;
    Ok(serde_json::json!({ "tenant": slug, "domain": domain, "verified": true }))
}

/// Verifies every tenant's audit chain: hashes, order, the anchors of the audit key and, with
/// `checkpoint` (a file written by [`audit_checkpoint`]), that no chain was cut or rewritten
/// since. Returns one JSON line per tenant and whether all chains are intact.
///
/// # Errors
/// Database errors; an unreadable checkpoint file.
pub async fn verify_audit(
    config: &Config,
    checkpoint: Option<&std::path::Path>,
) -> Result<(Vec<serde_json::Value>, bool), ServerError> {
    let heads: Vec<ChainHead> = match checkpoint {
        Some(path) => {
            let text = std::fs::read(path)?;
            serde_json::from_slice(&text).map_err(|e| {
                ServerError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?
        }
        None => Vec::new(),
    };
    let key = crate::keys::load_audit_key(config)?;
    let db = open_database(config).await?;
    let mut report = Vec::new();
    let mut intact = true;
    let mut tenants = db.tenant_ids().await?;
    // A checkpointed tenant whose row vanished is itself a finding.
    for head in &heads {
        if !tenants.contains(&head.tenant_id) {
            tenants.push(head.tenant_id);
        }
    }
    for tenant in tenants {
        // The operator verifies every tenant; ids come from the database and the checkpoint.
        let head = heads.iter().find(|h| h.tenant_id == tenant);
        let mut tx = db.begin_read(&TenantScope::for_system(tenant)).await?;
        let line = match tx.verify_audit_chain(Some(&key), head).await? {
            None => serde_json::json!({ "tenant_id": tenant, "status": "ok" }),
            Some(problem) => {
                intact = false;
                serde_json::json!({
                    "tenant_id": tenant, "status": "broken",
                    "seq": problem.seq(), "problem": problem.describe(),
                })
            }
        };
        report.push(line);
    }
    db.close().await;
    Ok((report, intact))
}

/// The head of every tenant's chain, as JSON, to keep outside the database (and pass to
/// `audit verify --checkpoint` later): a chain cut or rewritten after it is then detected.
///
/// # Errors
/// Database errors.
pub async fn audit_checkpoint(config: &Config) -> Result<Vec<ChainHead>, ServerError> {
    let db = open_database(config).await?;
    let mut heads = Vec::new();
    for tenant in db.tenant_ids().await? {
        let mut tx = db.begin_read(&TenantScope::for_system(tenant)).await?;
        heads.push(tx.audit_head().await?);
    }
    db.close().await;
    Ok(heads)
}

/// Deletes the tenant `slug` (audited): its members are removed and their sessions there end;
/// the tenant row and its audit chain stay, verifiable and exportable.
///
/// # Errors
/// Unknown tenant, database errors.
pub async fn delete_tenant(config: &Config, slug: &str) -> Result<serde_json::Value, ServerError> {
    let db = open_database(config).await?;
    let flows = auth_flows(config, &db)?;
    let result = flows.delete_tenant(&ClientInfo::operator(), slug).await;
    db.close().await;
    let tenant = result?;
    Ok(serde_json::json!({ "tenant_id": tenant.id, "slug": tenant.slug, "deleted": true }))
}

/// Removes expired pending uploads and orphaned objects once; prints what it removed.
///
/// # Errors
/// Database and object-store errors.
pub async fn storage_sweep(config: &Config) -> Result<serde_json::Value, ServerError> {
    let db = open_database(config).await?;
    let (storage, _) = crate::storage(config, &db)?;
    let result = storage.sweep(tenantkit_core::now()).await;
    db.close().await;
    let report = result?;
    Ok(serde_json::json!({
        "expired_uploads": report.expired_uploads,
        "orphans": report.orphans,
    }))
}

/// Stored Stripe events, newest first, optionally only those in `state`
/// (`pending`, `processing`, `done`, `dead`), as JSON lines.
///
/// # Errors
/// An unknown state, database errors.
pub async fn billing_events(
    config: &Config,
    state: Option<&str>,
) -> Result<Vec<serde_json::Value>, ServerError> {
    let state = match state {
        None => None,
        Some("pending") => Some(tenantkit_billing::EventState::Pending),
        Some("processing") => Some(tenantkit_billing::EventState::Processing),
        Some("done") => Some(tenantkit_billing::EventState::Done),
        Some("dead") => Some(tenantkit_billing::EventState::Dead),
        Some(_) => {
            return Err(ServerError::Core(tenantkit_core::Error::invalid(
                "state",
                "must be pending, processing, done or dead",
            )));
        }
    };
    let db = open_database(config).await?;
    let result = tenantkit_billing::Inbox::new(db.clone())
        .list(state, 1000)
        .await;
    db.close().await;
    Ok(result?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "event_id": e.event_id, "type": e.event_type, "created": e.created,
                "state": e.state, "attempts": e.attempts, "last_error": e.last_error,
            })
        })
        .collect())
}

/// Puts a stored event back in line for the worker (attempts reset).
///
/// # Errors
/// An unknown event, database errors.
pub async fn billing_replay(config: &Config, event_id: &str) -> Result<(), ServerError> {
    let db = open_database(config).await?;
    let result = tenantkit_billing::Inbox::new(db.clone())
        .replay(event_id)
        .await;
    db.close().await;
    if result? {
        Ok(())
    } else {
        Err(ServerError::Core(tenantkit_core::Error::NotFound))
    }
}
