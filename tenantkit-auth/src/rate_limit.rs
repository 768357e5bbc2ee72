//! Login and refresh rate limits, per client IP and per account (GCRA via governor).

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock as GovernorClock, DefaultClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::{Error, Result};

/// How many attempts are allowed per minute (also the burst). `Default`: 30 per IP and
/// 10 per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Attempts per minute from one client IP.
    pub per_ip_per_minute: NonZeroU32,
    /// Attempts per minute against one account (email), from anywhere.
    pub per_account_per_minute: NonZeroU32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_ip_per_minute: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            per_account_per_minute: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
        }
    }
}

type Keyed<K, C> =
    RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as GovernorClock>::Instant>>;

/// Two keyed limiters: one per client IP (slows a single attacker trying many accounts) and
/// one per account (slows many attackers trying one account). Memory stays bounded: idle
/// keys are dropped as the maps are used.
pub struct RateLimits<C: GovernorClock = DefaultClock> {
    per_ip: Keyed<IpAddr, C>,
    per_account: Keyed<String, C>,
    /// Accounts whose failure budget ran out, until when.
    blocked: std::sync::Mutex<std::collections::HashMap<String, C::Instant>>,
    clock: C,
    checks: AtomicU64,
}

impl<C: GovernorClock> fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("tracked_ips", &self.per_ip.len())
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Limits on the real clock.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: GovernorClock + Clone> RateLimits<C> {
    /// Limits on an explicit clock (`governor::clock::FakeRelativeClock` in tests).
    pub fn with_clock(config: RateLimitConfig, clock: C) -> Self {
        Self {
            per_ip: RateLimiter::dashmap_with_clock(
                Quota::per_minute(config.per_ip_per_minute),
                clock.clone(),
            ),
            per_account: RateLimiter::dashmap_with_clock(
                Quota::per_minute(config.per_account_per_minute),
                clock.clone(),
            ),
            blocked: std::sync::Mutex::default(),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts an attempt from `ip`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until the next allowed attempt.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        self.housekeeping();
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Counts an attempt against `account` (case-insensitive).
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the wait until the next allowed attempt.
    pub fn check_account(&self, account: &str) -> Result<()> {
        self.housekeeping();
        let key = Self::account_key(account);
        self.per_account
            .check_key(&key)
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Login: refuses an account whose failed-login budget is spent. Unlike
    /// [`RateLimits::check_account`] this consumes nothing, so successful logins never count
    /// and the owner of an account cannot lock themselves out by logging in.
    ///
    /// # Errors
    /// [`Error::RateLimited`] while the account is blocked.
    pub fn check_login(&self, account: &str) -> Result<()> {
        let key = Self::account_key(account);
        let now = self.clock.now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match blocked.get(&key) {
            Some(until) if *until > now => Err(Error::RateLimited {
                retry_after: until.duration_since(now).into(),
            }),
            Some(_) => {
                blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Login: counts a failed attempt against `account`. When that spends the budget the
    /// account is blocked and this attempt is answered as rate limited.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when this failure exhausted the budget.
    pub fn record_login_failure(&self, account: &str) -> Result<()> {
        self.housekeeping();
        let key = Self::account_key(account);
        match self.per_account.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let until = not_until.earliest_possible();
                let retry_after = not_until.wait_time_from(self.clock.now());
                let mut blocked = self
                    .blocked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if blocked.len() >= 100_000 {
                    let now = self.clock.now();
                    blocked.retain(|_, until| *until > now);
                }
                blocked.insert(key, until);
                Err(Error::RateLimited { retry_after })
            }
        }
    }

    /// A bounded, case-insensitive key: an attacker must not grow the maps with megabyte-long
    /// "emails".
    fn account_key(account: &str) -> String {
        account.trim().to_lowercase().chars().take(320).collect()
    }

    fn housekeeping(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.per_ip.retain_recent();
            self.per_account.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn config(ip: u32, account: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_ip_per_minute: NonZeroU32::new(ip).expect("nonzero"),
            per_account_per_minute: NonZeroU32::new(account).expect("nonzero"),
        }
    }

    #[test]
    fn limits_trigger_and_recover() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(config(100, 3), clock.clone());
        for _ in 0..3 {
            assert!(limits.check_account("Victim@Example.com").is_ok());
        }
        match limits.check_account("victim@example.com ") {
            Err(Error::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(
            limits.check_account("someone-else@example.com").is_ok(),
            "per account"
        );
        clock.advance(Duration::from_secs(20));
        assert!(
            limits.check_account("victim@example.com").is_ok(),
            "recovers as the bucket refills"
        );
    }

    #[test]
    fn only_failed_logins_count_against_an_account() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(config(1000, 3), clock.clone());
        for _ in 0..50 {
            assert!(
                limits.check_login("owner@example.com").is_ok(),
                "successful logins never block"
            );
        }
        for _ in 0..3 {
            assert!(limits.check_login("owner@example.com").is_ok());
            assert!(limits.record_login_failure("owner@example.com").is_ok());
        }
        assert!(matches!(
            limits.record_login_failure("Owner@example.com"),
            Err(Error::RateLimited { .. })
        ));
        match limits.check_login("owner@example.com") {
            Err(Error::RateLimited { retry_after }) => assert!(retry_after > Duration::ZERO),
            other => panic!("expected a block, got {other:?}"),
        }
        assert!(limits.check_login("other@example.com").is_ok());
        clock.advance(Duration::from_secs(30));
        assert!(
            limits.check_login("owner@example.com").is_ok(),
            "the block ends"
        );
    }

    #[test]
    fn ips_are_limited_independently() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(config(2, 100), clock.clone());
        let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        assert!(limits.check_ip(attacker).is_ok() && limits.check_ip(attacker).is_ok());
        assert!(matches!(
            limits.check_ip(attacker),
            Err(Error::RateLimited { .. })
        ));
        assert!(limits.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok());
        clock.advance(Duration::from_secs(60));
        assert!(limits.check_ip(attacker).is_ok());
    }
}
