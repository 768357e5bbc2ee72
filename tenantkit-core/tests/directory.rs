//! The directory (tenants, users, memberships) and teams, on every backend.

use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    Backend, Email, Error, Limit, Migrations, NewTeam, NewTenant, NewUser, PageRequest, Role, Slug,
    Team, TeamFilter, TeamPatch, TenantScoped, now, with_conn,
};

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &Migrations::new()).await
}

async fn directory_enforces_unique_slugs_and_emails(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let taken = NewTenant {
        name: "Again".into(),
        slug: Some(world.a.tenant.slug.clone()),
    };
    assert!(matches!(
        db.create_tenant(taken).await,
        Err(Error::Conflict(_))
    ));

    let (_tenant, mut tx) = db
        .create_tenant(NewTenant {
            name: "Gamma Corp".into(),
            slug: None,
        })
        .await
        .expect("create");
    let shouting = Email::parse(&world.a.owner.email.as_str().to_uppercase()).expect("email");
    let dup = tx
        .create_user(NewUser {
            email: shouting,
            password_hash: None,
        })
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    drop(tx);
    assert!(
        db.find_tenant_by_slug(&Slug::parse("gamma-corp").expect("slug"))
            .await
            .expect("find")
            .is_none(),
        "a failed signup leaves no tenant behind"
    );

    // A user in two tenants sees both memberships, and only theirs.
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    tx.add_member(world.a.owner.id, Role::Viewer)
        .await
        .expect("add");
    tx.commit().await.expect("commit");

    // A transaction with a failed statement never commits half of its work, on any backend.
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    let stray = Email::parse("stray@example.test").expect("email");
    tx.create_user(NewUser {
        email: stray.clone(),
        password_hash: None,
    })
    .await
    .expect("user");
    tx.add_member(world.a.owner.id, Role::Admin)
        .await
        .map(drop)
        .expect_err("already a member");
    assert!(matches!(tx.commit().await, Err(Error::Aborted)));
    assert!(
        db.find_user_by_email(&stray).await.expect("find").is_none(),
        "first write rolled back"
    );
    let memberships = db
        .memberships_of(world.a.owner.id)
        .await
        .expect("memberships");
    let mut got: Vec<_> = memberships.iter().map(|m| (m.tenant_id, m.role)).collect();
    got.sort();
    let mut want = vec![
        (world.a.tenant.id, Role::Owner),
        (world.b.tenant.id, Role::Viewer),
    ];
    want.sort();
    assert_eq!(got, want);
    let found = db
        .find_user_by_email(&world.a.owner.email)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.id, world.a.owner.id);
}

async fn teams_group_members_of_their_own_tenant(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let scope = world.a.scope();
    let (member, _) = world.a.add_user(db, Role::Member).await;
    let mut tx = db.begin(&scope).await.expect("begin");
    let team = Team::create(&mut tx, NewTeam::named(" Design "))
        .await
        .expect("create team");
    assert_eq!(team.name, "Design");
    tx.commit().await.expect("commit");

    // Names are unique per tenant, case-insensitively; another tenant may reuse one.
    let mut tx = db.begin(&scope).await.expect("begin");
    let duplicate = Team::create(&mut tx, NewTeam::named("design")).await;
    assert!(
        matches!(duplicate, Err(Error::Conflict(_))),
        "{duplicate:?}"
    );
    drop(tx);
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    Team::create(&mut tx, NewTeam::named("Design"))
        .await
        .expect("another tenant may use the name");
    // B cannot see, change, join or delete A's team.
    assert_eq!(Team::find(&mut tx, team.id).await.expect("find"), None);
    assert!(matches!(
        Team::update(&mut tx, team.id, None, TeamPatch::default()).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        tx.add_team_member(team.id, world.b.owner.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        Team::delete(&mut tx, team.id, None).await,
        Err(Error::NotFound)
    ));
    tx.commit().await.expect("commit");

    let mut tx = db.begin(&scope).await.expect("begin");
    let added = tx.add_team_member(team.id, member.id).await.expect("add");
    assert_eq!(added.user_id, member.id);
    assert!(matches!(
        tx.add_team_member(team.id, member.id).await,
        Err(Error::Conflict(_))
    ));
    drop(tx);
    let mut tx = db.begin(&scope).await.expect("begin");
    tx.add_team_member(team.id, member.id).await.expect("add");
    // Another tenant's user cannot join, whatever id is sent.
    match tx.add_team_member(team.id, world.b.owner.id).await {
        Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "user_id"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    tx.commit().await.expect("commit");
    // The database refuses it too, past the repository: the composite key pairs the team
    // with a membership of the same tenant (on SQLite, the only wall).
    let mut tx = db.begin(&scope).await.expect("begin");
    let sql = "INSERT INTO team_members (tenant_id, team_id, user_id, added_at) \
               VALUES ($1, $2, $3, $4)";
    let (tenant, at) = (world.a.tenant.id, tenantkit_core::now());
    let smuggled = with_conn!(&mut tx, |c| {
        sqlx::query(sql)
            .bind(tenant)
            .bind(team.id)
            .bind(world.b.owner.id)
            .bind(at)
            .execute(&mut *c)
            .await
            .map(drop)
    });
    let err = smuggled.expect_err("another tenant's user in a team");
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_foreign_key_violation()),
        "{err}"
    );
    drop(tx);

    let mut tx = db.begin(&scope).await.expect("begin");
    let page = PageRequest::first(Limit::new(10).expect("limit"));
    let members = tx.team_members(team.id, page).await.expect("members");
    assert_eq!(members.items.len(), 1);
    let mine = Team::list(
        &mut tx,
        &TeamFilter {
            member: Some(member.id),
        },
        page,
    )
    .await
    .expect("list");
    assert_eq!(mine.items, vec![team.clone()]);
    // Leaving the tenant leaves its teams.
    tx.remove_member(member.id, world.a.owner.id)
        .await
        .expect("remove member");
    let members = tx.team_members(team.id, page).await.expect("members");
    assert!(members.items.is_empty());
    assert!(matches!(
        tx.remove_team_member(team.id, member.id).await,
        Err(Error::NotFound)
    ));
    tx.commit().await.expect("commit");
}

tenantkit_core::backend_tests!(
    fixture = db;
    directory_enforces_unique_slugs_and_emails,
    teams_group_members_of_their_own_tenant,
);

/// Pending invitations are capped per tenant (accepted or expired ones do not count).
async fn pending_invitations_are_capped(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let expires = now() + std::time::Duration::from_secs(3600);
    for n in 0..tenantkit_core::MAX_PENDING_INVITATIONS {
        tx.create_invitation(
            Email::parse(&format!("guest{n}@alpha.test")).expect("email"),
            Role::Viewer,
            Some(world.a.owner.id),
            &n.to_be_bytes(),
            expires,
        )
        .await
        .expect("under the cap");
    }
    let over = tx
        .create_invitation(
            Email::parse("one-too-many@alpha.test").expect("email"),
            Role::Viewer,
            None,
            b"over",
            expires,
        )
        .await;
    assert!(
        matches!(over, Err(tenantkit_core::Error::Conflict(_))),
        "{over:?}"
    );
    tx.commit().await.expect("commit");
    // Another tenant has its own room.
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    tx.create_invitation(
        Email::parse("guest@beta.test").expect("email"),
        Role::Viewer,
        None,
        b"beta",
        expires,
    )
    .await
    .expect("b's own cap");
    tx.commit().await.expect("commit");
}

mod invitations {
    tenantkit_core::backend_tests!(fixture = db; pending_invitations_are_capped);
    use super::{db, pending_invitations_are_capped};
}
