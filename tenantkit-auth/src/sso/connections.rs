//! A tenant's connections to its identity provider, their domains and discovery by email.

use super::*;

impl Sso {
    /// Connects the caller's tenant to an identity provider (admin+): the issuer is checked
    /// and discovered first (nothing is stored when it cannot be), the secret sealed, the
    /// domains recorded unverified (unless this tenant verified them already). Audited as
    /// `sso.connection_created`.
    ///
    /// # Errors
    /// `403` below admin; `422` for a bad field (an issuer that is not `https`, a multi-tenant
    /// template, one whose discovery failed; a bad domain; `owner` as the default role);
    /// `409` when the tenant has a connection to this issuer.
    pub async fn create_connection(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        new: NewSsoConnection,
    ) -> Result<SsoConnection> {
        principal.require(Permission::ManageTenant)?;
        self.flows
            .limits()
            .check_account_action("sso_connection", principal.user_id())
            .await?;
        let issuer = check_issuer(&new.issuer, self.http.policy())?;
        if new.client_id.is_empty() || new.client_id.len() > 255 {
            return Err(invalid("client_id", "must be 1 to 255 characters"));
        }
        if new.client_secret.is_empty() || new.client_secret.len() > 1024 {
            return Err(invalid("client_secret", "must be 1 to 1024 characters"));
        }
        let domains = check_domains(&new.domains)?;
        let default_role = new.default_role.unwrap_or(Role::Member);
        if default_role == Role::Owner {
            return Err(invalid("default_role", "cannot be owner"));
        }
        // Discovered before anything is stored: a connection that cannot work is refused.
        let provider = self.discover_provider(&issuer).await.map_err(|err| {
            tracing::info!(issuer = %issuer, error = %err, "sso: discovery failed");
            invalid("issuer", "discovery failed: the provider's metadata could not be read or does not match this issuer")
        })?;
        let id = SsoConnectionId::new();
        let sealed = self
            .keyring
            .encrypt(new.client_secret.as_bytes(), &secret_context(id))
            .map_err(|e| Error::Core(e.into()))?;
        let now = self.now();
        let mut tx = self.flows.db().begin(&TenantScope::of(principal)).await?;
        let tenant = tx.tenant_id();
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO sso_connections (id, tenant_id, issuer, client_id, client_secret, \
                 default_role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(tenant)
            .bind(&issuer)
            .bind(&new.client_id)
            .bind(&sealed)
            .bind(default_role.as_str())
            .bind(now)
            .execute(&mut *c)
            .await?;
            for domain in &domains {
                // A domain another live connection of the tenant claimed stays that one's.
                sqlx::query(
                    "INSERT INTO sso_domains (tenant_id, domain, dns_token, created_at, \
                     connection_id) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, domain) DO UPDATE \
                     SET connection_id = excluded.connection_id \
                     WHERE sso_domains.connection_id IS NULL",
                )
                .bind(tenant)
                .bind(domain)
                .bind(OneTimeToken::generate().expose())
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        })
        .map_err(|e| match tenantkit_core::Error::from(e) {
            tenantkit_core::Error::Conflict(_) => tenantkit_core::Error::Conflict(
                "the tenant has a connection to this issuer; delete it first".into(),
            ),
            other => other,
        })?;
        let event = client
            .event("sso.connection_created", Some(principal.user_id()))
            .target("sso_connection", id)
            .details(serde_json::json!({
                "issuer": issuer, "client_id": new.client_id, "domains": domains,
                "default_role": default_role.as_str(),
            }));
        tx.audit(event).await?;
        let connection = connection_view(&mut tx, tenant, id).await?;
        tx.commit().await?;
        self.remember(id, provider);
        connection.ok_or_else(|| tenantkit_core::Error::NotFound.into())
    }

    /// The caller's tenant's connections (admin+), oldest first; never their secrets.
    ///
    /// # Errors
    /// `403` below admin; storage errors.
    pub async fn connections(&self, principal: &Principal) -> Result<Vec<SsoConnection>> {
        principal.require(Permission::ManageTenant)?;
        let mut tx = self
            .flows
            .db()
            .begin_read(&TenantScope::of(principal))
            .await?;
        let tenant = tx.tenant_id();
        let ids = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, SsoConnectionId>(
                "SELECT id FROM sso_connections WHERE tenant_id = $1 ORDER BY id",
            )
            .bind(tenant)
            .fetch_all(c)
            .await
        })?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(connection_view(&mut tx, tenant, id).await?);
        }
        tx.commit().await?;
        Ok(all)
    }

    /// Deletes a connection of the caller's tenant (admin+); logins under way through it end.
    /// Accounts keep their links (a new connection to the same issuer finds them); its domains
    /// stay claimed (and verified) for the next connection that names them. Audited as
    /// `sso.connection_deleted`.
    ///
    /// # Errors
    /// `403` below admin; `404` for another tenant's or an unknown connection; `409` for the
    /// last connection of a tenant that requires single sign-on.
    pub async fn delete_connection(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        id: SsoConnectionId,
    ) -> Result<()> {
        principal.require(Permission::ManageTenant)?;
        let mut tx = self.flows.db().begin(&TenantScope::of(principal)).await?;
        let tenant = tx.tenant_id();
        let issuer = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "DELETE FROM sso_connections WHERE id = $1 AND tenant_id = $2 RETURNING issuer",
            )
            .bind(id)
            .bind(tenant)
            .fetch_optional(c)
            .await
        })?
        .ok_or(tenantkit_core::Error::NotFound)?;
        // "SSO required" needs a connection: the last one stays while the policy is on.
        if self.flows.tenant_policy(&mut tx).await?.sso_required
            && crate::flows::sso_connections(&mut tx, tenant).await? == 0
        {
            return Err(tenantkit_core::Error::Conflict(
                "the tenant requires single sign-on: turn that off before deleting its last \
                 connection"
                    .into(),
            )
            .into());
        }
        let event = client
            .event("sso.connection_deleted", Some(principal.user_id()))
            .target("sso_connection", id)
            .details(serde_json::json!({ "issuer": issuer }));
        tx.audit(event).await?;
        tx.commit().await?;
        self.forget(id);
        Ok(())
    }

    /// Marks `domain` verified for the tenant `slug` (the operator's word, `sso verify-domain`).
    /// Audited as `sso.domain_verified`.
    ///
    /// # Errors
    /// `404` when the tenant does not claim the domain; `409` when another tenant verified it.
    pub async fn verify_domain(
        &self,
        client: &ClientInfo,
        slug: &Slug,
        domain: &str,
    ) -> Result<()> {
        let tenant = self
            .flows
            .db()
            .find_tenant_by_slug(slug)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        self.mark_verified(client, tenant.id, None, domain, "operator")
            .await
    }

    /// Verifies a domain the caller's tenant claims (admin+) by its DNS TXT record (see
    /// [`SsoDomain::dns_record`]), read through `resolver`. Audited as `sso.domain_verified`.
    ///
    /// # Errors
    /// `403` below admin; `404` when the tenant does not claim the domain; `422` when the
    /// record is not there (yet); `409` when another tenant verified it.
    pub async fn verify_domain_by_dns(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        domain: &str,
        resolver: &dyn TxtResolver,
    ) -> Result<()> {
        principal.require(Permission::ManageTenant)?;
        self.flows
            .limits()
            .check_account_action("sso_domain", principal.user_id())
            .await?;
        let domain = domain.trim().to_ascii_lowercase();
        let mut tx = self
            .flows
            .db()
            .begin_read(&TenantScope::of(principal))
            .await?;
        let tenant = tx.tenant_id();
        let token = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "SELECT dns_token FROM sso_domains WHERE tenant_id = $1 AND domain = $2",
            )
            .bind(tenant)
            .bind(&domain)
            .fetch_optional(c)
            .await
        })?
        .ok_or(tenantkit_core::Error::NotFound)?;
        tx.commit().await?;
        let record = dns_record(&domain, &token);
        let found = resolver.txt(&record.name).await?;
        let expected = record.value.as_bytes();
        if !found
            .iter()
            .any(|txt| bool::from(txt.trim().as_bytes().ct_eq(expected)))
        {
            return Err(invalid("domain", "the TXT record is not there (yet)"));
        }
        self.mark_verified(client, tenant, Some(principal.user_id()), &domain, "dns")
            .await
    }

    pub(super) async fn mark_verified(
        &self,
        client: &ClientInfo,
        tenant: TenantId,
        actor: Option<UserId>,
        domain: &str,
        how: &str,
    ) -> Result<()> {
        let domain = domain.trim().to_ascii_lowercase();
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        let now = self.now();
        let marked = with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE sso_domains SET verified_at = COALESCE(verified_at, $1) \
                 WHERE tenant_id = $2 AND domain = $3",
            )
            .bind(now)
            .bind(tenant)
            .bind(&domain)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(|e| match tenantkit_core::Error::from(e) {
            tenantkit_core::Error::Conflict(_) => {
                tenantkit_core::Error::Conflict("another tenant verified this domain".into())
            }
            other => other,
        })?;
        if marked == 0 {
            return Err(tenantkit_core::Error::NotFound.into());
        }
        let event = client
            .event("sso.domain_verified", actor)
            .target("sso_domain", &domain)
            .details(serde_json::json!({ "by": how }));
        tx.audit(event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The login URL for `email`: of the tenant that verified its domain and has a
    /// connection. `None` otherwise (an unverified claim leads nowhere).
    ///
    /// # Errors
    /// [`Error::RateLimited`]; storage errors.
    pub async fn discover(&self, client: &ClientInfo, email: &str) -> Result<Option<SsoLoginUrl>> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let Ok(email) = Email::parse(email) else {
            return Ok(None);
        };
        let domain = email.domain();
        let mut tx = self.flows.db().begin_system_read().await?;
        let slug = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "SELECT t.slug FROM sso_domains d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE d.domain = $1 AND d.verified_at IS NOT NULL AND t.deleted_at IS NULL \
                 AND d.connection_id IS NOT NULL",
            )
            .bind(domain)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(slug
            .and_then(|s| Slug::parse(&s).ok())
            .map(|slug| SsoLoginUrl {
                login_url: self.config.login_url(&slug),
            }))
    }
}

/// The connection `id` of `tenant` as answered, read in `tx`.
pub(super) async fn connection_view(
    tx: &mut tenantkit_core::TenantTx,
    tenant: TenantId,
    id: SsoConnectionId,
) -> Result<Option<SsoConnection>> {
    let Some(row) = find_connection(tx, tenant, Some(id), None).await? else {
        return Ok(None);
    };
    let domains = with_conn!(tx, |c| {
        sqlx::query_as::<_, (String, String, Option<OffsetDateTime>)>(
            "SELECT domain, dns_token, verified_at FROM sso_domains WHERE tenant_id = $1 \
             AND connection_id = $2 ORDER BY domain",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(c)
        .await
    })?;
    Ok(Some(SsoConnection {
        id: row.id,
        issuer: row.issuer,
        client_id: row.client_id,
        default_role: row.default_role.parse::<Role>().unwrap_or(Role::Member),
        domains: domains
            .into_iter()
            .map(|(domain, token, verified_at)| SsoDomain {
                dns_record: dns_record(&domain, &token),
                verified: verified_at.is_some(),
                domain,
            })
            .collect(),
        created_at: row.created_at,
    }))
}

pub(super) fn dns_record(domain: &str, token: &str) -> DnsRecord {
    DnsRecord {
        name: format!("_tenantkit-challenge.{domain}"),
        value: format!("tenantkit-domain-verification={token}"),
    }
}

pub(super) fn secret_context(id: SsoConnectionId) -> String {
    format!("sso-client-secret:{id}")
}
