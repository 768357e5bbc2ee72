//! Fuzzing what tenantkit-auth reads from the network: bearer headers, access tokens (random
//! strings, forged headers and claims, alg confusion, single-character edits of real tokens),
//! refresh tokens and passwords. Nothing is ever accepted that was not issued, and nothing
//! panics.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};
use tenantkit_auth::{
    AccessTokens, Algorithm, Error, JwtConfig, KeySet, MemorySessionStore, Password,
    PasswordPolicy, RefreshConfig, RefreshSessions, RefreshToken, SigningKey, bearer_token,
};
use tenantkit_core::testing::fuzz::{
    check, hostile_bytes, hostile_string, json_value, mutated_object,
};
use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};

const RSA_PEM: &[u8] = include_bytes!("fixtures/test-only-rsa.pem");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/test-only-rsa.pub.pem");

fn caller() -> Principal {
    Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Admin,
        ["projects:read".to_owned()],
        SessionId::new(),
    )
}

fn issuers() -> Vec<(&'static str, AccessTokens)> {
    let config = || JwtConfig::new("https://issuer.test", "tenantkit-api");
    vec![
        (
            "EdDSA",
            AccessTokens::new(
                KeySet::new(SigningKey::generate_ed25519().expect("key")),
                config(),
            ),
        ),
        (
            "RS256",
            AccessTokens::new(
                KeySet::new(SigningKey::from_pem(Algorithm::RS256, RSA_PEM).expect("rsa")),
                config(),
            ),
        ),
        (
            "HS256",
            AccessTokens::new(
                KeySet::new(SigningKey::hmac("hs-1", &[7u8; 32]).expect("hmac")),
                config(),
            ),
        ),
    ]
}

fn refused(tokens: &AccessTokens, token: &str) -> Result<(), TestCaseError> {
    match tokens.verify(token) {
        Err(Error::InvalidToken(_) | Error::TokenExpired) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "accepted or mis-answered: {other:?}"
        ))),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
}

#[test]
fn random_strings_are_never_tokens() {
    for (name, tokens) in issuers() {
        check(name, 1024, hostile_string(), |text| refused(&tokens, &text));
        // Three dot-separated parts of anything.
        check(
            name,
            1024,
            (hostile_bytes(), hostile_bytes(), hostile_bytes()),
            |(h, c, s)| refused(&tokens, &format!("{}.{}.{}", b64(&h), b64(&c), b64(&s))),
        );
    }
}

/// A header an attacker would try: every algorithm (`none`, HMAC with the public key, the
/// wrong asymmetric family), a real or made-up `kid`, key-fetching hints, anything else.
fn forged_header(kid: String) -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        Just("none"),
        Just("None"),
        Just("HS256"),
        Just("HS512"),
        Just("RS256"),
        Just("PS256"),
        Just("ES256"),
        Just("EdDSA"),
        Just(""),
    ];
    let kid = prop_oneof![Just(kid), hostile_string()];
    (alg, kid, any::<bool>()).prop_flat_map(|(alg, kid, hints)| {
        let mut header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        if hints {
            header["jku"] = json!("https://attacker.example/jwks.json");
            header["jwk"] = json!({"kty": "oct", "k": b64(b"attacker")});
        }
        mutated_object(header)
    })
}

#[test]
fn forged_headers_claims_and_signatures_are_refused() {
    let rsa_public = std::str::from_utf8(RSA_PUBLIC_PEM).expect("pem").to_owned();
    for (name, tokens) in issuers() {
        let real = tokens.issue(&caller()).expect("issue").token;
        let mut parts = real.split('.');
        let (header, claims, signature) = (
            decode(parts.next().expect("h")),
            decode(parts.next().expect("c")),
            parts.next().expect("s").to_owned(),
        );
        let kid = header["kid"].as_str().unwrap_or_default().to_owned();
        let strategy = (
            forged_header(kid),
            mutated_object(claims.clone()),
            prop_oneof![
                Just(String::new()),
                Just(signature.clone()),
                hostile_bytes().prop_map(|b| b64(&b)),
                Just("hmac-with-the-public-key".to_owned()),
            ],
        );
        check(name, 512, strategy, |(header, forged_claims, signature)| {
            let head = b64(&serde_json::to_vec(&header).expect("json"));
            let body = b64(&serde_json::to_vec(&forged_claims).expect("json"));
            let signature = if signature == "hmac-with-the-public-key" {
                // Alg confusion: HMAC keyed with the (public) RSA key.
                use hmac::Mac as _;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(rsa_public.as_bytes())
                    .expect("any key length");
                mac.update(format!("{head}.{body}").as_bytes());
                b64(&mac.finalize().into_bytes())
            } else {
                signature
            };
            let token = format!("{head}.{body}.{signature}");
            if token == real {
                return Ok(());
            }
            // The real signature over the real header and claims is the one token that must
            // verify; any change to what it signs must not.
            refused(&tokens, &token)
        });
        // Claims of any shape under the real header and a real-looking signature.
        check(name, 256, json_value(), |claims| {
            let token = format!(
                "{}.{}.{signature}",
                real.split('.').next().expect("h"),
                b64(&serde_json::to_vec(&claims).expect("json"))
            );
            refused(&tokens, &token)
        });
    }
}

#[test]
fn any_single_character_edit_breaks_a_real_token() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.= ";
    for (name, tokens) in issuers() {
        let real = tokens.issue(&caller()).expect("issue").token;
        let len = real.len();
        check(
            name,
            1024,
            (0..len, 0..ALPHABET.len(), 0..3u8),
            |(at, with, how)| {
                let mut bytes = real.clone().into_bytes();
                match how {
                    0 => bytes[at] = ALPHABET[with],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, ALPHABET[with]),
                }
                let edited = String::from_utf8(bytes).expect("ascii");
                if edited == real {
                    return Ok(());
                }
                refused(&tokens, &edited)
            },
        );
    }
}

#[test]
fn bearer_headers_are_parsed_strictly() {
    check(
        "bearer",
        4096,
        (
            proptest::collection::vec(hostile_bytes(), 0..3),
            prop_oneof![
                Just("Bearer "),
                Just("bearer "),
                Just("BEARER  "),
                Just("Basic "),
                Just("")
            ],
        ),
        |(values, scheme)| {
            let mut headers = http::HeaderMap::new();
            for value in &values {
                let mut raw = scheme.as_bytes().to_vec();
                raw.extend_from_slice(value);
                if let Ok(value) = http::HeaderValue::from_bytes(&raw) {
                    headers.append(http::header::AUTHORIZATION, value);
                }
            }
            let count = headers.get_all(http::header::AUTHORIZATION).iter().count();
            match bearer_token(&headers) {
                Ok(token) => {
                    prop_assert_eq!(count, 1, "exactly one header");
                    prop_assert!(!token.is_empty() && token.trim() == token);
                    let header = headers[http::header::AUTHORIZATION]
                        .to_str()
                        .expect("ascii");
                    prop_assert!(header.to_ascii_lowercase().starts_with("bearer "));
                }
                Err(Error::MissingToken | Error::InvalidToken(_)) => {}
                Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
            Ok(())
        },
    );
}

#[test]
fn refresh_tokens_of_any_shape_are_unknown() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let sessions = RefreshSessions::new(
        MemorySessionStore::new(),
        &[9u8; 32],
        RefreshConfig::default(),
    )
    .expect("sessions");
    let (_, real) = runtime
        .block_on(sessions.start(UserId::new(), TenantId::new(), 0))
        .expect("start");
    check("refresh", 2048, hostile_string(), |text| {
        if text == real.expose() {
            return Ok(());
        }
        let presented = RefreshToken::new(text);
        match runtime.block_on(sessions.refresh(&presented)) {
            Err(Error::InvalidToken(_)) => {}
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
        match runtime.block_on(sessions.revoke(&presented)) {
            Ok(None) | Err(Error::InvalidToken(_)) => Ok(()),
            other => Err(TestCaseError::fail(format!("{other:?}"))),
        }
    });
}

#[test]
fn password_policy_answers_any_input() {
    let policy = PasswordPolicy::default();
    check("password policy", 4096, hostile_string(), |text| {
        match policy.check(&Password::new(text.clone()), "password") {
            Ok(()) => {
                prop_assert!(text.chars().count() >= 12 && text.len() <= 1024);
            }
            Err(Error::WeakPassword(errors)) => {
                prop_assert!(!errors.is_empty() && errors.iter().all(|e| e.field == "password"));
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
        Ok(())
    });
}
