use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::Error;

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
