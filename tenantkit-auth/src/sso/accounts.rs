//! The account a provider's identity signs in as: linked by (issuer, subject), made just in
//! time, or linked from a session.

use super::*;

impl Sso {
    /// The account `identity` signs in as, a member of the connection's tenant: linked by
    /// (issuer, subject); else, for an unknown address, made just in time (verified address
    /// in a domain the tenant verified). A linked account that is not a member joins by the
    /// same rule.
    pub(super) async fn account(
        &self,
        client: &ClientInfo,
        connection: &ConnectionRow,
        identity: &Identity,
    ) -> Result<(User, tenantkit_core::Membership)> {
        let tenant = connection.tenant_id;
        let mut tx = self.flows.db().begin_system_read().await?;
        let linked = linked_user(&mut tx, identity).await?;
        tx.commit().await?;
        let existing = match linked {
            Some(user) => Some(
                self.flows
                    .db()
                    .find_user(user)
                    .await?
                    .ok_or(tenantkit_core::Error::NotFound)?,
            ),
            None => None,
        };
        if let Some(user) = &existing
            && let Some(membership) = self.flows.db().membership_of(user.id, tenant).await?
        {
            return Ok((user.clone(), membership));
        }
        // Joining (a new account, or a linked one new to this tenant): only a verified address
        // in a domain this tenant verified.
        let email = identity
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or_else(|| self.refused(tenant, "the provider gave no usable email address"))?;
        if !identity.email_verified {
            return Err(self.refused(tenant, "the provider has not verified the email address"));
        }
        let domain = email.domain().to_owned();
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        tx.require_live_tenant().await?;
        let verified = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sso_domains WHERE tenant_id = $1 AND domain = $2 \
                 AND verified_at IS NOT NULL AND connection_id = $3",
            )
            .bind(tenant)
            .bind(&domain)
            .bind(connection.id)
            .fetch_one(c)
            .await
        })?;
        if verified == 0 {
            return Err(self.refused(tenant, "the address's domain is not verified by the tenant"));
        }
        let role = connection
            .default_role
            .parse::<Role>()
            .unwrap_or(Role::Member);
        let user = match existing {
            Some(user) => user,
            None => {
                if self.flows.db().find_user_by_email(&email).await?.is_some() {
                    // Never taken over by email alone: the account proves itself first.
                    return Err(tenantkit_core::Error::Conflict(
                        "an account with this address exists: sign in with its password and \
                         link the identity provider from there"
                            .into(),
                    )
                    .into());
                }
                let user = tx
                    .create_user(NewUser {
                        email: email.clone(),
                        password_hash: None,
                    })
                    .await?;
                tx.mark_email_verified(user.id, self.now()).await?;
                link(&mut tx, identity, user.id, self.now()).await?;
                let event = client
                    .event("sso.linked", Some(user.id))
                    .target("user", user.id)
                    .details(serde_json::json!({ "issuer": identity.issuer }));
                tx.audit(event).await?;
                user
            }
        };
        let membership = self.flows.join_tenant(&mut tx, user.id, role).await?;
        let event = client
            .event("sso.jit_joined", Some(user.id))
            .target("user", user.id)
            .details(serde_json::json!({ "issuer": identity.issuer, "role": role.as_str() }));
        tx.audit(event).await?;
        tx.commit().await?;
        Ok((user, membership))
    }

    /// Links `identity` to `account` (a link the account asked for from a signed-in session):
    /// only when the provider vouches for the account's own address, and the identity is not
    /// another account's. The account must still be a member of the connection's tenant.
    pub(super) async fn link(
        &self,
        client: &ClientInfo,
        connection: &ConnectionRow,
        identity: &Identity,
        account: UserId,
    ) -> Result<User> {
        let tenant = connection.tenant_id;
        let user = self
            .flows
            .db()
            .find_user(account)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let vouched = identity
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .is_some_and(|e| e == user.email);
        if !vouched || !identity.email_verified {
            return Err(self.refused(
                tenant,
                "a link needs the provider to vouch for the account's own address",
            ));
        }
        if self
            .flows
            .db()
            .membership_of(user.id, tenant)
            .await?
            .is_none()
        {
            return Err(self.refused(tenant, "the account is no longer a member"));
        }
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        let linked = linked_user(&mut tx, identity).await?;
        match linked {
            Some(owner) if owner == user.id => {}
            Some(_) => {
                return Err(tenantkit_core::Error::Conflict(
                    "this identity is linked to another account".into(),
                )
                .into());
            }
            None => {
                link(&mut tx, identity, user.id, self.now()).await?;
                let event = client
                    .event("sso.linked", Some(user.id))
                    .target("user", user.id)
                    .details(serde_json::json!({ "issuer": identity.issuer, "asked": true }));
                tx.audit(event).await?;
            }
        }
        tx.commit().await?;
        Ok(user)
    }

    pub(super) fn refused(&self, tenant: TenantId, reason: &'static str) -> Error {
        tracing::info!(tenant = %tenant, reason, "sso: joining refused");
        Error::Core(tenantkit_core::Error::Forbidden)
    }
}

pub(super) async fn link(
    tx: &mut tenantkit_core::TenantTx,
    identity: &Identity,
    user: UserId,
    now: OffsetDateTime,
) -> Result<()> {
    with_conn!(tx, |c| {
        sqlx::query(
            "INSERT INTO sso_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(user)
        .bind(now)
        .execute(c)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// The account `identity` is linked to, if any.
async fn linked_user<T: tenantkit_core::Transaction>(
    tx: &mut T,
    identity: &Identity,
) -> Result<Option<UserId>> {
    Ok(with_conn!(tx, |c| {
        sqlx::query_scalar::<_, UserId>(
            "SELECT user_id FROM sso_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .fetch_optional(c)
        .await
    })?)
}
