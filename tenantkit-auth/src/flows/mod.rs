//! The auth flows, as plain async functions with typed inputs and outputs: what happens on
//! signup, login, refresh, logout, tenant switch, password change and reset, email
//! verification, invitations, and the operator's `tenant create` / `user create`.
//!
//! Each flow enforces its rate limits, does its work in the right transactions, writes its
//! audit entries and answers with a typed value or an [`Error`] that maps to one problem
//! response. A server's handlers only parse the request, call one flow and answer; the same
//! flows serve a CLI or a test.
//!
//! Every flow that signs someone in (signup, login, tenant switch, accepting an invitation)
//! ends with the same step, [`AuthFlows::complete_sign_in`]: one place starts the session,
//! issues its tokens and audits the sign-in. A login first proves who asks with
//! [`AuthFlows::check_credentials`]; another crate's sign-in (SSO, a second factor) can do
//! its own check and end with the same step. Its outcome, [`SignIn`], has room for a sign-in
//! that still needs a second factor.
//!
//! ```
//! use tenantkit_auth::flows::{AuthFlows, LoginRequest, SignupOutcome, SignupRequest};
//! use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, Password, RefreshConfig, RefreshSessions, SigningKey};
//! use tenantkit_core::{ClientInfo, Database, Migrations};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenantkit_auth::Result<()> {
//! let db = Database::connect("sqlite::memory:").await?;
//! db.migrate(&Migrations::new().with(tenantkit_auth::migrations())).await?;
//! let tokens = AccessTokens::new(
//!     KeySet::new(SigningKey::generate_ed25519()?),
//!     JwtConfig::new("https://auth.example", "example-api"),
//! );
//! let sessions = RefreshSessions::new(db.clone(), &[7u8; 32], RefreshConfig::default())?;
//! let auth = AuthFlows::new(db, tokens.clone(), sessions);
//! let client = ClientInfo::new("203.0.113.7".parse().expect("an IP"));
//!
//! let SignupOutcome::SignedIn(signed_up) = auth
//!     .signup(&client, SignupRequest {
//!         email: "ada@example.com".into(),
//!         password: Password::new("correct horse battery staple"),
//!         tenant_name: "Acme".into(),
//!         tenant_slug: None,
//!     })
//!     .await?
//! else {
//!     unreachable!("the default signup mode signs the owner in");
//! };
//! let caller = tokens.verify(&signed_up.tokens.access_token)?;
//! assert_eq!(caller.tenant_id(), signed_up.tenant.id);
//!
//! let wrong = auth
//!     .login(&client, LoginRequest {
//!         email: "ada@example.com".into(),
//!         password: Password::new("not the password at all"),
//!         tenant: None,
//!     })
//!     .await;
//! assert!(matches!(wrong, Err(tenantkit_auth::Error::InvalidCredentials)));
//! # Ok(())
//! # }
//! ```

mod invitations;
mod members;
mod mfa;
mod operator;
mod password;
mod policy;
mod session;
mod sign_in;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tenantkit_core::{
    AuditEvent, ClientInfo, Database, Principal, Role, TenantId, TenantScope, User, UserId,
};

pub use invitations::{
    AcceptInvitation, INVITATION_SUBJECT, InvitationCreated, InviteRequest, Joined,
};
pub use mfa::{
    EnrolledSignIn, MfaVerify, PendingConfirmation, PendingEnrollment, RecoveryCodes, SecondFactor,
    TotpCode, TotpEnrollment,
};
pub use operator::{TenantCreated, UserAdded};
pub use password::{ChangePassword, ResetConfirm, ResetRequest, VerifyConfirm};
#[cfg_attr(not(feature = "sso"), allow(unused_imports))]
pub(crate) use policy::sso_connections;
pub use policy::{TenantPolicy, TenantPolicyPatch};
pub use session::{LoggedIn, LoginRequest, SignedUp, SignupOutcome, SignupRequest, SwitchTenant};
pub use sign_in::{CheckedCredentials, SignIn, SignInVia, SignedIn};

use crate::refresh::SessionRecord;
use crate::store::TokenPurpose;
use crate::store::mail_tokens;
use crate::{
    AccessTokens, AuthLimits, Error, Mailer, Message, OneTimeToken, PasswordHasher, RateLimits,
    RefreshSessions, RefreshToken, Result,
};

const RESET_TTL: Duration = Duration::from_secs(30 * 60);
const VERIFY_TTL: Duration = Duration::from_secs(48 * 3600);

/// The flows and everything they need. Cheap to clone.
#[derive(Clone)]
pub struct AuthFlows {
    db: Database,
    tokens: AccessTokens,
    sessions: RefreshSessions<Database>,
    passwords: PasswordHasher,
    limits: Arc<dyn AuthLimits>,
    mailer: Arc<dyn Mailer>,
    public_url: Arc<str>,
    signup_mode: SignupMode,
    seats: Option<Arc<dyn SeatLimit>>,
    member_events: Option<Arc<dyn MemberEvents>>,
    mfa: Option<crate::mfa::Mfa>,
}

/// What happened to a membership (see [`MemberEvents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemberChangeKind {
    /// The user joined the tenant (an accepted invitation).
    Added,
    /// The member's role changed.
    RoleChanged,
    /// The member was removed.
    Removed,
}

/// A membership change, as [`MemberEvents`] sees it inside the transaction that makes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MemberChange {
    /// What happened.
    pub kind: MemberChangeKind,
    /// The member.
    pub user_id: tenantkit_core::UserId,
    /// The role now (for a removal: the role it had).
    pub role: tenantkit_core::Role,
    /// The role before a change of role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<tenantkit_core::Role>,
    /// Who made the change (`None`: the member, accepting an invitation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<tenantkit_core::UserId>,
}

/// Runs inside the transaction of every membership change the flows make (a join, a role
/// change, a removal), after the change and its audit entry: the place to write an outbox
/// message (a realtime event, a webhook) that must exist exactly when the change commits. An
/// error rolls the change back.
pub trait MemberEvents: fmt::Debug + Send + Sync + 'static {
    /// Called with the change, in its transaction.
    fn member_changed<'a>(
        &'a self,
        tx: &'a mut tenantkit_core::TenantTx,
        change: &'a MemberChange,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = tenantkit_core::Result<()>> + Send + 'a>>;
}

/// How many seats (members plus pending invitations) a tenant may fill: one function, so a
/// billing plan can set it. Inviting beyond it answers `403 quota_exceeded`.
pub trait SeatLimit: fmt::Debug + Send + Sync + 'static {
    /// The tenant's seat limit (`None`: unlimited), read inside the invitation's transaction.
    fn seats<'a>(
        &'a self,
        tx: &'a mut tenantkit_core::TenantTx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = tenantkit_core::Result<Option<u64>>> + Send + 'a>,
    >;
}

/// How signup treats an address, and whether signing in waits for a proven one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignupMode {
    /// Signup signs the new owner in at once, and a registered address answers `409
    /// conflict`: the answer tells whoever asks that the address has an account (bounded by
    /// the signup rate limit). Signing in does not wait for the address to be proven.
    #[default]
    Open,
    /// Enumeration-safe: every well-formed signup answers the same `202` whether the address
    /// is new or registered (the new account's verification link, or a notice to the
    /// registered owner, goes to the mailbox; both paths hash the password, so timing says
    /// nothing either), and login refuses an unproven address with `email_unverified` (after
    /// the password matched; a new link is mailed).
    VerifyFirst,
}

impl fmt::Debug for AuthFlows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFlows")
            .field("db", &self.db)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl AuthFlows {
    /// Flows over `db` (migrated with this crate's [`crate::migrations`]), issuing tokens with
    /// `tokens` and sessions in `sessions`, with the default password hasher and rate limits, a
    /// mailer that only logs (set a real one with [`AuthFlows::with_mailer`]) and
    /// `http://localhost` as the base of mailed links.
    pub fn new(db: Database, tokens: AccessTokens, sessions: RefreshSessions<Database>) -> Self {
        Self {
            db,
            tokens,
            sessions,
            passwords: PasswordHasher::new(),
            limits: Arc::new(RateLimits::new(Default::default())),
            mailer: Arc::new(crate::LogMailer),
            public_url: "http://localhost".into(),
            signup_mode: SignupMode::Open,
            seats: None,
            member_events: None,
            mfa: None,
        }
    }

    /// Calls `events` inside every membership change's transaction (see [`MemberEvents`]).
    pub fn with_member_events(mut self, events: Arc<dyn MemberEvents>) -> Self {
        self.member_events = Some(events);
        self
    }

    /// Makes `user` a member of `tx`'s tenant with `role` (a join the tenant did not invite:
    /// single sign-on's just-in-time membership): within the tenant's seats, and told to the
    /// [`MemberEvents`] hook.
    ///
    /// # Errors
    /// `403 quota_exceeded` when the seats are taken; `409` when already a member.
    #[cfg_attr(not(feature = "sso"), allow(dead_code))]
    pub(crate) async fn join_tenant(
        &self,
        tx: &mut tenantkit_core::TenantTx,
        user: UserId,
        role: Role,
    ) -> Result<tenantkit_core::Membership> {
        if let Some(limit) = &self.seats
            && let Some(seats) = limit.seats(tx).await?
            && tx.seats_in_use().await? >= seats
        {
            return Err(tenantkit_core::Error::QuotaExceeded(format!(
                "the tenant's plan has {seats} seats, all taken"
            ))
            .into());
        }
        let membership = tx.add_member(user, role).await?;
        let change = MemberChange {
            kind: MemberChangeKind::Added,
            user_id: user,
            role,
            previous: None,
            by: None,
        };
        self.member_changed(tx, change).await?;
        Ok(membership)
    }

    /// Tells the [`MemberEvents`] hook, if any, about `change` inside `tx`.
    async fn member_changed(
        &self,
        tx: &mut tenantkit_core::TenantTx,
        change: MemberChange,
    ) -> Result<()> {
        if let Some(events) = &self.member_events {
            events.member_changed(tx, &change).await?;
        }
        Ok(())
    }

    /// Limits the seats of each tenant (see [`SeatLimit`]); unlimited by default.
    pub fn with_seat_limit(mut self, seats: Arc<dyn SeatLimit>) -> Self {
        self.seats = Some(seats);
        self
    }

    /// Uses `mode` for signup and sign-in ([`SignupMode::Open`] by default).
    pub fn with_signup_mode(mut self, mode: SignupMode) -> Self {
        self.signup_mode = mode;
        self
    }

    /// The signup mode in use.
    pub fn signup_mode(&self) -> SignupMode {
        self.signup_mode
    }

    /// Uses `mailer` for reset, verification and invitation emails.
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Uses these rate limits: the in-memory [`RateLimits`] by default, or a store shared by
    /// several instances (see [`AuthLimits`] for the contract it must keep).
    pub fn with_limits(mut self, limits: Arc<dyn AuthLimits>) -> Self {
        self.limits = limits;
        self
    }

    /// Uses this password hasher (parameters, policy, concurrency).
    pub fn with_passwords(mut self, passwords: PasswordHasher) -> Self {
        self.passwords = passwords;
        self
    }

    /// Mailed links start with `public_url` (for example `https://app.example.com`).
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = public_url.trim_end_matches('/').into();
        self
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The access-token issuer and verifier.
    pub fn tokens(&self) -> &AccessTokens {
        &self.tokens
    }

    /// The refresh sessions.
    pub fn sessions(&self) -> &RefreshSessions<Database> {
        &self.sessions
    }

    /// The password hasher.
    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }

    /// The rate limits.
    pub fn limits(&self) -> &dyn AuthLimits {
        &*self.limits
    }

    /// A token pair for `session`, in which its user acts as `role`.
    fn token_pair(
        &self,
        session: &SessionRecord,
        role: Role,
        refresh: &RefreshToken,
    ) -> Result<TokenPair> {
        let principal = Principal::new(
            session.user_id,
            session.tenant_id,
            role,
            Vec::<String>::new(),
            session.id,
        )
        // How the session signed in, kept through every refresh and tenant switch.
        .with_amr(session.amr.as_slice().to_vec());
        let access = self.tokens.issue(&principal)?;
        Ok(TokenPair {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            refresh_token: refresh.expose().to_owned(),
        })
    }

    /// Records `event` in `tenant`'s audit log in a transaction of its own (for events that
    /// change nothing else in that tenant, such as a login).
    pub(crate) async fn audit(&self, tenant: TenantId, event: AuditEvent) -> Result<()> {
        // The tenant comes from our own records (a session, a membership), never a request.
        let mut tx = self.db.begin(&TenantScope::for_system(tenant)).await?;
        tx.audit(event).await?;
        Ok(tx.commit().await?)
    }

    /// Records an account-wide event in every tenant the user belongs to.
    async fn audit_everywhere(&self, user: UserId, event: impl Fn() -> AuditEvent) -> Result<()> {
        for membership in self.db.memberships_of(user).await? {
            self.audit(membership.tenant_id, event()).await?;
        }
        Ok(())
    }

    /// The caller's account.
    async fn current_user(&self, principal: &Principal) -> Result<User> {
        Ok(self
            .db
            .find_user(principal.user_id())
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?)
    }

    /// Refuses a caller whose session was revoked or has expired, for operations that create
    /// new sessions from an access token (which may outlive its session by up to its TTL).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when the session is over.
    pub async fn require_live_session(&self, principal: &Principal) -> Result<()> {
        if self.sessions.is_over(principal.session_id()).await? {
            return Err(Error::InvalidToken("session is over"));
        }
        Ok(())
    }

    /// Stores a new mailed token for `user` and sends its link. Delivery runs in the
    /// background, so the answer does not wait for (or reveal anything through) the mail
    /// server.
    async fn mail_token(&self, user: &User, purpose: TokenPurpose) -> Result<()> {
        let token = OneTimeToken::generate();
        let (ttl, subject, path) = match purpose {
            TokenPurpose::PasswordReset => (RESET_TTL, "Reset your password", "reset-password"),
            TokenPurpose::EmailVerification => {
                (VERIFY_TTL, "Verify your email address", "verify-email")
            }
        };
        let at = tenantkit_core::now();
        mail_tokens::store(&self.db, user.id, purpose, &token.hash(), at, at + ttl).await?;
        self.send_in_background(Message {
            to: user.email.to_string(),
            subject: subject.to_owned(),
            body: format!(
                "Open this link within {} minutes:\n\n{}/{path}?token={}\n\nIf you did not ask for it, ignore this email.",
                ttl.as_secs() / 60,
                self.public_url,
                token.expose()
            ),
        });
        Ok(())
    }

    /// Sends `message` in the background; failures are logged, never the body.
    fn send_in_background(&self, message: Message) {
        let mailer = self.mailer.clone();
        tokio::spawn(async move {
            if let Err(err) = mailer.send(message).await {
                tracing::error!(error = %err, "sending email failed");
            }
        });
    }

    /// Best effort: a new or unverified account gets a verification email; failing to queue
    /// it does not fail the flow (a new link can be requested).
    async fn offer_verification(&self, user: &User) {
        if user.email_verified_at.is_none()
            && let Err(err) = self.mail_token(user, TokenPurpose::EmailVerification).await
        {
            tracing::warn!(error = %err, "could not queue the verification email");
        }
    }
}

/// `{access_token, token_type: "Bearer", expires_in, refresh_token}`: what every flow that
/// signs someone in answers (flat beside any other fields). Its `Debug` hides the tokens.
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The opaque refresh token (single use: each refresh answers a new one).
    #[cfg_attr(feature = "openapi", schema(format = Password))]
    pub refresh_token: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The audit event `action` by `actor` from `client`, about `kind` `id`.
fn event(
    client: &ClientInfo,
    action: &str,
    actor: Option<UserId>,
    kind: &str,
    id: impl fmt::Display,
) -> AuditEvent {
    client.event(action, actor).target(kind, id)
}
