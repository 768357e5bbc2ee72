//! Inviting teammates by email, and accepting.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenantkit_core::{
    ClientInfo, Email, Error as CoreError, Invitation, InvitationId, NewUser, Permission,
    Principal, Role, TenantId, TenantScope, TenantTx, UserId, now,
};
use time::OffsetDateTime;

use super::{AuthFlows, SignIn, SignInVia, TokenPair, event};
use crate::{Attempt, AuthMethods, Error, Message, OneTimeToken, Password, Result};

const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whom to invite, with which role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteRequest {
    /// The invitee's email address.
    pub email: String,
    /// The role they get.
    pub role: Role,
}

/// The subject of every invitation email: fixed, so no tenant's free text reaches a subject
/// line (invitations must not become a way to send anyone a message of one's choosing).
pub const INVITATION_SUBJECT: &str = "You have been invited to join a team";

/// A new invitation. Its token is mailed to the invitee and answered to nobody: holding it
/// proves the mailbox, so the inviter cannot accept on the invitee's behalf.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationCreated {
    /// The invitation's id, to revoke it.
    pub id: InvitationId,
    /// Who may accept it.
    pub email: Email,
    /// The role it grants.
    pub role: Role,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The invitation token, and a password when it creates a new account. Its `Debug` hides
/// both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcceptInvitation {
    /// The token from the invitation email.
    #[cfg_attr(feature = "openapi", schema(format = Password))]
    pub token: String,
    /// The new account's password (for an address without an account).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub password: Option<Password>,
}

impl std::fmt::Debug for AcceptInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptInvitation(..)")
    }
}

/// The answer to an accepted invitation: tokens for the tenant just joined.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Joined {
    /// The token pair.
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// The tenant joined.
    pub tenant_id: TenantId,
    /// The role held there.
    pub role: Role,
}

impl AuthFlows {
    /// Invites an address with a role, as `principal` (whose rights are read from the
    /// database, not from the token). Only owners invite owners. The invitation is audited,
    /// its token mailed and answered once.
    ///
    /// # Errors
    /// `forbidden` without the right to manage members (or to grant `owner`);
    /// `validation_failed` for a bad address; `conflict` when the address is already a member.
    #[tracing::instrument(skip_all, fields(tenant = %principal.tenant_id()))]
    pub async fn invite(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        request: InviteRequest,
    ) -> Result<InvitationCreated> {
        principal.require(Permission::ManageMembers)?;
        if request.role == Role::Owner && principal.role() != Role::Owner {
            return Err(CoreError::Forbidden.into());
        }
        let email = Email::parse(&request.email)?;
        self.limits
            .check_invitation(principal.tenant_id(), principal.user_id())
            .await?;
        // Looked up before the write transaction: never hold one connection while taking
        // another.
        let existing = self.db.find_user_by_email(&email).await?;
        let mut tx = self.db.begin(&TenantScope::of(principal)).await?;
        // The inviter's rights as stored now, not as their access token remembers them.
        let inviter_role = tx
            .member(principal.user_id())
            .await?
            .map(|m| m.role)
            .ok_or(CoreError::Forbidden)?;
        if !inviter_role.allows(Permission::ManageMembers)
            || (request.role == Role::Owner && inviter_role != Role::Owner)
        {
            return Err(CoreError::Forbidden.into());
        }
        if let Some(existing) = existing
            && tx.member(existing.id).await?.is_some()
        {
            return Err(CoreError::Conflict("that address is already a member".into()).into());
        }
        let (invitation, mail) = self
            .store_invitation(
                &mut tx,
                client,
                email,
                request.role,
                Some(principal.user_id()),
            )
            .await?;
        tx.commit().await?;
        // Only once committed: a rolled-back invitation sends nothing.
        self.send_in_background(mail);
        Ok(InvitationCreated {
            id: invitation.id,
            email: invitation.email,
            role: invitation.role,
            expires_at: invitation.expires_at,
        })
    }

    /// Stores an invitation in `tx` (sent by `invited_by`, or the operator), audits it and
    /// answers the mail that carries its token: the only place the token ever goes. The caller
    /// sends it once `tx` has committed. No free text of the tenant's goes into the subject.
    pub(super) async fn store_invitation(
        &self,
        tx: &mut TenantTx,
        client: &ClientInfo,
        email: Email,
        role: Role,
        invited_by: Option<UserId>,
    ) -> Result<(Invitation, Message)> {
        if let Some(limit) = &self.seats
            && let Some(seats) = limit.seats(tx).await?
            && tx.seats_in_use().await? >= seats
        {
            return Err(CoreError::QuotaExceeded(format!(
                "the tenant's plan has {seats} seats, all taken by members and pending \
                 invitations; upgrade the plan or withdraw invitations"
            ))
            .into());
        }
        let token = OneTimeToken::generate();
        let invitation = tx
            .create_invitation(
                email,
                role,
                invited_by,
                &token.hash(),
                now() + INVITATION_TTL,
            )
            .await?;
        let entry = event(
            client,
            "invitation.created",
            invited_by,
            "invitation",
            invitation.id,
        )
        .details(serde_json::json!({
            "email": invitation.email, "role": invitation.role, "by_operator": invited_by.is_none(),
        }));
        tx.audit(entry).await?;
        let tenant = tx.tenant().await?;
        let mail = Message {
            to: invitation.email.to_string(),
            subject: INVITATION_SUBJECT.to_owned(),
            body: format!(
                "You were invited to join the workspace \"{}\" as {}. Accept within 7 days:\n\n\
                 {}/accept-invitation?token={}\n\nIf you did not expect this, ignore this email.\n",
                tenant.name.chars().take(80).collect::<String>(),
                invitation.role,
                self.public_url,
                token.expose()
            ),
        };
        Ok((invitation, mail))
    }

    /// Accepts an invitation. A new address creates its account (with `password`); an
    /// existing account must be the caller (`caller`, from its own bearer token). The
    /// invitation is only as good as its sender's rights are now.
    ///
    /// # Errors
    /// `validation_failed` on `token` (invalid, used, revoked, expired, or its sender lost the
    /// right) or `password`; [`Error::LoginRequired`] when the address has an account and no
    /// token was sent; `forbidden` when signed in as someone else;
    /// [`Error::InsufficientAuthentication`] when the account has a second factor on, or the
    /// tenant requires one, and the caller's session did not give it. A new account joining a
    /// tenant that requires a second factor joins, and the answer is
    /// [`SignIn::MfaEnrollmentRequired`] (enroll, then sign in).
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        client: &ClientInfo,
        caller: Option<&Principal>,
        request: AcceptInvitation,
    ) -> Result<SignIn<Joined>> {
        self.limits
            .check(Attempt::AcceptInvitation, client.ip)
            .await?;
        let token = OneTimeToken::new(request.token);
        let invalid = || CoreError::invalid("token", "is invalid, expired or already used");
        let invitation = self
            .db
            .find_open_invitation(&token.hash(), now())
            .await?
            .ok_or_else(invalid)?;
        let existing = self.db.find_user_by_email(&invitation.email).await?;
        let new_password = match (caller, &existing) {
            (Some(caller), Some(account)) if caller.user_id() == account.id => {
                // No new session from the token of a revoked one.
                self.require_live_session(caller).await?;
                None
            }
            // Signed in as someone else: this invitation is not theirs.
            (Some(_), _) => return Err(CoreError::Forbidden.into()),
            // The address has an account: only that account may accept.
            (None, Some(_)) => return Err(Error::LoginRequired),
            (None, None) => {
                let password = request.password.ok_or_else(|| {
                    CoreError::invalid("password", "is required for a new account")
                })?;
                Some(self.passwords.hash_new(&password, "password").await?)
            }
        };
        // A signed-in account with a second factor on, or joining a tenant that requires
        // one, joins only from a session that gave it: refused before anything is accepted
        // (the sign-in at the end would otherwise stop at the second factor after the
        // membership was made). A new account joining such a tenant is accepted, and its
        // sign-in answers `MfaEnrollmentRequired`.
        // A signed-in caller's methods, less what another tenant's provider vouched for.
        let amr = caller.map_or_else(AuthMethods::password, |c| {
            AuthMethods::new(c.amr()).in_another_tenant()
        });
        let policy = self.policy_of(invitation.tenant_id).await?;
        if let Some(account) = &existing
            && !super::policy::TenantPolicy::second_factor(amr.as_slice())
            && (policy.mfa_required || self.has_second_factor(account.id).await?)
        {
            return Err(Error::InsufficientAuthentication(tenantkit_core::amr::OTP));
        }
        // A tenant that signs in through its identity provider takes new members from it
        // (just in time), not by invitation with a password; an owner's invitation stands.
        if policy.sso_required
            && invitation.role != Role::Owner
            && !amr.contains(tenantkit_core::amr::SSO)
        {
            return Err(Error::SsoRequired);
        }
        // The tenant comes from the stored invitation, which the token proved.
        let mut tx = self
            .db
            .begin(&TenantScope::for_system(invitation.tenant_id))
            .await?;
        if !tx.accept_invitation(invitation.id, now()).await? {
            return Err(invalid().into());
        }
        // A demoted or removed admin's pending invitations die with their rights (the
        // operator's stand as long as they are open).
        let inviter_role = match invitation.invited_by {
            Some(inviter) => tx.member(inviter).await?.map(|m| m.role),
            None => None,
        };
        let still_allowed = invitation.by_operator
            || inviter_role.is_some_and(|role| {
                role.allows(Permission::ManageMembers)
                    && (invitation.role != Role::Owner || role == Role::Owner)
            });
        if !still_allowed {
            return Err(invalid().into());
        }
        let user = match (existing, new_password) {
            (Some(account), _) => account,
            (None, hash) => {
                tx.create_user(NewUser {
                    email: invitation.email.clone(),
                    password_hash: hash,
                })
                .await?
            }
        };
        let membership = tx.add_member(user.id, invitation.role).await?;
        // The token only ever travelled by mail to this address: holding it proves the
        // mailbox, so the address is verified (an unverified account that someone else
        // registered for it can only get here by also knowing its password).
        tx.mark_email_verified(user.id, now()).await?;
        let entry = event(
            client,
            "invitation.accepted",
            Some(user.id),
            "invitation",
            invitation.id,
        );
        tx.audit(entry).await?;
        let change = super::MemberChange {
            kind: super::MemberChangeKind::Added,
            user_id: user.id,
            role: membership.role,
            previous: None,
            by: None,
        };
        self.member_changed(&mut tx, change).await?;
        tx.commit().await?;
        // A new account proved its password here; a signed-in caller keeps how its own
        // session signed in (its verified token's amr).
        let signed_in = self
            .complete_sign_in(client, &user, &membership, amr, None, SignInVia::Invitation)
            .await?;
        Ok(signed_in.map(|done| Joined {
            tokens: done.tokens,
            tenant_id: membership.tenant_id,
            role: membership.role,
        }))
    }
}
