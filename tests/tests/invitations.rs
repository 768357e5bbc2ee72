//! Inviting a teammate and accepting, and every misuse of an invitation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Principal, Role};
use tenantkit_e2e::TestServer;

async fn send(
    server: &TestServer,
    who: Option<&Principal>,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let body = (!body.is_null()).then_some(body);
    let reply = server.call(who, method, path, body).await;
    (reply.status, reply.body)
}

async fn invite(
    server: &TestServer,
    who: &Principal,
    email: &str,
    role: &str,
) -> (StatusCode, Value) {
    send(
        server,
        Some(who),
        Method::POST,
        "/v1/invitations",
        json!({"email": email, "role": role}),
    )
    .await
}

async fn accept(server: &TestServer, who: Option<&Principal>, body: Value) -> (StatusCode, Value) {
    send(server, who, Method::POST, "/v1/invitations/accept", body).await
}

async fn a_new_teammate_joins_with_the_mailed_token(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (status, invitation) = invite(&server, &owner, "Newbie@Example.com", "member").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    assert_eq!(
        (invitation["email"].as_str(), invitation["role"].as_str()),
        (Some("newbie@example.com"), Some("member"))
    );
    assert!(
        invitation.get("token").is_none(),
        "the token travels only by mail: the inviter cannot accept for the invitee"
    );
    let mailed = server.mailed_token("newbie@example.com", "invited").await;
    let mail = server
        .mailer
        .sent()
        .into_iter()
        .find(|m| m.to == "newbie@example.com")
        .expect("the invitation");
    assert_eq!(mail.subject, tenantkit_auth::flows::INVITATION_SUBJECT);

    // A weak password is refused, and the invitation stays usable.
    let (status, _) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "password1234"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = accept(&server, None, json!({"token": mailed})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a new account needs a password"
    );
    let (status, joined) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["role"], "member");
    let access = joined["access_token"].as_str().expect("access");
    let me = server
        .call_with_token(Some(access), Method::GET, "/v1/me", None)
        .await
        .body;
    assert_eq!(me["tenant"]["id"], json!(server.world.a.tenant.id));
    assert!(
        me["user"]["email_verified_at"].is_string(),
        "only the mailbox saw the token: accepting proves the address"
    );
    // The new member creates a task right away.
    let project = server
        .call_with_token(
            Some(access),
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "First"})),
        )
        .await
        .body;
    let tasks = format!("/v1/projects/{}/tasks", project["id"].as_str().expect("id"));
    let task = server
        .call_with_token(
            Some(access),
            Method::POST,
            &tasks,
            Some(json!({"title": "Say hello"})),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED);

    // Single use.
    let (status, _) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Audited.
    let (_, log) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/audit-log?action=invitation.accepted",
        Value::Null,
    )
    .await;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(1));
}

async fn invitation_misuse_is_refused(server: TestServer) {
    let db = &server.test_db.db;
    let owner = server.world.a.principal.clone();
    let (_, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let (member_user, member) = server.add_user(&server.world.a, Role::Member).await;
    assert_eq!(
        invite(&server, &member, "x@example.com", "viewer").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        invite(&server, &admin, "x@example.com", "owner").await.0,
        StatusCode::FORBIDDEN,
        "admins cannot create owners"
    );
    assert_eq!(
        invite(&server, &owner, "x@example.com", "owner").await.0,
        StatusCode::CREATED,
        "owners can"
    );
    assert_eq!(
        invite(&server, &admin, member_user.email.as_str(), "viewer")
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        invite(&server, &admin, "not-an-email", "viewer").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        invite(&server, &admin, "y@example.com", "god").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // An existing account (B's owner) is invited to A.
    let b_owner = server.with_live_session(&server.world.b.principal).await;
    let b_email = server.world.b.owner.email.to_string();
    let (status, _) = invite(&server, &admin, &b_email, "viewer").await;
    assert_eq!(status, StatusCode::CREATED);
    let token = server.mailed_token(&b_email, "invited").await;
    let (status, body) = accept(
        &server,
        None,
        json!({"token": token, "password": "whatever passphrase"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "must log in as that account"
    );
    let (status, _) = accept(&server, Some(&member), json!({"token": token})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "someone else's invitation");
    let (status, joined) = accept(&server, Some(&b_owner), json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["tenant_id"], json!(server.world.a.tenant.id));
    let memberships = db
        .memberships_of(server.world.b.owner.id)
        .await
        .expect("memberships");
    assert_eq!(memberships.len(), 2, "B's owner is now also A's viewer");
    for garbage in ["", "nope", &"A".repeat(4000)] {
        let (status, _) = accept(
            &server,
            None,
            json!({"token": garbage, "password": "a teammate passphrase"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    a_new_teammate_joins_with_the_mailed_token,
    invitation_misuse_is_refused
);

async fn pending_invitations_can_be_listed_and_revoked(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    let (_, first) = invite(&server, &owner, "one@example.com", "viewer").await;
    let first_token = server.mailed_token("one@example.com", "invited").await;
    invite(&server, &owner, "two@example.com", "member").await;

    let (status, pending) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = pending["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let text = pending.to_string();
    assert!(
        !text.contains(&first_token) && !text.contains("token_hash"),
        "never the token"
    );
    let (status, _) = send(
        &server,
        Some(&member),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let path = format!("/v1/invitations/{}", first["id"].as_str().expect("id"));
    let revoke = server
        .request(&owner, Method::DELETE, &path)
        .send()
        .await
        .expect("send");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let (status, _) = accept(
        &server,
        None,
        json!({"token": first_token, "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a revoked invitation no longer works"
    );
    let again = server
        .request(&owner, Method::DELETE, &path)
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    // Another tenant cannot see or revoke it.
    let (_, second_page) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    let second = second_page["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let foreign = server
        .request(
            &server.world.b.principal,
            Method::DELETE,
            &format!("/v1/invitations/{second}"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let (_, b_list) = send(
        &server,
        Some(&server.world.b.principal),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(b_list["items"], json!([]));
}

mod listing {
    tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server; pending_invitations_can_be_listed_and_revoked);
    use super::pending_invitations_can_be_listed_and_revoked;
}

/// Pre-account hijacking: anyone can register any address, so an account whose address is
/// unproven is unclaimed. The operator "adding" it invites instead of attaching it; only the
/// mailbox gets the token; its owner claims the account by a mailed reset, which ends the
/// squatter's password and sessions; only then does the account join.
async fn an_unverified_account_is_never_attached_to_a_tenant(server: TestServer) {
    use tenantkit_auth::flows::UserAdded;
    use tenantkit_core::ClientInfo;
    const SQUATTER: &str = "the squatter's passphrase";
    let squatter = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/signup",
        json!({"email": "cto@corp.test", "password": SQUATTER, "tenant_name": "Squat", "tenant_slug": "squat"}),
    )
    .await
    .1;
    let slug = server.world.a.tenant.slug.to_string();
    let added = server
        .flows
        .add_user(&ClientInfo::operator(), "cto@corp.test", &slug, Role::Admin)
        .await
        .expect("add the user");
    assert!(
        matches!(
            added,
            UserAdded::Invited {
                mailed: true,
                role: Role::Admin,
                ..
            }
        ),
        "an unverified account is invited, not attached: {added:?}"
    );
    let cto = server
        .test_db
        .db
        .find_user_by_email(&tenantkit_core::Email::parse("cto@corp.test").expect("email"))
        .await
        .expect("lookup")
        .expect("user");
    assert_eq!(
        server
            .test_db
            .db
            .memberships_of(cto.id)
            .await
            .expect("memberships")
            .len(),
        1,
        "still only a member of the squatter's own tenant"
    );
    // The squatter's password gets nothing in A: not by login, not by switching.
    let (status, _) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({"email": "cto@corp.test", "password": SQUATTER, "tenant": slug}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let squatter_access = squatter["access_token"].as_str().expect("token").to_owned();
    let switch = server
        .call_with_token(
            Some(&squatter_access),
            Method::POST,
            "/v1/auth/switch-tenant",
            Some(json!({"tenant_id": server.world.a.tenant.id})),
        )
        .await;
    assert!(switch.status.is_client_error(), "{}", switch.body);
    // The invitation's token went only to the mailbox (the squatter cannot read it), and
    // without it the account cannot accept.
    let token = server.mailed_token("cto@corp.test", "invited").await;
    let (status, _) = accept(&server, None, json!({"token": token})).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the account must sign in first"
    );

    // The mailbox's owner claims the account with a mailed reset...
    let (status, _) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/password-reset/request",
        json!({"email": "cto@corp.test"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let reset = server.mailed_token("cto@corp.test", "Reset").await;
    let (status, _) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/password-reset/confirm",
        json!({"token": reset, "new_password": "the real owner's passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // ...which ends the squatter's password and sessions,
    let (status, _) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({"email": "cto@corp.test", "password": SQUATTER}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/refresh",
        json!({"refresh_token": squatter["refresh_token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // ...and proves the address.
    let (status, owner) = send(
        &server,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({"email": "cto@corp.test", "password": "the real owner's passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{owner}");
    let owner_access = owner["access_token"].as_str().expect("token").to_owned();
    let me = server
        .call_with_token(Some(&owner_access), Method::GET, "/v1/me", None)
        .await
        .body;
    assert!(me["user"]["email_verified_at"].is_string(), "{me}");
    let joined = server
        .call_with_token(
            Some(&owner_access),
            Method::POST,
            "/v1/invitations/accept",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert_eq!(joined.body["role"], "admin");

    // A verified account is attached at once.
    let b_slug = server.world.b.tenant.slug.to_string();
    let added = server
        .flows
        .add_user(
            &ClientInfo::operator(),
            "cto@corp.test",
            &b_slug,
            Role::Viewer,
        )
        .await
        .expect("attach");
    assert!(
        matches!(
            added,
            UserAdded::Attached {
                role: Role::Viewer,
                ..
            }
        ),
        "{added:?}"
    );
    assert_eq!(
        server
            .test_db
            .db
            .memberships_of(cto.id)
            .await
            .expect("memberships")
            .len(),
        3
    );
    // Attaching twice is a conflict, not a second membership.
    let again = server
        .flows
        .add_user(
            &ClientInfo::operator(),
            "cto@corp.test",
            &b_slug,
            Role::Viewer,
        )
        .await;
    assert!(
        matches!(
            again,
            Err(tenantkit_auth::Error::Core(
                tenantkit_core::Error::Conflict(_)
            ))
        ),
        "{again:?}"
    );
}

/// Invitations are no mail cannon: a budget per inviter and per tenant, a fixed subject
/// (never the tenant's free text).
async fn invitations_are_limited_and_carry_no_free_text_in_the_subject(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let spammy = "Cheap pills at spam.example";
    server
        .test_db
        .execute_as_owner(&format!(
            "UPDATE tenants SET name = '{spammy}' WHERE slug = '{}'",
            server.world.a.tenant.slug
        ))
        .await;
    for n in 0..30 {
        let (status, body) =
            invite(&server, &owner, &format!("friend{n}@example.com"), "viewer").await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {body}");
    }
    let (status, body) = invite(&server, &owner, "one-more@example.com", "viewer").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "30 per inviter per hour"
    );
    // Other admins share the tenant's budget of 100 an hour.
    let mut sent = 30;
    'admins: loop {
        let (_, admin) = server.add_user(&server.world.a, Role::Admin).await;
        for n in 0..30 {
            let (status, body) = invite(
                &server,
                &admin,
                &format!("more{sent}-{n}@example.com"),
                "viewer",
            )
            .await;
            if sent == 100 {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
                break 'admins;
            }
            assert_eq!(status, StatusCode::CREATED, "{sent}: {body}");
            sent += 1;
        }
    }
    // Another tenant's budget is its own.
    let (status, _) = invite(
        &server,
        &server.world.b.principal,
        "friend0@example.com",
        "viewer",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Wait for the background deliveries, then look at every subject.
    server.mailed_token("friend0@example.com", "invited").await;
    let mut mails = Vec::new();
    for _ in 0..600 {
        mails = server.mailer.sent();
        if mails.len() >= 101 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(mails.len(), 101);
    for mail in &mails {
        assert_eq!(mail.subject, tenantkit_auth::flows::INVITATION_SUBJECT);
        assert!(!mail.subject.contains("spam"));
    }
}

mod limits {
    tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
        an_unverified_account_is_never_attached_to_a_tenant,
        invitations_are_limited_and_carry_no_free_text_in_the_subject
    );
    use super::{
        an_unverified_account_is_never_attached_to_a_tenant,
        invitations_are_limited_and_carry_no_free_text_in_the_subject,
    };
}

/// One rule for the free plan: a plans file for paid plans only (no `[plans.free]`) leaves the
/// free plan as it is without any plans file: unlimited seats (more than the old built-in
/// five invitations go out) and the server's storage quota.
async fn a_plans_file_without_a_free_plan_keeps_the_free_plan_unlimited(
    backend: tenantkit_core::Backend,
) {
    let plans = tempfile::NamedTempFile::new().expect("plans file");
    std::fs::write(
        plans.path(),
        "[plans.pro]\nstripe_prices = [\"price_pro\"]\nseats = 25\n",
    )
    .expect("write plans");
    let config = tenantkit_server::Config {
        plans_file: Some(plans.path().to_owned()),
        storage_quota_bytes: 123_456_789,
        ..tenantkit_server::Config::default()
    };
    let Some(server) = TestServer::start_with(backend, config).await else {
        return;
    };
    let owner = server.world.a.principal.clone();
    let billing = server
        .call(Some(&owner), Method::GET, "/v1/billing", None)
        .await;
    assert_eq!(billing.status, StatusCode::OK, "{}", billing.body);
    assert_eq!(billing.body["plan"], "free");
    assert_eq!(
        billing.body["entitlements"],
        json!({"seats": null, "storage_bytes": 123_456_789, "features": []}),
        "the same free plan as without a plans file"
    );
    for n in 0..8 {
        let (status, body) =
            invite(&server, &owner, &format!("seat{n}@example.com"), "viewer").await;
        assert_eq!(status, StatusCode::CREATED, "invitation {n}: {body}");
    }
}

mod free_plan {
    tenantkit_core::backend_tests!(fixture = tenantkit_core::testing::backend;
        a_plans_file_without_a_free_plan_keeps_the_free_plan_unlimited
    );
    use super::a_plans_file_without_a_free_plan_keeps_the_free_plan_unlimited;
}
