//! PostgreSQL connection settings and the row-level-security role check.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::DatabaseOptions;
use crate::{Error, Result};

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect(url)
        .await?)
}

/// Refuses a role for which row-level security would not be a wall: a superuser or a
/// `BYPASSRLS` role skips policies, and a table owner could turn them off.
pub(super) async fn check_rls_safe_role(pool: &PgPool) -> Result<()> {
    let (role, superuser, bypass, owns): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, \
                EXISTS (SELECT 1 FROM pg_catalog.pg_tables t \
                        WHERE t.schemaname = current_schema() \
                          AND t.tablename IN ('memberships', 'projects', 'tasks') \
                          AND pg_catalog.pg_has_role(current_user, t.tableowner, 'USAGE')) \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let why = if superuser {
        "is a superuser"
    } else if bypass {
        "has BYPASSRLS"
    } else if owns {
        "owns (or is a member of the owner of) the tenant tables"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "the PostgreSQL role `{role}` {why}, so row-level security would not protect tenants; \
         connect the application as a role that is a member of `tenantkit_app` only, and run \
         migrations with a separate owner role (see README)"
    )))
}
