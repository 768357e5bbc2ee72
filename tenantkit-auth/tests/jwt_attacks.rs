//! The JWT attack suite: every forged, confused, stale or malformed token is refused with
//! `InvalidToken` or `TokenExpired` — never accepted, never a panic.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tenantkit_auth::{AccessTokens, Algorithm, Error, JwtConfig, KeySet, SigningKey};

mod support;

use support::{
    EC_PEM, RSA_PEM, RSA_PUBLIC_PEM, assert_invalid, b64, caller, config, ed25519, tokens_with,
};

/// The header and claims of a real token, to forge variants of.
fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().expect("h")).expect("b64"))
            .expect("json");
    let claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().expect("c")).expect("b64"))
            .expect("json");
    (header, claims, it.next().expect("s").to_owned())
}

#[test]
fn every_algorithm_round_trips() {
    for key in [
        ed25519(),
        SigningKey::from_pem(Algorithm::RS256, RSA_PEM).expect("rsa"),
        SigningKey::from_pem(Algorithm::ES256, EC_PEM).expect("ec"),
        SigningKey::hmac("hs-1", &[7u8; 32]).expect("hmac"),
    ] {
        let algorithm = key.algorithm();
        let (tokens, _) = tokens_with(key);
        let who = caller().with_amr(["pwd".to_owned()]);
        let issued = tokens.issue(&who).expect("issue");
        assert_eq!(issued.expires_in, 900, "15 minute default");
        // The verified caller is the issued one, with the token's expiry.
        assert_eq!(
            tokens.verify(&issued.token).expect("verify"),
            who.with_expires_at(issued.expires_at),
            "{algorithm:?}"
        );
        let (header, claims, _) = parts(&issued.token);
        assert_eq!(header["typ"], "at+jwt");
        for claim in [
            "iss", "aud", "sub", "tid", "role", "scope", "sid", "amr", "jti", "iat", "nbf", "exp",
        ] {
            assert!(!claims[claim].is_null(), "{claim} missing");
        }
    }
}

#[test]
fn alg_none_is_refused() {
    let (tokens, _) = tokens_with(ed25519());
    let (mut header, claims, _) = parts(&tokens.issue(&caller()).expect("issue").token);
    for none in ["none", "None", "NONE", "nOnE"] {
        header["alg"] = json!(none);
        assert_invalid(
            &tokens,
            &format!("{}.{}.", b64(&header), b64(&claims)),
            none,
        );
        assert_invalid(&tokens, &format!("{}.{}", b64(&header), b64(&claims)), none);
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic RS/HS confusion: a verifier that trusts the header's `alg` would check an
    // HMAC keyed with the public key, which anyone can compute.
    let rsa = SigningKey::from_pem(Algorithm::RS256, RSA_PEM).expect("rsa");
    let kid = rsa.kid().to_owned();
    let (tokens, _) = tokens_with(rsa);
    let (_, claims, _) = parts(&tokens.issue(&caller()).expect("issue").token);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".into());
    for secret in [
        RSA_PUBLIC_PEM.to_vec(),
        RSA_PUBLIC_PEM.trim_ascii_end().to_vec(),
    ] {
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("encode");
        assert_invalid(&tokens, &forged, "HS256 with the public key");
    }
}

#[test]
fn a_header_algorithm_other_than_the_keys_is_refused() {
    let (tokens, _) = tokens_with(ed25519());
    let token = tokens.issue(&caller()).expect("issue").token;
    let (mut header, claims, signature) = parts(&token);
    for alg in ["ES256", "RS256", "HS256", "PS256", "EdDSA2", ""] {
        header["alg"] = json!(alg);
        assert_invalid(
            &tokens,
            &format!("{}.{}.{signature}", b64(&header), b64(&claims)),
            alg,
        );
    }
}

#[test]
fn unknown_and_hostile_kids_are_refused() {
    let (tokens, _) = tokens_with(ed25519());
    let token = tokens.issue(&caller()).expect("issue").token;
    let (mut header, claims, signature) = parts(&token);
    for kid in [
        json!("nope"),
        json!("../../../../etc/passwd"),
        json!("' OR '1'='1"),
        json!("key\0null"),
        json!("x".repeat(10_000)),
        json!(42),
        json!(null),
        json!(["a"]),
    ] {
        header["kid"] = kid.clone();
        assert_invalid(
            &tokens,
            &format!("{}.{}.{signature}", b64(&header), b64(&claims)),
            &kid.to_string(),
        );
    }
    header.as_object_mut().expect("object").remove("kid");
    assert_invalid(
        &tokens,
        &format!("{}.{}.{signature}", b64(&header), b64(&claims)),
        "no kid",
    );
}

#[test]
fn tokens_that_are_not_access_tokens_are_refused() {
    // A genuine signature by the right key, on a JWT that is not an access token (an ID
    // token, a token typed "JWT"): refused. The same key with typ "at+jwt" is the control.
    let pem = tenantkit_auth::generate_ed25519_pem().expect("pem");
    let key = SigningKey::from_pem(Algorithm::EdDSA, pem.as_bytes()).expect("key");
    let kid = key.kid().to_owned();
    let (tokens, _) = tokens_with(key);
    let claims = parts(&tokens.issue(&caller()).expect("issue").token).1;
    let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("pem");
    let sign = |typ: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &encoding).expect("encode")
    };
    assert!(
        tokens.verify(&sign(Some("at+jwt"))).is_ok(),
        "control: same key, right typ"
    );
    for typ in [None, Some("JWT"), Some("id_token+jwt"), Some("AT+JWT ")] {
        assert_invalid(&tokens, &sign(typ), &format!("typ {typ:?}"));
    }
}

#[test]
fn time_claims_are_enforced_with_a_small_leeway() {
    let (tokens, clock) = tokens_with(ed25519());
    let token = tokens.issue(&caller()).expect("issue").token;
    clock.advance(Duration::from_secs(15 * 60 + 20));
    assert!(tokens.verify(&token).is_ok(), "inside the 30 s leeway");
    clock.advance(Duration::from_secs(11));
    assert!(matches!(tokens.verify(&token), Err(Error::TokenExpired)));

    // Issued "in the future" (a skewed or malicious issuer): not valid yet.
    let (tokens, clock) = tokens_with(ed25519());
    clock.advance(Duration::from_secs(300));
    let future = tokens.issue(&caller()).expect("issue").token;
    clock.rewind(Duration::from_secs(300));
    assert_invalid(&tokens, &future, "nbf in the future");
    clock.advance(Duration::from_secs(280));
    assert!(
        tokens.verify(&future).is_ok(),
        "valid once within leeway of nbf"
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let key = ed25519();
    let verifier = AccessTokens::new(KeySet::new(key.clone()), config());
    for other in [
        JwtConfig::new("https://evil.test", "tenantkit-api"),
        JwtConfig::new("https://issuer.test", "another-api"),
    ] {
        let token = AccessTokens::new(KeySet::new(key.clone()), other)
            .issue(&caller())
            .expect("issue")
            .token;
        assert_invalid(&verifier, &token, "iss/aud");
    }
}

#[test]
fn flipped_bits_anywhere_are_refused() {
    for key in [
        ed25519(),
        SigningKey::from_pem(Algorithm::ES256, EC_PEM).expect("ec"),
        SigningKey::hmac("h", &[1u8; 48]).expect("hmac"),
    ] {
        let (tokens, _) = tokens_with(key);
        let token = tokens.issue(&caller()).expect("issue").token;
        let bytes = token.as_bytes();
        let dots: Vec<usize> = token.match_indices('.').map(|(i, _)| i).collect();
        let mut checked = 0;
        for i in (0..bytes.len()).step_by(3) {
            if dots.contains(&i) {
                continue;
            }
            let mut flipped = bytes.to_vec();
            // Swap to another base64url character so the token stays well-formed.
            flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
            let flipped = String::from_utf8(flipped).expect("ascii");
            if flipped == token {
                continue;
            }
            assert!(
                tokens.verify(&flipped).is_err(),
                "byte {i} flipped was accepted"
            );
            checked += 1;
        }
        assert!(checked > 50);
    }
}

/// `amr` is signed like every claim: an attacker without the key cannot claim a second
/// factor, whether keeping the signature, re-signing with a key of their own under the
/// server's kid, or dropping the signature; a token without `amr` verifies with none.
#[test]
fn a_forged_amr_is_refused_and_a_missing_one_is_empty() {
    let (tokens, _) = tokens_with(ed25519());
    let who = caller().with_amr(["pwd".to_owned()]);
    let issued = tokens.issue(&who).expect("issue");
    let verified = tokens.verify(&issued.token).expect("verify");
    assert_eq!(verified.amr(), ["pwd"]);
    assert_eq!(verified.expires_at(), Some(issued.expires_at));
    let (header, mut claims, signature) = parts(&issued.token);
    assert_eq!(claims["amr"], json!(["pwd"]));
    claims["amr"] = json!(["pwd", "otp", "mfa"]);
    let kept = format!("{}.{}.{signature}", b64(&header), b64(&claims));
    assert_invalid(&tokens, &kept, "forged amr, original signature");
    assert_invalid(
        &tokens,
        &format!("{}.{}.", b64(&header), b64(&claims)),
        "forged amr, no signature",
    );
    let mut their_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    their_header.kid = header["kid"].as_str().map(str::to_owned);
    their_header.typ = Some("at+jwt".into());
    let resigned = jsonwebtoken::encode(
        &their_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(
            tenantkit_auth::generate_ed25519_pem()
                .expect("pem")
                .as_bytes(),
        )
        .expect("key"),
    )
    .expect("encode");
    assert_invalid(&tokens, &resigned, "forged amr, re-signed by another key");
    // Without `amr` (a token of an older issuer): verifies, with no methods; the claim is not
    // even written when there are none.
    let bare = tokens.issue(&caller()).expect("issue");
    assert!(parts(&bare.token).1.get("amr").is_none());
    let principal = tokens.verify(&bare.token).expect("verify");
    assert!(principal.amr().is_empty() && !principal.has_amr("pwd"));
    // A malformed `amr` in a correctly signed token (not a list) is refused, not a panic.
    let (header, mut claims, _) = parts(&bare.token);
    claims["amr"] = json!("pwd");
    let hmac = SigningKey::hmac("h", &[3u8; 32]).expect("hmac");
    let (hmac_tokens, _) = tokens_with(hmac);
    let mut hmac_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hmac_header.kid = Some("h".into());
    hmac_header.typ = header["typ"].as_str().map(str::to_owned);
    let malformed = jsonwebtoken::encode(
        &hmac_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[3u8; 32]),
    )
    .expect("encode");
    assert_invalid(&hmac_tokens, &malformed, "amr that is not a list");
}

#[test]
fn truncated_garbage_and_huge_tokens_are_refused() {
    let (tokens, _) = tokens_with(ed25519());
    let token = tokens.issue(&caller()).expect("issue").token;
    for cut in [0, 1, 10, token.len() / 2, token.len() - 1] {
        assert_invalid(&tokens, &token[..cut], &format!("truncated at {cut}"));
    }
    for garbage in [
        "",
        ".",
        "..",
        "a.b.c",
        "....",
        "Bearer x",
        "eyJ.eyJ.eyJ",
        "\u{0}\u{1}",
        "💥.💥.💥",
        &format!("{token}.extra"),
        &format!("{token}{token}"),
    ] {
        assert_invalid(&tokens, garbage, garbage);
    }
    let huge = format!(
        "{}.{}.{}",
        "A".repeat(50_000),
        "B".repeat(50_000),
        "C".repeat(50_000)
    );
    assert_invalid(&tokens, &huge, "huge");
}

#[test]
fn rotation_keeps_old_tokens_until_the_key_is_retired() {
    let old = ed25519();
    let old_kid = old.kid().to_owned();
    let tokens = AccessTokens::new(KeySet::new(old), config());
    let before = tokens.issue(&caller()).expect("issue").token;

    let rotated = tokens.keys().rotate(ed25519());
    tokens.replace_keys(rotated);
    let after = tokens.issue(&caller()).expect("issue").token;
    assert_ne!(parts(&after).0["kid"], json!(old_kid), "the new key signs");
    assert!(
        tokens.verify(&before).is_ok(),
        "old tokens verify until retirement"
    );
    assert!(tokens.verify(&after).is_ok());
    assert_eq!(
        tokens.keys().jwks()["keys"].as_array().map(Vec::len),
        Some(2)
    );

    let retired = tokens.keys().retire(&old_kid).expect("retire");
    tokens.replace_keys(retired);
    assert_invalid(&tokens, &before, "retired key");
    assert!(tokens.verify(&after).is_ok());
    assert!(
        tokens
            .keys()
            .retire(tokens.keys().signing().expect("signs").kid())
            .is_err(),
        "cannot retire the signer"
    );
}

#[test]
fn jwks_publishes_public_keys_only() {
    let keys = KeySet::new(ed25519())
        .with_verifier(
            SigningKey::from_pem(Algorithm::RS256, RSA_PEM)
                .expect("rsa")
                .verifying_key()
                .clone(),
        )
        .with_verifier(
            SigningKey::from_pem(Algorithm::ES256, EC_PEM)
                .expect("ec")
                .verifying_key()
                .clone(),
        )
        .with_verifier(
            SigningKey::hmac("secret-kid", &[9u8; 32])
                .expect("hmac")
                .verifying_key()
                .clone(),
        );
    let jwks = keys.jwks();
    let listed = jwks["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 3, "the HMAC key is never published");
    let text = jwks.to_string();
    for private in ["\"d\"", "\"p\"", "\"q\"", "\"k\"", "secret-kid"] {
        assert!(!text.contains(private), "JWKS leaks {private}: {text}");
    }
    for key in listed {
        assert!(key["kid"].is_string() && key["alg"].is_string(), "{key}");
        let verifier = tenantkit_auth::VerifyingKey::from_jwk(
            &serde_json::from_value(key.clone()).expect("jwk"),
        )
        .expect("from jwk");
        assert_eq!(Some(verifier.kid()), key["kid"].as_str());
    }
}

#[test]
fn bad_key_material_is_a_key_error() {
    assert!(matches!(
        SigningKey::from_pem(Algorithm::EdDSA, b"not a pem"),
        Err(Error::Key(_))
    ));
    assert!(
        matches!(
            SigningKey::from_pem(Algorithm::EdDSA, RSA_PEM),
            Err(Error::Key(_))
        ),
        "RSA key as Ed25519"
    );
    assert!(matches!(
        SigningKey::from_pem(Algorithm::ES256, RSA_PEM),
        Err(Error::Key(_))
    ));
    assert!(matches!(
        SigningKey::from_pem(Algorithm::HS256, RSA_PEM),
        Err(Error::Key(_))
    ));
    assert!(matches!(
        SigningKey::hmac("k", b"short"),
        Err(Error::Key(_))
    ));
    let debug = format!("{:?}", ed25519());
    assert!(!debug.contains("PRIVATE"), "{debug}");
}
