//! [`RedisLimits`]: the same limits as [`super::RateLimits`], kept in Redis so that every
//! instance of a deployment counts against one budget.
//!
//! Each budget is a GCRA bucket in one key (its theoretical arrival time, in Redis's own clock,
//! so instances' clocks do not matter), taken by one Lua script: atomic across instances. The
//! login blocks and the guesser/known-network marks are keys with a TTL. Every call has a
//! bounded wait and fails closed ([`Error::LimitsUnavailable`]), as [`AuthLimits`] requires.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tenantkit_core::{TenantId, UserId};

use super::memory::{FAILURE_MEMORY, RateLimits, SUCCESS_MEMORY};
use super::{Attempt, AuthLimits, ClientNetwork, LimitFuture, RateLimitConfig};
use crate::{Error, Result};

/// Longest wait for Redis before an attempt is refused (fail closed).
const TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA take. KEYS[1]: the bucket. ARGV: emission interval (ms), burst. Answers 0 when taken,
/// else the milliseconds until one is available.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
return 0
";

/// A budget: `per` per `period`, also the burst.
#[derive(Clone, Copy)]
struct Budget {
    interval_ms: u64,
    burst: u64,
}

impl Budget {
    fn new(per: NonZeroU32, period: Duration) -> Self {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        Self {
            interval_ms: (period_ms / u64::from(per.get())).max(1),
            burst: u64::from(per.get()),
        }
    }
}

/// The auth flows' rate limits in Redis (feature `redis`), shared by every instance. Cheap to
/// clone.
#[derive(Clone)]
pub struct RedisLimits {
    commands: ConnectionManager,
    prefix: String,
    take: redis::Script,
    per_network: Budget,
    refresh: Budget,
    failures_local: Budget,
    failures_global: Budget,
    resets: Budget,
    account_actions: Budget,
    invites_by_inviter: Budget,
    invites_in_tenant: Budget,
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(err: impl fmt::Display) -> Error {
    Error::LimitsUnavailable(format!("redis: {err}"))
}

impl RedisLimits {
    /// The default key prefix.
    pub const PREFIX: &'static str = "tenantkit:rl";

    /// Connects to `url` with `config`'s budgets under the default prefix.
    ///
    /// # Errors
    /// [`Error::LimitsUnavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str, config: RateLimitConfig) -> Result<Self> {
        Self::connect_with_prefix(url, config, Self::PREFIX).await
    }

    /// [`RedisLimits::connect`] with a key prefix of its own (tests, several deployments on
    /// one Redis).
    ///
    /// # Errors
    /// [`Error::LimitsUnavailable`] when Redis cannot be reached.
    pub async fn connect_with_prefix(
        url: &str,
        config: RateLimitConfig,
        prefix: &str,
    ) -> Result<Self> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // Reconnects are retried by the manager in the background; a call never waits for
        // more than one attempt (fail closed).
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let commands = ConnectionManager::new_with_config(client, settings)
            .await
            .map_err(unavailable)?;
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        Ok(Self {
            commands,
            prefix: prefix.to_owned(),
            take: redis::Script::new(TAKE),
            per_network: Budget::new(config.per_network_per_minute, minute),
            refresh: Budget::new(config.refresh_per_network_per_minute, minute),
            failures_local: Budget::new(config.failures_per_account_network_per_minute, minute),
            failures_global: Budget::new(config.failures_per_account_per_minute, minute),
            resets: Budget::new(config.resets_per_account_per_minute, minute),
            account_actions: Budget::new(config.account_actions_per_minute, minute),
            invites_by_inviter: Budget::new(config.invitations_per_inviter_per_hour, hour),
            invites_in_tenant: Budget::new(config.invitations_per_tenant_per_hour, hour),
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Takes one from `budget` at `key`: `None` when taken, else the wait.
    async fn take(&self, key: &str, budget: Budget) -> Result<Option<Duration>> {
        let mut commands = self.commands.clone();
        let mut invocation = self.take.key(key);
        invocation.arg(budget.interval_ms).arg(budget.burst);
        let call = invocation.invoke_async::<u64>(&mut commands);
        let wait = tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    async fn limited(&self, key: &str, budget: Budget) -> Result<()> {
        match self.take(key, budget).await? {
            None => Ok(()),
            Some(retry_after) => Err(Error::RateLimited { retry_after }),
        }
    }

    /// Runs `command` within the bounded wait.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T> {
        let mut commands = self.commands.clone();
        tokio::time::timeout(TIMEOUT, command.query_async::<T>(&mut commands))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)
    }

    /// Runs `pipe` (a transaction) within the bounded wait.
    async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        let mut commands = self.commands.clone();
        tokio::time::timeout(TIMEOUT, pipe.query_async::<T>(&mut commands))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)
    }

    /// The remaining life of `key` (`None`: absent).
    async fn pttl(&self, key: &str) -> Result<Option<Duration>> {
        let ms: i64 = self.run(redis::cmd("PTTL").arg(key)).await?;
        Ok(u64::try_from(ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis))
    }

    /// Blocks `key` for `for_`, never shortening a longer block already in place (Redis 7's
    /// `PEXPIRE ... GT`), atomically.
    async fn block(&self, key: &str, for_: Duration) -> Result<()> {
        let ms = ms(for_).max(1);
        self.run_pipe::<()>(
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(ms)
                .arg("NX")
                .ignore()
                .cmd("PEXPIRE")
                .arg(key)
                .arg(ms)
                .arg("GT")
                .ignore(),
        )
        .await
    }

    fn login_keys(&self, account: &str, ip: IpAddr) -> LoginKeys {
        let account = account_id(account);
        let network = ClientNetwork::of(ip);
        let net = network.0.to_string();
        let site = network.site().to_string();
        LoginKeys {
            failures_local: self.key(&["fail", &account, &net]),
            failures_global: self.key(&["failall", &account]),
            blocked_local: self.key(&["block", &account, &net]),
            blocked_global: self.key(&["blockall", &account]),
            failed_from: self.key(&["guess", &account, &site]),
            succeeded_from: self.key(&["known", &account, &net]),
        }
    }

    /// Whether this network failed against the account recently and is not its own.
    async fn is_guesser(&self, keys: &LoginKeys) -> Result<bool> {
        let (failed, known): (bool, bool) = self
            .run_pipe(
                redis::pipe()
                    .exists(&keys.failed_from)
                    .exists(&keys.succeeded_from),
            )
            .await?;
        Ok(failed && !known)
    }
}

/// An account's part of a key: the SHA-256 of its normalised form, in hex. Fixed length and
/// free of `:`, so no (account, network) pair can spell another's key (an IPv6 network's text
/// has colons: account `v:2001` from `db8:1::/64` would otherwise share the budget of account
/// `v` from `2001:db8:1::/64`); and no email address is stored in Redis.
fn account_id(account: &str) -> String {
    use sha2::Digest as _;
    let normalised = RateLimits::<governor::clock::DefaultClock>::account_key(account);
    format!("{:x}", sha2::Sha256::digest(normalised.as_bytes()))
}

struct LoginKeys {
    failures_local: String,
    failures_global: String,
    blocked_local: String,
    blocked_global: String,
    failed_from: String,
    succeeded_from: String,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl AuthLimits for RedisLimits {
    fn check(&self, attempt: Attempt, ip: IpAddr) -> LimitFuture<'_> {
        Box::pin(async move {
            let network = ClientNetwork::of(ip).0.to_string();
            match attempt {
                Attempt::Refresh => {
                    self.limited(&self.key(&["refresh", &network]), self.refresh)
                        .await
                }
                other => {
                    let kind = format!("{other:?}");
                    self.limited(&self.key(&["net", &kind, &network]), self.per_network)
                        .await
                }
            }
        })
    }

    fn check_login<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        Box::pin(async move {
            let keys = self.login_keys(account, ip);
            let mut until = self.pttl(&keys.blocked_local).await?;
            if let Some(ceiling) = self.pttl(&keys.blocked_global).await?
                && self.is_guesser(&keys).await?
            {
                until = until.max(Some(ceiling));
            }
            match until {
                Some(retry_after) => Err(Error::RateLimited { retry_after }),
                None => Ok(()),
            }
        })
    }

    fn record_login_failure<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        Box::pin(async move {
            let keys = self.login_keys(account, ip);
            self.run::<()>(
                redis::cmd("SET")
                    .arg(&keys.failed_from)
                    .arg(1)
                    .arg("PX")
                    .arg(ms(FAILURE_MEMORY)),
            )
            .await?;
            let local = self.take(&keys.failures_local, self.failures_local).await?;
            let global = self
                .take(&keys.failures_global, self.failures_global)
                .await?;
            let mut refused = None;
            if let Some(wait) = global {
                self.block(&keys.blocked_global, wait).await?;
                if self.is_guesser(&keys).await? {
                    refused = Some(wait);
                }
            }
            if let Some(wait) = local {
                self.block(&keys.blocked_local, wait).await?;
                refused = refused.max(Some(wait));
            }
            match refused {
                Some(retry_after) => Err(Error::RateLimited { retry_after }),
                None => Ok(()),
            }
        })
    }

    fn record_login_success<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        Box::pin(async move {
            let keys = self.login_keys(account, ip);
            self.run_pipe::<()>(
                redis::pipe()
                    .atomic()
                    .del(&keys.failed_from)
                    .ignore()
                    .cmd("SET")
                    .arg(&keys.succeeded_from)
                    .arg(1)
                    .arg("PX")
                    .arg(ms(SUCCESS_MEMORY))
                    .ignore(),
            )
            .await
        })
    }

    fn check_reset<'a>(&'a self, account: &'a str) -> LimitFuture<'a> {
        Box::pin(async move {
            self.limited(&self.key(&["reset", &account_id(account)]), self.resets)
                .await
        })
    }

    fn check_account_action(&self, kind: &'static str, user: UserId) -> LimitFuture<'_> {
        Box::pin(async move {
            self.limited(
                &self.key(&["action", kind, &user.to_string()]),
                self.account_actions,
            )
            .await
        })
    }

    fn check_invitation(&self, tenant: TenantId, inviter: UserId) -> LimitFuture<'_> {
        Box::pin(async move {
            self.limited(
                &self.key(&["invite", &inviter.to_string()]),
                self.invites_by_inviter,
            )
            .await?;
            self.limited(
                &self.key(&["invites", &tenant.to_string()]),
                self.invites_in_tenant,
            )
            .await
        })
    }
}
