//! Rate limits of the auth flows (GCRA via governor): per client network and kind of attempt,
//! per account for failed logins, resets and password checks, per inviter and tenant for
//! invitations.
//!
//! - **Client networks, not addresses**: IPv4 addresses count one by one, IPv6 addresses by
//!   their /64 (one subscriber gets a whole /64, so rotating inside it gives nothing).
//! - **One bucket per kind of attempt**: a burst of refreshes never blocks a login, signups
//!   never block resets. Refresh has a far larger budget: a refresh token is 256 bits, so the
//!   limit only bounds cost, and concurrent refreshes of one token (two tabs, a retrying app)
//!   must all succeed.
//! - **No targeted lockout**: failed logins are counted per (account, client network), so an
//!   attacker elsewhere cannot lock the owner out by failing on purpose. Successful logins
//!   never count, and reset requests have a bucket of their own.
//! - **An account-wide ceiling that only stops the guessers**: failures against one account
//!   from everywhere are counted too. Past that ceiling (a distributed guessing run), a network
//!   that has itself failed against the account in the last hour is refused until the run
//!   subsides, unless it logged into the account with the right password before (the owner
//!   who mistyped). A network that has not failed against the account still gets its attempt
//!   checked, within its own budgets; its first failure marks it. So the owner is never
//!   refused from a network that has not failed, while each guessing site gets one guess
//!   per hour instead of its per-network budget. Failures mark the whole site (an IPv4 /24,
//!   an IPv6 /48: a site's free /64s do not buy fresh guesses); successes are remembered for
//!   the exact network, up to eight per account, so nobody else's logins can push them out.
//!   The marks live in this process's memory: a restart forgets them (the ceiling then
//!   starts afresh too). The per-network and per-(account, network) budgets stay hard limits
//!   in every case.
//!
//! Every decision depends on the account string alone, never on whether it exists, so an
//! unknown email is limited (and answered) exactly like a registered one.

mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(test)]
mod tests;

pub use memory::RateLimits;
#[cfg(feature = "redis")]
pub use redis::RedisLimits;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;

use tenantkit_core::{TenantId, UserId};

#[cfg(doc)]
use crate::Error;
use crate::Result;

/// What an attempt from a client is for. Each kind has its own bucket per client network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attempt {
    /// `POST /v1/auth/login`.
    Login,
    /// `POST /v1/auth/signup`.
    Signup,
    /// `POST /v1/auth/refresh` (its own, larger budget).
    Refresh,
    /// Requesting or confirming a password reset.
    PasswordReset,
    /// Accepting an invitation.
    AcceptInvitation,
    /// Confirming an email address.
    VerifyEmail,
}

/// How many attempts are allowed (per minute unless said otherwise; also the burst).
/// `Default`: 30 per client network for each kind, 600 refreshes, 10 failed logins per
/// account and network, 100 per account in all, 3 resets per account, 10 password checks and
/// verification mails per account, 30 invitations per inviter and 100 per tenant per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Attempts of one kind (login, signup, reset, accept, verify) from one client network.
    pub per_network_per_minute: NonZeroU32,
    /// Refreshes from one client network.
    pub refresh_per_network_per_minute: NonZeroU32,
    /// Failed logins against one account from one client network.
    pub failures_per_account_network_per_minute: NonZeroU32,
    /// Failed logins against one account from anywhere: the ceiling of a distributed run.
    /// Past it, only networks that failed against the account themselves are refused.
    pub failures_per_account_per_minute: NonZeroU32,
    /// Password-reset requests for one account.
    pub resets_per_account_per_minute: NonZeroU32,
    /// Checks of the current password (a password change) and verification mails, per account.
    pub account_actions_per_minute: NonZeroU32,
    /// Invitations sent by one inviter, per hour.
    pub invitations_per_inviter_per_hour: NonZeroU32,
    /// Invitations sent in one tenant, per hour.
    pub invitations_per_tenant_per_hour: NonZeroU32,
}

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_network_per_minute: nonzero(30),
            refresh_per_network_per_minute: nonzero(600),
            failures_per_account_network_per_minute: nonzero(10),
            failures_per_account_per_minute: nonzero(100),
            resets_per_account_per_minute: nonzero(3),
            account_actions_per_minute: nonzero(10),
            invitations_per_inviter_per_hour: nonzero(30),
            invitations_per_tenant_per_hour: nonzero(100),
        }
    }
}

impl RateLimitConfig {
    /// No practical limit at all: for load tests and benchmarks only, never for a server.
    pub fn unlimited() -> Self {
        Self {
            per_network_per_minute: NonZeroU32::MAX,
            refresh_per_network_per_minute: NonZeroU32::MAX,
            failures_per_account_network_per_minute: NonZeroU32::MAX,
            failures_per_account_per_minute: NonZeroU32::MAX,
            resets_per_account_per_minute: NonZeroU32::MAX,
            account_actions_per_minute: NonZeroU32::MAX,
            invitations_per_inviter_per_hour: NonZeroU32::MAX,
            invitations_per_tenant_per_hour: NonZeroU32::MAX,
        }
    }
}

/// The client network an address belongs to, for rate limits: the address itself for IPv4
/// (also when written as an IPv4-mapped IPv6 address), its /64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork(IpAddr);

impl ClientNetwork {
    /// The network of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientNetwork(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientNetwork(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientNetwork(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// The future every [`AuthLimits`] method returns: boxed and `Send`, so the trait stays
/// dyn-compatible (`Arc<dyn AuthLimits>`) and an implementation may await a network store.
pub type LimitFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// The rate limits the auth flows (`flows::AuthFlows`) consult, behind a trait so that
/// a store shared by several instances (Redis, a database) can replace the in-memory default,
/// [`RateLimits`]. Plug one in with `AuthFlows::with_limits(Arc::new(..))`.
///
/// Every method is asynchronous (a boxed `Send` future, [`LimitFuture`]) so that an
/// implementation can ask a networked store; the in-memory [`RateLimits`] answers at once.
/// Each refusal is [`Error::RateLimited`] with the wait until the next allowed attempt
/// (answered 429 `rate_limited` with `Retry-After`).
///
/// # The contract of an implementation
///
/// A shared implementation must keep the promises of [`RateLimits`], which the flows and their
/// tests rely on:
///
/// - **Per client network, per kind**: [`check`](Self::check) counts attempts per
///   ([`Attempt`], [`ClientNetwork::of`]`(ip)`), so IPv4 addresses count one by one and IPv6
///   addresses by their /64; each kind has its own budget, [`Attempt::Refresh`] a far larger
///   one. A burst of one kind never blocks another.
/// - **Failed logins per account and network**: [`record_login_failure`](Self::record_login_failure)
///   counts against the (account, network) pair, and [`check_login`](Self::check_login)
///   refuses that pair once its budget is spent; that budget is a hard limit. Successful
///   logins and [`check_login`](Self::check_login) itself consume nothing.
/// - **The ceiling rule**: failures against one account from everywhere are counted too.
///   Past that account-wide ceiling, only the networks that failed against the account
///   recently (counted by guessing site: an IPv4 /24, an IPv6 /48) are refused, unless they
///   logged into the account before ([`record_login_success`](Self::record_login_success));
///   a network that has not failed against the account is never refused by the ceiling. An
///   attacker must not be able to lock the owner out.
/// - **Accounts by their string alone**: every decision depends on the account string
///   (trimmed, compared case-insensitively, bounded in length so keys stay small), never on
///   whether the account exists, so an unknown email is limited and answered exactly like a
///   registered one.
/// - **Per account, per user, per tenant**: [`check_reset`](Self::check_reset) counts reset
///   requests per account string (never draining the login budget),
///   [`check_account_action`](Self::check_account_action) counts per (kind, user) and
///   [`check_invitation`](Self::check_invitation) per inviter and per tenant.
/// - **Bounded memory or storage**: keys an attacker chooses (account strings, networks)
///   expire when idle.
///
/// # A shared store
///
/// - **Atomic counting**: each check-and-count is one atomic step in the store (a GCRA or
///   counter update in one `EVAL`/transaction, never a read then a write), so N instances
///   that receive attempts at once never let more than the budget through between them.
///   Blocks and marks (a spent (account, network) budget, the ceiling, the networks that
///   failed or logged in) are written to the store too, so every instance refuses alike.
/// - **Fail closed**: when the store cannot be reached or answers garbage, return
///   [`Error::LimitsUnavailable`] (answered 503 `service_unavailable`, a clear, retryable
///   error), never `Ok`. Failing open would turn a store outage, or an attacker who knocks the
///   store over, into unlimited password guessing against every account; failing closed only
///   pauses new sign-ins, signups and resets while the store is down (access tokens already
///   issued keep verifying: verification never consults the limits). The one exception is
///   [`record_login_success`](Self::record_login_success): its error is logged and the login
///   proceeds, because the password was already proven and the checks before it passed.
/// - **Bounded waits**: put a timeout on every store call (tens of milliseconds) and fail
///   closed when it passes, so a slow store cannot pile up requests. Never panic.
/// - **Cancellation**: the flows may drop a future before it completes (the client went
///   away); an implementation must not leave the store inconsistent when that happens.
pub trait AuthLimits: fmt::Debug + Send + Sync + 'static {
    /// Counts an attempt of kind `attempt` from `ip`'s client network.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when that network's budget for the kind is spent;
    /// [`Error::LimitsUnavailable`] when the store cannot answer.
    fn check(&self, attempt: Attempt, ip: IpAddr) -> LimitFuture<'_>;

    /// Before a login: refuses `ip`'s network for `account` while its failure budget against
    /// the account is spent, or while the ceiling is exceeded and the network is a guesser.
    /// Consumes nothing.
    ///
    /// # Errors
    /// [`Error::RateLimited`]; [`Error::LimitsUnavailable`].
    fn check_login<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a>;

    /// After a wrong password (or an unknown account): counts the failure against `account`
    /// from `ip`'s network and in all, and marks the network as having failed.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when this failure spent a budget that now refuses this network;
    /// [`Error::LimitsUnavailable`].
    fn record_login_failure<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a>;

    /// After the right password: `ip`'s network is the account's own (let through the
    /// ceiling; its own budgets still apply).
    ///
    /// # Errors
    /// [`Error::LimitsUnavailable`]; the flows log it and let the login proceed.
    fn record_login_success<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a>;

    /// Counts a password-reset request for `account`.
    ///
    /// # Errors
    /// [`Error::RateLimited`]; [`Error::LimitsUnavailable`].
    fn check_reset<'a>(&'a self, account: &'a str) -> LimitFuture<'a>;

    /// Counts an action of `user`'s own account, by kind (`"password_check"`,
    /// `"verification_mail"`, `"signup_notice"`).
    ///
    /// # Errors
    /// [`Error::RateLimited`]; [`Error::LimitsUnavailable`].
    fn check_account_action(&self, kind: &'static str, user: UserId) -> LimitFuture<'_>;

    /// Counts an invitation sent by `inviter` in `tenant`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when the inviter's or the tenant's budget is spent;
    /// [`Error::LimitsUnavailable`].
    fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> LimitFuture<'_>;
}
