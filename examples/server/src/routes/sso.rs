//! `/v1/sso/*` and `/v1/auth/sso/exchange`: single sign-on through each tenant's OpenID
//! Connect provider (adapters over tenantkit-auth's `sso` module: parse, call one flow,
//! answer). Without single sign-on configured, every route answers 404.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenantkit_auth::flows::LoggedIn;
use tenantkit_auth::routes::sign_in_response;
use tenantkit_auth::sso::{
    CallbackParams, InitiatedParams, LoginParams, LoginStart, NewSsoConnection, Sso, SsoConnection,
    SsoConnectionId, SsoDiscover, SsoExchange, SsoLinkUrl, SsoLoginUrl, browser_cookie,
};
use tenantkit_core::{Error, Principal};

use crate::extract::{ApiId, ApiJson, Client};
use crate::{AppState, Result};

fn sso(state: &AppState) -> Result<&Sso> {
    Ok(state.sso.as_ref().ok_or(Error::NotFound)?)
}

/// A redirect the browser must not cache (its target is single-use).
fn redirect(location: &str) -> Result<Response> {
    let location = HeaderValue::from_str(location).map_err(|_| Error::NotFound)?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// `POST /v1/sso/connections`: connects the caller's tenant to its identity provider.
#[utoipa::path(
    post,
    path = "/v1/sso/connections",
    tag = "sso",
    request_body(content = NewSsoConnection, content_type = "application/json"),
    responses((status = 201, description = "Connected (the secret is never answered)", body = SsoConnection), (status = 403, description = "Below admin", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "A connection to this issuer exists", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 422, description = "A bad field: an issuer that is not https on a public address, a multi-tenant template or one whose discovery failed; a bad domain; owner as the default role", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn create_connection(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiJson(body): ApiJson<NewSsoConnection>,
) -> Result<(StatusCode, Json<SsoConnection>)> {
    let created = sso(&state)?
        .create_connection(&client, &principal, body)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/sso/connections`: the caller's tenant's connections (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/sso/connections",
    tag = "sso",
    responses((status = 200, description = "The connections, oldest first, with their domains and the DNS records that verify them", body = Vec<SsoConnection>), (status = 403, description = "Below admin", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn list_connections(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<SsoConnection>>> {
    Ok(Json(sso(&state)?.connections(&principal).await?))
}

/// `DELETE /v1/sso/connections/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/sso/connections/{id}",
    tag = "sso",
    params(("id" = String, Path, description = "The connection's id")),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Below admin", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 404, description = "No such connection in the caller's tenant", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "The tenant's last connection while it requires single sign-on", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn delete_connection(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiId(id): ApiId<SsoConnectionId>,
) -> Result<StatusCode> {
    sso(&state)?
        .delete_connection(&client, &principal, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/sso/{tenant_slug}/login`: sends the browser to the tenant's identity provider.
#[utoipa::path(
    get,
    path = "/v1/sso/{tenant_slug}/login",
    tag = "sso",
    params(("tenant_slug" = String, Path, description = "The tenant's slug"), LoginParams),
    responses((status = 302, description = "To the identity provider; sets the cookie binding the login to this browser"), (status = 404, description = "No such tenant, or it has no connection", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 422, description = "redirect_to is not an allowed address", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    client: Client,
    axum::extract::Path(slug): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = LoginParams::from_query(query.as_deref());
    let start = sso(&state)?
        .start_login(
            &client,
            &slug,
            params.redirect_to.as_deref(),
            params.login_hint.as_deref(),
        )
        .await?;
    login_redirect(&start)
}

/// `GET /v1/sso/{tenant_slug}/initiate`: a login the identity provider starts (its
/// `initiate_login_uri`): bounces into the normal login through the connection to `iss`.
#[utoipa::path(
    get,
    path = "/v1/sso/{tenant_slug}/initiate",
    tag = "sso",
    params(("tenant_slug" = String, Path, description = "The tenant's slug"), InitiatedParams),
    responses((status = 302, description = "To the identity provider, as a login started here; sets the cookie binding it to this browser"), (status = 404, description = "No such tenant, or no connection to iss", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 422, description = "No iss", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn initiate(
    State(state): State<AppState>,
    client: Client,
    axum::extract::Path(slug): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = InitiatedParams::from_query(query.as_deref());
    let start = sso(&state)?
        .start_initiated(&client, &slug, &params)
        .await?;
    login_redirect(&start)
}

/// The answer starting a login: to the provider, with the browser's cookie.
fn login_redirect(start: &LoginStart) -> Result<Response> {
    let mut response = redirect(&start.location)?;
    let cookie = HeaderValue::from_str(&start.set_cookie).map_err(|_| Error::NotFound)?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `GET /v1/sso/callback`: the identity provider's redirect back; sends the browser to the app
/// with a single-use `sso_code`.
#[utoipa::path(
    get,
    path = "/v1/sso/callback",
    tag = "sso",
    params(CallbackParams),
    responses((status = 302, description = "To the app, with ?sso_code= (60 s, single use)"), (status = 401, description = "sso_failed: an unknown, used, expired or another browser's login, the provider's refusal, or an ID token that does not verify", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 403, description = "The account may not join the tenant (an unverified address, or a domain the tenant has not verified)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "A password account has this address: sign in with it and link", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn callback(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = CallbackParams::from_query(query.as_deref());
    let location = sso(&state)?
        .callback(&client, &params, browser_cookie(&headers))
        .await?;
    redirect(&location)
}

/// `POST /v1/sso/link`: a single-use URL for the caller's browser that links the caller's
/// account to the tenant's identity provider (for an account with a password).
#[utoipa::path(
    post,
    path = "/v1/sso/link",
    tag = "sso",
    responses((status = 201, description = "Open link_url in the browser (single use, 2 minutes); the provider must vouch for the account's own address", body = SsoLinkUrl, headers(("Cache-Control" = String, description = "no-store"))), (status = 404, description = "The tenant has no connection", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn link(State(state): State<AppState>, principal: Principal) -> Result<Response> {
    let url = sso(&state)?.link_url(&principal).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(url),
    )
        .into_response())
}

/// `GET /v1/sso/link/{ticket}`: opens a link URL: a login whose identity is linked to the
/// account that asked.
#[utoipa::path(
    get,
    path = "/v1/sso/link/{ticket}",
    tag = "sso",
    params(("ticket" = String, Path, description = "The ticket of the link URL")),
    responses((status = 302, description = "To the identity provider; sets the cookie binding the login to this browser"), (status = 404, description = "Unknown, used or expired ticket", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn open_link(
    State(state): State<AppState>,
    client: Client,
    axum::extract::Path(ticket): axum::extract::Path<String>,
) -> Result<Response> {
    let start = sso(&state)?.start_link(&client, &ticket).await?;
    login_redirect(&start)
}

/// `POST /v1/auth/sso/exchange`: trades a callback's code for a token pair.
#[utoipa::path(
    post,
    path = "/v1/auth/sso/exchange",
    tag = "auth",
    request_body(content = SsoExchange, content_type = "application/json"),
    responses((status = 200, description = "Signed in; the tokens' amr include sso", body = LoggedIn, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Unknown, used or expired code (invalid_token); or mfa_required with an mfa_token", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn exchange(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SsoExchange>,
) -> Result<Response> {
    let signed_in = sso(&state)?.exchange(&client, &body).await?;
    Ok(sign_in_response(signed_in))
}

/// `POST /v1/sso/discover`: the login URL for an email address's domain.
#[utoipa::path(
    post,
    path = "/v1/sso/discover",
    tag = "sso",
    request_body(content = SsoDiscover, content_type = "application/json"),
    responses((status = 200, description = "The tenant that verified the address's domain signs it in here", body = SsoLoginUrl), (status = 404, description = "No tenant signs this address in through single sign-on", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn discover(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SsoDiscover>,
) -> Result<Json<SsoLoginUrl>> {
    let found = sso(&state)?.discover(&client, &body.email).await?;
    Ok(Json(found.ok_or(Error::NotFound)?))
}
