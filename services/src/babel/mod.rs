//! The Babel pricing service: markets (a currency, a default locale and the countries they
//! cover) and price rules per market and SKU or category; [`BabelService::price`] answers the
//! price of a SKU for a country, in minor units and formatted for a locale. Tables
//! `service_babel_market`, `service_babel_market_country`, `service_babel_price_rule`.
//!
//! # Rules
//! * Resource `babel`: `price` and `read` (markets; anonymous too), `read_rules` and `write`
//!   (roles `pricing_manager` and `admin`).
//! * Money is integer minor units of the currency's ISO 4217 exponent (JPY 0, EUR 2, KWD 3);
//!   multipliers and tax rates are basis points; nothing is a float ([`money`]).
//! * A price: the market is the one that holds the country; the rule is the market's rule for
//!   the SKU, else for the category; an explicit rule gives the amount, a multiplier rule
//!   multiplies the base price given with the request (converting its currency's exponent)
//!   and rounds it (`none`, `to_99`, `whole`). With no rule, a base price already in the
//!   market's currency is the price. The rule's `tax_included` says whether the amount is gross
//!   or net; the quote gives net, tax and gross. Until a commerce service holds base prices,
//!   the caller passes them (`base_amount`, `base_currency`); commerce will call
//!   [`BabelService::price`] in-process with [`Caller::system`].
//! * Every change writes its audit row in its own transaction: `babel.market_create`,
//!   `babel.market_update`, `babel.market_delete` (entity `babel_market`),
//!   `babel.rule_create`, `babel.rule_replace`, `babel.rule_delete` (entity `babel_rule`).
//! * Lookups read a per-node snapshot of every market and rule, dropped on every change made
//!   through this node and re-read after the configured TTL otherwise.
//!
//! # Layout
//! * [`money`]: currencies, rounding, tax, formatting; [`model`]: records and requests;
//!   `repo`: storage.

pub mod model;
pub mod money;
mod repo;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use unic_langid::LanguageIdentifier;

pub use crate::page::Page;
pub use model::{
    Market, MarketPatch, NewMarket, NewRule, PriceRequest, PriceRule, PriceSource, Quote,
    RuleFilter, RuleKind,
};
pub use money::Rounding;

use crate::localization::locale;
use crate::page::{check_limit, paginate};
use crate::security::{Caller, Policies};
use crate::time::{now_ms, rfc3339};
use crate::{Database, ServiceError};
use repo::BabelRepo;

/// The resource every policy check names.
const RESOURCE: &str = "babel";

/// How the service is configured.
#[derive(Debug, Clone)]
pub struct BabelConfig {
    /// How long the snapshot of markets and rules is used before it is read again (changes
    /// made on other nodes show here after at most this long). Zero: read on every lookup.
    pub cache_ttl: Duration,
}

impl Default for BabelConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(10),
        }
    }
}

/// A market as lookups use it.
struct MarketEntry {
    code: String,
    currency: money::Currency,
    locale: LanguageIdentifier,
}

/// Every market and rule, indexed for lookups.
struct Snapshot {
    read_at: Instant,
    markets: HashMap<String, MarketEntry>,
    /// Country → market code.
    countries: HashMap<String, String>,
    /// Market → SKU → rule, and market → category → rule.
    by_sku: HashMap<String, HashMap<String, PriceRule>>,
    by_category: HashMap<String, HashMap<String, PriceRule>>,
}

/// Pricing operations.
#[derive(Clone)]
pub struct BabelService {
    repo: BabelRepo,
    policies: Policies,
    ttl: Duration,
    snapshot: Arc<RwLock<Option<Arc<Snapshot>>>>,
    /// Raised by every change: a snapshot read before a change is not kept after it.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for BabelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BabelService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A checked rule body: everything but the id and times.
struct CheckedRule {
    market: String,
    sku: Option<String>,
    category: Option<String>,
    kind: RuleKind,
    amount: Option<i64>,
    multiplier_bp: Option<i64>,
    rounding: Rounding,
    tax_rate_bp: i64,
    tax_included: bool,
}

fn check_rule(r: NewRule) -> Result<CheckedRule, ServiceError> {
    model::validate_market_code("market", &r.market)?;
    match (&r.sku, &r.category) {
        (Some(s), None) => model::validate_item("sku", s)?,
        (None, Some(c)) => model::validate_item("category", c)?,
        _ => {
            return Err(ServiceError::invalid(
                "sku",
                "give exactly one of sku and category",
            ));
        }
    }
    let (kind, amount, multiplier_bp) = match (r.amount, &r.multiplier) {
        (Some(a), None) => {
            model::validate_amount("amount", a)?;
            (RuleKind::Explicit, Some(a), None)
        }
        (None, Some(m)) => (
            RuleKind::Multiplier,
            None,
            Some(model::parse_multiplier(m)?),
        ),
        _ => {
            return Err(ServiceError::invalid(
                "amount",
                "give exactly one of amount (an explicit price) and multiplier",
            ));
        }
    };
    let rounding = r.rounding.unwrap_or(Rounding::None);
    if kind == RuleKind::Explicit && rounding != Rounding::None {
        return Err(ServiceError::invalid(
            "rounding",
            "applies to multiplier rules only; an explicit amount is the price",
        ));
    }
    let tax_rate_bp = r.tax_rate_bp.unwrap_or(0);
    model::validate_tax_rate(tax_rate_bp)?;
    Ok(CheckedRule {
        market: r.market,
        sku: r.sku,
        category: r.category,
        kind,
        amount,
        multiplier_bp,
        rounding,
        tax_rate_bp,
        tax_included: r.tax_included.unwrap_or(false),
    })
}

impl CheckedRule {
    fn into_rule(self, id: String, at: i64) -> PriceRule {
        PriceRule {
            id,
            market: self.market,
            sku: self.sku,
            category: self.category,
            kind: self.kind,
            amount: self.amount,
            multiplier: self.multiplier_bp.map(model::multiplier_text),
            multiplier_bp: self.multiplier_bp,
            rounding: self.rounding,
            tax_rate_bp: self.tax_rate_bp,
            tax_included: self.tax_included,
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        }
    }
}

impl BabelService {
    pub fn new(db: Database, policies: Policies, config: BabelConfig) -> Self {
        Self {
            repo: BabelRepo::new(db),
            policies,
            ttl: config.cache_ttl,
            snapshot: Arc::new(RwLock::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Forgets the snapshot (after a change).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Creates a market. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (field named: code, name, currency, locale, countries),
    /// [`ServiceError::Duplicate`] (code taken, a country in another market),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn create_market(
        &self,
        caller: &Caller,
        new: NewMarket,
    ) -> Result<Market, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        model::validate_market_code("code", &new.code)?;
        crate::campaign::model::validate_name(&new.name)?;
        let currency = model::validate_currency("currency", &new.currency)?;
        let locale = locale::canonical("locale", &new.locale)?;
        let countries = model::validate_countries(&new.countries)?;
        let at = now_ms();
        let m = Market {
            code: new.code,
            name: new.name.trim().to_owned(),
            currency: currency.code.to_owned(),
            exponent: currency.exponent,
            locale,
            countries,
            created_at: rfc3339(at),
            updated_at: rfc3339(at),
        };
        let audit = caller
            .audit("babel.market_create", "babel_market", &m.code)
            .after(&m);
        self.repo.insert_market(&m, at, &audit).await?;
        self.changed();
        Ok(m)
    }

    /// The market `code`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn market(&self, caller: &Caller, code: &str) -> Result<Market, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        model::validate_market_code("code", code)?;
        self.repo
            .market(code)
            .await?
            .ok_or_else(|| repo::market_not_found(code))
    }

    /// A page of markets by code; the cursor is the last code. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (limit), [`ServiceError::Unauthenticated`]/
    /// [`ServiceError::Forbidden`].
    pub async fn markets(
        &self,
        caller: &Caller,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Market>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let rows = self.repo.markets(cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |m| m.code.clone()))
    }

    /// Changes the fields `patch` names. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (an empty patch, a bad field), [`ServiceError::NotFound`],
    /// [`ServiceError::Conflict`] (a new currency while explicit rules exist),
    /// [`ServiceError::Duplicate`] (a country of another market),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn update_market(
        &self,
        caller: &Caller,
        code: &str,
        mut patch: MarketPatch,
    ) -> Result<Market, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        model::validate_market_code("code", code)?;
        if patch.is_empty() {
            return Err(ServiceError::invalid(
                "patch",
                "names no field to change (name, currency, locale, countries)",
            ));
        }
        if let Some(name) = &patch.name {
            crate::campaign::model::validate_name(name)?;
        }
        if let Some(c) = &patch.currency {
            model::validate_currency("currency", c)?;
        }
        if let Some(l) = &patch.locale {
            patch.locale = Some(locale::canonical("locale", l)?);
        }
        if let Some(c) = &patch.countries {
            patch.countries = Some(model::validate_countries(c)?);
        }
        let audit = caller.audit("babel.market_update", "babel_market", code);
        let (_, after) = self
            .repo
            .update_market(code, &patch, now_ms(), audit)
            .await?;
        self.changed();
        Ok(after)
    }

    /// Deletes a market that has no rules. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] while it has rules,
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn delete_market(&self, caller: &Caller, code: &str) -> Result<(), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        model::validate_market_code("code", code)?;
        let audit = caller.audit("babel.market_delete", "babel_market", code);
        self.repo.delete_market(code, audit).await?;
        self.changed();
        Ok(())
    }

    /// Creates a price rule. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (field named), [`ServiceError::NotFound`] (market),
    /// [`ServiceError::Duplicate`] (the market has a rule for that SKU or category),
    /// [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn create_rule(
        &self,
        caller: &Caller,
        new: NewRule,
    ) -> Result<PriceRule, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let at = now_ms();
        let r = check_rule(new)?.into_rule(uuid::Uuid::now_v7().to_string(), at);
        let audit = caller
            .audit("babel.rule_create", "babel_rule", &r.id)
            .after(&r);
        self.repo.insert_rule(&r, at, &audit).await?;
        self.changed();
        Ok(r)
    }

    /// The rule `id`. Needs `read_rules`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn rule(&self, caller: &Caller, id: &str) -> Result<PriceRule, ServiceError> {
        self.policies.require(caller, RESOURCE, "read_rules")?;
        self.repo
            .rule(id)
            .await?
            .ok_or_else(|| repo::rule_not_found(id))
    }

    /// A page of rules matching `filter`, oldest first; the cursor is the last id. Needs
    /// `read_rules`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn rules(
        &self,
        caller: &Caller,
        filter: &RuleFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<PriceRule>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read_rules")?;
        if let Some(m) = &filter.market {
            model::validate_market_code("market", m)?;
        }
        if let Some(s) = &filter.sku {
            model::validate_item("sku", s)?;
        }
        if let Some(c) = &filter.category {
            model::validate_item("category", c)?;
        }
        let limit = check_limit(limit)?;
        let rows = self.repo.rules(filter, cursor, limit + 1).await?;
        Ok(paginate(rows, limit, |r| r.id.clone()))
    }

    /// Replaces the rule `id` by `new`. Needs `write`.
    ///
    /// # Errors
    /// As [`BabelService::create_rule`], and [`ServiceError::NotFound`] for the rule.
    pub async fn replace_rule(
        &self,
        caller: &Caller,
        id: &str,
        new: NewRule,
    ) -> Result<PriceRule, ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let at = now_ms();
        let mut r = check_rule(new)?.into_rule(id.to_owned(), at);
        let audit = caller.audit("babel.rule_replace", "babel_rule", id);
        let before = self.repo.replace_rule(&r, at, audit).await?;
        r.created_at = before.created_at;
        self.changed();
        Ok(r)
    }

    /// Deletes the rule `id`. Needs `write`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Unauthenticated`]/[`ServiceError::Forbidden`].
    pub async fn delete_rule(&self, caller: &Caller, id: &str) -> Result<(), ServiceError> {
        self.policies.require(caller, RESOURCE, "write")?;
        let audit = caller.audit("babel.rule_delete", "babel_rule", id);
        self.repo.delete_rule(id, audit).await?;
        self.changed();
        Ok(())
    }

    /// The price of `req.sku` for a buyer in `req.country` (see the module's rules). Needs
    /// `price`. Commerce calls it in-process with [`Caller::system`].
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (a bad field; `base_amount` missing for a multiplier rule;
    /// an unknown currency), [`ServiceError::NotFound`] (no market holds the country; no rule
    /// and no base price in the market's currency), [`ServiceError::Unauthenticated`]/
    /// [`ServiceError::Forbidden`].
    pub async fn price(&self, caller: &Caller, req: &PriceRequest) -> Result<Quote, ServiceError> {
        self.policies.require(caller, RESOURCE, "price")?;
        model::validate_item("sku", &req.sku)?;
        if let Some(c) = &req.category {
            model::validate_item("category", c)?;
        }
        model::validate_country("country", &req.country)?;
        let requested_locale = req
            .locale
            .as_deref()
            .map(|l| locale::parse("locale", l))
            .transpose()?;
        let base = match (req.base_amount, req.base_currency.as_deref()) {
            (Some(a), Some(c)) => {
                model::validate_amount("base_amount", a)?;
                Some((a, model::validate_currency("base_currency", c)?))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ServiceError::invalid(
                    "base_currency",
                    "is required with base_amount",
                ));
            }
            (None, Some(_)) => {
                return Err(ServiceError::invalid(
                    "base_amount",
                    "is required with base_currency",
                ));
            }
        };
        let snapshot = self.snapshot().await?;
        let market_code =
            snapshot
                .countries
                .get(&req.country)
                .ok_or_else(|| ServiceError::NotFound {
                    entity: "market for country",
                    id: req.country.clone(),
                })?;
        let market = snapshot
            .markets
            .get(market_code)
            .ok_or_else(|| repo::market_not_found(market_code))?;
        let by_sku = snapshot
            .by_sku
            .get(&market.code)
            .and_then(|m| m.get(&req.sku));
        let by_category = || {
            req.category.as_ref().and_then(|c| {
                snapshot
                    .by_category
                    .get(&market.code)
                    .and_then(|m| m.get(c))
            })
        };
        let (source, rule) = match by_sku {
            Some(r) => (PriceSource::Sku, Some(r)),
            None => match by_category() {
                Some(r) => (PriceSource::Category, Some(r)),
                None => (PriceSource::Base, None),
            },
        };
        let (price, tax_rate_bp, tax_included) = match rule {
            Some(r) => {
                let price = match (r.kind, r.amount, r.multiplier_bp) {
                    (RuleKind::Explicit, Some(a), _) => a,
                    (RuleKind::Multiplier, _, Some(bp)) => {
                        let (amount, from) = base.ok_or_else(|| {
                            ServiceError::invalid(
                                "base_amount",
                                format!(
                                    "rule {} multiplies a base price: give base_amount and \
                                     base_currency",
                                    r.id
                                ),
                            )
                        })?;
                        money::multiply(amount, from, market.currency, bp, r.rounding)?
                    }
                    _ => {
                        return Err(ServiceError::Conflict {
                            message: format!("rule {} is incomplete", r.id),
                        });
                    }
                };
                (price, r.tax_rate_bp, r.tax_included)
            }
            None => match base {
                Some((amount, from)) if from == market.currency => (amount, 0, false),
                _ => {
                    return Err(ServiceError::NotFound {
                        entity: "price",
                        id: format!(
                            "{} in market {} (no rule for the sku or category, and no base \
                             price in {})",
                            req.sku, market.code, market.currency.code
                        ),
                    });
                }
            },
        };
        let (net, tax, gross) = money::tax(price, tax_rate_bp, tax_included);
        let locale = requested_locale.unwrap_or_else(|| market.locale.clone());
        Ok(Quote {
            sku: req.sku.clone(),
            country: req.country.clone(),
            market: market.code.clone(),
            currency: market.currency.code.to_owned(),
            exponent: market.currency.exponent,
            amount: price,
            formatted: money::format(price, market.currency, &locale),
            locale: locale.to_string(),
            net_amount: net,
            tax_amount: tax,
            gross_amount: gross,
            tax_rate_bp,
            tax_included,
            source,
            rule: rule.cloned(),
        })
    }

    /// The snapshot of markets and rules: the cached one while it is younger than the TTL,
    /// else read again.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, ServiceError> {
        if let Some(s) = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && s.read_at.elapsed() < self.ttl
        {
            return Ok(s.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let read_at = Instant::now();
        let everything = self.repo.everything().await?;
        let mut s = Snapshot {
            read_at,
            markets: HashMap::new(),
            countries: HashMap::new(),
            by_sku: HashMap::new(),
            by_category: HashMap::new(),
        };
        for m in everything.markets {
            let Ok(currency) = money::currency("currency", &m.currency) else {
                continue;
            };
            let Ok(locale) = locale::parse("locale", &m.locale) else {
                continue;
            };
            for c in &m.countries {
                s.countries.insert(c.clone(), m.code.clone());
            }
            s.markets.insert(
                m.code.clone(),
                MarketEntry {
                    code: m.code,
                    currency,
                    locale,
                },
            );
        }
        for r in everything.rules {
            let index = if let Some(sku) = &r.sku {
                Some((&mut s.by_sku, sku.clone()))
            } else {
                r.category.clone().map(|c| (&mut s.by_category, c))
            };
            if let Some((index, item)) = index {
                index.entry(r.market.clone()).or_default().insert(item, r);
            }
        }
        let s = Arc::new(s);
        if !self.ttl.is_zero() {
            let mut slot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            if self.generation.load(Ordering::SeqCst) == generation {
                *slot = Some(s.clone());
            }
        }
        Ok(s)
    }
}
