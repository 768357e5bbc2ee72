//! Single sign-on against a real OpenID provider (npm `oidc-provider`, started by
//! scripts/with-services.sh on 127.0.0.1), on both backends: the whole flow (login → the
//! provider → callback → exchange) with just-in-time membership and linking by subject, and the
//! refusals: a bad, replayed or other browser's state, an unsolicited callback, a replayed or
//! injected code, a reused exchange code, ID tokens with a wrong nonce, audience, issuer, `azp`,
//! expired, `alg: none`, HS256 or signed by an unknown key, an unverified address, a domain the
//! tenant has not verified, a password account's address, and a connection of one tenant used
//! to enter another. The provider's key rotation is picked up without a restart, at most once
//! per interval (on a clock the test moves).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tenantkit_auth::flows::{
    AcceptInvitation, InviteRequest, LoggedIn, LoginRequest, SignIn, SignedUp, SwitchTenant,
    TenantPolicyPatch,
};
use tenantkit_auth::sso::{
    CallbackParams, InitiatedParams, LoginStart, NewSsoConnection, OutboundPolicy, SSO_COOKIE, Sso,
    SsoConfig, SsoExchange,
};
use tenantkit_auth::{AccessTokens, Error, JwtConfig, KeySet, Password, RefreshToken, SigningKey};
use tenantkit_core::testing::required_service;
use tenantkit_core::{Backend, Keyring, ManualClock, Principal, SecretKey, Slug, TenantScope};

mod support;

use support::Flows;

/// Where the (never reached) server is: the callback the provider redirects to.
const PUBLIC_URL: &str = "http://127.0.0.1:9";

/// The test provider, driven like a browser (cookies by hand, redirects one at a time).
struct Idp {
    issuer: String,
    http: reqwest::Client,
}

impl Idp {
    async fn post(&self, path: &str, body: Value) -> Value {
        let reply = self
            .http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("provider");
        assert!(reply.status().is_success(), "{path}: {}", reply.status());
        reply.json().await.expect("json")
    }

    /// Registers a client whose redirect is the server's callback.
    async fn register(&self, client_id: &str, secret: &str) {
        self.post(
            "/test/clients",
            json!({
                "client_id": client_id,
                "client_secret": secret,
                "redirect_uris": [format!("{PUBLIC_URL}/v1/sso/callback")],
            }),
        )
        .await;
    }

    /// The next ID token of `client_id` is forged as `mode` says.
    async fn tamper(&self, client_id: &str, mode: &str) {
        self.post(
            "/test/tamper",
            json!({"mode": mode, "client_id": client_id}),
        )
        .await;
    }

    /// The next ID token of `client_id` says the provider checked `methods` (its `amr`).
    async fn claim_methods(&self, client_id: &str, methods: &str) {
        self.post(
            "/test/tamper",
            json!({"mode": "amr", "client_id": client_id, "value": methods}),
        )
        .await;
    }

    /// Rotates the provider's signing keys (the old ones are no longer published).
    async fn rotate(&self) {
        self.post("/test/rotate", json!({"keep_old": false})).await;
    }

    /// Follows `start` through the provider as `email` (verified or not) and answers the
    /// query of the provider's redirect to the callback.
    async fn sign_in(&self, start: &LoginStart, email: &str, verified: bool) -> String {
        let mut cookies: HashMap<String, String> = HashMap::new();
        let mut url = start.location.clone();
        let mut login_posted = false;
        for _ in 0..10 {
            let request = if url.contains("/interaction/") && !login_posted {
                login_posted = true;
                let uid = url.rsplit('/').next().expect("uid").to_owned();
                self.http
                    .post(format!("{}/interaction/{uid}/login", self.issuer))
                    .form(&[
                        ("email", email),
                        ("email_verified", if verified { "true" } else { "false" }),
                    ])
            } else {
                self.http.get(&url)
            };
            let cookie = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let reply = request
                .header("cookie", cookie)
                .send()
                .await
                .expect("provider");
            for value in reply.headers().get_all("set-cookie") {
                let pair = value
                    .to_str()
                    .expect("ascii")
                    .split(';')
                    .next()
                    .expect("pair");
                if let Some((name, value)) = pair.split_once('=') {
                    cookies.insert(name.to_owned(), value.to_owned());
                }
            }
            let location = reply
                .headers()
                .get("location")
                .unwrap_or_else(|| panic!("a redirect from {url}: {}", reply.status()))
                .to_str()
                .expect("ascii")
                .to_owned();
            url = if location.starts_with('/') {
                format!("{}{location}", self.issuer)
            } else {
                location
            };
            if let Some(query) = url.strip_prefix(&format!("{PUBLIC_URL}/v1/sso/callback?")) {
                return query.to_owned();
            }
        }
        panic!("the provider never redirected to the callback");
    }
}

/// A tenant with a connection to the provider, its own client, and an owner.
struct World {
    f: Flows,
    sso: Sso,
    idp: Idp,
    clock: Arc<ManualClock>,
    client_id: String,
    owner: Principal,
    slug: String,
    _own: Option<OwnProvider>,
}

async fn world(backend: Backend) -> Option<World> {
    let issuer = required_service(
        "TENANTKIT_TEST_OIDC_ISSUER",
        "single sign-on (oidc-provider)",
    )?;
    world_on(backend, issuer, None).await
}

/// A provider of the test's own (its keys rotate without disturbing the other tests).
struct OwnProvider(std::process::Child);

impl Drop for OwnProvider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`world`] on a provider started for this test alone.
async fn world_own_provider(backend: Backend) -> Option<World> {
    let (provider, issuer) = start_provider().await?;
    world_on(backend, issuer, Some(provider)).await
}

/// A provider of the caller's own, and its issuer.
async fn start_provider() -> Option<(OwnProvider, String)> {
    let node = required_service("TENANTKIT_TEST_OIDC_NODE", "single sign-on (oidc-provider)")?;
    let script = required_service(
        "TENANTKIT_TEST_OIDC_SCRIPT",
        "single sign-on (oidc-provider)",
    )?;
    let mut child = std::process::Command::new(node)
        .arg(script)
        .env("OIDC_PORT", "0")
        .env("OIDC_CLIENTS", "[]")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the provider starts");
    let stdout = child.stdout.take().expect("stdout");
    let provider = OwnProvider(child);
    // Its first line names it (the process exits, and the read ends, if it cannot start).
    let issuer = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        // Keep reading in the background so the provider never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        line
    })
    .await
    .expect("read");
    let issuer = issuer
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the provider did not start: {issuer:?}"))
        .trim()
        .to_owned();
    Some((provider, issuer))
}

async fn world_on(backend: Backend, issuer: String, own: Option<OwnProvider>) -> Option<World> {
    let clock = Arc::new(ManualClock::starting_now());
    let tokens = AccessTokens::with_clock(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("tests", "tests"),
        clock.clone(),
    );
    let f = support::flows_with(backend, tokens).await?;
    let key = SecretKey::from_bytes("t1", &[4_u8; 32]).expect("key");
    let config = SsoConfig::new(PUBLIC_URL)
        .expect("config")
        .with_app_url("http://127.0.0.1:9/app")
        .expect("app url")
        .with_outbound(OutboundPolicy::new().allow_host("127.0.0.1"));
    let sso = Sso::new(f.flows.clone(), Keyring::new(key), config).expect("sso");
    let idp = Idp {
        issuer,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    };
    let client_id = format!("tk-{}", uuid_like());
    idp.register(&client_id, "s3cret-of-the-client").await;
    let signed_up = f.signed_up("owner@acme.test", "Acme").await;
    let owner = verify(&f, &signed_up);
    let slug = signed_up.tenant.slug.as_str().to_owned();
    let world = World {
        f,
        sso,
        idp,
        clock,
        client_id,
        owner,
        slug,
        _own: own,
    };
    world
        .connect(&world.owner, &world.client_id, &["acme.test"])
        .await;
    world
        .sso
        .verify_domain(
            &world.f.client,
            &Slug::parse(&world.slug).expect("slug"),
            "acme.test",
        )
        .await
        .expect("verified");
    Some(world)
}

fn uuid_like() -> String {
    tenantkit_core::SessionId::new().to_string()
}

fn verify(f: &Flows, signed_up: &SignedUp) -> Principal {
    f.flows
        .tokens()
        .verify(&signed_up.tokens.access_token)
        .expect("token")
}

impl World {
    async fn connect(&self, admin: &Principal, client_id: &str, domains: &[&str]) {
        self.sso
            .create_connection(
                &self.f.client,
                admin,
                NewSsoConnection {
                    issuer: self.idp.issuer.clone(),
                    client_id: client_id.to_owned(),
                    client_secret: "s3cret-of-the-client".into(),
                    domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                    default_role: None,
                },
            )
            .await
            .expect("connected");
    }

    async fn start(&self, slug: &str) -> LoginStart {
        self.sso
            .start_login(&self.f.client, slug, None, None)
            .await
            .expect("login start")
    }

    /// The browser cookie `start` sets.
    fn cookie(start: &LoginStart) -> String {
        let pair = start.set_cookie.split(';').next().expect("pair");
        pair.strip_prefix(&format!("{SSO_COOKIE}="))
            .expect("the cookie")
            .to_owned()
    }

    async fn callback(&self, query: &str, cookie: Option<&str>) -> Result<String, Error> {
        self.sso
            .callback(
                &self.f.client,
                &CallbackParams::from_query(Some(query)),
                cookie,
            )
            .await
    }

    /// A whole login of `email` into `slug`: the callback's answer.
    async fn login(&self, slug: &str, email: &str, verified: bool) -> Result<String, Error> {
        let start = self.start(slug).await;
        let query = self.idp.sign_in(&start, email, verified).await;
        self.callback(&query, Some(&Self::cookie(&start))).await
    }

    async fn exchange(&self, location: &str) -> Result<LoggedIn, Error> {
        let url = url::Url::parse(location).expect("url");
        let code = url
            .query_pairs()
            .find(|(k, _)| k == "sso_code")
            .map(|(_, v)| v.into_owned())
            .expect("sso_code");
        let outcome = self
            .sso
            .exchange(&self.f.client, &SsoExchange { code })
            .await?;
        match outcome {
            SignIn::Complete(done) => Ok(done),
            other => panic!("no second factor is on: {other:?}"),
        }
    }

    async fn actions(&self, tenant: tenantkit_core::TenantId) -> Vec<String> {
        let mut tx = (self.f.flows.db())
            .begin(&TenantScope::for_system(tenant))
            .await
            .expect("begin");
        let entries = tx.audit_entries(0, 1000).await.expect("entries");
        tx.commit().await.expect("commit");
        entries.into_iter().map(|e| e.action).collect()
    }

    /// The verified caller of `tokens`.
    fn caller(&self, tokens: &tenantkit_auth::flows::TokenPair) -> Principal {
        self.f
            .flows
            .tokens()
            .verify(&tokens.access_token)
            .expect("token")
    }

    /// Why the tenant's last single sign-on failed, as audited.
    async fn last_failure(&self) -> String {
        let mut tx = (self.f.flows.db())
            .begin(&TenantScope::for_system(self.owner.tenant_id()))
            .await
            .expect("begin");
        let entries = tx.audit_entries(0, 1000).await.expect("entries");
        tx.commit().await.expect("commit");
        entries
            .into_iter()
            .rev()
            .find(|e| e.action == "sso.failed")
            .and_then(|e| {
                let details: Value = serde_json::from_str(&e.details).ok()?;
                details["reason"].as_str().map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// Turns "SSO required" on for `owner`'s tenant.
    async fn require_sso(&self, owner: &Principal) -> Result<(), Error> {
        let mut tx = (self.f.flows.db())
            .begin(&TenantScope::of(owner))
            .await
            .expect("begin");
        self.f
            .flows
            .update_tenant_policy(
                &mut tx,
                &self.f.client,
                owner,
                TenantPolicyPatch::sso_required(true),
            )
            .await?;
        tx.commit().await.expect("commit");
        Ok(())
    }

    async fn users(&self) -> i64 {
        let mut tx = self.f.test_db.db.begin_system_read().await.expect("begin");
        let n: i64 = tenantkit_core::with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(c)
                .await
        })
        .expect("count");
        tx.commit().await.expect("commit");
        n
    }
}

fn assert_sso_failed<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    assert!(matches!(result, Err(Error::Sso(_))), "{what}: {result:?}");
}

async fn a_member_signs_in_through_the_tenants_provider(w: World) {
    let location = w
        .login(&w.slug, "jo@acme.test", true)
        .await
        .expect("callback");
    // To the app, with a code and never a token.
    assert!(
        location.starts_with("http://127.0.0.1:9/app?sso_code=sso_"),
        "{location}"
    );
    assert!(!location.contains("eyJ"), "no token in a URL: {location}");
    let done = w.exchange(&location).await.expect("exchange");
    let caller = w.caller(&done.tokens);
    assert_eq!(caller.tenant_id(), w.owner.tenant_id());
    assert_eq!(caller.role(), tenantkit_core::Role::Member);
    assert!(caller.has_amr("sso"), "{:?}", caller.amr());
    assert!(!caller.has_amr("pwd"));
    // A provider's methods are not taken as they come: `pwd,otp` from it is `sso_mfa`, never
    // this server's `otp`.
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "jo@acme.test", true).await;
    w.idp.claim_methods(&w.client_id, "pwd,otp").await;
    let claimed = w
        .callback(&query, Some(&World::cookie(&start)))
        .await
        .expect("callback");
    let claimed = w.exchange(&claimed).await.expect("exchange");
    let claimed = w.caller(&claimed.tokens);
    assert_eq!(claimed.amr(), ["sso", "sso_mfa"]);
    // The exchange code works once.
    assert!(matches!(
        w.exchange(&location).await,
        Err(Error::InvalidToken(_))
    ));
    // The same person again: the linked account, no second join.
    let users = w.users().await;
    let again = w
        .login(&w.slug, "jo@acme.test", true)
        .await
        .expect("callback");
    let again = w.exchange(&again).await.expect("exchange");
    let second = w.caller(&again.tokens);
    assert_eq!(second.user_id(), caller.user_id());
    assert_eq!(w.users().await, users);
    let actions = w.actions(w.owner.tenant_id()).await;
    for action in [
        "sso.connection_created",
        "sso.domain_verified",
        "sso.linked",
        "sso.jit_joined",
        "auth.login",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action}: {actions:?}"
        );
    }
    assert_eq!(actions.iter().filter(|a| *a == "sso.jit_joined").count(), 1);
    // The connection as answered: no secret.
    let listed = w.sso.connections(&w.owner).await.expect("list");
    let json = serde_json::to_string(&listed).expect("json");
    assert!(!json.contains("s3cret"), "{json}");
    assert!(listed[0].domains[0].verified);
    // Discovery by email domain.
    let found = w
        .sso
        .discover(&w.f.client, "someone@ACME.test")
        .await
        .expect("discover")
        .expect("a login url");
    assert_eq!(
        found.login_url,
        format!("{PUBLIC_URL}/v1/sso/{}/login", w.slug)
    );
    assert!(
        w.sso
            .discover(&w.f.client, "x@other.test")
            .await
            .expect("discover")
            .is_none()
    );
}

async fn states_are_single_use_and_bound_to_the_browser(w: World) {
    let users = w.users().await;
    // A callback nobody started, and made-up states.
    assert_sso_failed(w.callback("code=abc", None).await, "no state");
    assert_sso_failed(
        w.callback("code=abc&state=made-up", Some("cookie")).await,
        "unknown state",
    );
    // Another browser's (or no) cookie: refused, and the state is spent.
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "kim@acme.test", true).await;
    assert_sso_failed(
        w.callback(&query, Some("another-browser")).await,
        "other browser",
    );
    assert_sso_failed(
        w.callback(&query, Some(&World::cookie(&start))).await,
        "spent by the refused attempt",
    );
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "kim@acme.test", true).await;
    assert_sso_failed(w.callback(&query, None).await, "no cookie");
    // Replayed state: the first callback wins, the replay is refused.
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "kim@acme.test", true).await;
    let cookie = World::cookie(&start);
    w.callback(&query, Some(&cookie)).await.expect("first");
    assert_sso_failed(w.callback(&query, Some(&cookie)).await, "replayed state");
    // A code from one login under another login's state (injection, or a replayed code):
    // the other login's PKCE verifier does not match it.
    let first = w.start(&w.slug).await;
    let first_query = w.idp.sign_in(&first, "lee@acme.test", true).await;
    let second = w.start(&w.slug).await;
    let second_query = w.idp.sign_in(&second, "lee@acme.test", true).await;
    let code = |q: &str| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code")
    };
    let state = |q: &str| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state")
    };
    let injected = format!("code={}&state={}", code(&first_query), state(&second_query));
    assert_sso_failed(
        w.callback(&injected, Some(&World::cookie(&second))).await,
        "a code under another login's state",
    );
    // Refused by the provider at the exchange (the PKCE verifier is the other login's).
    assert_eq!(w.last_failure().await, "the code exchange failed");
    // The provider refusing, and a wrong issuer in the answer (RFC 9207).
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "lee@acme.test", true).await;
    let refused = format!("error=access_denied&state={}", state(&query));
    assert_sso_failed(
        w.callback(&refused, Some(&World::cookie(&start))).await,
        "provider error",
    );
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "lee@acme.test", true).await;
    let mixed = format!(
        "code={}&state={}&iss=https%3A%2F%2Fevil.example",
        code(&query),
        state(&query)
    );
    assert_sso_failed(
        w.callback(&mixed, Some(&World::cookie(&start))).await,
        "issuer mismatch",
    );
    // Expired: ten minutes later the state is gone.
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "lee@acme.test", true).await;
    w.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_sso_failed(
        w.callback(&query, Some(&World::cookie(&start))).await,
        "expired state",
    );
    // Only the one successful login made an account.
    assert_eq!(w.users().await, users + 1);
    assert!(
        w.actions(w.owner.tenant_id())
            .await
            .contains(&"sso.failed".to_owned())
    );
}

async fn forged_id_tokens_are_refused(w: World) {
    let users = w.users().await;
    let signature = "the ID token's signature does not verify";
    for (mode, reason) in [
        ("nonce", "the ID token's nonce does not match"),
        ("aud", "the ID token is for another audience"),
        ("expired", "the ID token expired"),
        ("iss", "the ID token is from another issuer"),
        ("alg_none", signature),
        ("hs256", signature),
        ("wrong_key", signature),
        // Two audiences (ours and another client's): refused for the other audience.
        ("azp", "the ID token is for another audience"),
        // Our audience alone, but issued to another client.
        ("azp_only", "the ID token is for another client (azp)"),
    ] {
        let start = w.start(&w.slug).await;
        let query = w.idp.sign_in(&start, "eve@acme.test", true).await;
        w.idp.tamper(&w.client_id, mode).await;
        let result = w.callback(&query, Some(&World::cookie(&start))).await;
        assert_sso_failed(result, mode);
        // Refused for the forgery, not for anything else (the audit log says why).
        assert_eq!(w.last_failure().await, reason, "{mode}");
    }
    assert_eq!(w.users().await, users, "no forged token made an account");
    // The provider behaving again: the same person gets in.
    let location = w
        .login(&w.slug, "eve@acme.test", true)
        .await
        .expect("honest");
    w.exchange(&location).await.expect("exchange");
}

async fn joining_needs_a_verified_address_in_a_verified_domain(w: World) {
    let users = w.users().await;
    let refused = w.login(&w.slug, "unverified@acme.test", false).await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "unverified address: {refused:?}"
    );
    let refused = w.login(&w.slug, "someone@elsewhere.test", true).await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "another domain: {refused:?}"
    );
    // A password account with the address is never taken over by email.
    w.f.signed_up("pat@acme.test", "Pat").await;
    let taken = w.login(&w.slug, "pat@acme.test", true).await;
    assert!(
        matches!(taken, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "a password account's address: {taken:?}"
    );
    assert_eq!(w.users().await, users + 1, "only Pat's own signup");
}

async fn a_password_member_links_the_provider_from_a_session(w: World) {
    let (_, member) = w.f.invite_and_accept(&w.owner, "pw@acme.test").await;
    let member = w.caller(&member.tokens);
    // Not by email alone.
    let taken = w.login(&w.slug, "pw@acme.test", true).await;
    assert!(
        matches!(taken, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{taken:?}"
    );
    // A link whose provider identity has another address (a leaked link URL, say): refused.
    let link = w.sso.link_url(&member).await.expect("link url");
    let ticket = link.link_url.rsplit('/').next().expect("ticket").to_owned();
    assert!(
        link.link_url
            .starts_with(&format!("{PUBLIC_URL}/v1/sso/link/"))
    );
    let start = w.sso.start_link(&w.f.client, &ticket).await.expect("start");
    let query = w.idp.sign_in(&start, "mallory@acme.test", true).await;
    let refused = w.callback(&query, Some(&World::cookie(&start))).await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "{refused:?}"
    );
    // The ticket worked once.
    let again = w.sso.start_link(&w.f.client, &ticket).await;
    assert!(
        matches!(again, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{again:?}"
    );
    // The provider vouching for the account's own address: linked, and signed in.
    let link = w.sso.link_url(&member).await.expect("link url");
    let ticket = link.link_url.rsplit('/').next().expect("ticket").to_owned();
    let start = w.sso.start_link(&w.f.client, &ticket).await.expect("start");
    let query = w.idp.sign_in(&start, "pw@acme.test", true).await;
    let location = w
        .callback(&query, Some(&World::cookie(&start)))
        .await
        .expect("linked");
    let done = w.exchange(&location).await.expect("exchange");
    let linked = w.caller(&done.tokens);
    assert_eq!(linked.user_id(), member.user_id());
    // From now on the provider signs the account in directly.
    let location = w
        .login(&w.slug, "pw@acme.test", true)
        .await
        .expect("direct");
    let direct = w.exchange(&location).await.expect("exchange");
    let direct = w.caller(&direct.tokens);
    assert_eq!(direct.user_id(), member.user_id());
    // The link is audited.
    assert!(
        w.actions(w.owner.tenant_id())
            .await
            .contains(&"sso.linked".to_owned())
    );
    let unknown = w.sso.start_link(&w.f.client, "no-such-ticket").await;
    assert!(
        matches!(unknown, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{unknown:?}"
    );
}

async fn one_tenants_connection_does_not_open_another(w: World) {
    // A member of Acme through Acme's provider.
    let location = w.login(&w.slug, "jo@acme.test", true).await.expect("acme");
    let jo = w.exchange(&location).await.expect("exchange");
    let jo = w.caller(&jo.tokens);
    // Another tenant connects the same provider (its own client) and claims acme.test: it
    // cannot verify a domain Acme verified, so Acme's people do not join it.
    let other = w.f.signed_up("boss@other.test", "Other").await;
    let boss = verify(&w.f, &other);
    let client_id = format!("tk-{}", uuid_like());
    w.idp.register(&client_id, "s3cret-of-the-client").await;
    w.connect(&boss, &client_id, &["acme.test"]).await;
    let taken = w
        .sso
        .verify_domain(&w.f.client, &other.tenant.slug, "acme.test")
        .await;
    assert!(
        matches!(taken, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{taken:?}"
    );
    let refused = w
        .login(other.tenant.slug.as_str(), "jo@acme.test", true)
        .await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "{refused:?}"
    );
    let memberships =
        w.f.flows
            .db()
            .memberships_of(jo.user_id())
            .await
            .expect("read");
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].tenant_id, w.owner.tenant_id());
    // A member (not an admin) cannot manage connections; another tenant's connection is
    // not found from this one.
    let listed = w.sso.connections(&jo).await;
    assert!(
        matches!(listed, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "{listed:?}"
    );
    let theirs = w.sso.connections(&boss).await.expect("list");
    let deleted = w
        .sso
        .delete_connection(&w.f.client, &w.owner, theirs[0].id)
        .await;
    assert!(
        matches!(deleted, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{deleted:?}"
    );
}

async fn a_domain_joins_only_through_the_connection_that_claimed_it(w: World) {
    // An admin adds a second connection, to a provider of their own, naming the tenant's
    // verified domain: the claim stays the first connection's.
    let Some((_second, issuer)) = start_provider().await else {
        return;
    };
    let rogue = Idp {
        issuer: issuer.clone(),
        http: w.idp.http.clone(),
    };
    let client_id = format!("tk-{}", uuid_like());
    rogue.register(&client_id, "s3cret-of-the-client").await;
    w.sso
        .create_connection(
            &w.f.client,
            &w.owner,
            NewSsoConnection {
                issuer: issuer.clone(),
                client_id,
                client_secret: "s3cret-of-the-client".into(),
                domains: vec!["acme.test".into()],
                default_role: None,
            },
        )
        .await
        .expect("a second connection");
    let listed = w.sso.connections(&w.owner).await.expect("list");
    let second = listed.iter().find(|c| c.issuer == issuer).expect("listed");
    assert!(second.domains.is_empty(), "{second:?}");
    // Its provider vouching for a new address in that domain does not make a member.
    let users = w.users().await;
    let params = InitiatedParams::from_query(Some(&format!(
        "iss={}",
        url::form_urlencoded::byte_serialize(issuer.as_bytes()).collect::<String>()
    )));
    let start = w
        .sso
        .start_initiated(&w.f.client, &w.slug, &params)
        .await
        .expect("through the second connection");
    let query = rogue.sign_in(&start, "planted@acme.test", true).await;
    let refused = w.callback(&query, Some(&World::cookie(&start))).await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "{refused:?}"
    );
    assert_eq!(w.users().await, users);
    // Through the connection that claimed it, the same address joins.
    w.login(&w.slug, "planted@acme.test", true)
        .await
        .expect("through the first connection");
}

async fn connections_are_checked_before_they_are_stored(w: World) {
    let bad =
        |issuer: &str, domains: Vec<String>, role: Option<tenantkit_core::Role>| NewSsoConnection {
            issuer: issuer.to_owned(),
            client_id: "c".into(),
            client_secret: "s".into(),
            domains,
            default_role: role,
        };
    for (new, what) in [
        (bad("http://idp.example.com", vec![], None), "plain http"),
        (bad("https://10.0.0.1/", vec![], None), "private address"),
        (
            bad("https://169.254.169.254/", vec![], None),
            "metadata address",
        ),
        (
            bad(
                "https://login.microsoftonline.com/common/v2.0",
                vec![],
                None,
            ),
            "multi-tenant",
        ),
        (
            bad("https://localhost/", vec![], None),
            "a name of loopback",
        ),
        (
            bad(&w.idp.issuer, vec!["not a domain".into()], None),
            "bad domain",
        ),
        (
            bad(&w.idp.issuer, vec![], Some(tenantkit_core::Role::Owner)),
            "owner role",
        ),
        (
            bad(&format!("{}/nope", w.idp.issuer), vec![], None),
            "discovery fails",
        ),
    ] {
        let refused = w.sso.create_connection(&w.f.client, &w.owner, new).await;
        assert!(
            matches!(
                refused,
                Err(Error::Core(tenantkit_core::Error::Validation(_)))
            ),
            "{what}: {refused:?}"
        );
    }
    // A second connection to the same issuer is a conflict.
    let again = w
        .sso
        .create_connection(&w.f.client, &w.owner, bad(&w.idp.issuer, vec![], None))
        .await;
    assert!(
        matches!(again, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{again:?}"
    );
    // redirect_to must be an allowed origin.
    let open = w
        .sso
        .start_login(&w.f.client, &w.slug, Some("https://evil.example/"), None)
        .await;
    assert!(
        matches!(open, Err(Error::Core(tenantkit_core::Error::Validation(_)))),
        "{open:?}"
    );
    let unknown = w
        .sso
        .start_login(&w.f.client, "no-such-tenant", None, None)
        .await;
    assert!(
        matches!(unknown, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{unknown:?}"
    );
    // Deleting the connection ends logins under way.
    let start = w.start(&w.slug).await;
    let query = w.idp.sign_in(&start, "jo@acme.test", true).await;
    let id = w.sso.connections(&w.owner).await.expect("list")[0].id;
    w.sso
        .delete_connection(&w.f.client, &w.owner, id)
        .await
        .expect("deleted");
    assert_sso_failed(
        w.callback(&query, Some(&World::cookie(&start))).await,
        "the connection is gone",
    );
}

async fn the_providers_key_rotation_needs_no_restart(w: World) {
    // Cached keys from discovery; the provider rotates and drops the old ones.
    w.login(&w.slug, "jo@acme.test", true)
        .await
        .expect("before");
    w.idp.rotate().await;
    // Within the refresh interval of discovery, an unknown key is not fetched again.
    let refused = w.login(&w.slug, "jo@acme.test", true).await;
    assert_sso_failed(refused, "key set fetched less than the interval ago");
    // After it, the first unknown key fetches the key set once, and the login goes through.
    w.clock.advance(Duration::from_secs(61));
    let location = w.login(&w.slug, "jo@acme.test", true).await.expect("after");
    w.exchange(&location).await.expect("exchange");
    // A second rotation right away: too soon again; a minute later, fine.
    w.idp.rotate().await;
    assert_sso_failed(w.login(&w.slug, "jo@acme.test", true).await, "too soon");
    w.clock.advance(Duration::from_secs(61));
    w.login(&w.slug, "jo@acme.test", true)
        .await
        .expect("rotated twice");
}

async fn domains_verify_by_dns_record(w: World) {
    #[derive(Debug)]
    struct Stub(Vec<(String, String)>);
    impl tenantkit_auth::sso::TxtResolver for Stub {
        fn txt<'a>(
            &'a self,
            name: &'a str,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = tenantkit_auth::Result<Vec<String>>> + Send + 'a>,
        > {
            let found = self
                .0
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect();
            Box::pin(async move { Ok(found) })
        }
    }
    let other = w.f.signed_up("boss@beta.test", "Beta").await;
    let boss = verify(&w.f, &other);
    let client_id = format!("tk-{}", uuid_like());
    w.idp.register(&client_id, "s3cret-of-the-client").await;
    w.connect(&boss, &client_id, &["beta.test"]).await;
    let record = w.sso.connections(&boss).await.expect("list")[0].domains[0]
        .dns_record
        .clone();
    assert_eq!(record.name, "_tenantkit-challenge.beta.test");
    // No record, a wrong one, one for another name: not verified.
    for records in [
        vec![],
        vec![(
            record.name.clone(),
            "tenantkit-domain-verification=wrong".to_owned(),
        )],
        vec![(
            "_tenantkit-challenge.acme.test".to_owned(),
            record.value.clone(),
        )],
    ] {
        let refused = w
            .sso
            .verify_domain_by_dns(&w.f.client, &boss, "beta.test", &Stub(records))
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::Core(tenantkit_core::Error::Validation(_)))
            ),
            "{refused:?}"
        );
    }
    let refused = w
        .login(other.tenant.slug.as_str(), "ann@beta.test", true)
        .await;
    assert!(matches!(
        refused,
        Err(Error::Core(tenantkit_core::Error::Forbidden))
    ));
    w.sso
        .verify_domain_by_dns(
            &w.f.client,
            &boss,
            "beta.test",
            &Stub(vec![(record.name.clone(), record.value.clone())]),
        )
        .await
        .expect("verified");
    let location = w
        .login(other.tenant.slug.as_str(), "ann@beta.test", true)
        .await
        .expect("joins now");
    let ann = w.exchange(&location).await.expect("exchange");
    let ann = w.caller(&ann.tokens);
    assert_eq!(ann.tenant_id(), boss.tenant_id());
    // A domain the tenant does not claim is not found.
    let unclaimed = w
        .sso
        .verify_domain_by_dns(&w.f.client, &boss, "gamma.test", &Stub(vec![]))
        .await;
    assert!(matches!(
        unclaimed,
        Err(Error::Core(tenantkit_core::Error::NotFound))
    ));
}

async fn a_tenant_that_requires_sso_refuses_passwords_but_its_owners(w: World) {
    // Only with a connection.
    let bare = w.f.signed_up("boss@bare.test", "Bare").await;
    let bare = verify(&w.f, &bare);
    let refused = w.require_sso(&bare).await;
    assert!(
        matches!(
            refused,
            Err(Error::Core(tenantkit_core::Error::Conflict(_)))
        ),
        "{refused:?}"
    );
    // A password member, and a member through the provider.
    let (_, member) = w.f.invite_and_accept(&w.owner, "pw@acme.test").await;
    let sso_member = w
        .login(&w.slug, "jo@acme.test", true)
        .await
        .expect("callback");
    let sso_member = w.exchange(&sso_member).await.expect("exchange");
    // Not while a member could not sign in through the provider: it links first.
    let unlinked = w.require_sso(&w.owner).await;
    assert!(
        matches!(
            unlinked,
            Err(Error::Core(tenantkit_core::Error::Conflict(_)))
        ),
        "{unlinked:?}"
    );
    let member_caller = w.caller(&member.tokens);
    let link = w.sso.link_url(&member_caller).await.expect("link url");
    let ticket = link.link_url.rsplit('/').next().expect("ticket").to_owned();
    let start = w.sso.start_link(&w.f.client, &ticket).await.expect("start");
    let query = w.idp.sign_in(&start, "pw@acme.test", true).await;
    w.callback(&query, Some(&World::cookie(&start)))
        .await
        .expect("linked");
    w.require_sso(&w.owner).await.expect("policy");
    // Its last connection stays while the policy is on.
    let id = w.sso.connections(&w.owner).await.expect("list")[0].id;
    let kept = w.sso.delete_connection(&w.f.client, &w.owner, id).await;
    assert!(
        matches!(kept, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{kept:?}"
    );
    // The password member's session ended; the provider's member's and the owner's did not.
    let ended =
        w.f.flows
            .refresh(
                &w.f.client,
                &RefreshToken::new(member.tokens.refresh_token.clone()),
            )
            .await;
    assert!(ended.is_err(), "{ended:?}");
    w.f.flows
        .refresh(
            &w.f.client,
            &RefreshToken::new(sso_member.tokens.refresh_token.clone()),
        )
        .await
        .expect("through the provider: goes on");
    assert!(
        !w.f.flows
            .sessions()
            .is_over(w.owner.session_id())
            .await
            .expect("read")
    );
    // Password sign-ins: refused for members, let through (and audited) for the owner.
    let refused =
        w.f.flows
            .login(&w.f.client, password_login("pw@acme.test"))
            .await;
    assert!(matches!(refused, Err(Error::SsoRequired)), "{refused:?}");
    let owner =
        w.f.flows
            .login(&w.f.client, password_login("owner@acme.test"))
            .await
            .expect("break-glass");
    assert!(matches!(owner, SignIn::Complete(_)));
    assert!(
        w.actions(w.owner.tenant_id())
            .await
            .contains(&"auth.sso_bypassed".to_owned())
    );
    // Through the provider, members still get in.
    let again = w
        .login(&w.slug, "jo@acme.test", true)
        .await
        .expect("callback");
    w.exchange(&again).await.expect("exchange");
    // A new member by invitation with a password: refused before anything is accepted.
    let invited =
        w.f.flows
            .invite(
                &w.f.client,
                &w.owner,
                InviteRequest {
                    email: "new@acme.test".into(),
                    role: tenantkit_core::Role::Member,
                },
            )
            .await;
    invited.expect("invite");
    let token =
        w.f.mailed_token_about(
            "new@acme.test",
            Some(tenantkit_auth::flows::INVITATION_SUBJECT),
        )
        .await;
    let refused =
        w.f.flows
            .accept_invitation(
                &w.f.client,
                None,
                AcceptInvitation {
                    token,
                    password: Some(Password::new(support::PASSWORD)),
                },
            )
            .await;
    assert!(matches!(refused, Err(Error::SsoRequired)), "{refused:?}");
    // A tenant switch into it from a password session elsewhere: refused.
    let elsewhere = w.f.signed_up("multi@elsewhere.test", "Elsewhere").await;
    let elsewhere = verify(&w.f, &elsewhere);
    let mut tx =
        w.f.flows
            .db()
            .begin(&TenantScope::of(&w.owner))
            .await
            .expect("begin");
    tx.add_member(elsewhere.user_id(), tenantkit_core::Role::Member)
        .await
        .expect("member");
    tx.commit().await.expect("commit");
    let refused =
        w.f.flows
            .switch_tenant(
                &w.f.client,
                &elsewhere,
                SwitchTenant {
                    tenant_id: w.owner.tenant_id().to_string(),
                },
            )
            .await;
    assert!(matches!(refused, Err(Error::SsoRequired)), "{refused:?}");
    // A session through one tenant's provider does not meet another tenant's "SSO
    // required": a switch drops what Acme's provider vouched for.
    let beta = w.f.signed_up("boss@beta.test", "Beta").await;
    let boss = verify(&w.f, &beta);
    let client_id = format!("tk-{}", uuid_like());
    w.idp.register(&client_id, "s3cret-of-the-client").await;
    w.connect(&boss, &client_id, &[]).await;
    w.require_sso(&boss).await.expect("beta's policy");
    let jo = w.caller(&sso_member.tokens);
    let mut tx =
        w.f.flows
            .db()
            .begin(&TenantScope::of(&boss))
            .await
            .expect("begin");
    tx.add_member(jo.user_id(), tenantkit_core::Role::Member)
        .await
        .expect("member");
    tx.commit().await.expect("commit");
    let refused =
        w.f.flows
            .switch_tenant(
                &w.f.client,
                &jo,
                SwitchTenant {
                    tenant_id: boss.tenant_id().to_string(),
                },
            )
            .await;
    assert!(matches!(refused, Err(Error::SsoRequired)), "{refused:?}");
}

fn password_login(email: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: Password::new(support::PASSWORD),
        tenant: None,
    }
}

async fn a_login_the_provider_starts_bounces_into_the_normal_flow(w: World) {
    let params = |iss: Option<&str>, target: &str| {
        InitiatedParams::from_query(Some(&format!(
            "{}login_hint=jo%40acme.test&target_link_uri={}",
            iss.map(|i| format!(
                "iss={}&",
                url::form_urlencoded::byte_serialize(i.as_bytes()).collect::<String>()
            ))
            .unwrap_or_default(),
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        )))
    };
    let missing = w
        .sso
        .start_initiated(
            &w.f.client,
            &w.slug,
            &params(None, "http://127.0.0.1:9/app/x"),
        )
        .await;
    assert!(
        matches!(
            missing,
            Err(Error::Core(tenantkit_core::Error::Validation(_)))
        ),
        "{missing:?}"
    );
    let other = w
        .sso
        .start_initiated(
            &w.f.client,
            &w.slug,
            &params(
                Some("https://other-idp.example"),
                "http://127.0.0.1:9/app/x",
            ),
        )
        .await;
    assert!(
        matches!(other, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{other:?}"
    );
    // An allowed target is kept; a foreign one falls back to the app URL.
    for (target, lands) in [
        (
            "http://127.0.0.1:9/app/deep",
            "http://127.0.0.1:9/app/deep?sso_code=",
        ),
        ("https://evil.example/", "http://127.0.0.1:9/app?sso_code="),
    ] {
        let start = w
            .sso
            .start_initiated(&w.f.client, &w.slug, &params(Some(&w.idp.issuer), target))
            .await
            .expect("initiated");
        assert!(
            start.location.contains("login_hint=jo%40acme.test"),
            "{}",
            start.location
        );
        let query = w.idp.sign_in(&start, "jo@acme.test", true).await;
        let location = w
            .callback(&query, Some(&World::cookie(&start)))
            .await
            .expect("callback");
        assert!(location.starts_with(lands), "{target}: {location}");
    }
}

tenantkit_core::backend_tests!(
    fixture = world;
    a_member_signs_in_through_the_tenants_provider,
    states_are_single_use_and_bound_to_the_browser,
    forged_id_tokens_are_refused,
    joining_needs_a_verified_address_in_a_verified_domain,
    a_password_member_links_the_provider_from_a_session,
    one_tenants_connection_does_not_open_another,
    connections_are_checked_before_they_are_stored,
    a_domain_joins_only_through_the_connection_that_claimed_it,
    domains_verify_by_dns_record,
    a_tenant_that_requires_sso_refuses_passwords_but_its_owners,
    a_login_the_provider_starts_bounces_into_the_normal_flow;
    fixture = world_own_provider;
    the_providers_key_rotation_needs_no_restart
);
