//! A login: sent to the provider, its callback, the exchange of its code, and linking an
//! account from a session.

use super::*;

impl Sso {
    /// Starts a login into the tenant `slug` through its connection (the oldest, when it has
    /// several): the provider's URL and the cookie binding the login to this browser.
    /// `redirect_to` is where the app wants the browser back (only the public URL's, the app
    /// URL's or an allowed origin); `login_hint` is passed to the provider.
    ///
    /// # Errors
    /// `404` for an unknown tenant or one without a connection; `422` for a `redirect_to`
    /// that is not allowed; [`Error::Sso`] when the provider cannot be reached;
    /// [`Error::RateLimited`].
    pub async fn start_login(
        &self,
        client: &ClientInfo,
        slug: &str,
        redirect_to: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let redirect_to = match redirect_to {
            None => self.config.app_url.clone(),
            Some(target) => url::Url::parse(target)
                .ok()
                .filter(|t| self.config.allows_redirect(t))
                .ok_or_else(|| invalid("redirect_to", "is not an allowed address"))?,
        };
        self.start(slug, redirect_to, login_hint, None, None).await
    }

    /// A login the provider started (OpenID Connect Core §4, the connection's
    /// `initiate_login_uri`, `GET /v1/sso/{tenant_slug}/initiate`): it only bounces into the
    /// normal login ([`Sso::start_login`]) through the tenant's connection to `iss`, with the
    /// provider's `login_hint`; `target_link_uri` is kept when it is an allowed address (the
    /// app URL otherwise). Nothing is accepted from it but where to start: the callback that
    /// follows is checked as any other (a callback nobody started is always refused).
    ///
    /// # Errors
    /// `422` without `iss`; `404` for an unknown tenant or one without a connection to `iss`;
    /// as [`Sso::start_login`].
    pub async fn start_initiated(
        &self,
        client: &ClientInfo,
        slug: &str,
        params: &InitiatedParams,
    ) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let issuer = params
            .iss
            .as_deref()
            .filter(|iss| !iss.is_empty())
            .ok_or_else(|| invalid("iss", "is required"))?;
        let redirect_to = params
            .target_link_uri
            .as_deref()
            .and_then(|t| url::Url::parse(t).ok())
            .filter(|t| self.config.allows_redirect(t))
            .unwrap_or_else(|| self.config.app_url.clone());
        self.start(
            slug,
            redirect_to,
            params.login_hint.as_deref(),
            Some(issuer),
            None,
        )
        .await
    }

    /// Asks for a link between the caller's account and its tenant's identity provider: a
    /// URL (`<public_url>/v1/sso/link/<ticket>`, single use, 2 minutes) for the caller's
    /// browser, which starts a login ([`Sso::start_link`]) whose identity is linked to this
    /// account. How an account with a password (which a provider's first sign-in never takes
    /// over) comes to sign in through its tenant's provider. The provider must vouch for
    /// the account's own address (verified), so a leaked URL links no one else's identity.
    ///
    /// # Errors
    /// `404` when the caller's tenant has no connection; [`Error::RateLimited`].
    pub async fn link_url(&self, principal: &Principal) -> Result<SsoLinkUrl> {
        self.flows
            .limits()
            .check_account_action("sso_link", principal.user_id())
            .await?;
        let tenant = principal.tenant_id();
        self.connection(tenant, None, None)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let ticket = OneTimeToken::generate();
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_link_tickets WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_link_tickets (ticket_hash, user_id, tenant_id, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&ticket.hash()[..])
            .bind(principal.user_id())
            .bind(tenant)
            .bind(now + LINK_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok(SsoLinkUrl {
            link_url: format!(
                "{}/v1/sso/link/{}",
                self.config.public_url.as_str().trim_end_matches('/'),
                ticket.expose()
            ),
        })
    }

    /// Opens a link ticket of [`Sso::link_url`] (once): the login, as [`Sso::start_login`]'s,
    /// that links the provider's identity to the ticket's account.
    ///
    /// # Errors
    /// `404` for an unknown, used or expired ticket; as [`Sso::start_login`].
    pub async fn start_link(&self, client: &ClientInfo, ticket: &str) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        if ticket.len() > 100 {
            return Err(tenantkit_core::Error::NotFound.into());
        }
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId)>(
                "DELETE FROM sso_link_tickets WHERE ticket_hash = $1 AND expires_at > $2 \
                 RETURNING user_id, tenant_id",
            )
            .bind(&OneTimeToken::new(ticket).hash()[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let (user, tenant) = row.ok_or(tenantkit_core::Error::NotFound)?;
        let tenant = self
            .flows
            .db()
            .find_tenant(tenant)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let app = self.config.app_url.clone();
        self.start(tenant.slug.as_str(), app, None, None, Some(user))
            .await
    }

    /// Sends a login into the tenant `slug` to its provider (the one of `issuer`, or its
    /// oldest connection).
    pub(super) async fn start(
        &self,
        slug: &str,
        redirect_to: url::Url,
        login_hint: Option<&str>,
        issuer: Option<&str>,
        link_user: Option<UserId>,
    ) -> Result<LoginStart> {
        let slug = Slug::parse(slug).map_err(|_| tenantkit_core::Error::NotFound)?;
        let tenant = self
            .flows
            .db()
            .find_tenant_by_slug(&slug)
            .await?
            .filter(|t| t.deleted_at.is_none())
            .ok_or(tenantkit_core::Error::NotFound)?;
        let connection = self
            .connection(tenant.id, None, issuer)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let provider = self.provider(&connection).await?;
        let oidc = self.client(&connection, &provider)?;
        let state = OneTimeToken::generate();
        let nonce = OneTimeToken::generate();
        let browser = OneTimeToken::generate();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = oidc
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                {
                    let s = state.expose().to_owned();
                    move || CsrfToken::new(s)
                },
                {
                    let n = nonce.expose().to_owned();
                    move || Nonce::new(n)
                },
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge);
        if let Some(hint) = login_hint.filter(|h| !h.is_empty() && h.len() <= 320) {
            request = request.set_login_hint(LoginHint::new(hint.to_owned()));
        }
        let (location, _, _) = request.url();
        let sealed_verifier = self
            .keyring
            .encrypt(
                verifier.secret().as_bytes(),
                &verifier_context(&state.hash()),
            )
            .map_err(|e| Error::Core(e.into()))?;
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_logins WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_logins (state_hash, connection_id, tenant_id, browser_hash, \
                 nonce, pkce_verifier, redirect_to, link_user, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&state.hash()[..])
            .bind(connection.id)
            .bind(tenant.id)
            .bind(&browser.hash()[..])
            .bind(nonce.expose())
            .bind(&sealed_verifier)
            .bind(redirect_to.as_str())
            .bind(link_user)
            .bind(now + LOGIN_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        let secure = if self.config.public_url.scheme() == "https" {
            "; Secure"
        } else {
            ""
        };
        Ok(LoginStart {
            location: location.to_string(),
            set_cookie: format!(
                "{SSO_COOKIE}={}; Path={}/v1/sso; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                browser.expose(),
                // Under the public URL's path, when it has one (behind a path prefix).
                self.config.public_url.path().trim_end_matches('/'),
                LOGIN_TTL.as_secs()
            ),
        })
    }

    /// The provider's redirect back: checks the login it answers (state, the browser's cookie,
    /// the issuer), exchanges the code, verifies the ID token, finds or (just in time) makes
    /// the account and its membership, and answers where to send the browser: the login's
    /// `redirect_to` with `sso_code=` (single use, 60 s) for [`Sso::exchange`].
    ///
    /// # Errors
    /// [`Error::Sso`] for an unknown, used or expired state, another browser's, a provider's
    /// refusal, a failed exchange or an ID token that does not verify; `403` when the account
    /// may not join the tenant (an unverified address, a domain the tenant has not verified);
    /// `409` when a password account has the address (it must link first).
    pub async fn callback(
        &self,
        client: &ClientInfo,
        params: &CallbackParams,
        browser_cookie: Option<&str>,
    ) -> Result<String> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let state = params
            .state
            .as_deref()
            .filter(|s| s.len() <= 100)
            .ok_or(Error::Sso("no state: a callback nobody started"))?;
        let login = self
            .take_login(&OneTimeToken::new(state).hash())
            .await?
            .ok_or(Error::Sso("unknown, used or expired state"))?;
        let bound = browser_cookie.is_some_and(|c| {
            bool::from(OneTimeToken::new(c).hash().ct_eq(&login.browser_hash[..]))
        });
        if !bound {
            return Err(self
                .failed(
                    client,
                    login.tenant,
                    "the login was started in another browser",
                )
                .await);
        }
        if let Some(error) = &params.error {
            tracing::info!(tenant = %login.tenant, error = %error.chars().take(64).collect::<String>(), "sso: the provider refused");
            return Err(self
                .failed(client, login.tenant, "the provider refused")
                .await);
        }
        let connection = self
            .connection(login.tenant, Some(login.connection), None)
            .await?
            .ok_or(Error::Sso("the connection was deleted"))?;
        // RFC 9207: a provider that names itself must be this connection's (mix-up attacks).
        if params
            .iss
            .as_deref()
            .is_some_and(|iss| iss != connection.issuer)
        {
            return Err(self.failed(client, login.tenant, "issuer mismatch").await);
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(Error::Sso("no code"))?;
        let identity = match self.identity(&connection, &login, code).await {
            Ok(identity) => identity,
            Err(reason) => return Err(self.failed(client, login.tenant, reason).await),
        };
        let user = match login.link_user {
            Some(account) => self.link(client, &connection, &identity, account).await?,
            None => self.account(client, &connection, &identity).await?.0,
        };
        let amr = std::iter::once(AMR_SSO.to_owned()).chain(identity.amr.iter().cloned());
        let code = OneTimeToken::generate();
        let token = format!("{CODE_PREFIX}{}", code.expose());
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_codes WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_codes (code_hash, user_id, tenant_id, credentials_epoch, amr, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&OneTimeToken::new(token.clone()).hash()[..])
            .bind(user.id)
            .bind(login.tenant)
            .bind(user.credentials_epoch)
            .bind(AuthMethods::new(amr).to_column())
            .bind(now + CODE_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        let mut target = url::Url::parse(&login.redirect_to)
            .map_err(|_| Error::Sso("stored redirect is not a URL"))?;
        target.query_pairs_mut().append_pair("sso_code", &token);
        Ok(target.to_string())
    }

    /// Trades a callback's code for a session in its tenant: the token pair (`amr`: `sso`,
    /// and `sso_mfa` when the provider said it checked more than one factor) and the
    /// account's memberships. The code works once, for 60 seconds. An account with a second
    /// factor of this server's on gives it as after a password (a provider never vouches for
    /// it); the tenant's "MFA required" is met by `sso_mfa`.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, used or expired code; [`Error::RateLimited`];
    /// [`Error::InvalidCredentials`] when the account's credentials changed meanwhile.
    pub async fn exchange(
        &self,
        client: &ClientInfo,
        request: &SsoExchange,
    ) -> Result<SignIn<LoggedIn>> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let unknown = Error::InvalidToken("unknown, used or expired sso code");
        if !request.code.starts_with(CODE_PREFIX) || request.code.len() > 100 {
            return Err(unknown);
        }
        let hash = OneTimeToken::new(request.code.clone()).hash();
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId, i64, String)>(
                "DELETE FROM sso_codes WHERE code_hash = $1 AND expires_at > $2 \
                 RETURNING user_id, tenant_id, credentials_epoch, amr",
            )
            .bind(&hash[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let Some((user_id, tenant, epoch, amr)) = row else {
            return Err(unknown);
        };
        self.flows
            .resume_sign_in(client, user_id, tenant, epoch, AuthMethods::from(amr))
            .await
    }

    /// Audits a failed callback of `tenant`'s login and answers the error.
    pub(super) async fn failed(
        &self,
        client: &ClientInfo,
        tenant: TenantId,
        reason: &'static str,
    ) -> Error {
        tracing::info!(tenant = %tenant, reason, "sso: login failed");
        let event = client
            .event("sso.failed", None)
            .target("tenant", tenant)
            .details(serde_json::json!({ "reason": reason }));
        if let Err(err) = self.flows.audit(tenant, event).await {
            tracing::error!(error = %err, "sso: auditing a failed login failed");
        }
        Error::Sso(reason)
    }

    /// The login `state_hash` names, taken (single use) while unexpired.
    pub(super) async fn take_login(&self, state_hash: &[u8; 32]) -> Result<Option<PendingLogin>> {
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, LoginRow>(
                "DELETE FROM sso_logins WHERE state_hash = $1 AND expires_at > $2 \
                 RETURNING connection_id, tenant_id, browser_hash, nonce, pkce_verifier, \
                 redirect_to, link_user",
            )
            .bind(&state_hash[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let verifier = self
            .keyring
            .decrypt(&row.pkce_verifier, &verifier_context(state_hash))
            .map_err(|e| Error::Core(e.into()))?;
        let verifier = String::from_utf8(verifier.expose().to_vec())
            .map_err(|_| Error::Sso("stored verifier is not text"))?;
        Ok(Some(PendingLogin {
            connection: row.connection_id,
            tenant: row.tenant_id,
            browser_hash: row.browser_hash,
            nonce: row.nonce,
            verifier,
            redirect_to: row.redirect_to,
            link_user: row.link_user,
        }))
    }

    /// The connection of `tenant` with `id` or to `issuer` when given (else its oldest), with
    /// its secret still sealed.
    pub(super) async fn connection(
        &self,
        tenant: TenantId,
        id: Option<SsoConnectionId>,
        issuer: Option<&str>,
    ) -> Result<Option<ConnectionRow>> {
        let mut tx = self.flows.db().begin_system_read().await?;
        let row = find_connection(&mut tx, tenant, id, issuer).await?;
        tx.commit().await?;
        Ok(row)
    }
}

pub(super) fn verifier_context(state_hash: &[u8; 32]) -> String {
    use base64::Engine as _;
    format!(
        "sso-pkce:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(state_hash)
    )
}
