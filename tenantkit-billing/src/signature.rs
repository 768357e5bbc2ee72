//! `Stripe-Signature` verification on the raw body.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`: each `v1` is the hex
//! HMAC-SHA256, keyed by an endpoint secret (`whsec_…`), of `"{t}.{raw body}"`. An event is
//! genuine when any `v1` matches any configured secret (several during a rotation) and `t` is
//! within the tolerance of now, in the past or the future. Other schemes (`v0`) are ignored;
//! comparisons are constant time.

use hmac::{Hmac, Mac};
use time::OffsetDateTime;

/// Stripe's default tolerance: five minutes.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// The largest `Stripe-Signature` header read; longer ones are refused unread.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;

/// Why a signature was refused (each answers `400 invalid_signature`, nothing stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("no Stripe-Signature header")]
    Missing,
    /// The header is not `t=…,v1=…` (or too long, or its timestamp is not a number).
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The header carries no `v1` signature.
    #[error("no v1 signature")]
    NoV1,
    /// No `v1` signature matches any secret.
    #[error("no signature matches")]
    NoMatch,
    /// `t` is older than the tolerance.
    #[error("timestamp too old")]
    TooOld,
    /// `t` is further in the future than the tolerance.
    #[error("timestamp in the future")]
    InFuture,
}

/// One or more endpoint secrets and a tolerance.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<Vec<u8>>,
    tolerance: i64,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier {
    /// A verifier for these endpoint secrets (the whole `whsec_…` text is the HMAC key, as
    /// Stripe uses it) with the default tolerance.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when there is no secret or one is empty.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> crate::Result<Self> {
        let secrets: Vec<Vec<u8>> = secrets
            .iter()
            .map(|s| s.as_ref().trim().as_bytes().to_vec())
            .collect();
        if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
            return Err(crate::Error::Config(
                "at least one non-empty webhook secret is needed".into(),
            ));
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE_SECS,
        })
    }

    /// Replaces the tolerance (seconds, in either direction).
    pub fn with_tolerance(mut self, secs: i64) -> Self {
        self.tolerance = secs.max(0);
        self
    }

    /// Checks `header` (the `Stripe-Signature` value, if any) against `body` at `now`.
    ///
    /// # Errors
    /// A [`SignatureError`].
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(SignatureError::Malformed);
        }
        let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
        let mut timestamp: Option<&str> = None;
        let mut signatures: Vec<Vec<u8>> = Vec::new();
        for part in header.split(',') {
            let Some((key, value)) = part.trim().split_once('=') else {
                return Err(SignatureError::Malformed);
            };
            match key {
                "t" if timestamp.is_none() => timestamp = Some(value),
                "t" => return Err(SignatureError::Malformed),
                // A v1 that is not 64 hex digits can match nothing; it is skipped like Stripe's
                // own libraries skip it.
                "v1" => {
                    if let Some(bytes) = decode_hex(value) {
                        signatures.push(bytes);
                    }
                }
                _ => {} // other schemes (v0) are ignored
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        let t: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
        if signatures.is_empty() {
            return Err(if header.contains("v1=") {
                SignatureError::NoMatch
            } else {
                SignatureError::NoV1
            });
        }
        let matched = self.secrets.iter().any(|secret| {
            signatures.iter().any(|signature| {
                // The key length is never refused by HMAC.
                let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
                    return false;
                };
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(body);
                mac.verify_slice(signature).is_ok()
            })
        });
        if !matched {
            return Err(SignatureError::NoMatch);
        }
        // After the signature: a genuine but stale (replayed) event is refused, and nothing
        // about an unsigned request's timestamp is revealed.
        let now = now.unix_timestamp();
        if t < now.saturating_sub(self.tolerance) {
            return Err(SignatureError::TooOld);
        }
        if t > now.saturating_add(self.tolerance) {
            return Err(SignatureError::InFuture);
        }
        Ok(())
    }
}

/// `Stripe-Signature: t=…,v1=…` for `body` at `t` with `secret`, as Stripe sends it (for tests
/// and for the fake event sequencer).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t},v1={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(32);
    for pair in bytes.chunks(2) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out.push(u8::try_from(hi * 16 + lo).ok()?);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    #[test]
    fn the_matrix() {
        let verifier = WebhookVerifier::new(&[SECRET]).unwrap();
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let t = 1_700_000_000;
        let good = sign(SECRET, t, body);
        let v = |h: &str, b: &[u8], now: i64| verifier.verify(Some(h.as_bytes()), b, at(now));
        assert_eq!(v(&good, body, t), Ok(()));
        assert_eq!(v(&good, body, t + 300), Ok(()));
        assert_eq!(v(&good, body, t + 301), Err(SignatureError::TooOld));
        assert_eq!(v(&good, body, t - 301), Err(SignatureError::InFuture));
        let other = sign("whsec_other", t, body);
        assert_eq!(v(&other, body, t), Err(SignatureError::NoMatch));
        let sig = good.split_once(",v1=").unwrap().1;
        let several = format!("t={t},v1={},v1={sig}", "0".repeat(64));
        assert_eq!(v(&several, body, t), Ok(()));
        assert_eq!(
            v(&format!("t={t},v0={sig}"), body, t),
            Err(SignatureError::NoV1)
        );
        assert_eq!(
            v(&format!("t={t},v1=zz{}", &sig[2..]), body, t),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            v(&good, br#"{"id": "evt_1","object":"event"}"#, t),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(v(&good, b"", t), Err(SignatureError::NoMatch));
        assert_eq!(v("garbage", body, t), Err(SignatureError::Malformed));
        assert_eq!(
            v(&format!("v1={sig}"), body, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verifier.verify(None, body, at(t)),
            Err(SignatureError::Missing)
        );
        let rotated = WebhookVerifier::new(&["whsec_new", SECRET]).unwrap();
        assert_eq!(rotated.verify(Some(good.as_bytes()), body, at(t)), Ok(()));
    }
}
