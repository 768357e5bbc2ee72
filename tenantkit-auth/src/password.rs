//! Password hashing with argon2id on a bounded blocking pool, and the password policy.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{
    PasswordHash as Phc, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use password_hash::rand_core::OsRng;
use tenantkit_core::{FieldError, PasswordHash};
use tokio::sync::{OnceCell, Semaphore};

use crate::{Error, Result};

/// A plaintext password from a client. Its `Debug` never shows it.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a plaintext password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The plaintext, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The 19,640 most common passwords (Django's `CommonPasswordValidator` list, BSD-3).
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .collect()
});

/// What a new password must satisfy. `Default`: 12 to 1024, common passwords rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values).
    pub min_chars: usize,
    /// Most bytes; bounds the hashing work an attacker can ask for.
    pub max_bytes: usize,
    /// Reject passwords on the common-passwords list (case-insensitively).
    pub reject_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 12,
            max_bytes: 1024,
            reject_common: true,
        }
    }
}

impl PasswordPolicy {
    /// Checks a new password.
    ///
    /// # Errors
    /// [`Error::WeakPassword`] naming `field` with every rule broken.
    pub fn check(&self, password: &Password, field: &str) -> Result<()> {
        let text = password.expose();
        let mut errors = Vec::new();
        if text.chars().count() < self.min_chars {
            errors.push(FieldError::new(
                field,
                format!("must be at least {} characters", self.min_chars),
            ));
        }
        if text.len() > self.max_bytes {
            errors.push(FieldError::new(
                field,
                format!("must be at most {} bytes", self.max_bytes),
            ));
        }
        if self.reject_common && COMMON_PASSWORDS.contains(text.to_lowercase().as_str()) {
            errors.push(FieldError::new(field, "is too common; choose another"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::WeakPassword(errors))
        }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is right; `needs_rehash` when the hash was made with other parameters
    /// than the current ones, so the caller should store [`PasswordHasher::hash`] of it.
    Match {
        /// Whether to store a fresh hash.
        needs_rehash: bool,
    },
    /// The password is wrong, or there was no account (after the same amount of work).
    Mismatch,
}

/// argon2id hashing and verification on a bounded pool of blocking threads, so a burst of
/// logins cannot take every runtime thread. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    policy: PasswordPolicy,
    permits: Arc<Semaphore>,
    dummy: OnceCell<String>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.inner.params.m_cost())
            .field("t_cost", &self.inner.params.t_cost())
            .field("p_cost", &self.inner.params.p_cost())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP's argon2id parameters (m = 19456 KiB, t = 2, p = 1), the default policy, and as
    /// many concurrent hashes as the machine has cores.
    pub fn new() -> Self {
        // These constants are valid argon2 parameters.
        let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
        Self::build(params, PasswordPolicy::default())
    }

    /// Custom argon2id parameters (memory in KiB, iterations, lanes).
    ///
    /// # Errors
    /// [`Error::Hashing`] when argon2 rejects the parameters.
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| Error::Hashing(format!("invalid argon2 parameters: {e}")))?;
        Ok(Self::build(params, PasswordPolicy::default()))
    }

    /// Replaces the password policy.
    pub fn with_policy(self, policy: PasswordPolicy) -> Self {
        Self::build(self.inner.params.clone(), policy)
    }

    /// Limits how many hashes run at once (at least one).
    pub fn with_concurrency(self, permits: usize) -> Self {
        let inner = Inner {
            params: self.inner.params.clone(),
            policy: self.inner.policy.clone(),
            permits: Arc::new(Semaphore::new(permits.max(1))),
            dummy: OnceCell::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    fn build(params: Params, policy: PasswordPolicy) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let inner = Inner {
            params,
            policy,
            permits: Arc::new(Semaphore::new(cores)),
            dummy: OnceCell::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The policy new passwords are checked against.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.inner.policy
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Checks `password` against the policy (as `field`), then hashes it.
    ///
    /// # Errors
    /// [`Error::WeakPassword`], or [`Error::Hashing`] when hashing fails.
    pub async fn hash_new(&self, password: &Password, field: &str) -> Result<PasswordHash> {
        self.inner.policy.check(password, field)?;
        self.hash(password).await
    }

    /// Hashes a password (no policy check: use it to rehash a verified password).
    ///
    /// # Errors
    /// [`Error::Hashing`] when hashing fails.
    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: &Password) -> Result<PasswordHash> {
        let params = self.inner.params.clone();
        let password = password.clone();
        let phc = self
            .blocking(move || {
                let salt = SaltString::generate(&mut OsRng);
                Self::argon2(params)
                    .hash_password(password.expose().as_bytes(), &salt)
                    .map(|hash| hash.to_string())
                    .map_err(|e| Error::Hashing(e.to_string()))
            })
            .await??;
        Ok(PasswordHash::new(phc))
    }

    /// Checks `password` against `stored`. With no stored hash (unknown account, SSO-only
    /// account) it verifies against a dummy hash of the same cost and answers `Mismatch`, so
    /// response time does not reveal whether the account exists.
    ///
    /// # Errors
    /// [`Error::Hashing`] when the worker pool fails.
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<Verification> {
        // Over-long input is never hashed: it cannot match a hash we made, and hashing it
        // would let a client choose how much work we do.
        let too_long = password.expose().len() > self.inner.policy.max_bytes;
        let (phc, known) = match stored {
            Some(hash) if !too_long => (hash.as_str().to_owned(), true),
            _ => (self.dummy_hash().await?, false),
        };
        let params = self.inner.params.clone();
        let attempt = if too_long {
            Password::new(String::new())
        } else {
            password.clone()
        };
        let matched = self
            .blocking(move || {
                let parsed = Phc::new(&phc)
                    .map_err(|e| Error::Hashing(format!("stored hash unreadable: {e}")))?;
                let ok = Self::argon2(params.clone())
                    .verify_password(attempt.expose().as_bytes(), &parsed)
                    .is_ok();
                Ok::<_, Error>(ok.then(|| needs_rehash(&parsed, &params)))
            })
            .await??;
        Ok(match matched {
            Some(needs_rehash) if known => Verification::Match { needs_rehash },
            _ => Verification::Mismatch,
        })
    }

    async fn dummy_hash(&self) -> Result<String> {
        self.inner
            .dummy
            .get_or_try_init(|| async {
                let random = Password::new(SaltString::generate(&mut OsRng).as_str().to_owned());
                self.hash(&random).await.map(|h| h.as_str().to_owned())
            })
            .await
            .cloned()
    }

    /// Runs CPU-heavy work on the blocking pool, at most `permits` at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Hashing("hasher closed".into()))?;
        // The permit lives in the blocking task: if the request is cancelled, the hash still
        // runs to completion and keeps its slot, so cancelled logins cannot exceed the bound.
        tokio::task::spawn_blocking(move || {
            let output = work();
            drop(permit);
            output
        })
        .await
        .map_err(|e| Error::Hashing(format!("hashing task failed: {e}")))
    }
}

/// Whether a stored hash was made with other settings than `current`.
fn needs_rehash(stored: &Phc<'_>, current: &Params) -> bool {
    if stored.algorithm != Algorithm::Argon2id.ident()
        || stored.version != Some(Version::V0x13.into())
    {
        return true;
    }
    match Params::try_from(stored) {
        Ok(params) => {
            params.m_cost() != current.m_cost()
                || params.t_cost() != current.t_cost()
                || params.p_cost() != current.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_rejects_short_long_and_common_passwords() {
        let policy = PasswordPolicy::default();
        let fields = |p: &str| match policy.check(&Password::new(p), "password") {
            Ok(()) => vec![],
            Err(Error::WeakPassword(e)) => e.into_iter().map(|e| e.message).collect(),
            Err(other) => panic!("{other:?}"),
        };
        assert!(fields("correct horse battery staple").is_empty());
        assert_eq!(fields("short"), ["must be at least 12 characters"]);
        assert_eq!(fields("password1234"), ["is too common; choose another"]);
        assert_eq!(fields("PASSWORD1234"), ["is too common; choose another"]);
        assert_eq!(fields(&"x".repeat(1025)), ["must be at most 1024 bytes"]);
        assert!(COMMON_PASSWORDS.len() >= 10_000);
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert_eq!(
            format!("{:?}", Password::new("hunter2hunter2")),
            "Password(..)"
        );
    }
}
