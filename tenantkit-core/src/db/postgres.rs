//! PostgreSQL connection settings and the row-level-security checks made at start-up.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::DatabaseOptions;
use crate::{Error, Result};

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        // No ping before every transaction: it is a whole round trip per request. A
        // connection the server dropped fails its next statement instead (an error answer, not
        // a wrong one), and connections are recycled before servers and proxies tend to drop
        // them.
        .test_before_acquire(false)
        .idle_timeout(std::time::Duration::from_secs(300))
        .max_lifetime(std::time::Duration::from_secs(1800))
        .connect(url)
        .await?)
}

/// Tenant relations are found in the catalog, not from a list: every table (or view) of the
/// current schema with a `tenant_id` column is one, whichever crate's migration made it. For
/// each: its kind, whether RLS is enabled and forced, whether the connecting role owns it,
/// whether a policy compares `tenant_id` with the transaction's tenant, and (views) whether it
/// runs with the invoker's rights (so the tables' RLS applies to it).
const TENANT_RELATIONS: &str = "SELECT c.relname::text AS name, c.relkind::text AS kind, \
            c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, \
            pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owned, \
            EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid \
                    AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) \
                        LIKE '%tenantkit_current_tenant()%') AS tenant_policy, \
            coalesce('security_invoker=true' = ANY (c.reloptions), false) AS security_invoker \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm') \
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) \
     ORDER BY c.relname";

/// Permissive policies that let everything through (`USING (true)`) and apply to the connecting
/// role (to `PUBLIC`, or to a role it is a member of): such a policy would open its table.
const OPEN_POLICIES: &str = "SELECT c.relname::text || '.' || p.polname::text \
     FROM pg_catalog.pg_policy p \
     JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND p.polpermissive \
       AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) = 'true' \
       AND EXISTS (SELECT 1 FROM unnest(p.polroles) r \
                   WHERE r = 0 OR pg_catalog.pg_has_role(current_user, r, 'USAGE')) \
     ORDER BY 1";

/// Refuses to serve when row-level security would not be a wall: the role is a superuser or
/// has `BYPASSRLS` (both skip policies), owns a tenant table (an owner could turn RLS off), a
/// tenant table has RLS not enabled or not forced or no tenant policy (its rows would be open
/// to every tenant, or to none), a view over tenant rows runs with its owner's rights, a policy
/// that lets everything through applies to the role, or there are no tenant tables at all (the
/// migrations were not applied to this schema).
pub(super) async fn check_rls_safe(pool: &PgPool) -> Result<()> {
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let relations: Vec<TenantRelation> = sqlx::query_as(TENANT_RELATIONS).fetch_all(pool).await?;
    let owned: Vec<&str> = relations
        .iter()
        .filter(|r| r.owned)
        .map(|r| r.name.as_str())
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
    let refuse = |what: &str, names: &[&str], fix: &str| {
        Err(Error::Config(format!(
            "{what}: {}; {fix}",
            names.join(", ")
        )))
    };
    if relations.iter().all(|r| r.kind == "v" || r.kind == "m") {
        return Err(Error::Config(
            "no tenant tables (tables with a tenant_id column) in the current schema: apply the \
             migrations (`tenantkit-server migrate`), or check the role's search_path"
                .to_owned(),
        ));
    }
    let tables = || relations.iter().filter(|r| r.kind == "r" || r.kind == "p");
    let unprotected: Vec<&str> = tables()
        .filter(|r| !(r.enabled && r.forced))
        .map(|r| r.name.as_str())
        .collect();
    if !unprotected.is_empty() {
        return refuse(
            "tenant tables without row-level security (ENABLE and FORCE)",
            &unprotected,
            "every table with a tenant_id column needs the tenant policy (in its migration: \
             SELECT tenantkit_enable_tenant_rls('<table>');)",
        );
    }
    let unpoliced: Vec<&str> = tables()
        .filter(|r| !r.tenant_policy)
        .map(|r| r.name.as_str())
        .collect();
    if !unpoliced.is_empty() {
        return refuse(
            "tenant tables without a tenant policy (tenant_id = tenantkit_current_tenant())",
            &unpoliced,
            "add it with SELECT tenantkit_enable_tenant_rls('<table>');",
        );
    }
    let definer_views: Vec<&str> = relations
        .iter()
        .filter(|r| r.kind == "m" || (r.kind == "v" && !r.security_invoker))
        .map(|r| r.name.as_str())
        .collect();
    if !definer_views.is_empty() {
        return refuse(
            "views over tenant rows that bypass row-level security",
            &definer_views,
            "a view must be created WITH (security_invoker = true); materialized views cannot \
             be protected",
        );
    }
    let open: Vec<String> = sqlx::query_scalar(OPEN_POLICIES).fetch_all(pool).await?;
    if !open.is_empty() {
        let names: Vec<&str> = open.iter().map(String::as_str).collect();
        return refuse(
            &format!("policies that let every row through apply to the role `{role}`"),
            &names,
            "such a policy may only name a role the application role is not a member of",
        );
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TenantRelation {
    name: String,
    kind: String,
    enabled: bool,
    forced: bool,
    owned: bool,
    tenant_policy: bool,
    security_invoker: bool,
}
