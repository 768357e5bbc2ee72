//! Tenants, users and memberships: the directory every login starts from.
//!
//! Tenants and users are global tables (a user may belong to several tenants). Memberships
//! are tenant-owned: they are written through a [`TenantTx`], and read across tenants only
//! for the one user they belong to.

use serde::Serialize;
use time::OffsetDateTime;

use crate::db::{Mode, Settings};
use crate::values::{check_text, finish_validation, now};
use crate::{
    Database, Email, Error, PasswordHash, PlanName, Result, Role, Slug, SystemTx, TenantId,
    TenantTx, UserId, UserTx, with_conn,
};

/// An organisation using the service: the unit of isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Its URL-safe handle, unique and immutable.
    pub slug: Slug,
    /// Its display name.
    pub name: String,
    /// The billing plan it is on (`free` until billing says otherwise).
    pub plan: PlanName,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was deleted (its members removed, its audit chain kept), if it was.
    #[serde(skip)]
    pub deleted_at: Option<OffsetDateTime>,
}

/// The fields of a new tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// The slug; derived from the name when `None`.
    pub slug: Option<Slug>,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The normalized email, unique case-insensitively.
    pub email: Email,
    /// The password hash; `None` for accounts that only sign in with SSO. Never serialized.
    #[serde(skip)]
    pub password_hash: Option<PasswordHash>,
    /// When the email was verified, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub email_verified_at: Option<OffsetDateTime>,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Moves on with every password change or reset and "log out everywhere"; sessions made
    /// under an older epoch are not created. Never serialized.
    #[serde(skip)]
    pub credentials_epoch: i64,
}

/// The fields of a new user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The email address.
    pub email: Email,
    /// The password hash, if the account has a password.
    pub password_hash: Option<PasswordHash>,
}

/// A user's role in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Membership {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The member.
    pub user_id: UserId,
    /// The member's role there.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// When the membership began.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub(crate) const TENANT_COLUMNS: &str = "id, slug, name, plan, created_at, deleted_at";
const USER_COLUMNS: &str =
    "id, email, password_hash, email_verified_at, created_at, credentials_epoch";

/// Maps a unique violation to a conflict the client can act on.
pub(crate) fn conflict_as(message: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |err| match Error::from(err) {
        Error::Conflict(_) => Error::Conflict(message.to_owned()),
        other => other,
    }
}

impl Database {
    /// Creates a tenant and returns it with an open transaction scoped to it, so the caller
    /// can add the first owner in the same transaction and commit once.
    ///
    /// # Errors
    /// [`Error::Validation`] for a bad name, [`Error::Conflict`] when the slug is taken.
    #[tracing::instrument(skip_all)]
    pub async fn create_tenant(&self, new: NewTenant) -> Result<(Tenant, TenantTx)> {
        let name = new.name.trim().to_owned();
        let mut errors = Vec::new();
        check_text(&mut errors, "tenant_name", &name, 200);
        finish_validation(errors)?;
        // A slug the caller chose is theirs or a conflict; a derived one (never sent, so never
        // the caller's mistake) moves to a suffixed candidate when taken.
        let derived = new.slug.is_none();
        let mut slug = new.slug.unwrap_or_else(|| Slug::from_name(&name));
        let mut tenant = Tenant {
            id: TenantId::new(),
            slug: slug.clone(),
            name,
            plan: PlanName::free(),
            created_at: now(),
            deleted_at: None,
        };
        let tenant_setting = tenant.id.to_string();
        let conn = self
            .begin_conn(Mode::ReadWrite, Settings::Tenant(&tenant_setting))
            .await?;
        let mut tx = TenantTx::new(
            crate::TenantScope::for_system(tenant.id),
            conn,
            self.audit.clone(),
        );
        for attempt in 0.. {
            tenant.slug = slug.clone();
            // ON CONFLICT DO NOTHING: a taken slug leaves the transaction usable (and needs no
            // read of other tenants' rows, which RLS hides).
            let inserted = with_conn!(&mut tx, |c| {
                sqlx::query(
                    "INSERT INTO tenants (id, slug, name, plan, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (slug) DO NOTHING",
                )
                .bind(tenant.id)
                .bind(&tenant.slug)
                .bind(&tenant.name)
                .bind(&tenant.plan)
                .bind(tenant.created_at)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
            })?;
            if inserted == 1 {
                break;
            }
            if !derived || attempt == 4 {
                return Err(Error::Conflict("this tenant slug is already taken".into()));
            }
            slug = Slug::with_suffix(Slug::from_name(&tenant.name).as_str());
        }
        Ok((tenant, tx))
    }

    /// Finds a tenant by id.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.begin_system_read().await?.find_tenant(id).await
    }

    /// Every tenant id, oldest first (for operator tools such as `audit verify`).
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn tenant_ids(&self) -> Result<Vec<TenantId>> {
        let mut tx = self.begin_system_read().await?;
        Ok(with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
                .fetch_all(c)
                .await
        })?)
    }

    /// Finds a tenant by slug.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>> {
        self.begin_system_read()
            .await?
            .find_tenant_by_slug(slug)
            .await
    }

    /// Finds a user by id.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_user(&self, id: UserId) -> Result<Option<User>> {
        self.begin_system_read().await?.find_user(id).await
    }

    /// Finds a user by email, case-insensitively.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        self.begin_system_read()
            .await?
            .find_user_by_email(email)
            .await
    }

    /// Replaces a user's password hash (after a rehash on login or a password change).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    #[tracing::instrument(skip_all, fields(user = %user))]
    pub async fn set_password_hash(&self, user: UserId, hash: &PasswordHash) -> Result<()> {
        let mut tx = self.begin_system().await?;
        tx.set_password_hash(user, hash).await?;
        tx.commit().await
    }

    /// The membership of `user` in `tenant`, read in the user's own scope (one read: the
    /// refresh path). Unlike [`Database::memberships_of`] it does not look at the tenant: it
    /// serves callers that hold a session in `tenant`, and no session in a deleted tenant
    /// exists (deletion revokes them, and every way to a new one, login, switch and
    /// invitation accept, refuses a deleted tenant).
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn membership_of(
        &self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<Membership>> {
        Ok(self
            .begin_user_read(user)
            .await?
            .memberships()
            .await?
            .into_iter()
            .find(|m| m.tenant_id == tenant))
    }

    /// Every membership of one user in a tenant that is not deleted, across tenants, oldest
    /// first (for login, tenant switching and refresh: a deleted tenant is never offered).
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn memberships_of(&self, user: UserId) -> Result<Vec<Membership>> {
        let memberships = self.begin_user_read(user).await?.memberships().await?;
        if memberships.is_empty() {
            return Ok(memberships);
        }
        // Deleting a tenant removes its memberships; this also holds for any left from before
        // it did. Read in a system transaction: a user's scope cannot see the tenants table.
        let placeholders = (1..=memberships.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT id FROM tenants WHERE deleted_at IS NOT NULL AND id IN ({placeholders})"
        );
        let mut tx = self.begin_system_read().await?;
        let deleted: Vec<TenantId> = with_conn!(&mut tx, |c| {
            let mut query = sqlx::query_scalar(&sql);
            for membership in &memberships {
                query = query.bind(membership.tenant_id);
            }
            query.fetch_all(c).await
        })?;
        Ok(memberships
            .into_iter()
            .filter(|m| !deleted.contains(&m.tenant_id))
            .collect())
    }
}

/// Reads of the global tables, in a system transaction (they have no tenant).
impl SystemTx {
    /// Finds a tenant by id.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_tenant(&mut self, id: TenantId) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        Ok(with_conn!(self, |c| {
            sqlx::query_as(&sql).bind(id).fetch_optional(c).await
        })?)
    }

    /// Finds a tenant by slug.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_tenant_by_slug(&mut self, slug: &Slug) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1");
        Ok(with_conn!(self, |c| {
            sqlx::query_as(&sql).bind(slug).fetch_optional(c).await
        })?)
    }

    /// Finds a user by id.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_user(&mut self, id: UserId) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(with_conn!(self, |c| {
            sqlx::query_as(&sql).bind(id).fetch_optional(c).await
        })?)
    }

    /// Finds a user by email, case-insensitively.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find_user_by_email(&mut self, email: &Email) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = $1");
        Ok(with_conn!(self, |c| {
            sqlx::query_as(&sql).bind(email).fetch_optional(c).await
        })?)
    }

    /// Replaces a user's password hash.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn set_password_hash(&mut self, user: UserId, hash: &PasswordHash) -> Result<()> {
        let updated = with_conn!(self, |c| {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(user)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        if updated == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Moves the user's credentials epoch on (a password change or reset, "log out
    /// everywhere") and returns the new one: sessions made under an older epoch are refused.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn bump_credentials_epoch(&mut self, user: UserId) -> Result<i64> {
        let epoch: Option<i64> = with_conn!(self, |c| {
            sqlx::query_scalar(
                "UPDATE users SET credentials_epoch = credentials_epoch + 1 WHERE id = $1 \
                 RETURNING credentials_epoch",
            )
            .bind(user)
            .fetch_optional(c)
            .await
        })?;
        epoch.ok_or(Error::NotFound)
    }

    /// Records that the user proved their email address (the first time counts).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn mark_email_verified(&mut self, user: UserId, at: OffsetDateTime) -> Result<()> {
        mark_email_verified(self, user, at).await
    }
}

/// Records that `user` proved their email address (the first time counts), in `tx`.
async fn mark_email_verified<T: crate::Transaction>(
    tx: &mut T,
    user: UserId,
    at: OffsetDateTime,
) -> Result<()> {
    let updated = with_conn!(tx, |c| {
        sqlx::query(
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1) WHERE id = $2",
        )
        .bind(at)
        .bind(user)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    if updated == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

impl UserTx {
    /// Every membership row of this transaction's user, across tenants, oldest first; rows
    /// of deleted tenants included (a user's scope cannot read the tenants table): use
    /// [`Database::memberships_of`], which leaves those out, to decide where they may sign in.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn memberships(&mut self) -> Result<Vec<Membership>> {
        let user = self.user_id();
        Ok(with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT tenant_id, user_id, role, created_at FROM memberships \
                 WHERE user_id = $1 ORDER BY created_at, tenant_id",
            )
            .bind(user)
            .fetch_all(c)
            .await
        })?)
    }
}

impl TenantTx {
    /// Creates a user account inside this transaction (users are global; creating one here
    /// lets a signup create tenant, user and membership atomically).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the email is already registered.
    #[tracing::instrument(skip_all)]
    pub async fn create_user(&mut self, new: NewUser) -> Result<User> {
        let user = User {
            id: UserId::new(),
            email: new.email,
            password_hash: new.password_hash,
            email_verified_at: None,
            created_at: now(),
            credentials_epoch: 0,
        };
        with_conn!(self, |c| {
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, email_verified_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.email_verified_at)
            .bind(user.created_at)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(conflict_as("this email address is already registered"))?;
        Ok(user)
    }

    /// Records that `user` proved their email address (the first time counts), inside this
    /// transaction (accepting a mailed invitation proves the mailbox).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn mark_email_verified(&mut self, user: UserId, at: OffsetDateTime) -> Result<()> {
        mark_email_verified(self, user, at).await
    }

    /// Makes `user` a member of this tenant with `role`. A caller adding someone to a tenant
    /// it did not create in this transaction calls [`TenantTx::require_live_tenant`] first
    /// (as [`TenantTx::accept_invitation`] does): nobody joins a deleted tenant. (Even so, a
    /// membership of a deleted tenant is never offered: see [`Database::memberships_of`].)
    ///
    /// # Errors
    /// [`Error::Conflict`] when they already are a member; [`Error::Conflict`] when the user
    /// does not exist.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant_id(), user = %user))]
    pub async fn add_member(&mut self, user: UserId, role: Role) -> Result<Membership> {
        let membership = Membership {
            tenant_id: self.tenant_id(),
            user_id: user,
            role,
            created_at: now(),
        };
        with_conn!(self, |c| {
            sqlx::query(
                "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(membership.tenant_id)
            .bind(membership.user_id)
            .bind(membership.role.as_str())
            .bind(membership.created_at)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(conflict_as("the user is already a member of this tenant"))?;
        Ok(membership)
    }

    /// The membership of `user` in this tenant, if any.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn member(&mut self, user: UserId) -> Result<Option<Membership>> {
        let tenant = self.tenant_id();
        Ok(with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT tenant_id, user_id, role, created_at FROM memberships \
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant)
            .bind(user)
            .fetch_optional(c)
            .await
        })?)
    }
}
