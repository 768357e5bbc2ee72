//! PostgreSQL connection settings and the row-level-security checks made at start-up.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::DatabaseOptions;
use crate::{Error, Result};

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect(url)
        .await?)
}

/// Tenant tables are found in the catalog, not from a list: every table of the current schema
/// with a `tenant_id` column is one, whichever crate's migration made it.
const TENANT_TABLES: &str = "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
            pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
     ORDER BY c.relname";

/// Refuses to serve when row-level security would not be a wall: the role is a superuser or
/// has `BYPASSRLS` (both skip policies), owns a tenant table (an owner could turn RLS off), or
/// a tenant table has RLS not enabled or not forced (its rows would be open to every tenant).
pub(super) async fn check_rls_safe(pool: &PgPool) -> Result<()> {
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let tables: Vec<(String, bool, bool, bool)> =
        sqlx::query_as(TENANT_TABLES).fetch_all(pool).await?;
    let owned: Vec<&str> = tables
        .iter()
        .filter(|(_, _, _, owns)| *owns)
        .map(|(name, ..)| name.as_str())
        .collect();
    let why = if superuser {
        "is a superuser".to_owned()
    } else if bypass {
        "has BYPASSRLS".to_owned()
    } else if !owned.is_empty() {
        format!(
            "owns (or is a member of the owner of) the tenant tables {}",
            owned.join(", ")
        )
    } else {
        String::new()
    };
    if !why.is_empty() {
        return Err(Error::Config(format!(
            "the PostgreSQL role `{role}` {why}, so row-level security would not protect \
             tenants; connect the application as a role that is a member of `tenantkit_app` \
             only, and run migrations with a separate owner role (see README)"
        )));
    }
    let unprotected: Vec<&str> = tables
        .iter()
        .filter(|(_, enabled, forced, _)| !(*enabled && *forced))
        .map(|(name, ..)| name.as_str())
        .collect();
    if !unprotected.is_empty() {
        return Err(Error::Config(format!(
            "tenant tables without row-level security (ENABLE and FORCE): {}; every table with \
             a tenant_id column needs the tenant policy (in its migration: \
             SELECT tenantkit_enable_tenant_rls('<table>');)",
            unprotected.join(", ")
        )));
    }
    Ok(())
}
