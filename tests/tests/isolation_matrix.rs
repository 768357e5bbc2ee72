//! The isolation matrix: every tenant-scoped route × method × caller, with the expected status
//! computed from the rules (never hand-listed), on both backends.
//!
//! Callers: tenant A's owner, admin, a member in the team, a member outside it, a viewer
//! (outside the team), tenant B's owner, no token, and an expired token. Rules:
//! - no or an expired token: 401;
//! - B's owner on any route naming one of A's records: 404, byte-for-byte the answer for a
//!   random id; on a collection route it works on B's own tenant and sees nothing of A;
//! - A's callers: 403 without the route's permission; 404 (again identical to a random id)
//!   for a restricted project, or its tasks, outside the caller's teams unless they may see
//!   every project; otherwise the route's success status.
//!
//! Every cell gets fresh records, and every refused cell proves nothing of A changed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tenantkit_auth::AccessTokens;
use tenantkit_core::{
    Email, ManualClock, NewTeam, Permission, Principal, Role, Team, TenantScoped, User,
};
use tenantkit_e2e::{Reply, TestServer, create_project, create_task};
use tenantkit_server::domain::{NewProject, NewTask, Project, Task};

/// One route of the contract, as a template over the records of a [`Fixture`].
struct Route {
    method: Method,
    /// With `{project}`, `{restricted}`, `{task}`, `{rtask}`, `{team}`, `{member}`,
    /// `{insider}` or `{invitation}` standing for a fresh record of tenant A.
    path: &'static str,
    /// The JSON body, with `{n}` standing for a number unique to the cell.
    body: Option<&'static str>,
    permission: Permission,
    /// The record is a restricted project or one of its tasks.
    restricted: bool,
    ok: StatusCode,
}

const fn route(
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    permission: Permission,
    ok: u16,
) -> Route {
    let ok = match StatusCode::from_u16(ok) {
        Ok(status) => status,
        Err(_) => panic!("bad status"),
    };
    Route {
        method,
        path,
        body,
        permission,
        restricted: false,
        ok,
    }
}

const fn restricted(mut route: Route) -> Route {
    route.restricted = true;
    route
}

fn routes() -> Vec<Route> {
    use Permission::*;
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    let name = Some(r#"{"name": "Renamed {n}"}"#);
    let title = Some(r#"{"title": "Task {n}"}"#);
    let title_patch = Some(r#"{"title": "Changed {n}", "status": "done"}"#);
    let mut all = vec![
        route(get.clone(), "/v1/me", None, Read, 200),
        route(get.clone(), "/v1/tenant", None, Read, 200),
        route(patch.clone(), "/v1/tenant", name, ManageTenant, 200),
        route(get.clone(), "/v1/members", None, Read, 200),
        route(
            patch.clone(),
            "/v1/members/{member}",
            Some(r#"{"role": "viewer"}"#),
            ManageMembers,
            200,
        ),
        route(
            delete.clone(),
            "/v1/members/{member}",
            None,
            ManageMembers,
            204,
        ),
        route(get.clone(), "/v1/invitations", None, ManageMembers, 200),
        route(
            post.clone(),
            "/v1/invitations",
            Some(r#"{"email": "invitee{n}@matrix.test", "role": "member"}"#),
            ManageMembers,
            201,
        ),
        route(
            delete.clone(),
            "/v1/invitations/{invitation}",
            None,
            ManageMembers,
            204,
        ),
        route(get.clone(), "/v1/audit-log", None, ReadAuditLog, 200),
        route(get.clone(), "/v1/teams", None, Read, 200),
        route(post.clone(), "/v1/teams", name, ManageMembers, 201),
        route(get.clone(), "/v1/teams/{team}", None, Read, 200),
        route(patch.clone(), "/v1/teams/{team}", name, ManageMembers, 200),
        route(delete.clone(), "/v1/teams/{team}", None, ManageMembers, 204),
        route(get.clone(), "/v1/teams/{team}/members", None, Read, 200),
        route(
            post.clone(),
            "/v1/teams/{team}/members",
            Some(r#"{"user_id": "{member}"}"#),
            ManageMembers,
            201,
        ),
        route(
            delete.clone(),
            "/v1/teams/{team}/members/{insider}",
            None,
            ManageMembers,
            204,
        ),
        route(get.clone(), "/v1/projects", None, Read, 200),
        // Lists filtered to the fixture's team: the fresh restricted project is on the page.
        route(get.clone(), "/v1/projects?team_id={team}", None, Read, 200),
        route(get.clone(), "/v1/teams?member={insider}", None, Read, 200),
        route(post.clone(), "/v1/projects", name, WriteContent, 201),
    ];
    // The same routes over an open project and a restricted one.
    for (project, task, is_restricted) in [
        ("{project}", "{task}", false),
        ("{restricted}", "{rtask}", true),
    ] {
        let leak = |path: &str| -> &'static str { Box::leak(path.into()) };
        let project_path = leak(&format!("/v1/projects/{project}"));
        let tasks_path = leak(&format!("/v1/projects/{project}/tasks"));
        let task_path = leak(&format!("/v1/tasks/{task}"));
        let group = [
            route(get.clone(), project_path, None, Read, 200),
            route(patch.clone(), project_path, name, WriteContent, 200),
            route(delete.clone(), project_path, None, WriteContent, 204),
            route(get.clone(), tasks_path, None, Read, 200),
            route(post.clone(), tasks_path, title, WriteContent, 201),
            route(get.clone(), task_path, None, Read, 200),
            route(patch.clone(), task_path, title_patch, WriteContent, 200),
            route(delete.clone(), task_path, None, WriteContent, 204),
        ];
        all.extend(group.into_iter().map(|route| {
            if is_restricted {
                restricted(route)
            } else {
                route
            }
        }));
    }
    all
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Owner,
    Admin,
    /// A member of the fixture's team.
    Insider,
    /// A member outside the team.
    Outsider,
    Viewer,
    OtherTenantOwner,
    NoToken,
    ExpiredToken,
}

const CALLERS: [Caller; 8] = [
    Caller::Owner,
    Caller::Admin,
    Caller::Insider,
    Caller::Outsider,
    Caller::Viewer,
    Caller::OtherTenantOwner,
    Caller::NoToken,
    Caller::ExpiredToken,
];

/// The status the rules give `caller` on `route`.
fn expected(route: &Route, caller: Caller) -> StatusCode {
    let role = match caller {
        Caller::NoToken | Caller::ExpiredToken => return StatusCode::UNAUTHORIZED,
        // A's ids in a query filter just match nothing of B's.
        Caller::OtherTenantOwner
            if route
                .path
                .split('?')
                .next()
                .is_some_and(|p| p.contains('{')) =>
        {
            return StatusCode::NOT_FOUND;
        }
        Caller::OtherTenantOwner | Caller::Owner => Role::Owner,
        Caller::Admin => Role::Admin,
        Caller::Insider | Caller::Outsider => Role::Member,
        Caller::Viewer => Role::Viewer,
    };
    let in_team = caller == Caller::Insider;
    if !role.allows(route.permission) {
        StatusCode::FORBIDDEN
    } else if route.restricted
        && !in_team
        && !role.allows(Permission::AccessAllTeams)
        && caller != Caller::OtherTenantOwner
    {
        StatusCode::NOT_FOUND
    } else {
        route.ok
    }
}

/// Fresh records of tenant A for one cell.
struct Fixture {
    ids: Vec<(&'static str, String)>,
}

impl Fixture {
    fn fill(&self, template: &str, n: usize) -> String {
        let mut text = template.replace("{n}", &n.to_string());
        for (key, id) in &self.ids {
            text = text.replace(key, id);
        }
        text
    }

    /// The same template with every record replaced by a random id.
    fn fill_random(&self, template: &str, n: usize) -> String {
        let mut text = template.replace("{n}", &n.to_string());
        for (key, _) in &self.ids {
            text = text.replace(key, &uuid::Uuid::now_v7().to_string());
        }
        text
    }
}

struct Callers {
    admin: Principal,
    insider: (User, Principal),
    outsider: Principal,
    viewer: Principal,
    expired: String,
}

async fn fixture(server: &TestServer, callers: &Callers, n: usize) -> Fixture {
    let db = &server.test_db.db;
    let owner = &server.world.a;
    let scope = owner.scope();
    let (member, _) = server.add_user(owner, Role::Member).await;
    let mut tx = db.begin(&scope).await.expect("begin");
    let team = Team::create(
        &mut tx,
        NewTeam {
            name: format!("Team {n}"),
            description: None,
        },
    )
    .await
    .expect("team");
    tx.add_team_member(team.id, callers.insider.0.id)
        .await
        .expect("insider");
    let restricted = Project::create(
        &mut tx,
        NewProject {
            name: format!("Restricted {n}"),
            team_id: Some(team.id),
            restricted: true,
            ..NewProject::default()
        },
    )
    .await
    .expect("restricted project");
    let rtask = Task::create(&mut tx, NewTask::new(restricted.id, "secret"))
        .await
        .expect("restricted task");
    // Earlier cells' invitations are withdrawn: a tenant holds at most
    // `MAX_PENDING_INVITATIONS` pending ones, and the matrix has more cells than that.
    let tenant = tx.tenant_id();
    tenantkit_core::with_conn!(&mut tx, |c| {
        sqlx::query("DELETE FROM invitations WHERE tenant_id = $1 AND accepted_at IS NULL")
            .bind(tenant)
            .execute(c)
            .await
            .map(drop)
    })
    .expect("withdraw earlier invitations");
    let email = Email::parse(&format!("pending{n}@matrix.test")).expect("email");
    let expires = tenantkit_core::now() + Duration::from_secs(86_400);
    let invitation = tx
        .create_invitation(
            email,
            Role::Member,
            Some(owner.owner.id),
            &n.to_be_bytes(),
            expires,
        )
        .await
        .expect("invitation");
    tx.commit().await.expect("commit");
    let project = create_project(db, &scope, &format!("Open {n}")).await;
    let task = create_task(db, &scope, project.id, "open").await;
    Fixture {
        ids: vec![
            ("{project}", project.id.to_string()),
            ("{restricted}", restricted.id.to_string()),
            ("{task}", task.id.to_string()),
            ("{rtask}", rtask.id.to_string()),
            ("{team}", team.id.to_string()),
            ("{member}", member.id.to_string()),
            ("{insider}", callers.insider.0.id.to_string()),
            ("{invitation}", invitation.id.to_string()),
        ],
    }
}

/// What tenant A looks like to its owner: every record a refused request might have touched.
async fn snapshot(server: &TestServer, fixture: &Fixture) -> Vec<Reply> {
    let owner = &server.world.a.principal;
    let mut replies = Vec::new();
    for path in [
        "/v1/tenant",
        "/v1/members",
        "/v1/invitations",
        "/v1/teams/{team}",
        "/v1/teams/{team}/members",
        "/v1/projects/{project}",
        "/v1/projects/{restricted}",
        "/v1/projects/{project}/tasks",
        "/v1/projects/{restricted}/tasks",
        "/v1/tasks/{task}",
        "/v1/tasks/{rtask}",
    ] {
        let path = fixture.fill(path, 0);
        replies.push(server.call(Some(owner), Method::GET, &path, None).await);
    }
    replies
}

async fn send(
    server: &TestServer,
    callers: &Callers,
    caller: Caller,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let world = &server.world;
    let principal = match caller {
        Caller::Owner => &world.a.principal,
        Caller::Admin => &callers.admin,
        Caller::Insider => &callers.insider.1,
        Caller::Outsider => &callers.outsider,
        Caller::Viewer => &callers.viewer,
        Caller::OtherTenantOwner => &world.b.principal,
        Caller::NoToken => return server.call(None, method, path, body).await,
        Caller::ExpiredToken => {
            return server
                .call_with_token(Some(&callers.expired), method, path, body)
                .await;
        }
    };
    server.call(Some(principal), method, path, body).await
}

async fn every_route_method_and_caller_gets_the_status_the_rules_give(server: TestServer) {
    let a = &server.world.a;
    let stale_clock = Arc::new(ManualClock::starting_now());
    stale_clock.rewind(Duration::from_secs(3600));
    let stale = AccessTokens::with_clock(
        (*server.tokens.keys()).clone(),
        server.tokens.config().clone(),
        stale_clock,
    );
    let callers = Callers {
        admin: server.add_user(a, Role::Admin).await.1,
        insider: server.add_user(a, Role::Member).await,
        outsider: server.add_user(a, Role::Member).await.1,
        viewer: server.add_user(a, Role::Viewer).await.1,
        expired: stale.issue(&a.principal).expect("issue").token,
    };
    let a_user_ids: Vec<String> = [&a.principal, &callers.admin, &callers.viewer]
        .iter()
        .map(|p| p.user_id().to_string())
        .collect();

    let mut cells = 0;
    let mut failures = Vec::new();
    for (r, route) in routes().iter().enumerate() {
        for (c, &caller) in CALLERS.iter().enumerate() {
            let n = r * CALLERS.len() + c + 1;
            let fixture = fixture(&server, &callers, n).await;
            let path = fixture.fill(route.path, n);
            let body = route.body.map(|b| {
                serde_json::from_str::<Value>(&fixture.fill(b, n)).expect("template JSON")
            });
            let want = expected(route, caller);
            let refused = !want.is_success();
            let before = if refused || caller == Caller::OtherTenantOwner {
                Some(snapshot(&server, &fixture).await)
            } else {
                None
            };
            let reply = send(
                &server,
                &callers,
                caller,
                route.method.clone(),
                &path,
                body.clone(),
            )
            .await;
            cells += 1;
            let cell = format!("{} {} as {caller:?}", route.method, route.path);
            if reply.status != want {
                failures.push(format!(
                    "{cell}: expected {want}, got {} {}",
                    reply.status, reply.body
                ));
                continue;
            }
            if refused {
                assert_eq!(
                    reply.headers["content-type"], "application/problem+json",
                    "{cell}"
                );
            }
            if want == StatusCode::NOT_FOUND {
                // No existence leak: the answer for a random id is the same, byte for byte.
                let random_path = fixture.fill_random(route.path, n);
                let random = send(
                    &server,
                    &callers,
                    caller,
                    route.method.clone(),
                    &random_path,
                    body.clone(),
                )
                .await;
                if (random.status, &random.body) != (reply.status, &reply.body) {
                    failures.push(format!(
                        "{cell}: a real id answers {} {}, a random one {} {}",
                        reply.status, reply.body, random.status, random.body
                    ));
                }
            }
            // Nothing hidden shows through a successful answer either.
            let text = reply.body.to_string();
            let hidden: Vec<&String> = match caller {
                Caller::OtherTenantOwner => fixture
                    .ids
                    .iter()
                    .map(|(_, id)| id)
                    .chain(&a_user_ids)
                    .collect(),
                Caller::Outsider | Caller::Viewer => fixture
                    .ids
                    .iter()
                    .filter(|(key, _)| *key == "{restricted}" || *key == "{rtask}")
                    .map(|(_, id)| id)
                    .collect(),
                _ => Vec::new(),
            };
            if let Some(id) = hidden.iter().find(|id| text.contains(id.as_str())) {
                failures.push(format!("{cell}: the answer shows hidden id {id}: {text}"));
            }
            if let Some(before) = before {
                let after = snapshot(&server, &fixture).await;
                for (old, new) in before.iter().zip(&after) {
                    if (old.status, &old.body) != (new.status, &new.body) {
                        failures.push(format!(
                            "{cell}: tenant A changed: {} became {}",
                            old.body, new.body
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cells, routes().len() * CALLERS.len());
}

/// The generator itself: the rules produce each kind of answer somewhere, so a bug that made
/// every expectation "200" (or "404") could not pass unnoticed.
#[test]
fn the_rules_cover_every_kind_of_answer() {
    let mut seen = std::collections::BTreeSet::new();
    for route in routes() {
        for caller in CALLERS {
            seen.insert(expected(&route, caller).as_u16());
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![200, 201, 204, 401, 403, 404]
    );
    let hidden = routes()
        .into_iter()
        .filter(|route| route.restricted)
        .filter(|route| expected(route, Caller::Outsider) == StatusCode::NOT_FOUND)
        .count();
    assert_eq!(hidden, 8, "every restricted route hides from outsiders");
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server; every_route_method_and_caller_gets_the_status_the_rules_give);
