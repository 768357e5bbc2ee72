//! The provider of a connection: discovered metadata and keys (cached, the keys fetched again
//! for an unknown `kid`), its OpenID client, and the verification of its ID tokens.

use super::*;

impl Sso {
    /// The provider of `connection`: cached, discovered again when the cache is older than
    /// the metadata lifetime.
    pub(super) async fn provider(&self, connection: &ConnectionRow) -> Result<Provider> {
        let now = self.now();
        if let Some(cached) = self.cached(connection.id)
            && now - cached.fetched_at < self.config.metadata_ttl
        {
            return Ok(cached);
        }
        let provider = self
            .discover_provider(&connection.issuer)
            .await
            .map_err(|err| {
                tracing::warn!(connection = %connection.id, error = %err, "sso: discovery failed");
                Error::Sso("the identity provider could not be reached")
            })?;
        self.remember(connection.id, provider.clone());
        Ok(provider)
    }

    pub(super) async fn discover_provider(
        &self,
        issuer: &str,
    ) -> std::result::Result<Provider, String> {
        let issuer = IssuerUrl::new(issuer.to_owned()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery_error(&e))?;
        // The authorization endpoint is only the browser's, but a 302 to it must not be an
        // open redirect: the same rules as the others.
        for url in [
            Some(metadata.authorization_endpoint().url()),
            Some(metadata.jwks_uri().url()),
            metadata.token_endpoint().map(|u| u.url()),
        ]
        .into_iter()
        .flatten()
        {
            self.http
                .policy()
                .check_url(url)
                .map_err(|e| e.to_string())?;
        }
        if metadata.token_endpoint().is_none() {
            return Err("the provider has no token endpoint".into());
        }
        let offered = metadata.id_token_signing_alg_values_supported();
        if !ASYMMETRIC.iter().any(|a| offered.contains(a)) {
            return Err("the provider signs ID tokens with no asymmetric algorithm".into());
        }
        let now = self.now();
        Ok(Provider {
            jwks: metadata.jwks().clone(),
            metadata,
            fetched_at: now,
            jwks_fetched_at: now,
        })
    }

    pub(super) fn cached(&self, id: SsoConnectionId) -> Option<Provider> {
        self.providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub(super) fn remember(&self, id: SsoConnectionId, provider: Provider) {
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if providers.len() >= CACHE_CAPACITY && !providers.contains_key(&id) {
            let oldest = providers
                .iter()
                .min_by_key(|(_, p)| p.fetched_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                providers.remove(&oldest);
            }
        }
        providers.insert(id, provider);
    }

    pub(super) fn forget(&self, id: SsoConnectionId) {
        self.providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// The OpenID client of `connection`, its secret unsealed.
    pub(super) fn client(&self, connection: &ConnectionRow, provider: &Provider) -> Result<Client> {
        let secret = self
            .keyring
            .decrypt(&connection.client_secret, &secret_context(connection.id))
            .map_err(|e| Error::Core(e.into()))?;
        let secret = String::from_utf8(secret.expose().to_vec())
            .map_err(|_| Error::Sso("stored secret is not text"))?;
        let token_url = provider
            .metadata
            .token_endpoint()
            .cloned()
            .ok_or(Error::Sso("the provider has no token endpoint"))?;
        let redirect = RedirectUrl::new(self.config.callback_url())
            .map_err(|_| Error::Sso("bad callback URL"))?;
        Ok(CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            ClientId::new(connection.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_token_uri(token_url)
        .set_redirect_uri(redirect))
    }

    /// Exchanges `code` and verifies the ID token: the provider's identity of the user. The
    /// error is a reason for the audit log (never shown beyond "sso failed").
    pub(super) async fn identity(
        &self,
        connection: &ConnectionRow,
        login: &PendingLogin,
        code: &str,
    ) -> std::result::Result<Identity, &'static str> {
        let provider = self
            .provider(connection)
            .await
            .map_err(|_| "the identity provider could not be reached")?;
        let oidc = self
            .client(connection, &provider)
            .map_err(|_| "the connection's client could not be built")?;
        let response = oidc
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|err| {
                tracing::info!(connection = %connection.id, error = %token_error(&err), "sso: code exchange failed");
                "the code exchange failed"
            })?;
        let id_token = openidconnect::TokenResponse::id_token(&response)
            .ok_or("the provider answered no ID token")?;
        let client_id = ClientId::new(connection.client_id.clone());
        let nonce = Nonce::new(login.nonce.clone());
        let verify = |jwks: CoreJsonWebKeySet| {
            let verifier = self.verifier(&client_id, &provider.metadata, jwks);
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verify(provider.jwks.clone()) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let jwks = self
                    .fresh_jwks(connection, &provider)
                    .await
                    .ok_or("the ID token's key is unknown")?;
                verify(jwks)
            }
            other => other,
        }
        .map_err(|err| {
            tracing::info!(connection = %connection.id, error = %err, "sso: the ID token does not verify");
            claims_reason(&err)
        })?;
        // `azp` (OpenID Connect Core 3.1.3.7): when present, our client.
        if claims
            .authorized_party()
            .is_some_and(|azp| azp.as_str() != connection.client_id)
        {
            return Err("the ID token is for another client (azp)");
        }
        // The provider's methods are never stored as they come (it could claim `otp` for
        // anyone): only whether it checked more than one factor, as `sso_mfa`.
        let methods: Vec<String> = claims
            .auth_method_refs()
            .map(|refs| {
                refs.iter()
                    .map(|r| r.as_str().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let mut distinct = methods.clone();
        distinct.sort();
        distinct.dedup();
        let amr = if methods.iter().any(|m| m == "mfa") || distinct.len() > 1 {
            vec![tenantkit_core::amr::SSO_MFA.to_owned()]
        } else {
            Vec::new()
        };
        Ok(Identity {
            issuer: connection.issuer.clone(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified() == Some(true),
            amr,
        })
    }

    /// The verifier of ID tokens from `metadata`'s provider for `client_id`: asymmetric
    /// algorithms it announced, one audience, a minute of leeway on `exp` and `iat`, on the
    /// tokens' clock.
    pub(super) fn verifier(
        &self,
        client_id: &ClientId,
        metadata: &CoreProviderMetadata,
        jwks: CoreJsonWebKeySet,
    ) -> CoreIdTokenVerifier<'static> {
        let offered = metadata.id_token_signing_alg_values_supported().clone();
        let clock = Arc::clone(self.clock());
        let iat_clock = Arc::clone(self.clock());
        // A public-client verifier holds no secret: an HMAC-signed token cannot verify.
        CoreIdTokenVerifier::new_public_client(client_id.clone(), metadata.issuer().clone(), jwks)
            .set_allowed_algs(ASYMMETRIC.into_iter().filter(move |a| offered.contains(a)))
            .set_time_fn(move || chrono_now(&*clock) - chrono::TimeDelta::seconds(60))
            .set_issue_time_verifier_fn(move |iat| {
                if iat > chrono_now(&*iat_clock) + chrono::TimeDelta::seconds(60) {
                    Err("issued in the future".to_owned())
                } else {
                    Ok(())
                }
            })
    }

    /// The key set of `connection`'s provider fetched again, unless it was fetched less than
    /// the refresh interval ago (then `None`).
    pub(super) async fn fresh_jwks(
        &self,
        connection: &ConnectionRow,
        provider: &Provider,
    ) -> Option<CoreJsonWebKeySet> {
        let now = self.now();
        {
            let mut providers = self
                .providers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cached = providers.get_mut(&connection.id)?;
            if now - cached.jwks_fetched_at < self.config.jwks_refresh_interval {
                tracing::info!(connection = %connection.id, "sso: unknown key, key set fetched too recently");
                return None;
            }
            // Claimed before the fetch: concurrent logins fetch once.
            cached.jwks_fetched_at = now;
        }
        let jwks = CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(connection = %connection.id, error = %discovery_error(&e), "sso: key set fetch failed");
            })
            .ok()?;
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = providers.get_mut(&connection.id) {
            cached.jwks = jwks.clone();
        }
        tracing::info!(connection = %connection.id, "sso: key set refreshed");
        Some(jwks)
    }
}

pub(super) fn chrono_now(clock: &dyn Clock) -> chrono::DateTime<chrono::Utc> {
    let now = clock.now();
    chrono::DateTime::from_timestamp(now.unix_timestamp(), now.nanosecond())
        .unwrap_or_else(chrono::Utc::now)
}

pub(super) fn discovery_error<E: std::error::Error>(
    err: &openidconnect::DiscoveryError<E>,
) -> String {
    match err {
        openidconnect::DiscoveryError::Request(e) => format!("request: {e}"),
        openidconnect::DiscoveryError::Response(status, _, _) => format!("status {status}"),
        openidconnect::DiscoveryError::Validation(why) => format!("invalid metadata: {why}"),
        openidconnect::DiscoveryError::Parse(_) => "unparseable metadata".to_owned(),
        _ => "discovery failed".to_owned(),
    }
}

pub(super) fn token_error<E: std::error::Error>(
    err: &openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match err {
        openidconnect::RequestTokenError::ServerResponse(r) => format!("provider: {}", r.error()),
        openidconnect::RequestTokenError::Request(e) => format!("request: {e}"),
        openidconnect::RequestTokenError::Parse(_, _) => "unparseable token response".to_owned(),
        openidconnect::RequestTokenError::Other(why) => why.clone(),
    }
}

pub(super) fn claims_reason(err: &ClaimsVerificationError) -> &'static str {
    match err {
        ClaimsVerificationError::Expired(_) => "the ID token expired",
        ClaimsVerificationError::InvalidAudience(_) => "the ID token is for another audience",
        ClaimsVerificationError::InvalidIssuer(_) => "the ID token is from another issuer",
        ClaimsVerificationError::InvalidNonce(_) => "the ID token's nonce does not match",
        ClaimsVerificationError::SignatureVerification(_) => {
            "the ID token's signature does not verify"
        }
        _ => "the ID token does not verify",
    }
}
