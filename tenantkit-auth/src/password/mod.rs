//! Password hashing with argon2id on a bounded blocking pool, and the password policy.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash as Phc, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::rand_core::OsRng;
use tenantkit_core::{FieldError, PasswordHash};
use tokio::sync::OnceCell;

use crate::{Error, Result};

mod workers;

#[cfg(test)]
use workers::OWN_MAPPING_BLOCKS;
use workers::{QUEUE_PER_WORKER, Workers, argon2_memory};

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
    include_str!("../../data/common-passwords.txt")
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

/// argon2id hashing and verification on a fixed set of worker threads, each reusing one
/// memory buffer of the configured cost, so a login storm neither takes the runtime's threads
/// nor grows memory: however long it lasts, hashing holds `concurrency` × `m_cost` KiB, and
/// gives it back a second after the storm. A
/// bounded queue stands in front of the workers: when as many hashes wait as it holds, the
/// next one is refused at once with [`Error::Overloaded`] (503 + `Retry-After`) instead of
/// making every caller wait longer. Cheap to clone; the workers stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    policy: PasswordPolicy,
    workers: Workers,
    dummy: OnceCell<String>,
}

/// What a [`PasswordHasher`] has done so far, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HasherStats {
    /// Hashes and verifications started (each one argon2 run).
    pub started: u64,
    /// Refused with [`Error::Overloaded`] because the queue was full.
    pub refused: u64,
    /// Admitted and not running yet (waiting for a worker, or just handed to one).
    pub waiting: usize,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost_kib", &self.inner.params.m_cost())
            .field("t_cost", &self.inner.params.t_cost())
            .field("p_cost", &self.inner.params.p_cost())
            .field("policy", &self.inner.policy)
            .field("concurrency", &self.inner.workers.count)
            .field("queue", &self.inner.workers.queue)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP's argon2id parameters (m = 19456 KiB, t = 2, p = 1), the default policy, one
    /// worker per core and 16 waiting per worker.
    pub fn new() -> Self {
        // These constants are valid argon2 parameters.
        let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::build(
            params,
            PasswordPolicy::default(),
            cores,
            cores * QUEUE_PER_WORKER,
        )
    }

    /// Custom argon2id parameters (memory in KiB, iterations, lanes).
    ///
    /// # Errors
    /// [`Error::Hashing`] when argon2 rejects the parameters.
    pub fn with_params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let params = Params::new(m_cost_kib, t_cost, p_cost, None)
            .map_err(|e| Error::Hashing(format!("invalid argon2 parameters: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Ok(Self::build(
            params,
            PasswordPolicy::default(),
            cores,
            cores * QUEUE_PER_WORKER,
        ))
    }

    /// Replaces the password policy.
    pub fn with_policy(self, policy: PasswordPolicy) -> Self {
        let workers = &self.inner.workers;
        Self::build(
            self.inner.params.clone(),
            policy,
            workers.count,
            workers.queue,
        )
    }

    /// Runs `workers` hashes at once (at least one); the queue keeps its length.
    pub fn with_concurrency(self, workers: usize) -> Self {
        let queue = self.inner.workers.queue;
        Self::build(
            self.inner.params.clone(),
            self.inner.policy.clone(),
            workers.max(1),
            queue,
        )
    }

    /// Lets at most `waiting` hashes wait for a free worker (0: none wait; a hash either
    /// starts at once or is refused).
    pub fn with_queue_limit(self, waiting: usize) -> Self {
        let count = self.inner.workers.count;
        Self::build(
            self.inner.params.clone(),
            self.inner.policy.clone(),
            count,
            waiting,
        )
    }

    /// Counts of the work done so far (shared by every clone).
    pub fn stats(&self) -> HasherStats {
        let counters = &self.inner.workers.counters;
        let admitted = counters.admitted.load(Ordering::Acquire);
        let running = counters.running.load(Ordering::Acquire);
        HasherStats {
            started: counters.started.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            waiting: admitted.saturating_sub(running),
        }
    }

    fn build(params: Params, policy: PasswordPolicy, workers: usize, queue: usize) -> Self {
        let workers = Workers::start(workers, queue, params.block_count());
        let inner = Inner {
            params,
            policy,
            workers,
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
    /// [`Error::Overloaded`] when the queue is full; [`Error::Hashing`] when hashing fails.
    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: &Password) -> Result<PasswordHash> {
        let params = self.inner.params.clone();
        let password = password.clone();
        let phc = self
            .inner
            .workers
            .run(move |memory| hash_with(&params, password.expose().as_bytes(), memory))
            .await??;
        Ok(PasswordHash::new(phc))
    }

    /// Checks `password` against `stored`. With no stored hash (unknown account, SSO-only
    /// account) it verifies against a dummy hash of the same cost and answers `Mismatch`, so
    /// response time does not reveal whether the account exists.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the queue is full; [`Error::Hashing`] when the stored hash
    /// cannot be read.
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
            .inner
            .workers
            .run(move |memory| verify_with(&phc, attempt.expose().as_bytes(), &params, memory))
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
}

/// argon2id of `password` with a new salt under `params`, in `memory`, as a PHC string.
fn hash_with(params: &Params, password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let failed = |e: &dyn fmt::Display| Error::Hashing(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    fill(params, password, salt_raw, &mut out, memory)?;
    let phc = Phc {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (computed in `memory` when the stored
/// cost fits, else in a buffer of its own), and if so whether it needs a rehash under
/// `current`.
fn verify_with(
    stored: &str,
    password: &[u8],
    current: &Params,
    memory: &mut [Block],
) -> Result<Option<bool>> {
    let parsed =
        Phc::new(stored).map_err(|e| Error::Hashing(format!("stored hash unreadable: {e}")))?;
    let unreadable = |what: &str| Error::Hashing(format!("stored hash unreadable: {what}"));
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| unreadable("algorithm"))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| unreadable("version"))?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|_| unreadable("parameters"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(unreadable("no salt or hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|_| unreadable("salt"))?;
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let blocks = params.block_count();
    if memory.len() < blocks {
        // A hash made with a larger memory cost than today's: a buffer of its own, once
        // (the rehash that follows a match brings it to today's cost).
        let mut own = argon2_memory(blocks);
        argon2.hash_password_into_with_memory(password, salt_raw, &mut out, &mut own[..])
    } else {
        argon2.hash_password_into_with_memory(password, salt_raw, &mut out, &mut memory[..blocks])
    }
    .map_err(|e| Error::Hashing(e.to_string()))?;
    // Output's equality is constant-time.
    let computed =
        argon2::password_hash::Output::new(&out).map_err(|e| Error::Hashing(e.to_string()))?;
    Ok((computed == expected).then(|| needs_rehash(&parsed, current)))
}

/// argon2id under `params` into `out`, in the first blocks of `memory`.
fn fill(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<()> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        *memory = argon2_memory(blocks);
    }
    PasswordHasher::argon2(params.clone())
        .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        .map_err(|e| Error::Hashing(e.to_string()))
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
mod tests;
