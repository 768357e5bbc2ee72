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

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, DefaultClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use tenantkit_core::{TenantId, UserId};

use crate::{Error, Result};

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
    /// The guessing site this network belongs to (see [`GuessSite`]).
    fn site(self) -> IpAddr {
        GuessSite::of(self.0).0
    }

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

/// Where guessers are told apart past the account-wide ceiling: an IPv4 /24 or an IPv6 /48.
/// Wider than a [`ClientNetwork`] on purpose: a site gets a whole IPv6 /48 (or a /56) for
/// free, and would otherwise have 65,536 fresh "networks", each with a fresh guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GuessSite(IpAddr);

impl GuessSite {
    fn of(ip: IpAddr) -> Self {
        match ClientNetwork::of(ip).0 {
            IpAddr::V4(v4) => GuessSite(IpAddr::V4((u32::from(v4) & !0xff).into())),
            IpAddr::V6(v6) => GuessSite(IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into())),
        }
    }
}

/// The client networks that logged into one account with the right password, newest last;
/// per account so that nobody else's logins can push an owner's network out.
struct KnownNetworks<I> {
    accounts: Mutex<HashMap<String, Vec<(ClientNetwork, I)>>>,
}

impl<I: Copy + Ord> KnownNetworks<I> {
    /// Networks remembered per account (the owner's home, office, phone, ...).
    const PER_ACCOUNT: usize = 8;
    /// Accounts remembered; past it, expired entries go, then the accounts whose newest
    /// success is oldest.
    const ACCOUNTS: usize = 100_000;

    fn new() -> Self {
        Self {
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(ClientNetwork, I)>>> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn knows(&self, account: &str, network: ClientNetwork, now: I) -> bool {
        self.lock().get(account).is_some_and(|networks| {
            networks
                .iter()
                .any(|(known, until)| *known == network && *until > now)
        })
    }

    fn remember(&self, account: &str, network: ClientNetwork, until: I, now: I) {
        let mut accounts = self.lock();
        if accounts.len() >= Self::ACCOUNTS && !accounts.contains_key(account) {
            accounts.retain(|_, networks| {
                networks.retain(|(_, until)| *until > now);
                !networks.is_empty()
            });
            if accounts.len() >= Self::ACCOUNTS {
                let mut newest: Vec<I> = accounts
                    .values()
                    .filter_map(|networks| networks.iter().map(|(_, until)| *until).max())
                    .collect();
                newest.sort_unstable();
                let median = newest[newest.len() / 2];
                accounts.retain(|_, networks| networks.iter().any(|(_, until)| *until > median));
            }
        }
        let networks = accounts.entry(account.to_owned()).or_default();
        networks.retain(|(known, until)| *known != network && *until > now);
        if networks.len() >= Self::PER_ACCOUNT {
            networks.remove(0);
        }
        networks.push((network, until));
    }
}

/// How long a failed login marks its client network as a guesser of that account (refused
/// while the account-wide ceiling is exceeded).
const FAILURE_MEMORY: Duration = Duration::from_secs(60 * 60);

/// How long a successful login marks its client network as the account's own (let through
/// while the account-wide ceiling is exceeded, even after a mistyped password).
const SUCCESS_MEMORY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

type Keyed<K, C> =
    RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as GovernorClock>::Instant>>;

/// Keys that ran out of budget, until when. Bounded: past `CAP` entries, expired ones are
/// dropped, and if that is not enough, the oldest half.
struct Blocked<K, I> {
    until: Mutex<HashMap<K, I>>,
}

impl<K: Hash + Eq + Clone, I: Copy + Ord> Blocked<K, I> {
    const CAP: usize = 100_000;

    fn new() -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, I>> {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instant `key` is blocked until, if it still is at `now`.
    fn get(&self, key: &K, now: I) -> Option<I> {
        let mut blocked = self.lock();
        match blocked.get(key).copied() {
            Some(until) if until > now => Some(until),
            Some(_) => {
                blocked.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    fn block(&self, key: K, until: I, now: I) {
        let mut blocked = self.lock();
        if blocked.len() >= Self::CAP {
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= Self::CAP {
                let mut instants: Vec<I> = blocked.values().copied().collect();
                instants.sort_unstable();
                let median = instants[instants.len() / 2];
                blocked.retain(|_, until| *until > median);
            }
        }
        blocked.insert(key, until);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The limits of the auth flows. Memory stays bounded: idle keys are dropped as the maps are
/// used, and account keys are capped in length.
pub struct RateLimits<C: GovernorClock = DefaultClock> {
    per_network: Keyed<(Attempt, ClientNetwork), C>,
    refresh: Keyed<ClientNetwork, C>,
    failures_local: Keyed<(String, ClientNetwork), C>,
    failures_global: Keyed<String, C>,
    blocked_local: Blocked<(String, ClientNetwork), C::Instant>,
    /// Accounts past their account-wide ceiling, until when.
    blocked_global: Blocked<String, C::Instant>,
    /// (Account, site) pairs with a recent failure, until [`FAILURE_MEMORY`] has passed.
    failed_from: Blocked<(String, GuessSite), C::Instant>,
    /// The networks that logged into each account, until [`SUCCESS_MEMORY`] has passed.
    succeeded_from: KnownNetworks<C::Instant>,
    resets: Keyed<String, C>,
    account_actions: Keyed<(&'static str, String), C>,
    invites_by_inviter: Keyed<UserId, C>,
    invites_in_tenant: Keyed<TenantId, C>,
    clock: C,
    checks: AtomicU64,
}

impl<C: GovernorClock> fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("tracked_networks", &self.per_network.len())
            .field("blocked_accounts", &self.blocked_global.len())
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Limits on the real clock.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

fn per_hour(n: NonZeroU32) -> Quota {
    Quota::per_hour(n)
}

impl<C: GovernorClock + Clone> RateLimits<C> {
    /// Limits on an explicit clock (`governor::clock::FakeRelativeClock` in tests).
    pub fn with_clock(config: RateLimitConfig, clock: C) -> Self {
        fn keyed<K: Hash + Eq + Clone, C: GovernorClock + Clone>(
            quota: Quota,
            clock: &C,
        ) -> Keyed<K, C> {
            RateLimiter::dashmap_with_clock(quota, clock.clone())
        }
        Self {
            per_network: keyed(Quota::per_minute(config.per_network_per_minute), &clock),
            refresh: keyed(
                Quota::per_minute(config.refresh_per_network_per_minute),
                &clock,
            ),
            failures_local: keyed(
                Quota::per_minute(config.failures_per_account_network_per_minute),
                &clock,
            ),
            failures_global: keyed(
                Quota::per_minute(config.failures_per_account_per_minute),
                &clock,
            ),
            blocked_local: Blocked::new(),
            blocked_global: Blocked::new(),
            failed_from: Blocked::new(),
            succeeded_from: KnownNetworks::new(),
            resets: keyed(
                Quota::per_minute(config.resets_per_account_per_minute),
                &clock,
            ),
            account_actions: keyed(Quota::per_minute(config.account_actions_per_minute), &clock),
            invites_by_inviter: keyed(per_hour(config.invitations_per_inviter_per_hour), &clock),
            invites_in_tenant: keyed(per_hour(config.invitations_per_tenant_per_hour), &clock),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    fn limited(&self, not_until: &governor::NotUntil<C::Instant>) -> Error {
        Error::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }

    /// Counts an attempt of kind `attempt` from `ip`'s client network.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until the next allowed attempt.
    pub fn check(&self, attempt: Attempt, ip: IpAddr) -> Result<()> {
        self.housekeeping();
        let network = ClientNetwork::of(ip);
        let result = match attempt {
            Attempt::Refresh => self.refresh.check_key(&network),
            other => self.per_network.check_key(&(other, network)),
        };
        result.map_err(|not_until| self.limited(&not_until))
    }

    /// Login: refuses `ip`'s network when its own failure budget against `account` is spent,
    /// or when the account-wide ceiling is exceeded and this network is one of the guessers (it
    /// failed against the account within the last hour and has not logged into it within 30
    /// days). A network that has not failed is never refused here. Unlike the
    /// other checks this consumes nothing, so successful logins never count.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until the block ends.
    pub fn check_login(&self, account: &str, ip: IpAddr) -> Result<()> {
        let key = Self::account_key(account);
        let local_key = (key, ClientNetwork::of(ip));
        let now = self.clock.now();
        let mut until = self.blocked_local.get(&local_key, now);
        if let Some(ceiling) = self.blocked_global.get(&local_key.0, now)
            && self.is_guesser(&local_key, now)
        {
            until = until.max(Some(ceiling));
        }
        match until {
            Some(until) => Err(Error::RateLimited {
                retry_after: until.duration_since(now).into(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the network of `local_key` (its site: /24, /48) failed against its account
    /// recently, and the network is not known to the account by a successful login.
    fn is_guesser(&self, local_key: &(String, ClientNetwork), now: C::Instant) -> bool {
        let (account, network) = local_key;
        self.failed_from
            .get(&(account.clone(), GuessSite(network.site())), now)
            .is_some()
            && !self.succeeded_from.knows(account, *network, now)
    }

    /// Login: counts a failed attempt against `account` from `ip`'s network (and in all), and
    /// marks the network as having failed against the account. When that spends the
    /// network's budget, the network is blocked for this account; when the account-wide
    /// ceiling is exceeded, every network that failed against the account (this one included,
    /// unless the account knows it) is refused until the ceiling allows failures again. Either
    /// way this attempt answers rate limited.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when this failure exhausted a budget that now refuses this
    /// network.
    pub fn record_login_failure(&self, account: &str, ip: IpAddr) -> Result<()> {
        self.housekeeping();
        let key = Self::account_key(account);
        let local_key = (key.clone(), ClientNetwork::of(ip));
        let now = self.clock.now();
        self.failed_from.block(
            (key.clone(), GuessSite(local_key.1.site())),
            now + Nanos::from(FAILURE_MEMORY),
            now,
        );
        let local = self.failures_local.check_key(&local_key);
        let global = self.failures_global.check_key(&key);
        let mut refused_until = None;
        if let Err(not_until) = global {
            let until = not_until.earliest_possible();
            self.blocked_global.block(key, until, now);
            if self.is_guesser(&local_key, now) {
                refused_until = Some(until);
            }
        }
        if let Err(not_until) = local {
            let until = not_until.earliest_possible();
            self.blocked_local.block(local_key, until, now);
            refused_until = refused_until.max(Some(until));
        }
        match refused_until {
            Some(until) => Err(Error::RateLimited {
                retry_after: until.duration_since(now).into(),
            }),
            None => Ok(()),
        }
    }

    /// Login: `ip`'s network proved it knows `account`'s password. It is let through the
    /// account-wide ceiling for 30 days (its own budgets still apply), and its
    /// earlier failures no longer mark it as a guesser.
    pub fn record_login_success(&self, account: &str, ip: IpAddr) {
        self.housekeeping();
        let (account, network) = (Self::account_key(account), ClientNetwork::of(ip));
        let now = self.clock.now();
        self.failed_from
            .remove(&(account.clone(), GuessSite(network.site())));
        self.succeeded_from
            .remember(&account, network, now + Nanos::from(SUCCESS_MEMORY), now);
    }

    /// Counts a password-reset request for `account` (its own bucket: resets never drain the
    /// login budget, and mailing a victim is bounded).
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    pub fn check_reset(&self, account: &str) -> Result<()> {
        self.housekeeping();
        self.resets
            .check_key(&Self::account_key(account))
            .map_err(|not_until| self.limited(&not_until))
    }

    /// Counts an action of `user`'s own account, by kind (`"password_check"`,
    /// `"verification_mail"`): a stolen access token must not become an oracle for the current
    /// password, nor a mail cannon.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    pub fn check_account_action(&self, kind: &'static str, user: UserId) -> Result<()> {
        self.housekeeping();
        self.account_actions
            .check_key(&(kind, user.to_string()))
            .map_err(|not_until| self.limited(&not_until))
    }

    /// Counts an invitation sent by `inviter` in `tenant`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when the inviter's or the tenant's hourly budget is spent.
    pub fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> Result<()> {
        self.housekeeping();
        self.invites_by_inviter
            .check_key(&inviter)
            .and_then(|()| self.invites_in_tenant.check_key(&tenant))
            .map_err(|not_until| self.limited(&not_until))
    }

    /// A bounded, case-insensitive key: an attacker must not grow the maps with megabyte-long
    /// "emails".
    fn account_key(account: &str) -> String {
        account.trim().to_lowercase().chars().take(320).collect()
    }

    fn housekeeping(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.per_network.retain_recent();
            self.refresh.retain_recent();
            self.failures_local.retain_recent();
            self.failures_global.retain_recent();
            self.resets.retain_recent();
            self.account_actions.retain_recent();
            self.invites_by_inviter.retain_recent();
            self.invites_in_tenant.retain_recent();
        }
    }
}

/// The rate limits the auth flows (`flows::AuthFlows`) consult, behind a trait so that
/// a store shared by several instances (Redis, a database) can replace the in-memory default,
/// [`RateLimits`]. Plug one in with `AuthFlows::with_limits(Arc::new(..))`.
///
/// These are exactly the calls the flows make; each refusal is [`Error::RateLimited`] with the
/// wait until the next allowed attempt (answered 429 `rate_limited` with `Retry-After`). Any
/// other error an implementation returns (its store being unreachable, say) is answered as
/// that error: an implementation decides itself whether to fail open or closed, and must
/// never panic.
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
/// Calls are synchronous and made on the request's task: an implementation over a network
/// store should answer from a local view it keeps current, or keep each call short.
pub trait AuthLimits: fmt::Debug + Send + Sync + 'static {
    /// Counts an attempt of kind `attempt` from `ip`'s client network.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when that network's budget for the kind is spent.
    fn check(&self, attempt: Attempt, ip: IpAddr) -> Result<()>;

    /// Before a login: refuses `ip`'s network for `account` while its failure budget against
    /// the account is spent, or while the ceiling is exceeded and the network is a guesser.
    /// Consumes nothing.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    fn check_login(&self, account: &str, ip: IpAddr) -> Result<()>;

    /// After a wrong password (or an unknown account): counts the failure against `account`
    /// from `ip`'s network and in all, and marks the network as having failed.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when this failure spent a budget that now refuses this network.
    fn record_login_failure(&self, account: &str, ip: IpAddr) -> Result<()>;

    /// After the right password: `ip`'s network is the account's own (let through the
    /// ceiling; its own budgets still apply).
    fn record_login_success(&self, account: &str, ip: IpAddr);

    /// Counts a password-reset request for `account`.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    fn check_reset(&self, account: &str) -> Result<()>;

    /// Counts an action of `user`'s own account, by kind (`"password_check"`,
    /// `"verification_mail"`).
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    fn check_account_action(&self, kind: &'static str, user: UserId) -> Result<()>;

    /// Counts an invitation sent by `inviter` in `tenant`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when the inviter's or the tenant's budget is spent.
    fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> Result<()>;
}

/// The in-memory default: this process's own buckets (see [`RateLimits`]).
impl<C: GovernorClock + Clone + 'static> AuthLimits for RateLimits<C>
where
    Self: Send + Sync,
{
    fn check(&self, attempt: Attempt, ip: IpAddr) -> Result<()> {
        RateLimits::check(self, attempt, ip)
    }

    fn check_login(&self, account: &str, ip: IpAddr) -> Result<()> {
        RateLimits::check_login(self, account, ip)
    }

    fn record_login_failure(&self, account: &str, ip: IpAddr) -> Result<()> {
        RateLimits::record_login_failure(self, account, ip)
    }

    fn record_login_success(&self, account: &str, ip: IpAddr) {
        RateLimits::record_login_success(self, account, ip);
    }

    fn check_reset(&self, account: &str) -> Result<()> {
        RateLimits::check_reset(self, account)
    }

    fn check_account_action(&self, kind: &'static str, user: UserId) -> Result<()> {
        RateLimits::check_account_action(self, kind, user)
    }

    fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> Result<()> {
        RateLimits::check_invitation(self, tenant, inviter)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn config() -> RateLimitConfig {
        RateLimitConfig {
            per_network_per_minute: nonzero(2),
            refresh_per_network_per_minute: nonzero(50),
            failures_per_account_network_per_minute: nonzero(3),
            failures_per_account_per_minute: nonzero(6),
            resets_per_account_per_minute: nonzero(1),
            ..RateLimitConfig::default()
        }
    }

    const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    const OWNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

    #[test]
    fn each_kind_of_attempt_has_its_own_bucket() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        assert!(limits.check(Attempt::Login, ATTACKER).is_ok());
        assert!(limits.check(Attempt::Login, ATTACKER).is_ok());
        assert!(matches!(
            limits.check(Attempt::Login, ATTACKER),
            Err(Error::RateLimited { .. })
        ));
        assert!(
            limits.check(Attempt::Signup, ATTACKER).is_ok(),
            "signup is not login"
        );
        for _ in 0..50 {
            assert!(
                limits.check(Attempt::Refresh, ATTACKER).is_ok(),
                "refresh is far larger"
            );
        }
        assert!(limits.check(Attempt::Login, OWNER).is_ok(), "per network");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        let first: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let rotated: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(limits.check(Attempt::Login, first).is_ok());
        assert!(limits.check(Attempt::Login, rotated).is_ok());
        assert!(
            limits.check(Attempt::Login, first).is_err(),
            "rotating inside the /64 gives no new budget"
        );
        assert!(limits.check(Attempt::Login, elsewhere).is_ok());
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        assert_eq!(ClientNetwork::of(mapped), ClientNetwork::of(ATTACKER));
        assert_eq!(
            ClientNetwork::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ClientNetwork::of("::2".parse().expect("ip"))
        );
    }

    #[test]
    fn an_attacker_elsewhere_cannot_lock_the_owner_out() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(config(), clock.clone());
        for _ in 0..3 {
            assert!(limits.check_login("owner@example.com", ATTACKER).is_ok());
            assert!(
                limits
                    .record_login_failure("owner@example.com", ATTACKER)
                    .is_ok()
            );
        }
        assert!(matches!(
            limits.record_login_failure("Owner@example.com", ATTACKER),
            Err(Error::RateLimited { .. })
        ));
        assert!(limits.check_login("owner@example.com", ATTACKER).is_err());
        assert!(
            limits.check_login("owner@example.com", OWNER).is_ok(),
            "the owner's own network is not blocked"
        );
        clock.advance(Duration::from_secs(60));
        assert!(
            limits.check_login("owner@example.com", ATTACKER).is_ok(),
            "the block ends"
        );
    }

    /// One host in each of 256 /24s: each its own client network and its own guessing site.
    fn host(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, n, 2))
    }

    /// The old behaviour refused every network once the ceiling was reached, which let a
    /// distributed run (or one host forging addresses) lock the owner out everywhere: a fresh
    /// network is now checked, only the guessers are refused.
    #[test]
    fn a_distributed_run_hits_the_account_ceiling_but_only_its_networks_are_refused() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        let mut refused = 0;
        for n in 1..=10u8 {
            assert!(limits.check_login("victim@example.com", host(n)).is_ok());
            if limits
                .record_login_failure("victim@example.com", host(n))
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 4, "failures past the account-wide ceiling of 6");
        for n in 1..=10u8 {
            assert!(
                matches!(
                    limits.check_login("victim@example.com", host(n)),
                    Err(Error::RateLimited { .. })
                ),
                "guessing network {n} is refused, under its own budget of 3"
            );
        }
        assert!(
            limits.check_login("Victim@example.com", host(200)).is_ok(),
            "a network that has not failed still gets its attempt checked"
        );
        assert!(limits.check_login("other@example.com", host(1)).is_ok());
        // A new guessing network gets one guess, then is refused like the others.
        assert!(matches!(
            limits.record_login_failure("victim@example.com", host(11)),
            Err(Error::RateLimited { .. })
        ));
        assert!(limits.check_login("victim@example.com", host(11)).is_err());
        assert!(limits.check_login("victim@example.com", host(200)).is_ok());
    }

    /// One IPv6 site has 65,536 /64s for free: past the ceiling they share one guess an hour,
    /// not one each.
    #[test]
    fn the_64s_of_one_ipv6_site_share_one_guess_past_the_ceiling() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        let in_site = |n: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, n, 0, 0, 0, 1));
        for n in 1..=10u8 {
            let _ = limits.record_login_failure("victim@example.com", host(n));
        }
        assert!(limits.check_login("victim@example.com", in_site(1)).is_ok());
        let _ = limits.record_login_failure("victim@example.com", in_site(1));
        for n in 2..=50 {
            assert!(
                limits
                    .check_login("victim@example.com", in_site(n))
                    .is_err(),
                "/64 number {n} of a site that already guessed got another guess"
            );
        }
        let elsewhere = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1));
        assert!(limits.check_login("victim@example.com", elsewhere).is_ok());
    }

    /// Networks known to an account are kept per account: logins into other accounts (an
    /// attacker's own, from many networks) cannot push the owner's network out.
    #[test]
    fn nobody_elses_logins_evict_the_owners_known_network() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        limits.record_login_success("owner@example.com", OWNER);
        for n in 0..=255u8 {
            limits.record_login_success("attacker@example.com", host(n));
        }
        for n in 1..=10u8 {
            let _ = limits.record_login_failure("owner@example.com", host(n));
        }
        // The owner mistypes from the known network during the run, and is still let in.
        let _ = limits.record_login_failure("owner@example.com", OWNER);
        assert!(limits.check_login("owner@example.com", OWNER).is_ok());
    }

    #[test]
    fn the_owners_network_gets_through_the_ceiling_even_after_a_typo() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(config(), clock.clone());
        limits.record_login_success("owner@example.com", OWNER);
        assert!(
            limits
                .record_login_failure("owner@example.com", OWNER)
                .is_ok()
        );
        for n in 1..=6u8 {
            let _ = limits.record_login_failure("owner@example.com", host(n));
        }
        assert!(limits.check_login("owner@example.com", host(1)).is_err());
        assert!(
            limits.check_login("owner@example.com", OWNER).is_ok(),
            "a network that logged in before is the account's own"
        );
        for _ in 0..2 {
            assert!(
                limits
                    .record_login_failure("owner@example.com", OWNER)
                    .is_ok(),
                "its failures are checked against its own budget (3) only"
            );
        }
        assert!(matches!(
            limits.record_login_failure("owner@example.com", OWNER),
            Err(Error::RateLimited { .. })
        ));
        assert!(
            limits.check_login("owner@example.com", OWNER).is_err(),
            "the per-(account, network) budget stays a hard limit"
        );
        // Once the run subsides (the ceiling allows failures again), a guessing network's
        // next attempt is checked again.
        clock.advance(Duration::from_secs(60));
        assert!(limits.check_login("owner@example.com", host(1)).is_ok());
        assert!(limits.check_login("owner@example.com", OWNER).is_ok());
    }

    #[test]
    fn a_success_clears_the_networks_failures_and_unknown_accounts_count_the_same() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        for account in ["owner@example.com", "nobody@example.com"] {
            let _ = limits.record_login_failure(account, OWNER);
            for n in 1..=6u8 {
                let _ = limits.record_login_failure(account, host(n));
            }
            assert!(limits.check_login(account, OWNER).is_err(), "{account}");
            assert!(limits.check_login(account, host(1)).is_err(), "{account}");
            assert!(limits.check_login(account, host(99)).is_ok(), "{account}");
        }
        // (The flow records a success only after the password matched.)
        limits.record_login_success("owner@example.com", OWNER);
        assert!(limits.check_login("owner@example.com", OWNER).is_ok());
    }

    #[test]
    fn successful_logins_and_resets_never_drain_the_login_budget() {
        let limits = RateLimits::with_clock(config(), FakeRelativeClock::default());
        for _ in 0..50 {
            assert!(limits.check_login("owner@example.com", OWNER).is_ok());
        }
        assert!(limits.check_reset("owner@example.com").is_ok());
        assert!(
            limits.check_reset("OWNER@example.com").is_err(),
            "one reset a minute"
        );
        assert!(limits.check_login("owner@example.com", OWNER).is_ok());
    }
}
