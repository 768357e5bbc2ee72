//! The tenants and callers a test acts as.

use crate::{
    Database, Email, NewTenant, NewUser, Principal, Role, SessionId, Slug, Tenant, TenantScope,
    User,
};

/// One tenant with its owner.
#[derive(Debug, Clone)]
pub struct TenantFixture {
    /// The tenant.
    pub tenant: Tenant,
    /// Its owner.
    pub owner: User,
    /// The owner as a verified caller.
    pub principal: Principal,
}

impl TenantFixture {
    /// Creates a tenant named `name` with an owner `owner@<name>.test`.
    ///
    /// # Panics
    /// When the database refuses (the fixture expects a fresh database).
    pub async fn create(db: &Database, name: &str) -> TenantFixture {
        let (tenant, mut tx) = db
            .create_tenant(NewTenant {
                name: name.to_owned(),
                slug: Some(
                    Slug::parse(&format!(
                        "{name}-{}",
                        &uuid::Uuid::now_v7().simple().to_string()[24..]
                    ))
                    .expect("slug"),
                ),
            })
            .await
            .expect("create tenant");
        let owner = tx
            .create_user(NewUser {
                email: Email::parse(&format!(
                    "owner-{}@{name}.test",
                    uuid::Uuid::now_v7().simple()
                ))
                .expect("email"),
                password_hash: None,
            })
            .await
            .expect("create owner");
        tx.add_member(owner.id, Role::Owner)
            .await
            .expect("add owner");
        tx.commit().await.expect("commit tenant fixture");
        let principal = principal(&tenant, &owner, Role::Owner);
        TenantFixture {
            tenant,
            owner,
            principal,
        }
    }

    /// The owner's tenant scope.
    pub fn scope(&self) -> TenantScope {
        TenantScope::of(&self.principal)
    }

    /// Adds a new user with `role` to this tenant and returns them as a caller.
    ///
    /// # Panics
    /// When the database refuses.
    pub async fn add_user(&self, db: &Database, role: Role) -> (User, Principal) {
        let mut tx = db.begin(&self.scope()).await.expect("begin");
        let user = tx
            .create_user(NewUser {
                email: Email::parse(&format!(
                    "{role}-{}@example.test",
                    uuid::Uuid::now_v7().simple()
                ))
                .expect("email"),
                password_hash: None,
            })
            .await
            .expect("create user");
        tx.add_member(user.id, role).await.expect("add member");
        tx.commit().await.expect("commit");
        let principal = principal(&self.tenant, &user, role);
        (user, principal)
    }
}

/// Two tenants, `a` and `b`, each with an owner: the world every isolation test needs.
#[derive(Debug, Clone)]
pub struct TwoTenants {
    /// The first tenant.
    pub a: TenantFixture,
    /// The second tenant.
    pub b: TenantFixture,
}

impl TwoTenants {
    /// Creates both tenants.
    ///
    /// # Panics
    /// When the database refuses.
    pub async fn create(db: &Database) -> TwoTenants {
        TwoTenants {
            a: TenantFixture::create(db, "alpha").await,
            b: TenantFixture::create(db, "bravo").await,
        }
    }
}

/// A verified caller for `user` in `tenant` with `role`, as the auth layer would build it.
pub fn principal(tenant: &Tenant, user: &User, role: Role) -> Principal {
    Principal::new(
        user.id,
        tenant.id,
        role,
        Vec::<String>::new(),
        SessionId::new(),
    )
}
