//! Credentials epochs and one-transaction credential changes, on both backends, through the
//! flows: a login in flight cannot outlive a password reset, and a password change or reset is
//! all or nothing (new hash, epoch, ended sessions and audit entry).

use tenantkit_auth::flows::{ChangePassword, LoginRequest};
use tenantkit_auth::{Error, Password};
use tenantkit_core::{Backend, Database};

mod support;

use support::{Flows, PASSWORD};

fn db(f: &Flows) -> &Database {
    &f.test_db.db
}

async fn a_session_cannot_be_created_under_an_old_epoch(f: Flows) {
    let signed_up = f.signed_up("inflight@example.com", "Epochs").await;
    let user = signed_up.user.clone();
    // A login read the user (epoch 0) and is still hashing the password...
    let read_epoch = db(&f)
        .find_user(user.id)
        .await
        .expect("find")
        .expect("user")
        .credentials_epoch;
    // ...while the password is reset (or "log out everywhere" runs): the epoch moves on.
    let principal = f
        .flows
        .tokens()
        .verify(&signed_up.tokens.access_token)
        .expect("token");
    f.flows
        .logout_all(&f.client, &principal)
        .await
        .expect("logout everywhere");
    // The login's session, made at its end under the epoch it read, is refused.
    let late = f
        .flows
        .sessions()
        .start(user.id, signed_up.tenant.id, read_epoch)
        .await;
    assert!(matches!(late, Err(Error::CredentialsChanged)), "{late:?}");
    // A login started now works.
    let fresh = f
        .flows
        .login(
            &f.client,
            LoginRequest {
                email: "inflight@example.com".into(),
                password: Password::new(PASSWORD),
                tenant: None,
            },
        )
        .await;
    assert!(fresh.is_ok(), "{fresh:?}");
}

async fn a_session_of_an_old_epoch_stops_refreshing(f: Flows) {
    let signed_up = f.signed_up("stale@example.com", "Epochs").await;
    let refresh = tenantkit_auth::RefreshToken::new(signed_up.tokens.refresh_token.clone());
    // The epoch moves on without the session being revoked (as if revoking had failed):
    // the session still cannot refresh.
    let mut tx = db(&f).begin_system().await.expect("begin");
    tx.bump_credentials_epoch(signed_up.user.id)
        .await
        .expect("bump");
    tx.commit().await.expect("commit");
    assert!(f.flows.sessions().refresh(&refresh).await.is_err());
}

async fn a_failed_password_change_changes_nothing(f: Flows) {
    let signed_up = f.signed_up("atomic@example.com", "Epochs").await;
    let principal = f
        .flows
        .tokens()
        .verify(&signed_up.tokens.access_token)
        .expect("token");
    let other = f
        .flows
        .login(
            &f.client,
            LoginRequest {
                email: "atomic@example.com".into(),
                password: Password::new(PASSWORD),
                tenant: None,
            },
        )
        .await
        .expect("a second session")
        .into_complete()
        .expect("no second factor");
    // The audit entry cannot be written (a trigger makes its insert fail).
    f.test_db
        .execute_as_owner(match f.test_db.backend() {
            Backend::Sqlite => {
                "CREATE TRIGGER no_password_audit BEFORE INSERT ON audit_log \
                 WHEN NEW.action = 'auth.password_changed' \
                 BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END"
            }
            _ => {
                "CREATE FUNCTION no_password_audit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN IF NEW.action = 'auth.password_changed' THEN \
                 RAISE EXCEPTION 'audit unavailable'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER no_password_audit BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION no_password_audit()"
            }
        })
        .await;
    let changed = f
        .flows
        .change_password(
            &f.client,
            &principal,
            ChangePassword {
                current_password: Password::new(PASSWORD),
                new_password: Password::new("an entirely different passphrase"),
            },
        )
        .await;
    assert!(changed.is_err(), "the change failed with its audit entry");
    // Nothing of it happened: the old password still works, the other session still refreshes.
    let login = f
        .flows
        .login(
            &f.client,
            LoginRequest {
                email: "atomic@example.com".into(),
                password: Password::new(PASSWORD),
                tenant: None,
            },
        )
        .await;
    assert!(login.is_ok(), "the old password is unchanged: {login:?}");
    let other_refresh = tenantkit_auth::RefreshToken::new(other.tokens.refresh_token);
    assert!(
        f.flows.sessions().refresh(&other_refresh).await.is_ok(),
        "the other session was not ended"
    );
    let user = db(&f)
        .find_user(signed_up.user.id)
        .await
        .expect("find")
        .expect("user");
    assert_eq!(user.credentials_epoch, 0, "the epoch did not move");
}

/// A reset confirmation with a wrong token costs no password hash: the token is checked
/// first, so guessing tokens cannot be turned into argon2 work.
async fn a_bad_reset_token_costs_no_password_hash(f: Flows) {
    use tenantkit_auth::flows::ResetConfirm;
    f.signed_up("resetter@example.com", "Epochs").await;
    let before = f.flows.passwords().stats();
    for token in ["", "guess", &"A".repeat(43), &"x".repeat(5000)] {
        let refused = f
            .flows
            .confirm_password_reset(
                &f.client,
                ResetConfirm {
                    token: token.to_owned(),
                    new_password: Password::new("a brand new passphrase"),
                },
            )
            .await;
        assert!(
            matches!(&refused, Err(Error::Core(tenantkit_core::Error::Validation(errors))) if errors[0].field == "token"),
            "{refused:?}"
        );
    }
    assert_eq!(
        f.flows.passwords().stats().started,
        before.started,
        "no hash ran"
    );
}

tenantkit_core::backend_tests!(
    fixture = support::flows;
    a_bad_reset_token_costs_no_password_hash,
    a_session_cannot_be_created_under_an_old_epoch,
    a_session_of_an_old_epoch_stops_refreshing,
    a_failed_password_change_changes_nothing,
);
