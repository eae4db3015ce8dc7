//! The commerce service: products, orders priced by Babel, payments through providers (the
//! built-in `manual` one: invoice or bank transfer), signed provider webhooks, refunds, a
//! double-entry ledger and gapless invoices. Tables `service_commerce_*`.
//!
//! # Rules
//! * Resource `commerce`: `read` (everyone) for active products; `buy` (users) to place,
//!   read, cancel and pay one's own orders; `manage` (campaign managers, admins) for products,
//!   every order, confirming or rejecting manual payments, fulfilment, refunds and the
//!   ledger. Someone else's order does not exist for a buyer (404).
//! * Prices: each line's unit price and tax come from Babel for the order's country when the
//!   order is placed, and are stored on the line: a later price change leaves the order as it
//!   was. All amounts are integers in minor units; lines in another currency than the
//!   market's are an error, never converted.
//! * Orders: `pending` → `paid` → `fulfilled`; `cancelled` from `pending`; `refunded` /
//!   `partially_refunded` from `paid`, `fulfilled` or `partially_refunded`. Another
//!   transition is a 409 naming both states.
//! * Payments need an `Idempotency-Key` (per caller): the same key with the same request
//!   returns the first answer (`replayed`), with another request a 422
//!   (`idempotency_mismatch`); concurrent requests under one key make one payment. An order
//!   has at most one pending or succeeded payment. A refused request (404, 409) stores no
//!   answer: retrying it tries again.
//! * Money movements (payment, refund, referral reward, payout) are ledger entries that sum
//!   to zero per currency, written in the transaction of the change: a payment moves the
//!   total into `provider:<name>` against `sales` (net) and `tax_payable` (tax); a refund
//!   moves it out of `provider:<name>` into `refunds`. Balances are sums of entries.
//! * A movement with a reference (`record_movement_once`, e.g. `referral:<id>` for a
//!   referral reward) is written once whatever the concurrency: the reference's row in
//!   `service_commerce_movement_ref` is claimed in the movement's transaction.
//! * Listeners (`on_order_paid`: the referral service's `first_paid_order` rewards) are told
//!   of every paid order after the payment committed.
//! * A succeeded payment issues the order's invoice, numbered `YYYY-NNNNNN` per year (UTC)
//!   without gaps: the year's counter row is taken in the payment's transaction.
//! * Webhooks: `Ovasabi-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` under
//!   the provider's secret, `t` within the tolerance window; an event id seen before changes
//!   nothing (a replay answers `applied: false`).
//! * The buyer is told (in-app and real time, through the notification service) of a payment
//!   that succeeded and of each refund, after the change committed; a message that cannot be
//!   sent is logged, never undoes the change.
//! * Audit rows, in the transaction of each change: `commerce.product_create`,
//!   `commerce.product_update` (entity `product`), `commerce.order_place`,
//!   `commerce.order_cancel`, `commerce.order_fulfil`, `commerce.refund` (entity `order`),
//!   `commerce.payment_create`, `commerce.payment_confirm`, `commerce.payment_reject`,
//!   `commerce.webhook` (entity `payment`), `commerce.movement` (entity `ledger`).
//!
//! # Layout
//! [`model`]: records, inputs, field rules; [`providers`]: the provider interface and
//! `manual`; `repo`: storage; `invoice`: the printable page; here: the service.

mod invoice;
pub mod model;
pub mod providers;
mod repo;

pub use crate::page::Page;
pub use model::accounts;
pub use model::{
    Balance, ConfirmPayment, Invoice, LedgerEntry, MovementKind, NewLine, NewOrder, NewPayment,
    NewProduct, NewRefund, Order, OrderDetail, OrderFilter, OrderLine, OrderStatus, Payment,
    PaymentStatus, Product, ProductUpdate, Refund, RejectPayment,
};
pub use providers::{Intent, Manual, Outcome, PaymentProvider, ProviderEvent, Providers};

use sha2::{Digest, Sha256};

use crate::babel::money;
use crate::babel::{BabelService, PriceRequest};
use crate::notification::NotificationService;
use crate::page::{check_limit, paginate};
use crate::scheduler::Clock;
use crate::security::{Caller, Policies};
use crate::{Database, ServiceError};
use repo::{Applied, Claimed, CommerceRepo, Settle};

/// The resource every policy check names.
const RESOURCE: &str = "commerce";

/// How the service treats provider webhooks.
#[derive(Debug, Clone)]
pub struct CommerceConfig {
    /// The providers and their webhook secrets.
    pub providers: Providers,
    /// How far a webhook's `t` may be from now (seconds).
    pub webhook_tolerance_secs: i64,
}

impl Default for CommerceConfig {
    fn default() -> Self {
        Self {
            providers: Providers::builtin(),
            webhook_tolerance_secs: 300,
        }
    }
}

/// A payment request's answer.
#[derive(Debug, Clone)]
pub struct PaymentAnswer {
    pub payment: Payment,
    /// Whether it is the stored answer of an earlier request with the same key.
    pub replayed: bool,
}

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookResult {
    pub event_id: String,
    /// `false` for an event applied before (a replay).
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

/// An order for time: `minutes` of a SKU priced per hour, for `user_id` in `country`.
#[derive(Debug, Clone)]
pub struct TimeOrder {
    pub user_id: String,
    pub country: String,
    pub sku: String,
    pub minutes: u32,
    /// The line's name (the product's when `None`); `(N min)` is appended.
    pub description: Option<String>,
    /// What the order is for (`talent_booking:<id>`): its buyer cannot cancel it alone.
    pub placed_for: Option<String>,
}

/// A movement recorded once per reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credited {
    /// The movement's id (the first one's, when it was written before).
    pub movement: String,
    /// Whether this call wrote it.
    pub written: bool,
}

/// Told of every order whose payment succeeded, after the change committed (the referral
/// service's `first_paid_order` rewards listen). It runs in the request that settled the
/// payment and cannot fail it: a listener logs its own failures.
pub trait OrderPaidListener: Send + Sync + 'static {
    fn order_paid<'a>(&'a self, order: &'a Order) -> futures_util::future::BoxFuture<'a, ()>;
}

/// The listeners of paid orders, shared by every clone of the service.
#[derive(Clone, Default)]
struct Listeners(std::sync::Arc<std::sync::RwLock<Vec<std::sync::Arc<dyn OrderPaidListener>>>>);

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().map_or(0, |l| l.len());
        write!(f, "Listeners({n})")
    }
}

impl Listeners {
    fn all(&self) -> Vec<std::sync::Arc<dyn OrderPaidListener>> {
        match self.0.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Products, orders, payments, refunds, the ledger and invoices.
#[derive(Clone, Debug)]
pub struct CommerceService {
    repo: CommerceRepo,
    policies: Policies,
    babel: BabelService,
    notifications: NotificationService,
    config: CommerceConfig,
    clock: Clock,
    paid: Listeners,
}

impl CommerceService {
    pub fn new(
        db: Database,
        policies: Policies,
        babel: BabelService,
        notifications: NotificationService,
        config: CommerceConfig,
    ) -> Self {
        Self {
            repo: CommerceRepo::new(db),
            policies,
            babel,
            notifications,
            config,
            clock: Clock::system(),
            paid: Listeners::default(),
        }
    }

    /// Tells `listener` of every order paid from now on, through this service and every
    /// clone of it.
    pub fn on_order_paid(&self, listener: std::sync::Arc<dyn OrderPaidListener>) {
        match self.paid.0.write() {
            Ok(mut l) => l.push(listener),
            Err(poisoned) => poisoned.into_inner().push(listener),
        }
    }

    /// The same service reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The registered providers' names.
    pub fn provider_names(&self) -> Vec<&'static str> {
        self.config.providers.names()
    }

    fn manages(&self, caller: &Caller) -> bool {
        self.policies.allows(caller, RESOURCE, "manage")
    }

    // ----- products --------------------------------------------------------------------------

    /// Creates a product. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field, [`ServiceError::Duplicate`] for a SKU that
    /// exists, RBAC refusals, database failures.
    pub async fn create_product(
        &self,
        caller: &Caller,
        new: NewProduct,
    ) -> Result<Product, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        model::validate_sku("sku", &new.sku)?;
        let name = model::validate_name(&new.name)?;
        model::validate_amount("base_amount", new.base_amount)?;
        let currency = model::validate_currency("currency", &new.currency)?;
        let now = self.clock.now_ms();
        let p = Product {
            sku: new.sku,
            name,
            base_amount: new.base_amount,
            currency: currency.code.to_owned(),
            active: new.active,
            created_at: crate::time::rfc3339(now),
            updated_at: crate::time::rfc3339(now),
        };
        let audit = caller.audit("commerce.product_create", "product", &p.sku);
        self.repo.insert_product(&p, now, audit).await?;
        Ok(p)
    }

    /// Product `sku`; an inactive one only for `manage`. Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals, database failures.
    pub async fn product(&self, caller: &Caller, sku: &str) -> Result<Product, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        match self.repo.product(sku).await? {
            Some(p) if p.active || self.manages(caller) => Ok(p),
            _ => Err(repo::not_found("product", sku)),
        }
    }

    /// Products by SKU (inactive ones for `manage` only). Needs `read`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad limit, RBAC refusals, database failures.
    pub async fn products(
        &self,
        caller: &Caller,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Product>, ServiceError> {
        self.policies.require(caller, RESOURCE, "read")?;
        let limit = check_limit(limit)?;
        let rows = self
            .repo
            .products(self.manages(caller), cursor, limit)
            .await?;
        Ok(paginate(rows, limit, |p| p.sku.clone()))
    }

    /// Changes the fields `update` gives of product `sku` (orders already placed keep their
    /// prices). Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field, [`ServiceError::NotFound`], RBAC refusals,
    /// database failures.
    pub async fn update_product(
        &self,
        caller: &Caller,
        sku: &str,
        update: ProductUpdate,
    ) -> Result<Product, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        if update.name.is_none()
            && update.base_amount.is_none()
            && update.currency.is_none()
            && update.active.is_none()
        {
            return Err(ServiceError::invalid(
                "body",
                "name at least one of name, base_amount, currency and active",
            ));
        }
        let name = update
            .name
            .as_deref()
            .map(model::validate_name)
            .transpose()?;
        if let Some(a) = update.base_amount {
            model::validate_amount("base_amount", a)?;
        }
        let currency = update
            .currency
            .as_deref()
            .map(|c| model::validate_currency("currency", c).map(|c| c.code.to_owned()))
            .transpose()?;
        let audit = caller.audit("commerce.product_update", "product", sku);
        self.repo
            .update_product(sku, self.clock.now_ms(), audit, |before| {
                let mut p = before.clone();
                if let Some(v) = name {
                    p.name = v;
                }
                if let Some(v) = update.base_amount {
                    p.base_amount = v;
                }
                if let Some(v) = currency {
                    p.currency = v;
                }
                if let Some(v) = update.active {
                    p.active = v;
                }
                Ok(p)
            })
            .await
    }

    // ----- orders ----------------------------------------------------------------------------

    /// Places a pending order of the caller (or, for `manage`, of `new.user_id`), each line
    /// priced by Babel for `new.country` now and stored. Needs `buy`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] naming the field (`country`, `lines`, `lines[i].sku` for a
    /// product that does not exist or is inactive, `lines[i].quantity`, a total too large),
    /// [`ServiceError::NotFound`] (no market for the country, or no price for a SKU in it),
    /// RBAC refusals, database failures.
    pub async fn place_order(&self, caller: &Caller, new: NewOrder) -> Result<Order, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        let user_id = match (new.user_id.as_deref(), caller.user_id()) {
            (Some(u), me) if Some(u) != me => {
                if !self.manages(caller) {
                    return Err(ServiceError::Forbidden {
                        message: "only managers place orders for other users".to_owned(),
                    });
                }
                crate::talent::model::validate_id("user_id", u)?;
                u.to_owned()
            }
            (_, Some(me)) => me.to_owned(),
            (Some(u), None) => {
                crate::talent::model::validate_id("user_id", u)?;
                u.to_owned()
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "user_id",
                    "required when the caller is not a user",
                ));
            }
        };
        crate::babel::model::validate_country("country", &new.country)?;
        model::validate_lines(&new.lines)?;
        let mut lines = Vec::with_capacity(new.lines.len());
        let mut currency = (String::new(), String::new());
        for (i, l) in new.lines.iter().enumerate() {
            let field = format!("lines[{i}].sku");
            let (product, quote) = self.quote(&field, &l.sku, &new.country).await?;
            if i == 0 {
                currency = (quote.market.clone(), quote.currency.clone());
            } else if quote.currency != currency.1 {
                return Err(ServiceError::invalid(
                    &field,
                    format!(
                        "priced in {} while the order is in {}: currencies are never \
                         mixed or converted",
                        quote.currency, currency.1
                    ),
                ));
            }
            let q = i64::from(l.quantity);
            lines.push(OrderLine {
                sku: product.sku,
                name: product.name,
                quantity: l.quantity,
                unit_net: quote.net_amount,
                unit_tax: quote.tax_amount,
                unit_gross: quote.gross_amount,
                tax_rate_bp: quote.tax_rate_bp,
                net_amount: model::times(&field, quote.net_amount, q)?,
                tax_amount: model::times(&field, quote.tax_amount, q)?,
                total_amount: model::times(&field, quote.gross_amount, q)?,
                price_source: source_name(&quote),
                price_rule: quote.rule.map(|r| r.id),
            });
        }
        self.store_order(caller, user_id, new.country, currency, lines, None)
            .await
    }

    /// Places a pending order of `new.user_id` for `new.minutes` of a SKU priced per hour
    /// (the order of a confirmed talent booking): one line of quantity 1 whose unit prices
    /// are Babel's hourly prices for the country times minutes / 60, rounded half up, tax
    /// being gross minus net. Needs `manage` (the talent service calls it as the system).
    ///
    /// # Errors
    /// As [`CommerceService::place_order`], naming `sku` for a product that does not exist
    /// or is not on sale and `minutes` for 0 or more than a day.
    pub async fn place_time_order(
        &self,
        caller: &Caller,
        new: TimeOrder,
    ) -> Result<Order, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        crate::talent::model::validate_id("user_id", &new.user_id)?;
        crate::babel::model::validate_country("country", &new.country)?;
        if new.minutes == 0 || new.minutes > 24 * 60 {
            return Err(ServiceError::invalid("minutes", "1 to 1440 minutes"));
        }
        let (product, quote) = self.quote("sku", &new.sku, &new.country).await?;
        let part = |amount: i64| -> Result<i64, ServiceError> {
            let scaled = (i128::from(amount) * i128::from(new.minutes) + 30) / 60;
            i64::try_from(scaled).map_err(|_| ServiceError::invalid("minutes", "total too large"))
        };
        let gross = part(quote.gross_amount)?;
        let net = part(quote.net_amount)?.min(gross);
        let line = OrderLine {
            sku: product.sku,
            name: format!(
                "{} ({} min)",
                new.description.unwrap_or(product.name),
                new.minutes
            ),
            quantity: 1,
            unit_net: net,
            unit_tax: gross - net,
            unit_gross: gross,
            tax_rate_bp: quote.tax_rate_bp,
            net_amount: net,
            tax_amount: gross - net,
            total_amount: gross,
            price_source: source_name(&quote),
            price_rule: quote.rule.map(|r| r.id),
        };
        let market = (quote.market, quote.currency);
        self.store_order(
            caller,
            new.user_id,
            new.country,
            market,
            vec![line],
            new.placed_for,
        )
        .await
    }

    /// The product `sku` (on sale) and Babel's price of it in `country`.
    async fn quote(
        &self,
        field: &str,
        sku: &str,
        country: &str,
    ) -> Result<(Product, crate::babel::model::Quote), ServiceError> {
        let product = match self.repo.product(sku).await? {
            Some(p) if p.active => p,
            Some(_) => {
                return Err(ServiceError::invalid(
                    field,
                    format!("product {sku} is not on sale"),
                ));
            }
            None => return Err(ServiceError::invalid(field, format!("no product {sku}"))),
        };
        let quote = self
            .babel
            .price(
                &Caller::system(),
                &PriceRequest {
                    sku: product.sku.clone(),
                    category: None,
                    country: country.to_owned(),
                    locale: None,
                    base_amount: Some(product.base_amount),
                    base_currency: Some(product.currency.clone()),
                },
            )
            .await?;
        Ok((product, quote))
    }

    /// Stores a pending order of `lines` (priced) for `user_id` in `country`, its market and
    /// currency `(market, currency)`, with its audit row.
    async fn store_order(
        &self,
        caller: &Caller,
        user_id: String,
        country: String,
        (market, currency): (String, String),
        lines: Vec<OrderLine>,
        placed_for: Option<String>,
    ) -> Result<Order, ServiceError> {
        let (mut net, mut tax, mut total) = (0i64, 0i64, 0i64);
        for line in &lines {
            net = model::plus("lines", net, line.net_amount)?;
            tax = model::plus("lines", tax, line.tax_amount)?;
            total = model::plus("lines", total, line.total_amount)?;
        }
        let now = self.clock.now_ms();
        let order = Order {
            id: uuid::Uuid::now_v7().to_string(),
            user_id,
            country,
            market,
            currency,
            status: OrderStatus::Pending,
            lines,
            net_amount: net,
            tax_amount: tax,
            total_amount: total,
            paid_amount: 0,
            refunded_amount: 0,
            placed_for,
            created_at: crate::time::rfc3339(now),
            updated_at: crate::time::rfc3339(now),
        };
        let audit = caller.audit("commerce.order_place", "order", &order.id);
        self.repo.insert_order(&order, now, audit).await?;
        metrics::counter!("ovasabi_commerce_orders_total", "currency" => order.currency.clone())
            .increment(1);
        Ok(order)
    }

    /// `Ok` when `caller` owns `o` or manages; the 404 of an order it may not see otherwise.
    fn may_see(&self, caller: &Caller, o: &Order) -> Result<(), ServiceError> {
        if caller.user_id() == Some(o.user_id.as_str()) || self.manages(caller) {
            Ok(())
        } else {
            Err(repo::not_found("order", &o.id))
        }
    }

    /// Order `id` with its payments, refunds and invoice number. Needs `buy` (one's own) or
    /// `manage`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (someone else's order too), RBAC refusals, database
    /// failures.
    pub async fn order(&self, caller: &Caller, id: &str) -> Result<OrderDetail, ServiceError> {
        let order = self.visible_order(caller, id).await?;
        let payments = self.repo.payments_of(id).await?;
        let refunds = self.repo.refunds_of(id).await?;
        let invoice = self.repo.invoice_of(id).await?.map(|(n, _)| n);
        Ok(OrderDetail {
            order,
            payments,
            refunds,
            invoice,
        })
    }

    async fn visible_order(&self, caller: &Caller, id: &str) -> Result<Order, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        match self.repo.order(id).await? {
            Some(o) => {
                self.may_see(caller, &o)?;
                Ok(o)
            }
            None => Err(repo::not_found("order", id)),
        }
    }

    /// Orders by id: the caller's own, or (for `manage`) every user's or `filter.user_id`'s.
    /// Needs `buy`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad limit, [`ServiceError::Forbidden`] for another
    /// user's orders without `manage`, RBAC refusals, database failures.
    pub async fn orders(
        &self,
        caller: &Caller,
        filter: OrderFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Order>, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        let limit = check_limit(limit)?;
        if let Some(u) = filter.user_id.as_deref() {
            crate::talent::model::validate_id("user_id", u)?;
        }
        let user = if self.manages(caller) {
            filter.user_id
        } else {
            let me = caller.require_user()?;
            match filter.user_id {
                Some(u) if u != me => {
                    return Err(ServiceError::Forbidden {
                        message: "only managers list other users' orders".to_owned(),
                    });
                }
                _ => Some(me.to_owned()),
            }
        };
        let rows = self
            .repo
            .orders(user.as_deref(), filter.status, cursor, limit)
            .await?;
        Ok(paginate(rows, limit, |o| o.id.clone()))
    }

    /// Cancels pending order `id` (one without a pending payment). Needs `buy` (one's own)
    /// or `manage`; an order another service placed (`placed_for`, a talent booking's) only
    /// with `manage` (the booking's cancellation cancels it).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] (not pending; a pending
    /// payment; placed for something else), RBAC refusals, database failures.
    pub async fn cancel_order(&self, caller: &Caller, id: &str) -> Result<Order, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        let audit = caller.audit("commerce.order_cancel", "order", id);
        self.repo
            .set_status(
                id,
                OrderStatus::Cancelled,
                self.clock.now_ms(),
                audit,
                |o| {
                    self.may_see(caller, o)?;
                    match &o.placed_for {
                        Some(what) if !self.manages(caller) => Err(ServiceError::Conflict {
                            message: format!(
                                "order {id} was placed for {what}: cancel that instead"
                            ),
                        }),
                        _ => Ok(()),
                    }
                },
            )
            .await
    }

    /// Marks paid order `id` fulfilled. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] (not paid), RBAC refusals,
    /// database failures.
    pub async fn fulfil_order(&self, caller: &Caller, id: &str) -> Result<Order, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        let audit = caller.audit("commerce.order_fulfil", "order", id);
        self.repo
            .set_status(
                id,
                OrderStatus::Fulfilled,
                self.clock.now_ms(),
                audit,
                |_| Ok(()),
            )
            .await
    }

    // ----- payments --------------------------------------------------------------------------

    /// Starts paying order `order_id` through `new.provider`, under `key` (the request's
    /// `Idempotency-Key`). Needs `buy` (one's own order) or `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (key, provider, reference), [`ServiceError::Unprocessable`]
    /// (the key was used with another request), [`ServiceError::NotFound`],
    /// [`ServiceError::Conflict`] (not pending; a payment already pending or succeeded), the
    /// provider's refusal, RBAC refusals, database failures.
    pub async fn pay(
        &self,
        caller: &Caller,
        order_id: &str,
        key: &str,
        new: NewPayment,
    ) -> Result<PaymentAnswer, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        model::validate_idempotency_key(key)?;
        let provider = self
            .config
            .providers
            .get("provider", &new.provider)?
            .clone();
        let reference = model::validate_reference(new.reference.as_deref())?;
        let hash = {
            let canonical = serde_json::json!({
                "order_id": order_id,
                "provider": new.provider,
                "reference": reference,
            });
            let digest = Sha256::digest(canonical.to_string().as_bytes());
            crate::notification::delivery::hex(&digest)
        };
        let now = self.clock.now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let payment = Payment {
            id: id.clone(),
            order_id: order_id.to_owned(),
            provider: provider.name().to_owned(),
            status: PaymentStatus::Pending,
            amount: 0,
            currency: String::new(),
            reference: reference.clone(),
            reason: None,
            instructions: None,
            created_at: crate::time::rfc3339(now),
            updated_at: crate::time::rfc3339(now),
        };
        // A retry is answered from the stored answer without asking the provider again.
        if let Some((stored_hash, response)) = self.repo.stored_key(caller.actor(), key).await? {
            return replay(key, &stored_hash, &hash, &response);
        }
        // The provider is asked with what the order says now (a pending order's total does
        // not change); the transaction then checks the order again under its lock. When two
        // first requests with one key race, one payment is stored and the other request gets
        // its answer: the loser's intent is left unused at the provider.
        let order = self.visible_order(caller, order_id).await?;
        let started = provider
            .start(Intent {
                payment_id: &id,
                order_id,
                amount: order.total_amount,
                currency: &order.currency,
                reference: reference.as_deref(),
            })
            .await?;
        let audit = caller.audit("commerce.payment_create", "payment", &id);
        let claimed = self
            .repo
            .create_payment(
                caller.actor(),
                key,
                &hash,
                &payment,
                now,
                audit,
                |o| self.may_see(caller, o),
                |p| {
                    let mut p = p.clone();
                    if p.reference.is_none() {
                        p.reference.clone_from(&started.reference);
                    }
                    p.instructions.clone_from(&started.instructions);
                    serde_json::to_string(&p)
                        .map_err(|e| ServiceError::Database(sqlx::Error::Encode(Box::new(e))))
                },
            )
            .await?;
        match claimed {
            Claimed::Made(mut p) => {
                p.instructions = started.instructions;
                if p.reference.is_none() {
                    p.reference = started.reference;
                }
                metrics::counter!("ovasabi_commerce_payments_total", "provider" => p.provider.clone(), "outcome" => "created")
                    .increment(1);
                Ok(PaymentAnswer {
                    payment: *p,
                    replayed: false,
                })
            }
            Claimed::Replayed(json) => replay(key, &hash, &hash, &json),
        }
    }

    /// Payment `id` (of one's own order, or any for `manage`).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`], RBAC refusals, database failures.
    pub async fn payment(&self, caller: &Caller, id: &str) -> Result<Payment, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        let p = self
            .repo
            .payment(id)
            .await?
            .ok_or_else(|| repo::not_found("payment", id))?;
        if !self.manages(caller) {
            match self.repo.order(&p.order_id).await? {
                Some(o) if caller.user_id() == Some(o.user_id.as_str()) => {}
                _ => return Err(repo::not_found("payment", id)),
            }
        }
        Ok(p)
    }

    /// Confirms receipt of pending payment `id` of a provider confirmed by hand: the order is
    /// paid, the ledger written and the invoice issued. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (reference; a provider that confirms by itself),
    /// [`ServiceError::NotFound`], [`ServiceError::Conflict`] (not pending; the order is no
    /// longer pending), RBAC refusals, database failures.
    pub async fn confirm_payment(
        &self,
        caller: &Caller,
        id: &str,
        body: ConfirmPayment,
    ) -> Result<Payment, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        let reference = model::validate_reference(body.reference.as_deref())?;
        self.settle_by_hand(
            caller,
            id,
            "commerce.payment_confirm",
            Settle::Succeed { reference },
        )
        .await
    }

    /// Rejects pending payment `id` of a provider confirmed by hand (the order stays pending
    /// and can be paid again). Needs `manage`.
    ///
    /// # Errors
    /// As [`CommerceService::confirm_payment`]; `reason` is required.
    pub async fn reject_payment(
        &self,
        caller: &Caller,
        id: &str,
        body: RejectPayment,
    ) -> Result<Payment, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        let reason = model::validate_reason(&body.reason)?;
        self.settle_by_hand(
            caller,
            id,
            "commerce.payment_reject",
            Settle::Fail { reason },
        )
        .await
    }

    async fn settle_by_hand(
        &self,
        caller: &Caller,
        id: &str,
        action: &str,
        how: Settle,
    ) -> Result<Payment, ServiceError> {
        let audit = caller.audit(action, "payment", id);
        let providers = &self.config.providers;
        let settled = self
            .repo
            .settle(id, &how, self.clock.now_ms(), audit, |p, _| {
                let provider = providers.get("provider", &p.provider)?;
                if provider.confirmed_by_hand() {
                    Ok(())
                } else {
                    Err(ServiceError::invalid(
                        "provider",
                        format!(
                            "payments of {} are settled by the provider's webhook",
                            p.provider
                        ),
                    ))
                }
            })
            .await?;
        record_settled(&settled);
        self.tell_settled(&settled).await;
        Ok(settled.payment)
    }

    /// Applies a webhook of `provider`: `signature` (the `Ovasabi-Signature` header) must
    /// sign `body` under the provider's secret within the tolerance window; the event is
    /// applied once (a replay answers `applied: false`). The caller is the provider: no user
    /// token is needed.
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] for a provider without a webhook secret (or unknown) or an
    /// unknown payment, [`ServiceError::Unauthenticated`] for a missing, bad or stale
    /// signature, [`ServiceError::Invalid`] for a body the provider cannot read or an amount
    /// or currency that is not the payment's, [`ServiceError::Conflict`] for a payment that is
    /// not pending, database failures.
    pub async fn webhook(
        &self,
        provider: &str,
        signature: Option<&str>,
        body: &str,
    ) -> Result<WebhookResult, ServiceError> {
        let no_webhook = || ServiceError::NotFound {
            entity: "webhook of provider",
            id: provider.to_owned(),
        };
        let p = self
            .config
            .providers
            .get("provider", provider)
            .map_err(|_| no_webhook())?
            .clone();
        let secret = self
            .config
            .providers
            .secret(provider)
            .ok_or_else(no_webhook)?;
        let now = self.clock.now_ms();
        let signed = signature.is_some_and(|s| {
            crate::notification::delivery::verify(
                secret,
                s,
                body,
                now.div_euclid(1000),
                self.config.webhook_tolerance_secs,
            )
        });
        if !signed {
            metrics::counter!("ovasabi_commerce_webhooks_total", "outcome" => "bad_signature")
                .increment(1);
            return Err(ServiceError::Unauthenticated {
                message: "Ovasabi-Signature is missing, does not sign the body, or is outside \
                          the time window"
                    .to_owned(),
            });
        }
        let event = p.parse_event(body)?;
        let how = match &event.outcome {
            Outcome::Succeeded { reference } => Settle::Succeed {
                reference: reference.clone(),
            },
            Outcome::Failed { reason } => Settle::Fail {
                reason: reason.clone(),
            },
        };
        let caller = Caller::system();
        let audit = caller.audit("commerce.webhook", "payment", &event.payment_id);
        let applied = self
            .repo
            .apply_event(
                provider,
                &event.id,
                event.outcome.event_type(),
                &event.payment_id,
                &how,
                now,
                audit,
                |payment, _| {
                    if payment.provider != provider {
                        return Err(repo::not_found("payment", &payment.id));
                    }
                    if payment.currency != event.currency || payment.amount != event.amount {
                        return Err(ServiceError::invalid(
                            "amount",
                            format!(
                                "the event reports {} {} for payment {} of {} {}",
                                event.amount,
                                event.currency,
                                payment.id,
                                payment.amount,
                                payment.currency
                            ),
                        ));
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(match applied {
            Applied::Done(settled) => {
                record_settled(&settled);
                self.tell_settled(&settled).await;
                metrics::counter!("ovasabi_commerce_webhooks_total", "outcome" => "applied")
                    .increment(1);
                WebhookResult {
                    event_id: event.id,
                    applied: true,
                    payment: Some(settled.payment),
                }
            }
            Applied::Replay => {
                metrics::counter!("ovasabi_commerce_webhooks_total", "outcome" => "replay")
                    .increment(1);
                WebhookResult {
                    event_id: event.id,
                    applied: false,
                    payment: None,
                }
            }
        })
    }

    // ----- refunds ---------------------------------------------------------------------------

    /// Refunds `new.amount` (what remains when absent) of paid order `order_id`: never more
    /// than was paid. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (amount, reason), [`ServiceError::NotFound`],
    /// [`ServiceError::Conflict`] (not paid; more than remains), RBAC refusals, database
    /// failures.
    pub async fn refund(
        &self,
        caller: &Caller,
        order_id: &str,
        new: NewRefund,
    ) -> Result<Refund, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        if let Some(a) = new.amount {
            if a <= 0 {
                return Err(ServiceError::invalid("amount", "must be positive"));
            }
            model::validate_amount("amount", a)?;
        }
        let reason = model::validate_reason(&new.reason)?;
        let audit = caller.audit("commerce.refund", "order", order_id);
        let (refund, order) = self
            .repo
            .refund(
                order_id,
                new.amount,
                &reason,
                self.clock.now_ms(),
                audit,
                |_| Ok(()),
            )
            .await?;
        metrics::counter!("ovasabi_commerce_refunds_total", "currency" => refund.currency.clone())
            .increment(1);
        let vars = serde_json::json!({
            "order_id": order.id,
            "amount": self.display(refund.amount, &order).await,
            "reason": refund.reason,
        });
        self.tell(&order.user_id, "commerce.refunded", vars).await;
        Ok(refund)
    }

    // ----- ledger ----------------------------------------------------------------------------

    /// Records one movement that no payment or refund makes (a payout, a referral reward):
    /// `entries` (account, amount) must sum to zero; returns the movement's id. Needs
    /// `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] (`kind` payment or refund, which only payments and refunds
    /// write; an unknown currency; fewer than two or more than [`model::MAX_ENTRIES`] entries;
    /// a bad account name; a zero amount; a sum that is not zero), RBAC refusals, database
    /// failures.
    pub async fn record_movement(
        &self,
        caller: &Caller,
        kind: MovementKind,
        currency: &str,
        entries: &[(String, i64)],
    ) -> Result<String, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        if matches!(kind, MovementKind::Payment | MovementKind::Refund) {
            return Err(ServiceError::invalid(
                "kind",
                "payments and refunds write their own movements: payout or referral_reward",
            ));
        }
        let currency = model::validate_currency("currency", currency)?;
        model::validate_entries(entries)?;
        let audit = caller
            .audit("commerce.movement", "ledger", kind.as_str())
            .after(&entries);
        self.repo
            .record_movement(kind, currency.code, entries, self.clock.now_ms(), audit)
            .await
    }

    /// Records the movement of `reference` (e.g. `referral:<id>`) once: a second call with
    /// the same reference, concurrent or later, writes nothing and answers the first
    /// movement's id with `written: false`. The entries are checked as in
    /// [`CommerceService::record_movement`]. Needs `manage` (services call it as the system).
    ///
    /// # Errors
    /// As [`CommerceService::record_movement`]; [`ServiceError::Invalid`] for an empty or
    /// over-long `reference`.
    pub async fn record_movement_once(
        &self,
        caller: &Caller,
        reference: &str,
        kind: MovementKind,
        currency: &str,
        entries: &[(String, i64)],
    ) -> Result<Credited, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        if matches!(kind, MovementKind::Payment | MovementKind::Refund) {
            return Err(ServiceError::invalid(
                "kind",
                "payments and refunds write their own movements: payout or referral_reward",
            ));
        }
        if reference.is_empty() || reference.len() > model::MAX_REFERENCE_LEN {
            return Err(ServiceError::invalid(
                "reference",
                format!("1 to {} bytes", model::MAX_REFERENCE_LEN),
            ));
        }
        let currency = model::validate_currency("currency", currency)?;
        model::validate_entries(entries)?;
        let audit = caller
            .audit("commerce.movement", "ledger", kind.as_str())
            .after(&serde_json::json!({"reference": reference, "entries": entries}));
        let (movement, written) = self
            .repo
            .record_movement_once(
                reference,
                kind,
                currency.code,
                entries,
                self.clock.now_ms(),
                audit,
            )
            .await?;
        Ok(Credited { movement, written })
    }

    /// Ledger entries by id, of `account` and/or `order_id`. Needs `manage`.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a bad limit, RBAC refusals, database failures.
    pub async fn ledger(
        &self,
        caller: &Caller,
        account: Option<&str>,
        order_id: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<LedgerEntry>, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        let limit = check_limit(limit)?;
        let rows = self.repo.entries(account, order_id, cursor, limit).await?;
        Ok(paginate(rows, limit, |e| e.id.clone()))
    }

    /// Every account's balance per currency (sums of its entries). Needs `manage`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn balances(&self, caller: &Caller) -> Result<Vec<Balance>, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        self.repo.balances().await
    }

    /// Movements whose entries do not sum to zero per currency (`account` holds the
    /// movement's id): always empty unless the ledger was written around the service.
    /// Needs `manage`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn unbalanced_movements(
        &self,
        caller: &Caller,
    ) -> Result<Vec<Balance>, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        self.repo.unbalanced().await
    }

    // ----- invoices --------------------------------------------------------------------------

    /// The invoice of order `order_id` (one's own, or any for `manage`).
    ///
    /// # Errors
    /// [`ServiceError::NotFound`] (no order, or not paid yet), RBAC refusals, database
    /// failures.
    pub async fn invoice(&self, caller: &Caller, order_id: &str) -> Result<Invoice, ServiceError> {
        let order = self.visible_order(caller, order_id).await?;
        let (number, issued) = self
            .repo
            .invoice_of(order_id)
            .await?
            .ok_or_else(|| repo::not_found("invoice of order", order_id))?;
        let exponent = money::currency("currency", &order.currency)
            .map(|c| c.exponent)
            .unwrap_or(2);
        Ok(repo::invoice(order, number, issued, exponent))
    }

    /// The invoice numbered `number` (of one's own order, or any for `manage`).
    ///
    /// # Errors
    /// As [`CommerceService::invoice`].
    pub async fn invoice_by_number(
        &self,
        caller: &Caller,
        number: &str,
    ) -> Result<Invoice, ServiceError> {
        self.policies.require(caller, RESOURCE, "buy")?;
        let (order_id, _) = self
            .repo
            .invoice_by_number(number)
            .await?
            .ok_or_else(|| repo::not_found("invoice", number))?;
        self.invoice(caller, &order_id).await.map_err(|e| match e {
            ServiceError::NotFound { .. } => repo::not_found("invoice", number),
            other => other,
        })
    }

    /// The printable HTML page of the invoice of order `order_id` (every text escaped).
    ///
    /// # Errors
    /// As [`CommerceService::invoice`].
    pub async fn invoice_html(
        &self,
        caller: &Caller,
        order_id: &str,
    ) -> Result<String, ServiceError> {
        let invoice = self.invoice(caller, order_id).await?;
        let locale = self.market_locale(&invoice.market).await;
        Ok(invoice::html(&invoice, &locale))
    }

    /// The invoice numbers of `year`, in order (for audits of the numbering). Needs `manage`.
    ///
    /// # Errors
    /// RBAC refusals, database failures.
    pub async fn invoice_numbers(
        &self,
        caller: &Caller,
        year: i32,
    ) -> Result<Vec<String>, ServiceError> {
        self.policies.require(caller, RESOURCE, "manage")?;
        self.repo.invoice_numbers(year).await
    }
}

impl CommerceService {
    /// Tells the buyer of a payment that succeeded (a failed one is not announced: the
    /// order stays pending and can be paid again).
    async fn tell_settled(&self, s: &repo::Settled) {
        if s.payment.status != PaymentStatus::Succeeded {
            return;
        }
        let vars = serde_json::json!({
            "order_id": s.order.id,
            "amount": self.display(s.payment.amount, &s.order).await,
            "invoice": s.invoice.as_deref().unwrap_or(""),
        });
        self.tell(&s.order.user_id, "commerce.payment_succeeded", vars)
            .await;
        for listener in self.paid.all() {
            listener.order_paid(&s.order).await;
        }
    }

    /// The locale of `market` (`en` when it is gone: an order outlives its market).
    async fn market_locale(&self, market: &str) -> String {
        match self.babel.market(&Caller::system(), market).await {
            Ok(m) => m.locale,
            Err(_) => "en".to_owned(),
        }
    }

    /// `minor` units of `order`'s currency as its market's locale writes them.
    async fn display(&self, minor: i64, order: &Order) -> String {
        let locale = self.market_locale(&order.market).await;
        let lang: unic_langid::LanguageIdentifier = locale.parse().unwrap_or_default();
        match money::currency("currency", &order.currency) {
            Ok(c) => money::format(minor, c, &lang),
            Err(_) => format!("{minor} {}", order.currency),
        }
    }

    /// Sends `template` to `user` in-app and in real time, after the change committed (a
    /// failure is logged and counted by the notification service, never undoes the change).
    async fn tell(&self, user: &str, template: &str, vars: serde_json::Value) {
        self.notifications
            .tell("commerce", template, vars, vec![user.to_owned()])
            .await;
    }
}

/// The stored answer under `key`, or the 422 of a key used with another request.
fn replay(
    key: &str,
    stored_hash: &str,
    hash: &str,
    response: &str,
) -> Result<PaymentAnswer, ServiceError> {
    if stored_hash != hash {
        return Err(repo::key_mismatch(key));
    }
    let payment: Payment = serde_json::from_str(response).map_err(|e| {
        ServiceError::Database(sqlx::Error::Decode(
            format!("stored idempotent answer: {e}").into(),
        ))
    })?;
    Ok(PaymentAnswer {
        payment,
        replayed: true,
    })
}

/// How Babel priced a quote, as stored on the line (`rule`, `base`, ...).
fn source_name(quote: &crate::babel::model::Quote) -> String {
    serde_json::to_value(quote.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Counts and logs a settled payment.
fn record_settled(s: &repo::Settled) {
    let p = &s.payment;
    tracing::info!(
        payment = %p.id,
        order = %s.order.id,
        status = p.status.as_str(),
        order_status = s.order.status.as_str(),
        invoice = s.invoice.as_deref().unwrap_or(""),
        "payment settled"
    );
    metrics::counter!("ovasabi_commerce_payments_total", "provider" => p.provider.clone(), "outcome" => p.status.as_str())
        .increment(1);
}
