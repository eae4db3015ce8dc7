//! The user service on real SQLite (a fresh file per test) and Postgres (a schema per run,
//! when `OVASABI_TEST_DATABASE_URL` is set): registration, login, tokens, profiles, admin
//! operations, RBAC, and the audit rows each change writes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use services::ServiceError;
use services::security::audit::{AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::user::{NewUser, ProfileUpdate, TokenConfig, TokenIssuer, UserFilter, UserService};

struct Fixture {
    users: UserService,
    log: AuditLog,
    home: common::TestDb,
}

impl Fixture {
    async fn with(home: common::TestDb) -> Self {
        let (users, log) = Self::services(home.db.clone()).await;
        Self { users, log, home }
    }

    /// Another node's user service over the same database.
    async fn with_db(db: services::Database) -> Other {
        let (users, _) = Self::services(db).await;
        Other { users }
    }

    async fn services(db: services::Database) -> (UserService, AuditLog) {
        let policies = Policies::load(db.clone()).await.expect("policies");
        let tokens = TokenIssuer::new(TokenConfig {
            secret: b"a test secret that is long enough!!".to_vec(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
        })
        .expect("issuer");
        (
            UserService::new(db.clone(), policies.clone(), Arc::new(tokens)),
            AuditLog::new(db, policies),
        )
    }

    async fn finish(self) {
        self.home.finish().await;
    }
}

/// A second node's user service.
struct Other {
    users: UserService,
}

impl Other {
    async fn sync_now(&self) -> usize {
        self.users.sync_revocations().await.expect("sync")
    }
}

async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases("user").await {
        out.push(Fixture::with(home).await);
    }
    out
}

fn new(username: &str) -> NewUser {
    NewUser {
        username: username.to_owned(),
        email: format!("{username}@example.org"),
        password: "correct horse battery".to_owned(),
        display_name: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn register_login_refresh_and_profile() {
    for f in fixtures().await {
        let anon = Caller::anonymous().from_addr("127.0.0.1:4000");
        let u = f
            .users
            .register(&anon, new("Alice"))
            .await
            .expect("register");
        assert_eq!(u.username, "alice", "usernames are case-insensitive");
        assert_eq!(u.roles, [Role::User]);
        assert!(!u.disabled);

        let t = f
            .users
            .login("alice", "correct horse battery")
            .await
            .expect("login");
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.expires_in, 900);
        let caller = f.users.authenticate(&t.access_token).expect("valid token");
        assert_eq!(caller.user_id(), Some(u.id.as_str()));
        assert!(
            f.users
                .login("ALICE@example.org", "correct horse battery")
                .await
                .is_ok()
        );
        assert!(matches!(
            f.users.login("alice", "wrong password!").await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(matches!(
            f.users.login("nobody", "correct horse battery").await,
            Err(ServiceError::Unauthenticated { .. })
        ));
        assert!(f.users.authenticate(&t.refresh_token).is_err());
        let again = f.users.refresh(&t.refresh_token).await.expect("refresh");
        assert_eq!(again.user.id, u.id);
        assert!(f.users.refresh(&t.access_token).await.is_err());

        assert_eq!(f.users.me(&caller).await.expect("me").id, u.id);
        assert!(matches!(
            f.users.me(&anon).await,
            Err(ServiceError::Unauthenticated { .. })
        ));

        let changed = f
            .users
            .update_profile(
                &caller,
                ProfileUpdate {
                    display_name: Some("Alice A.".into()),
                    new_password: Some("a new long password".into()),
                    current_password: Some("correct horse battery".into()),
                    ..ProfileUpdate::default()
                },
            )
            .await
            .expect("update");
        assert_eq!(changed.display_name, "Alice A.");
        assert!(
            matches!(
                f.users.refresh(&t.refresh_token).await,
                Err(ServiceError::Unauthenticated { .. })
            ),
            "a refresh token issued before a password change is dead"
        );
        assert!(f.users.login("alice", "a new long password").await.is_ok());
        assert!(
            f.users
                .login("alice", "correct horse battery")
                .await
                .is_err()
        );
        assert!(matches!(
            f.users
                .update_profile(
                    &caller,
                    ProfileUpdate {
                        new_password: Some("another password".into()),
                        current_password: Some("wrong".into()),
                        ..ProfileUpdate::default()
                    },
                )
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));

        // Audit: registration (by anonymous, with the address) and the profile change.
        let rows = f
            .log
            .query(
                &Caller::system(),
                &AuditFilter {
                    entity_id: Some(u.id.clone()),
                    ..AuditFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("audit")
            .items;
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["user.register", "user.update_profile"]);
        assert_eq!(rows[0].actor, "anonymous");
        assert_eq!(rows[0].client_addr.as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(rows[1].actor, u.id);
        let text = serde_json::to_string(&rows).expect("json");
        assert!(
            !text.contains("argon2"),
            "no password hash in the audit log"
        );
        f.finish().await;
    }
}

/// The wrong passwords allowed per account (or unknown name) in the guard's window.
const MAX_FAILED_LOGINS: usize = 10;

fn is_rate_limited(r: &Result<services::user::Tokens, ServiceError>) -> bool {
    matches!(r, Err(ServiceError::RateLimited { retry_after_secs, .. }) if *retry_after_secs > 0)
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_whichever_name_is_typed() {
    for f in fixtures().await {
        let anon = Caller::anonymous();
        f.users.register(&anon, new("carol")).await.expect("carol");
        f.users.register(&anon, new("dave")).await.expect("dave");
        // Half the guesses by user name, half by e-mail (in other cases, with spaces).
        for i in 0..MAX_FAILED_LOGINS {
            let login = if i % 2 == 0 {
                "carol"
            } else {
                " Carol@Example.org "
            };
            let r = f.users.login(login, "wrong password!").await;
            assert!(
                matches!(r, Err(ServiceError::Unauthenticated { .. })),
                "guess {i}: {r:?}"
            );
        }
        for login in ["carol", "carol@example.org", "CAROL"] {
            let r = f.users.login(login, "correct horse battery").await;
            assert!(
                is_rate_limited(&r),
                "{login}: locked even with the right password: {r:?}"
            );
        }
        assert!(
            f.users
                .login("dave@example.org", "correct horse battery")
                .await
                .is_ok(),
            "other accounts are not affected"
        );

        // A name that matches no account locks itself, normalised.
        for i in 0..MAX_FAILED_LOGINS {
            let login = if i % 2 == 0 { "nobody" } else { "NoBody " };
            let r = f.users.login(login, "wrong password!").await;
            assert!(
                matches!(r, Err(ServiceError::Unauthenticated { .. })),
                "guess {i}: {r:?}"
            );
        }
        assert!(is_rate_limited(
            &f.users.login("nobody", "wrong password!").await
        ));
        assert!(
            !is_rate_limited(&f.users.login("nobody2", "wrong password!").await),
            "other unknown names are not affected"
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn bad_registrations_are_refused_and_write_nothing() {
    for f in fixtures().await {
        let anon = Caller::anonymous();
        f.users.register(&anon, new("bob")).await.expect("first");
        let cases: Vec<(NewUser, &str)> = vec![
            (
                NewUser {
                    username: "ab".into(),
                    ..new("xx1")
                },
                "username",
            ),
            (
                NewUser {
                    username: "has space".into(),
                    ..new("xx2")
                },
                "username",
            ),
            (
                NewUser {
                    username: "x".repeat(33),
                    ..new("xx3")
                },
                "username",
            ),
            (
                NewUser {
                    email: "not-an-email".into(),
                    ..new("xx4")
                },
                "email",
            ),
            (
                NewUser {
                    email: format!("{}@example.org", "e".repeat(250)),
                    ..new("xx5")
                },
                "email",
            ),
            (
                NewUser {
                    password: "short".into(),
                    ..new("xx6")
                },
                "password",
            ),
            (
                NewUser {
                    password: "p".repeat(129),
                    ..new("xx7")
                },
                "password",
            ),
            (
                NewUser {
                    display_name: Some("\u{7}bell".into()),
                    ..new("xx8")
                },
                "display_name",
            ),
        ];
        for (bad, field) in cases {
            match f.users.register(&anon, bad).await {
                Err(ServiceError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected Invalid {field}, got {other:?}"),
            }
        }
        let dup_name = f
            .users
            .register(
                &anon,
                NewUser {
                    email: "other@example.org".into(),
                    ..new("BOB")
                },
            )
            .await;
        assert!(
            matches!(dup_name, Err(ServiceError::Duplicate { ref message }) if message.contains("username")),
            "{dup_name:?}"
        );
        let dup_mail = f
            .users
            .register(
                &anon,
                NewUser {
                    email: "bob@example.org".into(),
                    ..new("bobby")
                },
            )
            .await;
        assert!(
            matches!(dup_mail, Err(ServiceError::Duplicate { ref message }) if message.contains("email")),
            "{dup_mail:?}"
        );
        let all = f
            .users
            .list(&Caller::system(), &UserFilter::default(), None, None)
            .await
            .expect("list");
        assert_eq!(all.items.len(), 1, "nothing half-written");
        let audit = f
            .log
            .query(&Caller::system(), &AuditFilter::default(), None, None)
            .await
            .expect("audit");
        assert_eq!(
            audit.items.len(),
            1,
            "one audit row, for the one registration"
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn admins_manage_roles_and_accounts_and_others_cannot() {
    for f in fixtures().await {
        let anon = Caller::anonymous();
        let (admin, created) = f
            .users
            .ensure_admin("root", "root@example.org", "the admin password")
            .await
            .expect("bootstrap");
        assert!(created);
        // A name someone else registered first is not made an admin.
        f.users
            .register(&anon, new("squatter"))
            .await
            .expect("squatter");
        assert!(matches!(
            f.users
                .ensure_admin("squatter", "s2@example.org", "the admin password")
                .await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(
            !f.users
                .ensure_admin("root", "root@example.org", "ignored")
                .await
                .expect("again")
                .1
        );
        assert_eq!(admin.roles, [Role::User, Role::Admin]);
        let admin_caller = f
            .users
            .authenticate(&f.users.issue(&admin.id).await.expect("issue").access_token)
            .expect("caller");
        let carol = f.users.register(&anon, new("carol")).await.expect("carol");
        let dave = f.users.register(&anon, new("dave")).await.expect("dave");
        let carol_caller = Caller::user(&carol.id, carol.roles.clone());

        // Only admins manage users.
        for r in [
            f.users
                .set_role(&carol_caller, &dave.id, Role::Admin, true)
                .await
                .err(),
            f.users
                .set_disabled(&carol_caller, &dave.id, true)
                .await
                .err(),
            f.users
                .list(&carol_caller, &UserFilter::default(), None, None)
                .await
                .err(),
            f.users.get(&carol_caller, &dave.id).await.err(),
        ] {
            assert!(matches!(r, Some(ServiceError::Forbidden { .. })), "{r:?}");
        }
        assert!(matches!(
            f.users
                .list(&anon, &UserFilter::default(), None, None)
                .await,
            Err(ServiceError::Unauthenticated { .. })
        ));

        let dave2 = f
            .users
            .set_role(&admin_caller, &dave.id, Role::CampaignManager, true)
            .await
            .expect("grant");
        assert_eq!(dave2.roles, [Role::User, Role::CampaignManager]);
        let again = f
            .users
            .set_role(&admin_caller, &dave.id, Role::CampaignManager, true)
            .await
            .expect("idempotent");
        assert_eq!(again.roles, dave2.roles);
        let managers = f
            .users
            .list(
                &admin_caller,
                &UserFilter {
                    role: Some(Role::CampaignManager),
                    ..UserFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("filter by role");
        assert_eq!(
            managers
                .items
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["dave"]
        );
        // Login reflects the new roles.
        let t = f
            .users
            .login("dave", "correct horse battery")
            .await
            .expect("login");
        assert!(
            f.users
                .authenticate(&t.access_token)
                .expect("c")
                .has_role(Role::CampaignManager)
        );

        f.users
            .set_disabled(&admin_caller, &carol.id, true)
            .await
            .expect("disable");
        assert!(matches!(
            f.users.login("carol", "correct horse battery").await,
            Err(ServiceError::Forbidden { .. })
        ));
        let disabled = f
            .users
            .list(
                &admin_caller,
                &UserFilter {
                    disabled: Some(true),
                    ..UserFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("disabled");
        assert_eq!(disabled.items.len(), 1);
        f.users
            .set_disabled(&admin_caller, &carol.id, false)
            .await
            .expect("enable");
        assert!(
            f.users
                .login("carol", "correct horse battery")
                .await
                .is_ok()
        );

        // Search and pagination; LIKE wildcards in the query are literal.
        let q = |s: &str| UserFilter {
            query: Some(s.into()),
            ..UserFilter::default()
        };
        assert_eq!(
            f.users
                .list(&admin_caller, &q("CAR"), None, None)
                .await
                .expect("q")
                .items
                .len(),
            1
        );
        assert_eq!(
            f.users
                .list(&admin_caller, &q("%"), None, None)
                .await
                .expect("q")
                .items
                .len(),
            0
        );
        assert_eq!(
            f.users
                .list(&admin_caller, &q("_"), None, None)
                .await
                .expect("q")
                .items
                .len(),
            0
        );
        let p1 = f
            .users
            .list(&admin_caller, &UserFilter::default(), Some(2), None)
            .await
            .expect("p1");
        assert_eq!(p1.items.len(), 2);
        let p2 = f
            .users
            .list(
                &admin_caller,
                &UserFilter::default(),
                Some(2),
                p1.next_cursor.as_deref(),
            )
            .await
            .expect("p2");
        assert_eq!(p2.items.len(), 2);
        assert!(p2.next_cursor.is_none());
        assert!(matches!(
            f.users
                .list(&admin_caller, &UserFilter::default(), Some(0), None)
                .await,
            Err(ServiceError::Invalid { .. })
        ));

        // Self-protection and unknown ids.
        assert!(matches!(
            f.users.set_disabled(&admin_caller, &admin.id, true).await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(matches!(
            f.users
                .set_role(&admin_caller, &admin.id, Role::Admin, false)
                .await,
            Err(ServiceError::Conflict { .. })
        ));
        assert!(matches!(
            f.users.set_disabled(&admin_caller, "nope", true).await,
            Err(ServiceError::NotFound { .. })
        ));

        let rows = f
            .log
            .query(
                &admin_caller,
                &AuditFilter {
                    actor: Some(admin.id.clone()),
                    ..AuditFilter::default()
                },
                None,
                None,
            )
            .await
            .expect("audit")
            .items;
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "user.grant_role",
                "user.grant_role",
                "user.disable",
                "user.enable"
            ]
        );
        assert_eq!(
            rows[2].before.as_ref().and_then(|v| v.get("disabled")),
            Some(&serde_json::json!(false))
        );
        assert_eq!(
            rows[2].after.as_ref().and_then(|v| v.get("disabled")),
            Some(&serde_json::json!(true))
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn revocations_refuse_older_tokens_here_at_once_and_elsewhere_after_a_sync() {
    for f in fixtures().await {
        // A second node: its own service over the same database.
        let other = Fixture::with_db(f.home.db.clone()).await;
        assert_eq!(other.sync_now().await, 0, "nothing revoked yet");
        let admin = Caller::system();
        let u = f
            .users
            .register(&Caller::anonymous(), new("rita"))
            .await
            .expect("register");
        let login = || f.users.login("rita", "correct horse battery");
        let t0 = login().await.expect("login").access_token;
        assert!(other.users.authenticate(&t0).is_ok());

        // A display-name change revokes nothing.
        let me = f.users.authenticate(&t0).expect("valid");
        let change = ProfileUpdate {
            display_name: Some("Rita".into()),
            ..ProfileUpdate::default()
        };
        f.users.update_profile(&me, change).await.expect("rename");
        assert!(f.users.authenticate(&t0).is_ok());
        assert_eq!(other.sync_now().await, 0);

        // Disabling does: here at once, on the other node after its next sync.
        f.users
            .set_disabled(&admin, &u.id, true)
            .await
            .expect("disable");
        let refused = |r: Result<Caller, ServiceError>| matches!(r, Err(ServiceError::Unauthenticated { message }) if message.contains("revoked"));
        assert!(refused(f.users.authenticate(&t0)));
        assert!(other.users.authenticate(&t0).is_ok(), "not synced yet");
        assert_eq!(other.sync_now().await, 1);
        assert!(refused(other.users.authenticate(&t0)));
        assert_eq!(other.sync_now().await, 0, "the next sync is no news");
        assert_eq!(
            other.users.revocations().take_pending().len(),
            1,
            "queued for closing the account's sessions"
        );

        // Tokens issued after it are accepted everywhere.
        f.users
            .set_disabled(&admin, &u.id, false)
            .await
            .expect("enable");
        let t1 = login().await.expect("login").access_token;
        assert!(f.users.authenticate(&t1).is_ok());
        assert!(other.users.authenticate(&t1).is_ok());

        // A role change and a password change revoke too.
        f.users
            .set_role(&admin, &u.id, Role::CampaignManager, true)
            .await
            .expect("grant");
        assert!(refused(f.users.authenticate(&t1)));
        let t2 = login().await.expect("login").access_token;
        let me = f.users.authenticate(&t2).expect("valid");
        let change = ProfileUpdate {
            current_password: Some("correct horse battery".into()),
            new_password: Some("a brand new password".into()),
            ..ProfileUpdate::default()
        };
        f.users.update_profile(&me, change).await.expect("password");
        assert!(refused(f.users.authenticate(&t2)));
        other.sync_now().await;
        assert!(refused(other.users.authenticate(&t2)));

        // A node started later learns the revocations of the last token lifetime.
        let late = Fixture::with_db(f.home.db.clone()).await;
        assert!(late.sync_now().await >= 1);
        assert!(refused(late.users.authenticate(&t2)));
        f.finish().await;
    }
}
