//! The in-memory [`RateLimits`]: this process's own GCRA buckets, with the marks of guessing
//! sites and of the networks that logged into each account.

use std::collections::HashMap;
use std::fmt;
use std::future::ready;
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

use super::{Attempt, AuthLimits, ClientNetwork, LimitFuture, RateLimitConfig};

impl ClientNetwork {
    /// The guessing site this network belongs to (see [`GuessSite`]).
    pub(super) fn site(self) -> IpAddr {
        GuessSite::of(self.0).0
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
pub(super) const FAILURE_MEMORY: Duration = Duration::from_secs(60 * 60);

/// How long a successful login marks its client network as the account's own (let through
/// while the account-wide ceiling is exceeded, even after a mistyped password).
pub(super) const SUCCESS_MEMORY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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
    pub(super) fn account_key(account: &str) -> String {
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

/// The in-memory default: this process's own buckets (see [`RateLimits`]). Every answer is
/// ready at once (no I/O), and never [`Error::LimitsUnavailable`].
impl<C: GovernorClock + Clone + 'static> AuthLimits for RateLimits<C>
where
    Self: Send + Sync,
{
    fn check(&self, attempt: Attempt, ip: IpAddr) -> LimitFuture<'_> {
        Box::pin(ready(RateLimits::check(self, attempt, ip)))
    }

    fn check_login<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        Box::pin(ready(RateLimits::check_login(self, account, ip)))
    }

    fn record_login_failure<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        Box::pin(ready(RateLimits::record_login_failure(self, account, ip)))
    }

    fn record_login_success<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        RateLimits::record_login_success(self, account, ip);
        Box::pin(ready(Ok(())))
    }

    fn check_reset<'a>(&'a self, account: &'a str) -> LimitFuture<'a> {
        Box::pin(ready(RateLimits::check_reset(self, account)))
    }

    fn check_account_action(&self, kind: &'static str, user: UserId) -> LimitFuture<'_> {
        Box::pin(ready(RateLimits::check_account_action(self, kind, user)))
    }

    fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> LimitFuture<'_> {
        Box::pin(ready(RateLimits::check_invitation(self, tenant, inviter)))
    }
}
