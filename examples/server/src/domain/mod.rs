//! The example domain: projects and the tasks inside them.
//!
//! It is written exactly as a user's own domain would be, with tenantkit-core's public data
//! layer only: its own ids ([`tenantkit_core::define_id!`]), its own tables and migrations
//! (`examples/server/migrations`, versions 10000 and up, behind row-level security on
//! PostgreSQL), [`tenantkit_core::TenantScoped`] repositories over
//! [`tenantkit_core::TenantTable`], and core's generic team restriction
//! ([`tenantkit_core::Visibility::Team`]) for restricted projects.

mod projects;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;

pub use projects::{NewProject, Project, ProjectFilter, ProjectPatch};
pub use tasks::{NewTask, ParseTaskStatusError, Task, TaskFilter, TaskPatch, TaskStatus};

use tenantkit_core::{MigrationSet, Migrations};

tenantkit_core::define_id!(
    /// Identifies a project, a tenant-owned record.
    ProjectId, "project id"
);
tenantkit_core::define_id!(
    /// Identifies a task inside a project, a tenant-owned record.
    TaskId, "task id"
);

/// The domain's migrations (versions 10000 and up). Versions 10001 and 10002 split wave-1's
/// single stream (the domain half of its migrations 1 and 6).
pub fn migrations() -> MigrationSet {
    tenantkit_core::migration_set!("tenantkit-server domain")
        .replacing(10001, &[1])
        .replacing(10002, &[6])
}

/// The one stream of migrations every database of wave 1 (before each crate owned its tables)
/// was built with, kept byte-identical so such a database first reaches its last wave-1 state
/// and is then adopted by the current sets.
pub fn wave1_migrations() -> MigrationSet {
    MigrationSet::new(
        "wave 1 (history)",
        || sqlx::migrate!("./migrations/wave1/sqlite"),
        || sqlx::migrate!("./migrations/wave1/postgres"),
    )
}

/// Every migration the reference server applies: tenantkit-core, tenantkit-auth,
/// tenantkit-storage, tenantkit-billing and the example domain, able to upgrade a wave-1 database.
pub fn all_migrations() -> Migrations {
    Migrations::new()
        .with(tenantkit_auth::migrations())
        .with(tenantkit_storage::migrations())
        .with(tenantkit_billing::migrations())
        .with(tenantkit_realtime::migrations())
        .with(migrations())
        .upgrading_from(wave1_migrations())
}
