//! Signing in in two steps, on both backends: `check_credentials` proves who asks and starts
//! nothing; `complete_sign_in` is the one step signup, login, tenant switch and accepting an
//! invitation all end with, so each of them starts the same kind of session (with its
//! methods, under the user's credentials epoch) and writes the audit entries it always wrote.

use tenantkit_auth::flows::{LoginRequest, SignIn, SignInVia, SwitchTenant, TokenPair};
use tenantkit_auth::{AuthMethods, Error, Password, SessionRecord};
use tenantkit_core::{AuditEntry, NewTenant, Principal, Role, TenantId, TenantScope};

mod support;

use support::{Flows, PASSWORD};

impl Flows {
    async fn sign_up(&self, email: &str, tenant: &str) -> TokenPair {
        self.signed_up(email, tenant).await.tokens
    }

    fn login_request(email: &str) -> LoginRequest {
        LoginRequest {
            email: email.into(),
            password: Password::new(PASSWORD),
            tenant: None,
        }
    }

    /// The caller of `tokens`, and the session they belong to, which must match it.
    async fn session_of(&self, tokens: &TokenPair) -> (Principal, SessionRecord) {
        let principal = (self.flows.tokens())
            .verify(&tokens.access_token)
            .expect("verify");
        let session = (self.flows.sessions())
            .session(principal.session_id())
            .await
            .expect("read")
            .expect("the session exists");
        assert_eq!(session.user_id, principal.user_id());
        assert_eq!(session.tenant_id, principal.tenant_id());
        assert_eq!(session.revoked_at, None);
        assert_eq!(
            principal.amr(),
            session.amr.as_slice(),
            "the token carries its session's methods"
        );
        let user = (self.flows.db())
            .find_user(principal.user_id())
            .await
            .expect("read")
            .expect("user");
        assert_eq!(session.credentials_epoch, user.credentials_epoch);
        (principal, session)
    }

    async fn audit_log(&self, tenant: TenantId) -> Vec<AuditEntry> {
        let mut tx = (self.flows.db())
            .begin(&TenantScope::for_system(tenant))
            .await
            .expect("begin");
        let entries = tx.audit_entries(0, 1000).await.expect("entries");
        tx.commit().await.expect("commit");
        entries
    }

    /// The actions audited in `tenant` about `session` (what a sign-in adds there).
    async fn audited_about(&self, tenant: TenantId, session: &SessionRecord) -> Vec<String> {
        let id = session.id.to_string();
        (self.audit_log(tenant).await.into_iter())
            .filter(|e| e.target_type.as_deref() == Some("session"))
            .filter(|e| e.target_id.as_deref() == Some(id.as_str()))
            .map(|e| e.action)
            .collect()
    }

    async fn actions(&self, tenant: TenantId) -> Vec<String> {
        (self.audit_log(tenant).await.into_iter())
            .map(|e| e.action)
            .collect()
    }
}

/// Signup, login, tenant switch and invitation accept each start a session in the tenant of
/// the answer, with the methods of the sign-in (`pwd`) on the session and in its tokens, under
/// the user's current credentials epoch; each writes exactly the audit entries it wrote
/// before the shared step existed (`auth.signup`, `auth.login`, `auth.tenant_switched`,
/// `invitation.accepted`), and a derived session ends no later than its parent.
async fn every_flow_signs_in_through_the_shared_step(f: Flows) {
    // Signup: the owner's session; its entry is the signup's own, about the user.
    let owner_tokens = f.sign_up("owner@example.com", "Shared Step").await;
    let (owner, owner_session) = f.session_of(&owner_tokens).await;
    assert_eq!(owner_session.amr, AuthMethods::password(), "signup");
    assert_eq!(owner.role(), Role::Owner);
    let tenant = owner.tenant_id();
    assert_eq!(f.actions(tenant).await, ["auth.signup"]);
    assert!(f.audited_about(tenant, &owner_session).await.is_empty());

    // Login: `auth.login` about the new session, once.
    let logged_in = (f.flows)
        .login(&f.client, Flows::login_request("owner@example.com"))
        .await
        .expect("login")
        .into_complete()
        .expect("no second factor");
    let (_, login_session) = f.session_of(&logged_in.tokens).await;
    assert_eq!(login_session.amr, AuthMethods::password(), "login");
    assert_eq!(login_session.tenant_id, tenant);
    assert_eq!(
        f.audited_about(tenant, &login_session).await,
        ["auth.login"]
    );
    assert_eq!(logged_in.memberships.len(), 1);

    // Accepting an invitation with a new account: the acceptance's own entry, no other.
    let (invited, joined) = f.invite_and_accept(&owner, "new@example.com").await;
    let (member, joined_session) = f.session_of(&joined.tokens).await;
    assert_eq!(joined_session.amr, AuthMethods::password(), "accept");
    assert_eq!((joined.tenant_id, joined.role), (tenant, Role::Member));
    assert_eq!(member.role(), Role::Member);
    assert!(f.audited_about(tenant, &joined_session).await.is_empty());
    let accepted: Vec<_> = (f.audit_log(tenant).await.into_iter())
        .filter(|e| e.action == "invitation.accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].target_id, Some(invited.id.to_string()));

    // Tenant switch: the member's second tenant (created for them by an operator-style
    // membership), derived from the accepted session.
    let (second, mut tx) = (f.flows.db())
        .create_tenant(NewTenant {
            name: "Second".into(),
            slug: None,
        })
        .await
        .expect("tenant");
    tx.add_member(member.user_id(), Role::Admin)
        .await
        .expect("member");
    tx.commit().await.expect("commit");
    let switched = (f.flows)
        .switch_tenant(
            &f.client,
            &member,
            SwitchTenant {
                tenant_id: second.id.to_string(),
            },
        )
        .await
        .expect("switch");
    let (in_second, switched_session) = f.session_of(&switched).await;
    assert_eq!(in_second.tenant_id(), second.id);
    assert_eq!(in_second.role(), Role::Admin);
    assert_eq!(switched_session.amr, joined_session.amr, "switch keeps amr");
    assert!(switched_session.expires_at <= joined_session.expires_at);
    assert_eq!(
        f.audited_about(second.id, &switched_session).await,
        ["auth.tenant_switched"]
    );
    assert!(f.audited_about(tenant, &switched_session).await.is_empty());
}

/// `check_credentials` starts no session and audits nothing; `complete_sign_in` then starts
/// one with the methods it is given (another crate's second factor, say), audited as a login.
async fn the_two_steps_compose(f: Flows) {
    let owner_tokens = f.sign_up("steps@example.com", "Two Steps").await;
    let (owner, _) = f.session_of(&owner_tokens).await;
    let before = f.actions(owner.tenant_id()).await;

    let checked = (f.flows)
        .check_credentials(&f.client, &Flows::login_request("steps@example.com"))
        .await
        .expect("credentials");
    assert_eq!(checked.user.id, owner.user_id());
    assert_eq!(checked.membership.tenant_id, owner.tenant_id());
    assert_eq!(checked.amr, AuthMethods::password());
    assert_eq!(
        f.actions(owner.tenant_id()).await,
        before,
        "nothing audited"
    );

    let wrong = (f.flows)
        .check_credentials(
            &f.client,
            &LoginRequest {
                password: Password::new("not the password at all"),
                ..Flows::login_request("steps@example.com")
            },
        )
        .await;
    assert!(matches!(wrong, Err(Error::InvalidCredentials)), "{wrong:?}");

    let amr = AuthMethods::new(["pwd", "otp"]);
    let outcome = (f.flows)
        .complete_sign_in(
            &f.client,
            &checked.user,
            &checked.membership,
            amr.clone(),
            None,
            SignInVia::Login,
        )
        .await
        .expect("sign in");
    let SignIn::Complete(signed_in) = outcome else {
        panic!("nothing asks for a second factor yet");
    };
    let (principal, session) = f.session_of(&signed_in.tokens).await;
    assert_eq!(session, signed_in.session);
    assert_eq!(session.amr, amr);
    assert_eq!(principal.amr(), ["pwd", "otp"]);
    assert_eq!(signed_in.role, Role::Owner);
    assert_eq!(
        f.audited_about(owner.tenant_id(), &session).await,
        ["auth.login"]
    );
}

/// A derived sign-in must be the parent's user with the parent's methods, and a membership
/// must be the user's own: anything else is refused before a session starts.
async fn complete_sign_in_refuses_mismatched_inputs(f: Flows) {
    let ada_tokens = f.sign_up("ada@example.com", "Ada").await;
    let bob_tokens = f.sign_up("bob@example.com", "Bob").await;
    let (_, ada_session) = f.session_of(&ada_tokens).await;
    let (bob, _) = f.session_of(&bob_tokens).await;
    let ada = (f.flows)
        .check_credentials(&f.client, &Flows::login_request("ada@example.com"))
        .await
        .expect("ada");
    let bob_membership = (f.flows.db())
        .membership_of(bob.user_id(), bob.tenant_id())
        .await
        .expect("read")
        .expect("bob's membership");
    let before = f.actions(bob.tenant_id()).await;

    let someone_elses_membership = (f.flows)
        .complete_sign_in(
            &f.client,
            &ada.user,
            &bob_membership,
            AuthMethods::password(),
            None,
            SignInVia::Login,
        )
        .await;
    assert!(
        matches!(
            someone_elses_membership,
            Err(Error::Core(tenantkit_core::Error::Forbidden))
        ),
        "{someone_elses_membership:?}"
    );
    let more_than_the_parent = (f.flows)
        .complete_sign_in(
            &f.client,
            &ada.user,
            &ada.membership,
            AuthMethods::new(["pwd", "otp"]),
            Some(&ada_session),
            SignInVia::TenantSwitch,
        )
        .await;
    assert!(
        matches!(
            more_than_the_parent,
            Err(Error::Core(tenantkit_core::Error::Forbidden))
        ),
        "{more_than_the_parent:?}"
    );
    assert_eq!(f.actions(bob.tenant_id()).await, before);
    assert_eq!(
        f.actions(ada.membership.tenant_id).await,
        ["auth.signup"],
        "no sign-in was audited"
    );
}

tenantkit_core::backend_tests!(
    fixture = support::flows;
    every_flow_signs_in_through_the_shared_step,
    the_two_steps_compose,
    complete_sign_in_refuses_mismatched_inputs
);
