//! Password hashing with argon2id on a bounded blocking pool, and the password policy.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

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
/// logins cannot take every runtime thread, with a bounded queue in front of it: when as many
/// hashes wait as the queue holds, the next one is refused at once with
/// [`Error::Overloaded`] (503 + `Retry-After`) instead of making every caller wait longer.
/// Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    policy: PasswordPolicy,
    permits: Arc<Semaphore>,
    /// How many hashes run at once.
    concurrency: usize,
    /// How many hashes may wait for a permit.
    queue: usize,
    /// How many wait now.
    waiting: AtomicUsize,
    /// How many hashes or verifications have run (or are running).
    started: AtomicU64,
    /// How many were refused because the queue was full.
    refused: AtomicU64,
    dummy: OnceCell<String>,
}

/// What a [`PasswordHasher`] has done so far, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherStats {
    /// Hashes and verifications started (each one argon2 run).
    pub started: u64,
    /// Refused with [`Error::Overloaded`] because the queue was full.
    pub refused: u64,
    /// Waiting for a worker now.
    pub waiting: usize,
}

/// Waiting hashes allowed per running one, by default.
const QUEUE_PER_PERMIT: usize = 16;

/// What an overloaded hasher tells callers to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.inner.params.m_cost())
            .field("t_cost", &self.inner.params.t_cost())
            .field("p_cost", &self.inner.params.p_cost())
            .field("policy", &self.inner.policy)
            .field("concurrency", &self.concurrency())
            .field("queue", &self.inner.queue)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP's argon2id parameters (m = 19456 KiB, t = 2, p = 1), the default policy, as many
    /// concurrent hashes as the machine has cores and 16 waiting per core.
    pub fn new() -> Self {
        // These constants are valid argon2 parameters.
        let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::build(
            params,
            PasswordPolicy::default(),
            cores,
            cores * QUEUE_PER_PERMIT,
        )
    }

    /// Custom argon2id parameters (memory in KiB, iterations, lanes).
    ///
    /// # Errors
    /// [`Error::Hashing`] when argon2 rejects the parameters.
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| Error::Hashing(format!("invalid argon2 parameters: {e}")))?;
        let defaults = Self::new();
        Ok(Self::build(
            params,
            PasswordPolicy::default(),
            defaults.concurrency(),
            defaults.inner.queue,
        ))
    }

    /// Replaces the password policy.
    pub fn with_policy(self, policy: PasswordPolicy) -> Self {
        Self::build(
            self.inner.params.clone(),
            policy,
            self.concurrency(),
            self.inner.queue,
        )
    }

    /// Limits how many hashes run at once (at least one); the queue keeps its length.
    pub fn with_concurrency(self, permits: usize) -> Self {
        Self::build(
            self.inner.params.clone(),
            self.inner.policy.clone(),
            permits.max(1),
            self.inner.queue,
        )
    }

    /// Lets at most `waiting` hashes wait for a free worker (0: none wait; a hash either
    /// starts at once or is refused).
    pub fn with_queue_limit(self, waiting: usize) -> Self {
        Self::build(
            self.inner.params.clone(),
            self.inner.policy.clone(),
            self.concurrency(),
            waiting,
        )
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// Counts of the work done so far (shared by every clone).
    pub fn stats(&self) -> HasherStats {
        HasherStats {
            started: self.inner.started.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        }
    }

    fn build(params: Params, policy: PasswordPolicy, permits: usize, queue: usize) -> Self {
        let inner = Inner {
            params,
            policy,
            permits: Arc::new(Semaphore::new(permits)),
            concurrency: permits,
            queue,
            waiting: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            refused: AtomicU64::new(0),
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

    /// Runs CPU-heavy work on the blocking pool, at most `permits` at a time, with at most
    /// `queue` callers waiting for one.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permits = self.inner.permits.clone();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(Error::Hashing("hasher closed".into()));
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let Some(waiting) = Waiting::enter(&self.inner.waiting, self.inner.queue) else {
                    self.inner.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Overloaded {
                        retry_after: OVERLOADED_RETRY_AFTER,
                    });
                };
                let permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Hashing("hasher closed".into()))?;
                drop(waiting);
                permit
            }
        };
        self.inner.started.fetch_add(1, Ordering::Relaxed);
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

/// A place in the hasher's queue, given back when dropped (also when the waiting caller is
/// cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Takes a place if fewer than `limit` are taken.
    fn enter(waiting: &'a AtomicUsize, limit: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < limit).then_some(now + 1)
            })
            .ok()
            .map(|_| Waiting(waiting))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

    /// With every worker busy and the queue full, the next hash is refused at once; the
    /// waiting ones still finish. Driven by the hasher's own counters, not by timing.
    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let hasher = PasswordHasher::with_params(8, 1, 1)
            .expect("params")
            .with_concurrency(1)
            .with_queue_limit(2);
        // Occupy the only worker.
        let busy = hasher
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .expect("the worker");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    hasher
                        .hash(&Password::new("a long enough passphrase"))
                        .await
                })
            })
            .collect();
        while hasher.inner.waiting.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.hash(&Password::new("one more passphrase")).await;
        assert!(
            matches!(refused, Err(Error::Overloaded { retry_after }) if retry_after.as_secs() >= 1),
            "{refused:?}"
        );
        let refused = hasher
            .verify(&Password::new("one more passphrase"), None)
            .await;
        assert!(
            matches!(refused, Err(Error::Overloaded { .. })),
            "{refused:?}"
        );
        drop(busy);
        for waiter in waiters {
            waiter
                .await
                .expect("join")
                .expect("a queued hash completes");
        }
        assert_eq!(hasher.inner.waiting.load(Ordering::Acquire), 0);
        // A cancelled waiter gives its place back.
        let busy = hasher
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .expect("the worker");
        let cancelled = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .hash(&Password::new("a long enough passphrase"))
                    .await
            })
        };
        while hasher.inner.waiting.load(Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        cancelled.abort();
        let _ = cancelled.await;
        assert_eq!(hasher.inner.waiting.load(Ordering::Acquire), 0);
        drop(busy);
        // No queue at all: a free worker still serves.
        let no_queue = hasher.with_queue_limit(0);
        no_queue
            .hash(&Password::new("a long enough passphrase"))
            .await
            .expect("a free worker");
    }

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
