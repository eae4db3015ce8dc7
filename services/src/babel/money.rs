//! Money: currencies (ISO 4217 codes with their minor-unit exponents), integer arithmetic on
//! minor units (no floats anywhere), rounding rules, tax, and formatting for a locale.
//!
//! Numbers are formatted by ICU4X (`icu_decimal` with its compiled CLDR data: digits, decimal
//! and grouping separators of the locale, e.g. `1 300,50` with a narrow no-break space in
//! French). ICU4X 2.x has no stable currency formatter yet, so the symbol of each supported
//! currency and where it goes (before, before with a space, after with a space) come from the
//! small tables below, following CLDR's patterns for the languages listed; other languages put
//! the symbol after the number.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use fixed_decimal::Decimal;
use icu_decimal::DecimalFormatter;
use unic_langid::LanguageIdentifier;

use crate::ServiceError;

/// Largest amount accepted anywhere, in minor units (10^15: ten trillion euros in cents).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
/// Largest multiplier in basis points (×1,000) and largest tax rate (100%).
pub const MAX_MULTIPLIER_BP: i64 = 10_000_000;
pub const MAX_TAX_RATE_BP: i64 = 10_000;

/// A supported currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// ISO 4217 alphabetic code.
    pub code: &'static str,
    /// ISO 4217 minor unit: digits after the decimal separator (JPY 0, EUR 2, KWD 3).
    pub exponent: u8,
    /// What is written next to the number.
    pub symbol: &'static str,
}

/// The currencies a market may use: ISO 4217 code, exponent, symbol.
const CURRENCIES: &[(&str, u8, &str)] = &[
    ("AED", 2, "AED"),
    ("AUD", 2, "A$"),
    ("BGN", 2, "BGN"),
    ("BHD", 3, "BHD"),
    ("BRL", 2, "R$"),
    ("CAD", 2, "CA$"),
    ("CHF", 2, "CHF"),
    ("CLP", 0, "CLP"),
    ("CNY", 2, "CN¥"),
    ("CZK", 2, "Kč"),
    ("DKK", 2, "kr."),
    ("EGP", 2, "EGP"),
    ("EUR", 2, "€"),
    ("GBP", 2, "£"),
    ("HKD", 2, "HK$"),
    ("HUF", 2, "Ft"),
    ("IDR", 2, "Rp"),
    ("ILS", 2, "₪"),
    ("INR", 2, "₹"),
    ("ISK", 0, "ISK"),
    ("JOD", 3, "JOD"),
    ("JPY", 0, "¥"),
    ("KRW", 0, "₩"),
    ("KWD", 3, "KWD"),
    ("MXN", 2, "MX$"),
    ("NOK", 2, "kr"),
    ("NZD", 2, "NZ$"),
    ("OMR", 3, "OMR"),
    ("PLN", 2, "zł"),
    ("RON", 2, "RON"),
    ("SAR", 2, "SAR"),
    ("SEK", 2, "kr"),
    ("SGD", 2, "SGD"),
    ("THB", 2, "฿"),
    ("TND", 3, "TND"),
    ("TRY", 2, "₺"),
    ("TWD", 2, "NT$"),
    ("UAH", 2, "₴"),
    ("USD", 2, "$"),
    ("VND", 0, "₫"),
    ("ZAR", 2, "R"),
];

/// The currency with ISO 4217 code `code` (upper case).
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field` for a code that is not one of the supported
/// currencies.
pub fn currency(field: &str, code: &str) -> Result<Currency, ServiceError> {
    CURRENCIES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(code, exponent, symbol)| Currency {
            code,
            exponent,
            symbol,
        })
        .ok_or_else(|| {
            ServiceError::invalid(
                field,
                format!(
                    "{:?} is not a supported ISO 4217 currency code (one of {})",
                    code.chars().take(8).collect::<String>(),
                    CURRENCIES
                        .iter()
                        .map(|c| c.0)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// The codes of every supported currency.
pub fn currency_codes() -> Vec<&'static str> {
    CURRENCIES.iter().map(|c| c.0).collect()
}

/// How a computed price is brought to a price tag.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest minor unit (halves up).
    None,
    /// Up to the next price ending in .99 of a major unit (12.34 → 12.99; KWD 12.340 →
    /// 12.990; for currencies without minor units, up to the next price ending in 99:
    /// ¥1,234 → ¥1,299).
    #[serde(rename = "to_99")]
    To99,
    /// Up to the next whole major unit (12.01 → 13.00).
    Whole,
}

impl Rounding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To99 => "to_99",
            Self::Whole => "whole",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "to_99" => Some(Self::To99),
            "whole" => Some(Self::Whole),
            _ => None,
        }
    }
}

fn pow10(e: u8) -> i128 {
    10_i128.pow(u32::from(e))
}

/// `num / den` (both non-negative, `den` > 0) rounded to an integer, halves up.
fn div_round(num: i128, den: i128) -> i128 {
    (2 * num + den) / (2 * den)
}

/// `num / den` rounded up.
fn div_ceil(num: i128, den: i128) -> i128 {
    (num + den - 1) / den
}

/// `base` (minor units of `from`) times `multiplier_bp` / 10,000, in minor units of `to`,
/// rounded by `rounding`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `base_amount` when the result exceeds [`MAX_AMOUNT`].
pub fn multiply(
    base: i64,
    from: Currency,
    to: Currency,
    multiplier_bp: i64,
    rounding: Rounding,
) -> Result<i64, ServiceError> {
    // The exact result is num / den minor units of `to`.
    let num = i128::from(base) * i128::from(multiplier_bp) * pow10(to.exponent);
    let den = 10_000 * pow10(from.exponent);
    let minor = match rounding {
        Rounding::None => div_round(num, den),
        Rounding::Whole => {
            let unit = pow10(to.exponent);
            div_ceil(num, den * unit) * unit
        }
        Rounding::To99 => {
            // A "major unit" of at least 100 minor units, so that exponent-0 currencies end
            // in 99 and exponent-3 ones in .990.
            let digits = to.exponent.max(2);
            let step = pow10(digits);
            let residue = step - pow10(digits - 2);
            let c = div_ceil(num, den);
            if c <= residue {
                residue
            } else {
                div_ceil(c - residue, step) * step + residue
            }
        }
    };
    i64::try_from(minor)
        .ok()
        .filter(|m| *m <= MAX_AMOUNT)
        .ok_or_else(|| {
            ServiceError::invalid(
                "base_amount",
                format!("the price would exceed {MAX_AMOUNT} minor units"),
            )
        })
}

/// Net, tax and gross of `price` at `tax_rate_bp`: `price` is the gross when `tax_included`,
/// the net otherwise; the tax is rounded to the minor unit (halves up).
pub fn tax(price: i64, tax_rate_bp: i64, tax_included: bool) -> (i64, i64, i64) {
    let (p, r) = (i128::from(price), i128::from(tax_rate_bp));
    let to_i64 = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    if tax_included {
        let net = div_round(p * 10_000, 10_000 + r);
        (to_i64(net), to_i64(p - net), price)
    } else {
        let t = div_round(p * r, 10_000);
        (price, to_i64(t), to_i64(p + t))
    }
}

/// Where the currency symbol goes, by language (CLDR's currency patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `$12.99`
    Before,
    /// `€ 12,99`
    BeforeSpaced,
    /// `12,99 €`
    AfterSpaced,
}

fn placement(locale: &LanguageIdentifier) -> Placement {
    let region = locale.region.as_ref().map(|r| r.as_str());
    match locale.language.as_str() {
        "en" | "ja" | "zh" | "ko" | "th" | "hi" | "ms" | "fil" | "ga" | "cy" | "tr" | "id" => {
            Placement::Before
        }
        "nl" => Placement::BeforeSpaced,
        "pt" if region != Some("PT") => Placement::BeforeSpaced,
        "de" if matches!(region, Some("CH" | "LI" | "AT")) => Placement::BeforeSpaced,
        "it" if region == Some("CH") => Placement::BeforeSpaced,
        "es" if matches!(region, Some("MX" | "US" | "419" | "AR" | "CO" | "CL")) => {
            Placement::Before
        }
        _ => Placement::AfterSpaced,
    }
}

/// One decimal formatter per locale, built once (ICU4X compiled data).
static FORMATTERS: LazyLock<RwLock<HashMap<String, Arc<DecimalFormatter>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));
/// Most formatters kept; past it the map starts over.
const MAX_FORMATTERS: usize = 1_024;

fn formatter(locale: &LanguageIdentifier) -> Option<Arc<DecimalFormatter>> {
    let tag = locale.to_string();
    if let Some(f) = FORMATTERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&tag)
    {
        return Some(f.clone());
    }
    let icu = icu_locale_core::Locale::try_from_str(&tag).ok()?;
    let f = Arc::new(DecimalFormatter::try_new((&icu).into(), Default::default()).ok()?);
    let mut map = FORMATTERS.write().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_FORMATTERS {
        map.clear();
    }
    map.insert(tag, f.clone());
    Some(f)
}

/// `minor` units of `currency` as a price tag for `locale`: `12,99 €` (fr-FR), `$12.99`
/// (en-US), `¥1,300` (ja-JP), `KWD 1.250` (en). The space between a symbol and the number is a
/// no-break space (U+00A0).
pub fn format(minor: i64, currency: Currency, locale: &LanguageIdentifier) -> String {
    let e = i16::from(currency.exponent);
    let mut d = Decimal::from(minor);
    d.multiply_pow10(-e);
    d.absolute.pad_end(-e);
    let number = match formatter(locale) {
        Some(f) => f.format(&d).to_string(),
        None => d.to_string(),
    };
    let alphabetic = currency.symbol.chars().all(|c| c.is_ascii_alphabetic());
    match placement(locale) {
        Placement::Before if !alphabetic => format!("{}{number}", currency.symbol),
        Placement::Before | Placement::BeforeSpaced => {
            format!("{}\u{a0}{number}", currency.symbol)
        }
        Placement::AfterSpaced => format!("{number}\u{a0}{}", currency.symbol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        currency("currency", code).expect("currency")
    }

    fn l(s: &str) -> LanguageIdentifier {
        s.parse().expect("locale")
    }

    #[test]
    fn exponents_follow_iso_4217_and_unknown_codes_are_refused() {
        assert_eq!(c("JPY").exponent, 0);
        assert_eq!(c("EUR").exponent, 2);
        assert_eq!(c("KWD").exponent, 3);
        assert_eq!(c("BHD").exponent, 3);
        for bad in ["XXX", "eur", "EURO", ""] {
            assert!(currency("currency", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prices_are_formatted_for_the_locale() {
        assert_eq!(format(1299, c("EUR"), &l("fr-FR")), "12,99\u{a0}€");
        assert_eq!(format(1299, c("USD"), &l("en-US")), "$12.99");
        assert_eq!(format(1300, c("JPY"), &l("ja-JP")), "¥1,300");
        assert_eq!(format(1250, c("KWD"), &l("en")), "KWD\u{a0}1.250");
        assert_eq!(format(1200, c("EUR"), &l("de-DE")), "12,00\u{a0}€");
        assert_eq!(format(123_456_789, c("EUR"), &l("en-IE")), "€1,234,567.89");
        // French groups with a narrow no-break space (CLDR).
        assert_eq!(
            format(123_456, c("EUR"), &l("fr-FR")),
            "1\u{202f}234,56\u{a0}€"
        );
        assert_eq!(format(0, c("USD"), &l("en-US")), "$0.00");
        assert_eq!(format(5, c("EUR"), &l("en")), "€0.05");
    }

    #[test]
    fn rounding_rules() {
        let (usd, eur, jpy, kwd) = (c("USD"), c("EUR"), c("JPY"), c("KWD"));
        // (base, from, to, multiplier in basis points, rounding, expected)
        let cases = [
            // 10.00 USD × 1.2345 = 12.345 EUR.
            (1000, usd, eur, 12_345, Rounding::None, 1235),
            (1000, usd, eur, 12_345, Rounding::To99, 1299),
            (1000, usd, eur, 12_345, Rounding::Whole, 1300),
            // Exactly on a boundary stays.
            (1299, eur, eur, 10_000, Rounding::To99, 1299),
            (1300, eur, eur, 10_000, Rounding::Whole, 1300),
            (1300, eur, eur, 10_000, Rounding::To99, 1399),
            (1, eur, eur, 10_000, Rounding::To99, 99),
            // 10.00 USD × 150 = 1,500 JPY; ×123.4 = 1,234 → 1,299.
            (1000, usd, jpy, 1_500_000, Rounding::None, 1500),
            (1000, usd, jpy, 1_234_000, Rounding::To99, 1299),
            // 10.00 USD × 0.3085 = 3.085 KWD.
            (1000, usd, kwd, 3_085, Rounding::None, 3085),
            (1000, usd, kwd, 3_085, Rounding::To99, 3990),
            (1000, usd, kwd, 3_085, Rounding::Whole, 4000),
        ];
        for (base, from, to, bp, rounding, expected) in cases {
            assert_eq!(
                multiply(base, from, to, bp, rounding).expect("r"),
                expected,
                "{base} {} × {bp}bp → {} {rounding:?}",
                from.code,
                to.code
            );
        }
        assert!(multiply(MAX_AMOUNT, eur, eur, MAX_MULTIPLIER_BP, Rounding::None).is_err());
    }

    #[test]
    fn tax_is_split_from_or_added_to_the_price() {
        // 12.99 including 20%: 10.83 + 2.16.
        assert_eq!(tax(1299, 2_000, true), (1083, 216, 1299));
        // 10.00 plus 8.88%: 0.888 → 0.89.
        assert_eq!(tax(1000, 888, false), (1000, 89, 1089));
        assert_eq!(tax(1000, 0, false), (1000, 0, 1000));
    }
}
