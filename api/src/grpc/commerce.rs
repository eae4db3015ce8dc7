//! `commerce.v0.CommerceService` over the commerce service: products, orders, payments under
//! an idempotency key, manual confirmation, refunds, invoices and the ledger. Enum strings
//! (`status`) are checked here and refused with `INVALID_ARGUMENT` naming the field; empty
//! strings and zero amounts stand for "not set" where the REST body has an absent field.
//! Provider webhooks stay HTTP only: providers call HTTP.

use proto::commerce::v0 as pb;
use proto::commerce::v0::commerce_service_server::{CommerceService, CommerceServiceServer};
use services::commerce::{
    Balance, ConfirmPayment, Invoice, LedgerEntry, NewLine, NewOrder, NewPayment, NewProduct,
    NewRefund, Order, OrderDetail, OrderFilter, OrderLine, OrderStatus, Payment, Product,
    ProductUpdate, Refund, RejectPayment,
};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, limit, status};

pub fn server(state: GrpcState) -> CommerceServiceServer<Commerce> {
    CommerceServiceServer::new(Commerce(state))
}

pub struct Commerce(GrpcState);

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An optional filter: empty means "not set".
fn filter(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn product_pb(p: Product) -> pb::Product {
    pb::Product {
        sku: p.sku,
        name: p.name,
        base_amount: p.base_amount,
        currency: p.currency,
        active: p.active,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn line_pb(l: OrderLine) -> pb::OrderLine {
    pb::OrderLine {
        sku: l.sku,
        name: l.name,
        quantity: l.quantity,
        unit_net: l.unit_net,
        unit_tax: l.unit_tax,
        unit_gross: l.unit_gross,
        tax_rate_bp: l.tax_rate_bp,
        net_amount: l.net_amount,
        tax_amount: l.tax_amount,
        total_amount: l.total_amount,
        price_source: l.price_source,
        price_rule: l.price_rule.unwrap_or_default(),
    }
}

fn order_pb(o: Order) -> pb::Order {
    pb::Order {
        id: o.id,
        user_id: o.user_id,
        country: o.country,
        market: o.market,
        currency: o.currency,
        status: o.status.as_str().to_owned(),
        lines: o.lines.into_iter().map(line_pb).collect(),
        net_amount: o.net_amount,
        tax_amount: o.tax_amount,
        total_amount: o.total_amount,
        paid_amount: o.paid_amount,
        refunded_amount: o.refunded_amount,
        created_at: o.created_at,
        updated_at: o.updated_at,
        placed_for: o.placed_for.unwrap_or_default(),
    }
}

fn payment_pb(p: Payment) -> pb::Payment {
    pb::Payment {
        id: p.id,
        order_id: p.order_id,
        provider: p.provider,
        status: p.status.as_str().to_owned(),
        amount: p.amount,
        currency: p.currency,
        reference: p.reference.unwrap_or_default(),
        reason: p.reason.unwrap_or_default(),
        instructions: p.instructions.unwrap_or_default(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn refund_pb(r: Refund) -> pb::RefundRecord {
    pb::RefundRecord {
        id: r.id,
        order_id: r.order_id,
        payment_id: r.payment_id,
        amount: r.amount,
        currency: r.currency,
        reason: r.reason,
        created_at: r.created_at,
    }
}

fn detail_pb(d: OrderDetail) -> pb::OrderDetail {
    pb::OrderDetail {
        order: Some(order_pb(d.order)),
        payments: d.payments.into_iter().map(payment_pb).collect(),
        refunds: d.refunds.into_iter().map(refund_pb).collect(),
        invoice: d.invoice.unwrap_or_default(),
    }
}

fn invoice_pb(i: Invoice) -> pb::Invoice {
    pb::Invoice {
        number: i.number,
        order_id: i.order_id,
        user_id: i.user_id,
        country: i.country,
        market: i.market,
        currency: i.currency,
        exponent: u32::from(i.exponent),
        lines: i.lines.into_iter().map(line_pb).collect(),
        net_amount: i.net_amount,
        tax_amount: i.tax_amount,
        total_amount: i.total_amount,
        issued_at: i.issued_at,
    }
}

fn entry_pb(e: LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        id: e.id,
        movement: e.movement,
        kind: e.kind.as_str().to_owned(),
        account: e.account,
        currency: e.currency,
        amount: e.amount,
        order_id: e.order_id.unwrap_or_default(),
        created_at: e.created_at,
    }
}

fn balance_pb(b: Balance) -> pb::Balance {
    pb::Balance {
        account: b.account,
        currency: b.currency,
        amount: b.amount,
    }
}

#[tonic::async_trait]
impl CommerceService for Commerce {
    async fn create_product(
        &self,
        req: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewProduct {
            sku: r.sku,
            name: r.name,
            base_amount: r.base_amount,
            currency: r.currency,
            active: r.active.unwrap_or(true),
        };
        let p = self
            .0
            .services
            .commerce
            .create_product(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(product_pb(p)))
    }

    async fn get_product(
        &self,
        req: Request<pb::ProductRef>,
    ) -> Result<Response<pb::Product>, Status> {
        let caller = caller(&self.0, &req)?;
        let p = self
            .0
            .services
            .commerce
            .product(&caller, &req.into_inner().sku)
            .await
            .map_err(status)?;
        Ok(Response::new(product_pb(p)))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .commerce
            .products(&caller, cursor(&r.cursor), limit(r.limit))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListProductsResponse {
            items: page.items.into_iter().map(product_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn update_product(
        &self,
        req: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let update = ProductUpdate {
            name: r.name,
            base_amount: r.base_amount,
            currency: r.currency,
            active: r.active,
        };
        let p = self
            .0
            .services
            .commerce
            .update_product(&caller, &r.sku, update)
            .await
            .map_err(status)?;
        Ok(Response::new(product_pb(p)))
    }

    async fn place_order(
        &self,
        req: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewOrder {
            country: r.country,
            lines: r
                .lines
                .into_iter()
                .map(|l| NewLine {
                    sku: l.sku,
                    quantity: l.quantity,
                })
                .collect(),
            user_id: non_empty(r.user_id),
        };
        let o = self
            .0
            .services
            .commerce
            .place_order(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(order_pb(o)))
    }

    async fn get_order(
        &self,
        req: Request<pb::OrderRef>,
    ) -> Result<Response<pb::OrderDetail>, Status> {
        let caller = caller(&self.0, &req)?;
        let d = self
            .0
            .services
            .commerce
            .order(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(detail_pb(d)))
    }

    async fn list_orders(
        &self,
        req: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = OrderFilter {
            user_id: non_empty(r.user_id),
            status: non_empty(r.status)
                .map(|s| OrderStatus::parse("status", &s))
                .transpose()
                .map_err(status)?,
        };
        let page = self
            .0
            .services
            .commerce
            .orders(&caller, filter, cursor(&r.cursor), limit(r.limit))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListOrdersResponse {
            items: page.items.into_iter().map(order_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::OrderRef>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = caller(&self.0, &req)?;
        let o = self
            .0
            .services
            .commerce
            .cancel_order(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(order_pb(o)))
    }

    async fn fulfil_order(
        &self,
        req: Request<pb::OrderRef>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = caller(&self.0, &req)?;
        let o = self
            .0
            .services
            .commerce
            .fulfil_order(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(order_pb(o)))
    }

    async fn pay(&self, req: Request<pb::PayRequest>) -> Result<Response<pb::PayResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewPayment {
            provider: r.provider,
            reference: non_empty(r.reference),
        };
        let answer = self
            .0
            .services
            .commerce
            .pay(&caller, &r.order_id, &r.idempotency_key, new)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PayResponse {
            payment: Some(payment_pb(answer.payment)),
            replayed: answer.replayed,
        }))
    }

    async fn get_payment(
        &self,
        req: Request<pb::PaymentRef>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&self.0, &req)?;
        let p = self
            .0
            .services
            .commerce
            .payment(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(payment_pb(p)))
    }

    async fn confirm_payment(
        &self,
        req: Request<pb::ConfirmPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let body = ConfirmPayment {
            reference: non_empty(r.reference),
        };
        let p = self
            .0
            .services
            .commerce
            .confirm_payment(&caller, &r.id, body)
            .await
            .map_err(status)?;
        Ok(Response::new(payment_pb(p)))
    }

    async fn reject_payment(
        &self,
        req: Request<pb::RejectPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let p = self
            .0
            .services
            .commerce
            .reject_payment(&caller, &r.id, RejectPayment { reason: r.reason })
            .await
            .map_err(status)?;
        Ok(Response::new(payment_pb(p)))
    }

    async fn refund(
        &self,
        req: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundRecord>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewRefund {
            amount: (r.amount != 0).then_some(r.amount),
            reason: r.reason,
        };
        let refund = self
            .0
            .services
            .commerce
            .refund(&caller, &r.order_id, new)
            .await
            .map_err(status)?;
        Ok(Response::new(refund_pb(refund)))
    }

    async fn get_invoice(
        &self,
        req: Request<pb::OrderRef>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let caller = caller(&self.0, &req)?;
        let i = self
            .0
            .services
            .commerce
            .invoice(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(invoice_pb(i)))
    }

    async fn list_ledger_entries(
        &self,
        req: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .commerce
            .ledger(
                &caller,
                filter(&r.account),
                filter(&r.order_id),
                cursor(&r.cursor),
                limit(r.limit),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            items: page.items.into_iter().map(entry_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_balances(
        &self,
        req: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let items = self
            .0
            .services
            .commerce
            .balances(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetBalancesResponse {
            items: items.into_iter().map(balance_pb).collect(),
        }))
    }
}
