//! [`backend_tests!`](crate::backend_tests): one test per compiled backend, and the
//! compile-time switches it expands through.

use super::ci_requires_everything;

/// Runs each listed test once per backend, as `sqlite::<test>` and `postgres::<test>`: once per
/// backend tenantkit-core is compiled with ([`Backend::COMPILED`](crate::Backend::COMPILED)), so a one-backend build
/// (`--no-default-features --features sqlite`) has only that backend's tests, and a build with
/// neither has one test saying so ([`no_backend_compiled`]).
///
/// Each test is an `async fn(F)` taking the value its fixture makes; a fixture is an
/// `async fn(Backend) -> Option<F>` that gives `None` (after [`required_service`](super::required_service) said so) when
/// the backend is not available outside CI, and fails the test under `CI=true`. Several groups
/// with different fixtures may share one invocation (one per module). Names resolve from the
/// module the macro is called in.
///
/// ```text
/// async fn db(backend: Backend) -> Option<TestDb> {
///     TestDb::new(backend, &Migrations::new()).await
/// }
///
/// async fn another_tenants_team_is_not_found(test_db: TestDb) { /* ... */ }
///
/// tenantkit_core::backend_tests!(
///     fixture = db; another_tenants_team_is_not_found;
///     fixture = other_fixture; more, tests;
/// );
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($(fixture = $fixture:path; $($test:ident),+ $(,)?);+ $(;)?) => {
        $crate::__tk_if_sqlite! {
            $crate::backend_tests!(@backend sqlite, Sqlite; $(fixture = $fixture; $($test),+);+);
        }
        $crate::__tk_if_postgres! {
            $crate::backend_tests!(@backend postgres, Postgres; $(fixture = $fixture; $($test),+);+);
        }
        $crate::__tk_if_no_backend! {
            // A build without a backend would otherwise run none of these tests in silence.
            #[test]
            fn no_backend_compiled() {
                $crate::testing::no_backend_compiled();
            }
        }
    };
    (@backend $module:ident, $backend:ident; $(fixture = $fixture:path; $($test:ident),+);+) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $($(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(fixture) = $fixture($crate::Backend::$backend).await else {
                        return;
                    };
                    super::$test(fixture).await;
                }
            )+)+
        }
    };
}

/// The test [`backend_tests!`](crate::backend_tests) generates in a build with neither backend
/// compiled: says on stderr that the database tests did NOT run; under `CI=true` it fails.
///
/// # Panics
/// Under CI.
pub fn no_backend_compiled() {
    assert!(
        !ci_requires_everything(),
        "CI=true but neither the `sqlite` nor the `postgres` feature is on: no database test ran"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "note: the database tests did NOT run: enable the `sqlite` or `postgres` feature"
    );
}

#[cfg(feature = "sqlite")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_sqlite {
    ($($item:tt)*) => { $($item)* };
}

#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_sqlite {
    ($($item:tt)*) => {};
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_postgres {
    ($($item:tt)*) => { $($item)* };
}

#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_postgres {
    ($($item:tt)*) => {};
}

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_no_backend {
    ($($item:tt)*) => { $($item)* };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_if_no_backend {
    ($($item:tt)*) => {};
}
