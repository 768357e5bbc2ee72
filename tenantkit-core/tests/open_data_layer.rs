//! The open data layer, used from outside tenantkit-core exactly as another crate would: a
//! tenant table of its own (notes, restricted to teams, with comments that share their note's
//! visibility) with its own migrations and RLS policy, one SQL text for both backends, and the
//! isolation conformance suite, on every backend.

use tenantkit_core::testing::{TestDb, TwoTenants, assert_tenant_isolation};
use tenantkit_core::{
    Backend, Error, Limit, MigrationSet, Migrations, NewTeam, Page, PageRequest, Result, Role,
    Team, TeamId, TenantScope, TenantScoped, TenantTable, TenantTx, Value, Version, Visibility,
    double_option, ensure_written, read_for_update, with_conn,
};

tenantkit_core::define_id!(
    /// Identifies a note.
    NoteId, "note id"
);
tenantkit_core::define_id!(
    /// Identifies a comment on a note.
    CommentId, "comment id"
);

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Note {
    id: NoteId,
    team_id: Option<TeamId>,
    restricted: bool,
    body: String,
    version: Version,
}

#[derive(Debug, Default, serde::Deserialize)]
struct NotePatch {
    #[serde(default)]
    body: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    team_id: Option<Option<TeamId>>,
}

const NOTES: TenantTable = TenantTable {
    name: "notes",
    columns: "id, team_id, restricted, body, version",
    visibility: Visibility::Team,
};

impl TenantScoped for Note {
    type Id = NoteId;
    type New = (String, Option<TeamId>, bool);
    type Patch = NotePatch;
    type Filter = ();

    fn id(&self) -> NoteId {
        self.id
    }

    fn version(&self) -> Version {
        self.version
    }

    async fn create(tx: &mut TenantTx, (body, team_id, restricted): Self::New) -> Result<Self> {
        let note = Note {
            id: NoteId::new(),
            team_id,
            restricted,
            body,
            version: Version::INITIAL,
        };
        let values = [
            Value::id(note.id),
            note.team_id.into(), // a NULL typed as a UUID for PostgreSQL
            note.restricted.into(),
            note.body.as_str().into(),
            note.version.into(),
        ];
        let inserted: Note = NOTES.insert(tx, &values).await?;
        assert_eq!(inserted, note, "insert returns the row as stored");
        Ok(note)
    }

    async fn find(tx: &mut TenantTx, id: NoteId) -> Result<Option<Self>> {
        NOTES.find(tx, id.into()).await
    }

    async fn update(
        tx: &mut TenantTx,
        id: NoteId,
        expected: Option<Version>,
        patch: NotePatch,
    ) -> Result<Self> {
        let mut note: Note = read_for_update(tx, id, expected).await?;
        let base = note.version;
        if let Some(body) = patch.body {
            note.body = body;
        }
        if let Some(team) = patch.team_id {
            note.team_id = team;
        }
        note.version = base.next();
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "UPDATE notes SET body = $1, team_id = $2, version = $3 \
             WHERE tenant_id = $4 AND id = $5 AND version = $6{}",
            NOTES.visibility.condition("notes", all, 7)
        );
        let rows = with_conn!(tx, |c| {
            let query = sqlx::query(&sql)
                .bind(&note.body)
                .bind(note.team_id)
                .bind(note.version)
                .bind(tenant)
                .bind(id)
                .bind(base);
            tenantkit_core::bind_visibility!(query, NOTES.visibility, all, viewer)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        ensure_written::<Self>(tx, id, rows).await?;
        Ok(note)
    }

    async fn delete(tx: &mut TenantTx, id: NoteId, expected: Option<Version>) -> Result<()> {
        NOTES.delete::<Self>(tx, id, expected).await
    }

    async fn list(tx: &mut TenantTx, _: &(), page: PageRequest) -> Result<Page<Self>> {
        NOTES.list(tx, &page, |n: &Note| n.id.as_uuid()).await
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Comment {
    id: CommentId,
    note_id: NoteId,
    body: String,
    version: Version,
}

const COMMENTS: TenantTable = TenantTable {
    name: "note_comments",
    columns: "id, note_id, body, version",
    // `note_id` is NOT NULL with a cascading foreign key to the note (tests/notes migrations).
    visibility: Visibility::Parent {
        table: "notes",
        key: "note_id",
        enforced: true,
    },
};

async fn add_comment(tx: &mut TenantTx, note: NoteId, body: &str) -> Result<Comment> {
    if !NOTES.contains(tx, note.into()).await? {
        return Err(Error::NotFound);
    }
    let comment = Comment {
        id: CommentId::new(),
        note_id: note,
        body: body.to_owned(),
        version: Version::INITIAL,
    };
    let tenant = tx.tenant_id();
    with_conn!(tx, |c| {
        sqlx::query(
            "INSERT INTO note_comments (id, tenant_id, note_id, body, version) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(comment.id)
        .bind(tenant)
        .bind(comment.note_id)
        .bind(&comment.body)
        .bind(comment.version)
        .execute(c)
        .await
        .map(drop)
    })?;
    Ok(comment)
}

/// The notes application's migrations, in the application range.
fn notes_migrations() -> MigrationSet {
    MigrationSet::new(
        "notes (test application)",
        || sqlx::migrate!("./tests/notes/sqlite"),
        || sqlx::migrate!("./tests/notes/postgres"),
    )
}

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &Migrations::new().with(notes_migrations())).await
}

async fn create_note(test_db: &TestDb, scope: &TenantScope, team: Option<TeamId>) -> Note {
    let mut tx = test_db.db.begin(scope).await.expect("begin");
    let note = Note::create(&mut tx, ("hello".into(), team, team.is_some()))
        .await
        .expect("create note");
    tx.commit().await.expect("commit");
    note
}

async fn notes_pass_the_isolation_suite(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let note = create_note(&test_db, &world.a.scope(), None).await;
    let patch = || NotePatch {
        body: Some("changed by B".into()),
        team_id: None,
    };
    assert_tenant_isolation(&test_db, &world, "notes", &note, patch).await;
    let mut tx = test_db.db.begin(&world.a.scope()).await.expect("begin");
    add_comment(&mut tx, note.id, "first")
        .await
        .expect("comment");
    tx.commit().await.expect("commit");
    let mut tx = test_db.db.begin(&world.b.scope()).await.expect("begin");
    assert!(matches!(
        add_comment(&mut tx, note.id, "from B").await,
        Err(Error::NotFound)
    ));
    drop(tx);
    if test_db.backend() == Backend::Postgres {
        tenantkit_core::testing::assert_rls_hides(&test_db, &world, "note_comments").await;
    }
}

async fn team_restricted_rows_are_hidden_outside_their_team(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let (insider, insider_p) = world.a.add_user(db, Role::Member).await;
    let (_, outsider_p) = world.a.add_user(db, Role::Member).await;
    let (_, admin_p) = world.a.add_user(db, Role::Admin).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let team = Team::create(&mut tx, NewTeam::named("Platform"))
        .await
        .expect("team");
    tx.add_team_member(team.id, insider.id).await.expect("join");
    tx.commit().await.expect("commit");
    let hidden = create_note(&test_db, &world.a.scope(), Some(team.id)).await;
    let open = create_note(&test_db, &world.a.scope(), None).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let comment = add_comment(&mut tx, hidden.id, "secret")
        .await
        .expect("comment");
    tx.commit().await.expect("commit");

    let first_page = PageRequest::first(Limit::new(100).expect("limit"));
    for (who, principal, sees) in [
        ("the team's member", &insider_p, true),
        ("a member outside the team", &outsider_p, false),
        ("an admin", &admin_p, true),
        ("the owner", &world.a.principal, true),
    ] {
        let scope = TenantScope::of(principal);
        let mut tx = db.begin(&scope).await.expect("begin");
        assert_eq!(
            Note::find(&mut tx, hidden.id)
                .await
                .expect("find")
                .is_some(),
            sees,
            "{who}: find"
        );
        let listed: Vec<NoteId> = Note::list(&mut tx, &(), first_page)
            .await
            .expect("list")
            .items
            .iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(listed.contains(&hidden.id), sees, "{who}: list");
        assert!(listed.contains(&open.id), "{who} sees the open note");
        assert_eq!(
            sees_comment(&mut tx, comment.id).await,
            sees,
            "{who}: a restricted note's comment"
        );
        if !sees {
            let patch = NotePatch {
                body: Some("x".into()),
                team_id: None,
            };
            assert!(matches!(
                Note::update(&mut tx, hidden.id, None, patch).await,
                Err(Error::NotFound)
            ));
            assert!(matches!(
                Note::delete(&mut tx, hidden.id, None).await,
                Err(Error::NotFound)
            ));
            assert!(matches!(
                add_comment(&mut tx, hidden.id, "x").await,
                Err(Error::NotFound)
            ));
        }
    }
    // The owner reads comments without a lookup of their note (the foreign key is
    // `enforced`): deleting the note takes its comments with it, so none is left to see.
    let owner = TenantScope::of(&world.a.principal);
    let mut tx = db.begin(&owner).await.expect("begin");
    Note::delete(&mut tx, hidden.id, None)
        .await
        .expect("delete note");
    tx.commit().await.expect("commit");
    let mut tx = db.begin(&owner).await.expect("begin");
    assert!(
        !sees_comment(&mut tx, comment.id).await,
        "a deleted note's comment is gone"
    );
}

async fn sees_comment(tx: &mut TenantTx, comment: CommentId) -> bool {
    COMMENTS
        .find::<Comment>(tx, comment.into())
        .await
        .expect("find comment")
        .is_some()
}

async fn a_failed_statement_poisons_the_transaction(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let note = Note::create(&mut tx, ("kept?".into(), None, false))
        .await
        .expect("create");
    let tenant = tx.tenant_id();
    let failed: sqlx::Result<u64> = with_conn!(&mut tx, |c| {
        // `?` inside the body ends the body, not this function.
        let done = sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES ($1, $2, NULL)")
            .bind(note.id)
            .bind(tenant)
            .execute(c)
            .await?;
        Ok(done.rows_affected())
    });
    assert!(failed.is_err());
    assert!(matches!(tx.commit().await, Err(Error::Aborted)));
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin");
    assert_eq!(
        Note::find(&mut tx, note.id).await.expect("find"),
        None,
        "nothing of an aborted transaction is kept"
    );
}

async fn a_registry_refuses_two_sets_claiming_one_version(test_db: TestDb) {
    let twice = Migrations::new()
        .with(notes_migrations())
        .with(notes_migrations());
    let owner = tenantkit_core::Database::connect_with(
        &test_db.owner_url,
        &tenantkit_core::DatabaseOptions::for_migrations(),
    )
    .await
    .expect("connect as owner");
    match owner.migrate(&twice).await {
        Err(Error::Config(message)) => assert!(message.contains("10001"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

async fn a_registry_refuses_versions_in_the_reserved_range(test_db: TestDb) {
    let reserved = MigrationSet::new(
        "reserved (test)",
        || sqlx::migrate!("./tests/reserved/sqlite"),
        || sqlx::migrate!("./tests/reserved/postgres"),
    );
    let owner = tenantkit_core::Database::connect_with(
        &test_db.owner_url,
        &tenantkit_core::DatabaseOptions::for_migrations(),
    )
    .await
    .expect("connect as owner");
    match owner.migrate(&Migrations::new().with(reserved)).await {
        Err(Error::Config(message)) => assert!(message.contains("reserved"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// `TenantTable::list` pages through the tenant's rows in id order, cursor after cursor, and
/// `TenantTable::remove` deletes one row without a version: another tenant's row, or one
/// already gone, is not found and stays untouched.
async fn a_table_lists_in_pages_and_removes_without_versions(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(create_note(&test_db, &world.a.scope(), None).await.id);
    }
    let of_b = create_note(&test_db, &world.b.scope(), None).await;
    let mut tx = test_db.db.begin(&world.a.scope()).await.expect("begin");
    let (mut seen, mut page) = (
        Vec::new(),
        PageRequest::first(Limit::new(2).expect("limit")),
    );
    loop {
        let found: Page<Note> = NOTES
            .list(&mut tx, &page, |n: &Note| n.id.as_uuid())
            .await
            .expect("list");
        assert!(found.items.len() <= 2);
        seen.extend(found.items.iter().map(|n| n.id));
        match found.next_cursor {
            Some(cursor) => page = PageRequest::from_query(Some(2), Some(&cursor)).expect("cursor"),
            None => break,
        }
    }
    let mut in_id_order = created.clone();
    in_id_order.sort_by_key(|id| id.as_uuid());
    assert_eq!(
        seen, in_id_order,
        "every note of A once, in id order, none of B's"
    );

    assert!(matches!(
        NOTES.remove(&mut tx, of_b.id.into()).await,
        Err(Error::NotFound)
    ));
    NOTES
        .remove(&mut tx, created[0].into())
        .await
        .expect("remove");
    assert!(matches!(
        NOTES.remove(&mut tx, created[0].into()).await,
        Err(Error::NotFound)
    ));
    tx.commit().await.expect("commit");
    let mut tx = test_db
        .db
        .begin_read(&world.b.scope())
        .await
        .expect("begin");
    assert_eq!(
        Note::find(&mut tx, of_b.id).await.expect("find"),
        Some(of_b),
        "B's note is intact"
    );
    let mut tx = test_db
        .db
        .begin_read(&world.a.scope())
        .await
        .expect("begin");
    assert_eq!(Note::find(&mut tx, created[0]).await.expect("find"), None);
    assert!(
        Note::find(&mut tx, created[1])
            .await
            .expect("find")
            .is_some()
    );
}

/// `TenantTable::insert` writes the transaction's tenant (B never sees A's row, whatever the
/// values), and a call with one value too few is a database error, never a panic; the
/// transaction is then poisoned and nothing of it is kept.
async fn a_table_inserts_into_the_transactions_tenant_only(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let note = create_note(&test_db, &world.a.scope(), None).await;
    let mut tx = test_db
        .db
        .begin_read(&world.b.scope())
        .await
        .expect("begin");
    assert_eq!(Note::find(&mut tx, note.id).await.expect("find"), None);
    drop(tx);

    let mut tx = test_db.db.begin(&world.a.scope()).await.expect("begin");
    let short = [Value::id(NoteId::new()), Value::Uuid(None), false.into()];
    let err = NOTES.insert::<Note>(&mut tx, &short).await;
    assert!(matches!(err, Err(Error::Database(_))), "{err:?}");
    assert!(
        tx.commit().await.is_err(),
        "a failed insert poisons its transaction"
    );
    let mut tx = test_db
        .db
        .begin_read(&world.a.scope())
        .await
        .expect("begin");
    let page: Page<Note> = NOTES
        .list(&mut tx, &PageRequest::default(), |n: &Note| n.id.as_uuid())
        .await
        .expect("list");
    assert_eq!(page.items, vec![note], "only the first note exists");
}

tenantkit_core::backend_tests!(
    fixture = db;
    a_table_inserts_into_the_transactions_tenant_only,
    a_table_lists_in_pages_and_removes_without_versions,
    a_registry_refuses_versions_in_the_reserved_range,
    notes_pass_the_isolation_suite,
    team_restricted_rows_are_hidden_outside_their_team,
    a_failed_statement_poisons_the_transaction,
    a_registry_refuses_two_sets_claiming_one_version,
);
