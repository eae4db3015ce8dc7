//! Commerce storage: tables `service_commerce_*` (see the migration). Each query is written
//! once for both dialects ([`Queries`], see [`crate::sql`]).
//!
//! Every money movement writes its ledger entries in the transaction of the business change
//! ([`movement!`]), after checking that they sum to zero. Concurrency: SQLite writers take
//! turns (`BEGIN IMMEDIATE`); on Postgres the order row is locked (`FOR UPDATE`) before any
//! change of it, and an `Idempotency-Key` is claimed by inserting its row first: a second
//! request with the same key waits on that row's unique index until the first commits, then
//! reads its answer.

use sqlx::Row;

use super::model::{
    Balance, Invoice, LedgerEntry, MovementKind, Order, OrderLine, OrderStatus, Payment,
    PaymentStatus, Product, Refund, accounts,
};
use crate::db::{on_pool, settle};
use crate::security::{AuditRecord, audit};
use crate::sql::portable_sql;
use crate::time::rfc3339;
use crate::{Database, ServiceError};

macro_rules! order_columns {
    () => {
        "id, user_id, country, market, currency, status, net_amount, tax_amount, total_amount, \
         paid_amount, refunded_amount, created_at, updated_at, placed_for"
    };
}
macro_rules! line_columns {
    () => {
        "l.order_id, l.position, l.sku, l.name, l.quantity, l.unit_net, l.unit_tax, \
         l.unit_gross, l.tax_rate_bp, l.net_amount, l.tax_amount, l.total_amount, \
         l.price_source, l.price_rule"
    };
}
macro_rules! payment_columns {
    () => {
        "id, order_id, provider, status, amount, currency, reference, reason, created_at, \
         updated_at"
    };
}

portable_sql! {
    /// The SQL of commerce, once for both dialects.
    struct Queries {
        begin: ("BEGIN IMMEDIATE", "BEGIN"),
        insert_product: "INSERT INTO service_commerce_product \
                         (sku, name, base_amount, currency, active, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
        product: "SELECT sku, name, base_amount, currency, active, created_at, updated_at \
                  FROM service_commerce_product WHERE sku = $1",
        product_for_update: "SELECT sku, name, base_amount, currency, active, created_at, \
                             updated_at FROM service_commerce_product WHERE sku = $1{for_update}",
        update_product: "UPDATE service_commerce_product SET name = $2, base_amount = $3, \
                         currency = $4, active = $5, updated_at = $6 WHERE sku = $1",
        products: "SELECT sku, name, base_amount, currency, active, created_at, updated_at \
                   FROM service_commerce_product WHERE ($1 OR active) \
                   AND ($2{text} IS NULL OR sku > $2) ORDER BY sku LIMIT $3",
        insert_order: concat!("INSERT INTO service_commerce_order (", order_columns!(), ") \
                               VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, 0, 0, $9, $9, $10)"),
        insert_line: "INSERT INTO service_commerce_order_line \
                      (order_id, position, sku, name, quantity, unit_net, unit_tax, unit_gross, \
                       tax_rate_bp, net_amount, tax_amount, total_amount, price_source, \
                       price_rule) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        order: concat!("SELECT ", order_columns!(), " FROM service_commerce_order WHERE id = $1"),
        order_for_update: concat!("SELECT ", order_columns!(),
                                  " FROM service_commerce_order WHERE id = $1{for_update}"),
        lines: concat!("SELECT ", line_columns!(), " FROM service_commerce_order_line l \
                        WHERE l.order_id = $1 ORDER BY l.position"),
        /// A page of orders: of user `$1` (all when NULL), in status `$2`, after `$3`.
        orders: concat!("SELECT ", order_columns!(), " FROM service_commerce_order \
                         WHERE ($1{text} IS NULL OR user_id = $1) \
                         AND ($2{text} IS NULL OR status = $2) \
                         AND ($3{text} IS NULL OR id > $3) ORDER BY id LIMIT $4"),
        /// The lines of the orders of that page: same filter, ids up to `$4`.
        orders_lines: concat!("SELECT ", line_columns!(), " FROM service_commerce_order_line l \
                               JOIN service_commerce_order o ON o.id = l.order_id \
                               WHERE ($1{text} IS NULL OR o.user_id = $1) \
                               AND ($2{text} IS NULL OR o.status = $2) \
                               AND ($3{text} IS NULL OR o.id > $3) AND o.id <= $4 \
                               ORDER BY l.order_id, l.position"),
        set_order_status: "UPDATE service_commerce_order SET status = $2, updated_at = $3 \
                           WHERE id = $1",
        set_order_paid: "UPDATE service_commerce_order SET status = 'paid', paid_amount = $2, \
                         updated_at = $3 WHERE id = $1",
        set_order_refunded: "UPDATE service_commerce_order SET status = $2, \
                             refunded_amount = $3, updated_at = $4 WHERE id = $1",
        claim_key: "INSERT INTO service_commerce_idempotency \
                    (caller, key, request_hash, response, created_at) \
                    VALUES ($1, $2, $3, '', $4) ON CONFLICT DO NOTHING",
        stored_key: "SELECT request_hash, response FROM service_commerce_idempotency \
                     WHERE caller = $1 AND key = $2",
        answer_key: "UPDATE service_commerce_idempotency SET response = $3 \
                     WHERE caller = $1 AND key = $2",
        insert_payment: concat!("INSERT INTO service_commerce_payment (", payment_columns!(), ") \
                                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, NULL, $7, $7)"),
        payment: concat!("SELECT ", payment_columns!(),
                         " FROM service_commerce_payment WHERE id = $1"),
        payment_for_update: concat!("SELECT ", payment_columns!(),
                                    " FROM service_commerce_payment WHERE id = $1{for_update}"),
        open_payment: concat!("SELECT ", payment_columns!(),
                              " FROM service_commerce_payment WHERE order_id = $1 \
                               AND status IN ('pending', 'succeeded')"),
        payments_of: concat!("SELECT ", payment_columns!(),
                             " FROM service_commerce_payment WHERE order_id = $1 ORDER BY id"),
        settle_payment: "UPDATE service_commerce_payment SET status = $2, \
                         reference = COALESCE($3, reference), reason = $4, updated_at = $5 \
                         WHERE id = $1",
        insert_refund: "INSERT INTO service_commerce_refund \
                        (id, order_id, payment_id, amount, currency, reason, created_at) \
                        VALUES ($1, $2, $3, $4, $5, $6, $7)",
        refunds_of: "SELECT id, order_id, payment_id, amount, currency, reason, created_at \
                     FROM service_commerce_refund WHERE order_id = $1 ORDER BY id",
        insert_entry: "INSERT INTO service_commerce_ledger_entry \
                       (id, movement, kind, account, currency, amount, order_id, created_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        /// Claims a movement's reference: no row changed when it was claimed before.
        claim_reference: "INSERT INTO service_commerce_movement_ref (reference, movement, created_at) \
                          VALUES ($1, $2, $3) ON CONFLICT (reference) DO NOTHING",
        reference: "SELECT movement FROM service_commerce_movement_ref WHERE reference = $1",
        entries: "SELECT id, movement, kind, account, currency, amount, order_id, created_at \
                  FROM service_commerce_ledger_entry \
                  WHERE ($1{text} IS NULL OR account = $1) \
                  AND ($2{text} IS NULL OR order_id = $2) \
                  AND ($3{text} IS NULL OR id > $3) ORDER BY id LIMIT $4",
        balances: "SELECT account, currency, CAST(SUM(amount) AS BIGINT) AS amount \
                   FROM service_commerce_ledger_entry GROUP BY account, currency \
                   ORDER BY account, currency",
        /// Movements whose entries do not sum to zero in some currency (none, ever).
        unbalanced: "SELECT movement, currency, CAST(SUM(amount) AS BIGINT) AS amount \
                     FROM service_commerce_ledger_entry GROUP BY movement, currency \
                     HAVING SUM(amount) <> 0 ORDER BY movement",
        open_year: "INSERT INTO service_commerce_invoice_counter (year, last) VALUES ($1, 0) \
                    ON CONFLICT DO NOTHING",
        next_number: "UPDATE service_commerce_invoice_counter SET last = last + 1 \
                      WHERE year = $1 RETURNING last",
        insert_invoice: "INSERT INTO service_commerce_invoice \
                         (number, order_id, year, seq, issued_at) VALUES ($1, $2, $3, $4, $5)",
        invoice_of: "SELECT number, issued_at FROM service_commerce_invoice WHERE order_id = $1",
        invoice_by_number: "SELECT order_id, issued_at FROM service_commerce_invoice \
                            WHERE number = $1",
        invoice_numbers: "SELECT number FROM service_commerce_invoice WHERE year = $1 \
                          ORDER BY seq",
        record_event: "INSERT INTO service_commerce_webhook_event \
                       (provider, event_id, event_type, payment_id, received_at) \
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        audit: (audit::INSERT_SQLITE, audit::INSERT_POSTGRES),
    }
}

fn corrupt(table: &str, id: &str, what: &str, detail: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Decode(
        format!("{table} {id:?}: {what}: {detail}").into(),
    ))
}

pub(crate) fn not_found(entity: &'static str, id: &str) -> ServiceError {
    ServiceError::NotFound {
        entity,
        id: id.to_owned(),
    }
}

/// The 422 of an `Idempotency-Key` used with another request.
pub(crate) fn key_mismatch(key: &str) -> ServiceError {
    ServiceError::Unprocessable {
        code: "idempotency_mismatch",
        message: format!(
            "Idempotency-Key {key:?} was used with another request: use a new key for a new \
             request"
        ),
    }
}

macro_rules! product_row {
    ($row:expr) => {{
        let row = &$row;
        let created: i64 = row.try_get("created_at")?;
        let updated: i64 = row.try_get("updated_at")?;
        Product {
            sku: row.try_get("sku")?,
            name: row.try_get("name")?,
            base_amount: row.try_get("base_amount")?,
            currency: row.try_get("currency")?,
            active: row.try_get("active")?,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
        }
    }};
}

macro_rules! order_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let created: i64 = row.try_get("created_at")?;
        let updated: i64 = row.try_get("updated_at")?;
        Order {
            status: OrderStatus::parse("status", &status)
                .map_err(|e| corrupt("service_commerce_order", &id, "status", e))?,
            user_id: row.try_get("user_id")?,
            country: row.try_get("country")?,
            market: row.try_get("market")?,
            currency: row.try_get("currency")?,
            lines: Vec::new(),
            net_amount: row.try_get("net_amount")?,
            tax_amount: row.try_get("tax_amount")?,
            total_amount: row.try_get("total_amount")?,
            paid_amount: row.try_get("paid_amount")?,
            refunded_amount: row.try_get("refunded_amount")?,
            placed_for: row.try_get("placed_for")?,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
            id,
        }
    }};
}

macro_rules! line_row {
    ($row:expr) => {{
        let row = &$row;
        let quantity: i64 = row.try_get("quantity")?;
        OrderLine {
            sku: row.try_get("sku")?,
            name: row.try_get("name")?,
            quantity: u32::try_from(quantity).unwrap_or(0),
            unit_net: row.try_get("unit_net")?,
            unit_tax: row.try_get("unit_tax")?,
            unit_gross: row.try_get("unit_gross")?,
            tax_rate_bp: row.try_get("tax_rate_bp")?,
            net_amount: row.try_get("net_amount")?,
            tax_amount: row.try_get("tax_amount")?,
            total_amount: row.try_get("total_amount")?,
            price_source: row.try_get("price_source")?,
            price_rule: row.try_get("price_rule")?,
        }
    }};
}

macro_rules! payment_row {
    ($row:expr) => {{
        let row = &$row;
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let created: i64 = row.try_get("created_at")?;
        let updated: i64 = row.try_get("updated_at")?;
        Payment {
            status: PaymentStatus::from_db(&status)
                .ok_or_else(|| corrupt("service_commerce_payment", &id, "status", &status))?,
            order_id: row.try_get("order_id")?,
            provider: row.try_get("provider")?,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            reference: row.try_get("reference")?,
            reason: row.try_get("reason")?,
            instructions: None,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
            id,
        }
    }};
}

/// Loads the lines of `$order` (an `Order`) on `$conn`.
macro_rules! with_lines {
    ($conn:expr, $sql:expr, $order:expr) => {{
        let mut order: Order = $order;
        let rows = sqlx::query($sql.lines)
            .bind(&order.id)
            .fetch_all($conn)
            .await?;
        for row in rows {
            order.lines.push(line_row!(row));
        }
        order
    }};
}

/// The order `$id`, locked, with its lines, or its 404.
macro_rules! locked_order {
    ($tx:expr, $sql:expr, $id:expr) => {{
        let id: &str = $id;
        match sqlx::query($sql.order_for_update)
            .bind(id)
            .fetch_optional(&mut *$tx)
            .await?
        {
            Some(row) => with_lines!(&mut *$tx, $sql, order_row!(row)),
            None => return Err(not_found("order", id)),
        }
    }};
}

/// Writes the entries of one movement (`(account, amount)` pairs in `currency`), after
/// checking that they sum to zero; zero amounts are left out.
macro_rules! movement {
    ($tx:expr, $sql:expr, $kind:expr, $currency:expr, $order_id:expr, $now:expr, $entries:expr) => {
        movement!(@id uuid::Uuid::now_v7().to_string(), $tx, $sql, $kind, $currency, $order_id,
                  $now, $entries)
    };
    (@id $id:expr, $tx:expr, $sql:expr, $kind:expr, $currency:expr, $order_id:expr, $now:expr,
     $entries:expr) => {{
        let entries: &[(String, i64)] = $entries;
        let sum = entries
            .iter()
            .try_fold(0i64, |acc, (_, a)| acc.checked_add(*a));
        if sum != Some(0) {
            return Err(unbalanced(entries));
        }
        let movement: String = $id;
        let kind: MovementKind = $kind;
        for (account, amount) in entries.iter().filter(|(_, a)| *a != 0) {
            sqlx::query($sql.insert_entry)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&movement)
                .bind(kind.as_str())
                .bind(account)
                .bind($currency)
                .bind(*amount)
                .bind($order_id)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
        }
        movement
    }};
}

fn unbalanced(entries: &[(String, i64)]) -> ServiceError {
    ServiceError::Database(sqlx::Error::Protocol(format!(
        "ledger movement does not sum to zero: {entries:?}"
    )))
}

/// The ledger entries of a payment of `order` collected by `provider`.
fn payment_entries(provider: &str, order: &Order) -> Vec<(String, i64)> {
    vec![
        (accounts::provider(provider), order.total_amount),
        (accounts::SALES.to_owned(), -order.net_amount),
        (accounts::TAX_PAYABLE.to_owned(), -order.tax_amount),
    ]
}

/// The invoice year of a time (UTC).
fn year_of(ms: i64) -> i32 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(ms).map_or(1970, |t| t.year())
}

/// How a pending payment is settled.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Succeed { reference: Option<String> },
    Fail { reason: String },
}

/// A payment settled, with its order afterwards and its invoice number (when it succeeded).
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub payment: Payment,
    pub order: Order,
    pub invoice: Option<String>,
}

/// Settles the pending payment `$payment_id` on `$tx` (`$check` may refuse it first), with
/// the ledger entries and the invoice of a success; evaluates to a [`Settled`].
macro_rules! settle_payment {
    ($tx:expr, $sql:expr, $payment_id:expr, $how:expr, $now:expr, $check:expr) => {{
        let payment_id: &str = $payment_id;
        let how: &Settle = $how;
        let now: i64 = $now;
        let before = match sqlx::query($sql.payment_for_update)
            .bind(payment_id)
            .fetch_optional(&mut *$tx)
            .await?
        {
            Some(row) => payment_row!(row),
            None => return Err(not_found("payment", payment_id)),
        };
        let order = locked_order!($tx, $sql, &before.order_id);
        ($check)(&before, &order)?;
        let target = match how {
            Settle::Succeed { .. } => "succeeded",
            Settle::Fail { .. } => "failed",
        };
        if before.status != PaymentStatus::Pending {
            return Err(ServiceError::Conflict {
                message: format!(
                    "payment {payment_id} is {}: it cannot become {target}",
                    before.status.as_str()
                ),
            });
        }
        let (status, reference, reason) = match how {
            Settle::Succeed { reference } => {
                order.status.check(&order.id, OrderStatus::Paid)?;
                (PaymentStatus::Succeeded, reference.clone(), None)
            }
            Settle::Fail { reason } => (PaymentStatus::Failed, None, Some(reason.clone())),
        };
        sqlx::query($sql.settle_payment)
            .bind(payment_id)
            .bind(status.as_str())
            .bind(reference.as_deref())
            .bind(reason.as_deref())
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        let mut payment = before.clone();
        payment.status = status;
        if reference.is_some() {
            payment.reference = reference;
        }
        payment.reason = reason;
        payment.updated_at = rfc3339(now);
        let mut order = order;
        let mut invoice = None;
        if status == PaymentStatus::Succeeded {
            sqlx::query($sql.set_order_paid)
                .bind(&order.id)
                .bind(payment.amount)
                .bind(now)
                .execute(&mut *$tx)
                .await?;
            movement!(
                $tx,
                $sql,
                MovementKind::Payment,
                &order.currency,
                Some(order.id.as_str()),
                now,
                &payment_entries(&payment.provider, &order)
            );
            let year = year_of(now);
            sqlx::query($sql.open_year)
                .bind(year)
                .execute(&mut *$tx)
                .await?;
            let seq: i64 = sqlx::query_scalar($sql.next_number)
                .bind(year)
                .fetch_one(&mut *$tx)
                .await?;
            let number = format!("{year}-{seq:06}");
            sqlx::query($sql.insert_invoice)
                .bind(&number)
                .bind(&order.id)
                .bind(year)
                .bind(seq)
                .bind(now)
                .execute(&mut *$tx)
                .await?;
            order.status = OrderStatus::Paid;
            order.paid_amount = payment.amount;
            order.updated_at = rfc3339(now);
            invoice = Some(number);
        }
        (
            before,
            Settled {
                payment,
                order,
                invoice,
            },
        )
    }};
}

/// What a payment request under an `Idempotency-Key` found.
#[derive(Debug, Clone)]
pub(crate) enum Claimed {
    /// The first request with the key: the payment it made.
    Made(Box<Payment>),
    /// A retry of the same request: the first answer.
    Replayed(String),
}

/// A webhook event applied, or seen before.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    Done(Box<Settled>),
    Replay,
}

#[derive(Clone, Debug)]
pub(crate) struct CommerceRepo {
    db: Database,
}

impl CommerceRepo {
    pub(crate) fn new(db: Database) -> Self {
        Self { db }
    }

    // ----- products --------------------------------------------------------------------------

    pub(crate) async fn insert_product(
        &self,
        p: &Product,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                sqlx::query(sql.insert_product)
                    .bind(&p.sku)
                    .bind(&p.name)
                    .bind(p.base_amount)
                    .bind(&p.currency)
                    .bind(p.active)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match ServiceError::from(e) {
                        ServiceError::Duplicate { .. } => ServiceError::Duplicate {
                            message: format!("product {} exists", p.sku),
                        },
                        other => other,
                    })?;
                audit::insert!(&mut *tx, sql.audit, &audit.after(p));
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(())
    }

    pub(crate) async fn product(&self, sku: &str) -> Result<Option<Product>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.product)
                .bind(sku)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(product_row!(row)),
                None => None,
            }
        }))
    }

    pub(crate) async fn products(
        &self,
        all: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.products)
                .bind(all)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(product_row!(row));
            }
            out
        }))
    }

    pub(crate) async fn update_product(
        &self,
        sku: &str,
        now: i64,
        audit: AuditRecord,
        change: impl FnOnce(&Product) -> Result<Product, ServiceError>,
    ) -> Result<Product, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = match sqlx::query(sql.product_for_update)
                    .bind(sku)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => product_row!(row),
                    None => return Err(not_found("product", sku)),
                };
                let mut after = change(&before)?;
                after.updated_at = rfc3339(now);
                sqlx::query(sql.update_product)
                    .bind(sku)
                    .bind(&after.name)
                    .bind(after.base_amount)
                    .bind(&after.currency)
                    .bind(after.active)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    // ----- orders ----------------------------------------------------------------------------

    pub(crate) async fn insert_order(
        &self,
        o: &Order,
        now: i64,
        audit: AuditRecord,
    ) -> Result<(), ServiceError> {
        on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                sqlx::query(sql.insert_order)
                    .bind(&o.id)
                    .bind(&o.user_id)
                    .bind(&o.country)
                    .bind(&o.market)
                    .bind(&o.currency)
                    .bind(o.net_amount)
                    .bind(o.tax_amount)
                    .bind(o.total_amount)
                    .bind(now)
                    .bind(o.placed_for.as_deref())
                    .execute(&mut *tx)
                    .await?;
                for (i, l) in o.lines.iter().enumerate() {
                    sqlx::query(sql.insert_line)
                        .bind(&o.id)
                        .bind(i64::try_from(i).unwrap_or(i64::MAX))
                        .bind(&l.sku)
                        .bind(&l.name)
                        .bind(i64::from(l.quantity))
                        .bind(l.unit_net)
                        .bind(l.unit_tax)
                        .bind(l.unit_gross)
                        .bind(l.tax_rate_bp)
                        .bind(l.net_amount)
                        .bind(l.tax_amount)
                        .bind(l.total_amount)
                        .bind(&l.price_source)
                        .bind(l.price_rule.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
                audit::insert!(&mut *tx, sql.audit, &audit.after(o));
                Ok(())
            }
            .await;
            settle(tx, outcome).await?;
        });
        Ok(())
    }

    pub(crate) async fn order(&self, id: &str) -> Result<Option<Order>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.order).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(with_lines!(pool, sql, order_row!(row))),
                None => None,
            }
        }))
    }

    /// A page of orders (`limit + 1` rows, for [`crate::page::paginate`]) with their lines.
    pub(crate) async fn orders(
        &self,
        user_id: Option<&str>,
        status: Option<OrderStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Order>, ServiceError> {
        let status = status.map(OrderStatus::as_str);
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.orders)
                .bind(user_id)
                .bind(status)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(order_row!(row));
            }
            if let Some(last) = out.last().map(|o| o.id.clone()) {
                let lines = sqlx::query(sql.orders_lines)
                    .bind(user_id)
                    .bind(status)
                    .bind(cursor)
                    .bind(&last)
                    .fetch_all(pool)
                    .await?;
                let mut at = 0;
                for row in lines {
                    let order_id: String = row.try_get("order_id")?;
                    while at < out.len() && out[at].id != order_id {
                        at += 1;
                    }
                    if let Some(o) = out.get_mut(at) {
                        o.lines.push(line_row!(row));
                    }
                }
            }
            out
        }))
    }

    /// Moves order `id` to `to` once `allow` accepts it (the transition rules are checked
    /// here), with its audit row.
    pub(crate) async fn set_status(
        &self,
        id: &str,
        to: OrderStatus,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&Order) -> Result<(), ServiceError>,
    ) -> Result<Order, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = locked_order!(tx, sql, id);
                allow(&before)?;
                before.status.check(id, to)?;
                if to == OrderStatus::Cancelled
                    && let Some(row) = sqlx::query(sql.open_payment)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?
                {
                    let p = payment_row!(row);
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {id} has a {} payment {}: reject it first",
                            p.status.as_str(),
                            p.id
                        ),
                    });
                }
                sqlx::query(sql.set_order_status)
                    .bind(id)
                    .bind(to.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let mut after = before.clone();
                after.status = to;
                after.updated_at = rfc3339(now);
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&after));
                Ok(after)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    // ----- payments --------------------------------------------------------------------------

    /// Under the key `(caller, key)`: the stored answer of an earlier request with the same
    /// `hash`, a 422 for another request, or a new pending payment of `payment.order_id`
    /// (which `allow` may refuse) whose answer `answer` makes and stores.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_payment(
        &self,
        caller: &str,
        key: &str,
        hash: &str,
        payment: &Payment,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&Order) -> Result<(), ServiceError>,
        answer: impl FnOnce(&Payment) -> Result<String, ServiceError>,
    ) -> Result<Claimed, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let claimed = sqlx::query(sql.claim_key)
                    .bind(caller)
                    .bind(key)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    let row = sqlx::query(sql.stored_key)
                        .bind(caller)
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                    let stored_hash: String = row.try_get("request_hash")?;
                    if stored_hash != hash {
                        return Err(key_mismatch(key));
                    }
                    return Ok(Claimed::Replayed(row.try_get("response")?));
                }
                let order = locked_order!(tx, sql, &payment.order_id);
                allow(&order)?;
                if order.status != OrderStatus::Pending {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {} is {}: only pending orders are paid",
                            order.id,
                            order.status.as_str()
                        ),
                    });
                }
                if let Some(row) = sqlx::query(sql.open_payment)
                    .bind(&order.id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    let p = payment_row!(row);
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {} has a {} payment {} already",
                            order.id,
                            p.status.as_str(),
                            p.id
                        ),
                    });
                }
                let mut p = payment.clone();
                p.amount = order.total_amount;
                p.currency = order.currency.clone();
                if p.amount <= 0 {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {} costs nothing: there is nothing to pay",
                            order.id
                        ),
                    });
                }
                sqlx::query(sql.insert_payment)
                    .bind(&p.id)
                    .bind(&p.order_id)
                    .bind(&p.provider)
                    .bind(p.amount)
                    .bind(&p.currency)
                    .bind(p.reference.as_deref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let response = answer(&p)?;
                sqlx::query(sql.answer_key)
                    .bind(caller)
                    .bind(key)
                    .bind(&response)
                    .execute(&mut *tx)
                    .await?;
                audit::insert!(&mut *tx, sql.audit, &audit.after(&p));
                Ok(Claimed::Made(Box::new(p)))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// The request hash and answer stored under `(caller, key)`.
    pub(crate) async fn stored_key(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.stored_key)
                .bind(caller)
                .bind(key)
                .fetch_optional(pool)
                .await?
            {
                // An empty answer is a claim of a transaction still running (Postgres shows
                // no uncommitted row; kept for safety): the caller goes on and waits on it.
                Some(row) => {
                    let response: String = row.try_get("response")?;
                    if response.is_empty() {
                        None
                    } else {
                        Some((row.try_get("request_hash")?, response))
                    }
                }
                None => None,
            }
        }))
    }

    pub(crate) async fn payment(&self, id: &str) -> Result<Option<Payment>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.payment)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some(payment_row!(row)),
                None => None,
            }
        }))
    }

    /// Settles pending payment `id` (`check` sees it and its order first), with its audit row.
    pub(crate) async fn settle(
        &self,
        id: &str,
        how: &Settle,
        now: i64,
        audit: AuditRecord,
        check: impl FnOnce(&Payment, &Order) -> Result<(), ServiceError>,
    ) -> Result<Settled, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let (before, settled) = settle_payment!(tx, sql, id, how, now, check);
                audit::insert!(
                    &mut *tx,
                    sql.audit,
                    &audit.before(&before).after(&settled.payment)
                );
                Ok(settled)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Applies provider event `event_id` of `provider` once: a replay changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn apply_event(
        &self,
        provider: &str,
        event_id: &str,
        event_type: &str,
        payment_id: &str,
        how: &Settle,
        now: i64,
        audit: AuditRecord,
        check: impl FnOnce(&Payment, &Order) -> Result<(), ServiceError>,
    ) -> Result<Applied, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let fresh = sqlx::query(sql.record_event)
                    .bind(provider)
                    .bind(event_id)
                    .bind(event_type)
                    .bind(payment_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if fresh == 0 {
                    return Ok(Applied::Replay);
                }
                let (before, settled) = settle_payment!(tx, sql, payment_id, how, now, check);
                audit::insert!(
                    &mut *tx,
                    sql.audit,
                    &audit.before(&before).after(&settled.payment)
                );
                Ok(Applied::Done(Box::new(settled)))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn payments_of(&self, order_id: &str) -> Result<Vec<Payment>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.payments_of)
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(payment_row!(row));
            }
            out
        }))
    }

    // ----- refunds ---------------------------------------------------------------------------

    /// Refunds `amount` (what remains when `None`) of order `order_id`'s payment, once
    /// `allow` accepts the order: never more than was paid. Writes the refund, the order's
    /// new state, the ledger entries and the audit row in one transaction.
    pub(crate) async fn refund(
        &self,
        order_id: &str,
        amount: Option<i64>,
        reason: &str,
        now: i64,
        audit: AuditRecord,
        allow: impl FnOnce(&Order) -> Result<(), ServiceError>,
    ) -> Result<(Refund, Order), ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let before = locked_order!(tx, sql, order_id);
                allow(&before)?;
                // Refunds are of paid, fulfilled or partially refunded orders (the same
                // sources for both targets).
                before.status.check(order_id, OrderStatus::Refunded)?;
                let remaining = before.paid_amount - before.refunded_amount;
                let amount = amount.unwrap_or(remaining);
                if remaining <= 0 {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {order_id} is {}: nothing is left to refund",
                            before.status.as_str()
                        ),
                    });
                }
                if amount <= 0 || amount > remaining {
                    return Err(ServiceError::Conflict {
                        message: format!(
                            "order {order_id} can be refunded at most {remaining} (paid \
                             {}, refunded {}): {amount} asked",
                            before.paid_amount, before.refunded_amount
                        ),
                    });
                }
                let to = if amount == remaining {
                    OrderStatus::Refunded
                } else {
                    OrderStatus::PartiallyRefunded
                };
                before.status.check(order_id, to)?;
                let payment = match sqlx::query(sql.open_payment)
                    .bind(order_id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    Some(row) => payment_row!(row),
                    None => {
                        return Err(ServiceError::Conflict {
                            message: format!("order {order_id} has no succeeded payment"),
                        });
                    }
                };
                let refund = Refund {
                    id: uuid::Uuid::now_v7().to_string(),
                    order_id: order_id.to_owned(),
                    payment_id: payment.id.clone(),
                    amount,
                    currency: before.currency.clone(),
                    reason: reason.to_owned(),
                    created_at: rfc3339(now),
                };
                sqlx::query(sql.insert_refund)
                    .bind(&refund.id)
                    .bind(order_id)
                    .bind(&refund.payment_id)
                    .bind(amount)
                    .bind(&refund.currency)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let refunded = before.refunded_amount + amount;
                sqlx::query(sql.set_order_refunded)
                    .bind(order_id)
                    .bind(to.as_str())
                    .bind(refunded)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                movement!(
                    tx,
                    sql,
                    MovementKind::Refund,
                    &refund.currency,
                    Some(order_id),
                    now,
                    &[
                        (accounts::provider(&payment.provider), -amount),
                        (accounts::REFUNDS.to_owned(), amount),
                    ]
                );
                let mut after = before.clone();
                after.status = to;
                after.refunded_amount = refunded;
                after.updated_at = rfc3339(now);
                audit::insert!(&mut *tx, sql.audit, &audit.before(&before).after(&refund));
                Ok((refund, after))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn refunds_of(&self, order_id: &str) -> Result<Vec<Refund>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.refunds_of)
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let created: i64 = row.try_get("created_at")?;
                out.push(Refund {
                    id: row.try_get("id")?,
                    order_id: row.try_get("order_id")?,
                    payment_id: row.try_get("payment_id")?,
                    amount: row.try_get("amount")?,
                    currency: row.try_get("currency")?,
                    reason: row.try_get("reason")?,
                    created_at: rfc3339(created),
                });
            }
            out
        }))
    }

    // ----- ledger ----------------------------------------------------------------------------

    /// Writes one movement on its own (a referral reward, a payout) with its audit row.
    pub(crate) async fn record_movement(
        &self,
        kind: MovementKind,
        currency: &str,
        entries: &[(String, i64)],
        now: i64,
        audit: AuditRecord,
    ) -> Result<String, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let id = movement!(tx, sql, kind, currency, None::<&str>, now, entries);
                let mut row = audit.clone();
                row.entity_id.clone_from(&id);
                audit::insert!(&mut *tx, sql.audit, &row);
                Ok(id)
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    /// Writes the movement `entries` of `reference` unless one was written for it before
    /// (whatever the concurrency: the reference's row is claimed in the transaction); returns
    /// the movement's id and whether this call wrote it.
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn record_movement_once(
        &self,
        reference: &str,
        kind: MovementKind,
        currency: &str,
        entries: &[(String, i64)],
        now: i64,
        audit: AuditRecord,
    ) -> Result<(String, bool), ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin).await?;
            let outcome = async {
                let id = uuid::Uuid::now_v7().to_string();
                let claimed = sqlx::query(sql.claim_reference)
                    .bind(reference)
                    .bind(&id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if claimed == 0 {
                    let earlier: String = sqlx::query_scalar(sql.reference)
                        .bind(reference)
                        .fetch_one(&mut *tx)
                        .await?;
                    return Ok((earlier, false));
                }
                let id = movement!(@id id, tx, sql, kind, currency, None::<&str>, now, entries);
                let mut row = audit.clone();
                row.entity_id.clone_from(&id);
                audit::insert!(&mut *tx, sql.audit, &row);
                Ok((id, true))
            }
            .await;
            settle(tx, outcome).await?
        }))
    }

    pub(crate) async fn entries(
        &self,
        account: Option<&str>,
        order_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            let rows = sqlx::query(sql.entries)
                .bind(account)
                .bind(order_id)
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.try_get("id")?;
                let kind: String = row.try_get("kind")?;
                let created: i64 = row.try_get("created_at")?;
                out.push(LedgerEntry {
                    kind: MovementKind::from_db(&kind).ok_or_else(|| {
                        corrupt("service_commerce_ledger_entry", &id, "kind", &kind)
                    })?,
                    movement: row.try_get("movement")?,
                    account: row.try_get("account")?,
                    currency: row.try_get("currency")?,
                    amount: row.try_get("amount")?,
                    order_id: row.try_get("order_id")?,
                    created_at: rfc3339(created),
                    id,
                });
            }
            out
        }))
    }

    pub(crate) async fn balances(&self) -> Result<Vec<Balance>, ServiceError> {
        balances_by(&self.db, false).await
    }

    /// Movements that do not sum to zero per currency (`account` is the movement id).
    pub(crate) async fn unbalanced(&self) -> Result<Vec<Balance>, ServiceError> {
        balances_by(&self.db, true).await
    }

    // ----- invoices --------------------------------------------------------------------------

    /// The invoice of order `order_id` (its number and issue time), if paid.
    pub(crate) async fn invoice_of(
        &self,
        order_id: &str,
    ) -> Result<Option<(String, i64)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.invoice_of)
                .bind(order_id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some((row.try_get("number")?, row.try_get("issued_at")?)),
                None => None,
            }
        }))
    }

    /// The order and issue time of invoice `number`.
    pub(crate) async fn invoice_by_number(
        &self,
        number: &str,
    ) -> Result<Option<(String, i64)>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            match sqlx::query(sql.invoice_by_number)
                .bind(number)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Some((row.try_get("order_id")?, row.try_get("issued_at")?)),
                None => None,
            }
        }))
    }

    /// Every invoice number of `year`, in order.
    pub(crate) async fn invoice_numbers(&self, year: i32) -> Result<Vec<String>, ServiceError> {
        Ok(on_pool!(&self.db, Queries, |pool, sql| {
            sqlx::query_scalar(sql.invoice_numbers)
                .bind(year)
                .fetch_all(pool)
                .await?
        }))
    }
}

async fn balances_by(db: &Database, unbalanced: bool) -> Result<Vec<Balance>, ServiceError> {
    Ok(on_pool!(db, Queries, |pool, sql| {
        let (q, key) = if unbalanced {
            (sql.unbalanced, "movement")
        } else {
            (sql.balances, "account")
        };
        let rows = sqlx::query(q).fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(Balance {
                account: row.try_get(key)?,
                currency: row.try_get("currency")?,
                amount: row.try_get("amount")?,
            });
        }
        out
    }))
}

/// Builds an [`Invoice`] from a paid order.
pub(crate) fn invoice(order: Order, number: String, issued_ms: i64, exponent: u8) -> Invoice {
    Invoice {
        number,
        order_id: order.id,
        user_id: order.user_id,
        country: order.country,
        market: order.market,
        currency: order.currency,
        exponent,
        lines: order.lines,
        net_amount: order.net_amount,
        tax_amount: order.tax_amount,
        total_amount: order.total_amount,
        issued_at: rfc3339(issued_ms),
    }
}
