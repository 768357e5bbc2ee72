//! The verified-token cache: a hit answers what a full verification would, never past the
//! token's `exp`, never for a retired key, and it stays bounded however many tokens pass.

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::{AccessTokens, Error, JwtConfig, KeySet, SigningKey, VERIFIED_CACHE_CAPACITY};
use tenantkit_core::ManualClock;

mod support;

use support::caller;

fn tokens() -> (AccessTokens, Arc<ManualClock>, KeySet) {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeySet::new(SigningKey::hmac("k1", &[3u8; 32]).expect("key"));
    let tokens = AccessTokens::with_clock(
        keys.clone(),
        JwtConfig::new("https://issuer.test", "api"),
        clock.clone(),
    );
    (tokens, clock, keys)
}

#[test]
fn a_hit_answers_what_verification_would() {
    let (tokens, _, _) = tokens();
    let who = caller();
    let issued = tokens.issue(&who).expect("issue");
    // The verified caller is the issued one, with the token's expiry.
    let (token, who) = (issued.token, who.with_expires_at(issued.expires_at));
    assert_eq!(tokens.cached_tokens(), 0);
    assert_eq!(tokens.verify(&token).expect("cold"), who);
    assert_eq!(tokens.cached_tokens(), 1);
    assert_eq!(tokens.verify(&token).expect("warm"), who);
    // A token that differs in one character is its own entry, and is verified in full.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert!(matches!(
        tokens.verify(&forged),
        Err(Error::InvalidToken(_))
    ));
    assert_eq!(tokens.cached_tokens(), 1, "failures are not cached");
}

#[test]
fn a_cached_token_expires_on_time() {
    let (tokens, clock, _) = tokens();
    let token = tokens.issue(&caller()).expect("issue").token;
    tokens.verify(&token).expect("cold");
    // Past `exp` and the leeway: the cache does not answer, verification says expired.
    clock.advance(Duration::from_secs(15 * 60 + 31));
    assert!(matches!(tokens.verify(&token), Err(Error::TokenExpired)));
}

#[test]
fn retiring_a_key_ends_its_cached_tokens_at_once() {
    let (tokens, _, keys) = tokens();
    let token = tokens.issue(&caller()).expect("issue").token;
    tokens.verify(&token).expect("cold");
    let rotated = keys.rotate(SigningKey::hmac("k2", &[4u8; 32]).expect("key"));
    tokens.replace_keys(rotated.clone());
    assert_eq!(tokens.cached_tokens(), 0, "a key change forgets everything");
    tokens
        .verify(&token)
        .expect("the old key still verifies until retired");
    tokens.replace_keys(rotated.retire("k1").expect("retire"));
    assert!(matches!(tokens.verify(&token), Err(Error::InvalidToken(_))));
}

#[test]
fn the_cache_stays_bounded() {
    let (tokens, _, _) = tokens();
    for _ in 0..(VERIFIED_CACHE_CAPACITY + VERIFIED_CACHE_CAPACITY / 2) {
        let token = tokens.issue(&caller()).expect("issue").token;
        tokens.verify(&token).expect("verify");
    }
    assert!(
        tokens.cached_tokens() <= VERIFIED_CACHE_CAPACITY,
        "{} cached",
        tokens.cached_tokens()
    );
}
