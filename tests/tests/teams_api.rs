//! Teams over real HTTP: CRUD, membership, restricted projects, bad input and the audit trail.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::Role;
use tenantkit_e2e::TestServer;

async fn teams_lifecycle_and_restricted_projects(server: TestServer) {
    let owner = &server.world.a.principal;
    let (alice, alice_p) = server.add_user(&server.world.a, Role::Member).await;
    let (_, bob_p) = server.add_user(&server.world.a, Role::Member).await;

    let created = server
        .call(
            Some(owner),
            Method::POST,
            "/v1/teams",
            Some(json!({"name": "Platform", "description": "infra"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let team = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.headers["location"],
        format!("/v1/teams/{team}").as_str()
    );
    assert_eq!(created.headers["etag"], "\"1\"");
    assert!(created.body.get("tenant_id").is_none());

    // Same name in another case: 409; an unknown field or an empty name: 422.
    for (body, status, code) in [
        (json!({"name": "PLATFORM"}), 409, "conflict"),
        (json!({"name": "  "}), 422, "validation_failed"),
        (
            json!({"name": "x", "tenant_id": "nope"}),
            422,
            "validation_failed",
        ),
    ] {
        let reply = server
            .call(Some(owner), Method::POST, "/v1/teams", Some(body))
            .await;
        assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
        assert_eq!(reply.body["code"], code);
    }

    // Members: only members of this tenant, once each.
    let members = format!("/v1/teams/{team}/members");
    let added = server
        .call(
            Some(owner),
            Method::POST,
            &members,
            Some(json!({"user_id": alice.id})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["email"], alice.email.as_str());
    let again = server
        .call(
            Some(owner),
            Method::POST,
            &members,
            Some(json!({"user_id": alice.id})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let foreign = server
        .call(
            Some(owner),
            Method::POST,
            &members,
            Some(json!({"user_id": server.world.b.owner.id})),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(foreign.body["errors"][0]["field"], "user_id");
    let malformed = server
        .call(
            Some(owner),
            Method::POST,
            &members,
            Some(json!({"user_id": "not-an-id"})),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let listed = server.call(Some(&bob_p), Method::GET, &members, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    let mine = server
        .call(
            Some(&alice_p),
            Method::GET,
            &format!("/v1/teams?member={}", alice.id),
            None,
        )
        .await;
    assert_eq!(mine.body["items"][0]["id"], team.as_str());

    // A restricted project of the team: Alice sees it, Bob does not, the admin-level owner does.
    let project = server
        .call(
            Some(&alice_p),
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "Migration", "team_id": team, "restricted": true})),
        )
        .await;
    assert_eq!(project.status, StatusCode::CREATED, "{}", project.body);
    assert_eq!(project.body["restricted"], true);
    let project_path = format!("/v1/projects/{}", project.body["id"].as_str().expect("id"));
    let ids = |reply: &Value| -> Vec<String> {
        reply["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let for_bob = server
        .call(Some(&bob_p), Method::GET, "/v1/projects", None)
        .await;
    assert!(ids(&for_bob.body).is_empty());
    let for_alice = server
        .call(Some(&alice_p), Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(ids(&for_alice.body).len(), 1);
    let hidden = server
        .call(Some(&bob_p), Method::GET, &project_path, None)
        .await;
    let random = server
        .call(
            Some(&bob_p),
            Method::GET,
            &format!(
                "/v1/projects/{}",
                tenantkit_server::domain::ProjectId::new()
            ),
            None,
        )
        .await;
    assert_eq!((hidden.status, &hidden.body), (random.status, &random.body));
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    // Bob cannot put a project into a team he is not in, nor restrict one without a team.
    for (body, field) in [
        (json!({"name": "Sneak", "team_id": team}), "team_id"),
        (json!({"name": "Orphan", "restricted": true}), "restricted"),
        (
            json!({"name": "Elsewhere", "team_id": tenantkit_core::TeamId::new()}),
            "team_id",
        ),
    ] {
        let reply = server
            .call(Some(&bob_p), Method::POST, "/v1/projects", Some(body))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["errors"][0]["field"], field);
    }

    // Taking Alice out of the team hides the project from her at once.
    let removed = server
        .call(
            Some(owner),
            Method::DELETE,
            &format!("{members}/{}", alice.id),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let gone = server
        .call(Some(&alice_p), Method::GET, &project_path, None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // Renaming with a stale ETag: 412; deleting detaches the project, which stays restricted.
    let team_path = format!("/v1/teams/{team}");
    let renamed = server
        .request(owner, Method::PATCH, &team_path)
        .header("if-match", "\"1\"")
        .json(&json!({"name": "Core"}))
        .send()
        .await
        .expect("send");
    assert_eq!(renamed.status(), StatusCode::OK);
    let stale = server
        .request(owner, Method::DELETE, &team_path)
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("send");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let deleted = server
        .call(Some(owner), Method::DELETE, &team_path, None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let detached = server
        .call(Some(owner), Method::GET, &project_path, None)
        .await;
    assert_eq!(detached.body["team_id"], Value::Null);
    assert_eq!(detached.body["restricted"], true);

    // Every change is in the audit log.
    let audit = server
        .call(Some(owner), Method::GET, "/v1/audit-log?limit=100", None)
        .await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    for action in [
        "team.created",
        "team.member_added",
        "team.member_removed",
        "team.updated",
        "team.deleted",
        "project.created",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server; teams_lifecycle_and_restricted_projects);
