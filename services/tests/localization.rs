//! The localization and Babel pricing services on a real SQLite database (a fresh file per
//! test) and, when `OVASABI_TEST_DATABASE_URL` is set, on Postgres (a schema of its own per
//! run): messages, Fluent validation, fallback chains, plural forms (en, fr, pl, ar),
//! import/export, missing keys; markets, rules, prices (EUR/fr-FR, USD/en-US, JPY/ja-JP, KWD),
//! rounding and tax; RBAC, audit rows and the lookup caches.

mod common;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Map, Value, json};
use services::babel::{
    BabelConfig, BabelService, MarketPatch, NewMarket, NewRule, PriceRequest, PriceSource,
    Rounding, RuleFilter,
};
use services::localization::{
    FormatRequest, Import, ImportResult, LocalizationConfig, LocalizationService, MessageFilter,
    MessageText,
};
use services::security::audit::{AuditFilter, AuditLog};
use services::security::{Caller, Policies, Role};
use services::{Database, ServiceError};

static SYS: LazyLock<Caller> = LazyLock::new(Caller::system);
static ANON: LazyLock<Caller> = LazyLock::new(Caller::anonymous);
static USER: LazyLock<Caller> = LazyLock::new(|| Caller::user("u1", vec![Role::User]));
static TRANSLATOR: LazyLock<Caller> =
    LazyLock::new(|| Caller::user("tr", vec![Role::User, Role::LocalizationManager]));
static PRICER: LazyLock<Caller> =
    LazyLock::new(|| Caller::user("pr", vec![Role::User, Role::PricingManager]));
static ADMIN: LazyLock<Caller> = LazyLock::new(|| Caller::user("boss", vec![Role::Admin]));

struct Fixture {
    l10n: LocalizationService,
    babel: BabelService,
    log: AuditLog,
    db: Database,
    home: common::TestDb,
}

async fn fixtures(tag: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for home in common::databases(tag).await {
        let db = home.db.clone();
        let policies = Policies::load(db.clone()).await.expect("policies");
        out.push(Fixture {
            l10n: LocalizationService::new(
                db.clone(),
                policies.clone(),
                LocalizationConfig::default(),
            )
            .expect("service"),
            babel: BabelService::new(db.clone(), policies.clone(), BabelConfig::default()),
            log: AuditLog::new(db.clone(), policies),
            db,
            home,
        });
    }
    out
}

impl Fixture {
    async fn finish(self) {
        self.home.finish().await;
    }

    /// The audit actions about `entity_id`, oldest first.
    async fn audit(&self, entity_id: &str) -> Vec<String> {
        let filter = AuditFilter {
            entity_id: Some(entity_id.to_owned()),
            ..AuditFilter::default()
        };
        self.log
            .query(&SYS, &filter, Some(500), None)
            .await
            .expect("audit")
            .items
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    /// Imports `messages` into the namespace `ns` in `locale` as `who`.
    async fn import(
        &self,
        who: &Caller,
        ns: &str,
        locale: &str,
        messages: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<ImportResult, ServiceError> {
        self.l10n
            .import(who, ns, locale, Import { messages, replace })
            .await
    }

    /// The messages of the namespace `ns` in `locale`, as an anonymous export shows them.
    async fn exported(&self, ns: &str, locale: &str) -> BTreeMap<String, String> {
        self.l10n
            .export(&ANON, ns, locale)
            .await
            .unwrap_or_else(|e| panic!("export {ns}/{locale}: {e}"))
            .messages
    }

    async fn put(&self, ns: &str, locale: &str, key: &str, value: &str) {
        self.l10n
            .put(
                &TRANSLATOR,
                ns,
                locale,
                key,
                MessageText {
                    value: value.to_owned(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("put {ns}/{locale}/{key}: {e}"));
    }

    async fn format(
        &self,
        ns: &str,
        key: &str,
        locale: &str,
        args: Value,
    ) -> Result<services::localization::Formatted, ServiceError> {
        let args: Map<String, Value> = match args {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.l10n
            .format(
                &ANON,
                &FormatRequest {
                    namespace: ns.to_owned(),
                    key: key.to_owned(),
                    locale: locale.to_owned(),
                    args,
                },
            )
            .await
    }

    async fn text(&self, ns: &str, key: &str, locale: &str, args: Value) -> String {
        self.format(ns, key, locale, args)
            .await
            .unwrap_or_else(|e| panic!("format {ns}/{key} for {locale}: {e}"))
            .text
    }
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

fn body(value: &str) -> MessageText {
    MessageText {
        value: value.to_owned(),
    }
}

#[tokio::test]
async fn messages_are_stored_checked_audited_and_guarded() {
    for f in fixtures("l10n_crud").await {
        eprintln!("backend: {}", f.db.backend());
        let (m, created) = f
            .l10n
            .put(
                &TRANSLATOR,
                "shop",
                "fr-ca",
                "hello",
                body("Salut, { $name }!"),
            )
            .await
            .expect("put");
        assert!(created);
        assert_eq!(m.locale, "fr-CA", "the tag is stored in canonical form");
        assert_eq!(m.updated_by, "tr");
        let got = f
            .l10n
            .get(&ANON, "shop", "fr-CA", "hello")
            .await
            .expect("get");
        assert_eq!(got, m);
        let (m2, created) = f
            .l10n
            .put(
                &ADMIN,
                "shop",
                "fr-CA",
                "hello",
                body("Bonjour, { $name }!"),
            )
            .await
            .expect("replace");
        assert!(!created);
        assert_eq!(m2.created_at, m.created_at);
        assert_eq!(m2.value, "Bonjour, { $name }!");

        // RBAC: reading is public, writing needs localization_manager or admin.
        let r = f.l10n.put(&ANON, "shop", "en", "x", body("x")).await;
        assert!(
            matches!(r, Err(ServiceError::Unauthenticated { .. })),
            "{r:?}"
        );
        for who in [&*USER, &*PRICER] {
            let r = f.l10n.put(who, "shop", "en", "x", body("x")).await;
            assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
            let r = f.l10n.delete(who, "shop", "fr-CA", "hello").await;
            assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
        }

        // Invalid locale tags, keys, namespaces and messages: 400 naming the field.
        for bad in [
            "",
            "fr_CA",
            "english-languages",
            "und",
            "fr-CA-u-nu-latn",
            "a b",
        ] {
            assert_invalid(
                f.l10n.put(&ADMIN, "shop", bad, "k", body("v")).await,
                "locale",
            );
        }
        for bad in ["", "1x", "a.b", "-term"] {
            assert_invalid(
                f.l10n.put(&ADMIN, "shop", "en", bad, body("v")).await,
                "key",
            );
        }
        for bad in ["", "Shop", "a/b"] {
            assert_invalid(
                f.l10n.put(&ADMIN, bad, "en", "k", body("v")).await,
                "namespace",
            );
        }
        for bad in [
            "Hello { $name",
            "{ $n ->\n [one] one\n}",
            "x\n.attr = y",
            "",
            "nul\u{0}",
            &"x".repeat(10_001),
        ] {
            let message = assert_invalid(
                f.l10n.put(&ADMIN, "shop", "en", "k", body(bad)).await,
                "value",
            );
            assert!(!message.is_empty());
        }
        let message = assert_invalid(
            f.l10n
                .put(&ADMIN, "shop", "en", "greeting", body("Hi { $name"))
                .await,
            "value",
        );
        assert!(
            message.contains("\"greeting\""),
            "the error names the key: {message}"
        );
        assert_not_found(f.l10n.get(&ANON, "shop", "en", "nope").await, "message");
        assert_not_found(f.l10n.delete(&ADMIN, "shop", "en", "nope").await, "message");

        f.l10n
            .delete(&TRANSLATOR, "shop", "fr-CA", "hello")
            .await
            .expect("delete");
        assert_not_found(f.l10n.get(&ANON, "shop", "fr-CA", "hello").await, "message");
        assert_eq!(
            f.audit("shop/fr-CA/hello").await,
            [
                "localization.put",
                "localization.put",
                "localization.delete"
            ]
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn lookups_follow_the_fallback_chain_and_see_changes_at_once() {
    for f in fixtures("l10n_fallback").await {
        eprintln!("backend: {}", f.db.backend());
        f.put("app", "en", "title", "Welcome").await;
        f.put("app", "en", "only-en", "English only").await;
        f.put("app", "fr", "title", "Bienvenue").await;

        let r = f
            .format("app", "title", "fr-CA", json!({}))
            .await
            .expect("fr-CA");
        assert_eq!(
            (r.text.as_str(), r.locale.as_str(), r.fallback),
            ("Bienvenue", "fr", true)
        );
        assert_eq!(r.requested_locale, "fr-CA");
        let r = f
            .format("app", "only-en", "fr-CA", json!({}))
            .await
            .expect("to en");
        assert_eq!((r.text.as_str(), r.locale.as_str()), ("English only", "en"));
        let r = f
            .format("app", "title", "de-AT", json!({}))
            .await
            .expect("de-AT");
        assert_eq!(r.locale, "en");
        let r = f.format("app", "title", "fr", json!({})).await.expect("fr");
        assert!(!r.fallback);

        // A change shows at once (the cached bundle is forgotten).
        f.put("app", "fr-CA", "title", "Bienvenue au Canada").await;
        assert_eq!(
            f.text("app", "title", "fr-CA", json!({})).await,
            "Bienvenue au Canada"
        );
        f.l10n
            .delete(&ADMIN, "app", "fr-CA", "title")
            .await
            .expect("delete");
        assert_eq!(
            f.text("app", "title", "fr-CA", json!({})).await,
            "Bienvenue"
        );

        assert_not_found(f.format("app", "nope", "fr", json!({})).await, "message");
        assert_invalid(f.format("app", "title", "fr CA", json!({})).await, "locale");
        assert_invalid(f.format("app", "title", "", json!({})).await, "locale");

        // A default locale other than en.
        let policies = Policies::load(f.db.clone()).await.expect("policies");
        let fr_default = LocalizationService::new(
            f.db.clone(),
            policies.clone(),
            LocalizationConfig {
                default_locale: "fr".into(),
                cache_ttl: Duration::ZERO,
            },
        )
        .expect("service");
        let req = FormatRequest {
            namespace: "app".into(),
            key: "title".into(),
            locale: "de".into(),
            args: Map::new(),
        };
        assert_eq!(
            fr_default.format(&ANON, &req).await.expect("de→fr").text,
            "Bienvenue"
        );
        assert!(
            LocalizationService::new(
                f.db.clone(),
                policies,
                LocalizationConfig {
                    default_locale: "not a tag".into(),
                    cache_ttl: Duration::ZERO,
                }
            )
            .is_err()
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn plural_forms_in_english_french_polish_and_arabic() {
    for f in fixtures("l10n_plural").await {
        eprintln!("backend: {}", f.db.backend());
        f.put(
            "cart",
            "en",
            "items",
            "{ $count ->\n    [one] { $count } item\n   *[other] { $count } items\n}",
        )
        .await;
        f.put(
            "cart",
            "fr",
            "items",
            "{ $count ->\n    [one] { $count } article\n   *[other] { $count } articles\n}",
        )
        .await;
        f.put(
            "cart",
            "pl",
            "items",
            "{ $count ->\n    [one] { $count } produkt\n    [few] { $count } produkty\n   *[many] { $count } produktów\n}",
        )
        .await;
        f.put(
            "cart",
            "ar",
            "items",
            "{ $count ->\n    [zero] لا منتجات\n    [one] منتج واحد\n    [two] منتجان\n    [few] { $count } منتجات\n    [many] { $count } منتجًا\n   *[other] { $count } منتج\n}",
        )
        .await;
        let cases: &[(&str, i64, &str)] = &[
            ("en", 1, "1 item"),
            ("en", 0, "0 items"),
            ("en", 2, "2 items"),
            ("fr", 0, "0 article"),
            ("fr", 1, "1 article"),
            ("fr", 2, "2 articles"),
            ("pl", 1, "1 produkt"),
            ("pl", 3, "3 produkty"),
            ("pl", 5, "5 produktów"),
            ("pl", 22, "22 produkty"),
            ("pl", 25, "25 produktów"),
            ("ar", 0, "لا منتجات"),
            ("ar", 1, "منتج واحد"),
            ("ar", 2, "منتجان"),
            ("ar", 3, "3 منتجات"),
            ("ar", 11, "11 منتجًا"),
            ("ar", 100, "100 منتج"),
        ];
        for (locale, n, expected) in cases {
            assert_eq!(
                f.text("cart", "items", locale, json!({"count": n})).await,
                *expected,
                "{locale} {n}"
            );
        }
        // Regional variants use the language's rules.
        assert_eq!(
            f.text("cart", "items", "pl-PL", json!({"count": 4})).await,
            "4 produkty"
        );
        // A select on a string, and a message that refers to another.
        f.put("cart", "en", "brand", "Ovasabi").await;
        f.put(
            "cart",
            "en",
            "thanks",
            "{ $gender ->\n    [female] She bought\n    [male] He bought\n   *[other] They bought\n} from { brand }",
        )
        .await;
        assert_eq!(
            f.text("cart", "thanks", "en", json!({"gender": "female"}))
                .await,
            "She bought from Ovasabi"
        );
        // A variable the message uses and the request lacks: 400 naming it, no half text.
        assert_invalid(
            f.format("cart", "items", "en", json!({})).await,
            "args.count",
        );
        assert_invalid(
            f.format("cart", "items", "en", json!({"count": [1]})).await,
            "args.count",
        );
        // A reference to a message the locale lacks: a conflict with the stored data.
        f.put("cart", "fr", "thanks", "Merci de { brand }").await;
        let r = f.format("cart", "thanks", "fr", json!({})).await;
        assert!(matches!(r, Err(ServiceError::Conflict { .. })), "{r:?}");
        f.finish().await;
    }
}

#[tokio::test]
async fn import_export_pages_and_missing_keys() {
    for f in fixtures("l10n_import").await {
        eprintln!("backend: {}", f.db.backend());
        let en: BTreeMap<String, String> = (0..7)
            .map(|i| (format!("key-{i}"), format!("English {i}")))
            .collect();
        let r = f
            .import(&TRANSLATOR, "site", "en", en.clone(), false)
            .await
            .expect("import");
        assert_eq!((r.created, r.updated, r.unchanged, r.deleted), (7, 0, 0, 0));
        let fr: BTreeMap<String, String> = [("key-0", "Français 0"), ("key-3", "Français 3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        f.import(&ADMIN, "site", "fr", fr, false)
            .await
            .expect("import fr");

        // The export has the import's shape and content.
        assert_eq!(f.exported("site", "en").await, en);

        // Again with one change, one new key, and replace: the others go.
        let mut next = BTreeMap::new();
        next.insert("key-0".to_owned(), "English 0".to_owned());
        next.insert("key-1".to_owned(), "English one".to_owned());
        next.insert("key-9".to_owned(), "English 9".to_owned());
        let r = f
            .import(&ADMIN, "site", "en", next.clone(), true)
            .await
            .expect("replace");
        assert_eq!((r.created, r.updated, r.unchanged, r.deleted), (1, 1, 1, 5));
        assert_eq!(f.exported("site", "en").await, next);
        assert_eq!(
            f.text("site", "key-1", "en", json!({})).await,
            "English one"
        );

        // All or nothing: one bad message refuses the whole import, naming it.
        let mut bad = next.clone();
        bad.insert("key-2".to_owned(), "Broken { $x".to_owned());
        bad.insert("key-5".to_owned(), "fine".to_owned());
        let message = assert_invalid(
            f.import(&ADMIN, "site", "en", bad, false).await,
            "messages.key-2",
        );
        assert!(message.contains("key-2"), "{message}");
        let mut bad_key = BTreeMap::new();
        bad_key.insert("not a key".to_owned(), "x".to_owned());
        assert_invalid(
            f.import(&ADMIN, "site", "en", bad_key, false).await,
            "messages.not a key",
        );
        assert_eq!(f.exported("site", "en").await, next);
        let r = f.import(&USER, "site", "en", next.clone(), false).await;
        assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
        assert_eq!(
            f.audit("site/en").await,
            ["localization.import", "localization.import"]
        );

        // The namespace report and the missing keys of fr: every key of any locale that fr
        // lacks, with the locales that have it.
        let s = f.l10n.summary(&ANON, "site").await.expect("summary");
        assert_eq!(s.keys, 4, "key-0, key-1, key-3 (fr), key-9");
        assert_eq!(s.default_locale, "en");
        let per: Vec<(String, u64, u64)> = s
            .locales
            .iter()
            .map(|l| (l.locale.clone(), l.messages, l.missing))
            .collect();
        assert_eq!(per, [("en".to_owned(), 3, 1), ("fr".to_owned(), 2, 2)]);
        let p = f
            .l10n
            .missing(&ANON, "site", "fr", Some(1), None)
            .await
            .expect("missing");
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].key, "key-1");
        assert_eq!(p.items[0].locales, ["en"]);
        let p2 = f
            .l10n
            .missing(&ANON, "site", "fr", Some(1), p.next_cursor.as_deref())
            .await
            .expect("page 2");
        assert_eq!(p2.items[0].key, "key-9");
        assert!(p2.next_cursor.is_none());
        let de = f
            .l10n
            .missing(&ANON, "site", "de", None, None)
            .await
            .expect("de");
        assert_eq!(de.items.len(), 4, "a locale with nothing lacks every key");
        assert_invalid(
            f.l10n.missing(&ANON, "site", "xx yy", None, None).await,
            "locale",
        );

        // The list pages by locale then key.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = f
                .l10n
                .list(
                    &ANON,
                    MessageFilter {
                        namespace: "site".into(),
                        ..MessageFilter::default()
                    },
                    Some(2),
                    cursor.as_deref(),
                )
                .await
                .expect("list");
            seen.extend(page.items.iter().map(|m| format!("{}:{}", m.locale, m.key)));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["en:key-0", "en:key-1", "en:key-9", "fr:key-0", "fr:key-3"]
        );
        let only = f
            .l10n
            .list(
                &ANON,
                MessageFilter {
                    namespace: "site".into(),
                    locale: Some("FR".into()),
                    key_prefix: Some("key-3".into()),
                },
                None,
                None,
            )
            .await
            .expect("filtered");
        assert_eq!(only.items.len(), 1);
        assert_invalid(
            f.l10n
                .list(
                    &ANON,
                    MessageFilter {
                        namespace: "site".into(),
                        ..MessageFilter::default()
                    },
                    Some(0),
                    None,
                )
                .await,
            "limit",
        );
        f.finish().await;
    }
}

fn market(code: &str, currency: &str, locale: &str, countries: &[&str]) -> NewMarket {
    NewMarket {
        code: code.to_owned(),
        name: format!("Market {code}"),
        currency: currency.to_owned(),
        locale: locale.to_owned(),
        countries: countries.iter().map(|c| (*c).to_owned()).collect(),
    }
}

fn rule(market: &str, sku: &str, v: Value) -> NewRule {
    let mut v = v;
    v["market"] = json!(market);
    if v.get("category").is_none() {
        v["sku"] = json!(sku);
    }
    serde_json::from_value(v).expect("rule body")
}

fn ask(sku: &str, country: &str, locale: Option<&str>) -> PriceRequest {
    PriceRequest {
        sku: sku.to_owned(),
        country: country.to_owned(),
        locale: locale.map(str::to_owned),
        ..PriceRequest::default()
    }
}

#[tokio::test]
async fn prices_per_market_in_minor_units_formatted_for_the_locale() {
    for f in fixtures("babel_price").await {
        eprintln!("backend: {}", f.db.backend());
        let eu = f
            .babel
            .create_market(&PRICER, market("eu", "EUR", "fr-fr", &["FR", "DE", "BE"]))
            .await
            .expect("eu");
        assert_eq!((eu.exponent, eu.locale.as_str()), (2, "fr-FR"));
        assert_eq!(eu.countries, ["BE", "DE", "FR"]);
        for (who, code, currency, locale, country) in [
            (&*ADMIN, "us", "USD", "en-US", "US"),
            (&*PRICER, "jp", "JPY", "ja-JP", "JP"),
            (&*PRICER, "kw", "KWD", "en", "KW"),
        ] {
            f.babel
                .create_market(who, market(code, currency, locale, &[country]))
                .await
                .unwrap_or_else(|e| panic!("market {code}: {e}"));
        }

        for (m, body) in [
            // Explicit prices, tax included in the EU, added in the US.
            (
                "eu",
                json!({"amount": 1299, "tax_rate_bp": 2000, "tax_included": true}),
            ),
            ("us", json!({"amount": 1299, "tax_rate_bp": 888})),
            // A multiplier of the base price (10.00 USD) with rounding.
            ("jp", json!({"multiplier": "129.95", "rounding": "whole"})),
            ("kw", json!({"multiplier": "0.3085", "rounding": "none"})),
        ] {
            f.babel
                .create_rule(&PRICER, rule(m, "tee", body))
                .await
                .unwrap_or_else(|e| panic!("{m} tee: {e}"));
        }
        let cat = f
            .babel
            .create_rule(&PRICER, rule("eu", "", json!({"category": "shirts", "multiplier": "0.92", "rounding": "to_99", "tax_rate_bp": 2000, "tax_included": true})))
            .await
            .expect("eu shirts");
        assert_eq!(cat.multiplier.as_deref(), Some("0.92"));
        assert_eq!(cat.multiplier_bp, Some(9_200));

        let q = f
            .babel
            .price(&ANON, &ask("tee", "FR", Some("fr-FR")))
            .await
            .expect("FR");
        assert_eq!(
            (q.amount, q.currency.as_str(), q.exponent),
            (1299, "EUR", 2)
        );
        assert_eq!(q.formatted, "12,99\u{a0}€");
        assert_eq!(
            (q.net_amount, q.tax_amount, q.gross_amount),
            (1083, 216, 1299)
        );
        assert_eq!(q.source, PriceSource::Sku);
        assert_eq!(q.market, "eu");
        assert!(q.rule.is_some());
        // Without a locale, the market's; another locale formats the same amount its way.
        let q = f
            .babel
            .price(&ANON, &ask("tee", "DE", None))
            .await
            .expect("DE");
        assert_eq!(
            (q.locale.as_str(), q.formatted.as_str()),
            ("fr-FR", "12,99\u{a0}€")
        );
        let q = f
            .babel
            .price(&ANON, &ask("tee", "DE", Some("en-IE")))
            .await
            .expect("en-IE");
        assert_eq!(q.formatted, "€12.99");

        let q = f
            .babel
            .price(&USER, &ask("tee", "US", Some("en-US")))
            .await
            .expect("US");
        assert_eq!(q.formatted, "$12.99");
        assert_eq!(
            (q.net_amount, q.tax_amount, q.gross_amount),
            (1299, 115, 1414)
        );
        assert!(!q.tax_included);

        let base = |mut r: PriceRequest| {
            r.base_amount = Some(1000);
            r.base_currency = Some("USD".into());
            r
        };
        let q = f
            .babel
            .price(&ANON, &base(ask("tee", "JP", Some("ja-JP"))))
            .await
            .expect("JP");
        assert_eq!(
            (q.amount, q.exponent),
            (1300, 0),
            "1,299.5 yen up to a whole yen"
        );
        assert_eq!(q.formatted, "¥1,300");
        let q = f
            .babel
            .price(&ANON, &base(ask("tee", "KW", None)))
            .await
            .expect("KW");
        assert_eq!(
            (q.amount, q.exponent, q.currency.as_str()),
            (3085, 3, "KWD")
        );
        assert_eq!(q.formatted, "KWD\u{a0}3.085");

        // No SKU rule: the category's; 10.00 USD × 0.92 = 9.20 → 9.99.
        let mut r = base(ask("polo", "BE", Some("fr-BE")));
        r.category = Some("shirts".into());
        let q = f.babel.price(&ANON, &r).await.expect("category");
        assert_eq!((q.amount, q.source), (999, PriceSource::Category));
        assert_eq!(q.formatted, "9,99\u{a0}€");
        // No rule at all: the base price if it is in the market's currency.
        let mut r = ask("socks", "US", None);
        r.base_amount = Some(500);
        r.base_currency = Some("USD".into());
        let q = f.babel.price(&ANON, &r).await.expect("base");
        assert_eq!(
            (q.amount, q.source, q.formatted.as_str()),
            (500, PriceSource::Base, "$5.00")
        );
        assert!(q.rule.is_none());
        r.base_currency = Some("EUR".into());
        assert_not_found(f.babel.price(&ANON, &r).await, "price");
        // A multiplier rule needs the base price.
        assert_invalid(
            f.babel.price(&ANON, &ask("tee", "JP", None)).await,
            "base_amount",
        );

        // Bad inputs: 400 naming the field; an unknown country: 404.
        let mut r = base(ask("tee", "JP", None));
        r.base_currency = Some("XYZ".into());
        assert_invalid(f.babel.price(&ANON, &r).await, "base_currency");
        r.base_currency = Some("usd".into());
        assert_invalid(f.babel.price(&ANON, &r).await, "base_currency");
        let mut r = ask("tee", "FR", None);
        r.base_amount = Some(-1);
        r.base_currency = Some("EUR".into());
        assert_invalid(f.babel.price(&ANON, &r).await, "base_amount");
        r.base_currency = None;
        r.base_amount = Some(1);
        assert_invalid(f.babel.price(&ANON, &r).await, "base_currency");
        assert_invalid(
            f.babel.price(&ANON, &ask("tee", "fr", None)).await,
            "country",
        );
        assert_invalid(
            f.babel.price(&ANON, &ask("tee", "FR", Some("fr_FR"))).await,
            "locale",
        );
        assert_invalid(f.babel.price(&ANON, &ask("a b", "FR", None)).await, "sku");
        assert_not_found(
            f.babel.price(&ANON, &ask("tee", "BR", None)).await,
            "market for country",
        );
        f.finish().await;
    }
}

#[tokio::test]
async fn markets_and_rules_are_guarded_conflicts_are_409_and_changes_show_at_once() {
    for f in fixtures("babel_rules").await {
        eprintln!("backend: {}", f.db.backend());
        f.babel
            .create_market(&PRICER, market("eu", "EUR", "fr-FR", &["FR", "DE"]))
            .await
            .expect("eu");
        // Duplicates: the code, a country of another market (409 = Duplicate).
        let r = f
            .babel
            .create_market(&PRICER, market("eu", "EUR", "fr-FR", &[]))
            .await;
        assert!(matches!(r, Err(ServiceError::Duplicate { .. })), "{r:?}");
        let r = f
            .babel
            .create_market(&PRICER, market("dach", "EUR", "de-DE", &["AT", "DE"]))
            .await;
        assert!(matches!(r, Err(ServiceError::Duplicate { .. })), "{r:?}");
        assert_not_found(f.babel.market(&ANON, "dach").await, "market");
        // Invalid fields: 400 naming them.
        let mut long = market("x", "EUR", "en", &[]);
        long.name = "n".repeat(201);
        for (m, field) in [
            (market("x", "XXX", "en", &[]), "currency"),
            (market("x", "EUR", "not_a_tag", &[]), "locale"),
            (market("x", "EUR", "en", &["fra"]), "countries"),
            (market("X Y", "EUR", "en", &[]), "code"),
            (long, "name"),
        ] {
            assert_invalid(f.babel.create_market(&PRICER, m).await, field);
        }
        // RBAC.
        let r = f
            .babel
            .create_market(&ANON, market("x", "EUR", "en", &[]))
            .await;
        assert!(
            matches!(r, Err(ServiceError::Unauthenticated { .. })),
            "{r:?}"
        );
        for who in [&*USER, &*TRANSLATOR] {
            let r = f
                .babel
                .create_market(who, market("x", "EUR", "en", &[]))
                .await;
            assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
            let r = f.babel.rules(who, &RuleFilter::default(), None, None).await;
            assert!(matches!(r, Err(ServiceError::Forbidden { .. })), "{r:?}");
        }
        assert_eq!(
            f.babel
                .markets(&ANON, None, None)
                .await
                .expect("list")
                .items
                .len(),
            1
        );

        let tee = f
            .babel
            .create_rule(&PRICER, rule("eu", "tee", json!({"amount": 1000})))
            .await
            .expect("rule");
        assert_eq!(tee.rounding, Rounding::None);
        let r = f
            .babel
            .create_rule(&PRICER, rule("eu", "tee", json!({"amount": 2000})))
            .await;
        assert!(
            matches!(r, Err(ServiceError::Duplicate { .. })),
            "one rule per SKU: {r:?}"
        );
        assert_not_found(
            f.babel
                .create_rule(&PRICER, rule("nowhere", "tee", json!({"amount": 1})))
                .await,
            "market",
        );
        for (v, field) in [
            (json!({}), "amount"),
            (json!({"amount": 1, "multiplier": "2"}), "amount"),
            (json!({"amount": -5}), "amount"),
            (json!({"amount": 1, "rounding": "to_99"}), "rounding"),
            (json!({"multiplier": "0"}), "multiplier"),
            (json!({"multiplier": "1.23456"}), "multiplier"),
            (json!({"amount": 1, "tax_rate_bp": 10_001}), "tax_rate_bp"),
        ] {
            assert_invalid(
                f.babel.create_rule(&PRICER, rule("eu", "x", v)).await,
                field,
            );
        }
        let both: NewRule = serde_json::from_value(
            json!({"market": "eu", "sku": "a", "category": "b", "amount": 1}),
        )
        .expect("body");
        assert_invalid(f.babel.create_rule(&PRICER, both).await, "sku");

        // A price is cached, and a change shows at once.
        let q = f
            .babel
            .price(&ANON, &ask("tee", "FR", None))
            .await
            .expect("price");
        assert_eq!(q.amount, 1000);
        let replaced = f
            .babel
            .replace_rule(&PRICER, &tee.id, rule("eu", "tee", json!({"amount": 1500})))
            .await
            .expect("replace");
        assert_eq!(replaced.created_at, tee.created_at);
        assert_eq!(
            f.babel
                .price(&ANON, &ask("tee", "FR", None))
                .await
                .expect("price")
                .amount,
            1500
        );
        assert_eq!(
            f.babel.rule(&PRICER, &tee.id).await.expect("rule").amount,
            Some(1500)
        );
        assert_not_found(f.babel.rule(&PRICER, "nope").await, "price rule");

        // A new currency while explicit rules exist, deleting a market with rules: 409.
        let patch = MarketPatch {
            currency: Some("CHF".into()),
            ..MarketPatch::default()
        };
        let r = f.babel.update_market(&PRICER, "eu", patch.clone()).await;
        assert!(matches!(r, Err(ServiceError::Conflict { .. })), "{r:?}");
        let r = f.babel.delete_market(&ADMIN, "eu").await;
        assert!(matches!(r, Err(ServiceError::Conflict { .. })), "{r:?}");
        assert_invalid(
            f.babel
                .update_market(&PRICER, "eu", MarketPatch::default())
                .await,
            "patch",
        );

        // Moving a country between markets: the price follows.
        f.babel
            .create_market(&PRICER, market("ch", "CHF", "de-CH", &["CH"]))
            .await
            .expect("ch");
        let moved = f
            .babel
            .update_market(
                &PRICER,
                "eu",
                MarketPatch {
                    countries: Some(vec!["FR".into()]),
                    name: Some("Eurozone".into()),
                    ..MarketPatch::default()
                },
            )
            .await
            .expect("patch");
        assert_eq!(
            (moved.countries.clone(), moved.name.as_str()),
            (vec!["FR".to_owned()], "Eurozone")
        );
        let r = f
            .babel
            .update_market(
                &PRICER,
                "ch",
                MarketPatch {
                    countries: Some(vec!["FR".into()]),
                    ..MarketPatch::default()
                },
            )
            .await;
        assert!(matches!(r, Err(ServiceError::Duplicate { .. })), "{r:?}");
        f.babel
            .update_market(
                &PRICER,
                "ch",
                MarketPatch {
                    countries: Some(vec!["CH".into(), "DE".into()]),
                    ..MarketPatch::default()
                },
            )
            .await
            .expect("DE to ch");
        let mut r = ask("tee", "DE", None);
        r.base_amount = Some(990);
        r.base_currency = Some("CHF".into());
        let q = f.babel.price(&ANON, &r).await.expect("DE in ch");
        assert_eq!(
            (q.market.as_str(), q.formatted.as_str()),
            ("ch", "CHF\u{a0}9.90")
        );

        // Rules list with filters and pages; delete.
        f.babel
            .create_rule(&PRICER, rule("ch", "tee", json!({"amount": 1990})))
            .await
            .expect("ch tee");
        let tees = RuleFilter {
            sku: Some("tee".into()),
            ..RuleFilter::default()
        };
        let page = f
            .babel
            .rules(&PRICER, &tees, Some(1), None)
            .await
            .expect("rules");
        assert_eq!(page.items.len(), 1);
        let page2 = f
            .babel
            .rules(&PRICER, &tees, Some(1), page.next_cursor.as_deref())
            .await
            .expect("rules 2");
        assert_eq!(page2.items.len(), 1);
        assert_ne!(page.items[0].id, page2.items[0].id);
        f.babel
            .delete_rule(&PRICER, &tee.id)
            .await
            .expect("delete rule");
        assert_not_found(f.babel.delete_rule(&PRICER, &tee.id).await, "price rule");
        f.babel
            .update_market(&PRICER, "eu", patch)
            .await
            .expect("no explicit rules left");
        f.babel.delete_market(&ADMIN, "eu").await.expect("delete");
        assert_not_found(f.babel.market(&ANON, "eu").await, "market");
        assert_not_found(
            f.babel.price(&ANON, &ask("tee", "FR", None)).await,
            "market for country",
        );

        assert_eq!(
            f.audit("eu").await,
            [
                "babel.market_create",
                "babel.market_update",
                "babel.market_update",
                "babel.market_delete"
            ]
        );
        assert_eq!(
            f.audit(&tee.id).await,
            [
                "babel.rule_create",
                "babel.rule_replace",
                "babel.rule_delete"
            ]
        );
        f.finish().await;
    }
}
