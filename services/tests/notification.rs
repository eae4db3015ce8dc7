//! The notification service on real SQLite (a fresh file per test) and Postgres (a schema per
//! run, when `OVASABI_TEST_DATABASE_URL` is set): templates (MiniJinja checks, RBAC), sends
//! (recipients, the locale fallback chain, missing variables, HTML escaping), the inbox,
//! preferences, and the outbox drained by the worker: realtime pushes to a recording sink
//! (retries, failures, two nodes racing), email to an SMTP server the test runs on a loopback
//! port, and signed webhooks to an HTTP receiver the test runs too.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use services::localization::{LocalizationConfig, LocalizationService};
use services::notification::delivery::verify;
use services::notification::{
    Category, Channel, Delivery, DeliveryConfig, DeliveryStatus, InboxFilter, NewWebhook,
    Notification, NotificationService, Preferences, PreferencesUpdate, RealtimeSink, Recipients,
    SendRequest, TemplateInput, WebhookOwner,
};
use services::security::audit::{AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::user::{NewUser, ProfileUpdate, TokenConfig, TokenIssuer, User, UserService};
use services::{Database, ServiceError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ----- fixtures -------------------------------------------------------------------------------

struct Fixture {
    db: Database,
    policies: Policies,
    l10n: LocalizationService,
    users: UserService,
    log: AuditLog,
    home: common::TestDb,
}

async fn fixtures(tag: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases(tag).await {
        let db = home.db.clone();
        let policies = Policies::load(db.clone()).await.expect("policies");
        let tokens = TokenIssuer::new(TokenConfig {
            secret: b"a test secret that is long enough!!".to_vec(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
        })
        .expect("issuer");
        out.push(Fixture {
            l10n: LocalizationService::new(
                db.clone(),
                policies.clone(),
                LocalizationConfig::default(),
            )
            .expect("localization service"),
            users: UserService::new(db.clone(), policies.clone(), Arc::new(tokens)),
            log: AuditLog::new(db.clone(), policies.clone()),
            policies,
            db,
            home,
        });
    }
    out
}

impl Fixture {
    /// A notification service (a node) over this database.
    fn service(&self, sink: Arc<dyn RealtimeSink>, config: DeliveryConfig) -> NotificationService {
        NotificationService::new(
            self.db.clone(),
            self.policies.clone(),
            self.l10n.clone(),
            sink,
            config,
        )
        .expect("notification service")
    }

    /// Registers `name` (display name: the name capitalised), grants it `roles` besides
    /// `user`, and returns it with its caller.
    async fn user(&self, name: &str, roles: &[Role]) -> (User, Caller) {
        let mut display = name.to_owned();
        if let Some(first) = display.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let mut u = self
            .users
            .register(
                &Caller::anonymous(),
                NewUser {
                    username: name.to_owned(),
                    email: format!("{name}@example.org"),
                    password: "correct horse battery".to_owned(),
                    display_name: Some(display),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("register {name}: {e}"));
        for role in roles {
            u = self
                .users
                .set_role(&Caller::system(), &u.id, *role, true)
                .await
                .unwrap_or_else(|e| panic!("grant {role:?} to {name}: {e}"));
        }
        let caller = Caller::user(&u.id, u.roles.clone());
        (u, caller)
    }

    /// Sets the profile locale of the caller.
    async fn set_locale(&self, caller: &Caller, locale: &str) -> User {
        self.users
            .update_profile(
                caller,
                ProfileUpdate {
                    locale: Some(locale.to_owned()),
                    ..ProfileUpdate::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("set locale {locale}: {e}"))
    }

    /// The audit actions about `entity_id` (or of `action`, if given), oldest first.
    async fn audit(&self, entity_id: Option<&str>, action: Option<&str>) -> Vec<String> {
        let filter = AuditFilter {
            entity_id: entity_id.map(str::to_owned),
            action: action.map(str::to_owned),
            ..AuditFilter::default()
        };
        self.log
            .query(&Caller::system(), &filter, Some(500), None)
            .await
            .expect("audit")
            .items
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    async fn finish(self) {
        self.home.finish().await;
    }
}

/// Retries a few milliseconds apart.
fn fast(max_attempts: u32) -> DeliveryConfig {
    DeliveryConfig {
        max_attempts,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        webhook_timeout: Duration::from_secs(10),
        smtp_timeout: Duration::from_secs(10),
        ..DeliveryConfig::default()
    }
}

/// A realtime sink that records every push it accepts; it refuses the next `fail_next`
/// pushes, and every push while `fail_always` is set.
#[derive(Default)]
struct Recorder {
    pushes: Mutex<Vec<(String, Value)>>,
    fail_next: AtomicU32,
    fail_always: AtomicBool,
    refused: AtomicU32,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn pushes(&self) -> Vec<(String, Value)> {
        self.pushes.lock().expect("pushes").clone()
    }

    /// How many accepted pushes carried the notification `id`.
    fn count(&self, id: &str) -> usize {
        self.pushes()
            .iter()
            .filter(|(_, p)| p["id"] == json!(id))
            .count()
    }
}

impl RealtimeSink for Recorder {
    fn push(&self, user: &str, notification: Box<RawValue>) -> BoxFuture<'_, Result<(), String>> {
        let user = user.to_owned();
        Box::pin(async move {
            let refuse = self.fail_always.load(Ordering::SeqCst)
                || self
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if refuse {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err("the bus is down".to_owned());
            }
            let payload: Value =
                serde_json::from_str(notification.get()).map_err(|e| e.to_string())?;
            self.pushes.lock().expect("pushes").push((user, payload));
            Ok(())
        })
    }
}

// ----- helpers --------------------------------------------------------------------------------

fn input(category: Category, subject: &str, text: &str, html: Option<&str>) -> TemplateInput {
    TemplateInput {
        category,
        subject: subject.to_owned(),
        text: text.to_owned(),
        html: html.map(str::to_owned),
    }
}

fn vars(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("variables must be an object, not {other}"),
    }
}

fn to_users(template: &str, ids: &[&str], channels: &[Channel], variables: Value) -> SendRequest {
    SendRequest {
        template: template.to_owned(),
        variables: vars(variables),
        channels: channels.to_vec(),
        recipients: Recipients {
            user_ids: Some(ids.iter().map(|s| (*s).to_owned()).collect()),
            role: None,
        },
        campaign_id: None,
    }
}

fn to_role(template: &str, role: &str, channels: &[Channel], variables: Value) -> SendRequest {
    SendRequest {
        recipients: Recipients {
            user_ids: None,
            role: Some(role.to_owned()),
        },
        ..to_users(template, &[], channels, variables)
    }
}

/// The whole inbox of `caller`, newest first.
async fn inbox(svc: &NotificationService, caller: &Caller) -> Vec<Notification> {
    let filter = InboxFilter {
        limit: Some(500),
        ..InboxFilter::default()
    };
    svc.inbox(caller, filter).await.expect("inbox").items
}

async fn unread(svc: &NotificationService, caller: &Caller) -> u64 {
    svc.unread(caller).await.expect("unread").unread
}

/// The deliveries of one send.
async fn batch(svc: &NotificationService, sender: &Caller, batch_id: &str) -> Vec<Delivery> {
    svc.batch_deliveries(sender, batch_id, Some(500), None)
        .await
        .expect("batch deliveries")
        .items
}

/// Runs `node`'s worker until no delivery of the send is pending any more; returns them.
async fn drain(
    svc: &NotificationService,
    node: &str,
    sender: &Caller,
    batch_id: &str,
) -> Vec<Delivery> {
    const ROUNDS: usize = 500;
    for _ in 0..ROUNDS {
        svc.deliver_due(node).await.expect("deliver_due");
        let ds = batch(svc, sender, batch_id).await;
        if ds.iter().all(|d| d.status != DeliveryStatus::Pending) {
            return ds;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "deliveries of {batch_id} still pending after {ROUNDS} rounds: {:#?}",
        batch(svc, sender, batch_id).await
    );
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, ServiceError>, field: &str) -> String {
    match r {
        Err(ServiceError::Invalid { field: f, message }) => {
            assert_eq!(f, field, "wrong field (message: {message})");
            message
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

// ----- templates ------------------------------------------------------------------------------

#[tokio::test]
async fn templates_are_checked_stored_listed_deleted_and_guarded() {
    for f in fixtures("notif_templates").await {
        eprintln!("backend: {}", f.db.backend());
        let svc = f.service(Recorder::new(), DeliveryConfig::default());
        let (maria, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (tom, translator) = f.user("tom", &[Role::LocalizationManager]).await;
        let (_, plain) = f.user("paul", &[]).await;
        let anon = Caller::anonymous();

        // Created, then replaced.
        let (t, created) = svc
            .put_template(
                &manager,
                "order.shipped",
                "en",
                input(
                    Category::Transactional,
                    "Order {{ order }} shipped",
                    "Hi {{ user.display_name }}, order {{ order }} ships {% if express %}tomorrow{% else %}soon{% endif %}.",
                    Some("<p>Order <b>{{ order }}</b></p>"),
                ),
            )
            .await
            .expect("put");
        assert!(created);
        assert_eq!(t.key, "order.shipped");
        assert_eq!(t.locale, "en");
        assert_eq!(t.category, Category::Transactional);
        assert_eq!(
            t.variables,
            ["express", "order"],
            "`user` is not a variable"
        );
        assert_eq!(t.updated_by, maria.id);
        assert_eq!(t.html.as_deref(), Some("<p>Order <b>{{ order }}</b></p>"));
        let (t2, created) = svc
            .put_template(
                &translator,
                "order.shipped",
                "en",
                input(
                    Category::Marketing,
                    "Shipped: {{ order }}",
                    "Order {{ order }} is on its way.",
                    None,
                ),
            )
            .await
            .expect("replace");
        assert!(!created, "the second put replaces");
        assert_eq!(t2.created_at, t.created_at, "created_at survives a replace");
        assert_eq!(t2.updated_by, tom.id);
        assert_eq!(t2.category, Category::Marketing);
        assert_eq!(t2.variables, ["order"]);
        assert_eq!(t2.html, None);
        let got = svc
            .template(&manager, "order.shipped", "en")
            .await
            .expect("get");
        assert_eq!(got, t2, "get returns what the put returned");

        // Locales are stored in canonical form.
        let (fr_ca, _) = svc
            .put_template(
                &manager,
                "order.shipped",
                "fr-ca",
                input(
                    Category::Marketing,
                    "Expédiée",
                    "Commande {{ order }}.",
                    None,
                ),
            )
            .await
            .expect("put fr-CA");
        assert_eq!(fr_ca.locale, "fr-CA");
        assert_eq!(
            svc.template(&manager, "order.shipped", "FR-ca")
                .await
                .expect("get fr-CA")
                .subject,
            "Expédiée"
        );
        for (key, locale) in [("order.shipped", "fr"), ("welcome", "en")] {
            svc.put_template(
                &manager,
                key,
                locale,
                input(Category::Transactional, "Subject", "Text", None),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}/{locale}: {e}"));
        }

        // Listed by key then locale, a page at a time (with those the migrations seed).
        let p1 = svc
            .templates(&manager, None, Some(5), None)
            .await
            .expect("page 1");
        let names = |p: &[services::notification::Template]| -> Vec<String> {
            p.iter()
                .map(|t| format!("{}/{}", t.key, t.locale))
                .collect()
        };
        assert_eq!(
            names(&p1.items),
            [
                "campaign.launched/en",
                "commerce.payment_succeeded/en",
                "commerce.refunded/en",
                "order.shipped/en",
                "order.shipped/fr"
            ]
        );
        assert_eq!(
            p1.items[3].variables,
            ["order"],
            "listed with their variables"
        );
        let cursor = p1.next_cursor.expect("a next page");
        let p2 = svc
            .templates(&manager, None, Some(5), Some(&cursor))
            .await
            .expect("page 2");
        assert_eq!(
            names(&p2.items),
            [
                "order.shipped/fr-CA",
                "referral.held/en",
                "referral.joined/en",
                "referral.rewarded/en",
                "talent.booked/en"
            ]
        );
        let cursor = p2.next_cursor.expect("a third page");
        let p3 = svc
            .templates(&manager, None, Some(5), Some(&cursor))
            .await
            .expect("page 3");
        assert_eq!(
            names(&p3.items),
            ["talent.booking_confirmed/en", "welcome/en"]
        );
        assert!(p3.next_cursor.is_none(), "the last page");
        let only = svc
            .templates(&translator, Some("welcome"), None, None)
            .await
            .expect("one key");
        assert_eq!(names(&only.items), ["welcome/en"]);
        assert_invalid(
            svc.templates(&manager, None, None, Some("no-slash")).await,
            "cursor",
        );
        assert_invalid(svc.templates(&manager, None, Some(0), None).await, "limit");
        assert_invalid(
            svc.templates(&manager, Some("bad key"), None, None).await,
            "key",
        );

        // Deleted: returned, then gone.
        let gone = svc
            .delete_template(&manager, "order.shipped", "fr-CA")
            .await
            .expect("delete");
        assert_eq!(gone.locale, "fr-CA");
        assert_eq!(gone.subject, "Expédiée");
        assert_not_found(
            svc.template(&manager, "order.shipped", "fr-CA").await,
            "notification template",
        );
        assert_not_found(
            svc.delete_template(&manager, "order.shipped", "fr-CA")
                .await,
            "notification template",
        );
        assert_eq!(
            svc.templates(&manager, Some("order.shipped"), None, None)
                .await
                .expect("list")
                .items
                .len(),
            2
        );

        assert_eq!(
            f.audit(Some("order.shipped/en"), None).await,
            ["notification.template.put", "notification.template.put"]
        );
        assert_eq!(
            f.audit(Some("order.shipped/fr-CA"), None).await,
            ["notification.template.put", "notification.template.delete"]
        );

        // A part that does not parse is refused, named, with its line.
        let broken = [
            (
                "subject",
                input(Category::Transactional, "Hi {{ name", "ok", None),
            ),
            (
                "text",
                input(
                    Category::Transactional,
                    "ok",
                    "line one\n{% if x %}never closed",
                    None,
                ),
            ),
            (
                "html",
                input(
                    Category::Transactional,
                    "ok",
                    "ok",
                    Some("<p>{% for %}</p>"),
                ),
            ),
        ];
        for (field, bad) in broken {
            let message =
                assert_invalid(svc.put_template(&manager, "broken", "en", bad).await, field);
            assert!(message.contains("line"), "{field}: {message}");
        }
        assert_invalid(
            svc.put_template(
                &manager,
                "broken",
                "en",
                input(Category::Transactional, "", "text", None),
            )
            .await,
            "subject",
        );
        assert_not_found(
            svc.template(&manager, "broken", "en").await,
            "notification template",
        );

        // Bad keys and locales.
        let ok = || input(Category::Transactional, "s", "t", None);
        for key in ["has space", "a/b", "", &"k".repeat(129)] {
            assert_invalid(svc.put_template(&manager, key, "en", ok()).await, "key");
        }
        for locale in ["not a locale", "", "e"] {
            assert_invalid(
                svc.put_template(&manager, "welcome", locale, ok()).await,
                "locale",
            );
        }
        assert_invalid(svc.template(&manager, "welcome", "??").await, "locale");

        // RBAC: plain users may not touch templates; anonymous callers must sign in.
        assert_forbidden(svc.put_template(&plain, "welcome", "en", ok()).await);
        assert_forbidden(svc.template(&plain, "welcome", "en").await);
        assert_forbidden(svc.templates(&plain, None, None, None).await);
        assert_forbidden(svc.delete_template(&plain, "welcome", "en").await);
        assert_unauthenticated(svc.put_template(&anon, "welcome", "en", ok()).await);
        assert_unauthenticated(svc.template(&anon, "welcome", "en").await);
        assert_unauthenticated(svc.templates(&anon, None, None, None).await);
        assert!(
            svc.template(&manager, "welcome", "en").await.is_ok(),
            "the refused delete deleted nothing"
        );
        f.finish().await;
    }
}

// ----- sending --------------------------------------------------------------------------------

#[tokio::test]
async fn sends_pick_each_recipients_locale_and_are_checked_whole() {
    for f in fixtures("notif_send").await {
        eprintln!("backend: {}", f.db.backend());
        let svc = f.service(Recorder::new(), DeliveryConfig::default());
        let (maria, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (bob, bob_c) = f.user("bob", &[]).await;
        let (carol, carol_c) = f.user("carol", &[]).await;
        assert_eq!(
            f.set_locale(&alice_c, "fr-CA").await.locale.as_deref(),
            Some("fr-CA")
        );
        f.set_locale(&carol_c, "de-AT").await;

        svc.put_template(
            &manager,
            "welcome",
            "en",
            input(
                Category::Transactional,
                "Welcome, {{ user.display_name }}",
                "Hello {{ user.display_name }}, your code is {{ code }}.",
                Some("<p>Hello {{ user.display_name }}, your code is <b>{{ code }}</b>.</p>"),
            ),
        )
        .await
        .expect("en");
        // The French template uses one more variable than the English one.
        svc.put_template(
            &manager,
            "welcome",
            "fr",
            input(
                Category::Transactional,
                "Bienvenue, {{ user.display_name }}",
                "Bonjour {{ user.display_name }}, votre code est {{ code }}.{% if vip %} Merci !{% endif %}",
                Some("<p>Bonjour {{ user.display_name }}, votre code est <b>{{ code }}</b>.</p>"),
            ),
        )
        .await
        .expect("fr");
        let everyone = [&manager, &alice_c, &bob_c, &carol_c];
        let ab = [alice.id.as_str(), bob.id.as_str()];

        // Refused sends store nothing.
        let message = assert_invalid(
            svc.send(
                &manager,
                to_users("welcome", &ab, &[Channel::InApp], json!({"code": "1"})),
            )
            .await,
            "variables.vip",
        );
        assert!(message.contains("welcome/fr"), "{message}");
        assert_invalid(
            svc.send(
                &manager,
                to_users("welcome", &[bob.id.as_str()], &[Channel::InApp], json!({})),
            )
            .await,
            "variables.code",
        );
        assert_not_found(
            svc.send(
                &manager,
                to_users("nope", &ab, &[Channel::InApp], json!({})),
            )
            .await,
            "notification template",
        );
        assert_invalid(
            svc.send(
                &manager,
                to_users("bad key", &ab, &[Channel::InApp], json!({})),
            )
            .await,
            "template",
        );
        let both = SendRequest {
            recipients: Recipients {
                user_ids: Some(vec![bob.id.clone()]),
                role: Some("user".to_owned()),
            },
            ..to_users("welcome", &[], &[Channel::InApp], json!({"code": "1"}))
        };
        assert_invalid(svc.send(&manager, both).await, "recipients");
        let neither = SendRequest {
            recipients: Recipients::default(),
            ..to_users("welcome", &[], &[Channel::InApp], json!({"code": "1"}))
        };
        assert_invalid(svc.send(&manager, neither).await, "recipients");
        assert_invalid(
            svc.send(
                &manager,
                to_users(
                    "welcome",
                    &["nope"],
                    &[Channel::InApp],
                    json!({"code": "1"}),
                ),
            )
            .await,
            "recipients.user_ids[0]",
        );
        assert_invalid(
            svc.send(
                &manager,
                to_users(
                    "welcome",
                    &[bob.id.as_str(), "nope"],
                    &[Channel::InApp],
                    json!({"code": "1"}),
                ),
            )
            .await,
            "recipients.user_ids[1]",
        );
        assert_invalid(
            svc.send(
                &manager,
                to_users("welcome", &[], &[Channel::InApp], json!({"code": "1"})),
            )
            .await,
            "recipients.user_ids",
        );
        assert_invalid(
            svc.send(
                &manager,
                to_role(
                    "welcome",
                    "emperor",
                    &[Channel::InApp],
                    json!({"code": "1"}),
                ),
            )
            .await,
            "recipients.role",
        );
        assert_invalid(
            svc.send(
                &manager,
                to_users("welcome", &[bob.id.as_str()], &[], json!({"code": "1"})),
            )
            .await,
            "channels",
        );
        // Senders need `send`.
        let ok = || {
            to_users(
                "welcome",
                &[bob.id.as_str()],
                &[Channel::InApp],
                json!({"code": "1"}),
            )
        };
        assert_forbidden(svc.send(&alice_c, ok()).await);
        assert_unauthenticated(svc.send(&Caller::anonymous(), ok()).await);
        for c in everyone {
            assert!(
                inbox(&svc, c).await.is_empty(),
                "a refused send stores nothing"
            );
            assert_eq!(unread(&svc, c).await, 0);
        }
        assert!(
            f.audit(None, Some("notification.send")).await.is_empty(),
            "a refused send writes no audit row"
        );

        // To named users: each in the locale of their profile, through the fallback chain.
        let variables = json!({"code": "<b>42</b>", "vip": true});
        let sent = svc
            .send(
                &manager,
                to_users(
                    "welcome",
                    &[
                        alice.id.as_str(),
                        bob.id.as_str(),
                        carol.id.as_str(),
                        alice.id.as_str(),
                    ],
                    &[Channel::InApp],
                    variables.clone(),
                ),
            )
            .await
            .expect("send");
        assert_eq!(sent.notifications, 3, "a repeated id is one recipient");
        assert_eq!((sent.deliveries, sent.skipped), (0, 0));

        let a = inbox(&svc, &alice_c).await;
        assert_eq!(a.len(), 1);
        let a = &a[0];
        assert_eq!(a.locale, "fr", "fr-CA falls back to fr");
        assert_eq!(a.subject, "Bienvenue, Alice");
        assert_eq!(a.text, "Bonjour Alice, votre code est <b>42</b>. Merci !");
        assert_eq!(
            a.html.as_deref(),
            Some("<p>Bonjour Alice, votre code est <b>&lt;b&gt;42&lt;&#x2f;b&gt;</b>.</p>"),
            "variables are escaped in the HTML part only"
        );
        assert_eq!(a.batch_id, sent.batch_id);
        assert_eq!(a.user_id, alice.id);
        assert_eq!(a.template, "welcome");
        assert_eq!(a.category, Category::Transactional);
        assert_eq!(a.data, variables);
        assert_eq!(a.channels, [Channel::InApp]);
        assert_eq!(a.created_by, maria.id);
        assert!(!a.read);
        assert_eq!(
            f.audit(Some(&sent.batch_id), None).await,
            ["notification.send"]
        );
        for (caller, name) in [(&bob_c, "Bob"), (&carol_c, "Carol")] {
            let n = inbox(&svc, caller).await;
            assert_eq!(n.len(), 1);
            assert_eq!(
                n[0].locale, "en",
                "{name}: no template of their own: the default"
            );
            assert_eq!(n[0].subject, format!("Welcome, {name}"));
            assert_eq!(n[0].text, format!("Hello {name}, your code is <b>42</b>."));
        }
        assert!(inbox(&svc, &manager).await.is_empty());

        // To a role: every active user holding it.
        let managers = svc
            .send(
                &manager,
                to_role(
                    "welcome",
                    "campaign_manager",
                    &[Channel::InApp],
                    json!({"code": "7"}),
                ),
            )
            .await
            .expect("send to a role");
        assert_eq!(managers.notifications, 1);
        let m = inbox(&svc, &manager).await;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].subject, "Welcome, Maria");
        assert_eq!(m[0].batch_id, managers.batch_id);
        let all = svc
            .send(
                &manager,
                to_role(
                    "welcome",
                    "user",
                    &[Channel::InApp],
                    json!({"code": "8", "vip": false}),
                ),
            )
            .await
            .expect("send to everyone");
        assert_eq!(all.notifications, 4);
        let newest = &inbox(&svc, &alice_c).await[0];
        assert_eq!(newest.batch_id, all.batch_id);
        assert_eq!(newest.text, "Bonjour Alice, votre code est 8.");

        // Disabled users are not recipients.
        f.users
            .set_disabled(&Caller::system(), &carol.id, true)
            .await
            .expect("disable");
        assert_invalid(
            svc.send(
                &manager,
                to_users(
                    "welcome",
                    &[carol.id.as_str()],
                    &[Channel::InApp],
                    json!({"code": "9"}),
                ),
            )
            .await,
            "recipients.user_ids[0]",
        );
        let again = svc
            .send(
                &manager,
                to_role(
                    "welcome",
                    "user",
                    &[Channel::InApp],
                    json!({"code": "9", "vip": false}),
                ),
            )
            .await
            .expect("send to everyone but carol");
        assert_eq!(again.notifications, 3);
        f.finish().await;
    }
}

// ----- the inbox ------------------------------------------------------------------------------

#[tokio::test]
async fn the_inbox_pages_newest_first_and_tracks_reads() {
    for f in fixtures("notif_inbox").await {
        eprintln!("backend: {}", f.db.backend());
        let svc = f.service(Recorder::new(), DeliveryConfig::default());
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (_, bob_c) = f.user("bob", &[]).await;
        svc.put_template(
            &manager,
            "note",
            "en",
            input(
                Category::Transactional,
                "Note {{ n }}",
                "Number {{ n }}",
                None,
            ),
        )
        .await
        .expect("template");
        for n in 0..5 {
            svc.send(
                &manager,
                to_users(
                    "note",
                    &[alice.id.as_str()],
                    &[Channel::InApp],
                    json!({ "n": n }),
                ),
            )
            .await
            .expect("send");
        }
        assert_eq!(unread(&svc, &alice_c).await, 5);

        // Newest first, a page at a time.
        let mut subjects = Vec::new();
        let mut all = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = svc
                .inbox(
                    &alice_c,
                    InboxFilter {
                        limit: Some(2),
                        cursor: cursor.clone(),
                        ..InboxFilter::default()
                    },
                )
                .await
                .expect("page");
            pages += 1;
            assert!(page.items.len() <= 2);
            subjects.extend(page.items.iter().map(|n| n.subject.clone()));
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 10, "the pages never end");
        }
        assert_eq!(pages, 3);
        assert_eq!(subjects, ["Note 4", "Note 3", "Note 2", "Note 1", "Note 0"]);
        let id = |n: usize| all[4 - n].id.clone();
        assert_eq!(
            svc.get(&alice_c, &id(2)).await.expect("get"),
            all[2],
            "get returns the inbox item"
        );

        // Marking read is idempotent.
        let read = svc.mark_read(&alice_c, &id(4)).await.expect("read");
        assert!(read.read);
        assert!(read.read_at.is_some());
        let again = svc.mark_read(&alice_c, &id(4)).await.expect("read again");
        assert_eq!(again, read, "marking it read again changes nothing");
        assert_eq!(
            f.audit(Some(&id(4)), None).await,
            ["notification.read"],
            "one audit row: the second mark changed nothing"
        );
        assert_eq!(unread(&svc, &alice_c).await, 4);
        let unread_only = svc
            .inbox(
                &alice_c,
                InboxFilter {
                    unread_only: true,
                    ..InboxFilter::default()
                },
            )
            .await
            .expect("unread only")
            .items;
        assert_eq!(
            unread_only
                .iter()
                .map(|n| n.subject.as_str())
                .collect::<Vec<_>>(),
            ["Note 3", "Note 2", "Note 1", "Note 0"]
        );
        assert_eq!(svc.mark_all_read(&alice_c).await.expect("all").marked, 4);
        assert_eq!(
            svc.mark_all_read(&alice_c).await.expect("all again").marked,
            0
        );
        assert_eq!(unread(&svc, &alice_c).await, 0);
        assert!(inbox(&svc, &alice_c).await.iter().all(|n| n.read));
        assert_eq!(
            svc.get(&alice_c, &id(4)).await.expect("get").read_at,
            read.read_at,
            "mark all read leaves read ones alone"
        );

        // Deleted: out of the inbox.
        svc.delete(&alice_c, &id(3)).await.expect("delete");
        assert_not_found(svc.get(&alice_c, &id(3)).await, "notification");
        assert_not_found(svc.delete(&alice_c, &id(3)).await, "notification");
        assert_not_found(svc.mark_read(&alice_c, &id(3)).await, "notification");
        assert_eq!(
            inbox(&svc, &alice_c)
                .await
                .iter()
                .map(|n| n.subject.as_str())
                .collect::<Vec<_>>(),
            ["Note 4", "Note 2", "Note 1", "Note 0"]
        );

        // Someone else's notifications do not exist for a user.
        assert_not_found(svc.get(&bob_c, &id(4)).await, "notification");
        assert_not_found(svc.mark_read(&bob_c, &id(2)).await, "notification");
        assert_not_found(svc.delete(&bob_c, &id(2)).await, "notification");
        assert_not_found(svc.deliveries(&bob_c, &id(2)).await, "notification");
        assert!(svc.get(&alice_c, &id(2)).await.is_ok(), "still alice's");
        assert!(inbox(&svc, &bob_c).await.is_empty());
        assert_eq!(unread(&svc, &bob_c).await, 0);
        assert_not_found(svc.get(&alice_c, "no-such-id").await, "notification");

        assert_unauthenticated(
            svc.inbox(&Caller::anonymous(), InboxFilter::default())
                .await,
        );
        assert_unauthenticated(svc.unread(&Caller::anonymous()).await);
        assert_invalid(
            svc.inbox(
                &alice_c,
                InboxFilter {
                    limit: Some(0),
                    ..InboxFilter::default()
                },
            )
            .await,
            "limit",
        );
        f.finish().await;
    }
}

// ----- preferences ----------------------------------------------------------------------------

#[tokio::test]
async fn marketing_respects_opt_outs_and_transactional_does_not() {
    for f in fixtures("notif_prefs").await {
        eprintln!("backend: {}", f.db.backend());
        // Email is configured (nothing is delivered in this test: no worker runs).
        let config = DeliveryConfig {
            smtp_url: Some("smtp://127.0.0.1:9".to_owned()),
            ..DeliveryConfig::default()
        };
        let svc = f.service(Recorder::new(), config);
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;

        let all_on = Preferences {
            in_app: true,
            realtime: true,
            email: true,
            webhook: true,
        };
        assert_eq!(svc.preferences(&alice_c).await.expect("defaults"), all_on);
        assert_eq!(Preferences::default(), all_on);
        assert_invalid(
            svc.set_preferences(&alice_c, PreferencesUpdate::default())
                .await,
            "body",
        );
        assert_unauthenticated(svc.preferences(&Caller::anonymous()).await);
        let after = svc
            .set_preferences(
                &alice_c,
                PreferencesUpdate {
                    email: Some(false),
                    webhook: Some(false),
                    ..PreferencesUpdate::default()
                },
            )
            .await
            .expect("opt out");
        let expected = Preferences {
            email: false,
            webhook: false,
            ..all_on
        };
        assert_eq!(after, expected);
        assert_eq!(svc.preferences(&alice_c).await.expect("read"), expected);

        svc.create_webhook(
            &alice_c,
            NewWebhook {
                url: "http://127.0.0.1:9/hook".to_owned(),
                campaign_id: None,
            },
        )
        .await
        .expect("webhook");
        for (key, category) in [
            ("promo", Category::Marketing),
            ("receipt", Category::Transactional),
        ] {
            svc.put_template(
                &manager,
                key,
                "en",
                input(category, "{{ what }}", "About {{ what }}", None),
            )
            .await
            .expect("template");
        }
        let every = [
            Channel::InApp,
            Channel::Realtime,
            Channel::Email,
            Channel::Webhook,
        ];
        let status_of = |ds: &[Delivery], channel: Channel| -> (DeliveryStatus, Option<String>) {
            let d = ds
                .iter()
                .find(|d| d.channel == channel)
                .unwrap_or_else(|| panic!("no {channel:?} delivery in {ds:#?}"));
            (d.status, d.last_error.clone())
        };

        // Marketing: the opted-out channels are skipped (and recorded so).
        let promo = svc
            .send(
                &manager,
                to_users(
                    "promo",
                    &[alice.id.as_str()],
                    &every,
                    json!({"what": "sale"}),
                ),
            )
            .await
            .expect("promo");
        assert_eq!(
            (promo.notifications, promo.deliveries, promo.skipped),
            (1, 1, 2)
        );
        let ds = batch(&svc, &manager, &promo.batch_id).await;
        assert_eq!(ds.len(), 3, "realtime, email and webhook rows: {ds:#?}");
        assert_eq!(
            status_of(&ds, Channel::Realtime),
            (DeliveryStatus::Pending, None)
        );
        for channel in [Channel::Email, Channel::Webhook] {
            let (status, note) = status_of(&ds, channel);
            assert_eq!(status, DeliveryStatus::Skipped, "{channel:?}");
            assert!(
                note.as_deref().is_some_and(|n| n.contains("opted out")),
                "{channel:?}: {note:?}"
            );
        }
        assert_eq!(inbox(&svc, &alice_c).await[0].batch_id, promo.batch_id);

        // Transactional: every channel asked for, opt-outs or not.
        let receipt = svc
            .send(
                &manager,
                to_users(
                    "receipt",
                    &[alice.id.as_str()],
                    &every,
                    json!({"what": "order 7"}),
                ),
            )
            .await
            .expect("receipt");
        assert_eq!(
            (receipt.notifications, receipt.deliveries, receipt.skipped),
            (1, 3, 0)
        );
        let ds = batch(&svc, &manager, &receipt.batch_id).await;
        assert!(
            ds.iter().all(|d| d.status == DeliveryStatus::Pending),
            "{ds:#?}"
        );
        assert_eq!(status_of(&ds, Channel::Email).0, DeliveryStatus::Pending);
        assert_eq!(
            ds.iter()
                .find(|d| d.channel == Channel::Email)
                .map(|d| d.target.as_str()),
            Some("alice@example.org")
        );

        // Opted out of the inbox: marketing stays out of it, transactional does not.
        svc.set_preferences(
            &alice_c,
            PreferencesUpdate {
                in_app: Some(false),
                ..PreferencesUpdate::default()
            },
        )
        .await
        .expect("opt out of in_app");
        let hidden = svc
            .send(
                &manager,
                to_users(
                    "promo",
                    &[alice.id.as_str()],
                    &[Channel::InApp],
                    json!({"what": "x"}),
                ),
            )
            .await
            .expect("promo");
        assert_eq!((hidden.notifications, hidden.skipped), (1, 1));
        let shown = svc
            .send(
                &manager,
                to_users(
                    "receipt",
                    &[alice.id.as_str()],
                    &[Channel::InApp],
                    json!({"what": "y"}),
                ),
            )
            .await
            .expect("receipt");
        let batches: Vec<String> = inbox(&svc, &alice_c)
            .await
            .into_iter()
            .map(|n| n.batch_id)
            .collect();
        assert_eq!(
            batches,
            [shown.batch_id, receipt.batch_id, promo.batch_id],
            "the marketing notification after the in_app opt-out is not in the inbox"
        );
        assert_eq!(unread(&svc, &alice_c).await, 3);

        // A role send respects each user's own opt-outs.
        let to_all = svc
            .send(
                &manager,
                to_role("promo", "user", &[Channel::Email], json!({"what": "z"})),
            )
            .await
            .expect("promo to everyone");
        assert_eq!(
            (to_all.notifications, to_all.deliveries, to_all.skipped),
            (2, 1, 1)
        );
        let mut targets: Vec<(String, DeliveryStatus)> = batch(&svc, &manager, &to_all.batch_id)
            .await
            .into_iter()
            .map(|d| (d.target, d.status))
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            targets,
            [
                ("alice@example.org".to_owned(), DeliveryStatus::Skipped),
                ("maria@example.org".to_owned(), DeliveryStatus::Pending),
            ]
        );

        // Webhooks: a role send reaches the webhooks of the users holding it, and a
        // campaign's webhooks get the notification of every recipient too.
        let hooks = svc
            .send(
                &manager,
                to_role("receipt", "user", &[Channel::Webhook], json!({"what": "w"})),
            )
            .await
            .expect("receipt to everyone's webhooks");
        assert_eq!(
            (hooks.notifications, hooks.deliveries, hooks.skipped),
            (2, 1, 1),
            "maria has no webhook"
        );
        let ds = batch(&svc, &manager, &hooks.batch_id).await;
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].target, "http://127.0.0.1:9/hook");
        svc.create_webhook(
            &manager,
            NewWebhook {
                url: "http://127.0.0.1:9/campaign".to_owned(),
                campaign_id: Some("spring".to_owned()),
            },
        )
        .await
        .expect("campaign webhook");
        let with_campaign = svc
            .send(
                &manager,
                SendRequest {
                    campaign_id: Some("spring".to_owned()),
                    ..to_users(
                        "receipt",
                        &[alice.id.as_str()],
                        &[Channel::Webhook],
                        json!({"what": "c"}),
                    )
                },
            )
            .await
            .expect("campaign send");
        assert_eq!(with_campaign.deliveries, 2);
        let mut urls: Vec<String> = batch(&svc, &manager, &with_campaign.batch_id)
            .await
            .into_iter()
            .map(|d| d.target)
            .collect();
        urls.sort();
        assert_eq!(
            urls,
            ["http://127.0.0.1:9/campaign", "http://127.0.0.1:9/hook"]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn watch_returns_the_notifications_after_a_cursor_as_they_arrive() {
    for f in fixtures("notif_watch").await {
        eprintln!("backend: {}", f.db.backend());
        let svc = f.service(Recorder::new(), DeliveryConfig::default());
        let other_node = f.service(Recorder::new(), DeliveryConfig::default());
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (bob, _) = f.user("bob", &[]).await;
        svc.put_template(
            &manager,
            "note",
            "en",
            input(
                Category::Transactional,
                "Note {{ n }}",
                "Number {{ n }}",
                None,
            ),
        )
        .await
        .expect("template");
        let note =
            |user: &str, n: u32| to_users("note", &[user], &[Channel::InApp], json!({ "n": n }));

        // Nothing newer: an empty answer when the wait ends.
        let (none, cursor) = svc
            .watch(
                &alice_c,
                None,
                Duration::from_millis(50),
                Duration::from_millis(10),
            )
            .await
            .expect("watch");
        assert!(none.is_empty());
        assert_eq!(cursor, None, "an empty inbox has no cursor");

        svc.send(&manager, note(&alice.id, 0)).await.expect("send");
        let first = inbox(&svc, &alice_c).await[0].id.clone();

        // A send through this node while watching (or before: then it is there at once).
        let (watched, sent) = tokio::join!(
            svc.watch(
                &alice_c,
                Some(first.clone()),
                Duration::from_secs(20),
                Duration::from_secs(20),
            ),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                svc.send(&manager, note(&bob.id, 1))
                    .await
                    .expect("send to bob");
                svc.send(&manager, note(&alice.id, 2)).await.expect("send")
            }
        );
        let (got, cursor) = watched.expect("watch");
        assert_eq!(got.len(), 1, "only alice's, after the cursor: {got:#?}");
        assert_eq!(got[0].subject, "Note 2");
        assert_eq!(got[0].batch_id, sent.batch_id);
        assert_eq!(cursor.as_deref(), Some(got[0].id.as_str()));

        // A send through another node is found by the poll.
        let (watched, sent) = tokio::join!(
            svc.watch(
                &alice_c,
                cursor.clone(),
                Duration::from_secs(20),
                Duration::from_millis(20),
            ),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                other_node
                    .send(&manager, note(&alice.id, 3))
                    .await
                    .expect("send elsewhere")
            }
        );
        let (got, cursor) = watched.expect("watch");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].batch_id, sent.batch_id);

        // Several at once: oldest first.
        for n in 4..6 {
            svc.send(&manager, note(&alice.id, n)).await.expect("send");
        }
        let (got, last) = svc
            .watch(
                &alice_c,
                cursor,
                Duration::from_secs(20),
                Duration::from_secs(20),
            )
            .await
            .expect("watch");
        assert_eq!(
            got.iter().map(|n| n.subject.as_str()).collect::<Vec<_>>(),
            ["Note 4", "Note 5"]
        );
        let (none, same) = svc
            .watch(
                &alice_c,
                last.clone(),
                Duration::from_millis(50),
                Duration::from_millis(10),
            )
            .await
            .expect("watch");
        assert!(none.is_empty());
        assert_eq!(same, last, "the cursor stays");
        assert_unauthenticated(
            svc.watch(
                &Caller::anonymous(),
                None,
                Duration::from_millis(1),
                Duration::from_millis(1),
            )
            .await,
        );
        f.finish().await;
    }
}

// ----- the worker: realtime -------------------------------------------------------------------

#[tokio::test]
async fn the_worker_pushes_realtime_deliveries_retries_and_gives_up() {
    for f in fixtures("notif_realtime").await {
        eprintln!("backend: {}", f.db.backend());
        let sink = Recorder::new();
        let svc = f.service(sink.clone(), fast(3));
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (_, bob_c) = f.user("bob", &[]).await;
        svc.put_template(
            &manager,
            "ping",
            "en",
            input(
                Category::Transactional,
                "Ping {{ n }}",
                "Ping number {{ n }}",
                None,
            ),
        )
        .await
        .expect("template");
        let ping = |n: u32| {
            to_users(
                "ping",
                &[alice.id.as_str()],
                &[Channel::Realtime],
                json!({ "n": n }),
            )
        };

        // Delivered at the first attempt.
        let sent = svc.send(&manager, ping(1)).await.expect("send");
        assert_eq!((sent.notifications, sent.deliveries), (1, 1));
        let ds = batch(&svc, &manager, &sent.batch_id).await;
        assert_eq!(ds.len(), 1);
        let d = &ds[0];
        assert_eq!(
            (d.channel, d.status, d.attempts),
            (Channel::Realtime, DeliveryStatus::Pending, 0)
        );
        assert_eq!(d.target, alice.id);
        let nid = d.notification_id.clone();
        assert!(
            inbox(&svc, &alice_c).await.is_empty(),
            "realtime only: not in the inbox"
        );
        assert_eq!(
            svc.deliveries(&alice_c, &nid)
                .await
                .expect("own deliveries"),
            ds,
            "a user sees the deliveries of their notification"
        );
        assert_not_found(svc.deliveries(&bob_c, &nid).await, "notification");
        assert_eq!(svc.outbox_depth().await.expect("depth"), 1);

        assert_eq!(svc.deliver_due("node-a").await.expect("deliver"), 1);
        let pushes = sink.pushes();
        assert_eq!(pushes.len(), 1);
        let (user, payload) = &pushes[0];
        assert_eq!(user, &alice.id);
        assert_eq!(payload["id"], json!(nid));
        assert_eq!(payload["template"], json!("ping"));
        assert_eq!(payload["subject"], json!("Ping 1"));
        assert_eq!(payload["text"], json!("Ping number 1"));
        assert_eq!(payload["data"], json!({"n": 1}));
        let d = &svc.deliveries(&manager, &nid).await.expect("deliveries")[0];
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Sent, 1));
        assert!(d.sent_at.is_some());
        assert_eq!(d.last_error, None);
        assert_eq!(
            svc.deliver_due("node-a").await.expect("again"),
            0,
            "nothing left"
        );
        assert_eq!(svc.outbox_depth().await.expect("depth"), 0);

        // Refused twice, then delivered at the third attempt.
        sink.fail_next.store(2, Ordering::SeqCst);
        let sent = svc.send(&manager, ping(2)).await.expect("send");
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        assert_eq!(
            (ds[0].status, ds[0].attempts),
            (DeliveryStatus::Sent, 3),
            "{ds:#?}"
        );
        assert_eq!(ds[0].last_error, None, "a success clears the last error");
        assert_eq!(sink.refused.load(Ordering::SeqCst), 2);
        assert_eq!(sink.count(&ds[0].notification_id), 1, "pushed once");

        // Always refused: failed after max_attempts, with the last error.
        let failing = Recorder::new();
        failing.fail_always.store(true, Ordering::SeqCst);
        let svc2 = f.service(failing.clone(), fast(2));
        let sent = svc2.send(&manager, ping(3)).await.expect("send");
        let ds = drain(&svc2, "node-b", &manager, &sent.batch_id).await;
        let d = &ds[0];
        assert_eq!(
            (d.status, d.attempts),
            (DeliveryStatus::Failed, 2),
            "{ds:#?}"
        );
        assert_eq!(d.last_error.as_deref(), Some("the bus is down"));
        assert!(d.sent_at.is_none());
        assert_eq!(failing.refused.load(Ordering::SeqCst), 2);
        assert!(failing.pushes().is_empty());
        assert_eq!(
            svc2.deliver_due("node-b").await.expect("again"),
            0,
            "a failed delivery is not tried again"
        );
        assert_eq!(
            sink.pushes().len(),
            2,
            "the first node's sink saw only its own"
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn two_nodes_racing_deliver_every_delivery_exactly_once() {
    for f in fixtures("notif_race").await {
        eprintln!("backend: {}", f.db.backend());
        let sink = Recorder::new();
        let config = DeliveryConfig {
            batch: 4,
            ..fast(3)
        };
        let a = f.service(sink.clone(), config.clone());
        let b = f.service(sink.clone(), config);
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, _) = f.user("alice", &[]).await;
        let (bob, _) = f.user("bob", &[]).await;
        a.put_template(
            &manager,
            "tick",
            "en",
            input(
                Category::Transactional,
                "Tick {{ n }}",
                "Tick {{ n }}",
                None,
            ),
        )
        .await
        .expect("template");

        let mut batches = Vec::new();
        for round in 0..4 {
            for i in 0..10 {
                let sender = if i % 2 == 0 { &a } else { &b };
                let sent = sender
                    .send(
                        &manager,
                        to_users(
                            "tick",
                            &[alice.id.as_str(), bob.id.as_str()],
                            &[Channel::Realtime],
                            json!({ "n": round * 10 + i }),
                        ),
                    )
                    .await
                    .expect("send");
                assert_eq!(sent.deliveries, 2);
                batches.push(sent.batch_id);
            }
            assert_eq!(a.outbox_depth().await.expect("depth"), 20);
            let mut claimed = 0;
            let mut idle = false;
            for _ in 0..100 {
                let (x, y) = tokio::join!(a.deliver_due("node-a"), b.deliver_due("node-b"));
                let (x, y) = (x.expect("node-a"), y.expect("node-b"));
                claimed += x + y;
                if x == 0 && y == 0 {
                    idle = true;
                    break;
                }
            }
            assert!(idle, "round {round}: the nodes never ran out of work");
            assert_eq!(claimed, 20, "round {round}: each delivery claimed once");
            assert_eq!(b.outbox_depth().await.expect("depth"), 0);
        }

        let mut ids = Vec::new();
        for batch_id in &batches {
            for d in batch(&a, &manager, batch_id).await {
                assert_eq!((d.status, d.attempts), (DeliveryStatus::Sent, 1), "{d:#?}");
                ids.push(d.notification_id);
            }
        }
        assert_eq!(ids.len(), 80);
        let pushes = sink.pushes();
        assert_eq!(pushes.len(), 80, "80 deliveries, 80 pushes");
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (_, p) in &pushes {
            let id = p["id"].as_str().expect("id").to_owned();
            *seen.entry(id).or_default() += 1;
        }
        for id in &ids {
            assert_eq!(seen.get(id), Some(&1), "notification {id} pushed once");
        }
        f.finish().await;
    }
}

// ----- the worker: email over SMTP ------------------------------------------------------------

/// What the SMTP sink received in one accepted transaction.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    /// The message as sent (dot-unstuffed), headers and body.
    data: String,
}

/// A small SMTP server: answers 250/354/221, and `451 try later` to the first
/// `refuse_mail` `MAIL FROM`s and then the first `refuse_data` ends of `DATA`; `550` to every
/// `RCPT TO` while `reject_rcpt` is set.
#[derive(Default)]
struct SmtpSink {
    refuse_mail: AtomicU32,
    refuse_data: AtomicU32,
    reject_rcpt: AtomicBool,
    refusals: AtomicU32,
    received: Mutex<Vec<Received>>,
}

fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

impl SmtpSink {
    /// Listens on a free loopback port; returns the port.
    async fn start(self: &Arc<Self>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let port = listener.local_addr().expect("smtp address").port();
        let sink = self.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let _ = sink.session(socket).await;
                });
            }
        });
        port
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    async fn session(&self, socket: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = socket.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let mut from = String::new();
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            let verb = command.to_ascii_uppercase();
            let argument =
                |prefix: &str| command.get(prefix.len()..).unwrap_or("").trim().to_owned();
            let reply = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
                "250 sink.test\r\n"
            } else if verb.starts_with("MAIL FROM:") {
                if take_one(&self.refuse_mail) {
                    self.refusals.fetch_add(1, Ordering::SeqCst);
                    "451 try later\r\n"
                } else {
                    from = argument("MAIL FROM:");
                    to.clear();
                    "250 OK\r\n"
                }
            } else if verb.starts_with("RCPT TO:") {
                if self.reject_rcpt.load(Ordering::SeqCst) {
                    "550 no such mailbox\r\n"
                } else {
                    to.push(argument("RCPT TO:"));
                    "250 OK\r\n"
                }
            } else if verb == "DATA" {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Dot-stuffing: a line starting with '.' was sent with one more.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                if take_one(&self.refuse_data) {
                    self.refusals.fetch_add(1, Ordering::SeqCst);
                    "451 try later\r\n"
                } else {
                    self.received.lock().expect("received").push(Received {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                    });
                    "250 OK queued\r\n"
                }
            } else if verb == "RSET" {
                from.clear();
                to.clear();
                "250 OK\r\n"
            } else if verb == "NOOP" {
                "250 OK\r\n"
            } else if verb == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                "502 not implemented\r\n"
            };
            write.write_all(reply.as_bytes()).await?;
        }
    }
}

/// The message's headers (unfolded), by lower-case name.
fn headers(message: &str) -> HashMap<String, String> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), decode_words(v.trim())))
        .collect()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) in a header value.
fn decode_words(value: &str) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, word) = rest.split_at(start);
        let mut parts = word[2..].splitn(3, '?');
        let (Some(_charset), Some(encoding), Some(tail)) =
            (parts.next(), parts.next(), parts.next())
        else {
            break;
        };
        let Some((text, after)) = tail.split_once("?=") else {
            break;
        };
        // White space between two encoded words is not part of the text.
        if !(after_word && before.trim().is_empty()) {
            out.extend_from_slice(before.as_bytes());
        }
        match encoding.to_ascii_lowercase().as_str() {
            "b" => out.extend(base64(text)),
            "q" => out.extend(q_decode(text)),
            other => panic!("unknown RFC 2047 encoding {other:?} in {value:?}"),
        }
        rest = after;
        after_word = true;
    }
    out.extend_from_slice(rest.as_bytes());
    String::from_utf8(out).expect("UTF-8 header")
}

fn base64(s: &str) -> Vec<u8> {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = DIGITS
            .iter()
            .position(|d| *d == c)
            .unwrap_or_else(|| panic!("not base64: {s:?}"));
        acc = (acc << 6) | u32::try_from(v).expect("digit");
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("byte"));
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn q_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex byte"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[tokio::test]
async fn email_goes_over_smtp_in_each_users_locale_and_is_retried() {
    for f in fixtures("notif_email").await {
        eprintln!("backend: {}", f.db.backend());
        let smtp = Arc::new(SmtpSink::default());
        let port = smtp.start().await;
        let config = DeliveryConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
            email_from: "OVASABI <noreply@example.test>".to_owned(),
            ..fast(3)
        };
        let svc = f.service(Recorder::new(), config);
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (bob, _) = f.user("bob", &[]).await;
        f.set_locale(&alice_c, "fr-CA").await;
        for (locale, subject, text, html) in [
            (
                "en",
                "Welcome aboard, {{ user.display_name }}",
                "Hello {{ user.display_name }}, your code is {{ code }}.",
                "<p>Hello <b>{{ user.display_name }}</b>, your code is {{ code }}.</p>",
            ),
            (
                "fr",
                "Bienvenue à bord, {{ user.display_name }}",
                "Bonjour {{ user.display_name }}, votre code est {{ code }}.",
                "<p>Bonjour <b>{{ user.display_name }}</b>, votre code est {{ code }}.</p>",
            ),
        ] {
            svc.put_template(
                &manager,
                "welcome",
                locale,
                input(Category::Transactional, subject, text, Some(html)),
            )
            .await
            .expect("template");
        }

        let sent = svc
            .send(
                &manager,
                to_users(
                    "welcome",
                    &[alice.id.as_str(), bob.id.as_str()],
                    &[Channel::Email],
                    json!({"code": "<42>"}),
                ),
            )
            .await
            .expect("send");
        assert_eq!(sent.deliveries, 2);
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        for d in &ds {
            assert_eq!((d.status, d.attempts), (DeliveryStatus::Sent, 1), "{d:#?}");
        }
        let received = smtp.received();
        assert_eq!(
            received.len(),
            2,
            "one message per recipient: {received:#?}"
        );
        for (user, subject, text, html) in [
            (
                &alice,
                "Bienvenue à bord, Alice",
                "Bonjour Alice, votre code est <42>.",
                "<p>Bonjour <b>Alice</b>, votre code est &lt;42&gt;.</p>",
            ),
            (
                &bob,
                "Welcome aboard, Bob",
                "Hello Bob, your code is <42>.",
                "<p>Hello <b>Bob</b>, your code is &lt;42&gt;.</p>",
            ),
        ] {
            let d = ds
                .iter()
                .find(|d| d.target == user.email)
                .unwrap_or_else(|| panic!("no delivery to {}", user.email));
            let mine: Vec<&Received> = received
                .iter()
                .filter(|m| m.to == [format!("<{}>", user.email)])
                .collect();
            assert_eq!(mine.len(), 1, "{}: exactly one message", user.email);
            let m = mine[0];
            assert_eq!(m.from, "<noreply@example.test>");
            let h = headers(&m.data);
            assert_eq!(
                h.get("subject").map(String::as_str),
                Some(subject),
                "{h:#?}"
            );
            let from = h.get("from").expect("From");
            assert!(
                from.contains("OVASABI") && from.contains("<noreply@example.test>"),
                "{from}"
            );
            assert!(h.get("to").expect("To").contains(&user.email), "{h:#?}");
            assert!(
                h.get("message-id").expect("Message-ID").contains(&d.id),
                "the Message-ID names the delivery: {h:#?}"
            );
            assert!(
                h.get("content-type")
                    .expect("Content-Type")
                    .to_ascii_lowercase()
                    .starts_with("multipart/alternative"),
                "{h:#?}"
            );
            let lower = m.data.to_ascii_lowercase();
            let plain = lower
                .find("content-type: text/plain")
                .unwrap_or_else(|| panic!("no text/plain part:\n{}", m.data));
            let rich = lower
                .find("content-type: text/html")
                .unwrap_or_else(|| panic!("no text/html part:\n{}", m.data));
            assert!(plain < rich, "the plain part comes first");
            assert!(m.data.contains(text), "text part:\n{}", m.data);
            assert!(m.data.contains(html), "escaped HTML part:\n{}", m.data);
        }

        // Refused twice (at MAIL FROM, then at the end of DATA): delivered at the third try.
        smtp.refuse_mail.store(1, Ordering::SeqCst);
        smtp.refuse_data.store(1, Ordering::SeqCst);
        let sent = svc
            .send(
                &manager,
                to_users(
                    "welcome",
                    &[bob.id.as_str()],
                    &[Channel::Email],
                    json!({"code": "7"}),
                ),
            )
            .await
            .expect("send");
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        assert_eq!(
            (ds[0].status, ds[0].attempts),
            (DeliveryStatus::Sent, 3),
            "{ds:#?}"
        );
        assert_eq!(smtp.refusals.load(Ordering::SeqCst), 2);
        let received = smtp.received();
        assert_eq!(received.len(), 3);
        let with_id: Vec<&Received> = received
            .iter()
            .filter(|m| {
                headers(&m.data)
                    .get("message-id")
                    .is_some_and(|id| id.contains(&ds[0].id))
            })
            .collect();
        assert_eq!(with_id.len(), 1, "accepted once");
        assert!(with_id[0].data.contains("Hello Bob, your code is 7."));

        // A permanent refusal (5xx) fails at once.
        smtp.reject_rcpt.store(true, Ordering::SeqCst);
        let sent = svc
            .send(
                &manager,
                to_users(
                    "welcome",
                    &[bob.id.as_str()],
                    &[Channel::Email],
                    json!({"code": "8"}),
                ),
            )
            .await
            .expect("send");
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        assert_eq!(
            (ds[0].status, ds[0].attempts),
            (DeliveryStatus::Failed, 1),
            "{ds:#?}"
        );
        assert!(
            ds[0].last_error.as_deref().is_some_and(
                |e| e.contains("550") || e.to_ascii_lowercase().contains("no such mailbox")
            ),
            "{:?}",
            ds[0].last_error
        );
        assert_eq!(smtp.received().len(), 3);
        f.finish().await;
    }
}

#[tokio::test]
async fn email_without_smtp_is_skipped() {
    for f in fixtures("notif_no_smtp").await {
        eprintln!("backend: {}", f.db.backend());
        let svc = f.service(Recorder::new(), DeliveryConfig::default());
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, _) = f.user("alice", &[]).await;
        svc.put_template(
            &manager,
            "hi",
            "en",
            input(Category::Transactional, "Hi", "Hi", None),
        )
        .await
        .expect("template");
        let sent = svc
            .send(
                &manager,
                to_users("hi", &[alice.id.as_str()], &[Channel::Email], json!({})),
            )
            .await
            .expect("send");
        assert_eq!((sent.deliveries, sent.skipped), (0, 1));
        let ds = batch(&svc, &manager, &sent.batch_id).await;
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].status, DeliveryStatus::Skipped);
        assert!(
            ds[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("smtp_url")),
            "{ds:#?}"
        );
        assert!(matches!(
            NotificationService::new(
                f.db.clone(),
                f.policies.clone(),
                f.l10n.clone(),
                Recorder::new(),
                DeliveryConfig {
                    email_from: "not a mailbox".to_owned(),
                    ..DeliveryConfig::default()
                },
            ),
            Err(ServiceError::Invalid { ref field, .. }) if field == "email_from"
        ));
        f.finish().await;
    }
}

// ----- the worker: webhooks -------------------------------------------------------------------

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Hit {
    key: String,
    attempt: String,
    content_type: String,
    signed: bool,
    body: Value,
}

/// A webhook receiver: checks `Ovasabi-Signature` with the secret it is given, answers 500
/// to the first `fail_first` signed requests, then 200, and accepts each idempotency key once.
#[derive(Default)]
struct Receiver {
    secret: Mutex<String>,
    fail_first: AtomicU32,
    hits: Mutex<Vec<Hit>>,
    /// The idempotency keys accepted, in order (a key seen again is answered 200, not added).
    accepted: Mutex<Vec<String>>,
    repeats: AtomicU32,
}

impl Receiver {
    async fn start(self: &Arc<Self>) -> u16 {
        use axum::routing::post;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let port = listener.local_addr().expect("http address").port();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().expect("accepted").clone()
    }
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let secret = r.secret.lock().expect("secret").clone();
    let signed = verify(
        secret.as_bytes(),
        &header("ovasabi-signature"),
        &body,
        now_secs(),
        300,
    );
    let key = header("ovasabi-idempotency-key");
    r.hits.lock().expect("hits").push(Hit {
        key: key.clone(),
        attempt: header("ovasabi-delivery-attempt"),
        content_type: header("content-type"),
        signed,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    if take_one(&r.fail_first) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut accepted = r.accepted.lock().expect("accepted");
    if accepted.contains(&key) {
        r.repeats.fetch_add(1, Ordering::SeqCst);
    } else {
        accepted.push(key);
    }
    StatusCode::OK
}

#[tokio::test]
async fn webhooks_are_validated_signed_retried_and_fail_once_deleted() {
    for f in fixtures("notif_webhook").await {
        eprintln!("backend: {}", f.db.backend());
        let receiver = Arc::new(Receiver::default());
        let port = receiver.start().await;
        let url = format!("http://127.0.0.1:{port}/hook");
        let svc = f.service(Recorder::new(), fast(3));
        let (_, manager) = f.user("maria", &[Role::CampaignManager]).await;
        let (alice, alice_c) = f.user("alice", &[]).await;
        let (bob, bob_c) = f.user("bob", &[]).await;
        let (_, carol_c) = f.user("carol", &[]).await;
        let hook = |url: &str| NewWebhook {
            url: url.to_owned(),
            campaign_id: None,
        };

        // Created with its secret, listed without it.
        let w = svc
            .create_webhook(&alice_c, hook(&url))
            .await
            .expect("create");
        let secret = w.secret.clone().expect("the secret, at creation");
        assert_eq!(secret.len(), 64, "32 bytes, hex");
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(w.owner_type, WebhookOwner::User);
        assert_eq!(w.owner_id, alice.id);
        assert_eq!(w.url, url);
        assert!(w.active);
        *receiver.secret.lock().expect("secret") = secret.clone();
        let listed = svc.webhooks(&alice_c, None).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, w.id);
        assert_eq!(listed[0].secret, None, "the secret is shown only once");
        assert!(svc.webhooks(&bob_c, None).await.expect("bob's").is_empty());
        assert_not_found(svc.delete_webhook(&bob_c, &w.id).await, "webhook");

        // URLs.
        for bad in [
            "ftp://example.org/hook",
            "http://user:password@example.org/hook",
            "https://token@example.org/hook",
            "not a url",
            "",
        ] {
            assert_invalid(svc.create_webhook(&alice_c, hook(bad)).await, "url");
        }
        assert_unauthenticated(svc.create_webhook(&Caller::anonymous(), hook(&url)).await);
        // Campaign webhooks need `send`.
        let campaign = NewWebhook {
            url: "https://example.org/campaign".to_owned(),
            campaign_id: Some("spring".to_owned()),
        };
        assert_forbidden(svc.create_webhook(&alice_c, campaign.clone()).await);
        let cw = svc
            .create_webhook(&manager, campaign)
            .await
            .expect("campaign webhook");
        assert_eq!(cw.owner_type, WebhookOwner::Campaign);
        assert_eq!(cw.owner_id, "spring");
        assert_eq!(
            svc.webhooks(&manager, Some("spring"))
                .await
                .expect("campaign's")
                .len(),
            1
        );
        assert_forbidden(svc.webhooks(&alice_c, Some("spring")).await);
        assert_not_found(svc.delete_webhook(&alice_c, &cw.id).await, "webhook");
        svc.delete_webhook(&manager, &cw.id)
            .await
            .expect("delete campaign webhook");

        // At most ten per owner.
        for i in 0..10 {
            svc.create_webhook(&carol_c, hook(&format!("https://example.org/{i}")))
                .await
                .unwrap_or_else(|e| panic!("webhook {i}: {e}"));
        }
        assert!(matches!(
            svc.create_webhook(&carol_c, hook("https://example.org/11"))
                .await,
            Err(ServiceError::Conflict { .. })
        ));
        assert_eq!(svc.webhooks(&carol_c, None).await.expect("list").len(), 10);

        // Delivered, signed, after one 500: the same idempotency key both times.
        svc.put_template(
            &manager,
            "hooked",
            "en",
            input(
                Category::Transactional,
                "Order {{ order }}",
                "Order {{ order }} paid",
                None,
            ),
        )
        .await
        .expect("template");
        let no_hook = svc
            .send(
                &manager,
                to_users(
                    "hooked",
                    &[bob.id.as_str()],
                    &[Channel::Webhook],
                    json!({"order": 1}),
                ),
            )
            .await
            .expect("send to bob");
        assert_eq!(
            (no_hook.deliveries, no_hook.skipped),
            (0, 1),
            "bob has no webhook"
        );
        receiver.fail_first.store(1, Ordering::SeqCst);
        let sent = svc
            .send(
                &manager,
                to_users(
                    "hooked",
                    &[alice.id.as_str()],
                    &[Channel::Webhook],
                    json!({"order": 2}),
                ),
            )
            .await
            .expect("send");
        assert_eq!(sent.deliveries, 1);
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        let d = &ds[0];
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Sent, 2), "{ds:#?}");
        assert_eq!(d.target, url);
        let hits = receiver.hits();
        assert_eq!(hits.len(), 2, "{hits:#?}");
        for (i, hit) in hits.iter().enumerate() {
            assert!(hit.signed, "attempt {i}: the signature verifies");
            assert_eq!(hit.key, d.id, "the idempotency key is the delivery id");
            assert_eq!(hit.attempt, (i + 1).to_string());
            assert!(hit.content_type.starts_with("application/json"));
            assert_eq!(hit.body["id"], json!(d.id));
            assert_eq!(hit.body["type"], json!("notification"));
            assert_eq!(hit.body["notification"]["id"], json!(d.notification_id));
            assert_eq!(hit.body["notification"]["user_id"], json!(alice.id));
            assert_eq!(hit.body["notification"]["subject"], json!("Order 2"));
            assert_eq!(hit.body["notification"]["data"], json!({"order": 2}));
        }
        assert_eq!(
            receiver.accepted(),
            std::slice::from_ref(&d.id),
            "accepted once"
        );
        assert_eq!(receiver.repeats.load(Ordering::SeqCst), 0);

        // A signature under another secret does not verify.
        let body = r#"{"id":"x"}"#;
        let header = format!(
            "t={},v1={}",
            now_secs(),
            services::notification::delivery::sign(b"another secret", now_secs(), body)
        );
        assert!(!verify(secret.as_bytes(), &header, body, now_secs(), 300));

        // A deleted webhook's pending delivery fails.
        svc.delete_webhook(&alice_c, &w.id).await.expect("delete");
        assert!(svc.webhooks(&alice_c, None).await.expect("list").is_empty());
        let w2 = svc
            .create_webhook(&alice_c, hook(&url))
            .await
            .expect("create");
        *receiver.secret.lock().expect("secret") = w2.secret.clone().expect("secret");
        let sent = svc
            .send(
                &manager,
                to_users(
                    "hooked",
                    &[alice.id.as_str()],
                    &[Channel::Webhook],
                    json!({"order": 3}),
                ),
            )
            .await
            .expect("send");
        assert_eq!(sent.deliveries, 1);
        svc.delete_webhook(&alice_c, &w2.id).await.expect("delete");
        assert_not_found(svc.delete_webhook(&alice_c, &w2.id).await, "webhook");
        let ds = drain(&svc, "node-a", &manager, &sent.batch_id).await;
        let d = &ds[0];
        assert_eq!(
            (d.status, d.attempts),
            (DeliveryStatus::Failed, 1),
            "{ds:#?}"
        );
        assert!(
            d.last_error
                .as_deref()
                .is_some_and(|e| e.contains("deleted")),
            "{d:#?}"
        );
        assert_eq!(receiver.hits().len(), 2, "nothing was posted");
        f.finish().await;
    }
}

#[tokio::test]
async fn concurrent_webhook_registrations_never_pass_the_per_owner_limit() {
    for f in fixtures("notif_hook_limit").await {
        let svc = f.service(Recorder::new(), fast(3));
        let (_, alice_c) = f.user("alice", &[]).await;
        // Three times the limit at once, on separate connections: exactly the limit lands.
        let tries = (0..3 * services::notification::model::MAX_WEBHOOKS).map(|i| {
            let svc = svc.clone();
            let caller = alice_c.clone();
            tokio::spawn(async move {
                svc.create_webhook(
                    &caller,
                    NewWebhook {
                        url: format!("http://127.0.0.1:9/hook/{i}"),
                        campaign_id: None,
                    },
                )
                .await
            })
        });
        let mut created = 0;
        for t in futures_util::future::join_all(tries).await {
            match t.expect("task") {
                Ok(_) => created += 1,
                Err(ServiceError::Conflict { message }) => {
                    assert!(message.contains("webhooks already"), "{message}");
                }
                Err(e) => panic!("{}: {e:?}", f.db.backend()),
            }
        }
        assert_eq!(
            created,
            services::notification::model::MAX_WEBHOOKS,
            "{}",
            f.db.backend()
        );
        assert_eq!(
            svc.webhooks(&alice_c, None).await.expect("list").len(),
            services::notification::model::MAX_WEBHOOKS
        );
        f.home.finish().await;
    }
}
