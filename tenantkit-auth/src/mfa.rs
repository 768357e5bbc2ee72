//! A second factor: time-based one-time passwords (RFC 6238, with `totp-rs`) and single-use
//! recovery codes, for the flows in [`crate::flows`] (enroll, confirm, disable, and the second
//! step of a sign-in).
//!
//! - **Seeds** are 160 random bits (RFC 4226's recommendation), sealed at rest with the
//!   server's secret key ([`tenantkit_core::Keyring`]) and bound to their account, so a seed
//!   copied to another account's row does not open. They leave the server once, in the
//!   enrollment answer (base32 and an `otpauth://` URI for authenticator apps).
//! - **Codes**: 6 digits, 30-second steps, SHA-1 (what every authenticator app supports), one
//!   step of skew either way. A code is accepted **at most once**: the account stores the last
//!   step a code was accepted for, and an update that only succeeds for a later step decides
//!   between two concurrent uses of one code. `totp-rs` does not do this.
//! - **Recovery codes**: 10 per enrollment, 80 random bits each (`xxxx-xxxx-xxxx-xxxx`, base32),
//!   stored as SHA-256 and usable once; confirming a new enrollment replaces them.
//! - **Pending sign-ins** (`mfa_token`): 256 random bits, stored hashed, valid 5 minutes, used
//!   once, and dropped after 5 wrong codes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tenantkit_core::{Clock, Keyring, SystemClock, UserId};
use time::OffsetDateTime;
use totp_rs::{Algorithm, TOTP};

use crate::{Error, OneTimeToken, Result};

/// Digits of a code.
const DIGITS: usize = 6;
/// Seconds per time step.
const STEP: u64 = 30;
/// Steps accepted before and after the current one.
const SKEW: u64 = 1;
/// Bytes of a seed (160 bits).
const SEED_BYTES: usize = 20;
/// Recovery codes per enrollment.
pub const RECOVERY_CODES: usize = 10;
/// How long a pending sign-in waits for its second factor.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong codes a pending sign-in survives.
pub const CHALLENGE_ATTEMPTS: i64 = 5;
/// The prefix of a pending sign-in's token.
const CHALLENGE_PREFIX: &str = "mfa_";

/// The second-factor settings of [`crate::flows::AuthFlows`]: the key that seals seeds, the
/// name authenticator apps show, and the clock codes are checked against.
#[derive(Clone)]
pub struct Mfa {
    keyring: Arc<Keyring>,
    issuer: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Mfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mfa")
            .field("issuer", &self.issuer)
            .field("key", &self.keyring.current_key_id())
            .finish_non_exhaustive()
    }
}

impl Mfa {
    /// Seeds sealed with `keyring`; `issuer` is the name authenticator apps list the account
    /// under (your product's name).
    pub fn new(keyring: Keyring, issuer: impl Into<Arc<str>>) -> Self {
        Self {
            keyring: Arc::new(keyring),
            issuer: issuer.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same on `clock` (tests move it instead of waiting for the next step).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock codes are checked against.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A fresh seed, sealed for `user`'s row: (sealed, base32 for the user, `otpauth://` URI).
    pub(crate) fn new_seed(&self, user: UserId, account: &str) -> Result<(String, String, String)> {
        let mut seed = vec![0_u8; SEED_BYTES];
        OsRng.fill_bytes(&mut seed);
        let sealed = self
            .keyring
            .encrypt(&seed, &seed_context(user))
            .map_err(|e| Error::Core(e.into()))?;
        let totp = totp(seed)?;
        let base32 = totp.get_secret_base32();
        let label = format!("{}:{account}", self.issuer);
        let uri = format!(
            "otpauth://totp/{}?secret={base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
            percent_encode(&label),
            percent_encode(&self.issuer)
        );
        Ok((sealed, base32, uri))
    }

    /// The time step `code` is valid for with `user`'s sealed seed, if any (within the skew),
    /// compared in constant time. Whether that step was already used is the caller's check.
    pub(crate) fn matching_step(
        &self,
        user: UserId,
        sealed: &str,
        code: &str,
    ) -> Result<Option<i64>> {
        let seed = self
            .keyring
            .decrypt(sealed, &seed_context(user))
            .map_err(|e| Error::Core(e.into()))?;
        let totp = totp(seed.expose().to_vec())?;
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
        let current = now / STEP;
        let mut found = None;
        // Every candidate is computed and compared, so the time taken says nothing.
        for step in current.saturating_sub(SKEW)..=current + SKEW {
            let expected = totp.generate(step * STEP);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step);
            }
        }
        Ok(found.and_then(|s| i64::try_from(s).ok()))
    }

    /// The current time, by this clock.
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

fn totp(seed: Vec<u8>) -> Result<TOTP> {
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP, seed)
        .map_err(|e| Error::Key(format!("TOTP parameters: {e:?}")))
}

/// What a seed is sealed for: it only opens in its own account's row.
fn seed_context(user: UserId) -> String {
    format!("mfa_totp:{user}")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// SHA-256 of a normalised recovery code (case, dashes and spaces ignored).
pub(crate) fn recovery_hash(code: &str) -> [u8; 32] {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Sha256::digest(normalised.as_bytes()).into()
}

/// Ten fresh recovery codes: 80 random bits each, as four groups of four base32 characters.
pub(crate) fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0_u8; 10];
            OsRng.fill_bytes(&mut bytes);
            // 80 bits → 16 base32 characters.
            let mut bits: u128 = 0;
            for b in bytes {
                bits = (bits << 8) | u128::from(b);
            }
            let chars: Vec<char> = (0..16)
                .rev()
                .map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]))
                .collect();
            chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// A new pending sign-in token (a [`OneTimeToken`] with this flow's prefix) and its hash.
pub(crate) fn new_challenge() -> (String, [u8; 32]) {
    let token = format!("{CHALLENGE_PREFIX}{}", OneTimeToken::generate().expose());
    let hash = OneTimeToken::new(token.clone()).hash();
    (token, hash)
}

/// The hash of a presented pending sign-in token; `None` when it is malformed.
pub(crate) fn challenge_hash(token: &str) -> Option<[u8; 32]> {
    (token.starts_with(CHALLENGE_PREFIX) && token.len() <= 100)
        .then(|| OneTimeToken::new(token).hash())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tenantkit_core::{ManualClock, SecretKey};

    use super::*;

    fn mfa(clock: Arc<ManualClock>) -> Mfa {
        let key = SecretKey::from_bytes("k1", &[3_u8; 32]).unwrap();
        Mfa::new(Keyring::new(key), "Acme & Co").with_clock(clock)
    }

    /// RFC 6238 appendix B's SHA-1 vectors (8 digits there; the last 6 here).
    #[test]
    fn codes_match_the_rfc_vectors() {
        let totp = totp(b"12345678901234567890".to_vec()).unwrap();
        for (time, code) in [
            (59_u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(totp.generate(time), code[2..], "at {time}");
        }
    }

    #[test]
    fn a_code_matches_its_step_and_the_neighbours_only() {
        let clock = Arc::new(ManualClock::starting_now());
        let mfa = mfa(clock.clone());
        let user = UserId::new();
        let (sealed, base32, uri) = mfa.new_seed(user, "ada@example.com").unwrap();
        assert_eq!(base32.len(), 32, "160 bits in base32");
        assert!(uri.starts_with("otpauth://totp/Acme%20%26%20Co%3Aada%40example.com?secret="));
        assert!(uri.contains("&issuer=Acme%20%26%20Co&"));
        assert!(!sealed.contains(&base32));
        let now = u64::try_from(clock.now().unix_timestamp()).unwrap();
        let seed = totp_rs::Secret::Encoded(base32).to_bytes().unwrap();
        let totp = totp(seed).unwrap();
        let code = totp.generate(now);
        let step = i64::try_from(now / STEP).unwrap();
        assert_eq!(mfa.matching_step(user, &sealed, &code).unwrap(), Some(step));
        clock.advance(Duration::from_secs(STEP));
        assert_eq!(mfa.matching_step(user, &sealed, &code).unwrap(), Some(step));
        clock.advance(Duration::from_secs(STEP));
        assert_eq!(mfa.matching_step(user, &sealed, &code).unwrap(), None);
        // Malformed codes never match; the seed opens for its own account only.
        for bad in ["", "12345", "1234567", "abcdef", "12 345"] {
            assert_eq!(
                mfa.matching_step(user, &sealed, bad).unwrap(),
                None,
                "{bad:?}"
            );
        }
        assert!(mfa.matching_step(UserId::new(), &sealed, &code).is_err());
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised_for_hashing() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(
                recovery_hash(code),
                recovery_hash(&code.to_uppercase().replace('-', " "))
            );
        }
        let (token, hash) = new_challenge();
        assert_eq!(challenge_hash(&token), Some(hash));
        assert_eq!(challenge_hash("nope"), None);
    }

    #[test]
    fn debug_shows_no_key() {
        let mfa = mfa(Arc::new(ManualClock::starting_now()));
        let debug = format!("{mfa:?}");
        assert!(debug.contains("k1") && !debug.contains("[3"), "{debug}");
    }
}
