//! Babel storage: tables `service_babel_market`, `service_babel_market_country` and
//! `service_babel_price_rule`. Each query is written once for both dialects ([`Queries`]).

use std::collections::BTreeMap;

use sqlx::Row;

use super::model::{Market, MarketPatch, PriceRule, RuleFilter, RuleKind, multiplier_text};
use super::money::{self, Rounding};
use crate::db::on_pool;
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! rule_columns {
    () => {
        "id, market, sku, category, kind, amount, multiplier_bp, rounding, tax_rate_bp, tax_included, \
         created_at, updated_at"
    };
}

portable_sql! {
    /// The SQL of markets and rules, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        market_get: "SELECT code, name, currency, locale, created_at, updated_at \
                     FROM service_babel_market WHERE code = $1",
        market_get_for_update: "SELECT code, name, currency, locale, created_at, updated_at \
                                FROM service_babel_market WHERE code = $1{for_update}",
        market_insert: "INSERT INTO service_babel_market (code, name, currency, locale, created_at, updated_at) \
                        VALUES ($1, $2, $3, $4, $5, $5)",
        market_update: "UPDATE service_babel_market SET name = $2, currency = $3, locale = $4, updated_at = $5 \
                        WHERE code = $1",
        market_delete: "DELETE FROM service_babel_market WHERE code = $1",
        markets: "SELECT code, name, currency, locale, created_at, updated_at FROM service_babel_market \
                  WHERE ($1{text} IS NULL OR code > $1) ORDER BY code LIMIT $2",
        countries_of: "SELECT country FROM service_babel_market_country WHERE market = $1 ORDER BY country",
        countries_between: "SELECT market, country FROM service_babel_market_country \
                            WHERE market >= $1 AND market <= $2 ORDER BY market, country",
        country_owner: "SELECT market FROM service_babel_market_country WHERE country = $1",
        country_insert: "INSERT INTO service_babel_market_country (country, market) VALUES ($1, $2)",
        countries_delete: "DELETE FROM service_babel_market_country WHERE market = $1",
        rules_of_market: "SELECT COUNT(*) FROM service_babel_price_rule WHERE market = $1",
        explicit_rules_of_market: "SELECT COUNT(*) FROM service_babel_price_rule \
                                   WHERE market = $1 AND kind = 'explicit'",
        rule_get: concat!("SELECT ", rule_columns!(), " FROM service_babel_price_rule WHERE id = $1"),
        rule_get_for_update: concat!("SELECT ", rule_columns!(), " FROM service_babel_price_rule WHERE id = $1{for_update}"),
        rule_insert: "INSERT INTO service_babel_price_rule (id, market, sku, category, kind, amount, \
                      multiplier_bp, rounding, tax_rate_bp, tax_included, created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        rule_update: "UPDATE service_babel_price_rule SET market = $2, sku = $3, category = $4, kind = $5, \
                      amount = $6, multiplier_bp = $7, rounding = $8, tax_rate_bp = $9, tax_included = $10, \
                      updated_at = $11 WHERE id = $1",
        rule_delete: "DELETE FROM service_babel_price_rule WHERE id = $1",
        rules: concat!("SELECT ", rule_columns!(), " FROM service_babel_price_rule \
                        WHERE ($1{text} IS NULL OR market = $1) AND ($2{text} IS NULL OR sku = $2) \
                        AND ($3{text} IS NULL OR category = $3) AND ($4{text} IS NULL OR id > $4) \
                        ORDER BY id LIMIT $5"),
        all_markets: "SELECT code, name, currency, locale, created_at, updated_at FROM service_babel_market",
        all_countries: "SELECT market, country FROM service_babel_market_country",
        all_rules: concat!("SELECT ", rule_columns!(), " FROM service_babel_price_rule"),
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

fn decode(message: String) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(message.into()))
}

/// A market's row, without its countries.
struct MarketRow {
    code: String,
    name: String,
    currency: String,
    locale: String,
    created_at: i64,
    updated_at: i64,
}

macro_rules! market_row {
    ($row:expr) => {
        MarketRow {
            code: $row.try_get("code")?,
            name: $row.try_get("name")?,
            currency: $row.try_get("currency")?,
            locale: $row.try_get("locale")?,
            created_at: $row.try_get("created_at")?,
            updated_at: $row.try_get("updated_at")?,
        }
    };
}

impl MarketRow {
    fn into_market(self, countries: Vec<String>) -> Result<Market, ServiceError> {
        let currency = money::currency("currency", &self.currency)
            .map_err(|_| decode(format!("unknown stored currency {:?}", self.currency)))?;
        Ok(Market {
            code: self.code,
            name: self.name,
            currency: self.currency,
            exponent: currency.exponent,
            locale: self.locale,
            countries,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        })
    }
}

/// A rule's row.
struct RuleRow {
    id: String,
    market: String,
    sku: Option<String>,
    category: Option<String>,
    kind: String,
    amount: Option<i64>,
    multiplier_bp: Option<i64>,
    rounding: String,
    tax_rate_bp: i64,
    tax_included: bool,
    created_at: i64,
    updated_at: i64,
}

macro_rules! rule_row {
    ($row:expr) => {
        RuleRow {
            id: $row.try_get("id")?,
            market: $row.try_get("market")?,
            sku: $row.try_get("sku")?,
            category: $row.try_get("category")?,
            kind: $row.try_get("kind")?,
            amount: $row.try_get("amount")?,
            multiplier_bp: $row.try_get("multiplier_bp")?,
            rounding: $row.try_get("rounding")?,
            tax_rate_bp: $row.try_get("tax_rate_bp")?,
            tax_included: $row.try_get("tax_included")?,
            created_at: $row.try_get("created_at")?,
            updated_at: $row.try_get("updated_at")?,
        }
    };
}

impl RuleRow {
    fn into_rule(self) -> Result<PriceRule, ServiceError> {
        let kind = RuleKind::parse(&self.kind)
            .ok_or_else(|| decode(format!("unknown rule kind {:?}", self.kind)))?;
        let rounding = Rounding::parse(&self.rounding)
            .ok_or_else(|| decode(format!("unknown rounding {:?}", self.rounding)))?;
        Ok(PriceRule {
            id: self.id,
            market: self.market,
            sku: self.sku,
            category: self.category,
            kind,
            amount: self.amount,
            multiplier: self.multiplier_bp.map(multiplier_text),
            multiplier_bp: self.multiplier_bp,
            rounding,
            tax_rate_bp: self.tax_rate_bp,
            tax_included: self.tax_included,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        })
    }
}

/// Everything a price lookup needs, read at once.
pub struct Everything {
    pub markets: Vec<Market>,
    pub rules: Vec<PriceRule>,
}

/// 404 for the market `code`.
pub(crate) fn market_not_found(code: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "market",
        id: code.to_owned(),
    }
}

/// 404 for the price rule `id`.
pub(crate) fn rule_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity: "price rule",
        id: id.to_owned(),
    }
}

fn rule_conflict(e: sqlx::Error, r: &PriceRule) -> ServiceError {
    match ServiceError::from(e) {
        ServiceError::Duplicate { .. } => ServiceError::Duplicate {
            message: format!(
                "market {:?} has a rule for {} {:?} already",
                r.market,
                if r.sku.is_some() { "sku" } else { "category" },
                r.sku
                    .as_deref()
                    .or(r.category.as_deref())
                    .unwrap_or_default()
            ),
        },
        other => other,
    }
}

/// Inserts the countries of `market` on `$tx`, refusing (409) one owned by another market.
macro_rules! insert_countries {
    ($tx:expr, $sql:expr, $market:expr, $countries:expr) => {
        for country in $countries {
            let owner: Option<String> = sqlx::query_scalar($sql.country_owner)
                .bind(country)
                .fetch_optional(&mut *$tx)
                .await?;
            if let Some(owner) = owner {
                return Err(ServiceError::Duplicate {
                    message: format!("country {country} belongs to market {owner:?} already"),
                });
            }
            sqlx::query($sql.country_insert)
                .bind(country)
                .bind($market)
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// Reads the market `code` with `$query` (plain or `FOR UPDATE`) on `$tx`: evaluates to its
/// [`MarketRow`], or returns 404 from the enclosing body when it does not exist.
macro_rules! market_or_not_found {
    ($tx:expr, $query:expr, $code:expr) => {
        match sqlx::query($query)
            .bind($code)
            .fetch_optional(&mut *$tx)
            .await?
        {
            Some(row) => market_row!(row),
            None => return Err(market_not_found($code)),
        }
    };
}

/// Reads the rule `id` with `sql.rule_get_for_update` on `$tx`: evaluates to the
/// [`PriceRule`], or returns 404 from the enclosing body when it does not exist.
macro_rules! rule_for_update {
    ($tx:expr, $sql:expr, $id:expr) => {
        match sqlx::query($sql.rule_get_for_update)
            .bind($id)
            .fetch_optional(&mut *$tx)
            .await?
        {
            Some(row) => rule_row!(row).into_rule()?,
            None => return Err(rule_not_found($id)),
        }
    };
}

/// Writes the rule `$r` with `$query` (`rule_insert` or `rule_update`: the same parameters,
/// `$11` the time) on `$tx`; a rule for the same SKU or category of the market is a 409.
macro_rules! write_rule {
    ($tx:expr, $query:expr, $r:expr, $at_ms:expr) => {
        sqlx::query($query)
            .bind(&$r.id)
            .bind(&$r.market)
            .bind($r.sku.as_deref())
            .bind($r.category.as_deref())
            .bind($r.kind.as_str())
            .bind($r.amount)
            .bind($r.multiplier_bp)
            .bind($r.rounding.as_str())
            .bind($r.tax_rate_bp)
            .bind($r.tax_included)
            .bind($at_ms)
            .execute(&mut *$tx)
            .await
            .map_err(|e| rule_conflict(e, $r))?
    };
}

/// `rows` as markets, each with its countries out of the `(market, country)` pairs.
///
/// # Errors
/// [`ServiceError::Database`] for a stored currency that is not supported.
fn with_countries(
    rows: Vec<MarketRow>,
    countries: Vec<(String, String)>,
) -> Result<Vec<Market>, ServiceError> {
    let mut by_market: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (market, country) in countries {
        by_market.entry(market).or_default().push(country);
    }
    rows.into_iter()
        .map(|m| {
            let c = by_market.remove(&m.code).unwrap_or_default();
            m.into_market(c)
        })
        .collect()
}

/// Reads and writes markets and rules.
#[derive(Clone, Debug)]
pub struct BabelRepo {
    db: Database,
}

impl BabelRepo {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores a new market and its countries with the audit row.
    ///
    /// # Errors
    /// [`ServiceError::Duplicate`] when the code is taken or a country belongs to another
    /// market; database failures.
    pub async fn insert_market(
        &self,
        m: &Market,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let exists = sqlx::query(sql.market_get)
                .bind(&m.code)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if exists {
                return Err(ServiceError::Duplicate {
                    message: format!("a market with code {:?} exists", m.code),
                });
            }
            sqlx::query(sql.market_insert)
                .bind(&m.code)
                .bind(&m.name)
                .bind(&m.currency)
                .bind(&m.locale)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            insert_countries!(tx, sql, &m.code, &m.countries);
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The market `code` with its countries.
    ///
    /// # Errors
    /// Database failures.
    pub async fn market(&self, code: &str) -> Result<Option<Market>, ServiceError> {
        let found = on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.market_get)
                .bind(code)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => {
                    let m = market_row!(row);
                    let countries: Vec<String> = sqlx::query_scalar(sql.countries_of)
                        .bind(code)
                        .fetch_all(pool)
                        .await?;
                    Some((m, countries))
                }
                None => None,
            }
        });
        found.map(|(m, c)| m.into_market(c)).transpose()
    }

    /// Up to `limit` markets with codes after `after`, by code, with their countries.
    ///
    /// # Errors
    /// Database failures.
    pub async fn markets(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Market>, ServiceError> {
        let (rows, countries) = on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.markets)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(market_row!(row));
            }
            let countries: Vec<(String, String)> = match (out.first(), out.last()) {
                (Some(first), Some(last)) => {
                    sqlx::query_as(sql.countries_between)
                        .bind(&first.code)
                        .bind(&last.code)
                        .fetch_all(pool)
                        .await?
                }
                _ => Vec::new(),
            };
            (out, countries)
        });
        with_countries(rows, countries)
    }

    /// Applies `patch` (checked) to the market `code` in one transaction with the audit row;
    /// returns the market before and after.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] for a new currency while
    /// explicit rules exist, [`ServiceError::Duplicate`] for a country of another market.
    pub async fn update_market(
        &self,
        code: &str,
        patch: &MarketPatch,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<(Market, Market), ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = market_or_not_found!(tx, sql.market_get_for_update, code);
            let countries: Vec<String> = sqlx::query_scalar(sql.countries_of)
                .bind(code)
                .fetch_all(&mut *tx)
                .await?;
            let before = row.into_market(countries)?;
            let mut after = before.clone();
            if let Some(currency) = &patch.currency
                && *currency != before.currency
            {
                let explicit: i64 = sqlx::query_scalar(sql.explicit_rules_of_market)
                    .bind(code)
                    .fetch_one(&mut *tx)
                    .await?;
                if explicit > 0 {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "market {code:?} has {explicit} explicit price rule(s) in {}; \
                             delete or replace them before changing its currency",
                            before.currency
                        ),
                    });
                }
                after.currency = currency.clone();
                after.exponent = money::currency("currency", currency)?.exponent;
            }
            if let Some(name) = &patch.name {
                after.name = name.trim().to_owned();
            }
            if let Some(locale) = &patch.locale {
                after.locale = locale.clone();
            }
            after.updated_at = rfc3339(at_ms);
            sqlx::query(sql.market_update)
                .bind(code)
                .bind(&after.name)
                .bind(&after.currency)
                .bind(&after.locale)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            if let Some(countries) = &patch.countries {
                sqlx::query(sql.countries_delete)
                    .bind(code)
                    .execute(&mut *tx)
                    .await?;
                insert_countries!(tx, sql, code, countries);
                after.countries = countries.clone();
            }
            let audit = audit.before(&before).after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            (before, after)
        }))
    }

    /// Deletes a market and its countries with the audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] while it has price rules.
    pub async fn delete_market(&self, code: &str, audit: AuditRecord) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let row = market_or_not_found!(tx, sql.market_get_for_update, code);
            let rules: i64 = sqlx::query_scalar(sql.rules_of_market)
                .bind(code)
                .fetch_one(&mut *tx)
                .await?;
            if rules > 0 {
                return Err(ServiceError::Conflict {
                    message: format!(
                        "market {code:?} has {rules} price rule(s); delete them first"
                    ),
                });
            }
            let countries: Vec<String> = sqlx::query_scalar(sql.countries_of)
                .bind(code)
                .fetch_all(&mut *tx)
                .await?;
            let before = row.into_market(countries)?;
            sqlx::query(sql.market_delete)
                .bind(code)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.before(&before));
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stores a new rule with the audit row; the market must exist.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for the market, [`ServiceError::Duplicate`] when the market
    /// has a rule for the same SKU or category.
    pub async fn insert_rule(
        &self,
        r: &PriceRule,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            market_or_not_found!(tx, sql.market_get_for_update, &r.market);
            write_rule!(tx, sql.rule_insert, r, at_ms);
            audit::insert!(&mut *tx, sql.audit, audit);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The rule `id`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rule(&self, id: &str) -> Result<Option<PriceRule>, ServiceError> {
        let row = on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.rule_get)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(rule_row!(row)),
                None => None,
            }
        });
        row.map(RuleRow::into_rule).transpose()
    }

    /// Up to `limit` rules matching `filter` with ids after `after`, by id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rules(
        &self,
        filter: &RuleFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PriceRule>, ServiceError> {
        let rows = on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.rules)
                .bind(filter.market.as_deref())
                .bind(filter.sku.as_deref())
                .bind(filter.category.as_deref())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(rule_row!(row));
            }
            out
        });
        rows.into_iter().map(RuleRow::into_rule).collect()
    }

    /// Replaces the rule `r.id` by `r` (its market must exist) with the audit row; returns the
    /// rule before.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (rule or market), [`ServiceError::Duplicate`].
    pub async fn replace_rule(
        &self,
        r: &PriceRule,
        at_ms: i64,
        audit: AuditRecord,
    ) -> Result<PriceRule, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = rule_for_update!(tx, sql, &r.id);
            market_or_not_found!(tx, sql.market_get, &r.market);
            write_rule!(tx, sql.rule_update, r, at_ms);
            let mut after = r.clone();
            after.created_at = before.created_at.clone();
            let audit = audit.before(&before).after(&after);
            audit::insert!(&mut *tx, sql.audit, &audit);
            tx.commit().await?;
            before
        }))
    }

    /// Deletes the rule `id` with the audit row.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`].
    pub async fn delete_rule(&self, id: &str, audit: AuditRecord) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let before = rule_for_update!(tx, sql, id);
            sqlx::query(sql.rule_delete)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            audit::insert!(&mut *tx, sql.audit, &audit.before(&before));
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every market (with countries) and every rule.
    ///
    /// # Errors
    /// Database failures.
    pub async fn everything(&self) -> Result<Everything, ServiceError> {
        let (markets, countries, rules) = on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.all_markets).fetch_all(pool).await?;
            let mut markets = Vec::with_capacity(rows.len());
            for row in rows {
                markets.push(market_row!(row));
            }
            let countries: Vec<(String, String)> =
                sqlx::query_as(sql.all_countries).fetch_all(pool).await?;
            let rows = sqlx::query(sql.all_rules).fetch_all(pool).await?;
            let mut rules = Vec::with_capacity(rows.len());
            for row in rows {
                rules.push(rule_row!(row));
            }
            (markets, countries, rules)
        });
        let markets = with_countries(markets, countries)?;
        let rules = rules
            .into_iter()
            .map(RuleRow::into_rule)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Everything { markets, rules })
    }
}
