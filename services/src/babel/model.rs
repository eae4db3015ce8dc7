//! Markets, price rules, price quotes, and the rules their fields follow.

use serde::{Deserialize, Serialize};

pub use super::money::Rounding;
use super::money::{self, MAX_AMOUNT, MAX_MULTIPLIER_BP, MAX_TAX_RATE_BP};
use crate::ServiceError;

/// Longest market code, SKU and category; most countries in a market.
pub const MAX_MARKET_CODE_LEN: usize = 32;
pub const MAX_SKU_LEN: usize = 128;
pub const MAX_CATEGORY_LEN: usize = 128;
pub const MAX_COUNTRIES: usize = 300;

/// A market: a currency, the countries it covers and the locale its prices are shown in by
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Market {
    pub code: String,
    pub name: String,
    /// ISO 4217 (`EUR`).
    pub currency: String,
    /// ISO 4217 minor-unit digits of the currency (EUR 2, JPY 0, KWD 3).
    pub exponent: u8,
    /// BCP 47: how prices are formatted when the request names no locale.
    pub locale: String,
    /// ISO 3166-1 alpha-2 codes, sorted; a country belongs to one market at most.
    pub countries: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of a market's creation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMarket {
    /// 1–32 characters of `[a-z0-9-]`, starting with a letter or digit (`eu`, `us`, `jp`).
    pub code: String,
    /// 1–200 characters, no control characters.
    pub name: String,
    /// A supported ISO 4217 code (`EUR`, `USD`, `JPY`, `KWD`, ...).
    pub currency: String,
    /// BCP 47 (`fr-FR`).
    pub locale: String,
    /// ISO 3166-1 alpha-2 codes (`FR`, `DE`), at most 300, none in another market.
    #[serde(default)]
    pub countries: Vec<String>,
}

/// The fields of a market a PATCH may change; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// Refused (409) while the market has explicit-price rules, which are amounts in the old
    /// currency.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    /// The new set of countries (replaces the old one).
    #[serde(default)]
    pub countries: Option<Vec<String>>,
}

impl MarketPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.currency.is_none()
            && self.locale.is_none()
            && self.countries.is_none()
    }
}

/// What a rule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `amount` minor units of the market's currency.
    Explicit,
    /// The base price times `multiplier`, rounded by `rounding`.
    Multiplier,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Multiplier => "multiplier",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "explicit" => Some(Self::Explicit),
            "multiplier" => Some(Self::Multiplier),
            _ => None,
        }
    }
}

/// A stored price rule: for one market, and one SKU or one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceRule {
    pub id: String,
    pub market: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub kind: RuleKind,
    /// Explicit rules: minor units of the market's currency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// Multiplier rules: as a decimal (`"1.25"`) and in basis points (12500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier_bp: Option<i64>,
    pub rounding: Rounding,
    /// Basis points: 2000 is 20%.
    pub tax_rate_bp: i64,
    /// Whether the rule's price includes the tax (gross) or not (net).
    pub tax_included: bool,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Body of a rule's creation or replacement.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// The market's code.
    pub market: String,
    /// Exactly one of `sku` and `category` (1–128 characters of `[A-Za-z0-9._:/-]`).
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// An explicit price in minor units of the market's currency (0–10^15). Exactly one of
    /// `amount` and `multiplier`.
    #[serde(default)]
    pub amount: Option<i64>,
    /// A multiplier of the base price, as a decimal string with at most 4 decimals, more than
    /// 0 and at most 1000 (`"1.25"`, `"0.92"`; it also converts the base currency).
    #[serde(default)]
    pub multiplier: Option<String>,
    /// Only for multipliers (`none` when absent).
    #[serde(default)]
    pub rounding: Option<Rounding>,
    /// 0–10,000 basis points (default 0).
    #[serde(default)]
    pub tax_rate_bp: Option<i64>,
    /// Whether the price includes the tax (default false).
    #[serde(default)]
    pub tax_included: Option<bool>,
}

/// Which rules a list returns; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    pub market: Option<String>,
    pub sku: Option<String>,
    pub category: Option<String>,
}

/// A price question: the price of `sku` (or of its `category`) for a buyer in `country`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    pub sku: String,
    /// Used when no rule names the SKU.
    #[serde(default)]
    pub category: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// BCP 47; the market's locale when absent.
    #[serde(default)]
    pub locale: Option<String>,
    /// The base price in minor units of `base_currency` (until the commerce service holds
    /// base prices, the caller gives it): needed by multiplier rules, and used as it is when
    /// no rule applies and it is in the market's currency.
    #[serde(default)]
    pub base_amount: Option<i64>,
    #[serde(default)]
    pub base_currency: Option<String>,
}

/// Where a quote's price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// A rule for the SKU.
    Sku,
    /// A rule for the category.
    Category,
    /// No rule: the base price, already in the market's currency.
    Base,
}

/// A price for a country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quote {
    pub sku: String,
    pub country: String,
    pub market: String,
    /// ISO 4217 and its minor-unit digits.
    pub currency: String,
    pub exponent: u8,
    /// The price to show, in minor units: the gross when `tax_included`, the net otherwise.
    pub amount: i64,
    /// `amount` for `locale` (`12,99 €`, `$12.99`, `¥1,300`).
    pub formatted: String,
    pub locale: String,
    pub net_amount: i64,
    pub tax_amount: i64,
    pub gross_amount: i64,
    pub tax_rate_bp: i64,
    pub tax_included: bool,
    pub source: PriceSource,
    /// The rule that applied (none for `source: base`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<PriceRule>,
}

/// A market code (`validate_market_code`).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_market_code(field: &str, s: &str) -> Result<(), ServiceError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_MARKET_CODE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!(
                "must be 1-{MAX_MARKET_CODE_LEN} characters of [a-z0-9-], starting with a letter or digit"
            ),
        ))
    }
}

/// An assigned ISO 3166-1 alpha-2 code (`FR`, `JP`): two upper-case ASCII letters that the
/// standard assigns to a country or territory (`ZZ`, `EU` and `UK` are not).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_country(field: &str, s: &str) -> Result<(), ServiceError> {
    let shown = s.chars().take(8).collect::<String>();
    if !(s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(ServiceError::invalid(
            field,
            format!(
                "{shown:?} is not an ISO 3166-1 alpha-2 country code (two upper-case letters, e.g. FR)"
            ),
        ));
    }
    if isocountry::CountryCode::for_alpha2(s).is_err() {
        return Err(ServiceError::invalid(
            field,
            format!("{shown:?} is not an assigned ISO 3166-1 alpha-2 country code"),
        ));
    }
    Ok(())
}

/// Every assigned ISO 3166-1 alpha-2 code, sorted (what [`validate_country`] accepts).
pub fn assigned_countries() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = isocountry::CountryCode::iter()
        .map(isocountry::CountryCode::alpha2)
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// `countries` checked, sorted and without repeats.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `countries`.
pub fn validate_countries(countries: &[String]) -> Result<Vec<String>, ServiceError> {
    if countries.len() > MAX_COUNTRIES {
        return Err(ServiceError::invalid(
            "countries",
            format!("at most {MAX_COUNTRIES}"),
        ));
    }
    for c in countries {
        validate_country("countries", c)?;
    }
    let mut out = countries.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

/// A SKU or category: 1–128 characters of `[A-Za-z0-9._:/-]`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_item(field: &str, s: &str) -> Result<(), ServiceError> {
    let max = if field == "sku" {
        MAX_SKU_LEN
    } else {
        MAX_CATEGORY_LEN
    };
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!("must be 1-{max} characters of [A-Za-z0-9._:/-]"),
        ))
    }
}

/// An amount in minor units: 0–10^15.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_amount(field: &str, a: i64) -> Result<(), ServiceError> {
    if (0..=MAX_AMOUNT).contains(&a) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!("must be 0-{MAX_AMOUNT} minor units"),
        ))
    }
}

/// A multiplier as a decimal string (`"1.25"`) in basis points (12500).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `multiplier`.
pub fn parse_multiplier(s: &str) -> Result<i64, ServiceError> {
    let refuse = || {
        ServiceError::invalid(
            "multiplier",
            format!(
                "{:?} is not a decimal with at most 4 decimals, more than 0 and at most {}",
                s.chars().take(24).collect::<String>(),
                MAX_MULTIPLIER_BP / 10_000
            ),
        )
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 5 || frac.len() > 4 || !digits(int) || !digits(frac) {
        return Err(refuse());
    }
    if s.ends_with('.') {
        return Err(refuse());
    }
    let int: i64 = int.parse().map_err(|_| refuse())?;
    let frac: i64 = format!("{frac:0<4}").parse().map_err(|_| refuse())?;
    let bp = int * 10_000 + frac;
    if bp == 0 || bp > MAX_MULTIPLIER_BP {
        return Err(refuse());
    }
    Ok(bp)
}

/// `bp` basis points as the shortest decimal (`12500` → `"1.25"`).
pub fn multiplier_text(bp: i64) -> String {
    let (int, frac) = (bp / 10_000, bp % 10_000);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:04}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// A tax rate: 0–10,000 basis points.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `tax_rate_bp`.
pub fn validate_tax_rate(bp: i64) -> Result<(), ServiceError> {
    if (0..=MAX_TAX_RATE_BP).contains(&bp) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "tax_rate_bp",
            format!("must be 0-{MAX_TAX_RATE_BP} basis points"),
        ))
    }
}

/// The currency code `code`, checked.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_currency(field: &str, code: &str) -> Result<money::Currency, ServiceError> {
    money::currency(field, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_are_exact_decimals() {
        assert_eq!(parse_multiplier("1.25").expect("m"), 12_500);
        assert_eq!(parse_multiplier("0.92").expect("m"), 9_200);
        assert_eq!(parse_multiplier("150").expect("m"), 1_500_000);
        assert_eq!(parse_multiplier("0.0001").expect("m"), 1);
        for bad in [
            "",
            "0",
            "0.0",
            "-1",
            "1.",
            ".5",
            "1.23456",
            "1e3",
            "1000.0001",
            "1,5",
            " 1",
        ] {
            assert!(parse_multiplier(bad).is_err(), "{bad:?}");
        }
        assert_eq!(multiplier_text(12_500), "1.25");
        assert_eq!(multiplier_text(1_500_000), "150");
        assert_eq!(multiplier_text(1), "0.0001");
    }

    #[test]
    fn codes() {
        assert!(validate_market_code("code", "eu-west").is_ok());
        assert!(validate_market_code("code", "EU").is_err());
        for good in ["FR", "JP", "KW", "US", "GB", "AX", "SS"] {
            assert!(validate_country("country", good).is_ok(), "{good}");
        }
        let all = assigned_countries();
        assert!(all.len() >= 249, "{}", all.len());
        assert!(all.iter().all(|c| validate_country("c", c).is_ok()));
        // Well-formed but not assigned: user-assigned, reserved, or a region.
        for bad in ["fr", "FRA", "F", "F1", "", "ZZ", "XX", "EU", "UK", "AA"] {
            assert!(validate_country("country", bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_countries(&["FR".into(), "BE".into(), "FR".into()]).expect("ok"),
            ["BE", "FR"]
        );
        assert!(validate_item("sku", "tee/red:XL_1.0-b").is_ok());
        assert!(validate_item("sku", "tee shirt").is_err());
    }
}
