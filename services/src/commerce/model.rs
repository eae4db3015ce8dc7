//! Commerce records, inputs and the rules their fields follow: products, orders and their
//! lines, payments, refunds, ledger entries and invoices. Amounts are integers in minor units.

use serde::{Deserialize, Serialize};

use crate::ServiceError;
use crate::babel::money::{self, MAX_AMOUNT};

/// Longest product name and reason (characters), longest payment reference.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_REASON_LEN: usize = 500;
pub const MAX_REFERENCE_LEN: usize = 200;
/// Most lines of an order and the largest quantity of a line.
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: u32 = 10_000;
/// An `Idempotency-Key`: 1–255 visible ASCII characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most entries in one movement recorded by hand.
pub const MAX_ENTRIES: usize = 50;
/// Longest ledger account name.
pub const MAX_ACCOUNT_LEN: usize = 128;

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, not paid yet.
    Pending,
    Paid,
    Fulfilled,
    /// Cancelled before it was paid.
    Cancelled,
    /// Everything paid was refunded.
    Refunded,
    /// Part of what was paid was refunded.
    PartiallyRefunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Fulfilled => "fulfilled",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
        }
    }

    /// # Errors
    /// [`ServiceError::Invalid`] naming `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, ServiceError> {
        Ok(match s {
            "pending" => Self::Pending,
            "paid" => Self::Paid,
            "fulfilled" => Self::Fulfilled,
            "cancelled" => Self::Cancelled,
            "refunded" => Self::Refunded,
            "partially_refunded" => Self::PartiallyRefunded,
            _ => {
                return Err(ServiceError::invalid(
                    field,
                    "must be pending, paid, fulfilled, cancelled, refunded or \
                     partially_refunded",
                ));
            }
        })
    }

    /// Whether an order may go from `self` to `to`: `pending` → `paid` | `cancelled`;
    /// `paid` → `fulfilled`; `paid` | `fulfilled` | `partially_refunded` → `refunded` |
    /// `partially_refunded`.
    pub fn may_become(self, to: Self) -> bool {
        use OrderStatus::{Cancelled, Fulfilled, Paid, PartiallyRefunded, Pending, Refunded};
        matches!(
            (self, to),
            (Pending, Paid | Cancelled)
                | (Paid, Fulfilled)
                | (
                    Paid | Fulfilled | PartiallyRefunded,
                    Refunded | PartiallyRefunded
                )
        )
    }

    /// `Ok` when [`OrderStatus::may_become`] `to`; otherwise the 409 naming both states.
    ///
    /// # Errors
    /// [`ServiceError::Conflict`].
    pub fn check(self, order_id: &str, to: Self) -> Result<(), ServiceError> {
        if self.may_become(to) {
            Ok(())
        } else {
            Err(ServiceError::Conflict {
                message: format!(
                    "order {order_id} is {}: it cannot become {}",
                    self.as_str(),
                    to.as_str()
                ),
            })
        }
    }
}

/// Something that can be sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Base price in minor units of `currency`; Babel's rules price it per market.
    pub base_amount: i64,
    pub currency: String,
    /// Inactive products cannot be ordered (and are listed for managers only).
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `POST /api/commerce/products`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub base_amount: i64,
    pub currency: String,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Body of `PATCH /api/commerce/products/{sku}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub base_amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// One line of a new order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    pub sku: String,
    pub quantity: u32,
}

/// Body of `POST /api/commerce/orders`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The buyer's country (ISO 3166-1 alpha-2): Babel's market for it prices the lines.
    pub country: String,
    /// 1–100 lines.
    pub lines: Vec<NewLine>,
    /// Admins and campaign managers may order for another user.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// An order line, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub sku: String,
    /// The product's name when ordered.
    pub name: String,
    pub quantity: u32,
    pub unit_net: i64,
    pub unit_tax: i64,
    pub unit_gross: i64,
    pub tax_rate_bp: i64,
    pub net_amount: i64,
    pub tax_amount: i64,
    pub total_amount: i64,
    /// Where Babel took the price from: `sku`, `category` or `base`.
    pub price_source: String,
    /// The Babel rule that priced it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_rule: Option<String>,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub country: String,
    pub market: String,
    pub currency: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub net_amount: i64,
    pub tax_amount: i64,
    pub total_amount: i64,
    pub paid_amount: i64,
    pub refunded_amount: i64,
    /// What the order was placed for by another service (`talent_booking:<id>`): the buyer
    /// cannot cancel it alone (cancelling the booking cancels it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_for: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Which orders a list returns.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Managers only: another user's orders (others always get their own).
    pub user_id: Option<String>,
    pub status: Option<OrderStatus>,
}

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the provider (for `manual`: for someone to confirm receipt).
    Pending,
    Succeeded,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn from_db(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A payment of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    pub provider: String,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    /// The provider's reference (a bank transfer's, for `manual`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the payer does next (for `manual`: the transfer's instructions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Body of `POST /api/commerce/orders/{id}/payments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// A registered provider (built in: `manual`).
    pub provider: String,
    /// The payer's reference (e.g. the bank transfer's).
    #[serde(default)]
    pub reference: Option<String>,
}

/// Body of `POST /api/commerce/payments/{id}/confirm`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayment {
    /// The reference of the receipt (bank statement line, ...).
    #[serde(default)]
    pub reference: Option<String>,
}

/// Body of `POST /api/commerce/payments/{id}/reject` (and of refunds' reason).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectPayment {
    pub reason: String,
}

/// A refund of part or all of an order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refund {
    pub id: String,
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub created_at: String,
}

/// Body of `POST /api/commerce/orders/{id}/refunds`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// Minor units; what remains refundable when absent.
    #[serde(default)]
    pub amount: Option<i64>,
    pub reason: String,
}

/// An order with its payments and refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: Order,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    /// Its invoice's number, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice: Option<String>,
}

/// What kind of money movement a ledger entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Payment,
    Refund,
    ReferralReward,
    Payout,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::ReferralReward => "referral_reward",
            Self::Payout => "payout",
        }
    }

    pub(crate) fn from_db(s: &str) -> Option<Self> {
        match s {
            "payment" => Some(Self::Payment),
            "refund" => Some(Self::Refund),
            "referral_reward" => Some(Self::ReferralReward),
            "payout" => Some(Self::Payout),
            _ => None,
        }
    }
}

/// One side of a money movement: `amount` is added to `account` (negative: taken out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    /// The movement it belongs to: its entries sum to zero per currency.
    pub movement: String,
    pub kind: MovementKind,
    pub account: String,
    pub currency: String,
    pub amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub created_at: String,
}

/// An account's balance in one currency: the sum of its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Balance {
    pub account: String,
    pub currency: String,
    pub amount: i64,
}

/// An invoice: one per paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invoice {
    /// `YYYY-NNNNNN`, without gaps within a year.
    pub number: String,
    pub order_id: String,
    pub user_id: String,
    pub country: String,
    pub market: String,
    pub currency: String,
    pub exponent: u8,
    pub lines: Vec<OrderLine>,
    pub net_amount: i64,
    pub tax_amount: i64,
    pub total_amount: i64,
    pub issued_at: String,
}

/// Ledger accounts of the movements commerce makes.
pub mod accounts {
    /// What a provider holds for us (cash at the bank for `manual`).
    pub fn provider(name: &str) -> String {
        format!("provider:{name}")
    }
    pub const SALES: &str = "sales";
    pub const TAX_PAYABLE: &str = "tax_payable";
    pub const REFUNDS: &str = "refunds";
    /// What the platform spent on referral rewards.
    pub const REFERRAL_REWARDS: &str = "referral_rewards";
    /// What the platform owes a user (credits: referral rewards).
    pub fn user(id: &str) -> String {
        format!("user:{id}")
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A product name, trimmed: 1–200 characters, no control characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `name`.
pub fn validate_name(s: &str) -> Result<String, ServiceError> {
    text("name", s, MAX_NAME_LEN)
}

/// A reason (rejection, refund), trimmed: 1–500 characters, no control characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `reason`.
pub fn validate_reason(s: &str) -> Result<String, ServiceError> {
    text("reason", s, MAX_REASON_LEN)
}

/// A payment reference: empty (none) or up to 200 characters, no control characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `reference`.
pub fn validate_reference(s: Option<&str>) -> Result<Option<String>, ServiceError> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => text("reference", s, MAX_REFERENCE_LEN).map(Some),
    }
}

fn text(field: &str, s: &str, max: usize) -> Result<String, ServiceError> {
    let t = s.trim();
    if t.is_empty() || chars(t) > max || t.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1-{max} characters without control characters"),
        ));
    }
    Ok(t.to_owned())
}

/// A SKU (Babel's item rule), reported as `field`.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_sku(field: &str, s: &str) -> Result<(), ServiceError> {
    crate::babel::model::validate_item("sku", s).map_err(|e| match e {
        ServiceError::Invalid { message, .. } => ServiceError::invalid(field, message),
        other => other,
    })
}

/// An amount of 0–10^15 minor units.
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

/// A supported currency code.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub fn validate_currency(field: &str, s: &str) -> Result<money::Currency, ServiceError> {
    money::currency(field, s)
}

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `Idempotency-Key`.
pub fn validate_idempotency_key(s: &str) -> Result<(), ServiceError> {
    if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ServiceError::invalid(
            "Idempotency-Key",
            format!("must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// The entries of a movement recorded by hand: 2–[`MAX_ENTRIES`], each account 1–128
/// characters of `[a-z0-9_:.-]`, each amount non-zero and at most 10^15 in size, summing to
/// zero.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `entries` or `entries[i].account` / `entries[i].amount`.
pub fn validate_entries(entries: &[(String, i64)]) -> Result<(), ServiceError> {
    if entries.len() < 2 || entries.len() > MAX_ENTRIES {
        return Err(ServiceError::invalid(
            "entries",
            format!("a movement has 2-{MAX_ENTRIES} entries"),
        ));
    }
    for (i, (account, amount)) in entries.iter().enumerate() {
        let ok = !account.is_empty()
            && account.len() <= MAX_ACCOUNT_LEN
            && account
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b':' | b'.' | b'-'));
        if !ok {
            return Err(ServiceError::invalid(
                &format!("entries[{i}].account"),
                format!("must be 1-{MAX_ACCOUNT_LEN} characters of [a-z0-9_:.-]"),
            ));
        }
        if *amount == 0 || amount.unsigned_abs() > MAX_AMOUNT.unsigned_abs() {
            return Err(ServiceError::invalid(
                &format!("entries[{i}].amount"),
                format!("must be non-zero and at most {MAX_AMOUNT} in size"),
            ));
        }
    }
    let sum = entries
        .iter()
        .try_fold(0i64, |acc, (_, a)| acc.checked_add(*a));
    if sum != Some(0) {
        return Err(ServiceError::invalid(
            "entries",
            "the entries of a movement sum to zero",
        ));
    }
    Ok(())
}

/// The lines of a new order: 1–100, each with a valid SKU (at most once) and a quantity of
/// 1–10,000.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `lines` or `lines[i].sku` / `lines[i].quantity`.
pub fn validate_lines(lines: &[NewLine]) -> Result<(), ServiceError> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(ServiceError::invalid(
            "lines",
            format!("must hold 1-{MAX_LINES} lines"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, l) in lines.iter().enumerate() {
        validate_sku(&format!("lines[{i}].sku"), &l.sku)?;
        if l.quantity == 0 || l.quantity > MAX_QUANTITY {
            return Err(ServiceError::invalid(
                &format!("lines[{i}].quantity"),
                format!("must be 1-{MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(l.sku.as_str()) {
            return Err(ServiceError::invalid(
                &format!("lines[{i}].sku"),
                format!(
                    "{} is on an earlier line: give its total quantity once",
                    l.sku
                ),
            ));
        }
    }
    Ok(())
}

/// `a * b`, or the 400 of an amount too large.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub(crate) fn times(field: &str, a: i64, b: i64) -> Result<i64, ServiceError> {
    a.checked_mul(b)
        .filter(|v| *v <= MAX_AMOUNT)
        .ok_or_else(|| ServiceError::invalid(field, "the amount is too large"))
}

/// `a + b`, or the 400 of an amount too large.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub(crate) fn plus(field: &str, a: i64, b: i64) -> Result<i64, ServiceError> {
    a.checked_add(b)
        .filter(|v| *v <= MAX_AMOUNT)
        .ok_or_else(|| ServiceError::invalid(field, "the total is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_transitions() {
        use OrderStatus::*;
        let all = [
            Pending,
            Paid,
            Fulfilled,
            Cancelled,
            Refunded,
            PartiallyRefunded,
        ];
        let allowed = [
            (Pending, Paid),
            (Pending, Cancelled),
            (Paid, Fulfilled),
            (Paid, Refunded),
            (Paid, PartiallyRefunded),
            (Fulfilled, Refunded),
            (Fulfilled, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        let e = Cancelled
            .check("o1", Paid)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("cancelled") && e.contains("paid"), "{e}");
    }

    #[test]
    fn lines_are_checked_by_index() {
        let line = |sku: &str, quantity| NewLine {
            sku: sku.to_owned(),
            quantity,
        };
        assert!(validate_lines(&[]).is_err());
        let e = validate_lines(&[line("a", 1), line("b c", 1)]).expect_err("refused");
        assert!(e.to_string().starts_with("lines[1].sku"), "{e}");
        let e = validate_lines(&[line("a", 0)]).expect_err("refused");
        assert!(e.to_string().starts_with("lines[0].quantity"), "{e}");
        let e = validate_lines(&[line("a", 1), line("a", 2)]).expect_err("refused");
        assert!(e.to_string().starts_with("lines[1].sku"), "{e}");
        assert!(validate_lines(&[line("a", 10_000)]).is_ok());
    }

    #[test]
    fn idempotency_keys() {
        assert!(validate_idempotency_key("k-1").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("a b").is_err());
        assert!(validate_idempotency_key(&"x".repeat(256)).is_err());
    }
}
