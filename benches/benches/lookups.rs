//! Localization and Babel lookups, the read paths a page render or a checkout calls many
//! times: on a SQLite database seeded with 1,000 messages per locale and 1,000 price rules per
//! market, through the services' methods (RBAC check, validation, cache, formatting).
//! * `price/sku_explicit`: a SKU rule with an explicit amount and tax, formatted for fr-FR
//!   (cached rules);
//! * `price/category_multiplier`: a category rule multiplying a USD base price into JPY with
//!   `to_99` rounding, formatted for ja-JP (cached rules);
//! * `price/uncached`: the same as `sku_explicit` with the cache off (every lookup reads every
//!   market and rule: what a node does once per TTL);
//! * `translation/simple`: a message without arguments in its own locale;
//! * `translation/plural_fallback`: a plural message looked up for `fr-CA`, found in `fr`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, json};
use services::Database;
use services::babel::{BabelConfig, BabelService, NewMarket, NewRule, PriceRequest};
use services::localization::{FormatRequest, Import, LocalizationConfig, LocalizationService};
use services::security::{Caller, Policies};

const ITEMS: usize = 1_000;

struct Fixture {
    rt: tokio::runtime::Runtime,
    db: Database,
    policies: Policies,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir =
            std::env::temp_dir().join(format!("ovasabi-bench-lookups-{}", std::process::id()));
        let (db, policies) = rt.block_on(async {
            let db = Database::connect(&format!("sqlite://{}/bench.db", dir.display()))
                .await
                .expect("sqlite");
            db.migrate().await.expect("migrate");
            let policies = Policies::load(db.clone()).await.expect("policies");
            (db, policies)
        });
        Self {
            rt,
            db,
            policies,
            dir,
        }
    }

    fn localization(&self, ttl: Duration) -> LocalizationService {
        LocalizationService::new(
            self.db.clone(),
            self.policies.clone(),
            LocalizationConfig {
                default_locale: "en".into(),
                cache_ttl: ttl,
            },
        )
        .expect("service")
    }

    fn babel(&self, ttl: Duration) -> BabelService {
        BabelService::new(
            self.db.clone(),
            self.policies.clone(),
            BabelConfig { cache_ttl: ttl },
        )
    }

    fn seed(&self) {
        let sys = Caller::system();
        let l10n = self.localization(Duration::ZERO);
        let babel = self.babel(Duration::ZERO);
        self.rt.block_on(async {
            for locale in ["en", "fr"] {
                let mut messages: BTreeMap<String, String> = (0..ITEMS)
                    .map(|i| (format!("key-{i}"), format!("Message {i} in {locale}")))
                    .collect();
                messages.insert(
                    "items".into(),
                    "{ $count ->\n    [one] { $count } article\n   *[other] { $count } articles\n}"
                        .into(),
                );
                l10n.import(
                    &sys,
                    "shop",
                    locale,
                    Import {
                        messages,
                        replace: true,
                    },
                )
                .await
                .expect("import");
            }
            for (code, currency, locale, country) in
                [("eu", "EUR", "fr-FR", "FR"), ("jp", "JPY", "ja-JP", "JP")]
            {
                babel
                    .create_market(
                        &sys,
                        NewMarket {
                            code: code.into(),
                            name: code.into(),
                            currency: currency.into(),
                            locale: locale.into(),
                            countries: vec![country.into()],
                        },
                    )
                    .await
                    .expect("market");
            }
            for i in 0..ITEMS {
                let eu: NewRule = serde_json::from_value(json!({
                    "market": "eu", "sku": format!("sku-{i}"), "amount": 1299 + i,
                    "tax_rate_bp": 2000, "tax_included": true,
                }))
                .expect("rule");
                babel.create_rule(&sys, eu).await.expect("eu rule");
                let jp: NewRule = serde_json::from_value(json!({
                    "market": "jp", "category": format!("cat-{i}"), "multiplier": "123.4",
                    "rounding": "to_99",
                }))
                .expect("rule");
                babel.create_rule(&sys, jp).await.expect("jp rule");
            }
        });
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lookups(c: &mut Criterion) {
    let f = Fixture::new();
    f.seed();
    let anon = Caller::anonymous();
    let hour = Duration::from_secs(3600);

    let mut g = c.benchmark_group("price");
    g.throughput(Throughput::Elements(1));
    let babel = f.babel(hour);
    let sku = PriceRequest {
        sku: "sku-500".into(),
        country: "FR".into(),
        locale: Some("fr-FR".into()),
        ..PriceRequest::default()
    };
    g.bench_function("sku_explicit", |b| {
        b.iter(|| black_box(f.rt.block_on(babel.price(&anon, &sku)).expect("price")));
    });
    let category = PriceRequest {
        sku: "unknown".into(),
        category: Some("cat-500".into()),
        country: "JP".into(),
        locale: Some("ja-JP".into()),
        base_amount: Some(1000),
        base_currency: Some("USD".into()),
    };
    g.bench_function("category_multiplier", |b| {
        b.iter(|| black_box(f.rt.block_on(babel.price(&anon, &category)).expect("price")));
    });
    let uncached = f.babel(Duration::ZERO);
    g.bench_function("uncached", |b| {
        b.iter(|| black_box(f.rt.block_on(uncached.price(&anon, &sku)).expect("price")));
    });
    g.finish();

    let mut g = c.benchmark_group("translation");
    g.throughput(Throughput::Elements(1));
    let l10n = f.localization(hour);
    let simple = FormatRequest {
        namespace: "shop".into(),
        key: "key-500".into(),
        locale: "en".into(),
        args: Map::new(),
    };
    g.bench_function("simple", |b| {
        b.iter(|| black_box(f.rt.block_on(l10n.format(&anon, &simple)).expect("format")));
    });
    let mut args = Map::new();
    args.insert("count".into(), json!(3));
    let plural = FormatRequest {
        namespace: "shop".into(),
        key: "items".into(),
        locale: "fr-CA".into(),
        args,
    };
    g.bench_function("plural_fallback", |b| {
        b.iter(|| black_box(f.rt.block_on(l10n.format(&anon, &plural)).expect("format")));
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
