//! One revocation path, on both backends: every site that ends sessions (logout, logout
//! everywhere, password change and reset, demotion, removal, the operator's tenant deletion)
//! publishes the sessions it ended on the revocation bus, only after its commit; and a strict
//! session check listening to the bus refuses a token right after logout, whatever its TTL.

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::flows::{ChangePassword, LoginRequest, ResetConfirm, ResetRequest};
use tenantkit_auth::{
    CachedSessionCheck, Password, RefreshToken, Revocation, RevocationScope, SessionState,
};
use tenantkit_core::testing::TwoTenants;
use tenantkit_core::{ManualClock, Principal, Role, SessionId};
use tokio::sync::broadcast;

mod support;

use support::{Flows, PASSWORD};

impl Flows {
    /// The revocation bus this fixture subscribed to.
    fn bus(&mut self) -> &mut broadcast::Receiver<Arc<Revocation>> {
        self.revocations.as_mut().expect("subscribed to the bus")
    }

    /// The message the last call published: it is on the bus when the call returns.
    fn heard(&mut self, site: &str) -> Arc<Revocation> {
        let message = self
            .bus()
            .try_recv()
            .unwrap_or_else(|err| panic!("{site}: nothing on the bus ({err:?})"));
        assert!(
            self.bus().try_recv().is_err(),
            "{site}: one message per revocation"
        );
        message
    }

    fn nothing_heard(&mut self, what: &str) {
        assert!(
            matches!(
                self.bus().try_recv(),
                Err(broadcast::error::TryRecvError::Empty)
            ),
            "{what}: published"
        );
    }

    async fn sign_up(&self, email: &str) -> (Principal, RefreshToken) {
        let signed_up = self.signed_up(email, "Revocations").await;
        self.signed_in(&signed_up.tokens)
    }

    async fn log_in(&self, email: &str, password: &str) -> (Principal, RefreshToken) {
        let logged_in = self
            .flows
            .login(
                &self.client,
                LoginRequest {
                    email: email.into(),
                    password: Password::new(password),
                    tenant: None,
                },
            )
            .await
            .expect("login")
            .into_complete()
            .expect("no second factor");
        self.signed_in(&logged_in.tokens)
    }

    fn signed_in(&self, tokens: &tenantkit_auth::flows::TokenPair) -> (Principal, RefreshToken) {
        let principal = self
            .flows
            .tokens()
            .verify(&tokens.access_token)
            .expect("verify");
        (principal, RefreshToken::new(tokens.refresh_token.clone()))
    }
}

fn sorted(mut sessions: Vec<SessionId>) -> Vec<SessionId> {
    sessions.sort();
    sessions
}

/// Logout, a password change and logout everywhere each publish the sessions they ended.
async fn logout_password_change_and_logout_all_publish(mut f: Flows) {
    let email = "sites@example.com";
    let (owner, _) = f.sign_up(email).await;
    let (laptop, laptop_refresh) = f.log_in(email, PASSWORD).await;
    let (phone, _) = f.log_in(email, PASSWORD).await;
    f.nothing_heard("sign-ins");

    f.flows
        .logout(&f.client, &laptop_refresh)
        .await
        .expect("logout");
    let logout = f.heard("logout");
    assert_eq!(logout.sessions, [laptop.session_id()]);
    assert_eq!(logout.scope, RevocationScope::Session(laptop.session_id()));
    assert_eq!(logout.reason, "logout");

    let new_password = "a different horse battery staple";
    f.flows
        .change_password(
            &f.client,
            &owner,
            ChangePassword {
                current_password: Password::new(PASSWORD),
                new_password: Password::new(new_password),
            },
        )
        .await
        .expect("change password");
    let change = f.heard("password change");
    assert_eq!(
        change.sessions,
        [phone.session_id()],
        "every other live session, not the caller's"
    );
    assert_eq!(change.reason, "password_changed");
    assert_eq!(
        change.scope,
        RevocationScope::User {
            user: owner.user_id(),
            tenant: None,
            except: Some(owner.session_id()),
        }
    );

    let (tablet, _) = f.log_in(email, new_password).await;
    let ended = f
        .flows
        .logout_all(&f.client, &owner)
        .await
        .expect("logout all");
    let everywhere = f.heard("logout everywhere");
    assert_eq!(
        sorted(everywhere.sessions.clone()),
        sorted(vec![owner.session_id(), tablet.session_id()])
    );
    assert_eq!(ended, 2);
    assert_eq!(everywhere.reason, "logout_all");
}

/// A password reset publishes every session of the user.
async fn a_password_reset_publishes(mut f: Flows) {
    let email = "reset@example.com";
    let (owner, _) = f.sign_up(email).await;
    let (other, _) = f.log_in(email, PASSWORD).await;
    let mailed_before = f.mailer.sent().len();
    f.flows
        .request_password_reset(
            &f.client,
            ResetRequest {
                email: email.into(),
            },
        )
        .await
        .expect("request");
    // The mail is sent by a task of its own: wait for it (a hang guard, not a deadline).
    let body = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let sent = f.mailer.sent();
            if sent.len() > mailed_before
                && let Some(message) = sent.into_iter().last()
            {
                return message.body;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("hang guard: the reset mail was sent");
    let token = body
        .split("token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a token in the mail")
        .to_owned();
    f.nothing_heard("the reset request");
    f.flows
        .confirm_password_reset(
            &f.client,
            ResetConfirm {
                token,
                new_password: Password::new("a brand new passphrase here"),
            },
        )
        .await
        .expect("reset");
    let reset = f.heard("password reset");
    assert_eq!(
        sorted(reset.sessions.clone()),
        sorted(vec![owner.session_id(), other.session_id()])
    );
    assert_eq!(reset.reason, "password_reset");
}

/// A demotion and a removal publish the member's sessions in that tenant, and the operator's
/// tenant deletion every session of the tenant.
async fn membership_changes_and_tenant_deletion_publish(mut f: Flows) {
    let db = f.test_db.db.clone();
    let world = TwoTenants::create(&db).await;
    let (member, _) = world.a.add_user(&db, Role::Admin).await;
    let sessions = f.flows.sessions().clone();
    let start = |user, tenant| {
        let sessions = sessions.clone();
        async move { sessions.start(user, tenant, 0).await.expect("session").0.id }
    };
    let in_a = start(member.id, world.a.tenant.id).await;

    f.flows
        .change_member_role(&f.client, &world.a.principal, member.id, Role::Member)
        .await
        .expect("demote");
    let demoted = f.heard("demotion");
    assert_eq!(demoted.sessions, [in_a]);
    assert_eq!(demoted.reason, "demoted");
    assert_eq!(
        demoted.scope,
        RevocationScope::User {
            user: member.id,
            tenant: Some(world.a.tenant.id),
            except: None,
        }
    );

    let again = start(member.id, world.a.tenant.id).await;
    f.flows
        .remove_member(&f.client, &world.a.principal, member.id)
        .await
        .expect("remove");
    let removed = f.heard("removal");
    assert_eq!(removed.sessions, [again]);
    assert_eq!(removed.reason, "removed");

    let owners = start(world.a.owner.id, world.a.tenant.id).await;
    let elsewhere = start(world.b.owner.id, world.b.tenant.id).await;
    f.flows
        .delete_tenant(&f.client, world.a.tenant.slug.as_str())
        .await
        .expect("delete tenant");
    let deleted = f.heard("tenant deletion");
    assert_eq!(deleted.sessions, [owners]);
    assert_eq!(deleted.scope, RevocationScope::Tenant(world.a.tenant.id));
    assert_eq!(deleted.reason, "tenant_deleted");
    assert!(
        !sessions.is_over(elsewhere).await.expect("check"),
        "another tenant's session"
    );
}

/// A revocation written in a transaction that rolls back is neither kept nor published.
async fn a_rolled_back_revocation_is_not_published(mut f: Flows) {
    let (owner, _) = f.sign_up("rollback@example.com").await;
    let mut tx = f.test_db.db.begin_system().await.expect("begin");
    let revoked = (f.flows.sessions().revocations())
        .revoke_in(
            &mut tx,
            RevocationScope::Session(owner.session_id()),
            "logout",
            tenantkit_core::now(),
        )
        .await
        .expect("revoke");
    assert_eq!(revoked, [owner.session_id()]);
    drop(tx);
    f.nothing_heard("a rolled-back revocation");
    assert!(
        !f.flows
            .sessions()
            .is_over(owner.session_id())
            .await
            .expect("check")
    );
}

/// A strict check with a cache that never expires (its clock stands still) refuses a token
/// right after logout, and a removed member's token right after the removal, because it
/// listens to the bus; the same cache without the bus still answers from its entry.
async fn a_listening_cache_refuses_a_token_right_after_logout(f: Flows) {
    let (owner, refresh) = f.sign_up("strict@example.com").await;
    let clock = Arc::new(ManualClock::starting_now());
    let inner = Arc::new(f.flows.sessions().clone());
    let revocations = f.flows.sessions().revocations();
    let listening =
        CachedSessionCheck::with_clock(inner.clone(), CachedSessionCheck::MAX_TTL, clock.clone())
            .with_revocations(revocations);
    let deaf = CachedSessionCheck::with_clock(inner, CachedSessionCheck::MAX_TTL, clock);
    for cache in [&listening, &deaf] {
        assert!(matches!(
            cache.check(&owner).await.expect("check"),
            SessionState::Live { .. }
        ));
    }
    f.flows.logout(&f.client, &refresh).await.expect("logout");
    assert_eq!(
        listening.check(&owner).await.expect("check"),
        SessionState::Over,
        "refused at once"
    );
    assert!(
        matches!(
            deaf.check(&owner).await.expect("check"),
            SessionState::Live { .. }
        ),
        "without the bus the cached answer lives for its TTL"
    );

    // A scope without session ids (a custom store's user-wide revocation) evicts too.
    let db = f.test_db.db.clone();
    let world = TwoTenants::create(&db).await;
    let (member, _) = world.a.add_user(&db, Role::Member).await;
    let (session, _) = f
        .flows
        .sessions()
        .start(member.id, world.a.tenant.id, 0)
        .await
        .expect("session");
    let principal = Principal::new(
        member.id,
        world.a.tenant.id,
        Role::Member,
        Vec::<String>::new(),
        session.id,
    );
    assert!(matches!(
        listening.check(&principal).await.expect("check"),
        SessionState::Live { .. }
    ));
    f.flows
        .sessions()
        .revoke_user_in_tenant(member.id, world.a.tenant.id, "removed")
        .await
        .expect("revoke");
    assert_eq!(
        listening.check(&principal).await.expect("check"),
        SessionState::Over
    );
}

tenantkit_core::backend_tests!(
    fixture = support::flows_hearing_revocations;
    logout_password_change_and_logout_all_publish,
    a_password_reset_publishes,
    membership_changes_and_tenant_deletion_publish,
    a_rolled_back_revocation_is_not_published,
    a_listening_cache_refuses_a_token_right_after_logout
);
