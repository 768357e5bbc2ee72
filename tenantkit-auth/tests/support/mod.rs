//! Fixtures shared by the behaviour tests (STYLE.md rule 16): the flows over a fresh database,
//! and the keys, configuration and caller the token tests sign with. Each test file includes
//! this module with `mod support;`.

// Each test binary includes the whole module and uses only the helpers it needs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::flows::{
    AcceptInvitation, AuthFlows, InvitationCreated, InviteRequest, Joined, SignedUp, SignupOutcome,
    SignupRequest,
};
use tenantkit_auth::{
    AccessTokens, Error, JwtConfig, KeySet, MemoryMailer, Password, RefreshConfig, RefreshSessions,
    Revocation, SigningKey,
};
use tenantkit_core::testing::TestDb;
use tenantkit_core::{Backend, ClientInfo, ManualClock, Migrations, Principal, Role, SessionId};
use tenantkit_core::{TenantId, UserId};
use tokio::sync::broadcast;

/// The password every test account signs up with.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// Test-only key material (see `fixtures/README.md`).
pub(crate) const RSA_PEM: &[u8] = include_bytes!("../fixtures/test-only-rsa.pem");
pub(crate) const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/test-only-rsa.pub.pem");
pub(crate) const EC_PEM: &[u8] = include_bytes!("../fixtures/test-only-ec.pem");

/// `AuthFlows` over a fresh database, with its mail caught in memory and a client to call
/// it as; the database lives as long as the fixture.
pub(crate) struct Flows {
    pub(crate) test_db: TestDb,
    pub(crate) flows: AuthFlows,
    pub(crate) mailer: Arc<MemoryMailer>,
    pub(crate) client: ClientInfo,
    /// The revocation bus, subscribed before any call ([`flows_hearing_revocations`] only).
    pub(crate) revocations: Option<broadcast::Receiver<Arc<Revocation>>>,
}

/// The flows over a fresh `backend` database (`None` when the backend is not available).
pub(crate) async fn flows(backend: Backend) -> Option<Flows> {
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("tests", "tests"),
    );
    flows_with(backend, tokens).await
}

/// [`flows`] issuing `tokens` (on a clock of the test's, say).
pub(crate) async fn flows_with(backend: Backend, tokens: AccessTokens) -> Option<Flows> {
    let test_db = TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_auth::migrations()),
    )
    .await?;
    let sessions = RefreshSessions::new(test_db.db.clone(), &[5u8; 32], RefreshConfig::default())
        .expect("sessions");
    let mailer = Arc::new(MemoryMailer::new());
    let flows = AuthFlows::new(test_db.db.clone(), tokens, sessions).with_mailer(mailer.clone());
    Some(Flows {
        test_db,
        flows,
        mailer,
        client: ClientInfo::new("198.51.100.20".parse().expect("ip")),
        revocations: None,
    })
}

/// [`flows`], subscribed to the revocation bus before any call.
pub(crate) async fn flows_hearing_revocations(backend: Backend) -> Option<Flows> {
    let mut f = flows(backend).await?;
    f.revocations = Some(f.flows.sessions().revocations().subscribe());
    Some(f)
}

impl Flows {
    /// Signs `email` up with [`PASSWORD`] as the owner of a new tenant named `tenant_name`
    /// (open signup signs in).
    pub(crate) async fn signed_up(&self, email: &str, tenant_name: &str) -> SignedUp {
        let outcome = self
            .flows
            .signup(
                &self.client,
                SignupRequest {
                    email: email.into(),
                    password: Password::new(PASSWORD),
                    tenant_name: tenant_name.into(),
                    tenant_slug: None,
                },
            )
            .await
            .expect("signup");
        match outcome {
            SignupOutcome::SignedIn(signed_up) => *signed_up,
            other => panic!("open signup signs in: {other:?}"),
        }
    }

    /// `inviter` invites `email` as a member; the mailed invitation is accepted with a new
    /// account (password [`PASSWORD`]). Returns the invitation and the acceptance.
    pub(crate) async fn invite_and_accept(
        &self,
        inviter: &Principal,
        email: &str,
    ) -> (InvitationCreated, Joined) {
        let invited = self
            .flows
            .invite(
                &self.client,
                inviter,
                InviteRequest {
                    email: email.into(),
                    role: Role::Member,
                },
            )
            .await
            .expect("invite");
        let token = self.mailed_token(email).await;
        let joined = self
            .flows
            .accept_invitation(
                &self.client,
                None,
                AcceptInvitation {
                    token,
                    password: Some(Password::new(PASSWORD)),
                },
            )
            .await
            .expect("accept")
            .into_complete()
            .expect("no second factor due");
        (invited, joined)
    }

    /// The token mailed to `to` (mail goes out in the background: waited for, with a
    /// generous guard against a hang only).
    pub(crate) async fn mailed_token(&self, to: &str) -> String {
        self.mailed_token_about(to, None).await
    }

    /// The token of the first mail to `to` with `subject` (any subject when `None`), waited
    /// for like [`Self::mailed_token`].
    pub(crate) async fn mailed_token_about(&self, to: &str, subject: Option<&str>) -> String {
        let wait = async {
            loop {
                let mail = self
                    .mailer
                    .sent()
                    .into_iter()
                    .find(|m| m.to == to && subject.is_none_or(|s| m.subject == s));
                if let Some(mail) = mail {
                    let (_, rest) = mail.body.split_once("token=").expect("a link");
                    break rest.split_whitespace().next().expect("token").to_owned();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .expect("hang guard: the mail was sent")
    }
}

/// The issuer and audience the token tests use.
pub(crate) fn config() -> JwtConfig {
    JwtConfig::new("https://issuer.test", "tenantkit-api")
}

/// A member with one scope and a fresh session, without sign-in methods.
pub(crate) fn caller() -> Principal {
    Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Member,
        ["projects:read".to_owned()],
        SessionId::new(),
    )
}

/// A fresh Ed25519 signing key.
pub(crate) fn ed25519() -> SigningKey {
    SigningKey::generate_ed25519().expect("generate")
}

/// Access tokens signed with `key`, on a clock the test moves.
pub(crate) fn tokens_with(key: SigningKey) -> (AccessTokens, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    (
        AccessTokens::with_clock(KeySet::new(key), config(), clock.clone()),
        clock,
    )
}

/// Asserts `token` is refused as `InvalidToken`.
pub(crate) fn assert_invalid(tokens: &AccessTokens, token: &str, what: &str) {
    match tokens.verify(token) {
        Err(Error::InvalidToken(_)) => {}
        other => panic!("{what}: expected InvalidToken, got {other:?}"),
    }
}

/// `value` as JSON in unpadded base64url, as a token part.
pub(crate) fn b64(value: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(value).expect("json"))
}
