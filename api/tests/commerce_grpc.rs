//! `commerce.v0.CommerceService` end to end against a node on port 0: a product, an order
//! priced by Babel, a payment under an idempotency key (replayed, mismatched, missing),
//! confirmation by a manager, the invoice, a partial refund and the ledger; and the status
//! codes of bad input, missing credentials, other users, unknown ids and refused transitions.

mod common;

use common::{TestNode, user};
use proto::commerce::v0 as pb;
use proto::commerce::v0::commerce_service_client::CommerceServiceClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

async fn client(node: &TestNode) -> CommerceServiceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    CommerceServiceClient::new(ch)
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    r
}

/// Asserts `code`, and that the message names `says`.
fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, says: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(says), "{says:?} not in {e:?}");
}

fn pay(order: &str, key: &str) -> pb::PayRequest {
    pb::PayRequest {
        order_id: order.into(),
        idempotency_key: key.into(),
        provider: "manual".into(),
        reference: String::new(),
    }
}

#[tokio::test]
async fn an_order_is_paid_confirmed_invoiced_and_refunded_over_grpc() {
    let node = TestNode::start().await;
    let admin = node.token.clone().expect("admin token");
    let (s, b) = node
        .call(
            "POST",
            "/api/babel/markets",
            Some(json!({"code": "eu", "name": "Europe", "currency": "EUR", "locale": "de-DE", "countries": ["DE"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, alice) = user(&node, "alice").await;
    let (_, bob) = user(&node, "bob").await;
    let mut c = client(&node).await;

    let p = c
        .create_product(with_token(
            pb::CreateProductRequest {
                sku: "mug".into(),
                name: "Mug".into(),
                base_amount: 800,
                currency: "EUR".into(),
                active: None,
            },
            &admin,
        ))
        .await
        .expect("product")
        .into_inner();
    assert!(p.active);
    assert_status(
        c.create_product(with_token(
            pb::CreateProductRequest {
                sku: "bad sku".into(),
                name: "x".into(),
                base_amount: 1,
                currency: "EUR".into(),
                active: None,
            },
            &admin,
        ))
        .await,
        Code::InvalidArgument,
        "sku",
    );
    assert_status(
        c.create_product(with_token(
            pb::CreateProductRequest {
                sku: "mug".into(),
                name: "Mug".into(),
                base_amount: 800,
                currency: "EUR".into(),
                active: None,
            },
            &alice,
        ))
        .await,
        Code::PermissionDenied,
        "",
    );
    let listed = c
        .list_products(Request::new(pb::ListProductsRequest::default()))
        .await
        .expect("anyone lists")
        .into_inner();
    assert_eq!(listed.items.len(), 1);

    let o = c
        .place_order(with_token(
            pb::PlaceOrderRequest {
                country: "DE".into(),
                lines: vec![pb::NewLine {
                    sku: "mug".into(),
                    quantity: 3,
                }],
                user_id: String::new(),
            },
            &alice,
        ))
        .await
        .expect("order")
        .into_inner();
    assert_eq!((o.status.as_str(), o.total_amount), ("pending", 2400));
    assert_eq!(o.lines[0].price_source, "base");
    assert_status(
        c.place_order(with_token(
            pb::PlaceOrderRequest {
                country: "DE".into(),
                lines: vec![],
                user_id: String::new(),
            },
            &alice,
        ))
        .await,
        Code::InvalidArgument,
        "lines",
    );
    assert_status(
        c.place_order(Request::new(pb::PlaceOrderRequest::default()))
            .await,
        Code::Unauthenticated,
        "signed-in",
    );
    assert_status(
        c.get_order(with_token(pb::OrderRef { id: o.id.clone() }, &bob))
            .await,
        Code::NotFound,
        "",
    );

    // Idempotent payments.
    let first = c
        .pay(with_token(pay(&o.id, "g-1"), &alice))
        .await
        .expect("pay")
        .into_inner();
    assert!(!first.replayed);
    let again = c
        .pay(with_token(pay(&o.id, "g-1"), &alice))
        .await
        .expect("again")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.payment, first.payment);
    let mut other = pay(&o.id, "g-1");
    other.reference = "INV-1".into();
    assert_status(
        c.pay(with_token(other, &alice)).await,
        Code::InvalidArgument,
        "idempotency_mismatch",
    );
    assert_status(
        c.pay(with_token(pay(&o.id, ""), &alice)).await,
        Code::InvalidArgument,
        "Idempotency-Key",
    );
    assert_status(
        c.pay(with_token(pay(&o.id, "g-2"), &alice)).await,
        Code::FailedPrecondition,
        "pending",
    );
    let payment = first.payment.expect("payment");

    // A manager confirms; the order is paid and invoiced.
    assert_status(
        c.confirm_payment(with_token(
            pb::ConfirmPaymentRequest {
                id: payment.id.clone(),
                reference: String::new(),
            },
            &alice,
        ))
        .await,
        Code::PermissionDenied,
        "",
    );
    let ok = c
        .confirm_payment(with_token(
            pb::ConfirmPaymentRequest {
                id: payment.id.clone(),
                reference: "BANK-7".into(),
            },
            &admin,
        ))
        .await
        .expect("confirm")
        .into_inner();
    assert_eq!(
        (ok.status.as_str(), ok.reference.as_str()),
        ("succeeded", "BANK-7")
    );
    let d = c
        .get_order(with_token(pb::OrderRef { id: o.id.clone() }, &alice))
        .await
        .expect("detail")
        .into_inner();
    assert_eq!(d.order.as_ref().map(|o| o.status.as_str()), Some("paid"));
    assert_eq!(d.payments.len(), 1);
    let inv = c
        .get_invoice(with_token(pb::OrderRef { id: o.id.clone() }, &alice))
        .await
        .expect("invoice")
        .into_inner();
    assert_eq!(inv.number, d.invoice);
    assert_eq!((inv.total_amount, inv.exponent), (2400, 2));
    assert_status(
        c.cancel_order(with_token(pb::OrderRef { id: o.id.clone() }, &alice))
            .await,
        Code::FailedPrecondition,
        "paid",
    );

    // Refunds and the ledger.
    let r = c
        .refund(with_token(
            pb::RefundRequest {
                order_id: o.id.clone(),
                amount: 400,
                reason: "chipped".into(),
            },
            &admin,
        ))
        .await
        .expect("refund")
        .into_inner();
    assert_eq!(r.amount, 400);
    assert_status(
        c.refund(with_token(
            pb::RefundRequest {
                order_id: o.id.clone(),
                amount: 2001,
                reason: "too much".into(),
            },
            &admin,
        ))
        .await,
        Code::FailedPrecondition,
        "2000",
    );
    let entries = c
        .list_ledger_entries(with_token(
            pb::ListLedgerEntriesRequest {
                order_id: o.id.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("entries")
        .into_inner();
    assert_eq!(entries.items.iter().map(|e| e.amount).sum::<i64>(), 0);
    assert_eq!(
        entries.items.len(),
        4,
        "a payment (manual, sales) and a refund"
    );
    let balances = c
        .get_balances(with_token(pb::GetBalancesRequest {}, &admin))
        .await
        .expect("balances")
        .into_inner();
    let manual = balances
        .items
        .iter()
        .find(|b| b.account == "provider:manual")
        .map(|b| b.amount);
    assert_eq!(manual, Some(2000));
    assert_status(
        c.get_balances(with_token(pb::GetBalancesRequest {}, &alice))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_status(
        c.list_orders(with_token(
            pb::ListOrdersRequest {
                status: "lost".into(),
                ..Default::default()
            },
            &alice,
        ))
        .await,
        Code::InvalidArgument,
        "status",
    );
    let mine = c
        .list_orders(with_token(pb::ListOrdersRequest::default(), &alice))
        .await
        .expect("mine")
        .into_inner();
    assert_eq!(mine.items.len(), 1);
    assert_status(
        c.get_payment(with_token(pb::PaymentRef { id: "ghost".into() }, &alice))
            .await,
        Code::NotFound,
        "",
    );
    let mut bad = Request::new(pb::ListOrdersRequest::default());
    bad.metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("metadata"));
    assert_status(c.list_orders(bad).await, Code::Unauthenticated, "");
}
