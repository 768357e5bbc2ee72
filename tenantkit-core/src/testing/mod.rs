//! Test fixtures for tenantkit and for crates built on it: throwaway databases on each
//! backend, a two-tenant world, one macro that runs a test on every backend, and the isolation
//! conformance suite a tenant table must pass. Enabled by the `testing` feature; not for
//! production use.
//!
//! PostgreSQL tests read the superuser URL of a throwaway cluster from
//! `TENANTKIT_TEST_POSTGRES_URL` (the workspace's `scripts/test.sh` starts one and sets it).
//! Each test gets a fresh database owned by `tenantkit_owner`, migrated as that owner, and
//! used through `tenantkit_app_login`, a member of `tenantkit_app` that cannot bypass RLS.
//! Without the variable the PostgreSQL tests say they did not run, except under `CI=true`,
//! where a missing PostgreSQL is a failure.

mod db;
pub mod fuzz;
mod isolation;
mod macros;
mod world;

pub use db::{POSTGRES_URL_VAR, TestDb};
pub use isolation::{assert_rls_hides, assert_tenant_isolation};
pub use macros::no_backend_compiled;
pub use world::{TenantFixture, TwoTenants, principal};

use crate::Backend;

fn ci_requires_everything() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The value of `var`, which locates a service a test needs (a database URL, an SMTP sink, a
/// tool). When it is unset or empty: under `CI=true` (or `CI=1`) a panic, because CI runs
/// every test; otherwise a note on stderr that the tests needing `what` did NOT run (written
/// past the test harness's capture, so it is seen), and `None`.
///
/// # Panics
/// Under CI, when `var` is unset.
pub fn required_service(var: &str, what: &str) -> Option<String> {
    if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(value);
    }
    assert!(
        !ci_requires_everything(),
        "CI=true but {var} is not set: {what} tests must run in CI (bash scripts/test.sh sets it)"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "note: {what} tests did NOT run: {var} is not set \
         (bash scripts/test.sh starts the service and sets it)"
    );
    None
}

/// The fixture of [`backend_tests!`](crate::backend_tests) for tests that set up their own
/// world (several servers, custom configurations): just the backend. Such a test must itself
/// return when the backend is not available (every fixture of this module gives `None` then).
pub async fn backend(backend: Backend) -> Option<Backend> {
    Some(backend)
}
