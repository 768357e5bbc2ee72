//! `RedisLimits` against a real `redis-server` (scripts/with-services.sh starts one): two
//! instances on one Redis enforce one budget, with the same login rules as the in-process
//! limits (a network's own failure budget per account, the account-wide ceiling that refuses
//! only the guessing networks, the owner's known network let through it), and an unreachable
//! Redis fails closed.
//!
//! Budgets refill by the minute (1 to 6 per minute here): a test would have to stall for ten
//! seconds and more between two calls for a refill to change an answer.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use tenantkit_auth::{Attempt, AuthLimits, Error, RateLimitConfig, RedisLimits};
use tenantkit_core::{TenantId, UserId};
use tenantkit_e2e::redis;

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

fn config() -> RateLimitConfig {
    RateLimitConfig {
        per_network_per_minute: n(2),
        refresh_per_network_per_minute: n(3),
        failures_per_account_network_per_minute: n(3),
        failures_per_account_per_minute: n(6),
        resets_per_account_per_minute: n(1),
        account_actions_per_minute: n(1),
        invitations_per_inviter_per_hour: n(1),
        invitations_per_tenant_per_hour: n(2),
    }
}

fn host(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, n, 2))
}

async fn pair() -> Option<(RedisLimits, RedisLimits)> {
    let url = redis::url()?;
    let prefix = redis::prefix();
    let a = RedisLimits::connect_with_prefix(&url, config(), &prefix)
        .await
        .unwrap();
    let b = RedisLimits::connect_with_prefix(&url, config(), &prefix)
        .await
        .unwrap();
    Some((a, b))
}

fn limited<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    match result {
        Err(Error::RateLimited { retry_after }) => {
            assert!(retry_after > Duration::ZERO);
            true
        }
        Ok(_) => false,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn attempts_count_once_across_instances_per_kind_and_network() {
    let Some((a, b)) = pair().await else {
        return;
    };
    assert!(a.check(Attempt::Login, host(1)).await.is_ok());
    assert!(b.check(Attempt::Login, host(1)).await.is_ok());
    assert!(limited(a.check(Attempt::Login, host(1)).await));
    assert!(limited(b.check(Attempt::Login, host(1)).await));
    assert!(
        b.check(Attempt::Signup, host(1)).await.is_ok(),
        "its own kind"
    );
    assert!(
        b.check(Attempt::Login, host(2)).await.is_ok(),
        "its own network"
    );
    for limits in [&a, &b, &a] {
        assert!(limits.check(Attempt::Refresh, host(1)).await.is_ok());
    }
    assert!(limited(b.check(Attempt::Refresh, host(1)).await));
    // Per account and per user, across instances too.
    assert!(a.check_reset("Victim@Example.com").await.is_ok());
    assert!(
        limited(b.check_reset(" victim@example.com").await),
        "one account"
    );
    let user = UserId::new();
    assert!(a.check_account_action("password_check", user).await.is_ok());
    assert!(limited(
        b.check_account_action("password_check", user).await
    ));
    assert!(
        b.check_account_action("verification_mail", user)
            .await
            .is_ok()
    );
    let tenant = TenantId::new();
    assert!(a.check_invitation(tenant, user).await.is_ok());
    assert!(
        limited(b.check_invitation(tenant, user).await),
        "the inviter's hour"
    );
    assert!(b.check_invitation(tenant, UserId::new()).await.is_ok());
    assert!(
        limited(a.check_invitation(tenant, UserId::new()).await),
        "the tenant's hour"
    );
}

#[tokio::test]
async fn login_failures_on_either_instance_spend_one_budget() {
    let Some((a, b)) = pair().await else {
        return;
    };
    let account = "victim@example.com";
    assert!(a.record_login_failure(account, host(1)).await.is_ok());
    assert!(b.record_login_failure(account, host(1)).await.is_ok());
    assert!(a.record_login_failure(account, host(1)).await.is_ok());
    assert!(
        b.check_login(account, host(1)).await.is_ok(),
        "3 of 3 spent, none over"
    );
    assert!(limited(b.record_login_failure(account, host(1)).await));
    assert!(
        limited(a.check_login(account, host(1)).await),
        "blocked on both"
    );
    assert!(limited(b.check_login(account, host(1)).await));
    assert!(
        a.check_login(account, host(2)).await.is_ok(),
        "another network"
    );
    assert!(a.check_login("other@example.com", host(1)).await.is_ok());
}

#[tokio::test]
async fn past_the_ceiling_only_guessers_are_refused_and_the_owner_gets_through() {
    let Some((a, b)) = pair().await else {
        return;
    };
    let account = "owner@example.com";
    // The owner logs in from its network (on B); then a distributed run, spread over both
    // instances, passes the account-wide ceiling of 6.
    assert!(b.record_login_success(account, host(200)).await.is_ok());
    let mut refused = 0;
    for n in 1..=10u8 {
        let limits = if n % 2 == 0 { &a } else { &b };
        assert!(limits.check_login(account, host(n)).await.is_ok());
        if limited(limits.record_login_failure(account, host(n)).await) {
            refused += 1;
        }
    }
    assert_eq!(refused, 4, "failures past the ceiling of 6");
    for n in 1..=10u8 {
        assert!(
            limited(a.check_login(account, host(n)).await),
            "guesser {n}"
        );
    }
    assert!(
        a.check_login(account, host(201)).await.is_ok(),
        "a fresh network"
    );
    // The owner mistypes once: its network failed, but it is known, so not refused.
    assert!(!limited(b.record_login_failure(account, host(200)).await));
    assert!(a.check_login(account, host(200)).await.is_ok());
    // A success clears a network's guesser mark.
    assert!(a.record_login_success(account, host(3)).await.is_ok());
    assert!(b.check_login(account, host(3)).await.is_ok());
}

/// Keys cannot be spelled across accounts: an IPv6 network's text has colons, so a naive
/// `account:network` key would let failures against account `v:2001` from `db8:1::/64` spend
/// the budget of account `v` from the victim's `2001:db8:1::/64`.
#[tokio::test]
async fn one_accounts_failures_never_spend_anothers_budget() {
    let Some((a, b)) = pair().await else {
        return;
    };
    let attacker: IpAddr = "db8:1::5".parse().unwrap();
    let victim: IpAddr = "2001:db8:1::5".parse().unwrap();
    for _ in 0..4 {
        let _ = a.record_login_failure("v:2001", attacker).await;
    }
    assert!(
        limited(b.check_login("v:2001", attacker).await),
        "the attacker's own"
    );
    assert!(
        b.check_login("v", victim).await.is_ok(),
        "the victim is untouched"
    );
    assert!(a.record_login_failure("v", victim).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_and_fast() {
    // A listener that accepts and never answers: the handshake times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/0", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        RedisLimits::connect(&url, RateLimitConfig::default()),
    )
    .await
    .expect("bounded by the limits' own timeout");
    assert!(
        matches!(result, Err(Error::LimitsUnavailable(_))),
        "{result:?}"
    );
    held.abort();
}
