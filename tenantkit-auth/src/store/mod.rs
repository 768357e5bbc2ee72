//! This crate's tables (login sessions, refresh tokens, mailed tokens) on tenantkit-core's
//! database, and their migrations.

pub(crate) mod mail_tokens;
pub(crate) mod sessions;

pub use mail_tokens::TokenPurpose;

/// tenantkit-auth's migrations (versions 2000–2999): sessions, refresh tokens and mailed
/// tokens. Add them to the application's registry:
/// `Migrations::new().with(tenantkit_auth::migrations())`.
pub fn migrations() -> tenantkit_core::MigrationSet {
    // Versions 2001 and 2002 split wave-1's single stream (its migrations 2 and 3).
    tenantkit_core::migration_set!("tenantkit-auth")
        .replacing(2001, &[2])
        .replacing(2002, &[3])
}
