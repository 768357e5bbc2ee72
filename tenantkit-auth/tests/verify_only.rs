//! Verify-only key sets: a service holding public keys only (a JWKS document or public PEMs)
//! verifies the issuer's tokens exactly as the issuer does, through a key rotation, and can
//! never sign; bad or private key material is a clear error, never a panic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tenantkit_auth::{
    AccessTokens, Algorithm, Error, JwtAuthLayer, KeySet, SigningKey, VerifyingKey,
    generate_ed25519_pem,
};
use tenantkit_core::{ManualClock, Principal, amr};
use tower::{Layer as _, ServiceExt as _, service_fn};

mod support;

use support::{EC_PEM, RSA_PEM, RSA_PUBLIC_PEM, assert_invalid, b64, config};

/// The public half of `fixtures/test-only-ec.pem`.
const EC_PUBLIC_PEM: &[u8] = b"-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZTj9N83oREc0Ceng53MlHUVKYJmC
3RcLTxzAVvinInT25ct7IxeefDen804Jm0O93fFlPYpFcTRsYB+Oih9mMg==
-----END PUBLIC KEY-----
";

/// An Ed25519 SubjectPublicKeyInfo whose key is 3 bytes instead of 32.
const SHORT_ED25519_PEM: &[u8] = b"-----BEGIN PUBLIC KEY-----
MA4wBQYDK2VwAwUAAQIDBA==
-----END PUBLIC KEY-----
";

/// The shared caller, signed in with a password.
fn caller() -> Principal {
    support::caller().with_amr([amr::PASSWORD.to_owned()])
}

/// An issuer (signing) and a verifier built from the issuer's published JWKS only, on one
/// clock.
fn issuer_and_verifier() -> (AccessTokens, AccessTokens, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    let issuer = AccessTokens::with_clock(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        config(),
        clock.clone(),
    );
    let verifier = AccessTokens::with_clock(
        KeySet::from_jwks(&issuer.keys().jwks().to_string()).expect("jwks"),
        config(),
        clock.clone(),
    );
    (issuer, verifier, clock)
}

fn assert_key_error(result: tenantkit_auth::Result<KeySet>, what: &str) {
    match result {
        Err(Error::Key(reason)) => assert!(!reason.is_empty(), "{what}: a reason"),
        other => panic!("{what}: expected Error::Key, got {other:?}"),
    }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

/// An Ed25519 key pair as (private PEM for the issuer, public PEM for the verifier).
fn ed25519_pems() -> (String, String) {
    let private = generate_ed25519_pem().expect("pem");
    let public = ed25519_dalek::SigningKey::from_pkcs8_pem(&private)
        .expect("parse")
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    (private, public)
}

#[test]
fn a_verify_only_set_follows_the_issuer_through_a_key_rotation() {
    let (issuer, verifier, _) = issuer_and_verifier();
    assert!(verifier.keys().is_verify_only() && !issuer.keys().is_verify_only());
    let who = caller();
    let old = issuer.issue(&who).expect("issue");
    let verified = verifier.verify(&old.token).expect("verify-only accepts");
    assert_eq!(verified, who.clone().with_expires_at(old.expires_at));
    assert_eq!(verified, issuer.verify(&old.token).expect("issuer"));

    // The issuer rotates: a new key signs, the old one still verifies until retired.
    let next = SigningKey::generate_ed25519().expect("key");
    let new_kid = next.kid().to_owned();
    issuer.replace_keys(issuer.keys().rotate(next));
    let new = issuer.issue(&who).expect("issue");
    assert_invalid(
        &verifier,
        &new.token,
        "a kid the verifier has not loaded yet",
    );
    // The verifier reloads the published JWKS: both kids verify.
    verifier.replace_keys(KeySet::from_jwks(&issuer.keys().jwks().to_string()).expect("jwks"));
    assert!(verifier.keys().verifier(&new_kid).is_some());
    verifier
        .verify(&old.token)
        .expect("the old kid still verifies");
    verifier.verify(&new.token).expect("the new kid verifies");

    // The old key is retired and the JWKS reloaded: its tokens stop working at once (the
    // verified-token cache is cleared with the keys).
    let old_kid = issuer
        .keys()
        .verifiers()
        .map(|k| k.kid().to_owned())
        .find(|kid| *kid != new_kid)
        .expect("old kid");
    issuer.replace_keys(issuer.keys().retire(&old_kid).expect("retire"));
    verifier.replace_keys(KeySet::from_jwks(&issuer.keys().jwks().to_string()).expect("jwks"));
    assert_invalid(&verifier, &old.token, "a retired kid");
    verifier.verify(&new.token).expect("the new kid verifies");
    // A verify-only set retires any key (there is no signing key to protect).
    let empty = verifier.keys().retire(&new_kid).expect("retire");
    assert!(empty.verifier(&new_kid).is_none());
}

#[test]
fn a_verify_only_set_cannot_issue() {
    let (_, verifier, _) = issuer_and_verifier();
    assert!(verifier.keys().signing().is_none());
    match verifier.issue(&caller()) {
        Err(Error::Key(reason)) => assert!(reason.contains("only verifies"), "{reason}"),
        other => panic!("a verify-only set must not issue: {other:?}"),
    }
    // Rotating a signing key in makes it a signing set again, on purpose only.
    let signing = verifier
        .keys()
        .rotate(SigningKey::generate_ed25519().expect("key"));
    assert!(!signing.is_verify_only());
}

#[test]
fn a_verify_only_set_refuses_unknown_kids_and_forgeries() {
    let (issuer, verifier, clock) = issuer_and_verifier();
    let good = issuer.issue(&caller()).expect("issue").token;
    let (header, signature) = {
        let mut parts = good.split('.');
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts.next().expect("h"))
                .expect("b64"),
        )
        .expect("json");
        (header, parts.nth(1).expect("s").to_owned())
    };
    let claims = claims_of(&good);
    // An unknown kid: a token of another issuer's key.
    let stranger = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        config(),
    );
    assert_invalid(
        &verifier,
        &stranger.issue(&caller()).expect("issue").token,
        "unknown kid",
    );
    let mut unknown = header.clone();
    unknown["kid"] = json!("no-such-kid");
    assert_invalid(
        &verifier,
        &format!("{}.{}.{signature}", b64(&unknown), b64(&claims)),
        "renamed kid",
    );
    // A forged amr (a second factor never used), kept signature: refused.
    let mut forged = claims.clone();
    forged["amr"] = json!(["pwd", "otp", "mfa"]);
    assert_invalid(
        &verifier,
        &format!("{}.{}.{signature}", b64(&header), b64(&forged)),
        "forged amr",
    );
    // Expiry is the verifier's own clock, as on the issuer.
    clock.advance(config().ttl + Duration::from_secs(60));
    assert!(matches!(verifier.verify(&good), Err(Error::TokenExpired)));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused_by_a_verify_only_set() {
    // Alg confusion against public-key kids: a verifier that trusted the header's `alg` would
    // check an HMAC keyed with bytes anyone has (the PEM, the JWK, the raw key).
    let (ed_private, ed_public) = ed25519_pems();
    let ed = SigningKey::from_pem(Algorithm::EdDSA, ed_private.as_bytes()).expect("ed");
    let rsa = SigningKey::from_pem(Algorithm::RS256, RSA_PEM).expect("rsa");
    let ec = SigningKey::from_pem(Algorithm::ES256, EC_PEM).expect("ec");
    let keys = [
        (ed, ed_public.into_bytes()),
        (rsa, RSA_PUBLIC_PEM.to_vec()),
        (ec, EC_PUBLIC_PEM.to_vec()),
    ];
    for (key, public_pem) in keys {
        let kid = key.kid().to_owned();
        let algorithm = key.algorithm();
        let jwk = serde_json::to_vec(key.verifying_key().public_jwk().expect("jwk")).expect("json");
        let issuer = AccessTokens::new(KeySet::new(key), config());
        let from_jwks = AccessTokens::new(
            KeySet::from_jwks(&issuer.keys().jwks().to_string()).expect("jwks"),
            config(),
        );
        let from_pem = AccessTokens::new(
            KeySet::verify_only([VerifyingKey::from_public_pem(
                algorithm,
                kid.clone(),
                &public_pem,
            )
            .expect("pem")])
            .expect("set"),
            config(),
        );
        let good = issuer.issue(&caller()).expect("issue").token;
        from_jwks.verify(&good).expect("jwks verifier accepts");
        from_pem.verify(&good).expect("pem verifier accepts");
        let claims = claims_of(&good);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid);
        header.typ = Some("at+jwt".into());
        let raw = jwk_x(&jwk);
        for secret in [
            public_pem.clone(),
            public_pem.trim_ascii_end().to_vec(),
            jwk.clone(),
            raw,
        ] {
            let forged = jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .expect("encode");
            assert_invalid(&from_jwks, &forged, &format!("{algorithm:?}: HS256 (jwks)"));
            assert_invalid(&from_pem, &forged, &format!("{algorithm:?}: HS256 (pem)"));
        }
    }
}

/// The raw public key bytes a JWK publishes (`x`, or `n` for RSA).
fn jwk_x(jwk: &[u8]) -> Vec<u8> {
    let jwk: Value = serde_json::from_slice(jwk).expect("json");
    let field = jwk["x"].as_str().or(jwk["n"].as_str()).expect("x or n");
    URL_SAFE_NO_PAD.decode(field).expect("b64")
}

#[test]
fn public_pems_load_and_private_or_wrong_ones_are_refused() {
    let (private, public) = ed25519_pems();
    let key = |algorithm, pem: &[u8]| VerifyingKey::from_public_pem(algorithm, "kid-1", pem);
    assert_eq!(
        key(Algorithm::EdDSA, public.as_bytes())
            .expect("ed")
            .algorithm(),
        Algorithm::EdDSA
    );
    key(Algorithm::RS256, RSA_PUBLIC_PEM).expect("rsa");
    key(Algorithm::ES256, EC_PUBLIC_PEM).expect("ec");
    let refused: [(&str, Algorithm, &[u8]); 10] = [
        (
            "an Ed25519 private key",
            Algorithm::EdDSA,
            private.as_bytes(),
        ),
        ("an RSA private key", Algorithm::RS256, RSA_PEM),
        ("an EC private key", Algorithm::ES256, EC_PEM),
        ("RSA as Ed25519", Algorithm::EdDSA, RSA_PUBLIC_PEM),
        ("EC as RSA", Algorithm::RS256, EC_PUBLIC_PEM),
        ("Ed25519 as EC", Algorithm::ES256, public.as_bytes()),
        ("HS256 has no public key", Algorithm::HS256, RSA_PUBLIC_PEM),
        (
            "garbage",
            Algorithm::EdDSA,
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ),
        ("a short Ed25519 key", Algorithm::EdDSA, SHORT_ED25519_PEM),
        ("not UTF-8", Algorithm::EdDSA, &[0xff, 0xfe, 0x00]),
    ];
    for (what, algorithm, pem) in refused {
        assert!(
            matches!(key(algorithm, pem), Err(Error::Key(_))),
            "{what} must be refused"
        );
    }
    assert!(matches!(
        VerifyingKey::from_public_pem(Algorithm::EdDSA, "", public.as_bytes()),
        Err(Error::Key(_))
    ));
    assert_key_error(KeySet::verify_only([]), "no keys");
    let one = key(Algorithm::EdDSA, public.as_bytes()).expect("ed");
    assert_key_error(
        KeySet::verify_only([one.clone(), one]),
        "two keys with one kid",
    );
}

/// A valid public Ed25519 JWK to break in various ways.
fn ed_jwk() -> Value {
    let key = SigningKey::generate_ed25519().expect("key");
    serde_json::to_value(key.verifying_key().public_jwk().expect("jwk")).expect("json")
}

fn jwks_with(key: Value) -> String {
    json!({ "keys": [ed_jwk(), key] }).to_string()
}

#[test]
fn a_malformed_or_unsupported_jwks_is_a_key_error_never_a_panic() {
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut key = ed_jwk();
        edit(&mut key);
        jwks_with(key)
    };
    let rsa_jwk = serde_json::to_value(
        SigningKey::from_pem(Algorithm::RS256, RSA_PEM)
            .expect("rsa")
            .verifying_key()
            .public_jwk()
            .expect("jwk"),
    )
    .expect("json");
    let short_rsa = {
        let mut key = rsa_jwk.clone();
        key["n"] = json!(URL_SAFE_NO_PAD.encode([0xc5u8; 128]));
        key["kid"] = json!("short");
        key
    };
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{\"keys\": [".into()),
        ("not an object", "[]".into()),
        ("no keys array", json!({"keys": {}}).to_string()),
        ("no keys", json!({"keys": []}).to_string()),
        (
            "a key that is not an object",
            json!({"keys": ["x"]}).to_string(),
        ),
        (
            "no kid",
            with(&|k| drop(k.as_object_mut().map(|o| o.remove("kid")))),
        ),
        ("empty kid", with(&|k| k["kid"] = json!(""))),
        (
            "no alg",
            with(&|k| drop(k.as_object_mut().map(|o| o.remove("alg")))),
        ),
        ("unsupported alg", with(&|k| k["alg"] = json!("ES384"))),
        ("unknown alg", with(&|k| k["alg"] = json!("XX999"))),
        ("HS256 alg", with(&|k| k["alg"] = json!("HS256"))),
        (
            "alg of another key type",
            with(&|k| k["alg"] = json!("RS256")),
        ),
        ("wrong curve", with(&|k| k["crv"] = json!("X25519"))),
        (
            "x not base64",
            with(&|k| k["x"] = json!("%%%not base64%%%")),
        ),
        // jsonwebtoken itself would panic on this one when verifying.
        ("x too short", with(&|k| k["x"] = json!("AAAA"))),
        (
            "x too long",
            with(&|k| k["x"] = json!(URL_SAFE_NO_PAD.encode([9u8; 40]))),
        ),
        (
            "x missing",
            with(&|k| drop(k.as_object_mut().map(|o| o.remove("x")))),
        ),
        ("unknown kty", with(&|k| k["kty"] = json!("XYZ"))),
        ("encryption key", with(&|k| k["use"] = json!("enc"))),
        (
            "sign-only key_ops",
            with(&|k| k["key_ops"] = json!(["sign"])),
        ),
        ("RSA under 2048 bits", jwks_with(short_rsa)),
        ("duplicate kid", {
            let key = ed_jwk();
            json!({ "keys": [key.clone(), key] }).to_string()
        }),
        (
            "EC point not on the curve",
            jwks_with(json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "bad-ec",
                "x": URL_SAFE_NO_PAD.encode([1u8; 32]),
                "y": URL_SAFE_NO_PAD.encode([2u8; 32]),
            })),
        ),
    ];
    for (what, document) in cases {
        let loaded = std::panic::catch_unwind(|| KeySet::from_jwks(&document))
            .unwrap_or_else(|_| panic!("{what}: panicked"));
        assert_key_error(loaded, what);
    }
    // The untouched pieces load: the failures above are the edits, not the base keys.
    KeySet::from_jwks(&jwks_with(rsa_jwk)).expect("ed + rsa");
    KeySet::from_jwks(&jwks_with(ed_jwk())).expect("two ed");
    KeySet::from_jwks_value(&json!({"keys": [ed_jwk()], "extra": true})).expect("value");
}

#[test]
fn a_jwks_with_private_or_secret_members_is_refused() {
    // A JWKS is public: one carrying a private key is refused whole (never silently used to
    // verify, never able to sign), whatever the key type.
    let (private, _) = ed25519_pems();
    let ed = ed25519_dalek::SigningKey::from_pkcs8_pem(&private).expect("parse");
    let mut with_d = serde_json::to_value(
        SigningKey::from_pem(Algorithm::EdDSA, private.as_bytes())
            .expect("key")
            .verifying_key()
            .public_jwk()
            .expect("jwk"),
    )
    .expect("json");
    with_d["d"] = json!(URL_SAFE_NO_PAD.encode(ed.to_bytes()));
    assert_key_error(KeySet::from_jwks(&jwks_with(with_d)), "OKP with d");
    for member in ["p", "q", "dp", "dq", "qi", "oth"] {
        let mut key = ed_jwk();
        key[member] = json!("AQAB");
        assert_key_error(KeySet::from_jwks(&jwks_with(key)), member);
    }
    let secret = json!({
        "kty": "oct", "alg": "HS256", "kid": "shared",
        "k": URL_SAFE_NO_PAD.encode([7u8; 32]),
    });
    assert_key_error(KeySet::from_jwks(&jwks_with(secret)), "oct secret");
    // A JWK without the private member but of a symmetric type is refused as unsupported.
    let keyless_oct = json!({"kty": "oct", "alg": "HS256", "kid": "shared"});
    assert_key_error(KeySet::from_jwks(&jwks_with(keyless_oct)), "oct");
}

#[tokio::test]
async fn the_jwt_layer_runs_on_public_keys_alone() {
    // No refresh secret, no session store, no database: a JWKS and the layer.
    let (issuer, verifier, _) = issuer_and_verifier();
    let layer = JwtAuthLayer::new(verifier.clone());
    let service = layer.layer(service_fn(|request: Request<Full<Bytes>>| async move {
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .expect("a principal");
        let body = format!(
            "{} {} {}",
            principal.user_id(),
            principal.amr().join(","),
            principal.expires_at().expect("exp").unix_timestamp()
        );
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(body)))
    }));
    let who = caller();
    let issued = issuer.issue(&who).expect("issue");
    let request = |token: &str| {
        Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .expect("request")
    };
    let response = service
        .clone()
        .oneshot(request(&issued.token))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!(
            "{} pwd {}",
            who.user_id(),
            issued.expires_at.unix_timestamp()
        )
    );
    assert_eq!(
        verifier.cached_tokens(),
        1,
        "the verified-token cache is used"
    );
    let stranger = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        config(),
    );
    let refused = service
        .oneshot(request(&stranger.issue(&who).expect("issue").token))
        .await
        .expect("infallible");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}
