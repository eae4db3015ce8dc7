//! The content service on a real SQLite database (a fresh file per test) and, when
//! `OVASABI_TEST_DATABASE_URL` is set, on Postgres (a schema of its own per run, dropped at the
//! end): posts, comments, reactions, search, validation, RBAC and the audit rows.

mod common;

use std::sync::LazyLock;

use serde_json::{Value, json};
use services::content::{
    Content, ContentPatch, ContentService, Kind, NewComment, NewContent, Page, SearchHit,
};
use services::security::audit::{AuditEntry, AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::{Database, ServiceError};

/// The node itself: every permission.
static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);
static U1: LazyLock<Caller> = LazyLock::new(|| Caller::user("u1", vec![Role::User]));
static U2: LazyLock<Caller> = LazyLock::new(|| Caller::user("u2", vec![Role::User]));
static ADMIN: LazyLock<Caller> = LazyLock::new(|| Caller::user("boss", vec![Role::Admin]));
static MANAGER: LazyLock<Caller> =
    LazyLock::new(|| Caller::user("mgr", vec![Role::CampaignManager]));
static ANON: LazyLock<Caller> = LazyLock::new(Caller::anonymous);

struct Fixture {
    svc: ContentService,
    log: AuditLog,
    db: Database,
    home: common::TestDb,
}

impl Fixture {
    async fn with(home: common::TestDb) -> Self {
        let db = home.db.clone();
        let policies = Policies::load(db.clone()).await.expect("policies");
        Self {
            svc: ContentService::new(db.clone(), policies.clone()),
            log: AuditLog::new(db.clone(), policies),
            db,
            home,
        }
    }

    async fn finish(self) {
        self.home.finish().await;
    }

    /// The audit rows about one entity, oldest first.
    async fn audit(&self, entity_id: &str) -> Vec<AuditEntry> {
        let filter = AuditFilter {
            entity_id: Some(entity_id.to_owned()),
            ..AuditFilter::default()
        };
        self.log
            .query(&SYS, &filter, Some(500), None)
            .await
            .expect("audit query")
            .items
    }

    /// Rows in a table, read directly.
    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.db {
            Database::Sqlite(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect("count"),
            Database::Postgres(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect("count"),
        }
    }

    /// Row counts of every content table and of the audit log.
    async fn snapshot(&self) -> [i64; 4] {
        [
            self.count("service_content_main").await,
            self.count("service_content_comment").await,
            self.count("service_content_reaction").await,
            self.count("service_security_audit").await,
        ]
    }
}

/// The suite runs on SQLite always, and on Postgres when `OVASABI_TEST_DATABASE_URL` is set
/// (in a schema of its own, dropped at the end).
async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases("content").await {
        out.push(Fixture::with(home).await);
    }
    out
}

fn post(kind: &str, title: &str, body: &str) -> NewContent {
    NewContent {
        kind: kind.to_owned(),
        title: title.to_owned(),
        body: body.to_owned(),
        url: (kind == "video").then(|| "https://videos.example.com/v/1".to_owned()),
        ..NewContent::default()
    }
}

fn comment(body: &str, parent_id: Option<&str>) -> NewComment {
    NewComment {
        parent_id: parent_id.map(str::to_owned),
        body: body.to_owned(),
    }
}

fn patch(v: Value) -> ContentPatch {
    serde_json::from_value(v).expect("valid patch")
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) {
    match r {
        Err(ServiceError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "wrong field (message: {message})");
            assert!(!message.is_empty());
        }
        other => panic!("expected Invalid {{ field: {field:?} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, ServiceError>, entity: &str) {
    match r {
        Err(ServiceError::NotFound { entity: e, .. }) => assert_eq!(e, entity),
        other => panic!("expected NotFound {entity}, got {other:?}"),
    }
}

/// A conflict with the post's kind, naming `field`.
#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) {
    match r {
        Err(ServiceError::Conflict { message }) => {
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
        other => panic!("expected Conflict about {field:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(r: Result<T, ServiceError>) {
    assert!(
        matches!(r, Err(ServiceError::Forbidden { .. })),
        "expected Forbidden, got {r:?}"
    );
}

#[track_caller]
fn assert_unauthenticated<T: std::fmt::Debug>(r: Result<T, ServiceError>) {
    assert!(
        matches!(r, Err(ServiceError::Unauthenticated { .. })),
        "expected Unauthenticated, got {r:?}"
    );
}

fn ids(page: &Page<Content>) -> Vec<&str> {
    page.items.iter().map(|c| c.id.as_str()).collect()
}

#[tokio::test]
async fn create_get_list_update_delete() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let mut new = post("article", "  Hello world  ", "A first article.");
        new.tags = vec!["intro".into(), "news".into()];
        new.metadata = Some(json!({"features": ["comments"], "service_specific": {"lang": "en"}}));
        let a = f.svc.create(&U1, new).await.expect("create article");
        assert_eq!(a.kind, Kind::Article);
        assert_eq!(a.title, "Hello world", "the title is trimmed");
        assert_eq!(a.author_id, "u1");
        assert_eq!(a.tags, vec!["intro", "news"]);
        assert_eq!(a.metadata["service_specific"]["lang"], "en");
        assert_eq!(a.url, None);
        assert_eq!(a.created_at, a.updated_at);
        assert_eq!(f.svc.get(&ANON, &a.id).await.expect("get"), a);

        let m = f
            .svc
            .create(&U2, post("micro", "", "just a short thought"))
            .await
            .expect("a micro-post needs no title");
        assert_eq!(m.title, "");
        let v = f
            .svc
            .create(&U1, post("video", "Launch", ""))
            .await
            .expect("a video with a url and no body");
        assert_eq!(v.url.as_deref(), Some("https://videos.example.com/v/1"));

        // Newest first, paginated by id.
        let page = f
            .svc
            .list(&ANON, None, None, Some(2), None)
            .await
            .expect("list");
        assert_eq!(ids(&page), vec![v.id.as_str(), m.id.as_str()]);
        let cursor = page.next_cursor.clone().expect("a next page");
        let page = f
            .svc
            .list(&ANON, None, None, Some(2), Some(&cursor))
            .await
            .expect("page 2");
        assert_eq!(ids(&page), vec![a.id.as_str()]);
        assert_eq!(page.next_cursor, None);
        let page = f
            .svc
            .list(&U1, Some(Kind::Micro), None, None, None)
            .await
            .expect("by kind");
        assert_eq!(ids(&page), vec![m.id.as_str()]);
        let page = f
            .svc
            .list(&U1, None, Some("u1"), None, None)
            .await
            .expect("by author");
        assert_eq!(ids(&page), vec![v.id.as_str(), a.id.as_str()]);
        let page = f
            .svc
            .list(&U1, Some(Kind::Article), Some("u2"), None, None)
            .await
            .expect("both filters");
        assert!(page.items.is_empty());
        assert_invalid(f.svc.list(&U1, None, None, Some(0), None).await, "limit");
        assert_invalid(f.svc.list(&U1, None, None, Some(501), None).await, "limit");

        // Update: named fields change, metadata merges, url goes away with null.
        let mut with_url = post("article", "Linked", "body");
        with_url.url = Some("http://example.com/source".into());
        let l = f.svc.create(&U1, with_url).await.expect("create");
        let l2 = f
            .svc
            .update(
                &U1,
                &l.id,
                patch(json!({
                    "title": "Linked, edited",
                    "tags": ["x"],
                    "url": null,
                    "metadata": {"features": ["a"], "service_specific": {"n": 1}}
                })),
            )
            .await
            .expect("update");
        assert_eq!(l2.title, "Linked, edited");
        assert_eq!(l2.body, "body", "fields the patch does not name stay");
        assert_eq!(l2.tags, vec!["x"]);
        assert_eq!(l2.url, None);
        assert_eq!(l2.kind, Kind::Article);
        assert_eq!(l2.created_at, l.created_at);
        let l3 = f
            .svc
            .update(
                &U1,
                &l.id,
                patch(json!({"metadata": {"features": null, "service_specific": {"m": 2}}})),
            )
            .await
            .expect("metadata merge patch");
        assert_eq!(l3.metadata, json!({"service_specific": {"n": 1, "m": 2}}));
        assert_eq!(f.svc.get(&U2, &l.id).await.expect("get"), l3);

        // Delete: gone with its comments and reactions.
        let c = f
            .svc
            .add_comment(&U2, &l.id, comment("nice", None))
            .await
            .expect("comment");
        f.svc.react(&U2, &l.id, "like").await.expect("react");
        f.svc.delete(&U1, &l.id).await.expect("delete own");
        assert_not_found(f.svc.get(&U1, &l.id).await, "content");
        assert_not_found(f.svc.get_comment(&U1, &c.id).await, "comment");
        assert_not_found(f.svc.reactions(&U1, &l.id).await, "content");
        assert_eq!(f.count("service_content_comment").await, 0);
        assert_eq!(f.count("service_content_reaction").await, 0);
        assert_not_found(f.svc.delete(&U1, &l.id).await, "content");
        f.finish().await;
    }
}

#[tokio::test]
async fn comments_thread_and_paginate() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let a = f
            .svc
            .create(&U1, post("article", "Threads", "talk here"))
            .await
            .expect("create");
        let other = f
            .svc
            .create(&U1, post("micro", "", "elsewhere"))
            .await
            .expect("create");
        let c1 = f
            .svc
            .add_comment(&U2, &a.id, comment("first", None))
            .await
            .expect("comment");
        assert_eq!(c1.author_id, "u2");
        assert_eq!(c1.content_id, a.id);
        assert_eq!(c1.parent_id, None);
        let c2 = f
            .svc
            .add_comment(&U1, &a.id, comment("a reply", Some(&c1.id)))
            .await
            .expect("reply");
        assert_eq!(c2.parent_id.as_deref(), Some(c1.id.as_str()));
        let c3 = f
            .svc
            .add_comment(&U2, &a.id, comment("a reply to the reply", Some(&c2.id)))
            .await
            .expect("nested reply");
        let o1 = f
            .svc
            .add_comment(&U2, &other.id, comment("on the other post", None))
            .await
            .expect("comment");

        // Creation order, two per page.
        let page = f
            .svc
            .list_comments(&ANON, &a.id, Some(2), None)
            .await
            .expect("list");
        assert_eq!(page.items, vec![c1.clone(), c2.clone()]);
        let page = f
            .svc
            .list_comments(&ANON, &a.id, Some(2), page.next_cursor.as_deref())
            .await
            .expect("page 2");
        assert_eq!(page.items, vec![c3.clone()]);
        assert_eq!(page.next_cursor, None);

        // A parent must be a comment of the same content.
        let before = f.snapshot().await;
        assert_not_found(
            f.svc
                .add_comment(&U1, &a.id, comment("cross", Some(&o1.id)))
                .await,
            "parent comment",
        );
        assert_not_found(
            f.svc
                .add_comment(&U1, &a.id, comment("ghost", Some("no-such-comment")))
                .await,
            "parent comment",
        );
        assert_not_found(
            f.svc
                .add_comment(&U1, "no-such-content", comment("x", None))
                .await,
            "content",
        );
        assert_not_found(
            f.svc
                .list_comments(&U1, "no-such-content", None, None)
                .await,
            "content",
        );
        assert_invalid(
            f.svc.add_comment(&U1, &a.id, comment("  ", None)).await,
            "body",
        );
        assert_invalid(
            f.svc
                .add_comment(&U1, &a.id, comment(&"x".repeat(10_001), None))
                .await,
            "body",
        );
        assert_unauthenticated(f.svc.add_comment(&ANON, &a.id, comment("hi", None)).await);
        assert_eq!(f.snapshot().await, before, "refused comments write nothing");

        // Authors edit and delete their comments; others need the permission.
        let e = f
            .svc
            .update_comment(&U2, &c1.id, "first, edited")
            .await
            .expect("edit own");
        assert_eq!(e.body, "first, edited");
        assert_eq!(e.created_at, c1.created_at);
        assert_forbidden(f.svc.update_comment(&U1, &c1.id, "hijack").await);
        assert_forbidden(f.svc.delete_comment(&U1, &c1.id).await);
        assert_unauthenticated(f.svc.delete_comment(&ANON, &c1.id).await);
        assert_not_found(f.svc.update_comment(&U1, "nope", "x").await, "comment");
        assert_eq!(
            f.svc.get_comment(&ANON, &c1.id).await.expect("get").body,
            "first, edited"
        );
        // Deleting a comment deletes its replies.
        f.svc
            .delete_comment(&ADMIN, &c2.id)
            .await
            .expect("admin deletes");
        let page = f
            .svc
            .list_comments(&ANON, &a.id, None, None)
            .await
            .expect("list");
        assert_eq!(page.items, vec![e.clone()]);
        f.svc
            .delete_comment(&U2, &c1.id)
            .await
            .expect("author deletes");

        let audit = f.audit(&c1.id).await;
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "content.comment",
                "content.comment_update",
                "content.comment_delete"
            ]
        );
        assert!(audit.iter().all(|e| e.entity_type == "comment"));
        assert_eq!(audit[0].after.as_ref().expect("after")["body"], "first");
        assert_eq!(audit[1].before.as_ref().expect("before")["body"], "first");
        assert_eq!(
            audit[1].after.as_ref().expect("after")["body"],
            "first, edited"
        );
        assert_eq!(
            audit[2].before.as_ref().expect("before")["body"],
            "first, edited"
        );
        assert_eq!(f.audit(&c2.id).await[1].actor, "boss");
        f.finish().await;
    }
}

#[tokio::test]
async fn reactions_are_idempotent_per_user_and_kind() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let a = f
            .svc
            .create(&U1, post("micro", "", "react to me"))
            .await
            .expect("create");
        let r = f.svc.react(&U1, &a.id, "like").await.expect("react");
        assert_eq!(r.content_id, a.id);
        assert_eq!(r.counts.get("like"), Some(&1));
        assert_eq!(r.mine, vec!["like"]);
        let again = f.svc.react(&U1, &a.id, "like").await.expect("again");
        assert_eq!(again, r, "a second identical reaction changes nothing");
        f.svc.react(&U2, &a.id, "like").await.expect("u2 like");
        let r = f.svc.react(&U2, &a.id, "love_it_2").await.expect("u2 love");
        assert_eq!(r.counts.get("like"), Some(&2));
        assert_eq!(r.counts.get("love_it_2"), Some(&1));
        assert_eq!(r.mine, vec!["like", "love_it_2"]);

        let seen = f.svc.reactions(&ANON, &a.id).await.expect("reactions");
        assert_eq!(seen.counts.len(), 2);
        assert!(seen.mine.is_empty(), "anonymous callers have no reactions");
        assert_eq!(
            f.svc.reactions(&U1, &a.id).await.expect("reactions").mine,
            vec!["like"]
        );

        let r = f.svc.unreact(&U1, &a.id, "like").await.expect("unreact");
        assert_eq!(r.counts.get("like"), Some(&1));
        assert!(r.mine.is_empty());
        let r2 = f
            .svc
            .unreact(&U1, &a.id, "like")
            .await
            .expect("unreact again is a no-op");
        assert_eq!(r2, r);
        f.svc
            .unreact(&U2, &a.id, "love_it_2")
            .await
            .expect("unreact");
        let r = f.svc.reactions(&U2, &a.id).await.expect("reactions");
        assert_eq!(r.counts.get("love_it_2"), None, "kinds nobody uses vanish");

        // Audit rows only for the changes: 3 reacts, 2 unreacts.
        let audit = f.audit(&a.id).await;
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "content.create",
                "content.react",
                "content.react",
                "content.react",
                "content.unreact",
                "content.unreact"
            ]
        );
        assert_eq!(
            audit[1].after,
            Some(json!({"user_id": "u1", "kind": "like"}))
        );
        assert_eq!(audit[1].entity_type, "content");
        assert_eq!(
            audit[4].before,
            Some(json!({"user_id": "u1", "kind": "like"}))
        );

        // Refusals write nothing.
        let before = f.snapshot().await;
        for bad in ["", "Like", "thumbs-up", "a b", "é", &"a".repeat(33)] {
            assert_invalid(f.svc.react(&U1, &a.id, bad).await, "kind");
        }
        assert_not_found(f.svc.react(&U1, "no-such-id", "like").await, "content");
        assert_not_found(f.svc.unreact(&U1, "no-such-id", "like").await, "content");
        assert_not_found(f.svc.reactions(&U1, "no-such-id").await, "content");
        assert_unauthenticated(f.svc.react(&ANON, &a.id, "like").await);
        assert_unauthenticated(f.svc.react(&SYS, &a.id, "like").await);
        assert_eq!(f.snapshot().await, before);
        f.finish().await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let a = f
            .svc
            .create(&U1, post("article", "Valid", "valid body"))
            .await
            .expect("create");
        let v = f
            .svc
            .create(&U1, post("video", "Clip", ""))
            .await
            .expect("create");
        let m = f
            .svc
            .create(&U1, post("micro", "", "short"))
            .await
            .expect("create");
        let before = f.snapshot().await;

        let with = |kind: &str, edit: &dyn Fn(&mut NewContent)| {
            let mut n = post(kind, "Title", "body");
            edit(&mut n);
            n
        };
        let cases: Vec<(&str, NewContent)> = vec![
            ("kind", with("podcast", &|_| {})),
            ("kind", with("Article", &|_| {})),
            ("title", with("article", &|n| n.title = String::new())),
            ("title", with("article", &|n| n.title = "   ".into())),
            ("title", with("video", &|n| n.title = String::new())),
            ("title", with("article", &|n| n.title = "t".repeat(301))),
            ("title", with("micro", &|n| n.title = "t".repeat(301))),
            ("title", with("article", &|n| n.title = "nul\0".into())),
            ("body", with("article", &|n| n.body = "b".repeat(100_001))),
            ("body", with("micro", &|n| n.body = "b".repeat(501))),
            ("body", with("micro", &|n| n.body = String::new())),
            ("url", with("video", &|n| n.url = None)),
            (
                "url",
                with("article", &|n| n.url = Some("ftp://example.com/x".into())),
            ),
            (
                "url",
                with("article", &|n| n.url = Some("javascript:alert(1)".into())),
            ),
            ("url", with("article", &|n| n.url = Some("https://".into()))),
            (
                "url",
                with("article", &|n| {
                    n.url = Some(format!("https://example.com/{}", "p".repeat(2_040)));
                }),
            ),
            (
                "url",
                with("video", &|n| n.url = Some("https://exa mple.com".into())),
            ),
            (
                "tags",
                with("article", &|n| {
                    n.tags = (0..21).map(|i| format!("t{i}")).collect();
                }),
            ),
            (
                "tags[1]",
                with("article", &|n| n.tags = vec!["ok".into(), "x".repeat(51)]),
            ),
            (
                "tags[0]",
                with("article", &|n| n.tags = vec![String::new()]),
            ),
            (
                "metadata",
                with("article", &|n| n.metadata = Some(json!([1, 2]))),
            ),
            (
                "metadata.colour",
                with("article", &|n| n.metadata = Some(json!({"colour": "red"}))),
            ),
            (
                "metadata.tags",
                with("article", &|n| n.metadata = Some(json!({"tags": [1]}))),
            ),
        ];
        for (field, new) in cases {
            assert_invalid(f.svc.create(&U1, new).await, field);
        }
        // Limits are inclusive.
        let mut edge = post("article", &"t".repeat(300), &"b".repeat(100_000));
        edge.tags = (0..20).map(|i| format!("{i:0>50}")).collect();
        edge.url = Some(format!("https://e.com/{}", "p".repeat(2_048 - 14)));
        let edge = f
            .svc
            .create(&U1, edge)
            .await
            .expect("every field at its limit");
        f.svc.delete(&U1, &edge.id).await.expect("delete");
        let before = {
            let now = f.snapshot().await;
            assert_eq!(now[0], before[0]);
            now
        };

        // Bad updates: the content stays as it was. A value that no post may have is invalid;
        // one that another kind of post may have conflicts with this post.
        let conflicts: Vec<(&str, &str, Value)> = vec![
            ("title", a.id.as_str(), json!({"title": ""})),
            ("title", v.id.as_str(), json!({"title": " "})),
            ("body", m.id.as_str(), json!({"body": "b".repeat(501)})),
            ("body", m.id.as_str(), json!({"body": " "})),
            ("url", v.id.as_str(), json!({"url": null})),
        ];
        for (field, id, p) in conflicts {
            assert_conflict(f.svc.update(&U1, id, patch(p)).await, field);
        }
        let updates: Vec<(&str, &str, Value)> = vec![
            ("title", a.id.as_str(), json!({"title": "t".repeat(301)})),
            ("title", m.id.as_str(), json!({"title": "t".repeat(301)})),
            ("body", a.id.as_str(), json!({"body": "b".repeat(100_001)})),
            ("body", m.id.as_str(), json!({"body": "a\u{0}b"})),
            ("url", a.id.as_str(), json!({"url": "file:///etc/passwd"})),
            ("url", v.id.as_str(), json!({"url": "https://"})),
            ("tags[0]", a.id.as_str(), json!({"tags": ["x".repeat(51)]})),
            ("metadata", a.id.as_str(), json!({"metadata": [1]})),
            (
                "metadata.nope",
                a.id.as_str(),
                json!({"metadata": {"nope": 1}}),
            ),
            ("patch", a.id.as_str(), json!({})),
        ];
        for (field, id, p) in updates {
            assert_invalid(f.svc.update(&U1, id, patch(p)).await, field);
        }
        assert_eq!(f.svc.get(&U1, &a.id).await.expect("get"), a);
        assert_eq!(f.svc.get(&U1, &v.id).await.expect("get"), v);
        assert_eq!(f.svc.get(&U1, &m.id).await.expect("get"), m);

        // Unknown fields are refused when the input is parsed.
        assert!(
            serde_json::from_value::<NewContent>(
                json!({"kind": "micro", "body": "x", "author_id": "evil"})
            )
            .is_err()
        );
        assert!(serde_json::from_value::<ContentPatch>(json!({"kind": "video"})).is_err());
        assert!(
            serde_json::from_value::<NewComment>(json!({"body": "x", "author_id": "evil"}))
                .is_err()
        );
        assert_invalid(Kind::parse("podcast"), "kind");

        // Unknown ids.
        assert_not_found(f.svc.get(&U1, "no-such-id").await, "content");
        assert_not_found(
            f.svc
                .update(&U1, "no-such-id", patch(json!({"title": "x"})))
                .await,
            "content",
        );
        assert_not_found(f.svc.delete(&ADMIN, "no-such-id").await, "content");
        assert_not_found(f.svc.get_comment(&U1, "no-such-id").await, "comment");
        assert_not_found(f.svc.delete_comment(&U1, "no-such-id").await, "comment");

        assert_eq!(f.snapshot().await, before, "refused calls write nothing");
        f.finish().await;
    }
}

#[tokio::test]
async fn roles_are_enforced_and_every_change_is_audited() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        assert_unauthenticated(
            f.svc
                .create(&ANON, post("article", "Anonymous", "no"))
                .await,
        );
        let a = f
            .svc
            .create(
                &U1.clone().from_addr("10.0.0.1:5555"),
                post("article", "Mine", "text"),
            )
            .await
            .expect("a user creates");
        let m = f
            .svc
            .create(&MANAGER, post("micro", "", "managers post too"))
            .await
            .expect("a campaign manager creates");
        assert_eq!(m.author_id, "mgr");
        let before = f.snapshot().await;

        // Reads are open to everyone.
        f.svc.get(&ANON, &a.id).await.expect("anonymous read");
        // Nobody but the author (or a role with the permission) changes it.
        let p = || patch(json!({"title": "Stolen"}));
        assert_unauthenticated(f.svc.update(&ANON, &a.id, p()).await);
        assert_unauthenticated(f.svc.delete(&ANON, &a.id).await);
        assert_forbidden(f.svc.update(&U2, &a.id, p()).await);
        assert_forbidden(f.svc.delete(&U2, &a.id).await);
        assert_forbidden(f.svc.update(&MANAGER, &a.id, p()).await);
        assert_forbidden(f.svc.delete(&MANAGER, &a.id).await);
        assert_eq!(f.snapshot().await, before, "refused calls write nothing");
        assert_eq!(f.svc.get(&U1, &a.id).await.expect("get"), a);

        let a2 = f
            .svc
            .update(&U1, &a.id, patch(json!({"body": "edited by me"})))
            .await
            .expect("the author updates");
        let a3 = f
            .svc
            .update(&ADMIN, &a.id, patch(json!({"title": "Moderated"})))
            .await
            .expect("an admin updates");
        assert_eq!(a3.author_id, "u1", "the author stays");
        f.svc
            .update(&SYS, &m.id, patch(json!({"tags": ["sys"]})))
            .await
            .expect("the node updates");
        f.svc.delete(&ADMIN, &a.id).await.expect("an admin deletes");
        f.svc
            .delete(&MANAGER, &m.id)
            .await
            .expect("the author deletes");

        let audit = f.audit(&a.id).await;
        let summary: Vec<(&str, &str, &str)> = audit
            .iter()
            .map(|e| (e.action.as_str(), e.actor.as_str(), e.entity_type.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("content.create", "u1", "content"),
                ("content.update", "u1", "content"),
                ("content.update", "boss", "content"),
                ("content.delete", "boss", "content"),
            ]
        );
        let json = |c: &Content| serde_json::to_value(c).expect("json");
        assert_eq!(audit[0].before, None);
        assert_eq!(audit[0].after, Some(json(&a)));
        assert_eq!(audit[0].client_addr.as_deref(), Some("10.0.0.1:5555"));
        assert_eq!(audit[1].before, Some(json(&a)));
        assert_eq!(audit[1].after, Some(json(&a2)));
        assert_eq!(audit[2].before, Some(json(&a2)));
        assert_eq!(audit[2].after, Some(json(&a3)));
        assert_eq!(audit[3].before, Some(json(&a3)));
        assert_eq!(audit[3].after, None);
        let audit = f.audit(&m.id).await;
        let actions: Vec<(&str, &str)> = audit
            .iter()
            .map(|e| (e.action.as_str(), e.actor.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("content.create", "mgr"),
                ("content.update", "system"),
                ("content.delete", "mgr"),
            ]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn injection_strings_are_stored_verbatim() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let title = "Robert'); DROP TABLE service_content_main; --";
        let body = "' OR '1'='1' --; \"; DELETE FROM service_security_audit; /* */ \\x00 $1 ?1 %s \u{1F600}";
        let tags = vec![
            "'; DROP TABLE service_content_comment; --".to_owned(),
            "\" OR \"\"=\"".to_owned(),
            "$$; SELECT pg_sleep(10); $$".to_owned(),
        ];
        let mut new = post("article", title, body);
        new.tags = tags.clone();
        new.metadata =
            Some(json!({"tags": ["1; DROP TABLE x"], "service_specific": {"q": "' OR 1=1"}}));
        let c = f.svc.create(&U1, new).await.expect("create");
        let got = f.svc.get(&ANON, &c.id).await.expect("get");
        assert_eq!(got.title, title);
        assert_eq!(got.body, body);
        assert_eq!(got.tags, tags);
        assert_eq!(got.metadata["service_specific"]["q"], "' OR 1=1");
        let cm = f
            .svc
            .add_comment(&U2, &c.id, comment(title, None))
            .await
            .expect("comment");
        assert_eq!(
            f.svc.get_comment(&ANON, &cm.id).await.expect("get").body,
            title
        );
        let listed = f
            .svc
            .list(&ANON, None, Some("u1'; --"), None, None)
            .await
            .expect("an author filter that looks like SQL");
        assert!(listed.items.is_empty());
        let hits = f
            .svc
            .search(&ANON, "'; DROP TABLE service_content_main; --", None, None)
            .await
            .expect("search as data");
        assert_eq!(hits.items.len(), 1, "the title holds these words");
        // Every table is still there.
        assert_eq!(f.count("service_content_main").await, 1);
        assert_eq!(f.count("service_content_comment").await, 1);
        assert!(f.count("service_security_audit").await >= 2);
        f.finish().await;
    }
}

fn hit_ids(page: &Page<SearchHit>) -> Vec<&str> {
    page.items.iter().map(|h| h.content.id.as_str()).collect()
}

#[tokio::test]
async fn search_ranks_snippets_and_treats_input_as_data() {
    for f in fixtures().await {
        eprintln!("backend: {}", f.db.backend());
        let titled = f
            .svc
            .create(
                &U1,
                post(
                    "article",
                    "Rust ownership explained",
                    "Every value has one owner; the borrow checker enforces it.",
                ),
            )
            .await
            .expect("create");
        let in_body = f
            .svc
            .create(
                &U2,
                post(
                    "article",
                    "A gardening diary",
                    "Tomatoes came early this year. The tools started to rust in the shed after the rain.",
                ),
            )
            .await
            .expect("create");
        let unrelated = f
            .svc
            .create(&U2, post("micro", "", "Nothing to see here."))
            .await
            .expect("create");

        // A word of the body finds its post, with a snippet around it.
        let page = f
            .svc
            .search(&ANON, "tomatoes", None, None)
            .await
            .expect("search");
        assert_eq!(hit_ids(&page), vec![in_body.id.as_str()]);
        let snippet = &page.items[0].snippet;
        assert!(
            snippet.contains("<mark>Tomatoes</mark>"),
            "snippet {snippet:?}"
        );

        // A title hit ranks above a body-only hit.
        let page = f
            .svc
            .search(&ANON, "RUST", None, None)
            .await
            .expect("search");
        assert_eq!(
            hit_ids(&page),
            vec![titled.id.as_str(), in_body.id.as_str()]
        );
        assert!(page.items[0].rank > page.items[1].rank, "{page:?}");
        for hit in &page.items {
            assert!(
                hit.snippet.to_lowercase().contains("<mark>rust</mark>"),
                "snippet {:?}",
                hit.snippet
            );
        }
        // All words must match.
        let page = f
            .svc
            .search(&ANON, "rust borrow", None, None)
            .await
            .expect("search");
        assert_eq!(hit_ids(&page), vec![titled.id.as_str()]);

        // Pages by offset.
        let first = f
            .svc
            .search(&ANON, "rust", Some(1), None)
            .await
            .expect("page 1");
        assert_eq!(hit_ids(&first), vec![titled.id.as_str()]);
        assert_eq!(first.next_cursor.as_deref(), Some("1"));
        let second = f
            .svc
            .search(&ANON, "rust", Some(1), first.next_cursor.as_deref())
            .await
            .expect("page 2");
        assert_eq!(hit_ids(&second), vec![in_body.id.as_str()]);
        assert_eq!(second.next_cursor, None);
        assert_invalid(
            f.svc.search(&ANON, "rust", None, Some("abc")).await,
            "cursor",
        );
        assert_invalid(
            f.svc.search(&ANON, "rust", None, Some("-1")).await,
            "cursor",
        );
        assert_invalid(f.svc.search(&ANON, "   ", None, None).await, "query");
        assert_invalid(
            f.svc.search(&ANON, &"x".repeat(257), None, None).await,
            "query",
        );

        // Search and SQL syntax is only data: no error, words still match.
        for q in [
            "'; DROP TABLE x; --",
            "\"",
            "\"rust",
            "*",
            "rust*",
            "AND",
            "rust AND",
            "OR rust",
            "NOT rust",
            "NEAR(",
            "NEAR(rust shed, 2)",
            "title:rust",
            "{title body}: rust",
            "-rust",
            "^rust",
            "rust + shed",
            "(rust",
            "rust)",
            "!!!",
            "'",
            "\\",
            "%",
            "_",
            "rust & | ! <-> :*",
            "\0rust",
        ] {
            let page = f
                .svc
                .search(&ANON, q, None, None)
                .await
                .unwrap_or_else(|e| panic!("query {q:?} failed: {e:?}"));
            // Queries whose only word is "rust" find both posts that have it.
            let only_rust = [
                "\"rust",
                "rust*",
                "-rust",
                "^rust",
                "(rust",
                "rust)",
                "rust & | ! <-> :*",
                "\0rust",
            ];
            if only_rust.contains(&q) {
                assert_eq!(
                    hit_ids(&page),
                    vec![titled.id.as_str(), in_body.id.as_str()],
                    "query {q:?}"
                );
            }
        }
        let page = f
            .svc
            .search(&ANON, "NEAR(rust shed, 2)", None, None)
            .await
            .expect("search");
        assert!(
            page.items.is_empty(),
            "NEAR is a word here, which no post has"
        );

        // The index follows updates and deletions.
        f.svc
            .update(
                &U2,
                &unrelated.id,
                patch(json!({"body": "Now about zucchini."})),
            )
            .await
            .expect("update");
        let page = f
            .svc
            .search(&ANON, "zucchini", None, None)
            .await
            .expect("search");
        assert_eq!(hit_ids(&page), vec![unrelated.id.as_str()]);
        let page = f
            .svc
            .search(&ANON, "nothing", None, None)
            .await
            .expect("search");
        assert!(page.items.is_empty(), "the old body is out of the index");
        f.svc.delete(&U2, &in_body.id).await.expect("delete");
        let page = f
            .svc
            .search(&ANON, "rust", None, None)
            .await
            .expect("search");
        assert_eq!(hit_ids(&page), vec![titled.id.as_str()]);
        f.finish().await;
    }
}

#[tokio::test]
async fn tables_follow_the_naming_rule() {
    for f in fixtures().await {
        let tables = f.db.tables().await.expect("tables");
        for t in [
            "service_content_main",
            "service_content_comment",
            "service_content_reaction",
        ] {
            assert!(
                tables.iter().any(|n| n == t),
                "{}: {t} exists",
                f.db.backend()
            );
        }
        for t in tables.iter().filter(|t| t.contains("content")) {
            assert!(t.starts_with("service_content_"), "{t}");
        }
        f.finish().await;
    }
}

#[tokio::test]
async fn search_finds_words_inside_addresses_and_hyphenations_on_both_backends() {
    for f in fixtures().await {
        let c = f
            .svc
            .create(
                &U1,
                post(
                    "article",
                    "Contact",
                    "Write to alice@example.org or see docs.example.com/well-known",
                ),
            )
            .await
            .expect("create");
        for q in ["example", "alice", "known", "well known", "docs"] {
            let hits = f.svc.search(&ANON, q, None, None).await.expect("search");
            assert_eq!(
                hits.items
                    .iter()
                    .map(|h| h.content.id.as_str())
                    .collect::<Vec<_>>(),
                [c.id.as_str()],
                "{}: {q:?}",
                f.db.backend()
            );
        }
        f.finish().await;
    }
}
